//! Replacing processes that an earlier mend left behind when it was killed.
//!
//! Replicas normally die with mend (see `spawn.rs`), but a replica's own children, or a replica started
//! without the shim, can outlive it. At start-up mend reads the pid files the earlier run left and stops
//! every process still in those process groups before it spawns anything, so that two processes never
//! fight for one port.

use std::path::Path;
use std::time::Duration;

use mend_observe::process;
use mend_types::{Clock, Event, EventKind, EventSink, ServiceName};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::detached;
use crate::pidfile::{self, PidRecord};

/// How long left-behind processes get to exit after SIGTERM before SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// The live processes that belong to a recorded replica's process group, if the record can be trusted.
///
/// Linux does not reuse a pid while it is still some group's id, so live members of group `pid` are the
/// old replica's. A live process with the recorded pid but another start time is an unrelated process
/// that reused the pid once the old group was empty: it is left alone. A record is trusted only when it
/// names its leader's start time (a planted `run/*.pid` naming any group must not make mend signal it,
/// issue 20), never for group 0 or 1 (`killpg(1)` would reach init's group, `killpg(0)` mend's own) nor
/// for mend's own group, and only the members started after that time are taken: processes older than
/// the replica were not started by it. Given `run_tag` (the run that wrote the record), the group is
/// taken only if one of its members carries that tag in the environment it started with: proof that
/// mend started it. (A program that writes its title over its environment, as nginx does, loses the tag;
/// its leftovers are then the reaper's to stop, which it does when mend dies.)
fn group_of(record: PidRecord, run_tag: Option<&str>) -> Vec<u32> {
    let Some(start_ticks) = record.start_ticks else { return Vec::new() };
    let own_group = nix::unistd::getpgrp().as_raw();
    let pgid = match i32::try_from(record.pid) {
        Ok(pgid) if pgid > 1 && pgid != own_group && record.pid != std::process::id() => pgid,
        _ => return Vec::new(),
    };
    let started_since = |pid: &u32| process::sample(*pid).is_some_and(|member| member.start_ticks >= start_ticks);
    let members = match process::sample(record.pid) {
        Some(leader) if leader.start_ticks != start_ticks => Vec::new(),
        Some(leader) if leader.pgid != pgid => {
            let mut members: Vec<u32> = process::group_members(pgid).into_iter().filter(started_since).collect();
            members.push(record.pid);
            members
        }
        _ => process::group_members(pgid).into_iter().filter(started_since).collect(),
    };
    match run_tag {
        Some(tag) => {
            let wanted = process::environment_entries(&[(detached::RUN_TAG_ENV, tag)]);
            if members.iter().any(|&pid| process::has_environment(pid, &wanted)) { members } else { Vec::new() }
        }
        None => members,
    }
}

/// Whether a pid file may name processes for mend to stop (see [`group_of`]); an untrusted one is
/// removed with a warning.
fn trusted(record: Option<PidRecord>) -> bool {
    record.is_some_and(|record| record.start_ticks.is_some() && record.pid > 1)
}

/// Stops every process left behind by an earlier run; returns how many were found.
pub async fn replace_orphans(state_dir: &Path, events: &dyn EventSink, clock: &dyn Clock) -> usize {
    let mut n_found = 0;
    // The run that wrote the pid files: without its tag, no group is proven to be mend's.
    let last_run = detached::recorded_run_tag(state_dir);
    let proof = Some(last_run.as_deref().unwrap_or("(no run tag recorded)"));
    for (path, record) in pidfile::list(state_dir) {
        if !trusted(record) {
            tracing::warn!(
                path = %path.display(),
                "ignored a pid file without a start time or naming group 0 or 1: mend did not write it"
            );
        }
        let members = record.map(|record| group_of(record, proof)).unwrap_or_default();
        if let (Some(record), false) = (record, members.is_empty()) {
            n_found += members.len();
            // The members one by one, not the group: `killpg` would also reach processes of the group
            // that are older than the replica, which it did not start.
            for &pid in &members {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
            }
            let deadline = tokio::time::Instant::now() + ORPHAN_GRACE;
            while tokio::time::Instant::now() < deadline && !group_of(record, proof).is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let survivors = group_of(record, proof);
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
    let left = match last_run {
        Some(tag) => tokio::task::spawn_blocking(move || detached::tagged(&tag, None)).await.unwrap_or_default(),
        None => Vec::new(),
    };
    if !left.is_empty() {
        n_found += left.len();
        let killed = detached::stop(&left, Signal::SIGTERM, ORPHAN_GRACE).await;
        let event = Event::new(
            clock.wall(),
            EventKind::OrphanKilled,
            format!(
                "stopped {} process(es) that replicas of an earlier mend started outside their process groups",
                left.len()
            ),
        )
        .detail("pids", json!(detached::pids(&left)))
        .detail("killed", json!(detached::pids(&killed)));
        tracing::warn!(pids = ?detached::pids(&left), "{}", event.message);
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

/// The hidden subcommand of the reaper process: `mend __reaper STATE_DIR RUN_TAG`.
pub const REAPER_SUBCOMMAND: &str = "__reaper";

/// The reaper process's life: wait until its stdin, a pipe whose only writer is mend, reaches its end,
/// which happens however mend ends (`kill -9` included); then kill what mend's replicas left behind.
///
/// A replica's own process dies with mend by its parent-death signal, but the processes it forked (the
/// workers of a master, a shell's children) are not mend's children and would live on until the next
/// `mend run`. The reaper does nothing else and holds nothing else. After a clean shutdown it finds no
/// replica left and exits.
pub fn run_reaper(state_dir: &Path, run_tag: &str) {
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
    kill_recorded_groups(state_dir, Some(run_tag));
}

/// SIGKILLs every live process of every recorded replica group, and what replicas of the run tagged
/// `run_tag` started outside their groups; returns how many. The pid files stay: the next mend's orphan
/// pass finds the groups empty and removes them.
pub fn kill_recorded_groups(state_dir: &Path, run_tag: Option<&str>) -> usize {
    let mut killed = 0;
    for (_, record) in pidfile::list(state_dir) {
        let Some(record) = record else { continue };
        // This run's own pid files: its replicas' groups, whose leftovers may have lost the tag.
        let members = group_of(record, None);
        if members.is_empty() {
            continue;
        }
        // The members one by one: `killpg` would reach processes of the group older than the replica.
        for &pid in &members {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        killed += members.len();
    }
    for process in run_tag.map(|tag| detached::tagged(tag, None)).unwrap_or_default() {
        if process.is_running() {
            let _ = kill(Pid::from_raw(process.pid as i32), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}
