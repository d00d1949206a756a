//! Pid files of live replicas (`<state>/run/<service>.<replica>.pid`), so that the next mend can find
//! processes an earlier mend left behind when it was killed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use mend_types::ReplicaId;

/// What a pid file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    /// The replica's pid, which is also its process group id.
    pub pid: u32,
    /// Its start time in clock ticks after boot, to recognise pid reuse.
    pub start_ticks: Option<u64>,
}

/// The directory of pid files.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("run")
}

fn path(state_dir: &Path, id: &ReplicaId) -> PathBuf {
    run_dir(state_dir).join(format!("{}.{}.pid", id.service, id.index))
}

/// Records a live replica (atomically: write then rename).
pub fn write(state_dir: &Path, id: &ReplicaId, pid: u32, start_ticks: Option<u64>) -> io::Result<()> {
    crate::statedir::ensure_dir(&run_dir(state_dir))?;
    let text = match start_ticks {
        Some(ticks) => format!("{pid} {ticks}\n"),
        None => format!("{pid}\n"),
    };
    crate::statedir::replace_file(&path(state_dir, id), text.as_bytes())
}

/// Forgets a replica whose process has been reaped.
pub fn remove(state_dir: &Path, id: &ReplicaId) {
    let _ = fs::remove_file(path(state_dir, id));
}

/// Parses a pid file's content.
pub fn parse(text: &str) -> Option<PidRecord> {
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let start_ticks = fields.next().and_then(|ticks| ticks.parse().ok());
    Some(PidRecord { pid, start_ticks })
}

/// Every pid file in the state directory, with its path.
pub fn list(state_dir: &Path) -> Vec<(PathBuf, Option<PidRecord>)> {
    let Ok(entries) = fs::read_dir(run_dir(state_dir)) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pid"))
        .map(|path| {
            let record = crate::statedir::read_to_string(&path).ok().and_then(|text| parse(&text));
            (path, record)
        })
        .collect()
}
