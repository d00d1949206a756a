//! Replacing processes that an earlier mend left behind when it was killed.
//!
//! Replicas normally die with mend (see `spawn.rs`), but a replica's own children, or a replica started
//! without the shim, can outlive it. At start-up mend reads the pid files the earlier run left and stops
//! every process still in those process groups before it spawns anything, so that two processes never
//! fight for one port.

use std::path::Path;
use std::time::Duration;

use mend_observe::process;
use mend_types::{Clock, Event, EventKind, EventSink, ReplicaId, ServiceName};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;

use crate::pidfile::{self, PidRecord};

/// Every replica's environment names mend's state directory under this key: processes a replica started
/// outside its process group (a program that daemonized itself) are found by it, on the replica's exit,
/// by the reaper and by the next mend.
pub const STATE_DIR_ENV: &str = "MEND_STATE_DIR";

/// The value of [`STATE_DIR_ENV`] for `state_dir` (absolute, as the daemon uses it).
pub fn state_dir_tag(state_dir: &Path) -> String {
    state_dir.to_string_lossy().into_owned()
}

/// Live processes that replicas of the mend using `state_dir` started outside their process groups, or
/// whose groups are gone: with the replica's environment tag, outside `except_group`.
pub fn detached(state_dir: &Path, replica: Option<&ReplicaId>, except_group: Option<u32>) -> Vec<u32> {
    let tag = state_dir_tag(state_dir);
    let index = replica.map(|id| id.index.to_string());
    let mut entries = vec![(STATE_DIR_ENV, tag.as_str())];
    if let (Some(id), Some(index)) = (replica, index.as_deref()) {
        entries.extend([("MEND_SERVICE", id.service.as_str()), ("MEND_REPLICA", index)]);
    }
    process::with_environment(&entries)
        .into_iter()
        .filter(|&pid| except_group.is_none_or(|group| process::sample(pid).is_some_and(|s| s.pgid != group as i32)))
        .collect()
}

/// What replica `id`, whose leader (pid, start ticks) exited, left running outside its process group:
/// processes with its environment tag, and, as programs that write their process title over their
/// environment (nginx, redis) lose the tag, processes holding its `port` that started, in a session that
/// also started, while the leader ran (the daemon's `setsid`). A process started from a shell that was
/// there before is never taken for the replica's.
pub fn left_outside_group(state_dir: &Path, id: &ReplicaId, leader: (u32, u64), port: Option<u16>) -> Vec<u32> {
    let (leader, leader_started) = leader;
    let mut found = detached(state_dir, Some(id), Some(leader));
    // Nothing listens on a port that binds: the usual exit costs no scan of every process's fds.
    let Some(port) = port.filter(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_err()) else {
        return found;
    };
    let started_while_leader_ran =
        |pid: u32| process::sample(pid).is_some_and(|s| s.start_ticks >= leader_started && s.pgid != leader as i32);
    for pid in process::listeners(port) {
        let session = process::sample(pid).and_then(|s| u32::try_from(s.session).ok());
        let ours = started_while_leader_ran(pid) && session.is_some_and(started_while_leader_ran);
        if ours && !found.contains(&pid) {
            found.push(pid);
        }
    }
    found
}

/// Asks `pids` to stop (`signal`, then SIGCONT in case they are stopped), waits up to `grace`, kills the
/// survivors; returns the pids that had to be killed.
pub async fn stop_processes(pids: &[u32], signal: Signal, grace: Duration) -> Vec<u32> {
    let alive = |pid: u32| process::sample(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X'));
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), signal);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline && pids.iter().any(|&pid| alive(pid)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    for &pid in &survivors {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    survivors
}

/// How long left-behind processes get to exit after SIGTERM before SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// The live processes that belong to a recorded replica's process group.
///
/// Linux does not reuse a pid while it is still some group's id, so live members of group `pid` are the
/// old replica's. A live process with the recorded pid but another start time is an unrelated process
/// that reused the pid once the old group was empty: it is left alone.
fn group_of(record: PidRecord) -> Vec<u32> {
    let pgid = record.pid as i32;
    match process::sample(record.pid) {
        Some(leader) if record.start_ticks.is_some_and(|ticks| ticks != leader.start_ticks) => Vec::new(),
        Some(leader) if leader.pgid != pgid => {
            let mut members = process::group_members(pgid);
            members.push(record.pid);
            members
        }
        _ => process::group_members(pgid),
    }
}

/// Stops every process left behind by an earlier run; returns how many were found.
pub async fn replace_orphans(state_dir: &Path, events: &dyn EventSink, clock: &dyn Clock) -> usize {
    let mut n_found = 0;
    for (path, record) in pidfile::list(state_dir) {
        let members = record.map(group_of).unwrap_or_default();
        if let (Some(record), false) = (record, members.is_empty()) {
            n_found += members.len();
            let pgid = Pid::from_raw(record.pid as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let _ = killpg(pgid, Signal::SIGCONT);
            for &pid in &members {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            let deadline = tokio::time::Instant::now() + ORPHAN_GRACE;
            while tokio::time::Instant::now() < deadline && !group_of(record).is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let survivors = group_of(record);
            let _ = killpg(pgid, Signal::SIGKILL);
            for &pid in &survivors {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let (service, replica) = replica_of(&path);
            let mut event = Event::new(
                clock.wall(),
                EventKind::OrphanKilled,
                format!("stopped {} process(es) left behind by an earlier mend (group {})", members.len(), record.pid),
            )
            .detail("pids", json!(members))
            .detail("killed", json!(survivors));
            event.service = service;
            event.replica = replica;
            tracing::warn!(pids = ?members, "{}", event.message);
            events.emit(event);
        }
        let _ = std::fs::remove_file(&path);
    }
    // Processes that left their replica's group (daemonized) and outlived that mend and its reaper.
    let detached = detached(state_dir, None, None);
    if !detached.is_empty() {
        n_found += detached.len();
        let killed = stop_processes(&detached, Signal::SIGTERM, ORPHAN_GRACE).await;
        let event = Event::new(
            clock.wall(),
            EventKind::OrphanKilled,
            format!(
                "stopped {} process(es) that replicas of an earlier mend started outside their process groups",
                detached.len()
            ),
        )
        .detail("pids", json!(detached))
        .detail("killed", json!(killed));
        tracing::warn!(pids = ?detached, "{}", event.message);
        events.emit(event);
    }
    n_found
}

/// Service and replica from a pid file name `<service>.<index>.pid`.
fn replica_of(path: &Path) -> (Option<ServiceName>, Option<u32>) {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    match stem.rsplit_once('.') {
        Some((service, index)) => (ServiceName::new(service).ok(), index.parse().ok()),
        None => (None, None),
    }
}

/// The hidden subcommand of the reaper process: `mend __reaper STATE_DIR`.
pub const REAPER_SUBCOMMAND: &str = "__reaper";

/// The reaper process's life: wait until its stdin, a pipe whose only writer is mend, reaches its end,
/// which happens however mend ends (`kill -9` included); then kill what mend's replicas left behind.
///
/// A replica's own process dies with mend by its parent-death signal, but the processes it forked (the
/// workers of a master, a shell's children) are not mend's children and would live on until the next
/// `mend run`. The reaper does nothing else and holds nothing else. After a clean shutdown it finds no
/// replica left and exits.
pub fn run_reaper(state_dir: &Path) {
    use std::io::Read as _;
    // Only the end of the pipe counts: a Ctrl-C or SIGTERM sent to mend's process group is mend's to
    // handle (it stops the replicas gently and then closes the pipe).
    // Blocked rather than ignored (which would need an unsafe handler change): this process has one
    // thread, so blocked signals stay pending and are never delivered.
    let mut blocked = nix::sys::signal::SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGPIPE] {
        blocked.add(signal);
    }
    let _ = blocked.thread_block();
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kill_recorded_groups(state_dir);
}

/// SIGKILLs every live process of every recorded replica group, and what replicas started outside their
/// groups; returns how many. The pid files stay:
/// the next mend's orphan pass finds the groups empty and removes them.
pub fn kill_recorded_groups(state_dir: &Path) -> usize {
    let mut killed = 0;
    for (_, record) in pidfile::list(state_dir) {
        let Some(record) = record else { continue };
        let members = group_of(record);
        if members.is_empty() {
            continue;
        }
        let _ = killpg(Pid::from_raw(record.pid as i32), Signal::SIGKILL);
        for &pid in &members {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        killed += members.len();
    }
    for pid in detached(state_dir, None, None) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        killed += 1;
    }
    killed
}
