//! The local release-state store: a state file holding each service's
//! [`ReleaseState`] as versioned JSON, and the audit log beside it holding
//! the events.
//!
//! Writes run on a thread of their own below the workers' priority
//! ([`crate::control::priority`]): a write is an fsync or two, mostly kernel
//! time, which on the workers' core would hold up every request in flight
//! at once, while at a lower priority the scheduler slices it between them.
//! The caller still waits for its write before it answers.
//!
//! A state file write is atomic (temporary file in the same directory,
//! fsync, rename, fsync of the directory), so a crash leaves the old or the
//! new file, never half of one. A file that cannot be read or understood is
//! reported and moved aside, never overwritten.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{audit, Change, ReleaseState, Remote, Store, StoreError, Stored};
use crate::control::events::MAX_EVENTS;
use crate::wire::Event;

/// The current state file format: 2 holds state only (1 also held the
/// event history, which the audit log holds).
pub const STATE_VERSION: u32 = 2;

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

/// The state file as read: either version.
#[derive(Debug, Deserialize)]
pub(super) struct StateFile {
    version: u32,
    #[serde(default)]
    pub(super) services: BTreeMap<String, ReleaseState>,
    /// Version 1's copy of the history.
    #[serde(default)]
    events: Vec<Event>,
}

/// The state file as written.
#[derive(Serialize)]
struct Written<'a> {
    version: u32,
    services: &'a BTreeMap<String, ReleaseState>,
}

struct Job {
    change: Change,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The state file and audit log of one proxy.
#[derive(Debug)]
pub struct FileStore {
    state: PathBuf,
    jobs: mpsc::Sender<Job>,
    /// What the files held at open, taken by [`Store::load`].
    loaded: Mutex<Option<Stored>>,
}

impl FileStore {
    /// Reads the state file at `state` and the audit log beside it, and
    /// starts the writer thread. A state file that cannot be used is logged,
    /// moved aside and ignored: the services start from the config.
    ///
    /// # Panics
    ///
    /// When the OS cannot start a thread (as `std::thread::spawn`).
    pub fn open(state: &Path) -> FileStore {
        let (services, v1_history) = match read(state) {
            Ok(Some(file)) => (file.services, file.events),
            Ok(None) => Default::default(),
            Err(e) => {
                set_aside(state, &e);
                Default::default()
            }
        };
        let audit = audit::audit_path(state);
        let history = match audit::tail(&audit, MAX_EVENTS) {
            Ok((events, 0)) if events.is_empty() => v1_history,
            Ok((events, skipped)) => {
                if skipped > 0 {
                    tracing::warn!(path = %audit.display(), skipped, "audit log: lines that are not events were skipped");
                }
                events
            }
            Err(e) => {
                tracing::error!(path = %audit.display(), error = %e, "audit log unreadable: the event history starts empty");
                Vec::new()
            }
        };
        let jobs = start_writer(state.to_path_buf(), audit, services.clone());
        FileStore {
            state: state.to_path_buf(),
            jobs,
            loaded: Mutex::new(Some(Stored { services, history })),
        }
    }
}

impl Store for FileStore {
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        super::take_loaded(&self.loaded)
    }

    fn commit(&self, change: Change) -> BoxFuture<'_, Result<(), StoreError>> {
        let gone = || {
            StoreError::NotDurable(PersistError::Io {
                path: self.state.clone(),
                source: std::io::Error::other("the state writer thread has stopped"),
            })
        };
        let (done, result) = oneshot::channel();
        let sent = self.jobs.send(Job { change, done });
        Box::pin(async move {
            if sent.is_err() {
                return Err(gone());
            }
            result.await.unwrap_or_else(|_| Err(gone()))
        })
    }

    fn changes(&self) -> Option<tokio::sync::mpsc::Receiver<Remote>> {
        None
    }
}

/// Starts the thread that writes changes, holding the services' states as
/// the file has them.
fn start_writer(
    state: PathBuf,
    audit: PathBuf,
    mut services: BTreeMap<String, ReleaseState>,
) -> mpsc::Sender<Job> {
    let (jobs, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("cutover-state".into())
        .spawn(move || {
            crate::control::priority::lower("state writer");
            for job in rx {
                let result = apply(&state, &audit, &mut services, job.change);
                // The caller may have gone (its task was cancelled); the
                // write is done all the same.
                let _ = job.done.send(result);
            }
        })
        .expect("start the state writer thread");
    jobs
}

/// Checks `change` against `services`, appends its event to the audit log
/// and writes the state it leaves.
fn apply(
    state: &Path,
    audit: &Path,
    services: &mut BTreeMap<String, ReleaseState>,
    change: Change,
) -> Result<(), StoreError> {
    if let Change::Service { name, expected, .. } = &change {
        if let Some(found) = services.get(name).map(|s| s.generation) {
            if found != *expected {
                return Err(StoreError::Conflict {
                    service: name.clone(),
                    expected: *expected,
                    found,
                });
            }
        }
    }
    let line = serde_json::to_string(change.event()).expect("events serialize: plain data");
    let logged = audit::append(audit, &line);
    if let Err(e) = &logged {
        tracing::error!(path = %audit.display(), error = %e, "audit log not written");
    }
    match change {
        Change::Service { name, state: s, .. } => {
            services.insert(name, s);
        }
        Change::Services { states, .. } => *services = states,
        Change::Event(_) => {
            return logged.map_err(|source| {
                StoreError::NotDurable(PersistError::Io {
                    path: audit.to_path_buf(),
                    source,
                })
            })
        }
    }
    save(state, services).map_err(StoreError::NotDurable)
}

/// Reads the state file; `Ok(None)` when there is none yet.
pub(super) fn read(path: &Path) -> Result<Option<StateFile>, PersistError> {
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
    let file: StateFile =
        serde_json::from_slice(&bytes).map_err(|source| PersistError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
    if file.version > STATE_VERSION {
        return Err(PersistError::Version {
            path: path.to_path_buf(),
            found: file.version,
        });
    }
    Ok(Some(file))
}

/// Writes `services` to the state file at `path`, atomically.
pub(super) fn save(
    path: &Path,
    services: &BTreeMap<String, ReleaseState>,
) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let written = Written {
        version: STATE_VERSION,
        services,
    };
    let mut bytes = serde_json::to_vec_pretty(&written).expect("state serializes: plain data");
    bytes.push(b'\n');
    let tmp = tmp_path(path);
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

/// Reports an unusable state file and moves it aside
/// (`NAME.corrupt-UNIXTIME`) so it can be inspected and is not overwritten.
fn set_aside(path: &Path, why: &PersistError) {
    tracing::error!(error = %why, "state file unusable: starting from the config's active pools");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    let aside = path.with_file_name(name);
    match std::fs::rename(path, &aside) {
        Ok(()) => tracing::warn!(path = %aside.display(), "kept the unusable state file aside"),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "could not move the unusable state file aside")
        }
    }
}

#[cfg(test)]
mod tests;
