//! Realistic and adversarial HTTP/1.1 byte streams for the differential
//! tests: well-formed messages most of the time, and the framing an
//! attacker or a broken server plays with the rest (lengths beside
//! codings, lists and look-alike names, bad or overflowing chunk sizes,
//! bare LFs, bodies longer or shorter than announced, smuggled heads),
//! cut short and split anywhere.

use quickcheck::{Arbitrary, Gen};

/// A number in `0..n`.
pub fn below(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n.max(1)
}

/// True `percent` times in a hundred.
pub fn chance(g: &mut Gen, percent: usize) -> bool {
    below(g, 100) < percent
}

/// One of `items`.
pub fn pick<T: Copy>(g: &mut Gen, items: &[T]) -> T {
    items[below(g, items.len())]
}

/// A header value or query made of token bytes.
fn token(g: &mut Gen) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~";
    (0..1 + below(g, 12))
        .map(|_| char::from(pick(g, CHARS)))
        .collect()
}

/// Body bytes: text, line ends, and now and then what looks like a
/// message of its own (a smuggling attempt, or a chunk's framing).
fn payload(g: &mut Gen, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let piece: &[u8] = match below(g, 10) {
            0 => b"\r\n",
            1 => b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
            2 => b"0\r\n\r\n",
            3 => b"\n",
            _ => b"payload",
        };
        out.extend_from_slice(piece);
    }
    out.truncate(len);
    out
}

/// A stream of messages, maybe cut short, and where it is split into
/// the reads that deliver it.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The messages, each as its bytes.
    pub messages: Vec<Vec<u8>>,
    /// The stream ends after this many bytes, when set.
    pub truncate: Option<usize>,
    /// Where the stream is split into reads (offsets, ascending).
    pub splits: Vec<usize>,
    /// Per message, facts the comparisons need about how it was made.
    pub notes: Vec<Note>,
}

/// What a generated message is known to be.
#[derive(Debug, Clone, Copy, Default)]
pub struct Note {
    /// An HTTP/1.0 message with `Transfer-Encoding`.
    pub http10_coding: bool,
}

impl Stream {
    /// The bytes as they arrive.
    pub fn bytes(&self) -> Vec<u8> {
        let mut all: Vec<u8> = self.messages.concat();
        if let Some(n) = self.truncate {
            all.truncate(n);
        }
        all
    }

    /// Where each message begins in [`Stream::bytes`].
    pub fn starts(&self) -> Vec<usize> {
        let mut at = 0;
        self.messages
            .iter()
            .map(|m| {
                let start = at;
                at += m.len();
                start
            })
            .collect()
    }

    /// `bytes` cut at the split points.
    pub fn reads<'a>(&self, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut from = 0;
        for &at in &self.splits {
            let at = at.min(bytes.len());
            if at > from {
                out.push(&bytes[from..at]);
                from = at;
            }
        }
        if from < bytes.len() {
            out.push(&bytes[from..]);
        }
        out
    }

    fn finish(mut self, g: &mut Gen) -> Stream {
        let len: usize = self.messages.iter().map(Vec::len).sum();
        if chance(g, 20) && len > 0 {
            self.truncate = Some(below(g, len));
        }
        let mut splits: Vec<usize> = (0..below(g, 6)).map(|_| below(g, len + 1)).collect();
        if chance(g, 10) {
            // Byte by byte, now and then.
            splits = (1..len).collect();
        }
        splits.sort_unstable();
        self.splits = splits;
        self
    }

    fn shrunk(&self) -> Vec<Stream> {
        let mut out = Vec::new();
        if !self.splits.is_empty() {
            out.push(Stream {
                splits: Vec::new(),
                ..self.clone()
            });
        }
        if self.truncate.is_some() {
            out.push(Stream {
                truncate: None,
                ..self.clone()
            });
        }
        for i in 0..self.messages.len() {
            if self.messages.len() > 1 {
                let mut fewer = self.clone();
                fewer.messages.remove(i);
                fewer.notes.remove(i);
                fewer.truncate = None;
                out.push(fewer);
            }
        }
        out
    }
}

/// A `Content-Length` value for a body of `n` bytes: most often right,
/// else in a form hyper takes (leading zeros, a list of the same value) or
/// refuses (a sign, a list that disagrees, not a number, too large), or a
/// valid number that is wrong (the body then runs into the next message).
fn length_text(g: &mut Gen, n: usize) -> String {
    match below(g, 20) {
        0 => format!("0{n}"),
        1 => format!("{n}, {n}"),
        2 => format!("{n},{}", n + 1),
        3 => format!("+{n}"),
        4 => format!("{n}x"),
        5 => String::new(),
        6 => "99999999999999999999999".into(),
        7 => u64::MAX.to_string(),
        8 => (n + 1 + below(g, 3)).to_string(),
        9 => n.saturating_sub(1 + below(g, 3)).to_string(),
        10 => format!(" {n} "),
        _ => n.to_string(),
    }
}

/// A `Transfer-Encoding` value: chunked last (taken), or not (refused by
/// a server, read to the close by a client).
fn coding_text(g: &mut Gen) -> &'static str {
    pick(
        g,
        &[
            "chunked",
            "chunked",
            "chunked",
            "Chunked",
            "gzip, chunked",
            "gzip,chunked ",
            "chunked, gzip",
            "identity",
            "chunked,",
            "gzip",
        ],
    )
}

/// A chunked body of `chunks` data chunks, with extensions, blanks,
/// trailers, and now and then one framing mistake.
fn chunked_body(g: &mut Gen) -> Vec<u8> {
    let mut out = Vec::new();
    // At most one mistake, at one of the places it can go.
    let break_at = if chance(g, 30) {
        below(g, 8)
    } else {
        usize::MAX
    };
    let mut step = 0;
    let mut broken = |_: &mut Gen| {
        step += 1;
        step - 1 == break_at
    };
    for _ in 0..below(g, 4) {
        let len = 1 + below(g, 20);
        let mut size = if chance(g, 20) {
            format!("{len:X}")
        } else {
            format!("{len:x}")
        };
        if chance(g, 10) {
            size = format!("{}{size}", "0".repeat(1 + below(g, 20)));
        }
        if broken(g) {
            size = pick(g, &["1g", "g", "10000000000000000", "-1", ""]).to_string();
        }
        out.extend_from_slice(size.as_bytes());
        if chance(g, 10) {
            out.extend_from_slice(pick(g, &[&b" "[..], b"\t", b"  "]));
        }
        if chance(g, 20) {
            let ext: &[u8] = if broken(g) {
                b";a\nb"
            } else {
                pick(g, &[&b";a=b"[..], b";x", b";k=\"v\"", b"; name=value"])
            };
            out.extend_from_slice(ext);
        }
        out.extend_from_slice(if broken(g) { b"\n" } else { b"\r\n" });
        let data_len = if broken(g) { len + 1 } else { len };
        out.extend_from_slice(&payload(g, data_len));
        out.extend_from_slice(if broken(g) {
            pick(g, &[&b"\n"[..], b"XY", b"\r"])
        } else {
            b"\r\n"
        });
    }
    out.extend_from_slice(pick(g, &[&b"0"[..], b"0", b"000"]));
    if chance(g, 10) {
        out.extend_from_slice(b";last");
    }
    out.extend_from_slice(b"\r\n");
    for i in 0..if chance(g, 20) { 1 + below(g, 2) } else { 0 } {
        out.extend_from_slice(format!("X-Trailer-{i}: {}\r\n", token(g)).as_bytes());
    }
    out.extend_from_slice(if broken(g) { b"\n" } else { b"\r\n" });
    out
}

/// The framing a message's head announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length,
    Chunked,
    LengthThenChunked,
    ChunkedThenLength,
}

/// The framing fields of a head, and the body that follows them.
fn framing(g: &mut Gen, kind: Framing, fields: &mut Vec<(String, String)>) -> Vec<u8> {
    let cl_name = pick(g, &["Content-Length", "content-length", "CONTENT-LENGTH"]);
    let te_name = pick(g, &["Transfer-Encoding", "transfer-encoding"]);
    let mut body = Vec::new();
    let len = below(g, 40);
    let sized = payload(g, len);
    let length = length_text(g, sized.len());
    match kind {
        Framing::None => {}
        Framing::Length => {
            fields.push((cl_name.into(), length.clone()));
            if chance(g, 10) {
                let again = if chance(g, 50) {
                    length
                } else {
                    (sized.len() + 1).to_string()
                };
                fields.push(("Content-Length".into(), again));
            }
            body = sized;
        }
        Framing::Chunked | Framing::LengthThenChunked | Framing::ChunkedThenLength => {
            if kind == Framing::LengthThenChunked {
                fields.push((cl_name.into(), length.clone()));
            }
            fields.push((te_name.into(), coding_text(g).into()));
            if chance(g, 10) {
                fields.push((te_name.into(), coding_text(g).into()));
            }
            if kind == Framing::ChunkedThenLength {
                fields.push((cl_name.into(), length));
            }
            body = chunked_body(g);
        }
    }
    body
}

/// Fields that are none of the framing ones, some of them named much
/// like those.
fn filler(g: &mut Gen, fields: &mut Vec<(String, String)>) {
    for _ in 0..below(g, 4) {
        let name = pick(
            g,
            &[
                "X-Request-Id",
                "Accept",
                "Content-Type",
                "Content-Lengthy",
                "X-Content-Length",
                "Transfer-Encodings",
                "Transfer",
                "TE",
                "Content-Len",
            ],
        );
        fields.push((name.into(), token(g)));
    }
}

/// Renders a head: the first line, the fields, the empty line, with CRLF
/// or (now and then) bare LF line ends, as httparse takes both.
fn head(g: &mut Gen, first: &str, fields: &[(String, String)]) -> Vec<u8> {
    let eol = if chance(g, 10) { "\n" } else { "\r\n" };
    let mut out = format!("{first}{eol}");
    for (name, value) in fields {
        let sep = pick(g, &[": ", ":", ":  "]);
        out.push_str(&format!("{name}{sep}{value}{eol}"));
    }
    out.push_str(eol);
    out.into_bytes()
}

fn pick_framing(g: &mut Gen) -> Framing {
    match below(g, 20) {
        0..=5 => Framing::None,
        6..=11 => Framing::Length,
        12..=16 => Framing::Chunked,
        17 | 18 => Framing::LengthThenChunked,
        _ => Framing::ChunkedThenLength,
    }
}

/// Client requests on one connection.
#[derive(Debug, Clone)]
pub struct Requests(pub Stream);

impl Arbitrary for Requests {
    fn arbitrary(g: &mut Gen) -> Requests {
        let mut stream = Stream {
            messages: Vec::new(),
            truncate: None,
            splits: Vec::new(),
            notes: Vec::new(),
        };
        for index in 0..1 + below(g, 4) {
            let method = pick(g, &["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]);
            let http10 = chance(g, 8);
            let version = if http10 { "1.0" } else { "1.1" };
            let first = format!("{method} /m{index}?q={} HTTP/{version}", token(g));
            let mut fields = vec![("Host".to_string(), "example.test".to_string())];
            filler(g, &mut fields);
            let kind = pick_framing(g);
            let body = framing(g, kind, &mut fields);
            if chance(g, 10) {
                let value = if http10 { "keep-alive" } else { "close" };
                fields.push(("Connection".into(), value.into()));
            }
            if chance(g, 30) {
                let by = below(g, fields.len());
                fields.rotate_left(by);
            }
            let mut message = head(g, &first, &fields);
            message.extend_from_slice(&body);
            stream.messages.push(message);
            stream.notes.push(Note {
                http10_coding: http10 && kind != Framing::None && kind != Framing::Length,
            });
        }
        Requests(stream.finish(g))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Requests>> {
        Box::new(self.0.shrunk().into_iter().map(Requests))
    }
}

/// The method a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `GET`.
    Get,
    /// `HEAD`: no body, whatever the head says.
    Head,
    /// `GET` with `Connection: upgrade` and `Upgrade: websocket`.
    Upgrade,
}

/// An upstream's answer to one request: interim answers, the final head,
/// its body, and whatever the server sends after it.
#[derive(Debug, Clone)]
pub struct Response {
    /// What the request was.
    pub asked: Asked,
    /// The answer, as one message of a stream.
    pub stream: Stream,
}

impl Arbitrary for Response {
    fn arbitrary(g: &mut Gen) -> Response {
        let asked = pick(g, &[Asked::Get, Asked::Get, Asked::Head, Asked::Upgrade]);
        let mut bytes = Vec::new();
        for _ in 0..if chance(g, 15) { 1 + below(g, 2) } else { 0 } {
            bytes.extend_from_slice(pick(
                g,
                &[
                    &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
                    b"HTTP/1.1 102 Processing\r\n\r\n",
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                ],
            ));
        }
        let switching = asked == Asked::Upgrade && chance(g, 60);
        let http10 = !switching && chance(g, 10);
        let status = if switching {
            101
        } else {
            pick(g, &[200, 200, 200, 201, 204, 206, 304, 404, 500, 299])
        };
        let reason = pick(g, &[" OK", "", " Custom Reason", " "]);
        let version = if http10 { "1.0" } else { "1.1" };
        let first = format!("HTTP/{version} {status}{reason}");
        let mut fields = Vec::new();
        filler(g, &mut fields);
        let mut kind = pick_framing(g);
        if switching {
            fields.push(("Connection".into(), "Upgrade".into()));
            fields.push(("Upgrade".into(), "websocket".into()));
            kind = Framing::None;
        }
        let body = framing(g, kind, &mut fields);
        if !switching && chance(g, 15) {
            let value = if http10 { "keep-alive" } else { "close" };
            fields.push(("Connection".into(), value.into()));
        }
        bytes.extend_from_slice(&head(g, &first, &fields));
        bytes.extend_from_slice(&body);
        if switching || chance(g, 20) {
            // The next protocol's first bytes, or what a broken server
            // sends after its answer.
            let len = 1 + below(g, 30);
            bytes.extend_from_slice(&payload(g, len));
        }
        let stream = Stream {
            messages: vec![bytes],
            truncate: None,
            splits: Vec::new(),
            notes: vec![Note {
                http10_coding: http10 && !matches!(kind, Framing::None | Framing::Length),
            }],
        };
        Response {
            asked,
            stream: stream.finish(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Response>> {
        let asked = self.asked;
        Box::new(
            self.stream
                .shrunk()
                .into_iter()
                .map(move |stream| Response { asked, stream }),
        )
    }
}
