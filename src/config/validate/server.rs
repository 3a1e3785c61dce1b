//! `[server]` (with `limits` and `tls`), `[admin]` and `[state]`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;

use toml::Spanned;

use super::{at, Checker, NONZERO, POSITIVE};
use crate::config::raw::{
    Located, RawAcme, RawAdmin, RawLimits, RawServer, RawState, RawTls, RawTlsCert,
};
use crate::config::{
    AcmeChallenge, AcmeConfig, AdminConfig, IpRange, Limits, ServerConfig, SniCert, StateConfig,
    TlsConfig, DEFAULT_ACME_RENEW_BEFORE, DEFAULT_LISTEN, DEFAULT_STATE_PATH, DEFAULT_UPGRADES,
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
        let allowed_upgrades = match &raw.allowed_upgrades {
            Some(list) => self.upgrades(list),
            None => DEFAULT_UPGRADES.map(String::from).to_vec(),
        };
        let trusted_ips = raw
            .trusted_ips
            .as_ref()
            .map(|list| self.ip_ranges(list))
            .unwrap_or_default();
        ServerConfig {
            listen,
            workers,
            limits,
            tls,
            allowed_upgrades,
            trusted_ips,
        }
    }

    /// `server.allowed_upgrades`: protocol names (tokens), lowercased. `h2c`
    /// is refused: after the 101 the client's bytes would reach the
    /// upstream as HTTP/2 with none of the proxy's checks.
    fn upgrades(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
        let key = "server.allowed_upgrades";
        let mut names = Vec::new();
        for item in list.get_ref() {
            let name = item.get_ref();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                self.issue(
                    at(item),
                    key,
                    format!(
                        "{name:?} is not a protocol name (expected a token such as \"websocket\")"
                    ),
                );
            } else if name.eq_ignore_ascii_case("h2c") {
                self.issue(
                    at(item),
                    key,
                    format!("{name:?} cannot be tunnelled: HTTP/2 is served by the proxy itself (expected protocols such as \"websocket\")"),
                );
            } else {
                names.push(name.to_ascii_lowercase());
            }
        }
        names
    }

    /// `server.trusted_ips`: CIDR ranges or addresses.
    fn ip_ranges(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Vec<IpRange> {
        let key = "server.trusted_ips";
        let mut ranges = Vec::new();
        for item in list.get_ref() {
            match IpRange::parse(item.get_ref()) {
                Some(range) => ranges.push(range),
                None => self.issue(
                    at(item),
                    key,
                    format!(
                        "{:?} is not an address range (expected CIDR such as \"10.0.0.0/8\" or an address)",
                        item.get_ref()
                    ),
                ),
            }
        }
        ranges
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
        // `cert`/`key` answer names nothing else answers; without them a
        // generated certificate does, so they may be left out when the
        // certificates come from elsewhere (the list, a directory, ACME).
        let elsewhere = t.certificates.as_ref().is_some_and(|c| !c.is_empty())
            || t.directory.is_some()
            || t.acme.is_some();
        let default = if elsewhere && t.cert.is_none() && t.key.is_none() {
            Some(None)
        } else {
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
            cert.zip(key).map(Some)
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let certificates: Vec<Option<SniCert>> = t
            .certificates
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| self.sni_cert(c, i, &mut seen))
            .collect();
        let directory = t
            .directory
            .as_ref()
            .and_then(|v| self.file_path(v, "server.tls.directory"));
        let acme = match &t.acme {
            Some(a) => Some(self.acme(a)?),
            None => None,
        };
        Some(TlsConfig {
            listen: listen?,
            default: default?,
            certificates: certificates.into_iter().collect::<Option<_>>()?,
            directory,
            acme,
        })
    }

    /// `[server.tls.acme]`.
    fn acme(&mut self, raw: &Located<RawAcme>) -> Option<AcmeConfig> {
        let table = raw.start();
        let a = &raw.value;
        let url = self.required(
            a.directory_url.as_ref(),
            table,
            "server.tls.acme.directory_url",
            "directory_url = \"https://acme-v02.api.letsencrypt.org/directory\"",
        );
        let url = url.and_then(|v| {
            let text = v.get_ref();
            if text.starts_with("https://") || text.starts_with("http://") {
                Some(text.clone())
            } else {
                let message = format!(
                    "{text:?} is not a URL (expected the ACME server's directory, e.g. \"https://acme-v02.api.letsencrypt.org/directory\")"
                );
                self.issue(at(v), "server.tls.acme.directory_url", message);
                None
            }
        });
        let key = "server.tls.acme.domains";
        let domains = self.required(
            a.domains.as_ref(),
            table,
            key,
            "domains = [\"agent.example.com\"]",
        );
        let mut valid = Vec::new();
        let mut ok = domains.is_some();
        if let Some(domains) = domains {
            if domains.get_ref().is_empty() {
                let message = "[] is empty (expected the domains to obtain certificates for, e.g. [\"agent.example.com\"])";
                self.issue(at(domains), key, message.to_string());
                ok = false;
            }
            for name in domains.get_ref() {
                let text = name.get_ref();
                let problem = match sni_name_problem(text) {
                    Some(why) => Some(why),
                    None if text.starts_with("*.") => Some(format!(
                        "{text:?} is a wildcard: HTTP-01 and TLS-ALPN-01 cannot prove one (expected a DNS name such as \"agent.example.com\")"
                    )),
                    None => None,
                };
                match problem {
                    Some(why) => {
                        self.issue(at(name), key, why);
                        ok = false;
                    }
                    None => valid.push(text.to_ascii_lowercase()),
                }
            }
        }
        let email = a.email.as_ref().map(|v| v.get_ref().clone());
        let ca =
            a.ca.as_ref()
                .and_then(|v| self.file_path(v, "server.tls.acme.ca"));
        let renew_before = self.duration_or(
            a.renew_before.as_ref(),
            "server.tls.acme.renew_before",
            DEFAULT_ACME_RENEW_BEFORE,
            false,
        );
        let challenge = match &a.challenge {
            None => Some(AcmeChallenge::Http01),
            Some(v) => {
                match v.get_ref().as_str() {
                    "http-01" => Some(AcmeChallenge::Http01),
                    "tls-alpn-01" => Some(AcmeChallenge::TlsAlpn01),
                    other => {
                        let message = format!("{other:?} is not a challenge (expected \"http-01\" or \"tls-alpn-01\")");
                        self.issue(at(v), "server.tls.acme.challenge", message);
                        None
                    }
                }
            }
        };
        if !ok {
            return None;
        }
        Some(AcmeConfig {
            directory_url: url?,
            domains: valid,
            email,
            ca,
            renew_before,
            challenge: challenge?,
        })
    }

    /// One `[[server.tls.certificates]]`; `seen` maps each name already
    /// claimed to the index of the certificate that claimed it.
    fn sni_cert(
        &mut self,
        raw: &Located<RawTlsCert>,
        index: usize,
        seen: &mut HashMap<String, usize>,
    ) -> Option<SniCert> {
        let key = format!("server.tls.certificates[{index}]");
        let table = raw.start();
        let c = &raw.value;
        let cert = self
            .required(
                c.cert.as_ref(),
                table,
                &format!("{key}.cert"),
                "cert = \"certs/agent.pem\"",
            )
            .and_then(|v| self.file_path(v, &format!("{key}.cert")));
        let private = self
            .required(
                c.key.as_ref(),
                table,
                &format!("{key}.key"),
                "key = \"certs/agent-key.pem\"",
            )
            .and_then(|v| self.file_path(v, &format!("{key}.key")));
        let names_key = format!("{key}.names");
        let names = self.required(
            c.names.as_ref(),
            table,
            &names_key,
            "names = [\"agent.example.com\"]",
        )?;
        if names.get_ref().is_empty() {
            let message =
                "[] is empty (expected the server names this certificate answers, e.g. [\"agent.example.com\"])";
            self.issue(at(names), &names_key, message.to_string());
        }
        let mut valid = Vec::with_capacity(names.get_ref().len());
        for name in names.get_ref() {
            let text = name.get_ref();
            if let Some(why) = sni_name_problem(text) {
                self.issue(at(name), &names_key, why);
                continue;
            }
            let lower = text.to_ascii_lowercase();
            match seen.entry(lower.clone()) {
                Entry::Occupied(first) => {
                    let message = format!(
                        "{text:?} is already named by server.tls.certificates[{}] (expected each server name once)",
                        first.get()
                    );
                    self.issue(at(name), &names_key, message);
                }
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    valid.push(lower);
                }
            }
        }
        if valid.len() != names.get_ref().len() {
            return None;
        }
        Some(SniCert {
            names: valid,
            cert: cert?,
            key: private?,
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

/// Why `text` cannot be an SNI name, if it cannot: a DNS name, or `*.` and a
/// DNS name with at least two labels.
fn sni_name_problem(text: &str) -> Option<String> {
    let expected = "expected a DNS name such as \"agent.example.com\" or \"*.example.com\"";
    let bare = text.strip_prefix("*.").unwrap_or(text);
    if text.contains("://") || text.contains(['/', ':']) {
        return Some(format!(
            "{text:?} is not a server name: no scheme, port or path ({expected})"
        ));
    }
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Some(format!(
            "{text:?} is an IP address; clients send SNI for DNS names only ({expected})"
        ));
    }
    let labels_ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !labels_ok {
        return Some(format!("{text:?} is not a DNS name ({expected})"));
    }
    if text.starts_with("*.") && !bare.contains('.') {
        return Some(format!(
            "{text:?} is too wide: a wildcard needs at least two labels after \"*.\" ({expected})"
        ));
    }
    None
}
