//! Response heads: framing decisions and the remembered header names.

use super::*;

#[test]
fn a_remembered_name_is_used_only_where_its_spelling_is_found() {
    let mut names = ResponseParser::default();
    let first = [&b"Server"[..], b"X-Request-Id", b"Date"];
    for (i, raw) in first.iter().enumerate() {
        names.name(i, raw).unwrap();
    }
    // The same spelling at the same place.
    assert_eq!(names.name(1, b"X-Request-Id").unwrap(), "x-request-id");
    // Another name, or another spelling, at a remembered place is parsed
    // (and remembered instead).
    assert_eq!(names.name(1, b"Date").unwrap(), "date");
    assert_eq!(names.name(1, b"X-Request-I").unwrap(), "x-request-i");
    assert_eq!(names.name(1, b"X-Request-I").unwrap(), "x-request-i");
    assert_eq!(names.name(0, b"server").unwrap(), "server");
    assert_eq!(names.name(2, b"Vary").unwrap(), "vary");
    // A place past the remembered ones, a name too long to remember, a
    // name that is not one.
    assert_eq!(names.name(9, b"Vary").unwrap(), "vary");
    let long = b"X-A-Very-Long-Header-Name-Indeed";
    assert_eq!(
        names.name(3, long).unwrap(),
        "x-a-very-long-header-name-indeed"
    );
    assert_eq!(
        names.name(3, long).unwrap(),
        "x-a-very-long-header-name-indeed"
    );
    assert!(names.name(2, b"Bad Name").is_err());
    assert_eq!(names.name(2, b"Date").unwrap(), "date");
}

/// What the response fuzz target found in the first reason-phrase code: a
/// phrase httparse does not give as text (obs-text, or none at all) came
/// back as a static empty string, whose offset in the head was computed as
/// if it lay there, and the connection's task panicked.
#[test]
fn a_status_line_without_a_usable_reason_phrase_is_taken() {
    let crash: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 O\x9aunked\r\n\
        Connection: close\r\n\r\n5;a=b\r\nhello\r\n0\r\nXSum: 1\r\n\r\n";
    for (bytes, status, phrase) in [
        (crash, 200, None),
        (
            &b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"[..],
            200,
            None,
        ),
        (b"HTTP/1.1 200\nContent-Length: 2\n\nok", 200, None),
        (
            b"HTTP/1.1 404 N\xc3\xa3o encontrado\r\nContent-Length: 0\r\n\r\n",
            404,
            None,
        ),
        (
            b"HTTP/1.1 200 \xffOK\r\nContent-Length: 0\r\n\r\n",
            200,
            None,
        ),
        (b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 200, None),
        (
            b"HTTP/1.1 200 Fine\r\nContent-Length: 0\r\n\r\n",
            200,
            Some(&b"Fine"[..]),
        ),
    ] {
        let mut buf = BytesMut::from(bytes);
        let head = ResponseParser::default()
            .parse(&mut buf, &Method::GET, false, &mut HeaderMap::new())
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(bytes)))
            .expect("a whole head");
        assert_eq!(head.response.status(), status);
        let kept = head.response.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(
            kept.map(|p| p.as_bytes()),
            phrase,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}
