//! Request framing: hyper's server against [`FrameScan`] on the same
//! client bytes.
//!
//! hyper serves the bytes (split into the same reads, then the client's
//! end of the stream) over an in-memory stream, with the proxy's HTTP/1.1
//! settings; its service reads each request body to the end. The scan is
//! fed the same bytes. They must agree:
//!
//! - where each message hyper read whole ends: hyper takes message `i`
//!   whole from the stream cut where the scan ends it, and not from one
//!   byte less;
//! - on each body hyper refuses (a chunked body outside hyper's grammar or
//!   limits): the scan flags it [`Flag::BadChunk`], and it flags no other;
//! - on heads refused for their framing fields (a bad, conflicting or
//!   too large `Content-Length`, a final coding other than chunked, a
//!   coding in HTTP/1.0): the scan stops at that head exactly when hyper
//!   refuses it. The generated heads are otherwise well-formed, so over
//!   them every head refusal is one of these. (Other syntax the scan does
//!   not check: hyper refuses it and closes, and the scan can only miss a
//!   request, never blame one.)
//! - on `Content-Length` beside `Transfer-Encoding`: the scan flags
//!   exactly the requests after which hyper stops reading, though their
//!   version and `Connection` ask to keep the connection (hyper hides
//!   the length from the parsed request and closes after it).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use quickcheck::{QuickCheck, TestResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::gen::Requests;
use super::{cases, io_kind, runtime};
use crate::http1::scan::{Flag, FrameScan};

/// How hyper ended one request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// Read to its end.
    Whole,
    /// The stream ended inside it.
    Cut,
    /// hyper refused its framing.
    Refused,
}

/// A request as hyper's service saw it.
#[derive(Debug, Clone)]
struct Served {
    /// The request asked to keep the connection (version and
    /// `Connection`), as far as the parsed request shows.
    keep_alive: bool,
    body: BodyEnd,
}

/// How hyper's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnEnd {
    /// Cleanly: the client's end, or a message that closes it.
    Clean,
    /// The stream ended inside a head.
    Cut,
    /// hyper refused a head.
    Refused,
    /// Otherwise (after a body error).
    Other,
}

/// What hyper made of a stream.
#[derive(Debug, Clone)]
struct Hyper {
    served: Vec<Served>,
    end: ConnEnd,
}

/// Serves `reads` (then the end of the stream) with hyper.
async fn hyper(reads: &[&[u8]]) -> Hyper {
    let (client, server) = tokio::io::duplex(1 << 20);
    let served = Arc::new(Mutex::new(Vec::new()));
    let log = served.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let version = req.version();
            let tokens: Vec<String> = req
                .headers()
                .get_all(http::header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|t| t.trim().to_ascii_lowercase())
                .collect();
            let keep_alive = if version == http::Version::HTTP_10 {
                tokens.iter().any(|t| t == "keep-alive") && !tokens.iter().any(|t| t == "close")
            } else {
                !tokens.iter().any(|t| t == "close")
            };
            let mut body = req.into_body();
            let end = loop {
                match body.frame().await {
                    None => break BodyEnd::Whole,
                    Some(Ok(_)) => {}
                    Some(Err(e)) if io_kind(&e) == Some(std::io::ErrorKind::UnexpectedEof) => {
                        break BodyEnd::Cut
                    }
                    Some(Err(_)) => break BodyEnd::Refused,
                }
            };
            log.lock().unwrap().push(Served {
                keep_alive,
                body: end,
            });
            Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
        }
    });
    // As the listener builds it (see `proxy::builder`), with the default
    // limits.
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(server), service);
    let (mut rd, mut wr) = tokio::io::split(client);
    let talk = async {
        for read in reads {
            if wr.write_all(read).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        // The client's end comes once hyper has done what it can with the
        // bytes: hyper takes an end that arrives before it read a body it
        // has whole as the body cut short.
        super::settle().await;
        let _ = wr.shutdown().await;
    };
    let drain = async {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
    };
    let (result, (), ()) = tokio::join!(conn, talk, drain);
    let end = match result {
        Ok(()) => ConnEnd::Clean,
        Err(e) if e.is_parse() => ConnEnd::Refused,
        Err(e) if e.is_incomplete_message() => ConnEnd::Cut,
        Err(_) => ConnEnd::Other,
    };
    let served = served.lock().unwrap().clone();
    Hyper { served, end }
}

/// What the scan made of a stream, fed byte by byte.
#[derive(Debug, Clone)]
struct Scan {
    /// Where each message ended (one past its last byte).
    ends: Vec<usize>,
    /// Where each head began.
    starts: Vec<usize>,
    flags: Vec<(u64, Flag)>,
    /// Where the scan stopped following, and whether in or before a head
    /// (the index of that head) or in a body.
    lost: Option<(usize, Option<u64>)>,
    heads: u64,
}

fn scan(bytes: &[u8], reads: &[&[u8]]) -> Scan {
    let mut scan = FrameScan::new(64 * 1024);
    let mut out = Scan {
        ends: Vec::new(),
        starts: Vec::new(),
        flags: Vec::new(),
        lost: None,
        heads: 0,
    };
    let mut in_head = false;
    for (at, b) in bytes.iter().enumerate() {
        let (heads, messages, following) = (scan.heads(), scan.messages(), scan.following());
        let in_body = scan.reading_body();
        out.flags.extend(scan.feed(std::slice::from_ref(b)));
        let now_in_head = scan.reading_head();
        if now_in_head && !in_head && scan.heads() == heads {
            out.starts.push(at);
        }
        if scan.messages() > messages {
            out.ends.push(at + 1);
        }
        if following && !scan.following() {
            out.lost = Some((at, (!in_body).then_some(heads)));
        }
        in_head = now_in_head;
    }
    out.heads = scan.heads();
    // Fed as the reads come, the scan decides the same.
    let mut whole = FrameScan::new(64 * 1024);
    let mut first = None;
    for read in reads {
        first = first.or(whole.feed(read));
    }
    assert_eq!(
        (whole.heads(), whole.messages(), whole.following(), first),
        (
            scan.heads(),
            scan.messages(),
            scan.following(),
            out.flags.first().copied()
        ),
        "the scan decides differently fed in reads"
    );
    out
}

/// Whether hyper reads request `i` whole from `bytes` (one read).
async fn whole_at(bytes: &[u8], i: usize) -> bool {
    let run = hyper(&[bytes]).await;
    run.served.get(i).is_some_and(|s| s.body == BodyEnd::Whole)
}

/// The first disagreement between hyper and the scan on `stream`, if any.
async fn disagreement(stream: &Requests) -> Option<String> {
    let stream = &stream.0;
    let bytes = stream.bytes();
    let reads = stream.reads(&bytes);
    let hyper = hyper(&reads).await;
    let scan = scan(&bytes, &reads);
    let served = hyper.served.len();
    let flagged = |i: usize, flag: Flag| scan.flags.contains(&(i as u64, flag));
    for (i, request) in hyper.served.iter().enumerate() {
        match request.body {
            BodyEnd::Whole => {
                let Some(&end) = scan.ends.get(i) else {
                    return Some(format!(
                        "hyper read request {i} whole; the scan did not end it"
                    ));
                };
                if !whole_at(&bytes[..end], i).await || whole_at(&bytes[..end - 1], i).await {
                    return Some(format!(
                        "the scan ends request {i} at byte {end}; hyper does not"
                    ));
                }
            }
            BodyEnd::Cut if scan.ends.len() > i || scan.lost.is_some() => {
                return Some(format!(
                    "the stream ended in request {i}'s body for hyper; the scan {}",
                    if scan.lost.is_some() {
                        "stopped"
                    } else {
                        "ended it"
                    }
                ));
            }
            BodyEnd::Cut => {}
            BodyEnd::Refused if !flagged(i, Flag::BadChunk) => {
                return Some(format!(
                    "hyper refused request {i}'s body; the scan did not flag it"
                ));
            }
            BodyEnd::Refused => {}
        }
        // Content-Length beside Transfer-Encoding: hyper reads nothing
        // after such a request, whatever it asked.
        // (Line ends alone before the end of the stream are no head.)
        let more = scan
            .ends
            .get(i)
            .is_some_and(|&end| bytes[end..].iter().any(|&b| b != b'\r' && b != b'\n'));
        if request.body == BodyEnd::Whole && request.keep_alive && more {
            let stopped = i + 1 == served && hyper.end == ConnEnd::Clean;
            if flagged(i, Flag::LengthAndChunked) != stopped {
                return Some(format!(
                    "request {i}: the scan {} Content-Length with Transfer-Encoding; hyper {} reading after it",
                    if stopped { "does not flag" } else { "flags" },
                    if stopped { "stopped" } else { "went on" },
                ));
            }
        }
    }
    // Requests hyper never read (it closed after an earlier one) are no
    // one's to compare.
    for &(i, flag) in &scan.flags {
        let i = i as usize;
        let refused = hyper
            .served
            .get(i)
            .is_some_and(|r| r.body == BodyEnd::Refused);
        if flag == Flag::BadChunk && i < served && !refused {
            return Some(format!("the scan flags request {i}'s body; hyper took it"));
        }
    }
    // A head hyper reached: the scan stops in it exactly when hyper
    // refuses it (or the stream ends in it, before hyper can tell). Only
    // heads the generator made count: one made of a misframed body's bytes
    // may be refused for its syntax, which the scan does not check.
    let reached_refused = matches!(hyper.end, ConnEnd::Refused | ConnEnd::Cut);
    if let Some((_, Some(head))) = scan.lost {
        let head = head as usize;
        let reached = served > head || (served == head && reached_refused);
        if reached && !(served == head && reached_refused) {
            return Some(format!(
                "the scan stopped in head {head}; hyper served it ({served} served, then {:?})",
                hyper.end
            ));
        }
    }
    let generated = scan
        .starts
        .get(served)
        .is_some_and(|start| stream.starts().contains(start));
    let lost_in_head = scan
        .lost
        .is_some_and(|(_, head)| head == Some(served as u64));
    if hyper.end == ConnEnd::Refused && generated && !lost_in_head {
        return Some(format!("hyper refused head {served}; the scan followed it"));
    }
    None
}

#[test]
fn request_framing_agrees_with_hyper() {
    fn prop(stream: Requests) -> TestResult {
        match runtime().block_on(disagreement(&stream)) {
            None => TestResult::passed(),
            Some(why) => TestResult::error(format!(
                "{why}\nbytes: {:?}\nreads at {:?}",
                String::from_utf8_lossy(&stream.0.bytes()),
                stream.0.splits
            )),
        }
    }
    QuickCheck::new()
        .tests(cases())
        .quickcheck(prop as fn(Requests) -> TestResult);
}
