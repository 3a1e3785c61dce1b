//! HTTPS: a certificate generated in the test, HTTP/1.1 and HTTP/2 chosen
//! by ALPN, certificates chosen by SNI, and certificates re-read on reload (a
//! bad pair keeps the old one).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::*;

/// Writes a fresh self-signed pair for `localhost`; returns the certificate.
fn write_pair(dir: &Path) -> CertificateDer<'static> {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), pair.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), pair.key_pair.serialize_pem()).unwrap();
    pair.cert.der().clone()
}

/// Writes a self-signed pair for `names` as `{stem}.pem` and `{stem}-key.pem`.
fn write_named(dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let pair = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), pair.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}-key.pem")),
        pair.key_pair.serialize_pem(),
    )
    .unwrap();
    pair.cert.der().clone()
}

async fn connect(
    addr: std::net::SocketAddr,
    trust: &CertificateDer<'static>,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_as(addr, &[trust], alpn, "localhost").await
}

/// A TLS connection asking for `name` by SNI, trusting `trust`.
async fn connect_as(
    addr: std::net::SocketAddr,
    trust: &[&CertificateDer<'static>],
    alpn: &[u8],
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trust {
        roots.add((*cert).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

async fn get_h1(stream: TlsStream<TcpStream>) -> String {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

async fn get_h2(stream: TlsStream<TcpStream>) -> String {
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// The `[server.tls]` table on `127.0.0.1:0` with `cert.pem`/`key.pem`,
/// and `sni` (more certificates) after it.
fn tls(sni: &str) -> String {
    format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n{sni}\n"
    )
}

async fn start(dir: TempDir, blue: &Upstream, green: &Upstream) -> Cutover {
    start_with(dir, blue, green, "").await
}

/// The proxy with [`tls`]`(sni)`, on `dir` (which holds the pairs).
async fn start_with(dir: TempDir, blue: &Upstream, green: &Upstream, sni: &str) -> Cutover {
    Cutover::start_in(dir, &(header() + &tls(sni) + &blue_green(blue, green))).await
}

#[tokio::test]
async fn https_serves_http11_and_h2_chosen_by_alpn() {
    within(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let cert = write_pair(dir.path());
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let proxy = start(dir, &blue, &green).await;
        let addr = proxy.https.unwrap();

        let h1 = connect(addr, &cert, b"http/1.1").await.unwrap();
        assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert!(get_h1(h1).await.contains("blue"));

        let h2 = connect(addr, &cert, b"h2").await.unwrap();
        assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert!(get_h2(h2).await.contains("blue"));
        assert_eq!(blue.hits(), 2);
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reload_with_a_bad_pair_keeps_the_old_certificate_and_a_good_one_replaces_it() {
    within(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let old = write_pair(dir.path());
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let proxy = start(dir, &blue, &green).await;
        let addr = proxy.https.unwrap();
        let actor = cutover::control::events::Actor::Api;

        // A key that does not belong to the certificate: refused, old pair serves.
        let other = tempfile::tempdir().unwrap();
        write_pair(other.path());
        std::fs::copy(
            other.path().join("key.pem"),
            proxy.dir.path().join("key.pem"),
        )
        .unwrap();
        let err = proxy.control.reload(actor).await.unwrap_err();
        assert!(err.to_string().contains("usable pair"), "{err}");
        assert!(get_h1(connect(addr, &old, b"http/1.1").await.unwrap())
            .await
            .contains("blue"));

        // A renewed pair: the next handshake presents it.
        let new = write_pair(proxy.dir.path());
        proxy.control.reload(actor).await.unwrap();
        assert!(get_h1(connect(addr, &new, b"http/1.1").await.unwrap())
            .await
            .contains("blue"));
        assert!(
            connect(addr, &old, b"http/1.1").await.is_err(),
            "the old certificate is no longer presented"
        );
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sni_picks_the_certificate_by_exact_name_then_wildcard_then_default() {
    within(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let default = write_pair(dir.path());
        let agent = write_named(dir.path(), "agent", &["agent.test"]);
        let apps = write_named(dir.path(), "apps", &["*.apps.test"]);
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let sni = r#"
[[server.tls.certificates]]
names = ["Agent.test"]
cert = "agent.pem"
key = "agent-key.pem"
[[server.tls.certificates]]
names = ["*.apps.test"]
cert = "apps.pem"
key = "apps-key.pem"
"#;
        let proxy = start_with(dir, &blue, &green, sni).await;
        let addr = proxy.https.unwrap();
        let all = [&default, &agent, &apps];

        for (name, expected) in [
            ("agent.test", &agent),
            ("chat.apps.test", &apps),
            ("localhost", &default),
        ] {
            let stream = connect_as(addr, &all, b"http/1.1", name).await.unwrap();
            let presented = &stream.get_ref().1.peer_certificates().unwrap()[0];
            assert_eq!(presented, expected, "certificate presented for {name}");
            assert!(get_h1(stream).await.contains("blue"));
        }
        // A name no entry covers gets the default certificate, which the
        // client then refuses for that name.
        let err = connect_as(addr, &all, b"http/1.1", "other.test")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_certificate_that_does_not_cover_its_names_fails_the_reload() {
    within(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let default = write_pair(dir.path());
        write_named(dir.path(), "agent", &["agent.test"]);
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let proxy = start(dir, &blue, &green).await;
        let addr = proxy.https.unwrap();

        let billing = "[[server.tls.certificates]]\nnames = [\"billing.test\"]\n\
                       cert = \"agent.pem\"\nkey = \"agent-key.pem\"\n";
        proxy.rewrite_config(&(tls(billing) + &blue_green(&blue, &green)));
        let err = proxy
            .control
            .reload(cutover::control::events::Actor::Api)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.tls.certificates[0].names")
                && err.contains("agent.pem")
                && err.contains("billing.test"),
            "{err}"
        );
        // The running certificates keep serving.
        assert!(get_h1(connect(addr, &default, b"http/1.1").await.unwrap())
            .await
            .contains("blue"));
        proxy.stop().await;
    })
    .await;
}

/// Writes a pair for `names` valid until `not_after` (year, month, day) as
/// `{stem}.crt` and `{stem}.key` in `dir`.
fn write_dated(
    dir: &Path,
    stem: &str,
    names: &[&str],
    not_after: (i32, u8, u8),
) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    cert.der().clone()
}

#[tokio::test]
async fn a_directory_of_pairs_answers_by_sni_and_a_reload_keeps_open_connections() {
    within(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let default = write_pair(dir.path());
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let a = write_dated(&certs, "a", &["a.test"], (2999, 1, 1));
        let b = write_dated(&certs, "b", &["b.test", "*.b.test"], (2999, 1, 1));
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let proxy = start_with(dir, &blue, &green, "directory = \"certs\"").await;
        let addr = proxy.https.unwrap();
        let all = [&default, &a, &b];
        for (name, expected) in [
            ("a.test", &a),
            ("b.test", &b),
            ("x.b.test", &b),
            ("localhost", &default),
        ] {
            let stream = connect_as(addr, &all, b"http/1.1", name).await.unwrap();
            let presented = &stream.get_ref().1.peer_certificates().unwrap()[0];
            assert_eq!(presented, expected, "certificate presented for {name}");
        }

        // A connection open under the old certificate of a.test.
        let stream = connect_as(addr, &all, b"http/1.1", "a.test").await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let get = |host: &'static str| {
            Request::get("/")
                .header("host", host)
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        assert_eq!(
            send.send_request(get("a.test")).await.unwrap().status(),
            200
        );

        // Renewed in place; the reload swaps the certificates.
        let renewed = write_dated(&certs, "a", &["a.test"], (2999, 6, 1));
        proxy
            .control
            .reload(cutover::control::events::Actor::Api)
            .await
            .unwrap();
        send.ready().await.unwrap();
        assert_eq!(
            send.send_request(get("a.test")).await.unwrap().status(),
            200,
            "the connection open across the reload still serves"
        );
        let stream = connect_as(addr, &[&renewed], b"http/1.1", "a.test")
            .await
            .unwrap();
        assert_eq!(
            &stream.get_ref().1.peer_certificates().unwrap()[0],
            &renewed
        );
        drop(stream);

        // An expired certificate dropped in fails the reload, naming the
        // file and the date; the running certificates keep serving.
        write_dated(&certs, "old", &["old.test"], (2020, 3, 1));
        let err = proxy
            .control
            .reload(cutover::control::events::Actor::Api)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("old.crt") && err.contains("expired on 2020-03-01"),
            "{err}"
        );
        std::fs::remove_file(certs.join("old.crt")).unwrap();

        // A key that is not the certificate's: both files named.
        std::fs::copy(certs.join("b.key"), certs.join("a.key")).unwrap();
        let err = proxy
            .control
            .reload(cutover::control::events::Actor::Api)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.crt") && err.contains("a.key") && err.contains("usable pair"),
            "{err}"
        );
        send.ready().await.unwrap();
        assert_eq!(
            send.send_request(get("a.test")).await.unwrap().status(),
            200
        );
        let stream = connect_as(addr, &[&renewed], b"http/1.1", "a.test")
            .await
            .unwrap();
        assert!(get_h1(stream).await.contains("blue"));
        drop(send);
        proxy.stop().await;
    })
    .await;
}
