//! The threads that run beside the workers (the state writer, the control
//! thread) run at a lower priority, so that on a busy core the scheduler fits
//! their work between requests rather than in front of them.

/// The nice value added to such a thread (the workers run at 0).
pub const NICENESS: i32 = 10;

/// Adds [`NICENESS`] to the calling thread's nice value. On Linux the nice
/// value belongs to the thread, so this lowers only the caller; elsewhere it
/// would lower the whole process and is not done. `thread` names the thread
/// in the log line when it cannot be lowered.
pub fn lower(thread: &str) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::nice(NICENESS) {
        tracing::debug!(thread, error = %e, "keeps the default priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = thread;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_calling_thread_is_lowered() {
        // On Linux "the process" of getpriority(2) is the calling thread.
        let own = || rustix::process::getpriority_process(None).unwrap();
        let before = own();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            lower("test");
            tx.send(own()).unwrap();
        });
        let lowered = rx.recv().unwrap();
        assert_eq!(
            lowered,
            (before + NICENESS).min(19),
            "the thread is lowered"
        );
        assert_eq!(own(), before, "the other threads are not");
    }
}
