//! What `cutover ctl` prints: the answer as text (a summary line for a
//! change, a table for status and events) or as pretty JSON, the refusal
//! of a 4xx/5xx answer, and the exit code.

use std::fmt::Write as _;

use http::StatusCode;
use serde_json::Value;

use super::{Answer, CanaryAction, CtlCommand, Outcome};

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
    let drained = answer.body.get("drained").and_then(Value::as_bool);
    if matches!(command, CtlCommand::WaitDrained { .. }) && drained != Some(true) {
        out.code = 1;
    }
    if !as_json {
        out.stdout = render_text(command, &answer.body);
    }
    out
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// `cutover ctl: refused: CODE: MESSAGE`, plus any listed details.
fn refusal(answer: &Answer) -> String {
    let error = answer.body.get("error");
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", answer.status.as_u16()));
    let message = match error.and_then(|e| e.get("message")) {
        Some(m) => text(m),
        None => match &answer.body {
            Value::Null => answer
                .status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned(),
            other => text(other),
        },
    };
    let mut s = format!("cutover ctl: refused: {code}: {message}\n");
    // A refused reload lists every config error; print them one per line.
    for key in ["errors", "issues", "details"] {
        if let Some(items) = error.and_then(|e| e.get(key)).and_then(Value::as_array) {
            for item in items {
                let _ = writeln!(s, "  {}", text(item));
            }
        }
    }
    if answer.status == StatusCode::UNAUTHORIZED {
        s.push_str("hint: pass --token T or --token-file PATH, or set CUTOVER_TOKEN\n");
    }
    s
}

/// The human-readable answer to a successful call.
fn render_text(command: &CtlCommand, body: &Value) -> String {
    match command {
        CtlCommand::Status { service: Some(_) } => render_service(body),
        CtlCommand::Status { service: None } => render_status(body),
        CtlCommand::Switch { service, .. } => summary(service, "switched", body),
        CtlCommand::Rollback { service } => summary(service, "rolled back", body),
        CtlCommand::WaitDrained { service, .. } => render_drained(service, body),
        CtlCommand::Weight { service, percent } => render_weight(service, *percent, body),
        CtlCommand::Canary { service, action } => {
            let verb = match action {
                CanaryAction::Start => "canary started",
                CanaryAction::Abort => "canary aborted",
            };
            let mut s = format!("{service}: {verb}{}", generation_note(body));
            let canary = service_of(body, service).get("canary");
            if let Some(c) = canary.filter(|c| !c.is_null()) {
                let _ = write!(s, "; canary: {}", fields(c));
            }
            s.push_str(&persist_note(body));
            s.push('\n');
            s
        }
        CtlCommand::Events { .. } => render_events(body),
        CtlCommand::Reload => format!("reloaded{}{}\n", generation_note(body), persist_note(body)),
    }
}

/// Every service, one block each, separated by blank lines.
fn render_status(body: &Value) -> String {
    let services = body
        .get("services")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if services.is_empty() {
        return "no services\n".to_owned();
    }
    let blocks: Vec<String> = services.iter().map(render_service).collect();
    blocks.join("\n")
}

/// One service's block.
fn render_service(svc: &Value) -> String {
    let mut s = String::new();
    let active = text(&svc["active"]);
    let standby = text(&svc["standby"]);
    let _ = writeln!(
        s,
        "{}: active {active}, standby {standby} (generation {})",
        text(&svc["name"]),
        text(&svc["generation"])
    );
    if let Some(weights) = svc.get("weights").and_then(Value::as_object) {
        let list: Vec<String> = weights
            .iter()
            .map(|(pool, w)| format!("{pool} {}%", text(w)))
            .collect();
        let _ = writeln!(s, "  weights: {}", list.join(", "));
    }
    if let Some(pools) = svc.get("pools").and_then(Value::as_object) {
        for (name, pool) in pools {
            let role = if *name == active {
                " (active)"
            } else if *name == standby {
                " (standby)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  pool {name}{role}: {} in flight, {} draining",
                text(&pool["inflight"]),
                text(&pool["draining"])
            );
            for server in pool["servers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let health = match server["healthy"].as_bool() {
                    Some(true) => "healthy",
                    Some(false) => "unhealthy",
                    None => "health unknown",
                };
                let _ = write!(s, "    {}  {health}", text(&server["address"]));
                match &server["version"] {
                    Value::Null => s.push_str("  version unknown"),
                    v => {
                        let _ = write!(s, "  version {}", text(v));
                    }
                }
                if let Some(err) = server.get("last_error").filter(|e| !e.is_null()) {
                    let _ = write!(s, "  ({})", text(err));
                }
                s.push('\n');
            }
        }
    }
    match svc.get("last_switch").filter(|v| !v.is_null()) {
        Some(e) => {
            let _ = writeln!(
                s,
                "  last switch: {} {} → {} ({}, {})",
                text(&e["time"]),
                text(&e["from"]),
                text(&e["to"]),
                text(&e["reason"]),
                text(&e["actor"])
            );
        }
        None => s.push_str("  last switch: none\n"),
    }
    for key in ["canary", "watch"] {
        if let Some(v) = svc.get(key).filter(|v| !v.is_null()) {
            let _ = writeln!(s, "  {key}: {}", fields(v));
        }
    }
    s
}

/// The service object in a change's answer: the answer itself, or its
/// `service` / `status` member, or the named entry of its `services`.
fn service_of<'a>(body: &'a Value, name: &str) -> &'a Value {
    if body.get("active").is_some() {
        return body;
    }
    for key in ["service", "status"] {
        if let Some(svc) = body.get(key).filter(|v| v.get("active").is_some()) {
            return svc;
        }
    }
    let services = body
        .get("services")
        .or_else(|| body.get("status").and_then(|s| s.get("services")))
        .and_then(Value::as_array);
    services
        .and_then(|list| list.iter().find(|s| s["name"].as_str() == Some(name)))
        .unwrap_or(&Value::Null)
}

/// ` (generation N)` from the answer's top-level generation, else its
/// service's.
fn generation_note(body: &Value) -> String {
    let generation = body
        .get("generation")
        .or_else(|| body.get("service").and_then(|s| s.get("generation")))
        .filter(|g| !g.is_null());
    match generation {
        Some(g) => format!(" (generation {})", text(g)),
        None => String::new(),
    }
}

/// A warning when the server says the change did not reach the state file.
fn persist_note(body: &Value) -> String {
    match body.get("persisted").and_then(Value::as_bool) {
        Some(false) => " [warning: not saved to the state file; lost on restart]".to_owned(),
        _ => String::new(),
    }
}

/// `agent: switched blue → green (generation 8)` and its variants.
fn summary(service: &str, verb: &str, body: &Value) -> String {
    let svc = service_of(body, service);
    let generation = generation_note(body);
    let persisted = persist_note(body);
    let active = svc.get("active").filter(|v| !v.is_null()).map(text);
    let Some(active) = active else {
        return format!("{service}: {verb}{generation}{persisted}\n");
    };
    if body.get("changed").and_then(Value::as_bool) == Some(false) {
        return format!("{service}: already on {active}, nothing changed{generation}{persisted}\n");
    }
    // The pool we left: the answer's `from`, else the last switch's, when
    // that switch is the one that made `active` active.
    let last = svc
        .get("last_switch")
        .filter(|e| e["to"].as_str() == Some(&active));
    let from = body
        .get("from")
        .or_else(|| last.and_then(|e| e.get("from")))
        .filter(|v| !v.is_null())
        .map(text);
    match from {
        Some(from) if from != active => {
            format!("{service}: {verb} {from} → {active}{generation}{persisted}\n")
        }
        _ => format!("{service}: {verb}, active {active}{generation}{persisted}\n"),
    }
}

fn render_drained(service: &str, body: &Value) -> String {
    match body.get("drained").and_then(Value::as_bool) {
        Some(true) => format!("{service}: drained\n"),
        Some(false) => format!(
            "{service}: not drained, {} in flight\n",
            body.get("inflight").map(text).unwrap_or_else(|| "?".into())
        ),
        None => format!("{service}: unexpected answer: {body}\n"),
    }
}

fn render_weight(service: &str, percent: u8, body: &Value) -> String {
    let svc = service_of(body, service);
    let weights = svc.get("weights").and_then(Value::as_object);
    let (active, standby) = (svc["active"].as_str(), svc["standby"].as_str());
    let split = match (weights, active, standby) {
        (Some(w), Some(active), Some(standby)) => format!(
            "{standby} {}%, {active} {}%",
            w.get(standby).map(text).unwrap_or_else(|| "?".into()),
            w.get(active).map(text).unwrap_or_else(|| "?".into())
        ),
        _ => format!("standby {percent}%"),
    };
    format!(
        "{service}: weights {split}{}{}\n",
        generation_note(body),
        persist_note(body)
    )
}

/// One line per event: `TIME service from → to reason actor [detail]`.
fn render_events(body: &Value) -> String {
    let events = body
        .as_array()
        .or_else(|| body.get("events").and_then(Value::as_array))
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        return "no events\n".to_owned();
    }
    let mut s = String::new();
    for e in events {
        let _ = write!(
            s,
            "{} {} {} → {} {} {}",
            text(&e["time"]),
            text(&e["service"]),
            text(&e["from"]),
            text(&e["to"]),
            text(&e["reason"]),
            text(&e["actor"])
        );
        let detail = &e["detail"];
        let empty = detail.is_null() || detail.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            let _ = write!(s, " {}", fields(detail));
        }
        s.push('\n');
    }
    s
}

/// A scalar as text: strings unquoted, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An object as `key=value` pairs (nested values as compact JSON).
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
