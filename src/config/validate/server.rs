//! `[server]` (with `limits` and `tls`), `[admin]` and `[state]`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;

use super::{at, Checker, NONZERO, POSITIVE};
use crate::config::raw::{Located, RawAdmin, RawLimits, RawServer, RawState, RawTls};
use crate::config::{
    AdminConfig, Limits, ServerConfig, StateConfig, TlsConfig, DEFAULT_LISTEN, DEFAULT_STATE_PATH,
};

impl Checker<'_> {
    pub(super) fn server(&mut self, raw: &RawServer) -> ServerConfig {
        let default_listen = DEFAULT_LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080)));
        let listen = raw
            .listen
            .as_ref()
            .and_then(|v| self.listen(v, "server.listen"))
            .unwrap_or(default_listen);
        let workers = raw
            .workers
            .as_ref()
            .and_then(|v| self.int::<usize>(v, "server.workers", POSITIVE))
            .and_then(NonZeroUsize::new);
        let no_limits = RawLimits::default();
        let limits = self.limits(raw.limits.as_ref().map_or(&no_limits, |t| &t.value));
        let tls = raw.tls.as_ref().and_then(|t| self.tls(t));
        ServerConfig {
            listen,
            workers,
            limits,
            tls,
        }
    }

    pub(super) fn limits(&mut self, raw: &RawLimits) -> Limits {
        let d = Limits::default();
        let key = |field: &str| format!("server.limits.{field}");
        let max_body_bytes: u64 = self.int_or(
            raw.max_body_bytes.as_ref(),
            &key("max_body_bytes"),
            0..=i64::MAX,
            0,
        );
        Limits {
            header_read_timeout: self.duration_or(
                raw.header_read_timeout.as_ref(),
                &key("header_read_timeout"),
                d.header_read_timeout,
                NONZERO,
            ),
            max_header_bytes: self.int_or(
                raw.max_header_bytes.as_ref(),
                &key("max_header_bytes"),
                1024..=i64::MAX,
                d.max_header_bytes,
            ),
            max_body_bytes: (max_body_bytes > 0).then_some(max_body_bytes),
            connect_timeout: self.duration_or(
                raw.connect_timeout.as_ref(),
                &key("connect_timeout"),
                d.connect_timeout,
                NONZERO,
            ),
            response_timeout: self.duration_or(
                raw.response_timeout.as_ref(),
                &key("response_timeout"),
                d.response_timeout,
                NONZERO,
            ),
            idle_timeout: self.duration_or(
                raw.idle_timeout.as_ref(),
                &key("idle_timeout"),
                d.idle_timeout,
                NONZERO,
            ),
            max_connections: self.int_or(
                raw.max_connections.as_ref(),
                &key("max_connections"),
                POSITIVE,
                d.max_connections,
            ),
        }
    }

    pub(super) fn tls(&mut self, raw: &Located<RawTls>) -> Option<TlsConfig> {
        let table = raw.start();
        let t = &raw.value;
        let listen = self
            .required(
                t.listen.as_ref(),
                table,
                "server.tls.listen",
                "listen = \"0.0.0.0:8443\"",
            )
            .and_then(|v| self.listen(v, "server.tls.listen"));
        let cert = self
            .required(
                t.cert.as_ref(),
                table,
                "server.tls.cert",
                "cert = \"certs/cert.pem\"",
            )
            .and_then(|v| self.file_path(v, "server.tls.cert"));
        let key = self
            .required(
                t.key.as_ref(),
                table,
                "server.tls.key",
                "key = \"certs/key.pem\"",
            )
            .and_then(|v| self.file_path(v, "server.tls.key"));
        Some(TlsConfig {
            listen: listen?,
            cert: cert?,
            key: key?,
        })
    }

    pub(super) fn admin(&mut self, raw: &RawAdmin) -> AdminConfig {
        let listen = raw
            .listen
            .as_ref()
            .and_then(|v| self.listen(v, "admin.listen"));
        let socket = raw
            .socket
            .as_ref()
            .and_then(|v| self.file_path(v, "admin.socket"));
        let token_file = raw
            .token_file
            .as_ref()
            .and_then(|v| self.file_path(v, "admin.token_file"));
        if let (Some(addr), Some(value), None) = (listen, &raw.listen, &raw.token_file) {
            // The admin API switches traffic: off loopback it needs a token.
            if !addr.ip().to_canonical().is_loopback() {
                let message = format!(
                    "{:?} is not a loopback address: set admin.token_file (e.g. token_file = \"admin.token\") or listen on \"127.0.0.1:{}\"",
                    value.get_ref(),
                    addr.port()
                );
                self.issue(at(value), "admin.listen", message);
            }
        }
        AdminConfig {
            listen,
            socket,
            token_file,
        }
    }

    pub(super) fn state(&mut self, raw: &RawState) -> StateConfig {
        let path = match &raw.path {
            Some(v) => self.file_path(v, "state.path").unwrap_or_default(),
            None => self.resolve(Path::new(DEFAULT_STATE_PATH)),
        };
        StateConfig { path }
    }
}
