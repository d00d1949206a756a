//! Processes a replica started outside its process group: a program that daemonizes itself (fork,
//! `setsid`, exit, as nginx and redis do by default) escapes the group that stopping a replica signals,
//! and its launcher's exit looks like the service ending. Left alone, the daemon would live on
//! unsupervised and hold the port against the next start. As systemd stops what is left in a
//! `Type=simple` service's cgroup, mend stops what a replica left outside its group.
//!
//! Such processes are recognised by the tag in their environment (a random token per run of mend, with
//! the replica's service and index), or, since programs that write their process title over their
//! environment lose the tag (nginx and redis do), as *suspects* (see [`left_behind`]) that listen on the
//! replica's port: at the leader's exit, a few times in the seconds after, and before the next start.

use std::io;
use std::path::Path;
use std::time::Duration;

use mend_observe::process::{self, StatFacts};
use mend_types::ReplicaId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pidfile;

/// Environment key of the tag of the run of mend that started a replica: a random token, so that nothing
/// else carries it by accident (a user's shell, another mend).
pub const RUN_TAG_ENV: &str = "MEND_RUN_TAG";
/// Environment key of a replica's service.
pub const SERVICE_ENV: &str = "MEND_SERVICE";
/// Environment key of a replica's index.
pub const REPLICA_ENV: &str = "MEND_REPLICA";
/// Environment key of the generation of the replica's process that started a process (1 for the first
/// process of the replica, 2 for its first replacement, ...): tells what a crashed leader left from what
/// its replacement, which carries the same replica tag, started since.
pub const GENERATION_ENV: &str = "MEND_GENERATION";

/// The run tag's file, next to the pid files: the next mend reads it to find what this run left.
const RUN_TAG_FILE: &str = "run.tag";

/// A process, identified across pid reuse by its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    /// Its pid.
    pub pid: u32,
    /// When it started, in clock ticks after boot.
    pub start_ticks: u64,
}

impl ProcessId {
    /// The live (not zombie) process `pid`.
    pub fn of(pid: u32) -> Option<Self> {
        let facts = process::stat_facts(pid)?;
        (!matches!(facts.state, 'Z' | 'X')).then_some(Self { pid, start_ticks: facts.start_ticks })
    }

    /// Whether this very process still runs (not a later one that reused the pid, nor a zombie).
    pub fn is_running(self) -> bool {
        Self::of(self.pid) == Some(self)
    }
}

/// A new random tag for this run, recorded in the state directory for the next mend.
pub fn new_run_tag(state_dir: &Path) -> io::Result<String> {
    let tag = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let dir = pidfile::run_dir(state_dir);
    crate::statedir::ensure_dir(&dir)?;
    crate::statedir::replace_file(&dir.join(RUN_TAG_FILE), tag.as_bytes())?;
    Ok(tag)
}

/// The tag the last run recorded, if any.
pub fn recorded_run_tag(state_dir: &Path) -> Option<String> {
    let tag = crate::statedir::read_to_string(&pidfile::run_dir(state_dir).join(RUN_TAG_FILE)).ok()?;
    let tag = tag.trim();
    (!tag.is_empty()).then(|| tag.to_owned())
}

/// The environment that tags process `generation` of a replica as started by this run.
pub fn tag_environment(run_tag: &str, id: &ReplicaId, generation: u64) -> [(String, String); 4] {
    [
        (RUN_TAG_ENV.into(), run_tag.into()),
        (SERVICE_ENV.into(), id.service.to_string()),
        (REPLICA_ENV.into(), id.index.to_string()),
        (GENERATION_ENV.into(), generation.to_string()),
    ]
}

/// Live processes tagged with `run_tag` (and, given `replica`, as that replica's).
pub fn tagged(run_tag: &str, replica: Option<&ReplicaId>) -> Vec<ProcessId> {
    let index = replica.map(|id| id.index.to_string());
    let mut entries = vec![(RUN_TAG_ENV, run_tag)];
    if let (Some(id), Some(index)) = (replica, index.as_deref()) {
        entries.extend([(SERVICE_ENV, id.service.as_str()), (REPLICA_ENV, index)]);
    }
    process::with_environment(&entries).into_iter().filter_map(ProcessId::of).collect()
}

/// A leader's life, in clock ticks after boot.
#[derive(Clone, Copy, Debug)]
pub struct LeaderLife {
    /// Its pid, which is also its process group's id.
    pub pid: u32,
    /// Which process of the replica it was (see [`GENERATION_ENV`]).
    pub generation: u64,
    /// When it started.
    pub started: u64,
    /// When it was seen to have exited.
    pub exited: u64,
}

/// What a replica left outside its group when its leader exited.
#[derive(Debug, Default)]
pub struct LeftBehind {
    /// Recognised as the replica's: to be stopped now.
    pub recognised: Vec<ProcessId>,
    /// Could be the replica's (see [`left_behind`]): the replica's if they listen on its port later (a
    /// daemon that binds after its launcher exited, as redis does).
    pub suspects: Vec<ProcessId>,
}

impl LeftBehind {
    /// Without the suspects that belong to `successor`, the replica's next leader, started while the
    /// search ran: itself, its group and its children. (Processes recognised by their tag are told apart
    /// by their generation already.)
    pub fn without_successor(self, successor: ProcessId) -> Self {
        let keep = |process: &ProcessId| {
            *process != successor
                && process::stat_facts(process.pid)
                    .is_none_or(|facts| facts.pgid != successor.pid as i32 && facts.ppid != successor.pid as i32)
        };
        Self { recognised: self.recognised, suspects: self.suspects.into_iter().filter(keep).collect() }
    }
}

/// What replica `id`, whose leader lived `leader`, left running outside its process group: processes
/// with its tag, and suspects that listen on its `port`.
///
/// Suspects are the live processes outside the leader's group that started during its life, in a session
/// that also began then (the daemon's `setsid`) or whose first leader is gone (a double fork), and that
/// are in mend's own control groups, as everything mend's replicas start stays: a service that another
/// manager started (systemd gives each its own cgroup) or a new login never is.
pub fn left_behind(run_tag: &str, id: &ReplicaId, leader: LeaderLife, port: Option<u16>) -> LeftBehind {
    let index = id.index.to_string();
    let tag = process::environment_entries(&[
        (RUN_TAG_ENV, run_tag),
        (SERVICE_ENV, id.service.as_str()),
        (REPLICA_ENV, &index),
    ]);
    // One tick of slack on each side: start times are counted in ticks.
    let during_life =
        |ticks: u64| ticks.saturating_add(1) >= leader.started && ticks <= leader.exited.saturating_add(1);
    let session_began_during_life = |facts: &StatFacts| {
        facts.session > 0
            && u32::try_from(facts.session)
                .ok()
                .and_then(process::stat_facts)
                .is_none_or(|first| during_life(first.start_ticks))
    };
    let me = std::process::id();
    let my_cgroups = process::cgroups(me);
    let mut recognised = Vec::new();
    let mut suspects = Vec::new();
    // One pass over /proc, reading each process's stat only: what the replica started, it started after
    // its leader did, so the environment and control groups of older processes (most of a host's) are
    // never read.
    for pid in process::all_pids() {
        let Some(facts) = process::stat_facts(pid) else { continue };
        if pid == me
            || matches!(facts.state, 'Z' | 'X')
            || facts.pgid == leader.pid as i32
            || facts.start_ticks.saturating_add(1) < leader.started
        {
            continue;
        }
        let found = ProcessId { pid, start_ticks: facts.start_ticks };
        let environment = process::environment(pid).unwrap_or_default();
        if process::environment_holds(&environment, &tag) {
            // The replica's: this leader's or an earlier one's, not a later one's (the leader that
            // replaced this one runs meanwhile, with the same replica tag).
            let generation = process::environment_value(&environment, GENERATION_ENV).and_then(|g| g.parse().ok());
            if generation.is_none_or(|generation: u64| generation <= leader.generation) {
                recognised.push(found);
            }
        } else if during_life(facts.start_ticks)
            && session_began_during_life(&facts)
            && my_cgroups.is_some()
            && process::cgroups(pid) == my_cgroups
        {
            suspects.push(found);
        }
    }
    if let Some(port) = port {
        recognised.extend(holding(port, &suspects));
    }
    let suspects = suspects.into_iter().filter(|s| !recognised.contains(s)).collect();
    LeftBehind { recognised, suspects }
}

/// Runs `job` on mend's scanning thread, under `SCHED_IDLE` (it runs only on a CPU nothing else wants;
/// nice 19 if that is refused), and returns its result: a search of every process on the host yields to
/// everything else, so that a replica's replacement starting meanwhile, and the services on a small host,
/// keep their CPU.
pub fn scan_at_low_priority<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    type Job = Box<dyn FnOnce() + Send>;
    static SCANNER: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>> =
        std::sync::OnceLock::new();
    let (reply, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(job());
    });
    let scanner = SCANNER.get_or_init(|| {
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new().name("mend-scan".into()).spawn(move || {
            use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
            let native = thread_priority::thread_native_id();
            let idle = thread_priority::set_thread_priority_and_policy(
                native,
                ThreadPriority::Min,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            );
            let lowest = idle.or_else(|_| {
                thread_priority::set_thread_priority_and_policy(
                    native,
                    ThreadPriority::Min,
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
                )
            });
            if let Err(error) = lowest {
                tracing::debug!(?error, "the scanning thread runs at normal priority");
            }
            while let Ok(job) = inbox.recv() {
                job();
            }
        });
        thread.ok().map(|_| std::sync::Mutex::new(jobs))
    });
    let refused = match scanner {
        Some(jobs) => match jobs.lock() {
            Ok(jobs) => jobs.send(job).err().map(|error| error.0),
            Err(_) => Some(job),
        },
        None => Some(job),
    };
    // No scanning thread (it could not be started): a thread of the job's own.
    if let Some(job) = refused {
        let _ = std::thread::Builder::new().name("mend-scan".into()).spawn(job);
    }
    result
}

/// Before replica `id` starts again while something listens on its port: every process with its tag (no
/// leader of it runs, so they are all left over) and the `suspects` its last leader left that listen.
pub fn leftovers_before_start(run_tag: &str, id: &ReplicaId, port: u16, suspects: &[ProcessId]) -> Vec<ProcessId> {
    let mut found = tagged(run_tag, Some(id));
    for holder in holding(port, suspects) {
        if !found.contains(&holder) {
            found.push(holder);
        }
    }
    found
}

/// The `suspects` that listen on `port`.
pub fn holding(port: u16, suspects: &[ProcessId]) -> Vec<ProcessId> {
    if suspects.is_empty() {
        return Vec::new();
    }
    process::listeners(port).into_iter().filter_map(ProcessId::of).filter(|p| suspects.contains(p)).collect()
}

/// Asks `processes` to stop (`signal`, then SIGCONT in case they are stopped), waits up to `grace`, kills
/// the survivors; returns those it had to kill. A pid is signalled only while it is still the process
/// found (never a later one that reused the pid).
pub async fn stop(processes: &[ProcessId], signal: Signal, grace: Duration) -> Vec<ProcessId> {
    let send = |process: ProcessId, signal: Signal| {
        if process.is_running() {
            let _ = kill(Pid::from_raw(process.pid as i32), signal);
        }
    };
    for &process in processes {
        send(process, signal);
        send(process, Signal::SIGCONT);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline && processes.iter().any(|p| p.is_running()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivors: Vec<ProcessId> = processes.iter().copied().filter(|p| p.is_running()).collect();
    for &process in &survivors {
        send(process, Signal::SIGKILL);
    }
    // Gone before the caller binds their port again.
    for _ in 0..50 {
        if !survivors.iter().any(|p| p.is_running()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    survivors
}

/// Pids of a list of processes, for events.
pub fn pids(processes: &[ProcessId]) -> Vec<u32> {
    processes.iter().map(|p| p.pid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_tag_is_recorded_for_the_next_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(recorded_run_tag(dir.path()), None);
        let first = new_run_tag(dir.path()).expect("write");
        assert_eq!(first.len(), 32);
        assert_eq!(recorded_run_tag(dir.path()).as_deref(), Some(first.as_str()));
        let second = new_run_tag(dir.path()).expect("write");
        assert_ne!(first, second);
    }

    /// A loopback listener in python, optionally in a session of its own; returns it and its port.
    fn listener(own_session: bool) -> (std::process::Child, u16) {
        let script = "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
                      print(s.getsockname()[1], flush=True); time.sleep(30)";
        let mut command = std::process::Command::new(if own_session { "setsid" } else { "python3" });
        if own_session {
            command.arg("python3");
        }
        let mut child =
            command.args(["-c", script]).stdout(std::process::Stdio::piped()).spawn().expect("python3 listener");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("its port");
        (child, line.trim().parse().expect("a port"))
    }

    #[test]
    fn only_a_listener_in_a_session_begun_during_the_leaders_life_is_taken() {
        let started = process::ticks_since_boot().expect("uptime");
        let (mut same_session, old_session_port) = listener(false);
        let (mut own_session, new_session_port) = listener(true);
        let leader =
            LeaderLife { pid: u32::MAX, generation: 1, started, exited: process::ticks_since_boot().expect("uptime") };
        let id = ReplicaId { service: mend_types::ServiceName::new("web").expect("valid"), index: 0 };
        let nobody = "a tag nothing carries";
        // Started during the leader's life, but in this test's session, which is older: not the replica's.
        assert!(left_behind(nobody, &id, leader, Some(old_session_port)).recognised.is_empty());
        let found = left_behind(nobody, &id, leader, Some(new_session_port));
        assert_eq!(pids(&found.recognised), [own_session.id()]);
        // Not during the leader's life: nothing.
        let before = LeaderLife { exited: started.saturating_sub(200), started: started.saturating_sub(400), ..leader };
        assert!(left_behind(nobody, &id, before, Some(new_session_port)).recognised.is_empty());
        for child in [&mut same_session, &mut own_session] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    #[test]
    fn the_search_takes_the_leaders_generation_and_earlier_ones_never_a_later_ones() {
        let started = process::ticks_since_boot().expect("uptime");
        let id = ReplicaId { service: mend_types::ServiceName::new("gen").expect("valid"), index: 3 };
        let tag = format!("{:016x}", fastrand::u64(..));
        let tagged_sleeper = |generation: u64| {
            let mut command = std::process::Command::new("sleep");
            command.arg("30").envs(tag_environment(&tag, &id, generation));
            command.spawn().expect("sleep")
        };
        let mut children = [tagged_sleeper(1), tagged_sleeper(2), tagged_sleeper(3)];
        let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
        let leader =
            LeaderLife { pid: u32::MAX, generation: 2, started, exited: process::ticks_since_boot().expect("uptime") };
        let mut found = pids_of(left_behind(&tag, &id, leader, None).recognised);
        found.sort_unstable();
        assert_eq!(found, [pids[0], pids[1]], "generation 3 is the successor's");
        // Another replica's tag is not this one's.
        let other = ReplicaId { index: 4, ..id.clone() };
        assert!(left_behind(&tag, &other, leader, None).recognised.is_empty());
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pids_of(processes: Vec<ProcessId>) -> Vec<u32> {
        processes.into_iter().map(|p| p.pid).collect()
    }

    #[tokio::test]
    async fn stop_signals_only_the_process_it_found() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn");
        let found = ProcessId::of(child.id()).expect("running");
        assert!(found.is_running());
        // The same pid with another start time is another process: left alone.
        let impostor = ProcessId { pid: found.pid, start_ticks: found.start_ticks + 1 };
        assert!(!impostor.is_running());
        assert!(stop(&[impostor], Signal::SIGTERM, Duration::from_millis(50)).await.is_empty());
        assert!(found.is_running(), "a mismatched start time must not be signalled");
        assert!(stop(&[found], Signal::SIGTERM, Duration::from_secs(5)).await.is_empty());
        let _ = child.wait();
        assert!(!found.is_running());
    }
}
