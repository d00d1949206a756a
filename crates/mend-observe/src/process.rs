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

/// Most processes counted in one family, so that a fork bomb cannot make sampling unbounded.
const MAX_FAMILY: usize = 1024;

/// `pid` and its descendants, from `/proc/PID/task/TID/children` (leader first).
pub fn family(pid: u32) -> Vec<u32> {
    let mut members = vec![pid];
    let mut next = 0;
    while next < members.len() && members.len() < MAX_FAMILY {
        let parent = members[next];
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
            for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                if members.len() < MAX_FAMILY && !members.contains(&child) {
                    members.push(child);
                }
            }
        }
    }
    members
}

/// A snapshot of `pid` and its descendants together: the leader's state, group and start time, with CPU,
/// memory, threads and fds summed over the family (a shell and its program, a master and its workers).
pub fn sample_family(pid: u32) -> Option<ProcessSample> {
    let mut total = sample(pid)?;
    for member in family(pid).into_iter().skip(1) {
        if let Some(child) = sample(member) {
            total.cpu_seconds += child.cpu_seconds;
            total.rss_bytes = total.rss_bytes.saturating_add(child.rss_bytes);
            total.threads += child.threads;
            total.open_fds = match (total.open_fds, child.open_fds) {
                (Some(a), Some(b)) => Some(a + b),
                (a, _) => a,
            };
        }
    }
    Some(total)
}

/// Reads a snapshot of `pid` alone; None when the process is gone.
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

/// Scheduler state and CPU time of `pid` and its descendants: the CPU time is summed over the family; the
/// state is `T` only when every member is stopped, `R` when any member runs, else the leader's.
///
/// Probes read this before and after waiting, to see whether an unresponsive replica is stopped, busy or
/// idle, whether it is one process or a shell with its program.
pub fn family_cpu_state(pid: u32) -> Option<(char, Duration)> {
    let (leader_state, mut cpu) = cpu_state(pid)?;
    let mut all_stopped = leader_state == 'T';
    let mut any_running = leader_state == 'R';
    for member in family(pid).into_iter().skip(1) {
        if let Some((state, member_cpu)) = cpu_state(member) {
            cpu += member_cpu;
            all_stopped &= state == 'T';
            any_running |= state == 'R';
        }
    }
    let state = if all_stopped {
        'T'
    } else if any_running {
        'R'
    } else if leader_state == 'T' {
        'S'
    } else {
        leader_state
    };
    Some((state, cpu))
}

/// Scheduler state and precise CPU time (nanoseconds, summed over threads) of `pid`.
///
/// Thread schedstat gives nanoseconds; the tick counters of /proc/PID/stat are the fallback.
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

/// The pids of every live process in process group `pgid` (scans /proc). Zombies are not counted: they
/// hold no port and no memory, cannot be signalled, and stay until their new parent reaps them (an init
/// that reaps lazily, as some container inits do, would otherwise make a dead group look alive).
pub fn group_members(pgid: i32) -> Vec<u32> {
    let Ok(processes) = procfs::process::all_processes() else { return Vec::new() };
    processes
        .filter_map(Result::ok)
        .filter_map(|process| process.stat().ok())
        .filter(|stat| stat.pgrp == pgid && !matches!(stat.state, 'Z' | 'X'))
        .filter_map(|stat| u32::try_from(stat.pid).ok())
        .collect()
}

/// Live processes (other than this one) whose environment holds every `KEY=value` of `entries`, from
/// `/proc/PID/environ`: how mend finds what a replica started outside its process group (a program that
/// daemonized itself, with `setsid`). The environment read is the one the process was started with;
/// processes of other users, whose environment is unreadable, never match.
pub fn with_environment(entries: &[(&str, &str)]) -> Vec<u32> {
    let wanted = environment_entries(entries);
    let me = std::process::id();
    all_pids().into_iter().filter(|&pid| pid != me && has_environment(pid, &wanted)).collect()
}

/// `KEY=value` entries as [`has_environment`] looks for them.
pub fn environment_entries(entries: &[(&str, &str)]) -> Vec<Vec<u8>> {
    entries.iter().map(|(key, value)| format!("{key}={value}").into_bytes()).collect()
}

/// Whether the environment `pid` started with holds every entry of `wanted` (see
/// [`environment_entries`]); false when it is gone, a zombie (whose environment reads empty), or another
/// user's.
pub fn has_environment(pid: u32, wanted: &[Vec<u8>]) -> bool {
    environment(pid).is_some_and(|environ| environment_holds(&environ, wanted))
}

/// The environment `pid` started with (`/proc/PID/environ`, NUL-separated `KEY=value` pairs); None when
/// it is gone or another user's.
pub fn environment(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// Whether an `environment` (as [`environment`] reads it) holds every entry of `wanted`.
pub fn environment_holds(environment: &[u8], wanted: &[Vec<u8>]) -> bool {
    wanted.iter().all(|entry| environment.split(|&byte| byte == 0).any(|pair| pair == entry.as_slice()))
}

/// The value of `key` in an `environment` (as [`environment`] reads it).
pub fn environment_value<'a>(environment: &'a [u8], key: &str) -> Option<&'a str> {
    environment.split(|&byte| byte == 0).find_map(|pair| {
        let value = pair.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        std::str::from_utf8(value).ok()
    })
}

/// Processes (other than this one) holding a TCP socket that listens on `port`, on any address: from
/// the socket tables and every process's fds (`/proc/*/fd`), so only processes whose fds are readable.
pub fn listeners(port: u16) -> Vec<u32> {
    let inodes = listening_sockets(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(processes) = procfs::process::all_processes() else { return Vec::new() };
    processes
        .filter_map(Result::ok)
        .filter(|process| u32::try_from(process.pid).is_ok_and(|pid| pid != me))
        .filter(|process| {
            process.fd().is_ok_and(|fds| {
                fds.filter_map(Result::ok)
                    .any(|fd| matches!(fd.target, procfs::process::FDTarget::Socket(inode) if inodes.contains(&inode)))
            })
        })
        .filter_map(|process| u32::try_from(process.pid).ok())
        .collect()
}

/// The command line of `pid` (arguments joined by spaces), at most `max_chars` characters; None when the
/// process is gone or is a zombie.
pub fn command_line(pid: u32, max_chars: usize) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let line = raw.split(|&byte| byte == 0).filter(|arg| !arg.is_empty()).map(String::from_utf8_lossy);
    let line = line.collect::<Vec<_>>().join(" ");
    (!line.is_empty()).then(|| line.chars().take(max_chars).collect())
}

/// What one read of `/proc/PID/stat` says about a process's identity and place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFacts {
    /// Scheduler state letter.
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id (the pid of the session's first leader; 0 for kernel threads).
    pub session: i32,
    /// Start time in clock ticks after boot: tells a process from a later one that reused its pid.
    pub start_ticks: u64,
}

/// Reads [`StatFacts`] of `pid`; None when it is gone. Cheap on purpose (one open and one read, no
/// allocation for the contents): mend reads it for every process on the host after a replica's exit.
pub fn stat_facts(pid: u32) -> Option<StatFacts> {
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buffer = [0u8; 1024];
    let length = file.read(&mut buffer).ok()?;
    parse_stat_facts(buffer.get(..length)?)
}

/// The [`StatFacts`] in the text of `/proc/PID/stat`.
fn parse_stat_facts(stat: &[u8]) -> Option<StatFacts> {
    // The command name (field 2) is in brackets and may hold spaces and brackets: fields resume after the
    // last closing bracket.
    let close = stat.iter().rposition(|&byte| byte == b')')?;
    let mut fields = stat.get(close + 2..)?.split(|&byte| byte == b' ');
    let number = |field: &[u8]| std::str::from_utf8(field).ok()?.trim_end().parse::<i64>().ok();
    let state = char::from(*fields.next()?.first()?);
    let ppid = i32::try_from(number(fields.next()?)?).ok()?;
    let pgid = i32::try_from(number(fields.next()?)?).ok()?;
    let session = i32::try_from(number(fields.next()?)?).ok()?;
    // Fields 7 to 21 (tty_nr .. itrealvalue), then the start time (22).
    let start_ticks = u64::try_from(number(fields.nth(15)?)?).ok()?;
    Some(StatFacts { state, ppid, pgid, session, start_ticks })
}

/// The control groups `pid` belongs to (`/proc/PID/cgroup`, all hierarchies); None when unreadable.
pub fn cgroups(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// Whether anything listens on TCP `port`, on any address.
pub fn is_listened(port: u16) -> bool {
    !listening_sockets(port).is_empty()
}

/// Inodes of the TCP sockets listening on `port`, on any address.
fn listening_sockets(port: u16) -> Vec<u64> {
    crate::sockets::tcp_listeners().into_iter().filter(|listener| listener.port == port).map(|l| l.inode).collect()
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc_dir.flatten().filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()).collect()
}

/// Clock ticks since boot now, on the scale of processes' start times (`/proc/uptime`).
pub fn ticks_since_boot() -> Option<u64> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // Rounded: uptime has two exact decimals, which a float multiplication may land just below.
    Some((seconds * procfs::ticks_per_second() as f64).round() as u64)
}

/// Seconds since boot at which a process with `start_ticks` started.
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / procfs::ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_facts_are_read_after_the_last_bracket_of_the_command_name() {
        let stat = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 1 0 98765 1234 56 rest\n";
        assert_eq!(
            parse_stat_facts(stat),
            Some(StatFacts { state: 'S', ppid: 1, pgid: 4242, session: 4242, start_ticks: 98765 })
        );
        assert_eq!(parse_stat_facts(b"12 (x) R 1 2"), None);
        // The real thing agrees with procfs.
        let me = std::process::id();
        let facts = stat_facts(me).expect("this process");
        let stat = Process::myself().expect("myself").stat().expect("stat");
        assert_eq!(
            (facts.ppid, facts.pgid, facts.session, facts.start_ticks),
            (stat.ppid, stat.pgrp, stat.session, stat.starttime)
        );
    }

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
    #[expect(clippy::disallowed_methods, reason = "waits in real time for a real child to fault its pages in")]
    fn a_family_includes_children_and_sums_their_memory() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        // spawn() returns once exec succeeded, possibly before the new program touched a page: its RSS
        // is 0 until it has run.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sample(child.id()).map_or(0, |s| s.rss_bytes) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let me = std::process::id();
        let members = family(me);
        assert_eq!(members[0], me);
        assert!(members.contains(&child.id()), "{members:?}");
        // The child's memory only grows while it starts (pages fault in): sampled first, it is no more
        // than what the family sample sees of it. This test process changes as other tests run beside
        // it: the smaller of a sample before and one after is what the family sample saw of it at least.
        let child_alone = sample(child.id()).expect("the child is alive");
        let before = sample(me).expect("alive");
        let together = sample_family(me).expect("alive");
        let after = sample(me).expect("alive");
        assert!(child_alone.rss_bytes > 0);
        let least_rss = before.rss_bytes.min(after.rss_bytes);
        assert!(
            together.rss_bytes + 262_144 >= least_rss + child_alone.rss_bytes,
            "{} vs {least_rss} + {}",
            together.rss_bytes,
            child_alone.rss_bytes
        );
        assert!(together.threads >= before.threads.min(after.threads) + child_alone.threads);
        assert!(family_cpu_state(me).is_some());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn processes_are_found_by_their_environment() {
        let tag = format!("test-{}", std::process::id());
        let mut tagged =
            std::process::Command::new("sleep").arg("5").env("MEND_TEST_TAG", &tag).spawn().expect("spawn");
        let mut other =
            std::process::Command::new("sleep").arg("5").env("MEND_TEST_TAG", "other").spawn().expect("spawn");
        // The environment is readable from the moment of exec.
        assert_eq!(with_environment(&[("MEND_TEST_TAG", &tag)]), [tagged.id()]);
        assert_eq!(command_line(tagged.id(), 100).as_deref(), Some("sleep 5"));
        assert_eq!(command_line(tagged.id(), 3).as_deref(), Some("sle"));
        let facts = stat_facts(tagged.id()).expect("running");
        assert!(facts.state != 'Z' && facts.start_ticks <= ticks_since_boot().expect("uptime"));
        assert_eq!(cgroups(tagged.id()), cgroups(std::process::id()), "children stay in their parent's cgroups");
        assert!(with_environment(&[("MEND_TEST_TAG", &tag), ("MEND_TEST_OTHER", "x")]).is_empty());
        assert!(with_environment(&[("MEND_TEST_TAG", &tag[..tag.len() - 1])]).is_empty(), "whole values only");
        for child in [&mut tagged, &mut other] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(with_environment(&[("MEND_TEST_TAG", &tag)]).is_empty());
    }

    #[test]
    fn the_listeners_of_a_port_are_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        // This process itself is never listed.
        assert!(listeners(port).is_empty());
        drop(listener);
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(10)"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
            .expect("port");
        let port: u16 = line.trim().parse().expect("a port");
        assert_eq!(listeners(port), [child.id()]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(listeners(port).is_empty());
    }

    #[test]
    #[expect(clippy::disallowed_methods, reason = "waits in real time for a real child to exit")]
    fn a_group_of_zombies_has_no_live_members() {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("true").process_group(0).spawn().expect("spawn true");
        let pgid = child.id() as i32;
        // Not reaped yet: a zombie, still counted by a signal to its group.
        let exited = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            sample(child.id()).is_some_and(|s| s.state == 'Z')
        });
        assert!(exited, "the child did not exit");
        assert!(nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok());
        assert_eq!(group_members(pgid), Vec::<u32>::new());
        let _ = child.wait();
    }

    #[test]
    fn a_missing_process_is_none() {
        // Pid numbers stop well below i32::MAX (pid_max is at most 2^22).
        assert!(sample(u32::MAX - 1).is_none());
        assert!(cpu_state(u32::MAX - 1).is_none());
    }
}
