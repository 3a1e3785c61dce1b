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
