//! Follows the HTTP/1.1 request framing of one client connection over the
//! bytes it sends, to see what hyper's parser hides from the service (pure).
//!
//! hyper answers a request carrying both `Content-Length` and
//! `Transfer-Encoding` the way RFC 9112 §6.1 allows: it drops the length,
//! reads the body as chunked and closes the connection afterwards. That is
//! safe, but such a request is the classic smuggling probe, so cutover
//! rejects it with 400 before anything reaches an upstream; the service can
//! only do that if it knows, because the parsed head no longer shows it.
//!
//! [`FrameScan`] walks heads and bodies exactly as hyper frames them (heads up
//! to their empty line, bodies by `Content-Length` or by hyper's chunked
//! grammar) and reports the index of each head that had both, and of each
//! head whose chunked body hyper will refuse (an invalid chunk size or
//! line end): when those bytes came in with the head, the request can be
//! refused before anything of it is forwarded. It never
//! buffers and does constant work per head byte; `Content-Length` bodies and
//! chunk data are skipped by counting. On anything hyper would refuse it
//! stops following (hyper closes such a connection anyway), so it can miss a
//! head but never blames one that hyper frames differently.
//!
//! It also measures each head against `max_header_bytes` to the byte, which
//! hyper's read buffer (8 KiB at least) cannot do for smaller limits.

/// `content-length`, lowercase.
const CONTENT_LENGTH: &[u8] = b"content-length";
/// `transfer-encoding`, lowercase.
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
/// `chunked`, lowercase.
const CHUNKED: &[u8] = b"chunked";
/// The longest request target hyper takes (its `MAX_URI_LEN`).
const MAX_URI_LEN: usize = u16::MAX as usize - 1;
/// Most header lines in a request head (hyper's default).
const MAX_HEADERS: usize = 100;
/// The largest body length hyper takes (its `DecodedLength::MAX_LEN`).
const MAX_LENGTH: u64 = u64::MAX - 2;

use super::chunked::{ChunkState, Chunked};

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Empty lines before a request line (httparse skips them).
    Start,
    /// A CR before a request line: an LF must follow.
    StartLf,
    /// Inside the request line.
    RequestLine,
    /// At the start of a header line (or of the empty line ending the head).
    LineStart,
    /// Inside a header name.
    Name,
    /// Inside a header value.
    Value,
    /// A CR was read; an LF must follow.
    Lf,
    /// `Content-Length` body bytes still to come.
    Fixed(u64),
    /// Inside a chunked body, as [`Chunked`] follows it.
    Chunked,
    /// No longer following: the stream is no longer framed the way hyper
    /// frames an accepted request.
    Lost,
}

/// Why a request is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// Its head carried both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// Its chunked body breaks hyper's chunked grammar.
    BadChunk,
    /// Its request target is longer than hyper takes: hyper answers 414.
    UriTooLong,
}

/// Which header the current line is, as far as the name has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Other,
}

/// What one head says about its body.
#[derive(Debug, Clone, Copy, Default)]
struct Head {
    /// The value of the first `Content-Length` line read before any
    /// `Transfer-Encoding` (hyper ignores later ones).
    length: Option<u64>,
    /// A `Content-Length` line was seen at all.
    has_length: bool,
    /// A `Transfer-Encoding` line was seen.
    has_te: bool,
    /// The last `Transfer-Encoding` line ends in `chunked`.
    chunked: bool,
    /// Where the request line's first space is: the method's length (0
    /// until it is found; a method is never empty).
    method_len: usize,
    /// The request line's length, without its line end.
    line_len: usize,
    /// Header lines begun.
    lines: usize,
    /// The request line's last byte: its version's minor digit.
    version_last: u8,
}

impl Head {
    /// Whether hyper refuses the head for its request target alone (414):
    /// one longer than [`MAX_URI_LEN`] in a head httparse takes (at most
    /// [`MAX_HEADERS`] header lines; more are a 431 first).
    fn target_too_long(&self) -> bool {
        // `METHOD SP target SP HTTP/1.x`: the version is eight bytes. The
        // line's length alone rules out every usual head.
        self.line_len > MAX_URI_LEN
            && self.method_len > 0
            && self.line_len.saturating_sub(self.method_len + 2 + 8) > MAX_URI_LEN
            && self.lines <= MAX_HEADERS
    }
}

/// Per-line parse state of a header name or value.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// Bytes of the name so far.
    name_len: usize,
    /// The name could still be `content-length` / `transfer-encoding`.
    maybe_cl: bool,
    maybe_te: bool,
    field: Field,
    /// Content-Length: digits so far (`None` once invalid).
    digits: Option<u64>,
    /// Any non-blank value byte seen.
    value_started: bool,
    /// Blank seen after value bytes (only trailing blanks may follow).
    value_blank: bool,
    /// Transfer-Encoding: bytes of `chunked` matched in the current token,
    /// or more than its length when the token is something else.
    token: usize,
    /// The current token was followed by a blank.
    token_ended: bool,
}

impl Line {
    fn new() -> Line {
        Line {
            name_len: 0,
            maybe_cl: true,
            maybe_te: true,
            field: Field::Other,
            digits: Some(0),
            value_started: false,
            value_blank: false,
            token: 0,
            token_ended: false,
        }
    }
}

/// The framing follower of one HTTP/1.1 client connection.
#[derive(Debug, Clone)]
pub struct FrameScan {
    state: State,
    /// Heads completed so far; the index of the head being read.
    heads: u64,
    head: Head,
    line: Line,
    /// The chunked body being read.
    chunked: Chunked,
    /// Messages (head and body) completed so far.
    ended: u64,
    /// Where `Lf` goes on: the empty line ends the head; else next line.
    lf_ends_head: bool,
    /// Bytes of the current head so far.
    head_len: usize,
    /// Largest head allowed.
    limit: usize,
    /// A head went over `limit`.
    oversized: bool,
}

impl FrameScan {
    /// A scan at the start of a connection whose heads may be `limit` bytes.
    pub fn new(limit: usize) -> FrameScan {
        FrameScan {
            state: State::Start,
            heads: 0,
            head: Head::default(),
            line: Line::new(),
            chunked: Chunked::new(),
            ended: 0,
            lf_ends_head: false,
            head_len: 0,
            limit,
            oversized: false,
        }
    }

    /// Whether the scan still follows the stream.
    pub fn following(&self) -> bool {
        self.state != State::Lost
    }

    /// Whether a head went over the limit (the scan stops there).
    pub fn oversized(&self) -> bool {
        self.oversized
    }

    /// Request heads completed so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Requests completed so far, head and body.
    pub fn messages(&self) -> u64 {
        self.ended
    }

    /// Whether the scan is inside a request head.
    #[cfg(test)]
    pub(super) fn reading_head(&self) -> bool {
        self.in_head()
    }

    /// Whether the scan is inside a request body.
    #[cfg(test)]
    pub(super) fn reading_body(&self) -> bool {
        matches!(self.state, State::Fixed(_) | State::Chunked)
    }

    /// Reads `bytes`, the next bytes the client sent. Returns the first
    /// request flagged in them: its index (0 for the connection's first
    /// request) and why.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<(u64, Flag)> {
        let mut found = None;
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Lost => return found,
                State::Fixed(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == left {
                        self.next_message()
                    } else {
                        State::Fixed(left - take)
                    };
                }
                State::Chunked => {
                    if let ChunkState::Data(left) = self.chunked.state() {
                        let take = left.min((bytes.len() - i) as u64);
                        i += take as usize;
                        self.chunked.take_data(take);
                    } else {
                        self.step(bytes[i], &mut found);
                        i += 1;
                    }
                }
                State::RequestLine | State::Name | State::Value => {
                    // Up to the line's end (or a name's colon) each byte
                    // changes at most the line's own state: take the run at
                    // once, and look at its bytes only where they matter.
                    let rest = &bytes[i..];
                    let run = run_len(rest, self.state == State::Name);
                    if run > 0 {
                        self.take_run(&rest[..run]);
                        i += run;
                        self.count_run(run);
                    } else if self.state != State::Name && rest.starts_with(b"\r\n") {
                        // A whole CRLF ending the request line or a value.
                        self.line_end();
                        i += 2;
                    } else {
                        self.step(bytes[i], &mut found);
                        i += 1;
                    }
                }
                State::LineStart => {
                    let rest = &bytes[i..];
                    if rest.starts_with(b"\r\n") && self.head_len < self.limit {
                        // The empty line ending the head, at once.
                        if let Some(flagged) = self.end_of_head() {
                            found = found.or(Some(flagged));
                        }
                        i += 2;
                    } else if let Some(colon) = name_end(rest) {
                        // A whole name: its field is known at its colon.
                        self.head.lines += 1;
                        let field = field_of(&rest[..colon]);
                        match line_len(rest, colon) {
                            // A whole line that cannot frame the body.
                            Some(len) if field == Field::Other => {
                                i += len;
                                self.count_run(len);
                            }
                            _ => {
                                self.line = Line {
                                    field,
                                    ..Line::new()
                                };
                                self.state = State::Value;
                                i += colon + 1;
                                self.count_run(colon + 1);
                            }
                        }
                    } else {
                        self.step(bytes[i], &mut found);
                        i += 1;
                    }
                }
                _ => {
                    self.step(bytes[i], &mut found);
                    i += 1;
                }
            }
        }
        found
    }

    /// Counts `n` head bytes (one, or a run taken at once), stopping where
    /// byte by byte would have: one past the limit.
    fn count_run(&mut self, n: usize) {
        self.head_len += n;
        if self.head_len > self.limit {
            self.head_len = self.limit + 1;
            self.oversized = true;
            self.state = State::Lost;
        }
    }

    /// A CRLF ending the request line or a header value, taken at once as
    /// byte by byte would: the line's end, then two head bytes.
    fn line_end(&mut self) {
        if self.state == State::RequestLine {
            self.request_line_end();
        } else if !self.end_of_line() {
            // Refused at the CR, which is then not counted.
            self.state = State::Lost;
            return;
        }
        self.state = State::LineStart;
        self.count_run(2);
    }

    /// The request line ends here: its length is the head's so far.
    fn request_line_end(&mut self) {
        self.head.line_len = self.head_len;
    }

    /// Bytes of the request line, a header name or a header value, none of
    /// them a line end (nor, in a name, the colon). The request line and
    /// the values of other headers are skipped; a name is followed only
    /// while it could still be `Content-Length` or `Transfer-Encoding`.
    fn take_run(&mut self, run: &[u8]) {
        match self.state {
            State::Name => {
                for &b in run {
                    if !(self.line.maybe_cl || self.line.maybe_te) {
                        break;
                    }
                    self.name_byte(b);
                }
            }
            State::Value if self.line.field != Field::Other => {
                for &b in run {
                    self.value_byte(b);
                }
            }
            State::RequestLine => {
                // The method ends at the line's first space (httparse
                // allows no other separator, nor one before it).
                if self.head.method_len == 0 {
                    if let Some(at) = run.iter().position(|&b| b == b' ') {
                        self.head.method_len = self.head_len + at;
                    }
                }
                // The line ends with the version, `HTTP/1.0` or `HTTP/1.1`.
                if let Some(&last) = run.last() {
                    self.head.version_last = last;
                }
            }
            _ => {}
        }
    }

    /// One byte of a head or of chunked framing.
    fn step(&mut self, b: u8, found: &mut Option<(u64, Flag)>) {
        let in_body = self.state == State::Chunked;
        if let Some(flagged) = self.byte(b) {
            *found = found.or(Some(flagged));
        }
        if in_body && self.state == State::Lost {
            // Only a completed head starts a body: heads >= 1.
            *found = found.or(Some((self.heads - 1, Flag::BadChunk)));
        }
        if self.in_head() {
            self.count_run(1);
        }
    }

    fn in_head(&self) -> bool {
        matches!(
            self.state,
            State::RequestLine | State::LineStart | State::Name | State::Value | State::Lf
        )
    }

    fn next_message(&mut self) -> State {
        self.head = Head::default();
        self.ended += 1;
        State::Start
    }

    /// One byte outside of counted body data. Returns a flagged head when
    /// this byte completed such a head.
    fn byte(&mut self, b: u8) -> Option<(u64, Flag)> {
        self.state = match self.state {
            State::Start => match b {
                b'\r' => State::StartLf,
                b'\n' => State::Start,
                _ => State::RequestLine,
            },
            State::StartLf => match b {
                b'\n' => State::Start,
                _ => State::Lost,
            },
            State::RequestLine => match b {
                b'\r' => {
                    self.request_line_end();
                    self.expect_lf(false)
                }
                b'\n' => {
                    self.request_line_end();
                    State::LineStart
                }
                _ => State::RequestLine,
            },
            State::LineStart => match b {
                b'\r' => self.expect_lf(true),
                b'\n' => return self.end_of_head(),
                _ => {
                    self.head.lines += 1;
                    self.line = Line::new();
                    self.name_byte(b)
                }
            },
            State::Name => self.name_byte(b),
            State::Value => match b {
                b'\r' | b'\n' => {
                    if !self.end_of_line() {
                        State::Lost
                    } else if b == b'\r' {
                        self.expect_lf(false)
                    } else {
                        State::LineStart
                    }
                }
                _ => {
                    self.value_byte(b);
                    State::Value
                }
            },
            State::Lf => match (b, self.lf_ends_head) {
                (b'\n', true) => return self.end_of_head(),
                (b'\n', false) => State::LineStart,
                _ => State::Lost,
            },
            State::Chunked => match self.chunked.byte(b) {
                ChunkState::Done => self.next_message(),
                ChunkState::Refused => State::Lost,
                _ => State::Chunked,
            },
            // Counted in `feed`.
            State::Fixed(_) | State::Lost => self.state,
        };
        None
    }

    fn expect_lf(&mut self, ends_head: bool) -> State {
        self.lf_ends_head = ends_head;
        State::Lf
    }

    fn name_byte(&mut self, b: u8) -> State {
        let line = &mut self.line;
        match b {
            b':' => {
                line.field = if line.maybe_cl && line.name_len == CONTENT_LENGTH.len() {
                    Field::ContentLength
                } else if line.maybe_te && line.name_len == TRANSFER_ENCODING.len() {
                    Field::TransferEncoding
                } else {
                    Field::Other
                };
                State::Value
            }
            // httparse refuses a line without a colon; hyper closes.
            b'\r' | b'\n' => State::Lost,
            _ => {
                let lower = b.to_ascii_lowercase();
                let n = line.name_len;
                line.maybe_cl &= CONTENT_LENGTH.get(n) == Some(&lower);
                line.maybe_te &= TRANSFER_ENCODING.get(n) == Some(&lower);
                line.name_len = n.saturating_add(1);
                State::Name
            }
        }
    }

    fn value_byte(&mut self, b: u8) {
        let line = &mut self.line;
        let blank = b == b' ' || b == b'\t';
        match line.field {
            Field::Other => {}
            Field::ContentLength => {
                if blank {
                    line.value_blank |= line.value_started;
                } else if line.value_blank || !b.is_ascii_digit() {
                    line.digits = None;
                } else {
                    line.value_started = true;
                    line.digits = line
                        .digits
                        .and_then(|d| d.checked_mul(10))
                        .and_then(|d| d.checked_add(u64::from(b - b'0')));
                }
            }
            Field::TransferEncoding => {
                if b == b',' {
                    line.token = 0;
                    line.token_ended = false;
                } else if blank {
                    line.token_ended |= line.token > 0;
                } else if line.token_ended || line.token >= CHUNKED.len() {
                    line.token = CHUNKED.len() + 1;
                } else if CHUNKED[line.token] == b.to_ascii_lowercase() {
                    line.token += 1;
                } else {
                    line.token = CHUNKED.len() + 1;
                }
            }
        }
    }

    /// The end of a header line: what it says about the body, as hyper
    /// reads it. False when hyper refuses the line.
    fn end_of_line(&mut self) -> bool {
        let line = self.line;
        let head = &mut self.head;
        match line.field {
            Field::Other => true,
            Field::TransferEncoding => {
                head.has_te = true;
                head.chunked = line.token == CHUNKED.len();
                true
            }
            Field::ContentLength => {
                head.has_length = true;
                if head.has_te {
                    // hyper skips a length after Transfer-Encoding.
                    return true;
                }
                // One number: a list (`5, 5`) is invalid in a request.
                let (true, Some(n)) = (line.value_started, line.digits) else {
                    // Invalid: hyper answers 400 and closes.
                    return false;
                };
                if n > MAX_LENGTH {
                    // hyper answers 431 and closes.
                    return false;
                }
                match head.length {
                    None => {
                        head.length = Some(n);
                        true
                    }
                    Some(prev) => n == prev,
                }
            }
        }
    }

    fn end_of_head(&mut self) -> Option<(u64, Flag)> {
        self.head_len = 0;
        let index = self.heads;
        self.heads += 1;
        let head = self.head;
        if head.has_te && head.version_last == b'0' {
            // hyper refuses any Transfer-Encoding in HTTP/1.0.
            self.state = State::Lost;
            return None;
        }
        let flagged = if head.has_te && head.has_length {
            Some((index, Flag::LengthAndChunked))
        } else if head.target_too_long() {
            Some((index, Flag::UriTooLong))
        } else {
            None
        };
        self.state = if head.has_te {
            if head.chunked {
                self.chunked = Chunked::new();
                State::Chunked
            } else {
                // hyper refuses a final encoding other than chunked.
                State::Lost
            }
        } else {
            match head.length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => self.next_message(),
            }
        };
        flagged
    }
}

/// How many bytes of `rest` come before a line end (or, `in_name`, a
/// colon). Most head lines are short, and memchr's setup costs more than
/// looking at a short line eight bytes at a time: it takes over past
/// [`SHORT_RUN`].
fn run_len(rest: &[u8], in_name: bool) -> usize {
    let short = rest.len().min(SHORT_RUN);
    let mut at = 0;
    while let Some(word) = rest[..short].get(at..at + 8) {
        let hits = stops_in(
            u64::from_le_bytes(word.try_into().expect("eight bytes")),
            in_name,
        );
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let stops = |b: u8| b == b'\r' || b == b'\n' || (in_name && b == b':');
    if let Some(n) = rest[at..short].iter().position(|&b| stops(b)) {
        return at + n;
    }
    let long = &rest[short..];
    let found = if in_name {
        memchr::memchr3(b':', b'\r', b'\n', long)
    } else {
        memchr::memchr2(b'\r', b'\n', long)
    };
    short + found.unwrap_or(long.len())
}

/// See [`run_len`].
const SHORT_RUN: usize = 32;

/// The bytes of `word` (read little-endian) that stop a run: each such
/// byte's top bit set. Bytes above the first stop may be marked wrongly
/// (a borrow runs on from it), so only the lowest mark is meant.
fn stops_in(word: u64, in_name: bool) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const TOPS: u64 = u64::from_le_bytes([0x80; 8]);
    // The classic test for a zero byte, on `word` with `b` cancelled out.
    let equal = |b: u8| {
        let x = word ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & TOPS
    };
    let ends = equal(b'\r') | equal(b'\n');
    if in_name {
        ends | equal(b':')
    } else {
        ends
    }
}

/// Where the header name at the start of `rest` ends, when its colon is
/// there: the name cannot then hold a line end, and byte by byte would read
/// it up to the colon and go on in the value.
fn name_end(rest: &[u8]) -> Option<usize> {
    let colon = run_len(rest, true);
    (rest.get(colon) == Some(&b':')).then_some(colon)
}

/// The field a whole header name is, as [`FrameScan::name_byte`] decides
/// it at the colon.
fn field_of(name: &[u8]) -> Field {
    if name.eq_ignore_ascii_case(CONTENT_LENGTH) {
        Field::ContentLength
    } else if name.eq_ignore_ascii_case(TRANSFER_ENCODING) {
        Field::TransferEncoding
    } else {
        Field::Other
    }
}

/// The length of the header line at the start of `rest`, with its CRLF,
/// when all of it is there (`colon` is where its name ends). For a line
/// whose name is neither `Content-Length` nor `Transfer-Encoding` nothing
/// in it changes the scan but the head's length, so most lines are taken
/// at once.
fn line_len(rest: &[u8], colon: usize) -> Option<usize> {
    let end = colon + 1 + run_len(&rest[colon + 1..], false);
    (rest.get(end..end + 2) == Some(b"\r\n")).then_some(end + 2)
}

#[cfg(test)]
mod tests;
