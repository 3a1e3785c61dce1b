//! HTTPS: builds the rustls server config from `[server.tls]`'s PEM files.
//!
//! TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, the `ring` crypto
//! provider (it builds with a C compiler alone). The certificate is chosen by
//! the server name the client asks for (SNI): an exact name of a
//! `[[server.tls.certificates]]` entry, else its `*.` wildcard, else the
//! default `cert`/`key`. The config is rebuilt at every reload, so a renewed
//! certificate is picked up; a bad pair fails the reload and the old ones keep
//! serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::TlsConfig;

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

/// The certificate chain and signing key of one `cert`/`key` pair.
fn certified(
    cert: &Path,
    key_path: &Path,
    key: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certs(cert, key)?;
    let private = private_key(key_path, key)?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Pair {
        key: key.to_string(),
        cert: cert.to_path_buf(),
        key_path: key_path.to_path_buf(),
        source: Box::new(source),
    })
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

/// Picks the certificate by SNI: exact name, then wildcard, then default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = sni else {
            return &self.default;
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(found) = self.exact.get(name) {
            return found;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}

/// The rustls server config of `tls`.
///
/// # Errors
///
/// [`TlsError`] naming the config key, the file and what is wrong with it.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = certified(&tls.cert, &tls.key, "server.tls", &provider)?;
    let mut resolver = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        default: Arc::new(default),
    };
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
        .map_err(|source| TlsError::Pair {
            key: "server.tls".to_string(),
            cert: tls.cert.clone(),
            key_path: tls.key.clone(),
            source: Box::new(source),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
            cert: c,
            key: k,
            certificates: Vec::new(),
        }
    }

    #[test]
    fn a_valid_pair_offers_h2_and_http11() {
        let dir = tempfile::tempdir().unwrap();
        let config = server_config(&write_pair(dir.path())).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn missing_or_mismatched_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut tls = write_pair(dir.path());
        tls.cert = dir.path().join("missing.pem");
        let e = server_config(&tls).unwrap_err().to_string();
        assert!(
            e.starts_with("server.tls.cert") && e.contains("missing.pem"),
            "{e}"
        );

        let other = tempfile::tempdir().unwrap();
        let mut tls = write_pair(dir.path());
        tls.key = write_pair(other.path()).key;
        let e = server_config(&tls).unwrap_err().to_string();
        assert!(e.contains("usable pair"), "{e}");

        let mut tls = write_pair(dir.path());
        std::fs::write(&tls.key, "not a key").unwrap();
        tls.cert = tls.cert.clone();
        let e = server_config(&tls).unwrap_err().to_string();
        assert!(e.starts_with("server.tls.key"), "{e}");
    }

    fn resolver(dir: &Path) -> SniResolver {
        let provider = rustls::crypto::ring::default_provider();
        let tls = write_pair(dir);
        let pair = || Arc::new(certified(&tls.cert, &tls.key, "server.tls", &provider).unwrap());
        let mut r = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: pair(),
        };
        r.exact.insert("agent.test".into(), pair());
        r.wildcard.insert("apps.test".into(), pair());
        r
    }

    #[test]
    fn pick_prefers_exact_then_one_wildcard_label_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver(dir.path());
        let is = |a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>| Arc::ptr_eq(a, b);
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
        tls.certificates.push(crate::config::SniCert {
            names: vec!["localhost".into(), "*.example.com".into()],
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        });
        let e = server_config(&tls).unwrap_err().to_string();
        assert!(
            e.starts_with("server.tls.certificates[0].names") && e.contains("*.example.com"),
            "{e}"
        );
        tls.certificates[0].names.pop();
        server_config(&tls).unwrap();
    }
}
