use super::render::render;
use super::*;
use clap::Parser as _;
use serde_json::json;

fn parse(line: &[&str]) -> Result<CtlArgs, clap::Error> {
    let argv = ["cutover", "ctl"].iter().chain(line).copied();
    match crate::cli::Cli::try_parse_from(argv)?.command {
        crate::cli::Command::Ctl(args) => Ok(args),
        other => panic!("parsed as {other:?}"),
    }
}

fn call(line: &[&str]) -> Call {
    call_for(&parse(line).expect("valid command line").command)
}

fn sample_status() -> Value {
    json!({"generation": 7,
     "services": [{"name": "agent", "active": "blue", "standby": "green", "generation": 7,
       "weights": {"blue": 100, "green": 0},
       "last_switch": {"time": "2026-11-22T10:00:00Z", "from": "green", "to": "blue",
                       "reason": "manual", "actor": "socket"},
       "pools": {"blue": {"inflight": 3, "draining": 0,
                          "servers": [{"address": "127.0.0.1:5000", "healthy": true, "version": "1.4.1"}]},
                 "green": {"inflight": 0, "draining": 0,
                           "servers": [{"address": "127.0.0.1:5001", "healthy": false, "version": null}]}},
       "canary": null, "watch": null}]})
}

fn ok(body: Value) -> Answer {
    Answer {
        status: StatusCode::OK,
        body,
    }
}

#[test]
fn each_command_builds_its_method_path_and_body() {
    let cases: Vec<(&[&str], Method, &str, Option<Value>)> = vec![
        (&["status"], Method::GET, "/api/v1/status", None),
        (
            &["status", "agent"],
            Method::GET,
            "/api/v1/services/agent",
            None,
        ),
        (
            &["switch", "agent"],
            Method::POST,
            "/api/v1/services/agent/switch",
            Some(json!({})),
        ),
        (
            &[
                "switch",
                "agent",
                "--to",
                "green",
                "--expect-version",
                "1.4.2",
                "--force",
            ],
            Method::POST,
            "/api/v1/services/agent/switch",
            Some(json!({"to": "green", "expect_version": "1.4.2", "force": true})),
        ),
        (
            &["rollback", "agent"],
            Method::POST,
            "/api/v1/services/agent/rollback",
            None,
        ),
        (
            &["wait-drained", "agent"],
            Method::GET,
            "/api/v1/services/agent/drained?wait=60s",
            None,
        ),
        (
            &["weight", "agent", "25"],
            Method::PUT,
            "/api/v1/services/agent/weights",
            Some(json!({"standby": 25})),
        ),
        (
            &["canary", "agent", "start"],
            Method::POST,
            "/api/v1/services/agent/canary",
            None,
        ),
        (
            &["canary", "agent", "abort"],
            Method::DELETE,
            "/api/v1/services/agent/canary",
            None,
        ),
        (&["events"], Method::GET, "/api/v1/events", None),
        (
            &["events", "agent"],
            Method::GET,
            "/api/v1/events?service=agent",
            None,
        ),
        (&["reload"], Method::POST, "/api/v1/reload", None),
    ];
    for (line, method, path, body) in cases {
        let c = call(line);
        assert_eq!(
            (&c.method, c.path.as_str(), &c.body),
            (&method, path, &body),
            "{line:?}"
        );
    }
}

#[test]
fn wait_drained_timeout_sets_query_and_call_deadline() {
    let c = call(&["wait-drained", "agent", "--timeout", "2m"]);
    assert_eq!(c.path, "/api/v1/services/agent/drained?wait=120s");
    assert_eq!(c.timeout, Duration::from_secs(125));
    let c = call(&["wait-drained", "agent", "--timeout", "1500ms"]);
    assert_eq!(c.path, "/api/v1/services/agent/drained?wait=1500ms");
    assert_eq!(call(&["status"]).timeout, CALL_TIMEOUT);
}

#[test]
fn service_names_are_percent_encoded() {
    assert_eq!(
        call(&["rollback", "a b/c"]).path,
        "/api/v1/services/a%20b%2Fc/rollback"
    );
    assert_eq!(
        call(&["events", "a&b"]).path,
        "/api/v1/events?service=a%26b"
    );
}

#[test]
fn weight_accepts_0_to_100_and_rejects_the_rest() {
    assert_eq!(parse_percent("0"), Ok(0));
    assert_eq!(parse_percent("100"), Ok(100));
    assert_eq!(parse_percent("25%"), Ok(25));
    for bad in ["101", "-1", "12.5", "", "half", "256"] {
        assert!(parse_percent(bad).is_err(), "{bad:?}");
    }
    let err = parse(&["weight", "agent", "101"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn bad_usage_is_a_clap_error() {
    for line in [
        &["switch", "agent", "--to", "red"][..],
        &["canary", "agent", "pause"],
        &["--socket", "a.sock", "--admin", "http://x", "status"],
        &["--token", "t", "--token-file", "f", "status"],
        &["wait-drained", "agent", "--timeout", "soon"],
        &["rollback"],
    ] {
        assert_eq!(parse(line).unwrap_err().exit_code(), 2, "{line:?}");
    }
}

#[test]
fn global_options_go_before_or_after_the_command() {
    let a = parse(&["status", "--json", "--socket", "x.sock"]).unwrap();
    assert!(a.json);
    assert_eq!(a.socket, Some(PathBuf::from("x.sock")));
}

#[test]
fn status_text_shows_every_part_of_a_service() {
    let out = render(
        &CtlCommand::Status { service: None },
        false,
        &ok(sample_status()),
    );
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        "agent: active blue, standby green (generation 7)\n\
         \x20 weights: blue 100%, green 0%\n\
         \x20 pool blue (active): 3 in flight, 0 draining\n\
         \x20   127.0.0.1:5000  healthy  version 1.4.1\n\
         \x20 pool green (standby): 0 in flight, 0 draining\n\
         \x20   127.0.0.1:5001  unhealthy  version unknown\n\
         \x20 last switch: 2026-11-22T10:00:00Z green → blue (manual, socket)\n"
    );
}

#[test]
fn status_of_one_service_shows_canary_and_watch_when_set() {
    let mut svc = sample_status()["services"][0].clone();
    svc["canary"] = json!({"stage": 1, "stages": 3, "weight": 5, "held_ms": 30_000,
        "hold_ms": 300_000, "requests": 40, "min_requests": 50, "error_rate": 0.025, "p99_ms": 12});
    svc["watch"] =
        json!({"pool": "green", "until": "2026-11-22T10:01:00Z", "remaining_ms": 45_500});
    let command = CtlCommand::Status {
        service: Some("agent".into()),
    };
    let out = render(&command, false, &ok(svc));
    assert!(
        out.stdout.starts_with("agent: active blue"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "  canary: stage 2 of 3, green at 5%, held 30s of 5m, 40 of 50 requests, \
             error rate 2.5%, p99 12ms\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  watch: green until 2026-11-22T10:01:00Z (45s left)\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn json_flag_prints_the_answer_pretty() {
    let body = sample_status();
    let out = render(
        &CtlCommand::Status { service: None },
        true,
        &ok(body.clone()),
    );
    assert_eq!(
        out.stdout,
        serde_json::to_string_pretty(&body).unwrap() + "\n"
    );
}

#[test]
fn events_render_one_line_each() {
    let body = json!({"events": [
        {"time": "2026-11-22T10:00:00Z", "service": "agent", "from": "blue", "to": "green",
         "reason": "manual", "actor": "api", "detail": {}},
        {"time": "2026-11-22T10:05:00Z", "service": null, "from": null, "to": null,
         "reason": "reload", "actor": "signal", "detail": {"generation": 9}},
    ]});
    let out = render(
        &CtlCommand::Events { service: None },
        false,
        &ok(body.clone()),
    );
    assert_eq!(
        out.stdout,
        "2026-11-22T10:00:00Z agent blue → green manual api\n\
         2026-11-22T10:05:00Z - - → - reload signal generation=9\n"
    );
    // A bare array is read the same way.
    let bare = ok(body["events"].clone());
    assert_eq!(
        render(&CtlCommand::Events { service: None }, false, &bare).stdout,
        out.stdout
    );
}

#[test]
fn switch_summary_names_both_pools_and_the_generation() {
    let mut svc = sample_status()["services"][0].clone();
    svc["active"] = json!("green");
    svc["standby"] = json!("blue");
    svc["last_switch"] = json!({"time": "2026-11-22T10:00:00Z", "from": "blue", "to": "green",
                                "reason": "manual", "actor": "api"});
    let body = json!({"generation": 8, "changed": true, "service": svc, "persisted": true});
    let command = parse(&["switch", "agent"]).unwrap().command;
    let out = render(&command, false, &ok(body.clone()));
    assert_eq!(out.stdout, "agent: switched blue → green (generation 8)\n");
    let command = parse(&["rollback", "agent"]).unwrap().command;
    let out = render(&command, false, &ok(body));
    assert_eq!(
        out.stdout,
        "agent: rolled back blue → green (generation 8)\n"
    );
}

#[test]
fn switch_to_the_active_pool_says_nothing_changed() {
    let svc = sample_status()["services"][0].clone();
    let body = json!({"generation": 7, "changed": false, "service": svc});
    let command = parse(&["switch", "agent", "--to", "blue"]).unwrap().command;
    let out = render(&command, false, &ok(body));
    assert_eq!(
        out.stdout,
        "agent: already on blue, nothing changed (generation 7)\n"
    );
}

#[test]
fn weight_summary_shows_the_split() {
    let mut svc = sample_status()["services"][0].clone();
    svc["weights"] = json!({"blue": 75, "green": 25});
    let body = json!({"generation": 9, "changed": true, "service": svc, "persisted": false});
    let command = parse(&["weight", "agent", "25"]).unwrap().command;
    let out = render(&command, false, &ok(body));
    assert_eq!(
        out.stdout,
        "agent: weights green 25%, blue 75% (generation 9) \
         [warning: not saved to the state file; lost on restart]\n"
    );
}

#[test]
fn refused_answer_prints_code_and_message_and_exits_1() {
    let answer = Answer {
        status: StatusCode::CONFLICT,
        body: json!({"error": {"code": "target_unhealthy", "message": "green has no healthy server"}}),
    };
    let command = parse(&["switch", "agent"]).unwrap().command;
    let out = render(&command, false, &answer);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "cutover ctl: refused: target_unhealthy: green has no healthy server\n"
    );
    // With --json the error body also goes to stdout for scripts.
    let out = render(&command, true, &answer);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("\"target_unhealthy\""));
}

#[test]
fn refused_answer_without_error_shape_names_the_status() {
    let answer = Answer {
        status: StatusCode::BAD_GATEWAY,
        body: Value::Null,
    };
    let out = render(&CtlCommand::Reload, false, &answer);
    assert_eq!(out.stderr, "cutover ctl: refused: HTTP 502: Bad Gateway\n");
    let answer = Answer {
        status: StatusCode::UNAUTHORIZED,
        body: json!({"error": {"code": "unauthorized", "message": "missing token"}}),
    };
    let out = render(&CtlCommand::Reload, false, &answer);
    assert!(out.stderr.contains("hint: pass --token"), "{}", out.stderr);
}

#[test]
fn wait_drained_exits_1_when_not_drained() {
    let command = parse(&["wait-drained", "agent"]).unwrap().command;
    let out = render(
        &command,
        false,
        &ok(json!({"drained": true, "inflight": 0})),
    );
    assert_eq!((out.code, out.stdout.as_str()), (0, "agent: drained\n"));
    let out = render(
        &command,
        false,
        &ok(json!({"drained": false, "inflight": 4})),
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (1, "agent: not drained, 4 in flight\n")
    );
    let out = render(
        &command,
        true,
        &ok(json!({"drained": false, "inflight": 4})),
    );
    assert_eq!(out.code, 1);
}

#[test]
fn admin_url_gives_connect_address_host_and_prefix() {
    let url = parse_admin_url("http://127.0.0.1:9090").unwrap();
    assert_eq!(
        (url.connect.as_str(), url.host.as_str(), url.prefix.as_str()),
        ("127.0.0.1:9090", "127.0.0.1:9090", "")
    );
    let url = parse_admin_url("localhost:9090/admin/").unwrap();
    assert_eq!(
        (url.connect.as_str(), url.prefix.as_str()),
        ("localhost:9090", "/admin")
    );
    let url = parse_admin_url("http://[::1]").unwrap();
    assert_eq!(
        (url.connect.as_str(), url.host.as_str()),
        ("[::1]:80", "[::1]")
    );
    assert!(parse_admin_url("https://example.com").is_err());
}

#[test]
fn token_comes_from_option_then_file_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    std::fs::write(&file, "  from-file\n").unwrap();
    let args = parse(&["--admin", "http://127.0.0.1:1", "--token", "opt", "status"]).unwrap();
    let t = Target::resolve(&args, Some("env".into())).unwrap();
    assert_eq!(t.token.as_deref(), Some("opt"));
    let file_arg = file.to_str().unwrap();
    let args = parse(&["--admin", "127.0.0.1:1", "--token-file", file_arg, "status"]).unwrap();
    let t = Target::resolve(&args, Some("env".into())).unwrap();
    assert_eq!(t.token.as_deref(), Some("from-file"));
    let args = parse(&["--socket", "x.sock", "status"]).unwrap();
    let t = Target::resolve(&args, Some("env".into())).unwrap();
    assert_eq!(t.token.as_deref(), Some("env"));
    assert_eq!(t.endpoint, Endpoint::Socket(PathBuf::from("x.sock")));
    let t = Target::resolve(&args, None).unwrap();
    assert_eq!(t.token, None);
}

#[test]
fn request_carries_host_and_bearer_token() {
    let target = Target {
        endpoint: Endpoint::Socket(PathBuf::from("x.sock")),
        token: Some("s3cret".into()),
    };
    let req = build_request(&target, &call(&["weight", "agent", "5"])).unwrap();
    assert_eq!(req.headers()[header::HOST], "localhost");
    assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer s3cret");
    assert_eq!(req.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(req.uri(), "/api/v1/services/agent/weights");
    let target = Target {
        endpoint: Endpoint::Tcp(parse_admin_url("http://127.0.0.1:9090/x").unwrap()),
        token: None,
    };
    let req = build_request(&target, &call(&["status"])).unwrap();
    assert_eq!(req.headers()[header::HOST], "127.0.0.1:9090");
    assert_eq!(req.uri(), "/x/api/v1/status");
    assert!(req.headers().get(header::AUTHORIZATION).is_none());
}

#[test]
fn an_answer_that_is_not_the_expected_shape_is_printed_as_it_came_and_exits_1() {
    let body = json!({"services": "not a list"});
    let out = render(
        &CtlCommand::Status { service: None },
        false,
        &ok(body.clone()),
    );
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        serde_json::to_string_pretty(&body).unwrap() + "\n"
    );
    assert!(out.stderr.contains("is not a status"), "{}", out.stderr);
}

#[test]
fn deploy_needs_an_image_unless_it_aborts_or_follows() {
    let args = parse(&["deploy", "app", "--image", "app:2", "--keep-old", "1m"]).unwrap();
    let CtlCommand::Deploy(d) = args.command else {
        panic!("not a deploy: {:?}", args.command);
    };
    assert_eq!(d.image.as_deref(), Some("app:2"));
    assert_eq!(d.keep_old, Duration::from_secs(60));
    assert_eq!(d.timeout, Duration::from_secs(300));
    assert!(parse(&["deploy", "app"]).is_err(), "no image");
    assert!(parse(&["deploy", "app", "--image", "x", "--abort"]).is_err());
    let abort = call(&["deploy", "app", "--abort"]);
    assert_eq!(abort.method, Method::DELETE);
    assert_eq!(abort.path, "/api/v1/services/app/deploy");
    assert!(parse(&["deploy", "app", "--follow"]).is_ok());
}

#[test]
fn a_deploy_step_prints_its_elapsed_time() {
    let step = crate::wire::DeployStep {
        step: "create".into(),
        elapsed_ms: 1234,
        message: "created 2 container(s)".into(),
        outcome: None,
    };
    assert_eq!(
        super::deploy::text(&step),
        "    1.2s  create       created 2 container(s)\n"
    );
}
