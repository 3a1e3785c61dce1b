//! The state writer: one thread that makes control changes durable (the
//! audit log line, then the state file with its fsyncs) below the data
//! plane's CPU priority.
//!
//! A write costs about half a millisecond of CPU, most of it in the kernel's
//! fsync path. Run where the proxy's workers run, in one piece, it would hold
//! up every request in flight on that core for as long; at a lower priority
//! the scheduler slices it between requests instead. The caller still waits
//! for the write to finish before it answers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::persist::{self, PersistError, Saved};

/// Nice value of the writer thread (the workers run at 0).
pub const NICENESS: i32 = 10;

struct Job {
    line: Arc<str>,
    state: PathBuf,
    saved: Saved,
    done: oneshot::Sender<Result<(), PersistError>>,
}

/// A handle to the writer thread; the thread ends when the last handle is
/// dropped, after the writes already asked for.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread.
    ///
    /// # Panics
    ///
    /// When the OS cannot start a thread (as `std::thread::spawn`).
    pub fn start() -> Writer {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cutover-state".into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    append_audit(&super::audit_path(&job.state), &job.line);
                    // The caller may have gone (its task was cancelled); the
                    // write is done all the same.
                    let _ = job.done.send(persist::save(&job.state, &job.saved));
                }
            })
            .expect("start the state writer thread");
        Writer { jobs }
    }

    /// Appends `line` to the audit log beside the state file at `state`
    /// (an error there is logged, not returned), then writes `saved` to the
    /// state file atomically, and resolves when both are done.
    ///
    /// # Errors
    ///
    /// The state file could not be written, or the writer thread is gone.
    pub async fn write(
        &self,
        line: Arc<str>,
        state: PathBuf,
        saved: Saved,
    ) -> Result<(), PersistError> {
        let gone = |path: &Path| PersistError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("the state writer thread has stopped"),
        };
        let (done, result) = oneshot::channel();
        let job = Job {
            line,
            state: state.clone(),
            saved,
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

/// Adds [`NICENESS`] to the calling thread's nice value. On Linux the nice
/// value belongs to the thread, so this lowers only the writer; elsewhere it
/// would lower the whole process and is not done.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::nice(NICENESS) {
        tracing::debug!(error = %e, "state writer keeps the default priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn writes_the_audit_lines_then_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("cutover-state.json");
        let audit = dir.path().join("cutover-audit.jsonl");
        let writer = Writer::start();
        for n in 0..2 {
            let saved = Saved {
                services: BTreeMap::new(),
                events: vec![],
            };
            let line: Arc<str> = format!("{{\"n\":{n}}}").into();
            writer.write(line, state.clone(), saved).await.unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&audit).unwrap(),
            "{\"n\":0}\n{\"n\":1}\n"
        );
        assert!(persist::load(&state).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_state_file_that_cannot_be_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("missing-dir").join("s.json");
        let saved = Saved {
            services: BTreeMap::new(),
            events: vec![],
        };
        let err = Writer::start()
            .write("{}".into(), state, saved)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_thread_runs_below_the_default_priority() {
        // On Linux "the process" of getpriority(2) is the calling thread.
        let own = || rustix::process::getpriority_process(None).unwrap();
        let before = own();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            lower_priority();
            tx.send(own()).unwrap();
        });
        let writer = rx.recv().unwrap();
        assert_eq!(
            writer,
            (before + NICENESS).min(19),
            "the writer thread is lowered"
        );
        assert_eq!(own(), before, "the other threads are not");
    }
}
