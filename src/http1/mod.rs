//! HTTP/1.1 as cutover reads and writes it beside hyper, on both sides of
//! the proxy, held to hyper's framing.
//!
//! - Client side, hyper serves the connection; [`scan::FrameScan`] follows
//!   the same bytes to see what hyper's parsed requests no longer show
//!   (both `Content-Length` and `Transfer-Encoding`, a chunked body hyper
//!   will refuse, a head's exact size).
//! - Upstream side, one client: an [`UpstreamConn`] is driven by the task
//!   of the request it carries. [`RequestHead`] is the request as it is
//!   written, [`ResponseParser`] reads the response head and decides its
//!   framing, [`UpstreamBody`] reads the body ([`Decoder`]) and owns the
//!   connection until its end. A 101 hands the socket to the tunnel
//!   ([`Switched`]).
//!
//! The framing decisions are tested against hyper's on the same bytes
//! (`differential` tests) and fuzzed (`fuzz/`). Nothing here knows of
//! routing, pools or the proxy: this module imports only [`crate::rt`].

pub mod body;
pub mod chunked;
pub mod conn;
pub mod decode;
pub mod error;
pub mod fields;
pub mod request;
pub mod response;
pub mod scan;

#[cfg(test)]
mod differential;

pub use body::UpstreamBody;
pub use conn::{Switched, UpstreamConn};
pub use decode::{Decoded, Decoder};
pub use error::{Error, Reached};
pub use fields::{connection_has, connection_tokens, is_hop_by_hop, is_upgrade};
pub use request::RequestHead;
pub use response::{Framing, ResponseHead, ResponseParser};
pub use scan::FrameScan;
