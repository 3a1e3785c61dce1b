//! How an exchange on an upstream connection fails, and how far it got.

use std::io;

/// Why an exchange on an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before the response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The pool was cut at the end of a drain.
    #[error("connection cut at the end of the pool's drain")]
    Cut,
    /// The server's bytes are not an HTTP/1.1 response cutover can frame.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The request body could not be read from the client.
    #[error("{0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No response head came before the exchange's deadline.
    #[error("no response head in time")]
    TimedOut,
}

impl Error {
    /// The proxy's own doing (the end of a drain).
    pub fn is_cut(&self) -> bool {
        matches!(self, Error::Cut)
    }

    /// The server's doing: neither the proxy's cut nor the client's body.
    pub fn is_server_fault(&self) -> bool {
        !(self.is_cut() || matches!(self, Error::Body(_)))
    }
}

/// How far a failed exchange got, which decides whether it may be retried:
/// `Unsent` always, `Unanswered` for an idempotent method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The request head could not be written.
    Unsent,
    /// Written, and not a byte came back.
    Unanswered,
    /// Some of the body was taken from the client: it cannot be sent again.
    Consumed,
    /// The server started answering.
    Answered,
}
