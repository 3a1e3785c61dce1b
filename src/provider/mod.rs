//! Config providers other than the config file: they turn what they watch
//! into services and routes, validated with positions of their own, and
//! hand them to the control plane.

pub mod docker;
