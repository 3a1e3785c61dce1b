//! Bodies of test requests and upstream answers: empty, complete, fed from
//! a channel, or a large deterministic pattern, and a reader that hashes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use cutover::demo::ChannelBody;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// The body type of test requests and upstream responses.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// An empty body.
pub fn empty() -> TestBody {
    Empty::new().boxed()
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A streaming body and the sender that feeds it: each message is one
/// frame, sent when it arrives; the body ends when the sender is dropped.
/// No size hint, so HTTP/1.1 sends it chunked.
pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, body) = ChannelBody::channel(4);
    (tx, body.boxed())
}

/// Chunk size of [`PatternBody`].
const PATTERN_CHUNK: usize = 64 * 1024;
/// Period of the pattern: a prime, so chunks are not all alike.
const PATTERN_PERIOD: usize = 251;

fn pattern_block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| {
        (0..PATTERN_CHUNK + PATTERN_PERIOD)
            .map(|i| (i % PATTERN_PERIOD) as u8)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// Bytes `offset..offset + len` of the deterministic pattern (`len` at most 64 KiB).
fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    pattern_block().slice(start..start + len)
}

/// A deterministic body of `total` bytes, produced lazily in 64 KiB chunks.
pub struct PatternBody {
    offset: u64,
    total: u64,
    sized: bool,
}

impl PatternBody {
    /// With an exact size hint (HTTP/1.1 sends a Content-Length).
    pub fn sized(total: u64) -> TestBody {
        PatternBody {
            offset: 0,
            total,
            sized: true,
        }
        .boxed()
    }

    /// Without a size hint (HTTP/1.1 sends it chunked).
    pub fn chunked(total: u64) -> TestBody {
        PatternBody {
            offset: 0,
            total,
            sized: false,
        }
        .boxed()
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.offset == this.total {
            return Poll::Ready(None);
        }
        let len = (this.total - this.offset).min(PATTERN_CHUNK as u64) as usize;
        let chunk = pattern_chunk(this.offset, len);
        this.offset += len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sized && self.offset == self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.total - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 (hex) of the first `total` bytes of the pattern, computed
/// once per size (hashing is slow in unoptimized builds).
pub fn pattern_sha256(total: u64) -> String {
    static CACHE: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(total)
        .or_insert_with(|| compute_pattern_sha256(total))
        .clone()
}

fn compute_pattern_sha256(total: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < total {
        let len = (total - offset).min(PATTERN_CHUNK as u64) as usize;
        hasher.update(pattern_chunk(offset, len));
        offset += len as u64;
    }
    hex(&hasher.finalize())
}

/// Reads a body to its end, hashing as it goes: (SHA-256 hex, length).
pub async fn hash_body<B>(mut body: B) -> (String, u64)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            len += data.len() as u64;
        }
    }
    (hex(&hasher.finalize()), len)
}

/// The payload bytes of `body` read until it ends or fails, and whether it
/// failed (`Err` frame) rather than ended cleanly.
pub async fn read_until_end(body: &mut Incoming) -> (Vec<Bytes>, bool) {
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    chunks.push(data);
                }
            }
            Err(_) => return (chunks, true),
        }
    }
    (chunks, false)
}
