//! What the proxy believes of a client: the `Upgrade` protocols it tunnels
//! (`[server] allowed_upgrades`, `websocket` by default; never `h2c`) and
//! the forwarding headers it keeps (`[server] trusted_ips`: from any other
//! peer `Forwarded`, `X-Real-IP` and `X-Forwarded-*` but `-For` go, and
//! `-For` gets the peer appended, as the SPEC says).

use http::Request;

use crate::support::*;

/// A proxy whose `[server]` table has `server` added, in front of `blue`.
async fn proxy_with(server: &str, blue: &Upstream, green: &Upstream) -> Cutover {
    let text = header().replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
        + &blue_green(blue, green);
    Cutover::start_in(tempfile::tempdir().expect("temp dir"), &text).await
}

/// `GET /` asking to upgrade to `protocol`.
fn upgrade_to(protocol: &str) -> Request<TestBody> {
    Request::builder()
        .uri("/")
        .header("connection", "upgrade")
        .header("upgrade", protocol)
        .body(empty())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_upgrades_reach_the_upstream() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let mut client = Client::http1(proxy.addr).await;
        // Not allowed by default: a plain request, no `Upgrade`.
        for protocol in ["h2c", "foo", "websocket, h2c"] {
            let echo = client.request(upgrade_to(protocol)).await.echo();
            assert!(!echo.has("upgrade"), "{protocol}: {:?}", echo.headers);
            assert_eq!(echo.header("connection"), None, "{protocol}");
        }
        let echo = client.request(upgrade_to("websocket")).await.echo();
        assert_eq!(echo.header("upgrade").as_deref(), Some("websocket"));
        proxy.stop().await;

        let proxy = proxy_with("allowed_upgrades = [\"foo\"]", &blue, &green).await;
        let mut client = Client::http1(proxy.addr).await;
        let echo = client.request(upgrade_to("FOO/2")).await.echo();
        assert_eq!(echo.header("upgrade").as_deref(), Some("FOO/2"));
        let echo = client.request(upgrade_to("websocket")).await.echo();
        assert!(!echo.has("upgrade"), "{:?}", echo.headers);
    })
    .await;
}

#[test]
fn h2c_in_allowed_upgrades_is_a_config_error_naming_file_key_and_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("proxy.toml");
    let text = header().replacen(
        "[server]\n",
        "[server]\nallowed_upgrades = [\"websocket\", \"h2c\"]\ntrusted_ips = [\"10.0.0.0/33\"]\n",
        1,
    );
    let err = cutover::config::parse(&text, &path)
        .expect_err("h2c and a bad range are refused")
        .to_string();
    for needle in [
        "proxy.toml:2:",
        "server.allowed_upgrades",
        "\"h2c\"",
        "proxy.toml:3:",
        "server.trusted_ips",
        "\"10.0.0.0/33\"",
        "expected CIDR",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}

/// A request carrying forwarding headers of its own.
fn with_forwarding() -> Request<TestBody> {
    Request::builder()
        .uri("/")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-server", "edge")
        .body(empty())
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_kept_from_trusted_peers_only() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        for trusted in ["", "trusted_ips = [\"10.0.0.0/8\"]"] {
            let proxy = proxy_with(trusted, &blue, &green).await;
            for mut client in [
                Client::http1(proxy.addr).await,
                Client::h2(proxy.addr).await,
            ] {
                let echo = client.request(with_forwarding()).await.echo();
                for gone in [
                    "forwarded",
                    "x-real-ip",
                    "x-forwarded-port",
                    "x-forwarded-server",
                ] {
                    assert!(!echo.has(gone), "{trusted:?}: {gone} in {:?}", echo.headers);
                }
                assert_eq!(
                    echo.header("x-forwarded-for").as_deref(),
                    Some("6.6.6.6, 127.0.0.1")
                );
                assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("http"));
            }
            proxy.stop().await;
        }
        for trusted in ["127.0.0.1", "127.0.0.0/8", "::ffff:127.0.0.0/104"] {
            let server = format!("trusted_ips = [\"10.0.0.0/8\", \"{trusted}\"]");
            let proxy = proxy_with(&server, &blue, &green).await;
            let echo = Client::http1(proxy.addr)
                .await
                .request(with_forwarding())
                .await
                .echo();
            assert_eq!(
                echo.header("forwarded").as_deref(),
                Some("for=6.6.6.6;proto=https"),
                "{trusted}: {:?}",
                echo.headers
            );
            assert_eq!(echo.header("x-real-ip").as_deref(), Some("6.6.6.6"));
            assert_eq!(echo.header("x-forwarded-port").as_deref(), Some("443"));
            assert_eq!(echo.header("x-forwarded-server").as_deref(), Some("edge"));
            assert_eq!(
                echo.header("x-forwarded-for").as_deref(),
                Some("6.6.6.6, 127.0.0.1")
            );
            proxy.stop().await;
        }
    })
    .await;
}
