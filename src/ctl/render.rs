//! What `cutover ctl` prints: the answer, decoded into its [`crate::wire`]
//! type, as text (a summary line for a change, a block per service for
//! status, a line per event) or, with `--json`, the server's JSON as it
//! came, pretty-printed; the refusal of a 4xx/5xx answer; and the exit code.

use std::fmt::Write as _;

use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_json::Value;

use super::{Answer, CanaryAction, CtlCommand, Outcome};
use crate::config::PoolName;
use crate::wire::{
    Applied, CanaryStatus, ClusterStatus, DockerStatus, Drained, ErrorAnswer, Event, ServiceStatus,
    Status, WatchStatus,
};

/// What to print for `answer`, and the exit code.
pub(super) fn render(command: &CtlCommand, as_json: bool, answer: &Answer) -> Outcome {
    let mut out = Outcome::default();
    if as_json && !answer.body.is_null() {
        out.stdout = pretty(&answer.body);
    }
    if !answer.status.is_success() {
        out.code = 1;
        out.stderr = refusal(answer);
        return out;
    }
    match render_text(command, &answer.body) {
        Ok((text, code)) => {
            out.code = code;
            if !as_json {
                out.stdout = text;
            }
        }
        Err(unreadable) => {
            out.code = 1;
            if !as_json {
                out.stdout = pretty(&answer.body);
            }
            out.stderr = unreadable;
        }
    }
    out
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// Reads `body` as a `T`; the message says what was expected when it is not.
fn decode<T: DeserializeOwned>(body: &Value, what: &str) -> Result<T, String> {
    T::deserialize(body).map_err(|e| {
        format!("cutover ctl: the admin API's answer is not {what} ({e}); printed as it came\n")
    })
}

/// `cutover ctl: refused: CODE: MESSAGE`, plus any listed details.
fn refusal(answer: &Answer) -> String {
    let status = answer.status;
    let mut s = match ErrorAnswer::deserialize(&answer.body) {
        Ok(ErrorAnswer { error }) => {
            let mut s = format!("cutover ctl: refused: {}: {}\n", error.code, error.message);
            // A refused reload lists every config error; one per line.
            for item in &error.errors {
                let _ = writeln!(s, "  {item}");
            }
            s
        }
        Err(_) => {
            let message = match &answer.body {
                Value::Null => status
                    .canonical_reason()
                    .unwrap_or("no reason given")
                    .into(),
                other => text(other),
            };
            format!(
                "cutover ctl: refused: HTTP {}: {message}\n",
                status.as_u16()
            )
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        s.push_str("hint: pass --token T or --token-file PATH, or set CUTOVER_TOKEN\n");
    }
    s
}

/// The human-readable answer to a successful call, and the exit code.
fn render_text(command: &CtlCommand, body: &Value) -> Result<(String, u8), String> {
    let change = || decode::<Applied>(body, "the answer to a change");
    let text = match command {
        CtlCommand::Status { service: Some(_) } => {
            render_service(&decode(body, "a service's status")?)
        }
        CtlCommand::Status { service: None } => render_status(&decode(body, "a status")?),
        CtlCommand::Switch { service, .. } => summary(service, "switched", &change()?),
        CtlCommand::Rollback { service } => summary(service, "rolled back", &change()?),
        CtlCommand::WaitDrained { service, .. } => {
            let drained: Drained = decode(body, "a drained answer")?;
            return Ok((
                render_drained(service, &drained),
                u8::from(!drained.drained),
            ));
        }
        CtlCommand::Weight { service, percent } => render_weight(service, *percent, &change()?),
        CtlCommand::Canary { service, action } => render_canary(service, *action, &change()?),
        CtlCommand::Events { .. } => render_events(&events(body)?),
        CtlCommand::Deploy(_) => {
            let d: crate::wire::DeployStatus = decode(body, "a deploy")?;
            format!("deploy of {} to pool {}: abort asked for\n", d.image, d.to)
        }
        CtlCommand::Reload => {
            let applied = change()?;
            format!(
                "reloaded{}{}\n",
                generation_note(&applied),
                persist_note(&applied)
            )
        }
    };
    Ok((text, 0))
}

/// A list of events: bare, or as the `events` member of an object.
fn events(body: &Value) -> Result<Vec<Event>, String> {
    #[derive(serde::Deserialize)]
    struct Wrapped {
        events: Vec<Event>,
    }
    match Vec::<Event>::deserialize(body) {
        Ok(events) => Ok(events),
        Err(_) => decode::<Wrapped>(body, "a list of events").map(|w| w.events),
    }
}

/// Every service, one block each, separated by blank lines; then the
/// Docker provider's block, when it runs.
fn render_status(status: &Status) -> String {
    let mut blocks: Vec<String> = status.services.iter().map(render_service).collect();
    if blocks.is_empty() {
        blocks.push("no services\n".to_owned());
    }
    if let Some(docker) = &status.docker {
        blocks.push(render_docker(docker));
    }
    if let Some(cluster) = &status.cluster {
        blocks.push(render_cluster(cluster));
    }
    blocks.join("\n")
}

/// The fleet: this replica, whether it reaches etcd, the leader, then each
/// replica with the generation it applied and when it was last seen.
fn render_cluster(cluster: &ClusterStatus) -> String {
    let mut s = String::new();
    let link = if cluster.connected {
        "connected to etcd"
    } else {
        "CUT OFF from etcd (serving the last state; changes refused)"
    };
    let leader = cluster.leader.as_deref().unwrap_or("none");
    let _ = writeln!(
        s,
        "fleet: replica {}, {link}, leader {leader}",
        cluster.name
    );
    if cluster.state_from == "local_copy" {
        let _ = writeln!(s, "  started from the local copy (etcd was unreachable)");
    }
    for r in &cluster.replicas {
        let mark = if Some(&r.name) == cluster.leader.as_ref() {
            " (leader)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  replica {}{mark}: generation {}, last seen {}",
            r.name, r.generation, r.last_seen
        );
    }
    s
}

/// The Docker provider: its engine, then each container with what it
/// serves, ignores and gets wrong.
fn render_docker(docker: &DockerStatus) -> String {
    let mut s = String::new();
    let state = if docker.connected {
        "connected".to_owned()
    } else {
        format!(
            "unreachable ({})",
            docker.error.as_deref().unwrap_or("no answer")
        )
    };
    let _ = writeln!(s, "docker: {} {state}", docker.endpoint);
    for c in &docker.containers {
        let serves = if c.services.is_empty() {
            "no service".to_owned()
        } else {
            c.services.join(", ")
        };
        let _ = writeln!(s, "  container {} ({}): {serves}", c.name, c.id);
        if !c.ignored_labels.is_empty() {
            let _ = writeln!(s, "    ignored labels: {}", c.ignored_labels.join(", "));
        }
        for issue in &c.issues {
            let _ = writeln!(s, "    label {}: {}", issue.label, issue.message);
        }
    }
    s
}

/// One service's block.
fn render_service(svc: &ServiceStatus) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: active {}, standby {} (generation {})",
        svc.name, svc.active, svc.standby, svc.generation
    );
    let weights: Vec<String> = svc
        .weights
        .iter()
        .map(|(pool, w)| format!("{pool} {w}%"))
        .collect();
    let _ = writeln!(s, "  weights: {}", weights.join(", "));
    for (name, pool) in &svc.pools {
        let role = if *name == svc.active {
            " (active)"
        } else if *name == svc.standby {
            " (standby)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  pool {name}{role}: {} in flight, {} draining",
            pool.inflight, pool.draining
        );
        for server in &pool.servers {
            let health = match server.state {
                Some(state) => state.as_str(),
                None if server.healthy => "healthy",
                None => "unhealthy",
            };
            let _ = write!(s, "    {}  {health}", server.address);
            if let Some(container) = &server.container {
                let _ = write!(s, "  container {container}");
            }
            match &server.version {
                None => s.push_str("  version unknown"),
                Some(v) => {
                    let _ = write!(s, "  version {v}");
                }
            }
            if let Some(err) = &server.last_error {
                let _ = write!(s, "  ({err})");
            }
            s.push('\n');
        }
    }
    if let Some(d) = &svc.deploy {
        let state = d.outcome.map_or(d.phase.as_str(), |o| o.as_str());
        let version = d
            .version
            .as_deref()
            .map_or_else(String::new, |v| format!(" (version {v})"));
        let _ = write!(
            s,
            "  deploy: {}{version} to pool {}, {state}",
            d.image, d.to
        );
        if let Some(last) = d.steps.last() {
            let _ = write!(s, "; {}: {}", last.step, last.message);
        }
        s.push('\n');
    }
    match &svc.last_switch {
        Some(e) => {
            let _ = writeln!(
                s,
                "  last switch: {} {} → {} ({}, {})",
                e.time,
                pool_text(e.from),
                pool_text(e.to),
                e.reason.as_str(),
                e.actor.as_str()
            );
        }
        None => s.push_str("  last switch: none\n"),
    }
    if let Some(canary) = &svc.canary {
        let _ = writeln!(s, "  canary: {}", canary_line(svc.standby, canary));
    }
    if let Some(watch) = &svc.watch {
        let _ = writeln!(s, "  watch: {}", watch_line(watch));
    }
    s
}

/// `stage 2 of 3, green at 25%, held 30s of 5m, 40 of 50 requests, error rate 0.0%, p99 12ms`.
fn canary_line(standby: PoolName, c: &CanaryStatus) -> String {
    let secs = |ms: u64| humantime::format_duration(std::time::Duration::from_secs(ms / 1000));
    format!(
        "stage {} of {}, {standby} at {}%, held {} of {}, {} of {} requests, error rate {:.1}%, p99 {}ms",
        c.stage + 1,
        c.stages,
        c.weight,
        secs(c.held_ms),
        secs(c.hold_ms),
        c.requests,
        c.min_requests,
        c.error_rate * 100.0,
        c.p99_ms
    )
}

/// `green until 2026-11-22T10:01:00Z (45s left)`.
fn watch_line(w: &WatchStatus) -> String {
    let left = humantime::format_duration(std::time::Duration::from_secs(w.remaining_ms / 1000));
    format!("{} until {} ({left} left)", w.pool, w.until)
}

/// ` (generation N)`.
fn generation_note(applied: &Applied) -> String {
    format!(" (generation {})", applied.generation)
}

/// A warning when the server says the change did not reach the state file.
fn persist_note(applied: &Applied) -> String {
    if applied.persisted {
        String::new()
    } else {
        " [warning: not saved to the state file; lost on restart]".to_owned()
    }
}

/// `agent: switched blue → green (generation 8)` and its variants.
fn summary(service: &str, verb: &str, applied: &Applied) -> String {
    let generation = generation_note(applied);
    let persisted = persist_note(applied);
    let Some(svc) = &applied.service else {
        return format!("{service}: {verb}{generation}{persisted}\n");
    };
    let active = svc.active;
    if !applied.changed {
        return format!("{service}: already on {active}, nothing changed{generation}{persisted}\n");
    }
    // The pool we left: the last switch's, when that switch is the one that
    // made `active` active.
    let from = svc
        .last_switch
        .as_ref()
        .filter(|e| e.to == Some(active))
        .and_then(|e| e.from);
    match from {
        Some(from) if from != active => {
            format!("{service}: {verb} {from} → {active}{generation}{persisted}\n")
        }
        _ => format!("{service}: {verb}, active {active}{generation}{persisted}\n"),
    }
}

fn render_drained(service: &str, drained: &Drained) -> String {
    if drained.drained {
        format!("{service}: drained\n")
    } else {
        format!("{service}: not drained, {} in flight\n", drained.inflight)
    }
}

fn render_weight(service: &str, percent: u8, applied: &Applied) -> String {
    let split = match &applied.service {
        Some(svc) => format!(
            "{} {}%, {} {}%",
            svc.standby,
            svc.weight(svc.standby),
            svc.active,
            svc.weight(svc.active)
        ),
        None => format!("standby {percent}%"),
    };
    format!(
        "{service}: weights {split}{}{}\n",
        generation_note(applied),
        persist_note(applied)
    )
}

fn render_canary(service: &str, action: CanaryAction, applied: &Applied) -> String {
    let verb = match action {
        CanaryAction::Start => "canary started",
        CanaryAction::Abort => "canary aborted",
    };
    let mut s = format!("{service}: {verb}{}", generation_note(applied));
    let running = applied.service.as_ref().and_then(|svc| {
        let canary = svc.canary.as_ref()?;
        Some(canary_line(svc.standby, canary))
    });
    if let Some(line) = running {
        let _ = write!(s, "; canary: {line}");
    }
    s.push_str(&persist_note(applied));
    s.push('\n');
    s
}

/// One line per event: `TIME service from → to reason actor [detail]`.
fn render_events(events: &[Event]) -> String {
    if events.is_empty() {
        return "no events\n".to_owned();
    }
    let mut s = String::new();
    for e in events {
        let _ = write!(
            s,
            "{} {} {} → {} {} {}",
            e.time,
            e.service.as_deref().unwrap_or("-"),
            pool_text(e.from),
            pool_text(e.to),
            e.reason.as_str(),
            e.actor.as_str()
        );
        let empty = e.detail.is_null() || e.detail.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            let _ = write!(s, " {}", fields(&e.detail));
        }
        s.push('\n');
    }
    s
}

fn pool_text(pool: Option<PoolName>) -> &'static str {
    pool.map_or("-", PoolName::as_str)
}

/// A scalar as text: strings unquoted, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An event's free-form detail as `key=value` pairs (nested values as
/// compact JSON).
fn fields(v: &Value) -> String {
    match v.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) | Value::Array(_) => format!("{k}={v}"),
                _ => format!("{k}={}", text(v)),
            })
            .collect::<Vec<_>>()
            .join(" "),
        None => text(v),
    }
}
