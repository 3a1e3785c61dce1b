//! The framing follower against hyper's framing: flags, limits, what stops it.

use super::*;

/// Feeds `stream` whole, then byte by byte: both must agree.
fn scan(stream: &[u8]) -> (Vec<(u64, Flag)>, FrameScan) {
    let mut whole = FrameScan::new(usize::MAX);
    let mut found = Vec::new();
    // Whole-buffer feeds report only the first flag; split on heads.
    found.extend(whole.feed(stream));
    let mut bytewise = FrameScan::new(usize::MAX);
    let mut each = Vec::new();
    for b in stream {
        each.extend(bytewise.feed(std::slice::from_ref(b)));
    }
    assert_eq!(whole.heads, bytewise.heads, "heads differ");
    assert_eq!(whole.state, bytewise.state, "states differ");
    assert_eq!(found.first(), each.first());
    (each, bytewise)
}

#[test]
fn content_length_with_transfer_encoding_is_flagged_in_either_order() {
    let (flags, s) =
        scan(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(flags, vec![(0, Flag::LengthAndChunked)]);
    assert_eq!(s.heads, 1);
    assert_eq!(s.state, State::Start);
    let (flags, _) = scan(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: x\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(flags, vec![(0, Flag::LengthAndChunked)]);
}

#[test]
fn keep_alive_requests_are_followed_through_bodies() {
    let stream = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 46\r\n\r\n\
        GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked \r\n\r\n\
        5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n\
        \r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /d HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n";
    // The first body hides a head that must not be counted.
    let (flags, s) = scan(stream);
    assert_eq!(flags, vec![(3, Flag::LengthAndChunked)]);
    assert_eq!(s.heads, 4);
    assert_eq!(
        (s.state, s.chunked.state()),
        (State::Chunked, ChunkState::Start)
    );
}

#[test]
fn bare_lf_line_ends_are_followed_like_httparse() {
    let (flags, s) =
        scan(b"GET / HTTP/1.1\nHost: a\nContent-Length: 1\n\nxGET / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 1\n\n");
    assert_eq!(flags, vec![(1, Flag::LengthAndChunked)]);
    assert_eq!(s.heads, 2);
}

#[test]
fn what_hyper_refuses_in_a_head_stops_the_scan() {
    for stream in [
        &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\rX",
    ] {
        let (flags, s) = scan(stream);
        assert!(flags.is_empty(), "{stream:?}");
        assert!(!s.following(), "{:?}", String::from_utf8_lossy(stream));
    }
}

#[test]
fn a_chunked_body_hyper_refuses_flags_its_request() {
    for body in [
        &b"zz\r\n"[..],
        b"1\r\nab\r\n",
        b"fffffffffffffffff\r\n",
        b"5\nhello\r\n",
        b"5;a\nhello",
        b"0\r\nX: 1\rY",
    ] {
        let mut stream =
            b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        stream.extend_from_slice(body);
        let (flags, s) = scan(&stream);
        assert_eq!(
            flags,
            vec![(1, Flag::BadChunk)],
            "{:?}",
            String::from_utf8_lossy(body)
        );
        assert!(!s.following());
    }
}

#[test]
fn same_length_twice_is_accepted_like_hyper() {
    let (flags, s) =
        scan(b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length:3 \r\n\r\nabcGET / HTTP/1.1\r\n\r\n");
    assert!(flags.is_empty());
    assert_eq!(s.heads, 2);
    assert!(s.following());
}

#[test]
fn a_head_over_the_limit_is_reported_to_the_byte() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789\r\n\r\n";
    let mut at = FrameScan::new(head.len() - 1);
    at.feed(head);
    assert!(
        !at.oversized() && at.heads == 1,
        "the final LF is not counted"
    );
    let mut over = FrameScan::new(head.len() - 3);
    for b in head {
        over.feed(std::slice::from_ref(b));
    }
    assert!(over.oversized() && !over.following());
    // Bodies do not count.
    let mut body = FrameScan::new(64);
    body.feed(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
    body.feed(&[b'x'; 100]);
    assert!(!body.oversized() && body.state == State::Start);
}

#[test]
fn arbitrary_bytes_never_panic() {
    fn prop(chunks: Vec<Vec<u8>>) -> bool {
        let mut s = FrameScan::new(usize::MAX);
        for c in &chunks {
            let _ = s.feed(c);
        }
        true
    }
    quickcheck::QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(Vec<Vec<u8>>) -> bool);
}

#[test]
fn whole_bytewise_and_split_feeds_agree_on_request_like_streams() {
    const PARTS: [&[u8]; 20] = [
        b"GET / HTTP/1.1\r\n",
        b"POST /x?y=1 HTTP/1.1\r\n",
        b"Host: a\r\n",
        b"content-type: text/plain; q=a:b\r\n",
        b"No-Colon\r\n",
        b": empty name\r\n",
        b"X-Bare-Cr: a\rb\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 5 \r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"content-LENGTH: 7\r\n",
        b"Content-Length: x\r\n",
        b"transfer-encoding: gzip, CHUNKED\r\n",
        b" folded: x\r\n",
        b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        b"X-Bare: lf\n",
        b"\r\n",
        b"hello",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"\n",
    ];
    /// heads, head_len, oversized, state, first flag.
    type Seen = (usize, usize, bool, State, Option<(u64, Flag)>);
    fn run(picks: &[u8], limit: usize, split: &[u8]) -> Vec<Seen> {
        let stream: Vec<u8> = picks
            .iter()
            .flat_map(|p| PARTS[usize::from(*p) % PARTS.len()].iter().copied())
            .collect();
        let mut feeds = Vec::new();
        // Whole, byte by byte, and cut at the given offsets.
        let mut cuts: Vec<Vec<&[u8]>> = vec![vec![&stream[..]], stream.chunks(1).collect()];
        let mut pieces = Vec::new();
        let mut rest = &stream[..];
        for s in split {
            let at = usize::from(*s).min(rest.len());
            let (a, b) = rest.split_at(at);
            pieces.push(a);
            rest = b;
        }
        pieces.push(rest);
        cuts.push(pieces);
        for cut in cuts {
            let mut scan = FrameScan::new(limit);
            let mut first = None;
            for piece in cut {
                first = first.or(scan.feed(piece));
            }
            feeds.push((
                scan.heads as usize,
                scan.head_len,
                scan.oversized,
                scan.state,
                first,
            ));
        }
        feeds
    }
    fn prop(picks: Vec<u8>, small: bool, split: Vec<u8>) -> bool {
        let limit = if small { 40 } else { usize::MAX };
        let feeds = run(&picks, limit, &split);
        feeds.windows(2).all(|w| w[0] == w[1])
    }
    quickcheck::QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(Vec<u8>, bool, Vec<u8>) -> bool);
}

#[test]
fn names_that_only_start_like_a_framing_header_are_not_taken_for_one() {
    // Each of these names shares a prefix with one of the two (or is one
    // with something before it): none frames the body, so the head that
    // also has the real header is not flagged, and the scan keeps going
    // through the following request.
    let (flags, s) = scan(
        b"POST / HTTP/1.1\r\nContent-Type: a\r\nContent-Lengthy: 9\r\nX-Content-Length: 9\r\n\
          Transfer: 1\r\nTransfer-Encodings: chunked\r\nContent-Length: 2\r\n\r\nab\
          POST / HTTP/1.1\r\nTransfer-Encoding-X: 1\r\nTE: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(flags, vec![]);
    assert_eq!(s.heads, 2);
    assert_eq!(s.state, State::Start);
    // The real pair after such names is still found.
    let (flags, _) = scan(
        b"POST / HTTP/1.1\r\nContent-Typ: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(flags, vec![(0, Flag::LengthAndChunked)]);
}

#[test]
fn a_run_ends_at_the_first_line_end_or_name_colon_however_long() {
    for len in [0, 1, 31, 32, 33, 64, 200] {
        let mut line = vec![b'a'; len];
        assert_eq!(run_len(&line, true), len, "no end in {len} bytes");
        line.extend_from_slice(b":b\r\n");
        assert_eq!(run_len(&line, true), len, "name of {len}");
        assert_eq!(
            run_len(&line, false),
            len + 2,
            "value past a colon at {len}"
        );
        line[len] = b'\n';
        assert_eq!(run_len(&line, false), len, "bare LF at {len}");
    }
}

#[test]
fn a_run_stops_where_its_definition_says_for_any_bytes() {
    // Bytes near the stops, their high-bit twins and bytes a borrow could
    // turn into a false zero: a lead of them that stops nothing, of any
    // length across the eight-byte words, then any mix with the stops.
    const FILL: [u8; 9] = [b'a', 0x00, 0x01, 0x8d, 0x8a, 0xba, 0x0c, 0x0e, 0xff];
    const STOPS: [u8; 3] = [b'\r', b'\n', b':'];
    fn prop(lead: Vec<u8>, tail: Vec<u8>, spread: bool) -> bool {
        let mut rest: Vec<u8> = lead
            .iter()
            .map(|p| FILL[usize::from(*p) % FILL.len()])
            .collect();
        rest.extend(tail.iter().map(|p| match (spread, usize::from(*p) % 12) {
            (true, _) => *p,
            (false, k) if k < STOPS.len() => STOPS[k],
            (false, k) => FILL[k - STOPS.len()],
        }));
        [true, false].into_iter().all(|in_name| {
            let stops = |b: u8| b == b'\r' || b == b'\n' || (in_name && b == b':');
            let by_definition = rest.iter().position(|&b| stops(b)).unwrap_or(rest.len());
            run_len(&rest, in_name) == by_definition
        })
    }
    quickcheck::QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(Vec<u8>, Vec<u8>, bool) -> bool);
}

#[test]
fn a_request_target_longer_than_hyper_takes_is_flagged_with_its_head() {
    for (len, flagged) in [(MAX_URI_LEN, false), (MAX_URI_LEN + 1, true)] {
        let target = format!("/{}", "t".repeat(len - 1));
        for method in ["GET", "OPTIONS"] {
            let stream =
                format!("GET / HTTP/1.1\r\n\r\n{method} {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            let (flags, s) = scan(stream.as_bytes());
            let want = if flagged {
                vec![(1, Flag::UriTooLong)]
            } else {
                vec![]
            };
            assert_eq!(flags, want, "{method} with a target of {len}");
            assert_eq!(s.heads, 2);
        }
    }
    // More than 100 header lines are refused first (431), whatever the
    // target.
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let stream = format!("GET /{} HTTP/1.1\r\n{many}\r\n", "t".repeat(MAX_URI_LEN));
    let (flags, _) = scan(stream.as_bytes());
    assert_eq!(flags, vec![]);
}

#[test]
fn hyper_limits_on_chunk_extensions_and_trailers_hold_to_the_byte() {
    let body = |chunks: &str| {
        let mut stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        stream.extend_from_slice(chunks.as_bytes());
        scan(&stream)
    };
    // Extension bytes (after each `;`) count over the whole body: 16 KiB
    // - 1 in all pass.
    let ext = |n: usize| format!(";{}", "e".repeat(n));
    let (flags, s) = body(&format!("1{}\r\na\r\n0{}\r\n\r\n", ext(8000), ext(8383)));
    assert_eq!((flags, s.messages()), (vec![], 1));
    let (flags, _) = body(&format!("1{}\r\na\r\n0{}\r\n\r\n", ext(8000), ext(8384)));
    assert_eq!(flags, vec![(0, Flag::BadChunk)]);
    // 100 trailer lines pass, the 101st does not.
    let lines = |n: usize| (0..n).map(|i| format!("T-{i}: v\r\n")).collect::<String>();
    let (flags, s) = body(&format!("0\r\n{}\r\n", lines(100)));
    assert_eq!((flags, s.messages()), (vec![], 1));
    let (flags, _) = body(&format!("0\r\n{}\r\n", lines(101)));
    assert_eq!(flags, vec![(0, Flag::BadChunk)]);
    // The trailer section, its final CRLF included, stays under 16 KiB.
    let section = |n: usize| format!("T: {}\r\n\r\n", "v".repeat(n - 7));
    let (flags, s) = body(&format!("0\r\n{}", section(16 * 1024 - 1)));
    assert_eq!((flags, s.messages()), (vec![], 1));
    let (flags, _) = body(&format!("0\r\n{}", section(16 * 1024)));
    assert_eq!(flags, vec![(0, Flag::BadChunk)]);
}
