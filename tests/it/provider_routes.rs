//! Services a provider contributes, through the proxy, without an engine:
//! the Docker provider's contribution handed to the control plane as it
//! hands it (its engine unreachable), with Traefik's middlewares, exact
//! paths and entrypoints on its routes, beside the config file's services.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, HOST, LOCATION};
use http::StatusCode;
use serde_json::Value;

use cutover::config::{
    HeaderEdit, Listener, Listeners, Location, Middlewares, PoolConfig, PoolName, Redirect,
    RouteConfig, ServerAddr, ServiceConfig,
};
use cutover::control::source::{ContainerRef, Contribution};
use cutover::wire::ContainerStatus;

use crate::support::{admin_get, get, route, service, Client, Cutover, Reply, Upstream};

/// The provider's engine is nowhere: the proxy starts without it, and the
/// test hands the contribution over itself.
const NO_ENGINE: &str = "[providers.docker]\nendpoint = \"unix:///nonexistent/cutover-it.sock\"\n";

fn addr(upstream: &Upstream) -> ServerAddr {
    ServerAddr {
        host: upstream.addr.ip().to_string(),
        port: upstream.addr.port(),
    }
}

fn docker_service(name: &str, blue: &Upstream) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        active: PoolName::Blue,
        drain_timeout: std::time::Duration::from_secs(30),
        balance: Default::default(),
        sticky: None,
        preview: None,
        health: None,
        pools: [
            PoolConfig {
                servers: vec![addr(blue)],
                health: None,
            },
            PoolConfig::default(),
        ],
        rollback: None,
        canary: Vec::new(),
        drain_sse_event: None,
    }
}

fn docker_route(host: &str, path: &str, service: &str) -> RouteConfig {
    RouteConfig {
        priority: Some(10),
        ..RouteConfig::prefix(Some(host.into()), path.into(), service.into())
    }
}

fn contribution(services: Vec<ServiceConfig>, routes: Vec<RouteConfig>) -> Contribution {
    let servers: HashMap<_, _> = services
        .iter()
        .flat_map(|s| {
            s.pool(PoolName::Blue).servers.iter().map(|a| {
                let container = ContainerRef {
                    id: "0123456789abcdef".into(),
                    name: "app-1".into(),
                };
                ((s.name.clone(), PoolName::Blue, a.clone()), container)
            })
        })
        .collect();
    let origins: BTreeMap<String, Vec<Location>> = services
        .iter()
        .map(|s| {
            let at = Location::Label {
                container: "app-1".into(),
                label: "traefik.http.routers.app.rule".into(),
            };
            (s.name.clone(), vec![at])
        })
        .collect();
    Contribution {
        services,
        routes,
        servers,
        origins,
        containers: vec![ContainerStatus {
            name: "app-1".into(),
            id: "0123456789ab".into(),
            services: Vec::new(),
            ignored_labels: Vec::new(),
            issues: Vec::new(),
        }],
        acme_domains: Default::default(),
    }
}

async fn send(proxy: &Cutover, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut conn = Client::http1(proxy.addr).await;
    let mut req = get(path);
    req.headers_mut()
        .insert(HOST, HeaderValue::from_str(host).expect("host"));
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    conn.request(req).await
}

#[tokio::test]
async fn a_routes_middlewares_strip_its_prefix_edit_headers_and_redirect() {
    let app = Upstream::start("app").await;
    let proxy = Cutover::start(NO_ENGINE).await;
    let header = |name: &'static str, value: Option<&'static str>| HeaderEdit {
        name: HeaderName::from_static(name),
        value: value.map(HeaderValue::from_static),
    };
    let rewrite = Middlewares {
        strip_prefixes: vec![vec!["/api".into()]],
        request_headers: vec![header("x-env", Some("prod")), header("x-drop", None)],
        response_headers: vec![header("x-served-by", Some("cutover"))],
        ..Middlewares::default()
    };
    let to_https = Middlewares {
        redirect: Some(Redirect {
            scheme: "https",
            permanent: true,
        }),
        ..Middlewares::default()
    };
    let routes = vec![
        RouteConfig {
            middlewares: Some(Arc::new(rewrite)),
            ..docker_route("strip.test", "/api", "app")
        },
        RouteConfig {
            middlewares: Some(Arc::new(to_https)),
            ..docker_route("redirect.test", "/", "app")
        },
        RouteConfig {
            exact: true,
            ..docker_route("exact.test", "/only", "app")
        },
        RouteConfig {
            listeners: Listeners::NONE.with(Listener::Https),
            ..docker_route("tls-only.test", "/", "app")
        },
    ];
    let made = contribution(vec![docker_service("app", &app)], routes);
    proxy.control.apply_docker(made).await.expect("applied");

    let reply = send(&proxy, "strip.test", "/api/v1/chat?x=1", &[("x-drop", "1")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["x-served-by"], "cutover");
    let echo = reply.echo();
    assert_eq!(
        (echo.path.as_str(), echo.query.as_deref()),
        ("/v1/chat", Some("x=1"))
    );
    assert_eq!(echo.header("x-forwarded-prefix").as_deref(), Some("/api"));
    assert_eq!(echo.header("x-env").as_deref(), Some("prod"));
    assert!(!echo.has("x-drop"));

    let reply = send(&proxy, "redirect.test:8080", "/a?b=1", &[]).await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.headers[LOCATION], "https://redirect.test/a?b=1");

    assert_eq!(
        send(&proxy, "exact.test", "/only", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&proxy, "exact.test", "/only/more", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // Its entrypoint is the HTTPS listener only.
    assert_eq!(
        send(&proxy, "tls-only.test", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_service_name_the_file_uses_keeps_the_files_service_and_the_clash_is_reported() {
    let file_app = Upstream::start("file").await;
    let docker_app = Upstream::start("docker").await;
    let body = NO_ENGINE.to_string()
        + &route(Some("file.test"), "/", "app")
        + &service("app", &[file_app.addr], &[file_app.addr]);
    let proxy = Cutover::start(&body).await;
    let made = contribution(
        vec![
            docker_service("app", &docker_app),
            docker_service("other", &docker_app),
        ],
        vec![
            docker_route("docker.test", "/", "app"),
            docker_route("other.test", "/", "other"),
        ],
    );
    proxy.control.apply_docker(made).await.expect("applied");

    assert_eq!(
        send(&proxy, "file.test", "/", &[]).await.echo().upstream,
        "file"
    );
    // The clashing service's routes are left out; the other one serves.
    assert_eq!(
        send(&proxy, "docker.test", "/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&proxy, "other.test", "/", &[]).await.echo().upstream,
        "docker"
    );
    let status: Value = admin_get(proxy.admin, "/api/v1/status").await.json();
    let issues = &status["docker"]["containers"][0]["issues"];
    assert_eq!(
        issues[0]["label"], "traefik.http.routers.app.rule",
        "{status}"
    );
    let message = issues[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("also defined in"), "{message}");
    assert_eq!(status["docker"]["connected"], false);
    proxy.stop().await;
}
