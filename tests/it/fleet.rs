//! Fleet mode: three replicas share one release state through a real etcd
//! (Debian's `etcd-server`, started by each test on loopback ports). A
//! switch on one reaches every replica within 1 s; of two racing changes
//! exactly one wins; etcd gone, every replica keeps serving and refuses
//! changes with 503 `cluster_unavailable`, and catches up when it is back;
//! the leader alone judges canaries and rollback watches, on the fleet's
//! summed counters, and another replica finishes its work when it dies.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::binary::CutoverBinary;
use crate::support::docker::eventually_within;
use crate::support::etcd::Etcd;
use crate::support::*;

/// The bound of each test here.
const FLEET_BOUND: Duration = Duration::from_secs(40);
/// How long a change committed on one replica may take to be applied on
/// another (the SPEC's bound).
const APPLIED: Duration = Duration::from_secs(1);
/// How long a replica may refuse changes after one etcd member of three
/// died: its session on that member fails, the next reaches another
/// member, and when the dead member led etcd the others elect a leader
/// first (1 s election timeout, longer on a loaded machine).
const MEMBER_LOSS: Duration = Duration::from_secs(5);
/// The replicas' lease time to live.
const TTL: Duration = Duration::from_secs(2);

/// `[cluster]` for replica `name` of the fleet on `etcd`.
fn cluster(etcd: &Etcd, name: &str) -> String {
    cluster_on(std::slice::from_ref(etcd), name)
}

/// `[cluster]` for replica `name` of the fleet on every member of `etcd`.
fn cluster_on(etcd: &[Etcd], name: &str) -> String {
    let endpoints: Vec<String> = etcd.iter().map(|m| format!("\"{}\"", m.endpoint)).collect();
    format!(
        "[cluster]\netcd = [{}]\nprefix = \"/fleet-test\"\nname = \"{name}\"\nlease_ttl = \"{}s\"\n\n",
        endpoints.join(", "),
        TTL.as_secs()
    )
}

/// Starts replicas `r1`..`rN` of `body` on `etcd`; returns once each is
/// ready and connected and the fleet has a leader.
async fn fleet(etcd: &Etcd, n: usize, body: &str) -> Vec<Cutover> {
    let mut replicas = Vec::new();
    for i in 1..=n {
        replicas.push(Cutover::start(&(cluster(etcd, &format!("r{i}")) + body)).await);
    }
    for r in &replicas {
        until("connected with a leader", || async {
            let c = cluster_of(r).await;
            c["connected"] == true && c["leader"].is_string()
        })
        .await;
    }
    replicas
}

/// `GET /api/v1/status`'s `cluster` block.
async fn cluster_of(proxy: &Cutover) -> Value {
    let reply = admin_get(proxy.admin, "/api/v1/status").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["cluster"].clone()
}

/// Polls `check` until it holds, for at most 10 s.
async fn until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(10), check).await;
}

/// Which upstream answers a new request through `proxy`.
async fn routed(proxy: &Cutover) -> String {
    let reply = fetch(proxy.addr, "/").await;
    upstream_of(&reply.body).unwrap_or_else(|| format!("status {}", reply.status))
}

/// The name of the leader, as `proxy` sees it.
async fn leader(proxy: &Cutover) -> String {
    cluster_of(proxy).await["leader"]
        .as_str()
        .expect("a leader")
        .to_string()
}

async fn weights(proxy: &Cutover, standby: u8) -> Reply {
    admin_put(
        proxy.admin,
        "/api/v1/services/app/weights",
        json!({"standby": standby}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_on_one_replica_routes_every_replica_within_a_second() {
    within(FLEET_BOUND, async {
        let etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let replicas = fleet(&etcd, 3, &app(&blue, &green, "", "")).await;
        for r in &replicas {
            assert_eq!(routed(r).await, "blue");
        }

        let reply = replicas[0].switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let committed = Instant::now();
        for r in &replicas[1..] {
            while routed(r).await != "green" {
                assert!(
                    committed.elapsed() < APPLIED,
                    "replica still routes to blue {:?} after the commit",
                    committed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        // Every replica shows the fleet: three replicas, one leader, the
        // same leader; the event reached every history.
        let leaders: Vec<String> = {
            let mut v = Vec::new();
            for r in &replicas {
                v.push(leader(r).await);
            }
            v
        };
        assert!(leaders.windows(2).all(|w| w[0] == w[1]), "{leaders:?}");
        let c = cluster_of(&replicas[2]).await;
        assert_eq!(c["name"], "r3");
        assert_eq!(c["state_from"], "etcd");
        until("every replica published", || async {
            cluster_of(&replicas[2]).await["replicas"]
                .as_array()
                .is_some_and(|r| r.len() == 3)
        })
        .await;
        let mut leading = 0.0;
        for r in &replicas {
            let m = r.scrape().await;
            assert_eq!(m.value("cutover_cluster_connected", &[]), 1.0);
            leading += m.value("cutover_cluster_leader", &[]);
            let switches = r.events_with("app", "manual").await;
            assert_eq!(switches.len(), 1, "{switches:#?}");
        }
        assert_eq!(leading, 1.0, "exactly one leader");

        let out = ctl(&[
            "--socket",
            &replicas[1].socket.display().to_string(),
            "status",
        ])
        .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stdout.contains("fleet: replica r2, connected to etcd"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("replica r1"), "{}", out.stdout);
        assert!(out.stdout.contains("(leader)"), "{}", out.stdout);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_changing_a_service_at_once_exactly_one_wins() {
    within(FLEET_BOUND, async {
        let etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let replicas = fleet(&etcd, 2, &app(&blue, &green, "", "")).await;
        let mut conflicts = 0;
        for round in 0..10u8 {
            let (a, b) = (10 + round, 60 + round);
            let (ra, rb) = tokio::join!(weights(&replicas[0], a), weights(&replicas[1], b));
            let codes = (ra.status, rb.status);
            let winner = match codes {
                (StatusCode::OK, StatusCode::CONFLICT) => a,
                (StatusCode::CONFLICT, StatusCode::OK) => b,
                // One after the other: the later one stands.
                (StatusCode::OK, StatusCode::OK) => {
                    let ga = ra.json()["service"]["generation"].as_u64().unwrap_or(0);
                    let gb = rb.json()["service"]["generation"].as_u64().unwrap_or(0);
                    if ga > gb {
                        a
                    } else {
                        b
                    }
                }
                _ => panic!("round {round}: {codes:?}: {} / {}", ra.text(), rb.text()),
            };
            for lost in [&ra, &rb]
                .into_iter()
                .filter(|r| r.status == StatusCode::CONFLICT)
            {
                conflicts += 1;
                assert_eq!(lost.json()["error"]["code"], "conflict", "{}", lost.text());
            }
            if codes.0 == codes.1 {
                continue;
            }
            // The winner's weight is what both replicas route by.
            for r in &replicas {
                until("the winner's weight everywhere", || async {
                    r.service("app").await["weights"]["green"] == winner
                })
                .await;
            }
        }
        assert!(conflicts > 0, "ten simultaneous pairs never raced");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_replicas_serve_and_refuse_changes_then_catch_up() {
    within(FLEET_BOUND, async {
        let mut etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let replicas = fleet(&etcd, 3, &app(&blue, &green, "", "")).await;
        let traffic: Vec<Traffic> = replicas
            .iter()
            .map(|r| Traffic::start(r.addr, 2, "/"))
            .collect();

        etcd.kill();
        for r in &replicas {
            until("cut off", || async {
                r.scrape().await.value("cutover_cluster_connected", &[]) == 0.0
            })
            .await;
            assert_eq!(cluster_of(r).await["connected"], false);
        }
        let refused = replicas[1].switch("app", json!({"to": "green"})).await;
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            refused.text()
        );
        assert_eq!(refused.json()["error"]["code"], "cluster_unavailable");
        assert_eq!(
            weights(&replicas[2], 10).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        for r in &replicas {
            assert_eq!(routed(r).await, "blue", "the last state is served");
        }

        etcd.resume().await;
        for r in &replicas {
            until("connected again", || async {
                cluster_of(r).await["connected"] == true
            })
            .await;
        }
        let reply = replicas[1].switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let committed = Instant::now();
        for r in &replicas {
            while routed(r).await != "green" {
                assert!(
                    committed.elapsed() < APPLIED,
                    "not applied within {APPLIED:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for t in &traffic {
            let tally = t.tally();
            assert_eq!(tally.failures, 0, "{tally:?}");
            assert_eq!(
                tally.by_status.keys().collect::<Vec<_>>(),
                vec![&200],
                "{tally:?}"
            );
            assert!(tally.from("blue") > 0, "{tally:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_member_of_three_down_costs_a_moment_of_refusals_at_most() {
    within(FLEET_BOUND, async {
        let mut members = Etcd::cluster(3).await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let mut replicas = Vec::new();
        for i in 1..=3 {
            let body = cluster_on(&members, &format!("r{i}")) + &app(&blue, &green, "", "");
            replicas.push(Cutover::start(&body).await);
        }
        for r in &replicas {
            until("connected", || async {
                cluster_of(r).await["connected"] == true
            })
            .await;
        }
        let traffic: Vec<Traffic> = replicas
            .iter()
            .map(|r| Traffic::start(r.addr, 1, "/"))
            .collect();

        members[0].kill();
        let killed = Instant::now();
        // Serving never stops; a replica whose member died refuses changes
        // until it has moved to another member (and etcd has a leader
        // again, when the dead member led): a moment, bounded here.
        let mut refused = 0;
        let mut first_accepted = None;
        for (i, r) in replicas.iter().enumerate() {
            let to = if i % 2 == 0 { "green" } else { "blue" };
            let reply = loop {
                let reply = r.switch("app", json!({"to": to})).await;
                if reply.status != StatusCode::SERVICE_UNAVAILABLE {
                    first_accepted.get_or_insert(killed.elapsed());
                    break reply;
                }
                refused += 1;
                assert!(
                    killed.elapsed() < MEMBER_LOSS,
                    "still refused {:?} after the member died",
                    killed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let committed = Instant::now();
            for other in &replicas {
                while routed(other).await != to {
                    assert!(
                        committed.elapsed() < APPLIED,
                        "not applied within {APPLIED:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        eprintln!(
            "one member of three killed: first switch accepted after {first_accepted:?}, {refused} refused before"
        );
        for t in &traffic {
            assert_eq!(t.tally().failures, 0, "{:?}", t.tally());
        }
        drop(replicas.drain(..));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_etcd_is_down_serves_its_local_copy_and_says_so() {
    within(FLEET_BOUND, async {
        let mut etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let mut replicas = fleet(&etcd, 1, &app(&blue, &green, "", "")).await;
        let r1 = replicas.remove(0);
        let reply = r1.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        // The local copy is written in the background.
        until("local copy written", || async {
            std::fs::read_to_string(r1.state_path()).is_ok_and(|s| s.contains("\"green\""))
        })
        .await;

        etcd.kill();
        let r1 = r1.restart().await;
        let c = cluster_of(&r1).await;
        assert_eq!(c["state_from"], "local_copy", "{c:#}");
        assert_eq!(c["connected"], false, "{c:#}");
        assert_eq!(routed(&r1).await, "green");
        let refused = r1.switch("app", json!({"to": "blue"})).await;
        assert_eq!(refused.json()["error"]["code"], "cluster_unavailable");

        etcd.resume().await;
        until("connected", || async {
            cluster_of(&r1).await["connected"] == true
        })
        .await;
        let reply = r1.switch("app", json!({"to": "blue"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(routed(&r1).await, "blue");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_under_the_prefix_are_named_and_the_replica_keeps_serving() {
    within(FLEET_BOUND, async {
        let etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let mut client = etcd.client().await;
        client
            .put("/fleet-test/state/app", "{not json", None)
            .await
            .expect("put");
        let newer = json!({"version": 99, "state": {"active": "green"}, "shape": "unknown"});
        client
            .put("/fleet-test/state/other", newer.to_string(), None)
            .await
            .expect("put");
        let body = cluster(&etcd, "bin")
            + &app(&blue, &green, "", "")
            + &service("other", &[blue.addr], &[green.addr]);
        let mut proxy = CutoverBinary::start(&body).await;
        let socket = proxy.socket.clone();
        until("connected", || async {
            let reply = socket_call(&socket, Method::GET, "/api/v1/status", None).await;
            reply.json()["cluster"]["connected"] == true
        })
        .await;
        let reply = socket_call(&proxy.socket, Method::GET, "/api/v1/status", None).await;
        let status = reply.json();
        // Neither value is used: both services start from the config.
        for s in status["services"].as_array().expect("services") {
            assert_eq!(s["active"], "blue", "{s:#}");
        }
        let echo = fetch(proxy.addr, "/").await.echo();
        assert_eq!(echo.upstream, "blue");

        // A corrupted value arriving while it runs changes nothing either.
        client
            .put("/fleet-test/state/app", "garbage", None)
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "blue");

        proxy.signal("TERM");
        proxy.wait_exit(Duration::from_secs(10)).await;
        let log = proxy.stderr();
        assert!(
            log.contains("etcd key /fleet-test/state/app: not a cutover release state"),
            "{log}"
        );
        assert!(
            log.contains("etcd key /fleet-test/state/other: written by a newer cutover (format 99"),
            "{log}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_at_start_is_named_and_the_config_is_served() {
    within(FLEET_BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let nobody = closed_port().await;
        let body = format!("[cluster]\netcd = [\"http://{nobody}\"]\nname = \"alone\"\n\n")
            + &app(&blue, &green, "", "");
        let mut proxy = CutoverBinary::start(&body).await;
        let reply = socket_call(&proxy.socket, Method::GET, "/api/v1/status", None).await;
        let status = reply.json();
        assert_eq!(status["cluster"]["state_from"], "local_copy", "{status:#}");
        assert_eq!(status["cluster"]["connected"], false, "{status:#}");
        assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "blue");
        let refused = socket_call(
            &proxy.socket,
            Method::POST,
            "/api/v1/services/app/switch",
            Some(json!({"to": "green"})),
        )
        .await;
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        proxy.signal("TERM");
        proxy.wait_exit(Duration::from_secs(10)).await;
        let log = proxy.stderr();
        assert!(log.contains("etcd unreachable at start"), "{log}");
        assert!(log.contains(&format!("http://{nobody}")), "{log}");
    })
    .await;
}

/// Two short canary stages judged on few requests.
const STAGES: &str = "\
[[service.app.canary.stages]]
weight = 20
hold = \"1s\"
min_requests = 10
max_error_rate = 0.05
max_p99 = \"1s\"

[[service.app.canary.stages]]
weight = 50
hold = \"4s\"
min_requests = 10
max_error_rate = 0.05
max_p99 = \"1s\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_during_a_canary_another_replica_promotes_it_once() {
    within(FLEET_BOUND, async {
        let etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let mut replicas = fleet(&etcd, 3, &app(&blue, &green, "", STAGES)).await;
        let _traffic: Vec<Traffic> = replicas
            .iter()
            .map(|r| Traffic::start(r.addr, 1, "/"))
            .collect();
        let first = leader(&replicas[0]).await;
        // Started on a replica that does not lead: the leader takes it up.
        let follower = replicas
            .iter()
            .position(|r| cluster_of_name(r) != first)
            .expect("a follower");
        let reply = admin_post(
            replicas[follower].admin,
            "/api/v1/services/app/canary",
            json!({}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        // At the second stage, the leader dies (its lease is not revoked).
        for r in &replicas {
            until("second stage", || async {
                r.service("app").await["weights"]["green"] == 50
            })
            .await;
        }
        let at = replicas
            .iter()
            .position(|r| cluster_of_name(r) == first)
            .expect("the leader");
        let dead = replicas.remove(at);
        let died = Instant::now();
        drop(dead.stop().await);

        until("another leader", || async {
            cluster_of(&replicas[0]).await["leader"]
                .as_str()
                .is_some_and(|l| l != first)
        })
        .await;
        let failover = died.elapsed();
        assert!(
            failover < TTL + Duration::from_secs(1),
            "failover took {failover:?}"
        );

        for r in &replicas {
            until("promoted", || async {
                r.service("app").await["active"] == "green"
            })
            .await;
        }
        // Let a second judgment show, if one were made.
        tokio::time::sleep(Duration::from_millis(800)).await;
        for r in &replicas {
            let promotions = r.events_with("app", "canary").await;
            assert_eq!(promotions.len(), 1, "{promotions:#?}");
            assert_eq!(promotions[0]["actor"], "auto");
            assert_eq!(routed(r).await, "green");
        }
        eprintln!("leader failover {failover:?} (lease ttl {TTL:?})");
    })
    .await;
}

/// The replica's name as the test named it (`r1`...), from its config.
fn cluster_of_name(proxy: &Cutover) -> String {
    let text = std::fs::read_to_string(proxy.config_path()).expect("config");
    text.lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .expect("a cluster name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_failing_only_on_a_followers_traffic_is_rolled_back_by_the_fleet() {
    within(FLEET_BOUND, async {
        let etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let rollback = "[service.app.rollback]\nmax_error_rate = 0.05\nmax_p99 = \"2s\"\n\
                        window = \"20s\"\nmin_requests = 20\ncooldown = \"1h\"\nmax_per_hour = 3\n\n";
        let replicas = fleet(&etcd, 3, &app(&blue, &green, "", rollback)).await;
        let first = leader(&replicas[0]).await;
        let follower = replicas
            .iter()
            .find(|r| cluster_of_name(r) != first)
            .expect("a follower");

        let reply = follower.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        green.set_failing(true);
        // Only the follower carries traffic: the leader's own counters
        // stay at zero, and it judges the fleet's sum.
        let traffic = Traffic::start(follower.addr, 2, "/");
        for r in &replicas {
            until("rolled back", || async { r.service("app").await["active"] == "blue" }).await;
        }
        let rollbacks = follower.events_with("app", "auto_rollback").await;
        assert_eq!(rollbacks.len(), 1, "{rollbacks:#?}");
        assert_eq!(rollbacks[0]["detail"]["criterion"], "max_error_rate");
        assert!(traffic.tally().from("green") >= 1);
        let leader_proxy = replicas
            .iter()
            .find(|r| cluster_of_name(r) == first)
            .expect("leader");
        let own = leader_proxy
            .scrape()
            .await
            .get("cutover_requests_total", &[("service", "app"), ("pool", "green"), ("code", "500")]);
        assert_eq!(own.unwrap_or(0.0), 0.0, "the leader saw no failing request itself");
    })
    .await;
}

/// Commit-to-applied over 100 switches on three replicas: from the
/// switch's answer on one replica (the commit is done; the others' watch
/// may have fired already) and from the request's start (an upper bound:
/// it includes the commit) to the others publishing the new active pool. Run with
/// `cargo test --release --test it fleet::commit_to_applied -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand, with --nocapture"]
async fn commit_to_applied_over_100_switches() {
    let etcd = Etcd::start().await;
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let replicas = fleet(&etcd, 3, &app(&blue, &green, "", "")).await;
    let (mut lags, mut from_sent) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let to = if i % 2 == 0 { "green" } else { "blue" };
        let sent = Instant::now();
        let reply = replicas[0]
            .switch("app", json!({"to": to, "force": true}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let committed = Instant::now();
        let mut pending: Vec<&Cutover> = replicas[1..].iter().collect();
        while !pending.is_empty() {
            let mut left = Vec::new();
            for r in pending {
                let svc = r.control.service("app").await.expect("app");
                if svc.active.as_str() == to {
                    lags.push(committed.elapsed());
                    from_sent.push(sent.elapsed());
                } else {
                    left.push(r);
                }
            }
            pending = left;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    for (what, mut lags) in [("switch answered", lags), ("switch sent", from_sent)] {
        lags.sort();
        let pct = |p: usize| lags[(lags.len() * p / 100).min(lags.len() - 1)];
        eprintln!(
            "applied on another replica, from the {what}, over {} applications (100 switches, 2 other replicas): p50 {:?}, p99 {:?}, max {:?}",
            lags.len(),
            pct(50),
            pct(99),
            lags[lags.len() - 1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_history_under_the_prefix_is_pruned_to_the_newest_thousand() {
    within(FLEET_BOUND, async {
        let etcd = Etcd::start().await;
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let mut client = etcd.client().await;
        // 1,100 old events, oldest first by key.
        for chunk in 0..11 {
            let ops: Vec<etcd_client::TxnOp> = (0..100)
                .map(|i| {
                    let key = format!("/fleet-test/events/{:020}-old", chunk * 100 + i);
                    etcd_client::TxnOp::put(key, "{}", None)
                })
                .collect();
            client
                .txn(etcd_client::Txn::new().and_then(ops))
                .await
                .expect("txn");
        }
        let replicas = fleet(&etcd, 1, &app(&blue, &green, "", "")).await;
        // Enough commits from one replica to prune once.
        for i in 0..64u8 {
            let reply = weights(&replicas[0], i % 2 * 10 + 1).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
        let count = || {
            let mut client = client.clone();
            async move {
                let options = etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only();
                client
                    .get("/fleet-test/events/", Some(options))
                    .await
                    .expect("count")
                    .count()
            }
        };
        until("pruned to 1,000", || async { count().await == 1000 }).await;
        // The oldest went; the replica's own events stayed.
        let mut c = client.clone();
        let first = c
            .get(
                "/fleet-test/events/",
                Some(etcd_client::GetOptions::new().with_prefix().with_limit(1)),
            )
            .await
            .expect("get");
        let key = String::from_utf8_lossy(first.kvs()[0].key()).into_owned();
        assert_eq!(key, format!("/fleet-test/events/{:020}-old", 164), "{key}");
    })
    .await;
}
