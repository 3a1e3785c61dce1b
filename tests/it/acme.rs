//! ACME against a real ACME server: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS (every name resolves to 127.0.0.1), both
//! started here on loopback. Pebble really validates: its HTTP-01 and
//! TLS-ALPN-01 requests reach the proxy's own listeners. Without `pebble`
//! the tests skip, saying so, except under `CI=true` (`.ci/run` installs it).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const DOMAIN: &str = "app.cutover.test";

/// A port free now on loopback (pebble must know the proxy's ports before
/// the proxy binds them).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Pebble and its DNS, killed on drop.
struct Pebble {
    children: Vec<Child>,
    /// The directory URL.
    url: String,
    /// The management interface (roots of the issued chains).
    management: SocketAddr,
    /// Pebble's own HTTPS certificate: the `ca` the proxy trusts.
    ca: CertificateDer<'static>,
    _dir: TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts pebble validating on `http_port`/`tls_port` and issuing
/// certificates valid `validity`; writes its root as `ca.pem` in `dir`.
/// `None` (the test skips) when pebble is not installed outside CI.
async fn pebble(dir: &Path, http_port: u16, tls_port: u16, validity: Duration) -> Option<Pebble> {
    if !have("pebble") || !have("pebble-challtestsrv") {
        let why = "pebble or pebble-challtestsrv is not installed (apt-get install pebble)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}; under CI=true the ACME tests must run");
        }
        eprintln!("skipping: {why}");
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(work.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(work.path().join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.cert.pem()).unwrap();
    let (listen, management, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{listen}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": work.path().join("cert.pem"),
        "privateKey": work.path().join("key.pem"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": validity.as_secs(),
    }});
    let config_path = work.path().join("pebble.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let quiet = || {
        if std::env::var_os("RUST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        }
    };
    let dns_server = Command::new("pebble-challtestsrv")
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .unwrap();
    let server = Command::new("pebble")
        .arg("-config")
        .arg(&config_path)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        // No artificial delays; every nonce good; every order validated
        // anew (no authorization reuse), so each one reaches the proxy.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .unwrap();
    let pebble = Pebble {
        children: vec![dns_server, server],
        url: format!("https://127.0.0.1:{listen}/dir"),
        management: SocketAddr::from(([127, 0, 0, 1], management)),
        ca: cert.cert.der().clone(),
        _dir: work,
    };
    for port in [listen, management] {
        wait_until("pebble listens", Duration::from_secs(5), || async move {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
    }
    Some(pebble)
}

/// Checks `check` every 50 ms until it holds; panics naming `what` after
/// `bound`.
async fn wait_until<F, Fut>(what: &str, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < bound, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The root pebble issues under (it makes a new one at each start), from
/// its management interface.
async fn pebble_root(pebble: &Pebble) -> CertificateDer<'static> {
    let tcp = TcpStream::connect(pebble.management).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(std::slice::from_ref(&pebble.ca)))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /roots/0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let pem = &answer[answer.find("-----BEGIN").expect("a PEM root")..];
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// An HTTP/1.1 connection over TLS asking for [`DOMAIN`], verified against
/// `root`: its sender and the certificate presented.
async fn connect(
    https: SocketAddr,
    root: &CertificateDer<'static>,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    CertificateDer<'static>,
) {
    let tcp = TcpStream::connect(https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(std::slice::from_ref(root)))
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .expect("the ACME certificate verifies against pebble's root");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    (send, presented)
}

async fn get(send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> String {
    send.ready().await.unwrap();
    let req = Request::get("/")
        .header("host", DOMAIN)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The proxy on fixed loopback ports with ACME for [`DOMAIN`] from `pebble`.
async fn proxy(
    dir: TempDir,
    ports: (u16, u16),
    pebble: &Pebble,
    challenge: &str,
    renew_before: &str,
    blue: &Upstream,
) -> Cutover {
    // TLS-ALPN-01 runs as a Traefik user configures ACME: no `cert`/`key`
    // (a generated certificate answers other names); HTTP-01 beside a
    // configured default.
    let default_pair = if challenge == "http-01" {
        let default = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), default.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), default.key_pair.serialize_pem()).unwrap();
        "cert = \"cert.pem\"\nkey = \"key.pem\"\n"
    } else {
        ""
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [server.tls]\nlisten = \"127.0.0.1:{https}\"\n{default_pair}\n\
         [server.tls.acme]\ndirectory_url = \"{url}\"\ndomains = [\"{DOMAIN}\"]\n\
         email = \"ops@cutover.test\"\nca = \"ca.pem\"\nrenew_before = \"{renew_before}\"\n\
         challenge = \"{challenge}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nsocket = \"{SOCKET_FILE}\"\n\n\
         [state]\npath = \"{STATE_FILE}\"\n\n{services}",
        http = ports.0,
        https = ports.1,
        url = pebble.url,
        services = route(None, "/", "app") + &service("app", &[blue.addr], &[blue.addr]),
    );
    Cutover::start_in(dir, &text).await
}

/// Issues over `challenge` and checks the certificate: served by SNI,
/// verified against pebble's root, stored in the state directory.
async fn issues_over(challenge: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let Some(pebble) = pebble(dir.path(), ports.0, ports.1, Duration::from_secs(3600)).await else {
        return;
    };
    let blue = Upstream::start("blue").await;
    let started = Instant::now();
    let proxy = proxy(dir, ports, &pebble, challenge, "30d", &blue).await;
    let issued = proxy.control.issued().clone();
    wait_until("the certificate is issued", Duration::from_secs(20), || {
        let ready = issued.certificate(DOMAIN).is_some();
        async move { ready }
    })
    .await;
    eprintln!("{challenge}: issued {:?} after start", started.elapsed());
    let root = pebble_root(&pebble).await;
    let (mut send, _) = connect(proxy.https.unwrap(), &root).await;
    assert!(get(&mut send).await.contains("blue"));
    drop(send);
    let acme_dir = proxy.dir.path().join("acme");
    for file in [
        format!("{DOMAIN}.crt"),
        format!("{DOMAIN}.key"),
        "account.json".into(),
    ] {
        assert!(acme_dir.join(&file).is_file(), "{file} is stored");
    }
    let metrics = proxy.control.render_metrics().await;
    assert!(
        metrics.contains(&format!(
            "cutover_acme_orders_total{{domain=\"{DOMAIN}\",result=\"issued\"}} 1"
        )),
        "{metrics}"
    );
    let first = issued.certificate(DOMAIN).unwrap().cert[0].clone();
    let dir = proxy.stop().await;

    // Restarted on the same state directory: the stored certificate
    // serves at once, and no order is placed.
    let proxy = self::proxy(dir, ports, &pebble, challenge, "30d", &blue).await;
    let issued = proxy.control.issued().clone();
    wait_until(
        "the stored certificate is read",
        Duration::from_secs(2),
        || {
            let ready = issued.certificate(DOMAIN).is_some();
            async move { ready }
        },
    )
    .await;
    let (mut send, presented) = connect(proxy.https.unwrap(), &root).await;
    assert_eq!(presented, first, "the stored certificate is served");
    assert!(get(&mut send).await.contains("blue"));
    drop(send);
    let metrics = proxy.control.render_metrics().await;
    assert!(!metrics.contains("cutover_acme_orders_total{"), "{metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn pebble_issues_a_certificate_over_http_01() {
    within(Duration::from_secs(30), issues_over("http-01")).await;
}

#[tokio::test]
async fn pebble_issues_a_certificate_over_tls_alpn_01() {
    within(Duration::from_secs(30), issues_over("tls-alpn-01")).await;
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_while_a_connection_stays_open() {
    within(Duration::from_secs(40), async {
        let dir = tempfile::tempdir().unwrap();
        let ports = (free_port(), free_port());
        // Valid 10 s, renewed 6 s before expiry: about 4 s after issuance.
        let Some(pebble) = pebble(dir.path(), ports.0, ports.1, Duration::from_secs(10)).await
        else {
            return;
        };
        let blue = Upstream::start("blue").await;
        let proxy = proxy(dir, ports, &pebble, "http-01", "6s", &blue).await;
        let issued = proxy.control.issued().clone();
        wait_until("the first certificate", Duration::from_secs(15), || {
            let ready = issued.certificate(DOMAIN).is_some();
            async move { ready }
        })
        .await;
        let root = pebble_root(&pebble).await;
        let (mut open, first) = connect(proxy.https.unwrap(), &root).await;
        assert!(get(&mut open).await.contains("blue"));
        let started = Instant::now();
        wait_until("the renewed certificate", Duration::from_secs(15), || {
            let renewed = issued
                .certificate(DOMAIN)
                .is_some_and(|c| c.cert[0] != first);
            async move { renewed }
        })
        .await;
        eprintln!("renewed {:?} after the first was served", started.elapsed());
        // The connection opened under the first certificate still serves.
        assert!(get(&mut open).await.contains("blue"));
        let (mut fresh, second) = connect(proxy.https.unwrap(), &root).await;
        assert_ne!(
            second, first,
            "a new handshake presents the renewed certificate"
        );
        assert!(get(&mut fresh).await.contains("blue"));
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_acme_server_fails_naming_the_domain_and_the_default_serves() {
    within(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let blue = Upstream::start("blue").await;
        let default = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), default.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), default.key_pair.serialize_pem()).unwrap();
        let closed = free_port();
        let text = header()
            + &format!(
                "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
                 [server.tls.acme]\ndirectory_url = \"https://127.0.0.1:{closed}/dir\"\n\
                 domains = [\"{DOMAIN}\"]\n\n"
            )
            + &blue_green(&blue, &blue);
        let proxy = Cutover::start_in(dir, &text).await;
        let control = proxy.control.clone();
        wait_until("a failed order is counted", Duration::from_secs(5), || {
            let control = control.clone();
            async move {
                control.render_metrics().await.contains(&format!(
                    "cutover_acme_orders_total{{domain=\"{DOMAIN}\",result=\"failed\"}}"
                ))
            }
        })
        .await;
        assert!(proxy.control.issued().certificate(DOMAIN).is_none());
        // The default certificate answers meanwhile.
        let tcp = TcpStream::connect(proxy.https.unwrap()).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config(&[default.cert.der().clone()]))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        send.ready().await.unwrap();
        let resp = send
            .send_request(
                Request::get("/")
                    .header("host", "localhost")
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_docker_providers_certresolver_hosts_get_certificates() {
    within(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let ports = (free_port(), free_port());
        let Some(pebble) = pebble(dir.path(), ports.0, ports.1, Duration::from_secs(3600)).await
        else {
            return;
        };
        let blue = Upstream::start("blue").await;
        let proxy = proxy(dir, ports, &pebble, "http-01", "30d", &blue).await;
        // What the provider makes of a router labelled
        // `tls.certresolver` with rule Host(`docker.cutover.test`).
        let docker = "docker.cutover.test";
        let contribution = cutover::control::source::Contribution {
            acme_domains: [docker.to_string()].into(),
            ..Default::default()
        };
        proxy.control.apply_docker(contribution).await.unwrap();
        let issued = proxy.control.issued().clone();
        wait_until(
            "the provider's host gets a certificate",
            Duration::from_secs(20),
            || {
                let ready =
                    issued.certificate(docker).is_some() && issued.certificate(DOMAIN).is_some();
                async move { ready }
            },
        )
        .await;
        let metrics = proxy.control.render_metrics().await;
        assert!(
            metrics.contains(&format!(
                "cutover_acme_orders_total{{domain=\"{docker}\",result=\"issued\"}} 1"
            )),
            "{metrics}"
        );
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_validation_pebble_refuses_is_counted_for_the_domain_and_retried() {
    within(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let ports = (free_port(), free_port());
        // Pebble validates TLS-ALPN-01 on a port nothing listens on.
        let Some(pebble) =
            pebble(dir.path(), ports.0, free_port(), Duration::from_secs(3600)).await
        else {
            return;
        };
        let blue = Upstream::start("blue").await;
        let proxy = proxy(dir, ports, &pebble, "tls-alpn-01", "30d", &blue).await;
        let control = proxy.control.clone();
        let failed =
            format!("cutover_acme_orders_total{{domain=\"{DOMAIN}\",result=\"failed\"}} 2");
        // The first order fails, and the retry 2 s later fails again.
        wait_until("two failed orders", Duration::from_secs(15), || {
            let (control, failed) = (control.clone(), failed.clone());
            async move { control.render_metrics().await.contains(&failed) }
        })
        .await;
        assert!(proxy.control.issued().certificate(DOMAIN).is_none());
        proxy.stop().await;
    })
    .await;
}
