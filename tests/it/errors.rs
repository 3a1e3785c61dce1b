//! The answers cutover produces itself, end to end: status and body for each
//! failure, and the retry-once rule for refused connections.

use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_to_the_only_server_is_502() {
    within(BOUND, async {
        let dead = closed_port().await;
        let green = Upstream::start("green").await;
        let toml = route(None, "/", "app") + &service("app", &[dead], &[green.addr]);
        let proxy = Cutover::start(&toml).await;

        let reply = fetch(proxy.addr, "/").await;
        assert_eq!(reply.status, 502);
        assert_eq!(reply.text(), "upstream connection failed\n");
        assert_eq!(
            green.hits(),
            0,
            "a failing pool does not spill to the other pool"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_retried_once_on_another_server_of_the_pool() {
    within(BOUND, async {
        let dead = closed_port().await;
        let live = Upstream::start("live").await;
        let green = Upstream::start("green").await;
        let toml = route(None, "/", "app") + &service("app", &[dead, live.addr], &[green.addr]);
        let proxy = Cutover::start(&toml).await;

        let mut client = Client::http1(proxy.addr).await;
        for i in 0..20 {
            let payload = format!("payload {i} {}", "x".repeat(i * 100));
            let reply = client
                .request(request(Method::POST, "/submit", full(payload.clone())))
                .await;
            let echo = reply.echo();
            assert_eq!(echo.upstream, "live", "request {i}");
            assert_eq!(echo.method, "POST");
            assert_eq!(echo.body, payload, "request {i}: body delivered intact");
        }
        assert_eq!(live.hits(), 20);
        assert_eq!(green.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_without_healthy_server_is_503() {
    within(BOUND, async {
        let dead = closed_port().await;
        let green = Upstream::start("green").await;
        let toml = route(None, "/", "app")
            + &service("app", &[dead], &[green.addr])
            + "[service.app.health]\ninterval = \"50ms\"\ntimeout = \"50ms\"\n\
               healthy_threshold = 1\nunhealthy_threshold = 1\n";
        let proxy = Cutover::start(&toml).await;

        // Before the first health round a request may still try (and fail
        // to connect); once blue's only server is marked down, 503.
        let addr = proxy.addr;
        eventually("blue's only server is marked unhealthy", || async move {
            fetch(addr, "/").await.status == 503
        })
        .await;
        let reply = fetch(proxy.addr, "/").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.text(), "no healthy server\n");
        assert_eq!(
            green.hits(),
            0,
            "an unhealthy pool does not spill to the other pool"
        );
    })
    .await;
}

#[tokio::test]
async fn upstream_head_slower_than_response_timeout_is_504() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let toml = "[server.limits]\nresponse_timeout = \"300ms\"\n\n".to_string()
            + &blue_green(&blue, &green);
        let proxy = Cutover::start(&toml).await;
        tokio::time::pause();

        let started = Instant::now();
        let reply = fetch(proxy.addr, "/slow?ms=3000").await;
        let took = started.elapsed();
        assert_eq!(reply.status, 504);
        assert_eq!(reply.text(), "upstream timeout\n");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
            "answered after {took:?}"
        );
        // A head within the timeout is served.
        assert_eq!(
            fetch(proxy.addr, "/slow?ms=10").await.echo().upstream,
            "blue"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_over_max_body_bytes_is_413() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let toml =
            "[server.limits]\nmax_body_bytes = 1024\n\n".to_string() + &blue_green(&blue, &green);
        let proxy = Cutover::start(&toml).await;

        let reply = Client::http1(proxy.addr)
            .await
            .request(request(Method::POST, "/upload", full(vec![b'a'; 4096])))
            .await;
        assert_eq!(reply.status, 413);
        assert_eq!(reply.text(), "request body too large\n");
        assert_eq!(blue.hits(), 0, "the body never reached the upstream");

        // At the limit, it passes.
        let reply = Client::http1(proxy.addr)
            .await
            .request(request(Method::POST, "/echo", full(vec![b'a'; 1024])))
            .await;
        assert_eq!(reply.echo().body.len(), 1024);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_request_without_host_is_400() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let answer = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert!(
            answer.ends_with("\r\n\r\nmissing host header\n"),
            "{answer:?}"
        );
        assert_eq!(blue.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_statuses_pass_through_unchanged() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let mut client = Client::http1(proxy.addr).await;
        for code in [404u16, 500, 502, 503] {
            let reply = client.get(&format!("/status/{code}")).await;
            assert_eq!(reply.status.as_u16(), code);
            assert_eq!(reply.text(), format!("status {code}\n"));
        }
        assert_eq!(blue.hits(), 4, "an upstream's 5xx is not retried");
    })
    .await;
}

/// A panic in the proxy's own code (asked for by the debug builds' test
/// header) never goes unseen: the request gets a 502, the panic is counted,
/// the client's connection stays usable, and the proxy serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_proxying_is_answered_502_counted_and_the_proxy_serves_on() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let toml = route(None, "/", "app") + &service("app", &[blue.addr], &[green.addr]);
        let proxy = Cutover::start(&toml).await;
        let panics = |scrape: &Scrape| scrape.value("cutover_connection_panics_total", &[]);
        assert_eq!(panics(&proxy.scrape().await), 0.0);

        let mut client = Client::http1(proxy.addr).await;
        for (n, at) in ["routing", "exchange"].into_iter().enumerate() {
            let mut req = request(Method::GET, "/x", empty());
            req.headers_mut()
                .insert("x-cutover-debug-panic", at.parse().unwrap());
            let reply = client.request(req).await;
            assert_eq!(reply.status, 502, "a panic while {at}");
            assert_eq!(reply.text(), "internal error\n", "a panic while {at}");
            assert_eq!(
                panics(&proxy.scrape().await),
                (n + 1) as f64,
                "a panic while {at} is counted once"
            );
            // The same connection carries the next request.
            let next = client.get("/after").await;
            assert_eq!(next.status, 200, "after a panic while {at}");
            assert_eq!(next.echo().upstream, "blue");
        }
        assert_eq!(blue.hits(), 2, "the panicking requests never reached blue");
        let scrape = proxy.scrape().await;
        assert_eq!(
            scrape.value(
                "cutover_requests_total",
                &[("service", "app"), ("pool", "blue"), ("code", "502")]
            ),
            1.0,
            "the exchange's 502 is the pool's"
        );
        assert_eq!(fetch(proxy.addr, "/").await.status, 200);
    })
    .await;
}
