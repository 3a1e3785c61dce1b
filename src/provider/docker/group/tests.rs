use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::*;
use crate::config::{CheckKind, DockerConfig, Listener};

fn container(name: &str, ip: u8, labels: &[(&str, &str)]) -> Container {
    Container {
        id: format!("{name}-0123456789abcdef"),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        networks: BTreeMap::from([("app".to_string(), IpAddr::from([172, 18, 0, ip]))]),
        ports: vec![5000],
    }
}

fn compose(service: &str, n: u8, labels: &[(&str, &str)]) -> Container {
    let mut c = container(&format!("stack_{service}_{n}"), n + 10, labels);
    c.labels
        .insert(COMPOSE_SERVICE.to_string(), service.to_string());
    c
}

fn seed_blue(n: u8) -> Container {
    compose(
        "blue",
        n,
        &[
            ("traefik.enable", "true"),
            ("traefik.http.routers.blue.rule", "Host(`your-domain.com`)"),
            ("traefik.http.routers.blue.service", "blue"),
            (
                "traefik.http.services.blue.loadbalancer.server.port",
                "5000",
            ),
        ],
    )
}

fn seed_green(n: u8) -> Container {
    compose(
        "green",
        n,
        &[
            ("traefik.enable", "true"),
            ("traefik.http.routers.green.rule", "Host(`your-domain.com`)"),
            ("traefik.http.routers.green.service", "green"),
            (
                "traefik.http.services.green.loadbalancer.server.port",
                "5001",
            ),
        ],
    )
}

fn build(containers: &[Container]) -> Contribution {
    build_with(containers, &DockerConfig::default(), None)
}

fn build_with(
    containers: &[Container],
    docker: &DockerConfig,
    proxy: Option<&BTreeSet<String>>,
) -> Contribution {
    contribution(
        containers,
        &Settings {
            docker,
            proxy_networks: proxy,
        },
    )
}

fn servers(c: &Contribution, service: &str, pool: PoolName) -> Vec<String> {
    let sc = c
        .services
        .iter()
        .find(|s| s.name == service)
        .expect("service");
    sc.pool(pool)
        .servers
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn issues(c: &Contribution) -> Vec<(String, String, String)> {
    c.containers
        .iter()
        .flat_map(|ct| {
            ct.issues
                .iter()
                .map(move |i| (ct.name.clone(), i.label.clone(), i.message.clone()))
        })
        .collect()
}

#[test]
fn the_seed_stack_is_one_service_with_a_blue_and_a_green_pool() {
    let c = build(&[seed_blue(1), seed_green(1)]);
    assert!(issues(&c).is_empty(), "{:?}", issues(&c));
    assert_eq!(c.services.len(), 1);
    let svc = &c.services[0];
    assert_eq!(svc.name, "your-domain.com");
    assert_eq!(svc.active, PoolName::Blue);
    assert_eq!(
        servers(&c, "your-domain.com", PoolName::Blue),
        ["172.18.0.11:5000"]
    );
    assert_eq!(
        servers(&c, "your-domain.com", PoolName::Green),
        ["172.18.0.11:5001"]
    );
    assert_eq!(c.routes.len(), 1);
    let route = &c.routes[0];
    assert_eq!(route.host.as_deref(), Some("your-domain.com"));
    assert_eq!((route.path_prefix.as_str(), route.exact), ("/", false));
    assert_eq!(route.priority, Some("Host(`your-domain.com`)".len() as i64));
    // Without a health-check label, a TCP check; healthy after one pass.
    let health = svc.health_of(PoolName::Blue).unwrap();
    assert_eq!(health.kind, CheckKind::Tcp);
    assert_eq!(health.healthy_threshold.get(), 1);
    let blue = &c.servers[&(
        svc.name.clone(),
        PoolName::Blue,
        "172.18.0.11:5000".parse_addr(),
    )];
    assert_eq!(blue.name, "stack_blue_1");
}

trait ParseAddr {
    fn parse_addr(&self) -> ServerAddr;
}

impl ParseAddr for str {
    fn parse_addr(&self) -> ServerAddr {
        let (host, port) = self.rsplit_once(':').unwrap();
        ServerAddr {
            host: host.into(),
            port: port.parse().unwrap(),
        }
    }
}

#[test]
fn scaled_replicas_are_several_servers_of_their_pool() {
    let c = build(&[seed_blue(1), seed_blue(2), seed_green(1)]);
    assert_eq!(
        servers(&c, "your-domain.com", PoolName::Blue),
        ["172.18.0.11:5000", "172.18.0.12:5000"]
    );
}

#[test]
fn the_v2_and_v3_spellings_of_several_hosts_group_together() {
    let v2 = compose(
        "api-blue",
        1,
        &[(
            "traefik.http.routers.api-blue.rule",
            "Host(`a.example`, `b.example`)",
        )],
    );
    let v3 = compose(
        "api-green",
        2,
        &[(
            "traefik.http.routers.api-green.rule",
            "Host(`b.example`) || Host(`a.example`)",
        )],
    );
    let c = build(&[v2, v3]);
    assert!(issues(&c).is_empty(), "{:?}", issues(&c));
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.services[0].name, "a.example");
    assert_eq!(
        servers(&c, "a.example", PoolName::Green),
        ["172.18.0.12:5000"]
    );
    let hosts: Vec<_> = c.routes.iter().map(|r| r.host.clone().unwrap()).collect();
    assert_eq!(hosts, ["a.example", "b.example"]);
}

#[test]
fn a_lone_router_without_a_colour_is_a_plain_service_in_blue() {
    let c = build(&[compose(
        "api",
        1,
        &[(
            "traefik.http.routers.api.rule",
            "Host(`api.example`) && PathPrefix(`/v1`)",
        )],
    )]);
    assert_eq!(
        servers(&c, "api.example", PoolName::Blue),
        ["172.18.0.11:5000"]
    );
    assert!(servers(&c, "api.example", PoolName::Green).is_empty());
    assert_eq!(c.routes[0].path_prefix, "/v1");
}

#[test]
fn cutover_labels_name_the_pool_the_service_and_the_active_pool() {
    let one = compose(
        "a",
        1,
        &[
            ("traefik.http.routers.a.rule", "Host(`x`)"),
            ("cutover.pool", "green"),
            ("cutover.service", "agent"),
            ("cutover.active", "true"),
        ],
    );
    let two = compose(
        "b",
        2,
        &[
            ("traefik.http.routers.b.rule", "Host(`x`)"),
            ("cutover.pool", "blue"),
        ],
    );
    let c = build(&[one, two]);
    assert!(issues(&c).is_empty(), "{:?}", issues(&c));
    let svc = &c.services[0];
    assert_eq!((svc.name.as_str(), svc.active), ("agent", PoolName::Green));
    assert_eq!(servers(&c, "agent", PoolName::Green), ["172.18.0.11:5000"]);
}

#[test]
fn a_green_pool_alone_is_active() {
    let c = build(&[seed_green(1)]);
    assert_eq!(c.services[0].active, PoolName::Green);
}

#[test]
fn two_containers_giving_one_router_different_rules_leave_it_out_and_name_both() {
    let a = compose("blue", 1, &[("traefik.http.routers.web.rule", "Host(`a`)")]);
    let b = compose("blue", 2, &[("traefik.http.routers.web.rule", "Host(`b`)")]);
    let ok = compose(
        "other",
        3,
        &[("traefik.http.routers.other.rule", "Host(`o`)")],
    );
    let c = build(&[a, b, ok]);
    let found = issues(&c);
    assert_eq!(found.len(), 2, "{found:?}");
    for (container, label, message) in &found {
        assert!(container.starts_with("stack_blue_"), "{container}");
        assert_eq!(label, "traefik.http.routers.web.rule");
        assert!(message.contains("defined differently"), "{message}");
    }
    // Everything else is served.
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["o"]);
}

#[test]
fn a_rule_that_does_not_parse_is_reported_on_its_label() {
    let c = build(&[compose(
        "a",
        1,
        &[(
            "traefik.http.routers.a.rule",
            "Host(`a`) && HeadersRegexp(`X`, `.*`)",
        )],
    )]);
    let found = issues(&c);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].1, "traefik.http.routers.a.rule");
    assert!(found[0].2.contains("not supported"), "{found:?}");
    assert!(c.services.is_empty() && c.routes.is_empty());
}

#[test]
fn a_port_that_is_not_a_number_leaves_that_router_out() {
    let bad = compose(
        "a",
        1,
        &[
            ("traefik.http.routers.a.rule", "Host(`a`)"),
            ("traefik.http.services.a.loadbalancer.server.port", "eighty"),
        ],
    );
    let c = build(&[bad, seed_blue(2)]);
    let found = issues(&c);
    assert!(
        found.iter().any(|(c, l, m)| c == "stack_a_1"
            && l == "traefik.http.services.a.loadbalancer.server.port"
            && m.contains("is not a port")),
        "{found:?}"
    );
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["your-domain.com"]);
}

#[test]
fn a_container_on_no_network_the_proxy_shares_is_reported() {
    let shared: BTreeSet<String> = ["edge".to_string()].into();
    let c = build_with(&[seed_blue(1)], &DockerConfig::default(), Some(&shared));
    let found = issues(&c);
    assert!(
        found.iter().any(|(c, l, m)| c == "stack_blue_1"
            && l == "traefik.docker.network"
            && m.contains("no network they share")),
        "{found:?}"
    );
    assert!(c.services.is_empty());
}

#[test]
fn a_router_naming_a_middleware_that_does_not_exist_is_left_out() {
    let c = build(&[
        compose(
            "a",
            1,
            &[
                ("traefik.http.routers.a.rule", "Host(`a`)"),
                ("traefik.http.routers.a.middlewares", "strip"),
            ],
        ),
        seed_blue(2),
    ]);
    let found = issues(&c);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].1, "traefik.http.routers.a.middlewares");
    assert!(found[0].2.contains("\"strip\" is not defined"), "{found:?}");
    assert_eq!(c.services.len(), 1);
}

#[test]
fn middlewares_entrypoints_and_priority_reach_the_routes() {
    let c = build(&[compose(
        "a",
        1,
        &[
            (
                "traefik.http.routers.a.rule",
                "Host(`a`) && Path(`/health`)",
            ),
            ("traefik.http.routers.a.priority", "42"),
            ("traefik.http.routers.a.entrypoints", "websecure"),
            ("traefik.http.routers.a.middlewares", "h@docker"),
            (
                "traefik.http.middlewares.h.headers.customresponseheaders.X-By",
                "cutover",
            ),
        ],
    )]);
    assert!(issues(&c).is_empty(), "{:?}", issues(&c));
    let r = &c.routes[0];
    assert!(r.exact);
    assert_eq!(r.priority, Some(42));
    assert!(r.listeners.contains(Listener::Https) && !r.listeners.contains(Listener::Http));
    assert_eq!(r.middlewares.as_ref().unwrap().response_headers.len(), 1);
}

#[test]
fn an_unknown_entrypoint_is_reported() {
    let c = build(&[compose(
        "a",
        1,
        &[
            ("traefik.http.routers.a.rule", "Host(`a`)"),
            ("traefik.http.routers.a.entrypoints", "metrics"),
        ],
    )]);
    let found = issues(&c);
    assert!(found[0].2.contains("entrypoint \"metrics\""), "{found:?}");
    assert!(c.routes.is_empty());
}

#[test]
fn ignored_labels_are_listed_per_container() {
    let mut blue = seed_blue(1);
    blue.labels
        .insert("traefik.http.routers.blue.tls".into(), "true".into());
    let c = build(&[blue]);
    let ct = &c.containers[0];
    assert_eq!(ct.ignored_labels, ["traefik.http.routers.blue.tls"]);
    assert_eq!(ct.services, ["your-domain.com"]);
    assert_eq!(ct.id.len(), 12);
}

#[test]
fn disabled_containers_and_containers_without_labels_are_not_read() {
    let mut off = seed_blue(1);
    off.labels.insert("traefik.enable".into(), "false".into());
    let plain = container("db", 5, &[]);
    let c = build(&[off, plain]);
    assert!(c.containers.is_empty() && c.services.is_empty());
    let not_exposed = DockerConfig {
        exposed_by_default: false,
        ..DockerConfig::default()
    };
    let unlabelled = compose("x", 1, &[("traefik.http.routers.x.rule", "Host(`x`)")]);
    assert!(build_with(&[unlabelled], &not_exposed, None)
        .services
        .is_empty());
}

#[test]
fn two_rules_with_one_host_get_distinct_names() {
    let root = compose("web", 1, &[("traefik.http.routers.web.rule", "Host(`a`)")]);
    let api = compose(
        "api",
        2,
        &[(
            "traefik.http.routers.api.rule",
            "Host(`a`) && PathPrefix(`/api`)",
        )],
    );
    let c = build(&[api, root]);
    let names: BTreeSet<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains("a"), "{names:?}");
}

#[test]
fn health_check_labels_make_an_http_check_per_pool() {
    let mut green = seed_green(1);
    green.labels.insert(
        "traefik.http.services.green.loadbalancer.healthcheck.path".into(),
        "/health".into(),
    );
    let c = build(&[seed_blue(1), green]);
    let svc = &c.services[0];
    assert_eq!(svc.health_of(PoolName::Blue).unwrap().kind, CheckKind::Tcp);
    let g = svc.health_of(PoolName::Green).unwrap();
    assert_eq!((g.kind, g.path.as_str()), (CheckKind::Http, "/health"));
}

#[test]
fn the_hosts_of_routers_with_a_certresolver_are_acme_domains() {
    let c = build(&[
        compose(
            "a",
            1,
            &[
                (
                    "traefik.http.routers.a.rule",
                    "Host(`a.test`) || Host(`www.a.test`)",
                ),
                ("traefik.http.routers.a.tls.certresolver", "le"),
            ],
        ),
        compose("b", 2, &[("traefik.http.routers.b.rule", "Host(`b.test`)")]),
    ]);
    assert_eq!(
        c.acme_domains
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["a.test", "www.a.test"]
    );
    assert!(c.containers[0].ignored_labels.is_empty());
}
