//! A request head as an upstream connection writes it, encoded once.

use http::header::{HeaderMap, CONTENT_LENGTH, EXPECT};
use http::{Method, Uri};

/// What a request head is given at first: a few header lines of an API
/// client's request fit, within the allocator's small blocks.
pub(super) const HEAD_CAPACITY: usize = 512;

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sending {
    /// As it comes: the request has a `Content-Length`.
    Length,
    /// In chunks: it has no length.
    Chunked,
    /// Nothing (more) to send.
    Done,
}

/// A request's head as an upstream connection writes it, and how its body
/// follows.
///
/// It is encoded once, as the request is prepared, so the request's header
/// map and target can be let go of before anything is sent: their values
/// share the client connection's read buffer, and while they live, the
/// client side cannot read into that buffer again (it reads while a request
/// is in flight, to see the client leave) and takes a fresh one for every
/// request instead. A retry on another connection sends these bytes.
#[derive(Debug)]
pub struct RequestHead {
    pub(super) bytes: Vec<u8>,
    pub(super) framing: Sending,
    /// The request asks for a protocol upgrade: a 101 answer switches the
    /// connection (see [`super::Switched`]).
    pub(super) upgrade: bool,
    /// The request has a body and `Expect: 100-continue`: the body waits
    /// for the server's `100 Continue` (see [`super::UpstreamConn`]).
    pub(super) expect_continue: bool,
}

impl RequestHead {
    /// The head of a request given by its parts: `METHOD target HTTP/1.1`,
    /// the headers as they are, what `lines` writes (whole header lines,
    /// each ending in CRLF), `Transfer-Encoding: chunked` for a body of
    /// unknown length (as hyper's client adds it), and the empty line. The
    /// body goes as it is framed: by its `Content-Length`, chunked when it
    /// has none, or not at all when it has `ended`.
    // Not inlined: its caller builds the request's future, and growing that
    // frame makes the compiler move the future more often.
    #[inline(never)]
    pub fn of(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        ended: bool,
        lines: impl FnOnce(&mut Vec<u8>),
    ) -> RequestHead {
        let framing = if ended {
            Sending::Done
        } else if headers.contains_key(CONTENT_LENGTH) {
            Sending::Length
        } else {
            Sending::Chunked
        };
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Most heads fit; a larger one grows as it is written.
        let mut out = Vec::with_capacity(HEAD_CAPACITY);
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        // An absolute-form target may have an empty path (`http://a?x=1`);
        // origin-form needs one (RFC 9112 §3.2.1: `/` stands in for it).
        if !target.starts_with('/') && target != "*" {
            out.push(b'/');
        }
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        lines(&mut out);
        if framing == Sending::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
        RequestHead {
            bytes: out,
            framing,
            upgrade: false,
            // Looked up only for a request with a body to hold back.
            expect_continue: framing != Sending::Done
                && headers
                    .get(EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
        }
    }

    /// Marks the request as one that asks for an upgrade (its headers say
    /// so): only then may the server answer 101.
    pub fn asking_upgrade(mut self) -> RequestHead {
        self.upgrade = true;
        self
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}
