//! The state file: each service's active pool, weights and previous pool, and
//! the event history, as versioned JSON.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename,
//! fsync of the directory), so a crash leaves the old or the new file, never
//! half of one. A file that cannot be read or parsed is reported and moved
//! aside, never overwritten.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::events::Event;
use crate::config::PoolName;

/// The current state file format.
pub const STATE_VERSION: u32 = 1;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a state file this version understands.
    #[error("{path}: not a valid state file: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file is from a newer cutover.
    #[error("{path}: state file version {found} is newer than this cutover understands ({STATE_VERSION})")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u32,
    },
}

/// What is kept of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// The active pool.
    pub active: PoolName,
    /// Percent of new requests to the standby pool.
    #[serde(default)]
    pub standby_weight: u8,
    /// The pool active before the last switch (what rollback returns to).
    #[serde(default)]
    pub previous: Option<PoolName>,
    /// The last switch, rollback or promotion.
    #[serde(default)]
    pub last_switch: Option<Event>,
    /// The stage of the staged rollout in progress, taken up again at the
    /// next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_stage: Option<usize>,
    /// Until when the active pool is watched for an automated rollback
    /// (RFC 3339), after a switch or a promotion; the watch goes on for what
    /// is left of it at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_watch_until: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Per service.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// The event history, oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// What a write keeps: each service's state, and the history as the JSON
/// each event was given when it happened (see [`super::events::EventLog`]).
#[derive(Debug)]
pub struct Saved {
    /// Per service.
    pub services: BTreeMap<String, ServiceState>,
    /// The event history, oldest first, one JSON object each.
    pub events: VecDeque<Arc<str>>,
}

impl Saved {
    /// The file's bytes: a [`StateFile`] in JSON, the services pretty-printed
    /// and each event on a line of its own, copied rather than serialized
    /// again (a history of a thousand events is a quarter megabyte).
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Head<'a> {
            version: u32,
            services: &'a BTreeMap<String, ServiceState>,
        }
        let head = Head {
            version: STATE_VERSION,
            services: &self.services,
        };
        let mut out = serde_json::to_vec_pretty(&head).expect("state serializes: plain data");
        // `{ ... \n}` → `{ ..., "events": [ ... ]\n}`
        debug_assert_eq!(out.last(), Some(&b'}'));
        out.truncate(out.len() - 2);
        out.reserve(self.events.iter().map(|e| e.len() + 6).sum::<usize>() + 32);
        out.extend_from_slice(b",\n  \"events\": [");
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\n    ");
            out.extend_from_slice(event.as_bytes());
        }
        if !self.events.is_empty() {
            out.extend_from_slice(b"\n  ");
        }
        out.extend_from_slice(b"]\n}\n");
        out
    }
}

/// Reads the state file; `Ok(None)` when there is none yet.
///
/// # Errors
///
/// [`PersistError`] when the file exists but cannot be read or understood.
pub fn load(path: &Path) -> Result<Option<StateFile>, PersistError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let state: StateFile =
        serde_json::from_slice(&bytes).map_err(|source| PersistError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
    if state.version > STATE_VERSION {
        return Err(PersistError::Version {
            path: path.to_path_buf(),
            found: state.version,
        });
    }
    Ok(Some(state))
}

/// Writes `state` atomically.
///
/// # Errors
///
/// [`PersistError::Io`] naming the file that could not be written.
pub fn save(path: &Path, state: &Saved) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tmp_path(path);
    let bytes = state.encode();
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// Moves an unusable state file aside (`NAME.corrupt-UNIXTIME`) so it can be
/// inspected and is not overwritten. Returns the new path.
///
/// # Errors
///
/// [`PersistError::Io`] when the rename fails.
pub fn set_aside(path: &Path) -> Result<PathBuf, PersistError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside).map_err(|source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::control::events::{Actor, EventLog, Reason};

    fn event(service: &str, detail: serde_json::Value) -> Event {
        Event::now(
            Some(service),
            Some(PoolName::Blue),
            Some(PoolName::Green),
            Reason::Manual,
            Actor::Api,
            detail,
        )
    }

    fn saved(events: &[Event]) -> Saved {
        let mut log = EventLog::default();
        for e in events {
            log.push(e.clone());
        }
        let mut services = BTreeMap::new();
        services.insert(
            "agent".into(),
            ServiceState {
                active: PoolName::Green,
                standby_weight: 10,
                previous: Some(PoolName::Blue),
                last_switch: events.last().cloned(),
                canary_stage: Some(1),
                rollback_watch_until: Some("2026-11-30T04:20:00.250Z".into()),
            },
        );
        Saved {
            services,
            events: log.json(),
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_none());
        let events = vec![
            event("agent", serde_json::json!({"weight": 10})),
            event("other \"quoted\"\n", serde_json::json!({"error": "a}\n]b"})),
        ];
        let state = saved(&events);
        save(&path, &state).unwrap();
        assert_eq!(
            load(&path).unwrap(),
            Some(StateFile {
                version: STATE_VERSION,
                services: state.services.clone(),
                events,
            })
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn an_empty_history_encodes_as_valid_json() {
        let state = saved(&[]);
        let back: StateFile = serde_json::from_slice(&state.encode()).unwrap();
        assert!(back.events.is_empty());
        assert_eq!(back.services, state.services);
        let state = Saved {
            services: BTreeMap::new(),
            events: VecDeque::new(),
        };
        let back: StateFile = serde_json::from_slice(&state.encode()).unwrap();
        assert!(back.services.is_empty() && back.events.is_empty());
    }

    #[test]
    fn version_1_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"version":1,"services":{"agent":{"active":"green","standby_weight":0,"previous":"blue"}},
               "events":[{"time":"2026-11-22T10:00:00Z","service":"agent","from":"blue","to":"green","reason":"manual","actor":"socket"}]}"#,
        )
        .unwrap();
        let state = load(&path).unwrap().unwrap();
        assert_eq!(state.services["agent"].active, PoolName::Green);
        assert_eq!(state.events.len(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path_and_can_be_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
        let aside = set_aside(&path).unwrap();
        assert!(aside.exists() && !path.exists());
        assert_eq!(std::fs::read(&aside).unwrap(), b"{not json");
    }

    #[test]
    fn newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, br#"{"version":99}"#).unwrap();
        assert!(matches!(
            load(&path),
            Err(PersistError::Version { found: 99, .. })
        ));
    }
}
