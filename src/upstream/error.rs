//! Why a request to an upstream failed.

use std::io;
use std::time::Duration;

use crate::http1;

/// Why a request to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be made; the request never left.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The server.
        addr: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The TCP connection was not made within `connect_timeout`.
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The server.
        addr: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// No response head within `response_timeout`.
    #[error("no response from {addr} within {timeout:?}")]
    ResponseTimeout {
        /// The server.
        addr: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The connection failed while the request was sent or the response
    /// head read.
    #[error("request to {addr} failed: {source}")]
    Request {
        /// The server.
        addr: String,
        /// What failed.
        #[source]
        source: http1::Error,
    },
}
