//! An upstream's response head: parsed off the connection's read buffer,
//! its hop-by-hop fields kept back, and its body's framing decided (pure).
//!
//! The body is framed as RFC 9112 §6.3 says: no body after HEAD or with
//! 204 and 304; chunked when `Transfer-Encoding` ends in `chunked`; read to
//! the close for any other `Transfer-Encoding` or when no length is given;
//! else `Content-Length`, whose values must agree. Interim 1xx answers are
//! skipped. A 101 switches the connection when the request asked for an
//! upgrade, and is refused otherwise.
//!
//! The head handed on carries no hop-by-hop field (the ones
//! [`is_hop_by_hop`] names, and `Upgrade` but on a 101): they were this
//! connection's, and the body is handed on decoded. Only a `Connection`
//! that names other fields is left in, for the proxy to remove those too.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{Method, Response, StatusCode, Version};

use super::error::Error;
use super::fields::is_hop_by_hop;

/// Most header lines in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Largest response head (hyper's read buffer limit).
pub(super) const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The largest body length hyper takes (its `DecodedLength::MAX_LEN`).
const MAX_LENGTH: u64 = u64::MAX - 2;
/// Names longer than this are parsed every time.
const NAME_MEMORY: usize = 24;
/// Names remembered per connection: the first this many of a response.
const NAMES_REMEMBERED: usize = 16;

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes.
    Close,
    /// No body.
    Empty,
    /// No body: the connection carries the protocol the request asked to
    /// upgrade to (101).
    Switched,
}

/// A response head and how its body is framed.
#[derive(Debug)]
pub struct ResponseHead {
    /// The response, without its body.
    pub response: Response<()>,
    /// How its body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request after this
    /// response (as far as the head tells).
    pub keep_alive: bool,
}

/// Parses response heads off one connection's bytes. It remembers the
/// header names of the connection's last response by position, as the
/// server spelled them: a server sends much the same names in the same
/// order and spelling every time, and a name found at its place is not
/// parsed again (a byte compare instead of `HeaderName::from_bytes`).
#[derive(Debug, Default)]
pub struct ResponseParser {
    seen: Vec<SeenName>,
    /// A `100 Continue` came before the current response's final head.
    continued: bool,
}

/// One remembered header name.
#[derive(Debug)]
struct SeenName {
    /// Its spelling: the first `len` bytes.
    raw: [u8; NAME_MEMORY],
    len: u8,
    name: HeaderName,
}

impl ResponseParser {
    /// Takes one final response head (skipping interim 1xx ones) off the
    /// front of `buf`, the bytes that answer a `method` request (`upgrade`:
    /// one that asked for an upgrade); `None` while it is incomplete.
    ///
    /// The head's headers go into `headers` (taken and left empty; what it
    /// held is dropped), so a map that is handed on keeps its capacity.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the bytes are not a response head that can
    /// be framed, or the head grows past hyper's limit without ending.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        method: &Method,
        upgrade: bool,
        headers: &mut HeaderMap,
    ) -> Result<Option<ResponseHead>, Error> {
        loop {
            // Offsets into `buf` of each header's name and value, so the
            // values can share the head's bytes once it is split off.
            let mut spans = [[0u32; 4]; MAX_HEADERS];
            let Some((len, line, count)) = split_head(buf, &mut spans)? else {
                return Ok(None);
            };
            if (100..200).contains(&line.code) && line.code != 101 {
                self.continued |= line.code == 100;
                buf.advance(len);
                continue;
            }
            let status =
                StatusCode::from_u16(line.code).map_err(|_| Error::Invalid("bad status code"))?;
            if status == StatusCode::SWITCHING_PROTOCOLS && !upgrade {
                return Err(Error::Invalid("101 to a request that asked for no upgrade"));
            }
            let head = buf.split_to(len).freeze();
            let mut framed = self.frame(
                &head,
                &spans[..count],
                status,
                line.version,
                method,
                std::mem::take(headers),
            )?;
            if let Some(reason) = line.reason {
                let phrase = hyper::ext::ReasonPhrase::try_from(head.slice(reason))
                    .map_err(|_| Error::Invalid("bad reason phrase"))?;
                framed.response.extensions_mut().insert(phrase);
            }
            return Ok(Some(framed));
        }
    }

    /// Whether a `100 Continue` was read since [`ResponseParser::expect`].
    pub(super) fn continued(&self) -> bool {
        self.continued
    }

    /// A new request: no `100 Continue` for it yet.
    pub(super) fn expect(&mut self) {
        self.continued = false;
    }

    /// The name spelled `raw`, at position `index` of a response head.
    fn name(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, Error> {
        if let Some(seen) = self.seen.get(index) {
            if seen.raw.get(..usize::from(seen.len)) == Some(raw) {
                return Ok(seen.name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| Error::Invalid("bad header name"))?;
        if raw.len() <= NAME_MEMORY && index < NAMES_REMEMBERED && index <= self.seen.len() {
            let mut seen = SeenName {
                raw: [0; NAME_MEMORY],
                len: raw.len() as u8,
                name: name.clone(),
            };
            seen.raw[..raw.len()].copy_from_slice(raw);
            if index == self.seen.len() {
                self.seen.push(seen);
            } else {
                self.seen[index] = seen;
            }
        }
        Ok(name)
    }

    /// Builds the response head from the header `spans` of `head`, into
    /// `headers` (emptied first), and frames its body.
    fn frame(
        &mut self,
        head: &Bytes,
        spans: &[[u32; 4]],
        status: StatusCode,
        version: Version,
        method: &Method,
        mut headers: HeaderMap,
    ) -> Result<ResponseHead, Error> {
        if !headers.is_empty() {
            // Empty from the proxy, whose request head is encoded by then.
            headers.clear();
        }
        headers.reserve(spans.len());
        let switched = status == StatusCode::SWITCHING_PROTOCOLS;
        // Checked only where it frames the body, as hyper checks it.
        let mut length: Result<Option<u64>, &'static str> = Ok(None);
        let mut has_length = false;
        let mut chunked: Option<bool> = None;
        let mut close = false;
        let mut keep_alive_asked = false;
        // `Connection` names a field other than `close` and `keep-alive`.
        let mut names_fields = false;
        for (index, &[ns, ne, vs, ve]) in spans.iter().enumerate() {
            let name = self.name(index, &head[ns as usize..ne as usize])?;
            // A value is made only for a field that goes on.
            let raw = &head[vs as usize..ve as usize];
            if name == CONTENT_LENGTH {
                has_length = true;
                length = length.and_then(|seen| add_length(seen, raw));
                // Put back below unless it frames the body.
                continue;
            } else if name == TRANSFER_ENCODING {
                let last = raw.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name == CONNECTION {
                for token in raw.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_asked = true;
                    } else {
                        names_fields |= !token.is_empty();
                    }
                }
            }
            // `Trailer` names end-to-end fields (RFC 9110 §6.6.2): it goes
            // on, and hyper sends only the trailer fields it names.
            let hop = is_hop_by_hop(name.as_str()) && name != TRAILER;
            if !(hop || (name == UPGRADE && !switched)) {
                headers.append(name, span_value(head, vs, ve)?);
            }
        }
        if names_fields {
            // Rare: put every `Connection` line back for the proxy, which
            // removes what they name (see `proxy::headers::remove_hop_by_hop`).
            put_back(&mut headers, CONNECTION, head, spans)?;
        }
        let framing = if switched {
            Framing::Switched
        } else if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if let Some(chunked) = chunked {
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match length.map_err(Error::Invalid)? {
                Some(0) => Framing::Empty,
                Some(n) if n > MAX_LENGTH => {
                    return Err(Error::Invalid("content-length too large"))
                }
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        let keep_alive = match version {
            Version::HTTP_10 => keep_alive_asked && !close,
            _ => !close,
        }
        // Both framings given, or a transfer coding in HTTP/1.0: the message
        // was read one way, and the connection is not trusted with another
        // (RFC 9112 §6.1, §6.3).
        && !(chunked.is_some() && (has_length || version == Version::HTTP_10))
        && !matches!(framing, Framing::Close | Framing::Switched);
        // A body of a given length goes on with that length as its exact
        // size, which the server side writes as `Content-Length` itself
        // (hyper does so without a map entry to add and encode). Where the
        // length does not frame a body (a HEAD answer, 204, 304, an empty
        // body) it goes on as it came. Beside a transfer coding it goes
        // nowhere: the coding wins, and the length would frame the decoded
        // body differently downstream (RFC 9112 §6.3).
        if has_length && chunked.is_none() && !matches!(framing, Framing::Length(_)) {
            put_back(&mut headers, CONTENT_LENGTH, head, spans)?;
        }
        // Codings other than the final `chunked` (`gzip, chunked`, or a body
        // read to the close in `gzip`) are not undone here: the body goes on
        // still coded, so its `Transfer-Encoding` says so (the server side
        // adds `chunked` again).
        if matches!(framing, Framing::Chunked | Framing::Close) && chunked.is_some() {
            put_back_codings(&mut headers, head, spans, framing == Framing::Chunked)?;
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        Ok(ResponseHead {
            response,
            framing,
            keep_alive,
        })
    }
}

/// A status line as far as the head's framing needs it.
struct StatusLine {
    code: u16,
    version: Version,
    /// Where the reason phrase lies in the head, when it is not the usual
    /// one for the code: hyper keeps such a phrase, so the client sees the
    /// one the server chose.
    reason: Option<std::ops::Range<usize>>,
}

/// Finds the head at the front of `buf`: its length, its status line, and
/// how many header lines it has, whose names and values `spans` then gives
/// as offsets into `buf`. `None` while it is incomplete.
fn split_head(
    buf: &BytesMut,
    spans: &mut [[u32; 4]; MAX_HEADERS],
) -> Result<Option<(usize, StatusLine, usize)>, Error> {
    let mut lines = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut lines,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(Error::Invalid("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let code = parsed.code.unwrap_or_default();
    let base = buf.as_ptr() as usize;
    let offset = |s: &str| s.as_ptr() as usize - base;
    let canonical = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason());
    // An empty phrase (none at all, or one httparse would not give as text)
    // is not kept: it is no part of the head's bytes.
    let reason = parsed
        .reason
        .filter(|r| !r.is_empty() && Some(*r) != canonical)
        .map(|r| offset(r)..offset(r) + r.len());
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
        let (name, value) = (offset(h.name), h.value.as_ptr() as usize - base);
        *span = [
            name as u32,
            (name + h.name.len()) as u32,
            value as u32,
            (value + h.value.len()) as u32,
        ];
    }
    let line = StatusLine {
        code,
        version,
        reason,
    };
    Ok(Some((len, line, parsed.headers.len())))
}

/// Appends every `name` line of `head` (the rare fields the first pass
/// left out), as they came.
fn put_back(
    headers: &mut HeaderMap,
    name: HeaderName,
    head: &Bytes,
    spans: &[[u32; 4]],
) -> Result<(), Error> {
    for &[ns, ne, vs, ve] in spans {
        if head[ns as usize..ne as usize].eq_ignore_ascii_case(name.as_str().as_bytes()) {
            headers.append(name.clone(), span_value(head, vs, ve)?);
        }
    }
    Ok(())
}

/// Puts back the transfer codings of `head`'s `Transfer-Encoding` lines,
/// without the final `chunked` when `dechunked`; nothing when no coding
/// is left.
fn put_back_codings(
    headers: &mut HeaderMap,
    head: &Bytes,
    spans: &[[u32; 4]],
    dechunked: bool,
) -> Result<(), Error> {
    let mut codings: Vec<&[u8]> = Vec::new();
    for &[ns, ne, vs, ve] in spans {
        if head[ns as usize..ne as usize].eq_ignore_ascii_case(b"transfer-encoding") {
            let value = &head[vs as usize..ve as usize];
            codings.extend(
                value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|c| !c.is_empty()),
            );
        }
    }
    if dechunked {
        codings.pop();
    }
    if codings.is_empty() {
        return Ok(());
    }
    let value = codings.join(&b", "[..]);
    let value = HeaderValue::from_bytes(&value).map_err(|_| Error::Invalid("bad header value"))?;
    headers.insert(TRANSFER_ENCODING, value);
    Ok(())
}

/// The header value at `vs..ve` of `head`, sharing its bytes.
fn span_value(head: &Bytes, vs: u32, ve: u32) -> Result<HeaderValue, Error> {
    HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
        .map_err(|_| Error::Invalid("bad header value"))
}

/// The lengths a `Content-Length` line lists (`5` or `5, 5`), beside
/// `seen`, those of earlier lines: all must be the same.
fn add_length(mut seen: Option<u64>, raw: &[u8]) -> Result<Option<u64>, &'static str> {
    for part in raw.split(|&b| b == b',') {
        let n = parse_length(part.trim_ascii()).ok_or("bad content-length")?;
        if seen.is_some_and(|l| l != n) {
            return Err("conflicting content-length");
        }
        seen = Some(n);
    }
    Ok(seen)
}

/// A `Content-Length` value: digits only, within 64 bits.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests;
