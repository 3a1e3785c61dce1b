//! The audit log: every event as one JSON line, appended, never rewritten.
//! It is the event history: what happened can be read after the fact with
//! any tool, and a start reads its tail back (the state file holds state,
//! not history).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::wire::Event;

/// How much of the log's end is read at a time when looking for its last
/// lines.
const TAIL_BLOCK: u64 = 64 * 1024;

/// `cutover-state.json` → `cutover-audit.jsonl` in the same directory.
pub fn audit_path(state: &Path) -> PathBuf {
    let stem = state
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("cutover-state");
    let stem = stem.strip_suffix("-state").unwrap_or(stem);
    state.with_file_name(format!("{stem}-audit.jsonl"))
}

/// Appends `line` (one JSON object, no newline) to the log at `path`.
pub(super) fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// The last `max` events of the log at `path`, oldest first; none when
/// there is no log. A line that is not an event (a torn write, an edit) is
/// skipped and counted in the second value; it may cost the history its
/// oldest event.
pub(super) fn tail(path: &Path, max: usize) -> std::io::Result<(Vec<Event>, usize)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let bytes = last_lines(&mut file, max)?;
    let text = String::from_utf8_lossy(&bytes);
    let (mut events, mut skipped) = (Vec::new(), 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Event>(line) {
            Ok(e) => events.push(e),
            Err(_) => skipped += 1,
        }
    }
    let extra = events.len().saturating_sub(max);
    events.drain(..extra);
    Ok((events, skipped))
}

/// The bytes of the last `max` lines of `file` (at most a line more),
/// read backwards a block at a time so a long log costs only its end.
fn last_lines(file: &mut File, max: usize) -> std::io::Result<Vec<u8>> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut start = len;
    let mut tail = Vec::new();
    while start > 0 {
        let block = TAIL_BLOCK.min(start);
        start -= block;
        file.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0; usize::try_from(block).unwrap_or(usize::MAX)];
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        // One newline more than lines wanted: the first (partial) line is cut.
        if tail.iter().filter(|b| **b == b'\n').count() > max {
            break;
        }
    }
    if start > 0 {
        if let Some(first) = tail.iter().position(|b| *b == b'\n') {
            tail.drain(..=first);
        }
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolName;
    use crate::wire::{Actor, Reason};

    fn event(n: usize) -> Event {
        Event::now(
            Some("agent"),
            Some(PoolName::Blue),
            Some(PoolName::Green),
            Reason::Manual,
            Actor::Api,
            serde_json::json!({"n": n}),
        )
    }

    #[test]
    fn the_audit_log_sits_beside_the_state_file() {
        assert_eq!(
            audit_path(Path::new("/var/lib/cutover/cutover-state.json")),
            Path::new("/var/lib/cutover/cutover-audit.jsonl")
        );
        assert_eq!(audit_path(Path::new("s.json")), Path::new("s-audit.jsonl"));
    }

    #[test]
    fn tail_reads_the_last_events_of_a_long_log_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Long enough to need several blocks from the end.
        for n in 0..3000 {
            append(&path, &serde_json::to_string(&event(n)).unwrap()).unwrap();
        }
        append(&path, "{\"torn").unwrap();
        let (events, skipped) = tail(&path, 1000).unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(events.len(), 1000);
        assert_eq!(events[0].detail["n"], 2000);
        assert_eq!(events[999].detail["n"], 2999);

        let (all, _) = tail(&path, 10_000).unwrap();
        assert_eq!(all.len(), 3000);
        assert_eq!(all[0].detail["n"], 0);
    }

    #[test]
    fn no_log_is_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let (events, skipped) = tail(&dir.path().join("none.jsonl"), 10).unwrap();
        assert!(events.is_empty() && skipped == 0);
    }
}
