//! The chunked transfer coding's framing, byte by byte, exactly as hyper's
//! decoder reads it (pure). Shared by the request framing follower
//! ([`super::FrameScan`]) and the response body decoder
//! ([`super::Decoder`]), so both sides of the proxy agree with hyper, and
//! with each other, on where a chunked body ends and what is refused.
//!
//! The grammar is hyper's (RFC 9112 §7.1 with its leniencies): hex digits
//! (any number, as long as the size fits in 64 bits), blanks before an
//! optional extension, an extension running to CR (a bare LF in it is
//! refused), CRLF after the size line and after each chunk's data, then
//! after the last chunk either CRLF or trailer lines ending in CRLF and a
//! final CRLF. hyper's limits apply: 16 KiB of extensions in a body, 16 KiB
//! and 100 lines of trailers. Chunk data is not looked at: the caller takes
//! [`ChunkState::Data`]'s bytes itself and reports them with
//! [`Chunked::take_data`].

/// Extension bytes a body may carry in all (hyper's
/// `CHUNKED_EXTENSIONS_LIMIT`).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// Largest trailer section, its final CRLF included (hyper's
/// `TRAILER_LIMIT`, reached is refused).
const TRAILER_BYTES_LIMIT: usize = 16 * 1024;
/// Most trailer lines (hyper's default header count).
pub(super) const TRAILER_LINES_LIMIT: usize = 100;

/// Where a chunked body's framing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// The first hex digit of a chunk size.
    Start,
    /// More hex digits of a chunk size.
    Size,
    /// Blanks after a chunk size.
    SizeLws,
    /// A chunk extension, up to CR.
    Ext,
    /// The LF after a chunk-size line.
    SizeLf,
    /// Chunk data bytes still to come.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// After the last chunk, or after a trailer line: CR of the final empty
    /// line, or the first byte of a trailer line.
    EndCr,
    /// The LF of the final empty line.
    EndLf,
    /// Inside a trailer line.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    /// The body has ended.
    Done,
    /// The bytes break the framing: hyper refuses the body.
    Refused,
}

/// The framing state of one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
    /// The chunk size being read.
    size: u64,
    /// Extension bytes so far.
    extensions: u64,
    /// Bytes of the trailer section so far, when it has begun.
    trailers: Option<usize>,
    /// Trailer lines ended so far.
    lines: usize,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked::new()
    }
}

impl Chunked {
    /// A body whose first chunk-size line comes next.
    pub fn new() -> Chunked {
        Chunked {
            state: ChunkState::Start,
            size: 0,
            extensions: 0,
            trailers: None,
            lines: 0,
        }
    }

    /// Where the framing stands.
    pub fn state(&self) -> ChunkState {
        self.state
    }

    /// Whether the body has trailers (once its trailer section has begun).
    pub fn has_trailers(&self) -> bool {
        self.trailers.is_some()
    }

    /// Trailer lines read so far.
    pub fn trailer_lines(&self) -> usize {
        self.lines
    }

    /// `n` bytes of chunk data were taken (no more than
    /// [`ChunkState::Data`] said were left).
    pub fn take_data(&mut self, n: u64) {
        if let ChunkState::Data(left) = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 {
                ChunkState::DataCr
            } else {
                ChunkState::Data(left)
            };
        }
    }

    /// Reads one byte outside chunk data; returns the new state.
    pub fn byte(&mut self, b: u8) -> ChunkState {
        use ChunkState::*;
        self.state = match self.state {
            Start => match hex(b) {
                Some(d) => {
                    self.size = u64::from(d);
                    Size
                }
                None => Refused,
            },
            Size => match b {
                b'\t' | b' ' => SizeLws,
                b';' => Ext,
                b'\r' => SizeLf,
                _ => match hex(b).and_then(|d| {
                    self.size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                }) {
                    Some(size) => {
                        self.size = size;
                        Size
                    }
                    None => Refused,
                },
            },
            SizeLws => match b {
                b'\t' | b' ' => SizeLws,
                b';' => Ext,
                b'\r' => SizeLf,
                _ => Refused,
            },
            Ext => match b {
                b'\r' => SizeLf,
                b'\n' => Refused,
                _ => {
                    self.extensions += 1;
                    if self.extensions >= EXTENSIONS_LIMIT {
                        Refused
                    } else {
                        Ext
                    }
                }
            },
            SizeLf => match (b, self.size) {
                (b'\n', 0) => EndCr,
                (b'\n', size) => Data(size),
                _ => Refused,
            },
            DataCr => match b {
                b'\r' => DataLf,
                _ => Refused,
            },
            DataLf => match b {
                b'\n' => Start,
                _ => Refused,
            },
            EndCr => match (b, self.trailers) {
                (b'\r', None) => EndLf,
                (b'\r', Some(_)) => self.trailer_byte(EndLf),
                (_, None) => {
                    // The first trailer byte opens the section.
                    self.trailers = Some(1);
                    Trailer
                }
                (_, Some(_)) => self.trailer_byte(Trailer),
            },
            Trailer => match b {
                b'\r' => self.trailer_byte(TrailerLf),
                _ => self.trailer_byte(Trailer),
            },
            TrailerLf => match b {
                b'\n' if self.lines < TRAILER_LINES_LIMIT => {
                    self.lines += 1;
                    self.trailer_byte(EndCr)
                }
                _ => Refused,
            },
            EndLf => match (b, self.trailers) {
                (b'\n', None) => Done,
                (b'\n', Some(_)) => self.trailer_byte(Done),
                _ => Refused,
            },
            // Data is taken by the caller; nothing follows the end or a
            // refusal.
            Data(_) | Done | Refused => self.state,
        };
        self.state
    }

    /// One more byte of the trailer section: `next`, unless that makes the
    /// section too large.
    fn trailer_byte(&mut self, next: ChunkState) -> ChunkState {
        let len = self.trailers.map_or(1, |n| n + 1);
        self.trailers = Some(len);
        if len >= TRAILER_BYTES_LIMIT {
            ChunkState::Refused
        } else {
            next
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
