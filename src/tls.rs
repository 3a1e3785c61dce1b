//! HTTPS: builds the rustls server config from `[server.tls]`'s PEM files,
//! its certificate directory and the certificates obtained over ACME.
//!
//! TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1` (and `acme-tls/1` when
//! TLS-ALPN-01 is answered), the `ring` crypto provider (it builds with a C
//! compiler alone). The certificate is chosen by the server name the client
//! asks for (SNI): an exact name of a `[[server.tls.certificates]]` entry or
//! of a certificate in `directory`, else one obtained over ACME, else a
//! `*.` wildcard, else the default `cert`/`key`. The config is rebuilt at
//! every reload, so a renewed file is picked up; a bad pair fails the reload
//! and the old ones keep serving. ACME certificates live in [`Issued`],
//! which outlives reloads and changes without one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{AcmeChallenge, TlsConfig};

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where HTTP-01 tokens are asked for (RFC 8555 section 8.3).
pub const ACME_HTTP_PREFIX: &str = "/.well-known/acme-challenge/";

/// Why a certificate or key could not be used. `key` is the config table
/// (`server.tls` or `server.tls.certificates[N]`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("{key}.cert {path}: {why}")]
    Cert {
        /// The config table.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key file could not be read or holds no PEM private key.
    #[error("{key}.key {path}: {why}")]
    Key {
        /// The config table.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("{key}: {cert} and {key_path} do not make a usable pair: {source}")]
    Pair {
        /// The config table.
        key: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key_path: PathBuf,
        /// rustls's error.
        #[source]
        source: Box<rustls::Error>,
    },
    /// The certificate is not valid for a name it is configured to answer.
    #[error("{key}.names: {cert} is not valid for {name:?} (expected a certificate whose subject alternative names cover it)")]
    Name {
        /// The config table.
        key: String,
        /// The certificate file.
        cert: PathBuf,
        /// The configured server name.
        name: String,
    },
    /// The certificate's validity ended.
    #[error(
        "{key}.cert {path}: expired on {not_after} (expected a certificate valid now: renew it)"
    )]
    Expired {
        /// The config table.
        key: String,
        /// The file.
        path: PathBuf,
        /// Its `notAfter`, RFC 3339.
        not_after: String,
    },
    /// The directory could not be listed.
    #[error("server.tls.directory {path}: {why}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |why: String| TlsError::Cert {
        key: key.to_string(),
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err(
            "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        key: key.to_string(),
        path: path.to_path_buf(),
        why: format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
    })
}

/// The end of `der`'s validity, if it parses as X.509.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The DNS names of `der`'s subject alternative names, lower-cased.
fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// RFC 3339 of `t`, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A certificate chain and signing key from PEM, checked: the key matches
/// the certificate and the certificate has not expired. Errors name
/// `key` (the config table) and the files.
fn certified(
    cert: &Path,
    key_path: &Path,
    key: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certs(cert, key)?;
    if let Some(end) = not_after(&chain[0]) {
        if end < SystemTime::now() {
            return Err(TlsError::Expired {
                key: key.to_string(),
                path: cert.to_path_buf(),
                not_after: rfc3339(end),
            });
        }
    }
    let private = private_key(key_path, key)?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Pair {
        key: key.to_string(),
        cert: cert.to_path_buf(),
        key_path: key_path.to_path_buf(),
        source: Box::new(source),
    })
}

/// A chain and key from PEM text (an ACME certificate as stored), checked
/// the same way as the files.
///
/// # Errors
///
/// What is wrong, for the caller to name its file.
pub fn certified_pem(chain: &str, key: &str) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no PEM certificate found".into());
    }
    let private = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, private, &provider).map_err(|e| e.to_string())
}

/// Checks that `chain`'s end-entity certificate covers `name` (a wildcard
/// name is checked with a label in its place).
fn covers(chain: &CertifiedKey, name: &str) -> bool {
    let probe = match name.strip_prefix("*.") {
        Some(rest) => format!("sni-check.{rest}"),
        None => name.to_string(),
    };
    let Ok(server_name) = ServerName::try_from(probe) else {
        return false;
    };
    let Some(der) = chain.cert.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(der)
        .and_then(|ee| ee.verify_is_valid_for_subject_name(&server_name))
        .is_ok()
}

/// What changes without a reload: the certificates obtained over ACME (by
/// domain) and the answers to the challenges of orders in progress. Shared
/// by every TLS config the control plane builds, and by the HTTP listener
/// (HTTP-01). Readers never wait: each map is swapped whole.
#[derive(Debug, Default)]
pub struct Issued {
    certs: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 certificates by domain.
    alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token.
    http: ArcSwap<HashMap<String, Arc<str>>>,
}

fn insert<V: Clone>(map: &ArcSwap<HashMap<String, V>>, key: &str, value: Option<V>) {
    map.rcu(|m| {
        let mut m = HashMap::clone(m);
        match &value {
            Some(v) => m.insert(key.to_string(), v.clone()),
            None => m.remove(key),
        };
        m
    });
}

impl Issued {
    /// The certificate obtained for `domain`, if any.
    pub fn certificate(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.certs.load().get(domain).cloned()
    }

    /// Serves `cert` for `domain` from the next handshake on.
    pub fn set_certificate(&self, domain: &str, cert: Arc<CertifiedKey>) {
        insert(&self.certs, domain, Some(cert));
    }

    /// Presents `cert` to TLS-ALPN-01 validations of `domain` (`None`: stop).
    pub fn set_alpn_challenge(&self, domain: &str, cert: Option<Arc<CertifiedKey>>) {
        insert(&self.alpn, domain, cert);
    }

    /// Answers HTTP-01 validations of `token` with `key_authorization`
    /// (`None`: stop).
    pub fn set_http_challenge(&self, token: &str, key_authorization: Option<Arc<str>>) {
        insert(&self.http, token, key_authorization);
    }

    /// The key authorization of an HTTP-01 `token` in progress.
    pub fn http_answer(&self, token: &str) -> Option<Arc<str>> {
        self.http.load().get(token).cloned()
    }
}

/// Picks the certificate by SNI: exact name, then ACME, then wildcard,
/// then default; TLS-ALPN-01 validations get their challenge certificate.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    issued: Arc<Issued>,
}

fn normalize(name: &str) -> std::borrow::Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let name = normalize(name);
        if let Some(found) = self.exact.get(&*name) {
            return found.clone();
        }
        if let Some(found) = self.issued.certs.load().get(&*name) {
            return found.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if validation {
            // RFC 8737: only the challenge certificate answers `acme-tls/1`;
            // with none in progress the handshake fails.
            let name = normalize(hello.server_name()?);
            return self.issued.alpn.load().get(&*name).cloned();
        }
        Some(self.pick(hello.server_name()))
    }
}

/// Adds the pairs of `dir` to `exact` and `wildcard`, each under the DNS
/// names its certificate carries. A pair is `NAME.crt` (or `NAME.pem`,
/// `NAME.cer`) beside `NAME.key` (or `NAME-key.pem`, `NAME.key.pem`); when
/// two certificates carry a name, the one valid longer answers it.
fn load_directory(
    dir: &Path,
    provider: &CryptoProvider,
    exact: &mut HashMap<String, Arc<CertifiedKey>>,
    wildcard: &mut HashMap<String, Arc<CertifiedKey>>,
) -> Result<usize, TlsError> {
    let err = |why: String| TlsError::Directory {
        path: dir.to_path_buf(),
        why,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            err(format!(
                "{e} (expected a directory of certificate and key files)"
            ))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let is_key = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with(".key") || name.ends_with("-key.pem") || name.ends_with(".key.pem")
    };
    let mut found = 0;
    let mut best: HashMap<String, (SystemTime, Arc<CertifiedKey>)> = HashMap::new();
    for cert in files.iter().filter(|p| !is_key(p)) {
        let Some(ext) = cert.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if !matches!(ext, "crt" | "pem" | "cer") {
            continue;
        }
        let stem = cert.with_extension("");
        let stem = stem.to_string_lossy();
        let candidates = [
            format!("{stem}.key"),
            format!("{stem}-key.pem"),
            format!("{stem}.key.pem"),
        ];
        let Some(key_path) = candidates.iter().map(PathBuf::from).find(|p| p.is_file()) else {
            return Err(TlsError::Key {
                key: "server.tls.directory".into(),
                path: cert.clone(),
                why: format!(
                    "no key beside this certificate (expected {} or {})",
                    candidates[0], candidates[1]
                ),
            });
        };
        let pair = Arc::new(certified(
            cert,
            &key_path,
            "server.tls.directory",
            provider,
        )?);
        let names = dns_names(&pair.cert[0]);
        if names.is_empty() {
            return Err(TlsError::Cert {
                key: "server.tls.directory".into(),
                path: cert.clone(),
                why: "carries no DNS name (expected subject alternative names to pick it by)"
                    .into(),
            });
        }
        let end = not_after(&pair.cert[0]).unwrap_or(UNIX_EPOCH);
        for name in names {
            match best.get(&name) {
                Some((other, _)) if *other >= end => {}
                _ => {
                    best.insert(name, (end, pair.clone()));
                }
            }
        }
        found += 1;
    }
    for (name, (_, pair)) in best {
        match name.strip_prefix("*.") {
            Some(parent) => wildcard.insert(parent.to_string(), pair),
            None => exact.insert(name, pair),
        };
    }
    Ok(found)
}

/// The certificate that answers names no configured one answers when the
/// config names no `cert`/`key`: self-signed for `cutover.invalid` (a name
/// that resolves nowhere, RFC 6761), made once per process. A client checking
/// certificates refuses it, as it should: nothing was configured for its name.
fn generated_default() -> Arc<CertifiedKey> {
    static DEFAULT: std::sync::OnceLock<Arc<CertifiedKey>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let made = rcgen::generate_simple_self_signed(vec![GENERATED_NAME.to_string()])
                .expect("a self-signed certificate for a fixed valid name");
            let chain = vec![made.cert.der().clone()];
            let key = PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
            let provider = rustls::crypto::ring::default_provider();
            Arc::new(
                CertifiedKey::from_der(chain, key, &provider)
                    .expect("rcgen's key matches its certificate"),
            )
        })
        .clone()
}

/// The name on the generated default certificate.
pub const GENERATED_NAME: &str = "cutover.invalid";

/// The rustls server config of `tls`, with the certificates of `issued`.
///
/// # Errors
///
/// [`TlsError`] naming the config key, the file and what is wrong with it.
pub fn server_config(tls: &TlsConfig, issued: &Arc<Issued>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = match &tls.default {
        Some((cert, key)) => Arc::new(certified(cert, key, "server.tls", &provider)?),
        None => generated_default(),
    };
    let mut resolver = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        default,
        issued: issued.clone(),
    };
    if let Some(dir) = &tls.directory {
        load_directory(dir, &provider, &mut resolver.exact, &mut resolver.wildcard)?;
    }
    for (i, sni) in tls.certificates.iter().enumerate() {
        let key = format!("server.tls.certificates[{i}]");
        let pair = Arc::new(certified(&sni.cert, &sni.key, &key, &provider)?);
        for name in &sni.names {
            if !covers(&pair, name) {
                return Err(TlsError::Name {
                    key,
                    cert: sni.cert.clone(),
                    name: name.clone(),
                });
            }
            match name.strip_prefix("*.") {
                Some(parent) => resolver.wildcard.insert(parent.to_string(), pair.clone()),
                None => resolver.exact.insert(name.clone(), pair.clone()),
            };
        }
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| {
            let (cert, key_path) = tls.default.clone().unwrap_or_default();
            TlsError::Pair {
                key: "server.tls".to_string(),
                cert,
                key_path,
                source: Box::new(source),
            }
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if tls
        .acme
        .as_ref()
        .is_some_and(|a| a.challenge == AcmeChallenge::TlsAlpn01)
    {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> TlsConfig {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
        TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            default: Some((c, k)),
            certificates: Vec::new(),
            directory: None,
            acme: None,
        }
    }

    #[test]
    fn a_valid_pair_offers_h2_and_http11() {
        let dir = tempfile::tempdir().unwrap();
        let config = server_config(&write_pair(dir.path()), &Arc::default()).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn without_cert_and_key_a_generated_certificate_answers_unknown_names() {
        let tls = TlsConfig {
            default: None,
            ..write_pair(tempfile::tempdir().unwrap().path())
        };
        let config = server_config(&tls, &Arc::default()).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let made = generated_default();
        assert!(covers(&made, GENERATED_NAME));
        assert!(!covers(&made, "agent.example.com"));
        assert!(
            Arc::ptr_eq(&made, &generated_default()),
            "made once per process"
        );
    }

    #[test]
    fn missing_or_mismatched_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut tls = write_pair(dir.path());
        tls.default.as_mut().unwrap().0 = dir.path().join("missing.pem");
        let e = server_config(&tls, &Arc::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("server.tls.cert") && e.contains("missing.pem"),
            "{e}"
        );

        let other = tempfile::tempdir().unwrap();
        let mut tls = write_pair(dir.path());
        tls.default.as_mut().unwrap().1 = write_pair(other.path()).default.unwrap().1;
        let e = server_config(&tls, &Arc::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("usable pair"), "{e}");

        let tls = write_pair(dir.path());
        std::fs::write(&tls.default.as_ref().unwrap().1, "not a key").unwrap();
        let e = server_config(&tls, &Arc::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("server.tls.key"), "{e}");
    }

    fn resolver(dir: &Path) -> SniResolver {
        let provider = rustls::crypto::ring::default_provider();
        let (cert, key) = write_pair(dir).default.unwrap();
        let pair = || Arc::new(certified(&cert, &key, "server.tls", &provider).unwrap());
        let mut r = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: pair(),
            issued: Arc::default(),
        };
        r.exact.insert("agent.test".into(), pair());
        r.wildcard.insert("apps.test".into(), pair());
        r
    }

    #[test]
    fn pick_prefers_exact_then_one_wildcard_label_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver(dir.path());
        let is = |a: Arc<CertifiedKey>, b: &Arc<CertifiedKey>| Arc::ptr_eq(&a, b);
        let exact = r.exact.get("agent.test").unwrap();
        let wild = r.wildcard.get("apps.test").unwrap();
        assert!(is(r.pick(Some("agent.test")), exact));
        assert!(is(r.pick(Some("AGENT.test.")), exact));
        assert!(is(r.pick(Some("chat.apps.test")), wild));
        // A wildcard covers one label only, and not the bare parent.
        assert!(is(r.pick(Some("a.b.apps.test")), &r.default));
        assert!(is(r.pick(Some("apps.test")), &r.default));
        assert!(is(r.pick(Some("other.test")), &r.default));
        assert!(is(r.pick(None), &r.default));
    }

    #[test]
    fn names_the_certificate_does_not_cover_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut tls = write_pair(dir.path());
        let (cert, key) = tls.default.clone().unwrap();
        tls.certificates.push(crate::config::SniCert {
            names: vec!["localhost".into(), "*.example.com".into()],
            cert,
            key,
        });
        let e = server_config(&tls, &Arc::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("server.tls.certificates[0].names") && e.contains("*.example.com"),
            "{e}"
        );
        tls.certificates[0].names.pop();
        server_config(&tls, &Arc::default()).unwrap();
    }

    /// Writes a pair for `names` valid until `not_after` as `{stem}.crt`
    /// and `{stem}.key` in `dir`.
    fn write_dated(dir: &Path, stem: &str, names: &[&str], not_after: (i32, u8, u8)) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }

    #[test]
    fn an_expired_certificate_is_refused_naming_the_file_and_the_date() {
        let dir = tempfile::tempdir().unwrap();
        let mut tls = write_pair(dir.path());
        write_dated(dir.path(), "old", &["localhost"], (2020, 3, 1));
        tls.default = Some((dir.path().join("old.crt"), dir.path().join("old.key")));
        let e = server_config(&tls, &Arc::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("server.tls.cert")
                && e.contains("old.crt")
                && e.contains("expired on 2020-03-01"),
            "{e}"
        );
    }

    #[test]
    fn a_directory_answers_the_names_its_certificates_carry() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = tempfile::tempdir().unwrap();
        let mut tls = write_pair(dir.path());
        write_dated(
            tls_dir.path(),
            "a",
            &["a.test", "*.apps.test"],
            (2999, 1, 1),
        );
        // Two certificates for b.test: the one valid longer answers.
        write_dated(tls_dir.path(), "b-old", &["b.test"], (2998, 1, 1));
        write_dated(tls_dir.path(), "b-new", &["b.test"], (2999, 1, 1));
        std::fs::write(tls_dir.path().join("README"), "not a certificate").unwrap();
        tls.directory = Some(tls_dir.path().to_path_buf());
        let provider = rustls::crypto::ring::default_provider();
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        let n = load_directory(tls_dir.path(), &provider, &mut exact, &mut wildcard).unwrap();
        assert_eq!(n, 3);
        assert!(exact.contains_key("a.test") && wildcard.contains_key("apps.test"));
        let b = &exact["b.test"];
        assert_eq!(
            not_after(&b.cert[0]).map(rfc3339).unwrap(),
            "2999-01-01T00:00:00Z"
        );
        server_config(&tls, &Arc::default()).unwrap();

        // A certificate without its key names the certificate and the
        // names expected.
        std::fs::remove_file(tls_dir.path().join("a.key")).unwrap();
        let e = server_config(&tls, &Arc::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.crt") && e.contains("a.key"), "{e}");
    }

    #[test]
    fn acme_certificates_answer_before_wildcards_and_alpn_gets_the_challenge() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = resolver(dir.path());
        let issued: Arc<Issued> = Arc::default();
        r.issued = issued.clone();
        let provider = rustls::crypto::ring::default_provider();
        let (cert, key) = write_pair(dir.path()).default.unwrap();
        let pair = Arc::new(certified(&cert, &key, "server.tls", &provider).unwrap());
        issued.set_certificate("x.apps.test", pair.clone());
        assert!(Arc::ptr_eq(&r.pick(Some("x.apps.test")), &pair));
        assert!(Arc::ptr_eq(
            &r.pick(Some("y.apps.test")),
            r.wildcard.get("apps.test").unwrap()
        ));
        issued.set_http_challenge("tok", Some("tok.thumb".into()));
        assert_eq!(issued.http_answer("tok").as_deref(), Some("tok.thumb"));
        issued.set_http_challenge("tok", None);
        assert_eq!(issued.http_answer("tok"), None);
    }
}
