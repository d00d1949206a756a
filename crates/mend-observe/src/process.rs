//! Facts about a process from /proc: scheduler state, CPU time, memory, threads, open fds, group.

use std::time::Duration;

use procfs::process::Process;

/// A snapshot of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// Scheduler state letter (`R`, `S`, `D`, `T`, `Z`, ...).
    pub state: char,
    /// CPU time used so far, user + system, all threads, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Number of threads.
    pub threads: u64,
    /// Open file descriptors (None when /proc/PID/fd is not readable).
    pub open_fds: Option<u64>,
    /// Process group id.
    pub pgid: i32,
    /// Start time in clock ticks after boot: with the pid, identifies the process across pid reuse.
    pub start_ticks: u64,
}

/// Reads a snapshot of `pid`; None when the process is gone.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    Some(ProcessSample {
        state: stat.state,
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        rss_bytes: stat.rss.saturating_mul(procfs::page_size()),
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        open_fds: process.fd_count().ok().map(|n| n as u64),
        pgid: stat.pgrp,
        start_ticks: stat.starttime,
    })
}

/// Scheduler state and precise CPU time (nanoseconds, summed over threads) of `pid`.
///
/// Probes read this before and after waiting, to see whether an unresponsive process is stopped, busy or
/// idle. Thread schedstat gives nanoseconds; the tick counters of /proc/PID/stat are the fallback.
pub fn cpu_state(pid: u32) -> Option<(char, Duration)> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    let mut total_ns: u64 = 0;
    let mut complete = false;
    if let Ok(tasks) = process.tasks() {
        complete = true;
        for task in tasks {
            match task.and_then(|task| task.schedstat()) {
                Ok(schedstat) => total_ns = total_ns.saturating_add(schedstat.sum_exec_runtime),
                Err(_) => complete = false,
            }
        }
    }
    if !complete {
        let ticks = procfs::ticks_per_second();
        total_ns = (stat.utime + stat.stime).saturating_mul(1_000_000_000 / ticks.max(1));
    }
    Some((stat.state, Duration::from_nanos(total_ns)))
}

/// The pids of every process in process group `pgid` (scans /proc).
pub fn group_members(pgid: i32) -> Vec<u32> {
    let Ok(processes) = procfs::process::all_processes() else { return Vec::new() };
    processes
        .filter_map(Result::ok)
        .filter_map(|process| process.stat().ok())
        .filter(|stat| stat.pgrp == pgid)
        .filter_map(|stat| u32::try_from(stat.pid).ok())
        .collect()
}

/// Seconds since boot at which a process with `start_ticks` started.
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / procfs::ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let pid = std::process::id();
        let sample = sample(pid).expect("this process exists");
        assert!(sample.rss_bytes > 0);
        assert!(sample.threads >= 1);
        assert!(sample.open_fds.is_some_and(|n| n >= 3));
        assert!(matches!(sample.state, 'R' | 'S'));
        let (state, cpu) = cpu_state(pid).expect("this process exists");
        assert!(matches!(state, 'R' | 'S'));
        assert!(cpu > Duration::ZERO);
        assert!(group_members(sample.pgid).contains(&pid));
    }

    #[test]
    fn a_missing_process_is_none() {
        // Pid numbers stop well below i32::MAX (pid_max is at most 2^22).
        assert!(sample(u32::MAX - 1).is_none());
        assert!(cpu_state(u32::MAX - 1).is_none());
    }
}
