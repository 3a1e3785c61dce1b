//! A response body's framing over the bytes read so far (pure): data as it
//! arrives, chunked decoding with [`Chunked`] (hyper's grammar and
//! limits), trailers, and where the body ends.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};

use super::chunked::{ChunkState, Chunked, TRAILER_LINES_LIMIT};
use super::error::Error;
use super::response::Framing;

/// What [`Decoder::decode`] made of the bytes.
#[derive(Debug)]
pub enum Decoded {
    /// The next frame.
    Frame(Frame<Bytes>),
    /// The body has ended.
    End,
    /// More bytes are needed.
    More,
}

/// Where a response body stands.
#[derive(Debug, Clone)]
enum State {
    /// Bytes still to come.
    Length(u64),
    /// A chunked body, and how many bytes at the front of the buffer its
    /// trailer section has so far: they stay there until the section ends
    /// and is parsed whole, as hyper does.
    Chunked(Chunked, usize),
    /// Until the server closes.
    Close,
    Done,
}

/// Decodes one response body from the front of a connection's read buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    /// The decoder of a body framed as `framing`.
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::new(), 0),
            Framing::Close => State::Close,
            Framing::Empty | Framing::Switched => State::Done,
        };
        Decoder { state }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Exact for a `Content-Length` body.
    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// Takes the next frame of the body off the front of `buf`: data as
    /// far as it has arrived, then the trailers, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the bytes break the body's framing.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        match &mut self.state {
            State::Done => Ok(Decoded::End),
            State::Length(left) => {
                let Some((data, rest)) = take_data(buf, *left) else {
                    return Ok(Decoded::More);
                };
                self.state = if rest == 0 {
                    State::Done
                } else {
                    State::Length(rest)
                };
                Ok(Decoded::Frame(Frame::data(data)))
            }
            State::Close if buf.is_empty() => Ok(Decoded::More),
            State::Close => Ok(Decoded::Frame(Frame::data(buf.split().freeze()))),
            State::Chunked(chunked, held) => {
                let decoded = decode_chunked(chunked, held, buf)?;
                if matches!(decoded, Decoded::End)
                    || (matches!(decoded, Decoded::Frame(_)) && chunked.state() == ChunkState::Done)
                {
                    self.state = State::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The server closed the connection, and what it sent before has been
    /// decoded: the end of a body read to the close.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the body was not complete.
    pub fn closed(&mut self) -> Result<(), Error> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(Error::Closed),
        }
    }
}

/// The next frame of a chunked body: chunk data as far as it has arrived,
/// the trailers at the end, or the end. Framing bytes are taken off `buf`
/// as they are read, but for the trailer section's (`held` of them so far),
/// which is parsed once it is whole.
fn decode_chunked(
    chunked: &mut Chunked,
    held: &mut usize,
    buf: &mut BytesMut,
) -> Result<Decoded, Error> {
    loop {
        if let ChunkState::Data(left) = chunked.state() {
            let Some((data, _)) = take_data(buf, left) else {
                return Ok(Decoded::More);
            };
            chunked.take_data(data.len() as u64);
            return Ok(Decoded::Frame(Frame::data(data)));
        }
        let mut at = *held;
        while at < buf.len() && !matches!(chunked.state(), ChunkState::Data(_) | ChunkState::Done) {
            let before = chunked.state();
            let now = chunked.byte(buf[at]);
            at += 1;
            if now == ChunkState::Refused {
                return Err(Error::Invalid("bad chunked framing"));
            }
            if before == ChunkState::SizeLf && now == ChunkState::EndCr {
                // The last chunk's size line: what follows is held.
                buf.advance(at);
                at = 0;
            }
        }
        match chunked.state() {
            ChunkState::Done => {
                let section = buf.split_to(at);
                *held = 0;
                return Ok(match trailers(chunked, &section)? {
                    Some(fields) => Decoded::Frame(Frame::trailers(fields)),
                    None => Decoded::End,
                });
            }
            ChunkState::EndCr | ChunkState::EndLf | ChunkState::Trailer | ChunkState::TrailerLf => {
                *held = at;
                return Ok(Decoded::More);
            }
            ChunkState::Data(_) => {
                buf.advance(at);
            }
            _ => {
                buf.advance(at);
                return Ok(Decoded::More);
            }
        }
    }
}

/// Up to `left` bytes of what `buf` holds, and how many are left after them;
/// `None` when `buf` is empty.
fn take_data(buf: &mut BytesMut, left: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    Some((buf.split_to(n).freeze(), left - n as u64))
}

/// The fields of a complete trailer section (`section`, its final CRLF
/// included), parsed as hyper parses them: with room for as many fields as
/// the section had CRLF-ended lines. `None` when there were none.
fn trailers(chunked: &Chunked, section: &[u8]) -> Result<Option<HeaderMap>, Error> {
    if !chunked.has_trailers() {
        return Ok(None);
    }
    let mut lines = [httparse::EMPTY_HEADER; TRAILER_LINES_LIMIT];
    let room = chunked.trailer_lines().min(TRAILER_LINES_LIMIT);
    match httparse::parse_headers(section, &mut lines[..room]) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| Error::Invalid("bad trailer name"))?;
                let value = HeaderValue::from_bytes(f.value)
                    .map_err(|_| Error::Invalid("bad trailer value"))?;
                map.append(name, value);
            }
            Ok(Some(map))
        }
        Ok(httparse::Status::Partial) | Err(_) => Err(Error::Invalid("malformed trailers")),
    }
}
