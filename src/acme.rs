//! ACME (RFC 8555): certificates for `[server.tls.acme] domains` and for the
//! Docker provider's routers with a `tls.certresolver`, obtained and renewed
//! with instant-acme, kept in the state directory.
//!
//! One task per domain: it serves the stored certificate if there is one,
//! orders a new one when none is stored or `renew_before` the stored one
//! expires, and retries a failed order with a doubling backoff (2 s up to
//! an hour). Until a new certificate is in hand the previous one keeps
//! serving. The challenge is answered by the proxy itself: HTTP-01 on the
//! listeners under `/.well-known/acme-challenge/`, TLS-ALPN-01 by the
//! certificate resolver to ALPN `acme-tls/1` (see [`crate::tls`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use crate::config::{AcmeChallenge, AcmeConfig};
use crate::metrics::Metrics;
use crate::tls::{self, Issued};

/// The first retry after a failed order; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait between two failed orders.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Why an order for `domain` failed.
#[derive(Debug, thiserror::Error)]
#[error("ACME certificate for {domain}: {stage}: {why}")]
pub struct AcmeError {
    /// The domain ordered.
    pub domain: String,
    /// What was being done.
    pub stage: &'static str,
    /// What went wrong.
    pub why: String,
}

/// What every domain's task shares.
struct Shared {
    config: AcmeConfig,
    /// `<state dir>/acme`.
    dir: PathBuf,
    issued: Arc<Issued>,
    metrics: Arc<Metrics>,
    account: OnceCell<Account>,
}

/// The directory ACME state is kept in, beside the state file.
pub fn state_dir(state_path: &Path) -> PathBuf {
    state_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("acme")
}

/// Starts obtaining and renewing certificates for `config.domains` and for
/// each domain `extra` names over time (the Docker provider's routers).
/// The returned task runs until aborted, with the domains' tasks.
pub fn spawn(
    config: AcmeConfig,
    dir: PathBuf,
    issued: Arc<Issued>,
    metrics: Arc<Metrics>,
    mut extra: watch::Receiver<BTreeSet<String>>,
) -> JoinHandle<()> {
    let shared = Arc::new(Shared {
        config,
        dir,
        issued,
        metrics,
        account: OnceCell::new(),
    });
    tokio::spawn(async move {
        // Dropping the set (the manager aborted) aborts every domain's task.
        let mut tasks = tokio::task::JoinSet::new();
        let mut running: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        loop {
            let wanted: BTreeSet<String> = shared
                .config
                .domains
                .iter()
                .cloned()
                .chain(extra.borrow_and_update().iter().cloned())
                .collect();
            running.retain(|domain, task| {
                let keep = wanted.contains(domain);
                if !keep {
                    task.abort();
                }
                keep
            });
            while tasks.try_join_next().is_some() {}
            for domain in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(domain) {
                    let task = tasks.spawn(keep_certificate(shared.clone(), slot.key().clone()));
                    slot.insert(task);
                }
            }
            if extra.changed().await.is_err() {
                // The sender is gone: the set no longer changes.
                std::future::pending::<()>().await;
            }
        }
    })
}

/// The certificate and key files of `domain`.
fn files(dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    )
}

/// The stored certificate of `domain` and when it expires, if usable.
fn load_stored(dir: &Path, domain: &str) -> Option<(Arc<CertifiedKey>, SystemTime)> {
    let (crt, key) = files(dir, domain);
    let (chain, private) = match (std::fs::read_to_string(&crt), std::fs::read_to_string(&key)) {
        (Ok(c), Ok(k)) => (c, k),
        _ => return None,
    };
    match tls::certified_pem(&chain, &private) {
        Ok(pair) => {
            // An expired certificate is not served: the default answers
            // until a new one is issued.
            let end = tls::not_after(&pair.cert[0]).filter(|end| *end > SystemTime::now())?;
            Some((Arc::new(pair), end))
        }
        Err(why) => {
            tracing::warn!(domain, cert = %crt.display(), key = %key.display(), error = %why, "stored ACME certificate unusable: ordering a new one");
            None
        }
    }
}

/// Writes `text` to `path` through a temporary file, so a reader sees the
/// old content or the new, never a part; `private` files are mode 0600.
fn write_atomic(path: &Path, text: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Serves `domain`'s stored certificate, then renews it for ever.
async fn keep_certificate(shared: Arc<Shared>, domain: String) {
    let renew_before = shared.config.renew_before;
    let mut due = SystemTime::now();
    if let Some((pair, end)) = load_stored(&shared.dir, &domain) {
        shared.issued.set_certificate(&domain, pair);
        set_expiry(&shared, &domain, end);
        due = end
            .checked_sub(renew_before)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        tracing::info!(domain, expires = %tls::rfc3339(end), renew_at = %tls::rfc3339(due), "serving the stored ACME certificate");
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        let started = std::time::Instant::now();
        match order(&shared, &domain).await {
            Ok(end) => {
                shared
                    .metrics
                    .acme_orders
                    .with_label_values(&[&domain, "issued"])
                    .inc();
                backoff = FIRST_BACKOFF;
                let now = SystemTime::now();
                let left = end.duration_since(now).unwrap_or_default();
                // A certificate shorter-lived than `renew_before` is renewed
                // halfway through, not at once again.
                due = end
                    .checked_sub(renew_before)
                    .unwrap_or(now)
                    .max(now + left / 2);
                tracing::info!(domain, took = ?started.elapsed(), expires = %tls::rfc3339(end), renew_at = %tls::rfc3339(due), "ACME certificate issued");
            }
            Err(e) => {
                shared
                    .metrics
                    .acme_orders
                    .with_label_values(&[&domain, "failed"])
                    .inc();
                tracing::error!(domain, error = %e, retry_in = ?backoff, "ACME order failed; the previous certificate, if any, keeps serving");
                due = SystemTime::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn set_expiry(shared: &Shared, domain: &str, end: SystemTime) {
    let secs = end
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    shared
        .metrics
        .acme_expiry
        .with_label_values(&[domain])
        .set(i64::try_from(secs).unwrap_or(i64::MAX));
}

/// The account file: the credentials and the directory they belong to.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

/// The account, from the state directory or created (and stored).
async fn account(shared: &Shared, domain: &str) -> Result<Account, AcmeError> {
    let err = |stage: &'static str| {
        let domain = domain.to_string();
        move |why: String| AcmeError { domain, stage, why }
    };
    let builder = || match &shared.config.ca {
        Some(ca) => Account::builder_with_root(ca)
            .map_err(|e| format!("server.tls.acme.ca {}: {e}", ca.display())),
        None => Account::builder().map_err(|e| e.to_string()),
    };
    let path = shared.dir.join("account.json");
    let url = &shared.config.directory_url;
    if let Ok(text) = std::fs::read_to_string(&path) {
        match serde_json::from_str::<StoredAccount>(&text) {
            Ok(stored) if &stored.directory_url == url => {
                return builder()
                    .map_err(err("account"))?
                    .from_credentials(stored.credentials)
                    .await
                    .map_err(|e| err("account")(format!("{url}: {e}")));
            }
            Ok(_) => {
                tracing::info!(path = %path.display(), directory_url = %url, "the stored ACME account is for another server: creating one")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stored ACME account unreadable: creating one")
            }
        }
    }
    let contact = shared.config.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()
        .map_err(err("account"))?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            url.clone(),
            None,
        )
        .await
        .map_err(|e| err("creating the account")(format!("{url}: {e}")))?;
    let stored = StoredAccount {
        directory_url: url.clone(),
        credentials,
    };
    let text = serde_json::to_string_pretty(&stored)
        .map_err(|e| err("storing the account")(e.to_string()))?;
    std::fs::create_dir_all(&shared.dir)
        .and_then(|()| write_atomic(&path, &text, true))
        .map_err(|e| err("storing the account")(format!("{}: {e}", path.display())))?;
    tracing::info!(directory_url = %url, path = %path.display(), "ACME account created");
    Ok(account)
}

/// Removes the challenge answers of one order, however it ends.
struct Answers<'a> {
    issued: &'a Issued,
    domain: &'a str,
    tokens: Vec<String>,
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        self.issued.set_alpn_challenge(self.domain, None);
        for token in &self.tokens {
            self.issued.set_http_challenge(token, None);
        }
    }
}

/// The TLS-ALPN-01 certificate for `domain` (RFC 8737): self-signed, the
/// domain its only name, the key authorization's digest in acmeIdentifier.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate,
    // and the parser refuses the critical acmeIdentifier extension. The key
    // is the one just signed with.
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// Orders a certificate for `domain`, answers its challenge, stores and
/// serves the result. Returns when it expires.
async fn order(shared: &Shared, domain: &str) -> Result<SystemTime, AcmeError> {
    let err = |stage: &'static str| {
        move |why: String| AcmeError {
            domain: domain.to_string(),
            stage,
            why,
        }
    };
    let account = shared
        .account
        .get_or_try_init(|| account(shared, domain))
        .await?;
    let identifiers = [Identifier::Dns(domain.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| err("new order")(e.to_string()))?;
    let kind = match shared.config.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut answers = Answers {
        issued: &shared.issued,
        domain,
        tokens: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.map_err(|e| err("authorization")(e.to_string()))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(err("authorization")(format!("is {other:?}"))),
        }
        let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
            err("challenge")(format!(
                "the server offers no {} challenge (expected it among the authorization's challenges)",
                shared.config.challenge.as_str()
            ))
        })?;
        let key_auth = challenge.key_authorization();
        match shared.config.challenge {
            AcmeChallenge::Http01 => {
                shared
                    .issued
                    .set_http_challenge(&challenge.token, Some(key_auth.as_str().into()));
                answers.tokens.push(challenge.token.clone());
            }
            AcmeChallenge::TlsAlpn01 => {
                let cert = alpn_certificate(domain, key_auth.digest().as_ref())
                    .map_err(err("challenge certificate"))?;
                shared
                    .issued
                    .set_alpn_challenge(domain, Some(Arc::new(cert)));
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| err("challenge")(e.to_string()))?;
    }
    let poll = RetryPolicy::new()
        .initial_delay(Duration::from_millis(100))
        .backoff(1.5)
        .timeout(Duration::from_secs(60));
    let status = order
        .poll_ready(&poll)
        .await
        .map_err(|e| err("validation")(e.to_string()))?;
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map_or_else(|| format!("order is {status:?}"), |p| p.to_string());
        return Err(err("validation")(why));
    }
    drop(answers);
    let key = rcgen::KeyPair::generate().map_err(|e| err("key")(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
        .map_err(|e| err("request")(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| err("request")(e.to_string()))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| err("finalize")(e.to_string()))?;
    let chain = order
        .poll_certificate(&poll)
        .await
        .map_err(|e| err("certificate")(e.to_string()))?;
    let private = key.serialize_pem();
    let pair = tls::certified_pem(&chain, &private).map_err(err("certificate"))?;
    let end = tls::not_after(&pair.cert[0])
        .ok_or_else(|| err("certificate")("has no readable expiry".into()))?;
    let (crt, key_path) = files(&shared.dir, domain);
    std::fs::create_dir_all(&shared.dir)
        .and_then(|()| write_atomic(&key_path, &private, true))
        .and_then(|()| write_atomic(&crt, &chain, false))
        .map_err(|e| err("storing")(format!("{}: {e}", shared.dir.display())))?;
    shared.issued.set_certificate(domain, Arc::new(pair));
    set_expiry(shared, domain, end);
    Ok(end)
}
