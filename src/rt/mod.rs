//! Small async building blocks of the hot path, independent of HTTP and of
//! the rest of the crate: a flag raised once and seen by many tasks
//! ([`flag`]), a waker a future owns ([`wake`]), and a lazily armed timer
//! ([`deadline`]).
//!
//! Nothing here imports another module of the crate.

pub mod deadline;
pub mod flag;
pub mod wake;
