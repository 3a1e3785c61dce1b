//! Differential tests: the same bytes to hyper and to this module's
//! hand-written framing, which must decide the same (quickcheck).
//!
//! - [`request`]: hyper's server against [`super::FrameScan`];
//! - [`response`]: hyper's client against [`super::ResponseParser`] and
//!   [`super::Decoder`].
//!
//! [`gen`] makes the streams. `QUICKCHECK_TESTS` sets how many cases each
//! test runs (default 300).

mod gen;
mod request;
mod response;

/// Cases per property.
fn cases() -> u64 {
    std::env::var("QUICKCHECK_TESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
}

/// Runs `fut` on this thread's runtime.
fn runtime() -> Runner {
    Runner
}

/// Blocks on futures with the thread's runtime.
struct Runner;

impl Runner {
    fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        RUNTIME.with(|rt| rt.block_on(fut))
    }
}

/// Lets every other future on the runtime run until none can go further
/// with what it has: in memory, on one thread, a few hundred turns.
async fn settle() {
    for _ in 0..256 {
        tokio::task::yield_now().await;
    }
}

/// The kind of the I/O error behind a hyper body error: hyper reports a
/// body cut short as `UnexpectedEof`, and a body it refuses as another.
fn io_kind(e: &hyper::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}
