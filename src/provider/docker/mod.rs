//! The Docker provider: containers' `traefik.*` labels read as Traefik
//! reads them, grouped into cutover services with blue and green pools.

pub mod rule;
