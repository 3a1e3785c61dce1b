//! Route precedence, end to end: a route with a host beats one without, the
//! longest prefix wins, Host matching ignores port and case, a host's miss
//! falls back to the host-less routes, and no match is a 404.

use http::header;

use crate::support::*;

/// One upstream per service, each its service's blue server.
struct Routes {
    proxy: Cutover,
    _upstreams: Vec<Upstream>,
}

async fn start_routes() -> Routes {
    let spare = Upstream::start("green").await;
    let mut toml = String::new();
    toml += &route(Some("api.example"), "/", "api");
    toml += &route(Some("api.example"), "/v2/", "api_v2");
    toml += &route(Some("admin.example"), "/admin/", "admin");
    toml += &route(None, "/", "fallback");
    toml += &route(None, "/static/", "static");
    let mut upstreams = Vec::new();
    for name in ["api", "api_v2", "admin", "fallback", "static"] {
        let up = Upstream::start(name).await;
        toml += &service(name, &[up.addr], &[spare.addr]);
        upstreams.push(up);
    }
    upstreams.push(spare);
    Routes {
        proxy: Cutover::start(&toml).await,
        _upstreams: upstreams,
    }
}

/// The upstream that answered `GET path` with `Host: host`.
async fn served_by(client: &mut Client, host: &str, path: &str) -> String {
    let mut req = get(path);
    req.headers_mut()
        .insert(header::HOST, host.parse().unwrap());
    let echo = client.request(req).await.echo();
    assert_eq!(echo.path, path);
    echo.upstream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_with_host_beats_longer_hostless_prefix() {
    within(BOUND, async {
        let routes = start_routes().await;
        let mut client = Client::http1(routes.proxy.addr).await;
        assert_eq!(
            served_by(&mut client, "api.example", "/static/x").await,
            "api"
        );
        assert_eq!(served_by(&mut client, "api.example", "/").await, "api");
        assert_eq!(
            served_by(&mut client, "other.example", "/static/x").await,
            "static"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_wins() {
    within(BOUND, async {
        let routes = start_routes().await;
        let mut client = Client::http1(routes.proxy.addr).await;
        assert_eq!(
            served_by(&mut client, "api.example", "/v2/items").await,
            "api_v2"
        );
        assert_eq!(
            served_by(&mut client, "api.example", "/v2").await,
            "api",
            "prefix is a plain string"
        );
        assert_eq!(
            served_by(&mut client, "api.example", "/v1/items").await,
            "api"
        );
        assert_eq!(
            served_by(&mut client, "any.example", "/static/app.js").await,
            "static"
        );
        assert_eq!(
            served_by(&mut client, "any.example", "/staticx").await,
            "fallback"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_match_ignores_port_and_case() {
    within(BOUND, async {
        let routes = start_routes().await;
        let mut client = Client::http1(routes.proxy.addr).await;
        assert_eq!(
            served_by(&mut client, "api.example:8080", "/v2/x").await,
            "api_v2"
        );
        assert_eq!(served_by(&mut client, "API.Example", "/x").await, "api");
        assert_eq!(
            served_by(&mut client, "Api.EXAMPLE:443", "/v2/").await,
            "api_v2"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_route_miss_falls_back_to_hostless_routes() {
    within(BOUND, async {
        let routes = start_routes().await;
        let mut client = Client::http1(routes.proxy.addr).await;
        assert_eq!(
            served_by(&mut client, "admin.example", "/admin/users").await,
            "admin"
        );
        assert_eq!(
            served_by(&mut client, "admin.example", "/other").await,
            "fallback"
        );
        assert_eq!(
            served_by(&mut client, "admin.example:9000", "/static/s.css").await,
            "static"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404_no_route() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let toml = route(Some("only.example"), "/", "app")
            + &route(None, "/api/", "app")
            + &service("app", &[blue.addr], &[green.addr]);
        let proxy = Cutover::start(&toml).await;
        let mut client = Client::http1(proxy.addr).await;

        let mut req = get("/nope");
        req.headers_mut()
            .insert(header::HOST, "other.example".parse().unwrap());
        let reply = client.request(req).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.text(), "no route\n");

        // The same connection still serves a routable request.
        assert_eq!(
            served_by(&mut client, "other.example", "/api/x").await,
            "blue"
        );
        assert_eq!(blue.hits(), 1);
    })
    .await;
}
