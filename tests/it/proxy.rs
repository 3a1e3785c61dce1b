//! Plain proxying: which pool and server a request reaches, keep-alive
//! pooling to upstreams, h2c, and the header rewrite in both directions.

use http::{header, Method};
use tokio::io::AsyncWriteExt;

use crate::support::raw::RawUpstream;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reaches_the_active_blue_pool_and_never_green() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let mut client = Client::http1(proxy.addr).await;
        for i in 0..10 {
            let echo = client.get(&format!("/items/{i}?q=1")).await.echo();
            assert_eq!(echo.upstream, "blue");
            assert_eq!(echo.method, "GET");
            assert_eq!(echo.path, format!("/items/{i}"));
            assert_eq!(echo.query.as_deref(), Some("q=1"));
        }
        assert_eq!(blue.hits(), 10);
        assert_eq!(
            green.hits(),
            0,
            "green must not be hit while blue is active"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_over_the_pool_servers() {
    within(BOUND, async {
        let blue1 = Upstream::start("blue-1").await;
        let blue2 = Upstream::start("blue-2").await;
        let green = Upstream::start("green").await;
        let toml =
            route(None, "/", "app") + &service("app", &[blue1.addr, blue2.addr], &[green.addr]);
        let proxy = Cutover::start(&toml).await;

        let mut client = Client::http1(proxy.addr).await;
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(client.get("/").await.echo().upstream);
        }
        assert_eq!((blue1.hits(), blue2.hits()), (5, 5), "order: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0] != w[1]),
            "round robin alternates: {seen:?}"
        );
        assert_eq!(green.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_header_sends_a_request_to_green_while_blue_is_active() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let toml = route(None, "/", "app")
            + &service_with(
                "app",
                &[blue.addr],
                &[green.addr],
                "preview = { header = \"X-Cutover-Pool\" }",
            );
        let proxy = Cutover::start(&toml).await;

        let mut client = Client::http1(proxy.addr).await;
        let mut preview = get("/");
        preview
            .headers_mut()
            .insert("x-cutover-pool", "green".parse().unwrap());
        assert_eq!(client.request(preview).await.echo().upstream, "green");
        assert_eq!(client.get("/").await.echo().upstream, "blue");
        assert_eq!((blue.hits(), green.hits()), (1, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_get_reaches_blue_over_http1() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let mut client = Client::h2(proxy.addr).await;
        for _ in 0..3 {
            let reply = client.get("/h2?x=1").await;
            assert_eq!(reply.version, http::Version::HTTP_2);
            let echo = reply.echo();
            assert_eq!(echo.upstream, "blue");
            assert_eq!(echo.path, "/h2");
            assert_eq!(echo.version, "HTTP/1.1", "cutover speaks HTTP/1.1 upstream");
            assert_eq!(
                echo.header("host"),
                Some(proxy.addr.to_string()),
                "Host comes from :authority"
            );
        }
        assert_eq!(green.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_a_few_upstream_connections() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        // A new client connection each time: pooling to the upstream does
        // not depend on the client keeping its connection.
        for i in 0..50 {
            let reply = fetch(proxy.addr, &format!("/{i}")).await;
            assert_eq!(reply.echo().upstream, "blue");
        }
        assert_eq!(blue.hits(), 50);
        assert!(
            blue.connections() <= 3,
            "50 sequential requests opened {} upstream connections",
            blue.connections()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_hop_by_hop_headers_do_not_reach_the_upstream() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let mut req = get("/headers");
        let h = req.headers_mut();
        h.insert(header::HOST, "app.example:8443".parse().unwrap());
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Custom-Hop".parse().unwrap(),
        );
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::TRAILER, "x-checksum".parse().unwrap());
        h.insert(
            header::PROXY_AUTHORIZATION,
            "Basic Zm9vOmJhcg==".parse().unwrap(),
        );
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        h.insert("x-custom-hop", "drop me".parse().unwrap());
        h.insert("x-end-to-end", "kept".parse().unwrap());
        let echo = Client::http1(proxy.addr).await.request(req).await.echo();

        for name in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
            "upgrade",
            "x-custom-hop",
        ] {
            assert!(
                !echo.has(name),
                "{name} reached the upstream: {:?}",
                echo.headers
            );
        }
        assert_eq!(echo.header("x-end-to-end").as_deref(), Some("kept"));
        assert_eq!(
            echo.header("host").as_deref(),
            Some("app.example:8443"),
            "Host is preserved"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_hop_by_hop_headers_do_not_reach_the_client() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        // Direct, the upstream does send them ...
        let direct = fetch(blue.addr, "/hop-by-hop").await;
        for name in RESPONSE_HOP_BY_HOP {
            assert!(direct.headers.contains_key(name), "upstream sends {name}");
        }
        // ... and through cutover they are gone.
        let reply = fetch(proxy.addr, "/hop-by-hop").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hop\n");
        assert!(reply.headers.contains_key("trailer"), "{:?}", reply.headers);
        for name in RESPONSE_HOP_BY_HOP {
            assert!(
                !reply.headers.contains_key(name),
                "{name} reached the client: {:?}",
                reply.headers
            );
        }
        for value in reply.headers.get_all(header::CONNECTION) {
            assert!(
                !value
                    .to_str()
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains("x-internal"),
                "the upstream's Connection reached the client: {value:?}"
            );
        }
        assert_eq!(reply.headers["x-end-to-end"], "kept");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_content_length_reaches_the_client_as_the_upstream_framed_it() {
    within(BOUND, async {
        let upstream = RawUpstream::start(|mut conn| async move {
            let Some(head) = conn.head().await else {
                return;
            };
            let answer: &[u8] = if head.starts_with(b"GET /sized ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            } else if head.starts_with(b"HEAD /sized ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n"
            };
            let _ = conn.stream.write_all(answer).await;
        })
        .await;
        let config = route(None, "/", "app") + &service("app", &[upstream.addr], &[upstream.addr]);
        let proxy = Cutover::start(&config).await;
        let ask = |method: &str, path: &str| {
            format!("{method} {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        };
        let lengths = |answer: &str| -> Vec<String> {
            let head = answer
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            head.lines()
                .filter_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().to_owned())
                .collect()
        };

        // A length that frames the body: sent once, with the body.
        let answer = raw_exchange(proxy.addr, ask("GET", "/sized").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(lengths(&answer), ["5"], "{answer}");
        assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");
        // A HEAD answer's length describes the body a GET would get.
        let answer = raw_exchange(proxy.addr, ask("HEAD", "/sized").as_bytes()).await;
        assert_eq!(lengths(&answer), ["5000"], "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
        // Beside a transfer coding the length is dropped: the coding framed it.
        let answer = raw_exchange(proxy.addr, ask("GET", "/both").as_bytes()).await;
        assert!(lengths(&answer).is_empty(), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{answer}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_appended_and_set() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let mut client = Client::http1(proxy.addr).await;

        let mut req = get("/");
        req.headers_mut()
            .insert(header::HOST, "Agent.Example".parse().unwrap());
        req.headers_mut().insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.2".parse().unwrap(),
        );
        let echo = client.request(req).await.echo();
        assert_eq!(
            echo.header("x-forwarded-for").as_deref(),
            Some("203.0.113.9, 198.51.100.2, 127.0.0.1")
        );
        assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            echo.header("x-forwarded-host").as_deref(),
            Some("Agent.Example")
        );
        assert_eq!(echo.header("host").as_deref(), Some("Agent.Example"));

        // Without a prior list, the client's address alone; each field
        // once, whether or not the client sent its own proto and host
        // (those are replaced, not passed on beside).
        let own: [&[(&str, &str)]; 2] = [
            &[],
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
            ],
        ];
        for sent in own {
            let mut req = get("/");
            let h = req.headers_mut();
            h.insert(header::HOST, "app.example".parse().unwrap());
            for &(name, value) in sent {
                h.insert(name, value.parse().unwrap());
            }
            let echo = client.request(req).await.echo();
            assert_eq!(echo.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
            assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("http"));
            assert_eq!(
                echo.header("x-forwarded-host").as_deref(),
                Some("app.example"),
                "{sent:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cannot_drop_forwarded_headers_by_naming_them_in_connection() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let mut req = request(Method::GET, "/", empty());
        let h = req.headers_mut();
        h.insert(header::HOST, "app.example".parse().unwrap());
        h.insert(
            header::CONNECTION,
            "X-Forwarded-For, x-forwarded-host, X-Forwarded-Proto, Host"
                .parse()
                .unwrap(),
        );
        h.insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
        let echo = Client::http1(proxy.addr).await.request(req).await.echo();
        assert_eq!(
            echo.header("x-forwarded-for").as_deref(),
            Some("198.51.100.1, 127.0.0.1")
        );
        assert_eq!(
            echo.header("x-forwarded-host").as_deref(),
            Some("app.example")
        );
        assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(echo.header("host").as_deref(), Some("app.example"));
    })
    .await;
}
