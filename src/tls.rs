//! HTTPS: builds the rustls server config from `[server.tls]`'s PEM files.
//!
//! TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, the `ring` crypto
//! provider (it builds with a C compiler alone). The config is rebuilt at
//! every reload, so a renewed certificate is picked up; a bad pair fails the
//! reload and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsConfig;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("server.tls.cert {path}: {why}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key file could not be read or holds no PEM private key.
    #[error("server.tls.key {path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("server.tls: {cert} and {key} do not make a usable pair: {source}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |why: String| TlsError::Cert {
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

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        why: format!("{e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)"),
    })
}

/// The rustls server config of `tls`.
///
/// # Errors
///
/// [`TlsError`] naming the file and what is wrong with it.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certs(&tls.cert)?;
    let key = key(&tls.key)?;
    let pair = |source| TlsError::Pair {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(pair)?;
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
}
