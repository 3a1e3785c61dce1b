//! The state writer: one thread that makes control changes durable (the
//! audit log line, then the state file with its fsyncs) below the data
//! plane's CPU priority.
//!
//! A write costs about half a millisecond of CPU, most of it in the kernel's
//! fsync path. Run where the proxy's workers run, in one piece, it would hold
//! up every request in flight on that core for as long; at a lower priority
//! the scheduler slices it between requests instead. The caller still waits
//! for the write to finish before it answers.
//!
//! The thread keeps the event history itself, as the lines it was handed: a
//! write brings one new line, not the whole history.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::events::MAX_EVENTS;
use super::persist::{self, PersistError, Saved, ServiceState};

struct Job {
    line: Arc<str>,
    state: PathBuf,
    services: BTreeMap<String, ServiceState>,
    done: oneshot::Sender<Result<(), PersistError>>,
}

/// A handle to the writer thread; the thread ends when the last handle is
/// dropped, after the writes already asked for.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread with the event `history` so far (as the
    /// state file holds it, oldest first).
    ///
    /// # Panics
    ///
    /// When the OS cannot start a thread (as `std::thread::spawn`).
    pub fn start(history: VecDeque<Arc<str>>) -> Writer {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cutover-state".into())
            .spawn(move || {
                super::priority::lower("state writer");
                let mut saved = Saved {
                    services: BTreeMap::new(),
                    events: history,
                };
                for job in rx {
                    append_audit(&super::audit_path(&job.state), &job.line);
                    // The same bound as the control plane's own log.
                    saved.events.push_back(job.line);
                    while saved.events.len() > MAX_EVENTS {
                        saved.events.pop_front();
                    }
                    saved.services = job.services;
                    // The caller may have gone (its task was cancelled); the
                    // write is done all the same.
                    let _ = job.done.send(persist::save(&job.state, &saved));
                }
            })
            .expect("start the state writer thread");
        Writer { jobs }
    }

    /// Appends the event `line` to the audit log beside the state file at
    /// `state` (an error there is logged, not returned), then writes the
    /// state file atomically with `services` and the history ending in
    /// `line`, and resolves when both are done.
    ///
    /// # Errors
    ///
    /// The state file could not be written, or the writer thread is gone.
    pub async fn write(
        &self,
        line: Arc<str>,
        state: PathBuf,
        services: BTreeMap<String, ServiceState>,
    ) -> Result<(), PersistError> {
        let gone = |path: &Path| PersistError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("the state writer thread has stopped"),
        };
        let (done, result) = oneshot::channel();
        let job = Job {
            line,
            state: state.clone(),
            services,
            done,
        };
        if self.jobs.send(job).is_err() {
            return Err(gone(&state));
        }
        result.await.unwrap_or_else(|_| Err(gone(&state)))
    }
}

fn append_audit(path: &Path, line: &str) {
    let text = format!("{line}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::error!(path = %path.display(), error = %e, "audit log not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(state: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn writes_the_audit_lines_then_the_state_file_with_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("cutover-state.json");
        let audit = dir.path().join("cutover-audit.jsonl");
        let writer = Writer::start(VecDeque::from([Arc::from("{\"n\":-1}")]));
        for n in 0..2 {
            let line: Arc<str> = format!("{{\"n\":{n}}}").into();
            writer
                .write(line, state.clone(), BTreeMap::new())
                .await
                .unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&audit).unwrap(),
            "{\"n\":0}\n{\"n\":1}\n"
        );
        assert_eq!(
            written(&state)["events"],
            serde_json::json!([{"n": -1}, {"n": 0}, {"n": 1}])
        );
    }

    #[tokio::test]
    async fn the_history_keeps_the_newest_max_events() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("cutover-state.json");
        let full: VecDeque<Arc<str>> = (0..MAX_EVENTS).map(|n| n.to_string().into()).collect();
        let writer = Writer::start(full);
        writer
            .write("\"new\"".into(), state.clone(), BTreeMap::new())
            .await
            .unwrap();
        let events = written(&state)["events"].as_array().unwrap().clone();
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0], 1, "the oldest went");
        assert_eq!(events[MAX_EVENTS - 1], "new");
    }

    #[tokio::test]
    async fn a_state_file_that_cannot_be_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("missing-dir").join("s.json");
        let err = Writer::start(VecDeque::new())
            .write("{}".into(), state, BTreeMap::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }
}
