//! A property test over what a hostile upstream may answer: response bytes
//! built from the pieces framing bugs are made of (status lines, lengths,
//! transfer codings, chunk sizes and extensions, bare LFs, a second
//! response behind the first), then mutated byte by byte.
//!
//! For every case: the client that asked gets one well-framed answer (the
//! upstream's, or the proxy's own 502/504), perhaps cut short by a close,
//! and nothing after it; a second request on its connection, and one from
//! another client (which may get the same upstream connection), each get
//! their own answer and never a byte of the hostile one; the proxy counts
//! no panic.
//!
//! The default run is short (CI); `CUTOVER_HOSTILE_SECS` runs it longer and
//! `CUTOVER_HOSTILE_SEED` replays a seed (printed with any failure).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::connect;
use crate::support::raw::RawUpstream;
use crate::support::*;

/// How long the default run takes.
const DEFAULT_SECS: u64 = 3;
/// How long the upstream waits for the next request on a connection
/// after a hostile answer before it closes it: a body that never ends
/// ends there.
const UPSTREAM_LINGER: Duration = Duration::from_millis(300);
/// Longest wait for any answer from the proxy.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// splitmix64: small, seeded, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T: ?Sized>(&mut self, from: &[&'a T]) -> &'a T {
        from[self.below(from.len())]
    }

    /// One of `good` three times in four, else one of `bad`.
    fn mostly<'a, T: ?Sized>(&mut self, good: &[&'a T], bad: &[&'a T]) -> &'a T {
        if self.chance(4) {
            self.pick(bad)
        } else {
            self.pick(good)
        }
    }
}

/// One hostile answer: a response built from framing pieces, then mutated.
fn hostile_answer(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let eol = |rng: &mut Rng| -> &'static [u8] {
        if rng.chance(6) {
            b"\n"
        } else {
            b"\r\n"
        }
    };
    // Interim answers first, sometimes.
    while rng.chance(5) {
        out.extend_from_slice(rng.pick(&[
            &b"HTTP/1.1 100 Continue"[..],
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>",
            b"HTTP/1.1 102",
        ]));
        out.extend_from_slice(b"\r\n\r\n");
    }
    out.extend_from_slice(rng.mostly(
        &[&b"HTTP/1.1 "[..], b"HTTP/1.0 "],
        &[b"HTTP/1.2 ", b"http/1.1 ", b"HTTP/2 ", b"HTTP/1.1  "],
    ));
    out.extend_from_slice(rng.mostly(
        &[&b"200"[..], b"200", b"404", b"204", b"304", b"500"],
        &[b"101", b"100", b"999", b"099", b"20", b"2000", b"-1"],
    ));
    out.extend_from_slice(rng.mostly(
        &[&b" OK"[..], b"", b" "],
        &[
            b" \xffOK",
            "  Não encontrado".as_bytes(),
            b" a\x00b",
            b" a\rb",
            b"\tOK",
        ],
    ));
    out.extend_from_slice(eol(rng));
    let mut chunked = false;
    let mut length = None;
    for _ in 0..rng.below(5) {
        let line: Vec<u8> = match rng.below(18) {
            0..=2 => {
                let n = rng.below(40);
                length = Some(n);
                format!("Content-Length: {n}").into_bytes()
            }
            3 => rng
                .pick(&[
                    &b"Content-Length: 5, 5"[..],
                    b"Content-Length: 5, 6",
                    b"Content-Length: +5",
                    b"Content-Length: 0x5",
                    b"Content-Length: 99999999999999999999999",
                    b"Content-Length:",
                    b"Content-Length : 5",
                ])
                .to_vec(),
            4..=6 => {
                chunked = true;
                rng.mostly(
                    &[
                        &b"Transfer-Encoding: chunked"[..],
                        b"Transfer-Encoding: gzip, chunked",
                    ],
                    &[
                        b"Transfer-Encoding: chunked, gzip",
                        b"Transfer-Encoding: xchunked",
                        b"Transfer-Encoding: chunked ",
                        b"Transfer-Encoding: \x0bchunked",
                        b"Transfer-Encoding: identity",
                    ],
                )
                .to_vec()
            }
            7 => rng
                .pick(&[
                    &b"Connection: close"[..],
                    b"Connection: keep-alive",
                    b"Connection: upgrade",
                    b"Connection: x-secret",
                    b"Upgrade: h2c",
                ])
                .to_vec(),
            8 => b"X-Folded: a\r\n  b".to_vec(),
            9 => b"NoColon".to_vec(),
            10 => b"X-Nul: a\x00b".to_vec(),
            11 => b"Trailer: X-T".to_vec(),
            _ => b"X-Plain: yes".to_vec(),
        };
        out.extend_from_slice(&line);
        out.extend_from_slice(eol(rng));
    }
    out.extend_from_slice(eol(rng));
    if chunked && !rng.chance(5) {
        for _ in 0..rng.below(4) {
            let size = rng.below(20);
            out.extend_from_slice(
                rng.mostly(
                    &[
                        &format!("{size:x}")[..],
                        &format!("{size:X}"),
                        &format!("0{size:x}"),
                        &format!("{size:x};ext=1"),
                    ],
                    &[
                        &format!("{size:x};e\nx"),
                        &format!("{size:x} "),
                        "fffffffffffffffff",
                        "-1",
                    ],
                )
                .as_bytes(),
            );
            out.extend_from_slice(eol(rng));
            out.extend(std::iter::repeat_n(b'c', size));
            out.extend_from_slice(eol(rng));
        }
        out.extend_from_slice(rng.pick(&[
            &b"0\r\n\r\n"[..],
            b"0\r\nX-T: 1\r\n\r\n",
            b"0\n\n",
            b"",
        ]));
    } else {
        let n = match length {
            Some(n) if !rng.chance(4) => n,
            _ => rng.below(50),
        };
        out.extend(std::iter::repeat_n(b'b', n));
    }
    if rng.chance(4) {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL");
    }
    // Half the cases go as built: most pieces above are well-formed.
    let mutations = if rng.chance(2) { 0 } else { 1 + rng.below(3) };
    for _ in 0..mutations {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(4) {
            0 => out[at] = rng.next() as u8,
            1 => {
                out.remove(at);
            }
            2 => out.insert(at, *rng.pick(&[&b'\r', &b'\n', &b' ', &b':', &0u8, &b';'])),
            _ => out.truncate(at),
        }
    }
    out
}

/// The answer the upstream gives to `GET /good/N`.
fn good_body(n: &str) -> String {
    format!("good-{n}")
}

/// The hostile upstream: `/hostile` gets the current hostile bytes, after
/// which the connection waits a little for another request and then
/// closes; `/good/N` gets a well-formed `good-N`.
async fn hostile_upstream(answer: Arc<Mutex<Vec<u8>>>) -> RawUpstream {
    RawUpstream::start(move |mut conn| {
        let answer = answer.clone();
        async move {
            let mut after_hostile = false;
            loop {
                let head = if after_hostile {
                    match tokio::time::timeout(UPSTREAM_LINGER, conn.head()).await {
                        Ok(head) => head,
                        Err(_) => return,
                    }
                } else {
                    conn.head().await
                };
                let Some(head) = head else { return };
                let line = String::from_utf8_lossy(&head).into_owned();
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                let bytes = if let Some(n) = path.strip_prefix("/good/") {
                    after_hostile = false;
                    let body = good_body(n);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                } else {
                    after_hostile = true;
                    answer.lock().unwrap_or_else(|p| p.into_inner()).clone()
                };
                if conn.stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// How one answer read off a client connection ended.
#[derive(Debug)]
struct Framed {
    status: u16,
    body: Vec<u8>,
    /// The body ended as its framing says (else the connection closed
    /// before it did).
    complete: bool,
    /// The head says the connection closes after it.
    closes: bool,
}

/// Reads more bytes onto `got`: false at the close, an error past `deadline`.
async fn read_more(
    stream: &mut TcpStream,
    got: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> Result<bool, String> {
    let mut buf = [0u8; 4096];
    match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        Err(_) => Err("no answer in time".to_string()),
        Ok(Ok(0)) | Ok(Err(_)) => Ok(false),
        Ok(Ok(n)) => {
            got.extend_from_slice(&buf[..n]);
            Ok(true)
        }
    }
}

/// Reads one answer to a GET off `stream`, checking its framing strictly:
/// a head httparse takes, then a body framed by `Content-Length`,
/// `chunked`, or the close. `Err` says what was wrong.
async fn read_framed(stream: &mut TcpStream, got: &mut Vec<u8>) -> Result<Framed, String> {
    let deadline = tokio::time::Instant::now() + ANSWER_BOUND;
    // The head.
    let (head_len, status, length, chunked, closes) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(got) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(0);
                let (mut length, mut chunked, mut closes) = (None, false, resp.version == Some(0));
                for h in resp.headers.iter() {
                    let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        if length.is_some() {
                            return Err("two content-lengths".into());
                        }
                        length = Some(value.parse::<usize>().map_err(|_| "bad length")?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        if value.trim() != "chunked" && !value.ends_with(", chunked") {
                            return Err(format!("transfer-encoding {value:?}"));
                        }
                        chunked = true;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        closes |= value.split(',').any(|t| t.trim() == "close");
                    }
                }
                if chunked && length.is_some() {
                    return Err("content-length beside chunked".into());
                }
                break (len, status, length, chunked, closes);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("head: {e}")),
        }
        if !read_more(stream, got, deadline).await? {
            return Err("closed before a head".into());
        }
    };
    if (100..200).contains(&status) {
        return Err(format!("interim {status} reached the client"));
    }
    got.drain(..head_len);
    let no_body = status == 204 || status == 304;
    let mut body = Vec::new();
    let complete = if no_body {
        true
    } else if let Some(n) = length {
        while got.len() < n {
            if !read_more(stream, got, deadline).await? {
                break;
            }
        }
        let take = n.min(got.len());
        body.extend(got.drain(..take));
        body.len() == n
    } else if chunked {
        loop {
            // One chunk: size line, data, CRLF; the last one and trailers.
            let Some(eol) = got.windows(2).position(|w| w == b"\r\n") else {
                if !read_more(stream, got, deadline).await? {
                    break false;
                }
                continue;
            };
            let line = String::from_utf8_lossy(&got[..eol]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers up to the empty line.
                let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if !read_more(stream, got, deadline).await? {
                        break false;
                    }
                    continue;
                };
                got.drain(..end + 4);
                break true;
            }
            if got.len() < eol + 2 + size + 2 {
                if !read_more(stream, got, deadline).await? {
                    break false;
                }
                continue;
            }
            if &got[eol + 2 + size..eol + 4 + size] != b"\r\n" {
                return Err("chunk data not followed by CRLF".into());
            }
            body.extend_from_slice(&got[eol + 2..eol + 2 + size]);
            got.drain(..eol + 4 + size);
        }
    } else {
        while read_more(stream, got, deadline).await? {}
        body.append(got);
        true
    };
    Ok(Framed {
        status,
        body,
        complete,
        closes,
    })
}

/// `GET /good/N` on `stream`; the answer must be exactly `good-N`, or the
/// proxy's own 502 (the upstream connection it picked went away), or a
/// close when `may_close` (a connection the proxy had reason to end).
async fn expect_own_answer(
    stream: &mut TcpStream,
    n: u64,
    may_close: bool,
) -> Result<Option<Framed>, String> {
    let req = format!("GET /good/{n} HTTP/1.1\r\nHost: h\r\n\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() && may_close {
        return Ok(None);
    }
    let mut got = Vec::new();
    match read_framed(stream, &mut got).await {
        Err(e) if may_close && e == "closed before a head" && got.is_empty() => Ok(None),
        Err(e) => Err(format!(
            "good/{n}: {e}; read {:?}",
            String::from_utf8_lossy(&got)
        )),
        Ok(f)
            if f.status == 200 && f.complete && f.body == good_body(&n.to_string()).as_bytes() =>
        {
            Ok(Some(f))
        }
        Ok(f) if f.status == 502 && f.complete => Ok(Some(f)),
        Ok(f) => Err(format!(
            "good/{n} got {} {:?} (complete: {})",
            f.status,
            String::from_utf8_lossy(&f.body),
            f.complete
        )),
    }
}

/// Figures of one run.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    proxied: u64,
    cut: u64,
    refused: u64,
    reused_ok: u64,
    other_ok: u64,
}

/// One case: the hostile answer to client A, then A's next request on the
/// same connection, then client B's.
async fn one_case(
    proxy: std::net::SocketAddr,
    next: &AtomicU64,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut a = connect(proxy).await;
    a.write_all(b"GET /hostile HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let first = read_framed(&mut a, &mut got).await.map_err(|e| {
        format!(
            "hostile answer: {e}; read {:?}",
            String::from_utf8_lossy(&got)
        )
    })?;
    match (first.status, first.complete) {
        (502 | 504, true) => {
            if std::env::var("CUTOVER_HOSTILE_DEBUG").is_ok() {
                eprintln!(
                    "refused {}: {:?}",
                    first.status,
                    String::from_utf8_lossy(&first.body)
                );
            }
            tally.refused += 1
        }
        (_, true) => tally.proxied += 1,
        (_, false) => tally.cut += 1,
    }
    if first.complete && !first.closes {
        if !got.is_empty() {
            return Err(format!(
                "bytes after the answer: {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = expect_own_answer(&mut a, n, true).await? {
            tally.reused_ok += u64::from(f.status == 200);
        }
    }
    let mut b = connect(proxy).await;
    let n = next.fetch_add(1, Ordering::Relaxed);
    if let Some(f) = expect_own_answer(&mut b, n, false).await? {
        tally.other_ok += u64::from(f.status == 200);
    }
    tally.cases += 1;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstream_answers_are_framed_or_502_and_never_leak() {
    let secs = std::env::var("CUTOVER_HOSTILE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    let seed = std::env::var("CUTOVER_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let answer = Arc::new(Mutex::new(Vec::new()));
    let upstream = hostile_upstream(answer.clone()).await;
    let config = "[server.limits]\nresponse_timeout = \"300ms\"\n\n".to_string()
        + &route(None, "/", "raw")
        + &service("raw", &[upstream.addr], &[upstream.addr]);
    let proxy = Cutover::start(&config).await;
    let next = AtomicU64::new(0);
    let mut tally = Tally::default();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng(seed);
    while Instant::now() < end {
        // Each case has its own seed, so a failure replays alone.
        let case_seed = rng.next();
        let bytes = hostile_answer(&mut Rng(case_seed));
        if std::env::var("CUTOVER_HOSTILE_DEBUG").is_ok() {
            eprintln!("case {:?}", String::from_utf8_lossy(&bytes));
        }
        *answer.lock().unwrap_or_else(|p| p.into_inner()) = bytes.clone();
        let outcome =
            tokio::time::timeout(ANSWER_BOUND * 3, one_case(proxy.addr, &next, &mut tally))
                .await
                .unwrap_or_else(|_| Err("case took too long".into()));
        if let Err(e) = outcome {
            panic!(
                "run seed {seed}, case seed {case_seed}, upstream answered {:?}: {e}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    let scrape = proxy.scrape().await;
    assert_eq!(
        scrape.value("cutover_connection_panics_total", &[]),
        0.0,
        "seed {seed}"
    );
    eprintln!("hostile upstream: seed {seed}, {secs}s: {tally:?}");
    assert!(tally.cases > 0);
}
