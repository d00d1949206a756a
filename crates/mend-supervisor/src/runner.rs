//! The IO shell around one replica's [`Lifecycle`]: spawns and signals its process, runs its probes,
//! samples /proc, captures its output, and publishes its status.
//!
//! One task per replica. It waits for the next input (process exit, operator command, probe outcome,
//! timer, sampling tick), feeds it to the pure state machine and executes the effects. It never waits on
//! the store: events go to a non-blocking [`EventSink`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mend_config::{ProbeRole, ReleaseSpec, Service, TemplateVars};
use mend_observe::probe::{self, ResolvedCheck};
use mend_observe::process;
use mend_observe::scrape::{ScrapeJob, ScrapeStats, Scraper, ScraperHandle};
use mend_observe::series::SeriesStore;
use mend_types::{
    Clock, Event, EventKind, EventSink, ExitInfo, LastExit, ProbeOutcome, ReleaseName, ReplicaId, Timestamp,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::detached::{self, LeaderLife, LeftBehind, ProcessId};
use crate::lifecycle::{ActiveProbes, Effect, Input, Lifecycle, Policy, ReplicaState, Unready};
use crate::logs::{self, LogFile};
use crate::pidfile;
use crate::spawn::{SpawnRequest, Spawner};

/// The series sampled from a replica's process; they end with the process (the restart count,
/// `mend_replica_restarts_total`, belongs to the replica and goes on).
const PROCESS_SERIES: [&str; 6] = [
    "mend_replica_cpu_seconds_total",
    "mend_replica_cpu_percent",
    "mend_replica_resident_memory_bytes",
    "mend_replica_threads",
    "mend_replica_uptime_seconds",
    "mend_replica_open_fds",
];

/// Traffic in front of a service's replicas (mend's proxy), as the supervisor uses it.
pub trait TrafficControl: Send + Sync {
    /// Stops sending new requests to process `generation` (its pid) of replica `index` (running
    /// `release`), and resolves once
    /// its in-flight requests have finished or the drain timeout has passed. With `wait_for_others`, it
    /// first waits (bounded) until another replica can take the traffic.
    fn drain(
        self: Arc<Self>,
        release: ReleaseName,
        index: u32,
        generation: u64,
        wait_for_others: bool,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What an operator (or the supervisor) asks of a replica.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Start if not running.
    Start,
    /// Stop and stay stopped.
    Stop,
    /// Stop gracefully and start again.
    Restart,
    /// Restart the process of `generation`; nothing if it has been replaced since (two operators
    /// asking for a restart at once get one).
    Replace {
        /// The generation the caller saw.
        generation: u64,
        /// Who asks and why.
        request: crate::lifecycle::Request,
    },
    /// Stop (draining first) and end the replica's task: the replica is being removed (scale-in).
    /// Commands after it are not read.
    Retire,
    /// Take a new spec (a reload changed the service) and, with `replace`, replace the live process with
    /// one of the new spec (drained first, as a restart). Without `replace` (only the restart policy,
    /// back-off, stop signal or timeout, memory limit changed) the process runs on under the new policy;
    /// a replica without a process takes the spec for its next start.
    Respec {
        /// The service as the reload made it.
        service: Arc<Service>,
        /// Whether the process must be replaced (its command, environment, working directory, probes or
        /// metrics changed).
        replace: bool,
        /// Who asks and why.
        request: crate::lifecycle::Request,
        /// The proxy its planned stops drain through from now on (a reload may add or take one away).
        traffic: TrafficHook,
    },
}

/// The drain hook of a replica (its service's proxy), or none; equal when it is the same hook.
#[derive(Clone, Default)]
pub struct TrafficHook(pub Option<Arc<dyn TrafficControl>>);

impl std::fmt::Debug for TrafficHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "TrafficHook(proxy)" } else { "TrafficHook(none)" })
    }
}

impl PartialEq for TrafficHook {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

/// The published state of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// Replica index.
    pub index: u32,
    /// The release it runs.
    pub release: ReleaseName,
    /// Its port, if the service has ports.
    pub port: Option<u16>,
    /// Pid of the live process.
    pub pid: Option<u32>,
    /// Where it is in its life.
    pub state: ReplicaState,
    /// In the ready set (may receive traffic).
    pub ready: bool,
    /// Why a running replica is not in the ready set (past its start).
    pub unready: Option<Unready>,
    /// Down until an operator acts (or, while `waiting`, until its dependencies are ready).
    pub down: bool,
    /// Automatic restarts so far.
    pub restarts: u64,
    /// How the last process ended, and who ended it.
    pub last_exit: Option<LastExit>,
    /// When the live process started.
    pub started_at: Option<Timestamp>,
    /// Latest /proc sample of the live process (and its descendants).
    pub process: Option<ProcessStats>,
    /// Processes spawned so far: a change tells a restart happened.
    pub generation: u64,
    /// Whether the replica has been ready since it was last started (latched): dependents start on it.
    pub ever_ready: bool,
    /// The last process exited with code 0 (a one-shot that finished counts as ready for dependents).
    pub completed: bool,
}

impl ReplicaStatus {
    /// The replica has failed, as `systemctl is-failed` would say: mend gave up on it, or its process
    /// ended unsuccessfully and the restart policy does not restart it. It stays down until an operator
    /// acts.
    pub fn failed(&self) -> bool {
        match self.state {
            ReplicaState::Failed => true,
            ReplicaState::Exited => !self.last_exit.is_some_and(|last| last.exit.is_success()),
            _ => false,
        }
    }
}

/// Process metrics of a live replica, from /proc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// CPU seconds used so far.
    pub cpu_seconds: f64,
    /// CPU use over the last sampling interval, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
}

/// Everything a replica runner needs from the rest of mend.
#[derive(Clone)]
pub struct RunnerContext {
    /// Spawns processes on the long-lived spawner thread.
    pub spawner: Spawner,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Process metrics go here.
    pub series: Arc<RwLock<SeriesStore>>,
    /// mend's state directory (logs, pid files).
    pub state_dir: PathBuf,
    /// This run's tag, in every replica's environment (see `detached`).
    pub run_tag: String,
    /// How often /proc is sampled.
    pub sample_interval: Duration,
    /// Counters shared by every scraper.
    pub scrape_stats: Arc<ScrapeStats>,
    /// Where captured output lines go besides the log files (the log miner), if anywhere.
    pub lines: Option<Arc<dyn mend_types::LineSink>>,
}

/// The supervisor's handle on a running replica task.
pub struct ReplicaHandle {
    /// Which replica.
    pub id: ReplicaId,
    /// The release it runs (for its whole life: another release is another replica).
    pub release: ReleaseName,
    control: mpsc::Sender<Control>,
    status: watch::Receiver<ReplicaStatus>,
    task: JoinHandle<()>,
}

impl ReplicaHandle {
    /// Starts the task of replica `index` of `service`, running `release`; the replica waits for
    /// [`Control::Start`]. With `traffic`, planned stops drain the replica first.
    pub fn start(
        service: Arc<Service>,
        release: ReleaseSpec,
        index: u32,
        ctx: RunnerContext,
        traffic: Option<Arc<dyn TrafficControl>>,
    ) -> Self {
        let id = ReplicaId::new(service.name.clone(), index);
        let release_name = release.name.clone();
        let (control, control_rx) = mpsc::channel(16);
        let port = service.port_of(index);
        let initial = ReplicaStatus {
            index,
            release: release.name.clone(),
            port,
            pid: None,
            state: ReplicaState::Waiting,
            ready: false,
            unready: None,
            down: true,
            restarts: 0,
            last_exit: None,
            started_at: None,
            process: None,
            generation: 0,
            ever_ready: false,
            completed: false,
        };
        let (status_tx, status) = watch::channel(initial);
        let runner = Runner::new(id.clone(), service, release, ctx, status_tx, traffic);
        let task = tokio::spawn(runner.run(control_rx));
        Self { id, release: release_name, control, status, task }
    }

    /// Sends a command; false if the replica task has ended.
    pub async fn send(&self, control: Control) -> bool {
        self.control.send(control).await.is_ok()
    }

    /// True once the replica's task has ended (after [`Control::Retire`], or with mend).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// A sender of commands to this replica.
    pub fn control_sender(&self) -> mpsc::Sender<Control> {
        self.control.clone()
    }

    /// The current status.
    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// Ends the task (after the replica is stopped) and waits for it.
    pub async fn join(self) {
        drop(self.control);
        let _ = self.task.await;
    }
}

struct Runner {
    id: ReplicaId,
    traffic: Option<Arc<dyn TrafficControl>>,
    service: Arc<Service>,
    release: ReleaseSpec,
    ctx: RunnerContext,
    machine: Lifecycle,
    status: watch::Sender<ReplicaStatus>,
    child: Option<Child>,
    log: Option<Arc<Mutex<LogFile>>>,
    /// Running probe tasks, with the pid each one probes.
    probes: HashMap<ProbeRole, (u32, JoinHandle<()>)>,
    /// The metrics scraper of the live process, if the service has metrics.
    scraper: Option<(u32, ScraperHandle)>,
    probe_tx: mpsc::Sender<(ProbeRole, u32, ProbeOutcome)>,
    probe_rx: mpsc::Receiver<(ProbeRole, u32, ProbeOutcome)>,
    started_at: Option<Timestamp>,
    generation: u64,
    ever_ready: bool,
    /// Consecutive samples that found every process of the replica stopped.
    stopped_samples: u32,
    last_cpu: Option<(f64, std::time::Instant)>,
    process_stats: Option<ProcessStats>,
    /// The last leader spawned, and when it started (clock ticks after boot, from /proc).
    last_leader: Option<(u32, u64)>,
    /// Processes that may be what the last leader daemonized (see `detached::LeftBehind`), and until
    /// when they are looked at.
    suspects: Vec<ProcessId>,
    suspects_until: Option<tokio::time::Instant>,
    /// Searches for what exited leaders left outside their group. They scan every process on the host, so
    /// they run beside the restart, at the lowest CPU priority; only a start that finds its port taken
    /// (and the replica's end) waits for them. Their results arrive on `found_rx`.
    searches: usize,
    found_tx: mpsc::UnboundedSender<(LeaderLife, LeftBehind)>,
    found_rx: mpsc::UnboundedReceiver<(LeaderLife, LeftBehind)>,
    /// Stops of what the searches found, under way.
    stops: JoinSet<()>,
}

/// How long after a leader's exit the processes suspected of being what it daemonized are looked at
/// before the next start: a daemon binds within moments of its launcher's exit.
const SUSPECTS_KEPT: Duration = Duration::from_secs(60);

/// How long a new process's scrape failures are not events until it is first scraped (or ready by a
/// probe): the first scrapes usually come before the replica listens.
const SCRAPE_STARTUP_GRACE: Duration = Duration::from_secs(30);

/// Stops what a replica's leader left outside its group, with an event that says why.
#[derive(Clone)]
struct DetachedStopper {
    id: ReplicaId,
    leader: u32,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    signal: Signal,
    grace: Duration,
}

impl DetachedStopper {
    async fn stop(&self, processes: &[ProcessId]) {
        if processes.is_empty() {
            return;
        }
        let listed: Vec<String> = processes
            .iter()
            .map(|p| format!("{} ({})", p.pid, process::command_line(p.pid, 80).unwrap_or_else(|| "gone".into())))
            .collect();
        let message = format!(
            "pid {} left {} process(es) running outside its process group: {}; stopping them. A program \
             that daemonizes itself cannot be supervised: run it in the foreground (nginx -g 'daemon off;', \
             redis-server --daemonize no, ...)",
            self.leader,
            processes.len(),
            listed.join(", ")
        );
        let pids = detached::pids(processes);
        let event = Event::new(self.clock.wall(), EventKind::Detached, message)
            .replica(&self.id)
            .detail("leader", json!(self.leader))
            .detail("pids", json!(pids));
        tracing::warn!(replica = %self.id, leader = self.leader, ?pids, "stopping processes left outside the replica's group");
        self.events.emit(event);
        let killed = detached::stop(processes, self.signal, self.grace).await;
        if !killed.is_empty() {
            tracing::warn!(replica = %self.id, pids = ?detached::pids(&killed), "detached processes did not stop in time: killed");
        }
    }

    /// Looks at the `suspects` a few times over the next seconds; stops those that take `port`.
    async fn watch(self, port: u16, suspects: Vec<ProcessId>) {
        for wait in
            [Duration::from_millis(500), Duration::from_millis(1500), Duration::from_secs(3), Duration::from_secs(5)]
        {
            tokio::time::sleep(wait).await;
            let looked_at = suspects.clone();
            let holders =
                tokio::task::spawn_blocking(move || detached::holding(port, &looked_at)).await.unwrap_or_default();
            if !holders.is_empty() {
                self.stop(&holders).await;
                return;
            }
            if !suspects.iter().any(|suspect| suspect.is_running()) {
                return;
            }
        }
    }
}

async fn wait_exit(child: &mut Option<Child>) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    let Some(child) = child else { return std::future::pending().await };
    match child.wait().await {
        Ok(status) => ExitInfo { code: status.code(), signal: status.signal(), core_dumped: status.core_dumped() },
        // Waiting failed (should not happen for our own child): report it as an unknown exit.
        Err(_) => ExitInfo { code: None, signal: None, core_dumped: false },
    }
}

impl Runner {
    fn new(
        id: ReplicaId,
        service: Arc<Service>,
        release: ReleaseSpec,
        ctx: RunnerContext,
        status: watch::Sender<ReplicaStatus>,
        traffic: Option<Arc<dyn TrafficControl>>,
    ) -> Self {
        let (probe_tx, probe_rx) = mpsc::channel(16);
        let (found_tx, found_rx) = mpsc::unbounded_channel();
        Self {
            traffic,
            machine: Lifecycle::new(Policy::of(&service)),
            release,
            id,
            service,
            ctx,
            status,
            child: None,
            log: None,
            probes: HashMap::new(),
            scraper: None,
            probe_tx,
            probe_rx,
            started_at: None,
            generation: 0,
            ever_ready: false,
            stopped_samples: 0,
            last_cpu: None,
            process_stats: None,
            last_leader: None,
            suspects: Vec::new(),
            suspects_until: None,
            searches: 0,
            found_tx,
            found_rx,
            stops: JoinSet::new(),
        }
    }

    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let mut sampling = tokio::time::interval(self.ctx.sample_interval);
        sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut control_open = true;
        loop {
            let deadline = self.machine.next_deadline().map(tokio::time::Instant::from_std);
            let input = tokio::select! {
                biased;
                exit = wait_exit(&mut self.child) => {
                    self.child = None;
                    if let Some(pid) = self.machine.pid() {
                        // Before stopping anything: the leader's life ends now, not after the stops.
                        let exited_ticks = process::ticks_since_boot();
                        self.stop_group_remnants(pid).await;
                        self.search_left_behind(exited_ticks);
                    }
                    pidfile::remove(&self.ctx.state_dir, &self.id);
                    self.mark_process_series_stale();
                    Input::Exited(exit)
                }
                command = control.recv(), if control_open => match command {
                    Some(Control::Start) => Input::Start,
                    Some(Control::Stop) => Input::Stop,
                    Some(Control::Restart) => Input::Restart(crate::lifecycle::Request::operator(None)),
                    Some(Control::Replace { generation, request }) if generation == self.generation => {
                        Input::Restart(request)
                    }
                    // Already replaced since the caller looked: that restart is the one asked for.
                    Some(Control::Replace { .. }) => continue,
                    Some(Control::Respec { service, replace, request, traffic }) => {
                        self.machine.set_policy(crate::lifecycle::Policy::of(&service));
                        self.traffic = traffic.0;
                        // The replica keeps its release; what that release runs comes from the new spec
                        // (a release the reload no longer lists keeps running as it was).
                        if let Some(release) = service.release(&self.release.name) {
                            self.release = release.clone();
                        }
                        // New rotation limits: the log file is opened again at the next start (the
                        // running process's output goes on to the file it has).
                        if service.logs != self.service.logs {
                            self.log = None;
                        }
                        self.service = service;
                        if !replace || self.machine.pid().is_none() {
                            self.publish();
                            continue;
                        }
                        Input::Restart(request)
                    }
                    Some(Control::Retire) => {
                        control_open = false;
                        Input::Stop
                    }
                    None => {
                        // The supervisor is gone: never leave the process behind unsupervised.
                        control_open = false;
                        Input::Stop
                    }
                },
                Some((role, pid, outcome)) = self.probe_rx.recv() => Input::Probe { role, pid, outcome },
                Some((leader, left)) = self.found_rx.recv(), if self.searches > 0 => {
                    self.searches -= 1;
                    self.stop_left_behind(leader, left);
                    continue;
                }
                Some(_) = self.stops.join_next(), if !self.stops.is_empty() => continue,
                () = async { if let Some(deadline) = deadline { tokio::time::sleep_until(deadline).await } else { std::future::pending().await } } => Input::Timer,
                _ = sampling.tick() => {
                    self.record_presence();
                    match self.sample() {
                        Some(exceeded) => exceeded,
                        None => {
                            self.publish();
                            continue;
                        }
                    }
                }
            };
            self.apply(input).await;
            if !control_open && self.child.is_none() {
                break;
            }
        }
        // What the last leaders left is stopped before the replica's task ends, as at every exit.
        self.settle_left_behind().await;
        self.sync_probes(ActiveProbes::default());
        self.sync_scraper(ActiveProbes::default());
        // The replica itself is gone (scaled in, or mend stops): so are its series.
        self.end_series(&["mend_replica_up", "mend_replica_ready", "mend_replica_restarts_total"]);
    }

    async fn apply(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let effects = self.machine.handle(input, self.ctx.clock.now(), fastrand::f64() * 2.0 - 1.0);
            for effect in effects {
                match effect {
                    Effect::Spawn => match self.spawn().await {
                        Ok(pid) => queue.push_back(Input::Spawned { pid }),
                        Err(error) => queue.push_back(Input::SpawnFailed { error }),
                    },
                    Effect::Drain { wait_for_others } => {
                        if let (Some(traffic), Some(pid)) = (self.traffic.clone(), self.machine.pid()) {
                            // Out of the ready set first, so that the route table drops it at once.
                            self.publish();
                            traffic
                                .drain(self.release.name.clone(), self.id.index, u64::from(pid), wait_for_others)
                                .await;
                            self.machine.restart_stop_clock(self.ctx.clock.now());
                        }
                    }
                    Effect::Signal(signal) => self.signal(signal),
                    Effect::Kill => self.signal(Signal::SIGKILL as i32),
                    Effect::Event { kind, message, details } => {
                        let mut event = Event::new(self.ctx.clock.wall(), kind, message).replica(&self.id);
                        event.details = details;
                        // A replica that cannot start is degraded until someone acts (a program to install,
                        // a port to free); the rest is its life as planned.
                        if kind == EventKind::MendTrouble && event.details.get("over").is_none() {
                            // An operator must act: mend itself is short of file descriptors, memory or CPU.
                            tracing::error!(replica = %self.id, kind = %kind, "{}", event.message);
                        } else if kind == EventKind::SpawnFailed {
                            tracing::warn!(replica = %self.id, kind = %kind, "{}", event.message);
                        } else {
                            tracing::info!(replica = %self.id, kind = %kind, "{}", event.message);
                        }
                        self.ctx.events.emit(event);
                    }
                }
            }
        }
        if self.machine.pid().is_none() {
            self.started_at = None;
            self.process_stats = None;
            self.last_cpu = None;
        }
        self.sync_probes(self.machine.active_probes());
        self.sync_scraper(self.machine.active_probes());
        self.publish();
    }

    fn vars(&self) -> TemplateVars<'_> {
        TemplateVars {
            port: self.service.port_of(self.id.index),
            replica: self.id.index,
            service: self.service.name.as_str(),
        }
    }

    async fn spawn(&mut self) -> Result<u32, String> {
        let port = self.service.port_of(self.id.index);
        if let Some(port) = port {
            self.clear_port(port).await?;
        }
        let vars = self.vars();
        let argv: Vec<String> = self.release.command.iter().map(|arg| arg.render(&vars)).collect();
        let mut env: Vec<(String, String)> = Vec::new();
        if let Some(port) = port {
            env.push(("MEND_PORT".into(), port.to_string()));
        }
        env.push(("MEND_RELEASE".into(), self.release.name.as_str().to_owned()));
        env.extend(self.service.env_of(&self.release).iter().map(|(key, value)| (key.clone(), value.render(&vars))));
        // Last, so that a service's own `env` cannot hide a replica from `detached`.
        env.extend(detached::tag_environment(&self.ctx.run_tag, &self.id, self.generation + 1));
        let request = SpawnRequest {
            argv,
            shell: self.service.shell,
            env,
            working_dir: self.service.working_dir_of(&self.release).to_path_buf(),
        };

        let log = match &self.log {
            Some(log) => log.clone(),
            None => {
                let dir = self.service.log_dir(&self.ctx.state_dir);
                let file =
                    LogFile::open(&dir, self.id.index, self.service.logs.max_file_bytes, self.service.logs.keep_files)
                        .map_err(|error| format!("cannot open log file in {}: {error}", dir.display()))?;
                let log = Arc::new(Mutex::new(file));
                self.log = Some(log.clone());
                log
            }
        };
        let mut spawned = self.ctx.spawner.spawn(request).await.map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                let key = if self.service.release(&self.release.name).is_some()
                    && self.service.releases.len() > 1
                    && self.release.name.as_str() != "canary"
                {
                    format!("release.{}.command", self.release.name)
                } else if self.release.name.as_str() == "canary" && self.service.canary.is_some() {
                    "canary.command".to_owned()
                } else {
                    "command".to_owned()
                };
                format!("{error}: install it, or give its path in service.{}.{key}", self.service.name)
            } else {
                error.to_string()
            }
        })?;
        let capture = |stream| logs::Capture {
            log: log.clone(),
            stream,
            clock: self.ctx.clock.clone(),
            tap: self.ctx.lines.clone().map(|tap| (tap, self.id.clone())),
        };
        if let Some(stdout) = spawned.child.stdout.take() {
            tokio::spawn(logs::capture(stdout, capture(logs::Stream::Stdout)));
        }
        if let Some(stderr) = spawned.child.stderr.take() {
            tokio::spawn(logs::capture(stderr, capture(logs::Stream::Stderr)));
        }
        let start_ticks = process::sample(spawned.pid).map(|s| s.start_ticks);
        if let Err(error) = pidfile::write(&self.ctx.state_dir, &self.id, spawned.pid, start_ticks) {
            tracing::warn!(replica = %self.id, error = %error, "cannot write pid file");
        }
        self.child = Some(spawned.child);
        self.last_leader = start_ticks.map(|ticks| (spawned.pid, ticks));
        self.started_at = Some(self.ctx.clock.wall());
        self.generation += 1;
        Ok(spawned.pid)
    }

    /// The leader exited; anything left in its process group (workers of a master, the program under a
    /// shell) is asked to stop and then killed, so that no process is left holding the port.
    async fn stop_group_remnants(&self, pgid: u32) {
        let group = Pid::from_raw(pgid as i32);
        // Signal 0 to the group asks whether any member is left: one syscall, so the usual case (nothing
        // left) adds nothing to the restart. Zombies count for it, though, and orphaned members are reaped
        // by init, which may take its time: only then is /proc asked for live members.
        let group_alive = || killpg(group, None).is_ok() && !process::group_members(pgid as i32).is_empty();
        if !group_alive() {
            return;
        }
        let _ = killpg(group, self.stop_signal());
        let _ = killpg(group, Signal::SIGCONT);
        let deadline = tokio::time::Instant::now() + self.service.stop_timeout;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !group_alive() {
                return;
            }
        }
        tracing::warn!(replica = %self.id, "processes left in the group after the leader exited: killing them");
        let _ = killpg(group, Signal::SIGKILL);
    }

    /// Before a start on `port`: what the last leader left may have taken the port since its exit (redis
    /// binds after its launcher exited), and is stopped; a port held by a process mend does not know is an
    /// error, as two processes would fight for it.
    async fn clear_port(&mut self, port: u16) -> Result<(), String> {
        // Before a first start there is no last leader; a free port needs no search.
        if let Some((leader, _)) = self.last_leader
            && process::is_listened(port)
        {
            // The searches for what it left, running since its exit, end first, and so do their stops.
            self.settle_left_behind().await;
            // Only recent suspects count.
            let suspects = if self.suspects_until.is_some_and(|until| tokio::time::Instant::now() < until) {
                self.suspects.clone()
            } else {
                Vec::new()
            };
            let (run_tag, id) = (self.ctx.run_tag.clone(), self.id.clone());
            let leftovers =
                tokio::task::spawn_blocking(move || detached::leftovers_before_start(&run_tag, &id, port, &suspects))
                    .await
                    .unwrap_or_else(|error| {
                        tracing::warn!(replica = %self.id, %error, "looking for what holds the port failed");
                        Vec::new()
                    });
            self.detached_stopper(leader).stop(&leftovers).await;
        }
        if let Err(error) = std::net::TcpListener::bind(("127.0.0.1", port))
            && error.kind() == std::io::ErrorKind::AddrInUse
        {
            return Err(format!("port {port} is in use by another process"));
        }
        Ok(())
    }

    /// The leader exited: starts the search for what it started outside its group (see `detached`),
    /// which runs beside the restart; what it finds arrives on `found_rx`.
    fn search_left_behind(&mut self, exited_ticks: Option<u64>) {
        let Some((pid, started)) = self.last_leader else { return };
        let leader = LeaderLife { pid, generation: self.generation, started, exited: exited_ticks.unwrap_or(started) };
        let (run_tag, id, port) = (self.ctx.run_tag.clone(), self.id.clone(), self.service.port_of(self.id.index));
        let found = detached::scan_at_low_priority(move || detached::left_behind(&run_tag, &id, leader, port));
        let found_tx = self.found_tx.clone();
        self.searches += 1;
        let replica = self.id.clone();
        tokio::spawn(async move {
            // A lost scan (its thread died) reports nothing found rather than leaving the runner waiting.
            let left = found.await.unwrap_or_else(|_| {
                tracing::warn!(%replica, "the search for processes left outside the group was lost");
                LeftBehind::default()
            });
            let _ = found_tx.send((leader, left));
        });
    }

    /// What the search for `leader`'s leftovers found: those recognised are stopped (beside whatever the
    /// runner does next), suspects are kept and watched. Suspects that belong to the replica's next leader,
    /// started while the search ran, are left out.
    fn stop_left_behind(&mut self, leader: LeaderLife, left: LeftBehind) {
        let left = match self.last_leader {
            Some((pid, start_ticks)) if self.generation > leader.generation => {
                left.without_successor(ProcessId { pid, start_ticks })
            }
            _ => left,
        };
        let stopper = self.detached_stopper(leader.pid);
        self.suspects = left.suspects;
        self.suspects_until = Some(tokio::time::Instant::now() + SUSPECTS_KEPT);
        if let (Some(port), false) = (self.service.port_of(self.id.index), self.suspects.is_empty()) {
            tokio::spawn(stopper.clone().watch(port, self.suspects.clone()));
        }
        if !left.recognised.is_empty() {
            self.stops.spawn(async move { stopper.stop(&left.recognised).await });
        }
    }

    /// Waits for every search under way and for the stops of what they found.
    async fn settle_left_behind(&mut self) {
        while self.searches > 0 {
            let Some((leader, left)) = self.found_rx.recv().await else { break };
            self.searches -= 1;
            self.stop_left_behind(leader, left);
        }
        while self.stops.join_next().await.is_some() {}
    }

    fn detached_stopper(&self, leader: u32) -> DetachedStopper {
        DetachedStopper {
            id: self.id.clone(),
            leader,
            events: self.ctx.events.clone(),
            clock: self.ctx.clock.clone(),
            signal: self.stop_signal(),
            grace: self.service.stop_timeout,
        }
    }

    /// The service's stop signal (SIGTERM if it is not one nix knows).
    fn stop_signal(&self) -> Signal {
        Signal::try_from(self.service.stop_signal.number).unwrap_or(Signal::SIGTERM)
    }

    fn signal(&self, signal: i32) {
        let Some(pid) = self.machine.pid() else { return };
        let Ok(signal) = Signal::try_from(signal) else { return };
        let group = Pid::from_raw(pid as i32);
        if let Err(errno) = killpg(group, signal)
            && errno != nix::errno::Errno::ESRCH
        {
            tracing::warn!(replica = %self.id, error = %errno, "cannot signal process group");
        }
        // A stopped process cannot act on a stop signal until it is continued (as systemd does).
        if signal != Signal::SIGKILL {
            let _ = killpg(group, Signal::SIGCONT);
        }
    }

    /// Scrapes the replica's metrics while its process runs and has started.
    fn sync_scraper(&mut self, active: ActiveProbes) {
        let wanted = match (self.machine.pid(), &self.service.metrics) {
            (Some(pid), Some(_)) if active.liveness => Some(pid),
            _ => None,
        };
        if self.scraper.as_ref().map(|(pid, _)| *pid) != wanted {
            self.replace_scraper(wanted);
        }
        // Ready by a probe, the replica answers: so should its metrics, from now on. (Without probes a
        // replica is ready as soon as it runs, which says nothing about listening.)
        let probed =
            self.service.probe(ProbeRole::Liveness).is_some() || self.service.probe(ProbeRole::Readiness).is_some();
        if probed
            && self.machine.ready()
            && let Some((_, scraper)) = &self.scraper
        {
            scraper.settle();
        }
    }

    /// Stops the scraper of the previous process, and starts one for `pid` if given.
    fn replace_scraper(&mut self, pid: Option<u32>) {
        if let Some((_, scraper)) = self.scraper.take() {
            scraper.stop(self.ctx.clock.wall());
        }
        let (Some(pid), Some(metrics)) = (pid, &self.service.metrics) else { return };
        let url = metrics.url.render(&self.vars());
        let target = match mend_config::HttpTarget::parse(&url) {
            Ok(target) => target,
            Err(error) => {
                tracing::error!(replica = %self.id, error = %error, "metrics url is invalid");
                return;
            }
        };
        let job = ScrapeJob {
            name: self.id.to_string(),
            labels: vec![
                ("service".to_owned(), self.service.name.to_string()),
                ("replica".to_owned(), self.id.index.to_string()),
                ("instance".to_owned(), target.authority.clone()),
            ],
            target,
            interval: metrics.interval,
            timeout: metrics.timeout,
            max_series: metrics.max_series,
            sample_limit: metrics.sample_limit,
            service: Some(self.service.name.clone()),
            replica: Some(self.id.index),
            startup_grace: SCRAPE_STARTUP_GRACE,
        };
        let scraper = Scraper::new(
            job,
            self.ctx.series.clone(),
            self.ctx.events.clone(),
            self.ctx.clock.clone(),
            self.ctx.scrape_stats.clone(),
        );
        self.scraper = Some((pid, scraper.spawn()));
    }

    /// Starts and stops probe tasks to match what the state machine wants.
    fn sync_probes(&mut self, active: ActiveProbes) {
        let pid = self.machine.pid();
        for (role, wanted) in [
            (ProbeRole::Startup, active.startup),
            (ProbeRole::Liveness, active.liveness),
            (ProbeRole::Readiness, active.readiness),
        ] {
            let wanted = wanted && self.service.probe(role).is_some();
            let current = self.probes.get(&role).map(|(probed, _)| *probed);
            // A probe task belongs to one process: a new process gets a new task.
            if current.is_some()
                && (!wanted || current != pid)
                && let Some((_, task)) = self.probes.remove(&role)
            {
                task.abort();
            }
            if let (true, Some(pid), false) = (wanted, pid, self.probes.contains_key(&role))
                && let Some(task) = self.start_probe(role, pid)
            {
                self.probes.insert(role, (pid, task));
            }
        }
    }

    fn start_probe(&self, role: ProbeRole, pid: u32) -> Option<JoinHandle<()>> {
        let probe = self.service.probe(role)?.clone();
        let check = match ResolvedCheck::resolve(&probe.check, &self.vars(), self.service.working_dir.clone()) {
            Ok(check) => check,
            Err(error) => {
                tracing::error!(replica = %self.id, probe = role.as_str(), error = %error, "probe target is invalid");
                return None;
            }
        };
        // The probe that gates readiness (and the startup probe) starts fast and slows down to its
        // interval, so that a replica that starts quickly is ready quickly.
        let gates_readiness = match role {
            ProbeRole::Startup => true,
            ProbeRole::Readiness => true,
            ProbeRole::Liveness => self.service.readiness.is_none(),
        };
        let results = self.probe_tx.clone();
        Some(tokio::spawn(async move {
            tokio::time::sleep(probe.initial_delay).await;
            let mut ramp = if gates_readiness { Some(Duration::from_millis(10)) } else { None };
            loop {
                let started = tokio::time::Instant::now();
                let outcome = probe::run(&check, probe.timeout, Some(pid)).await;
                let passed = outcome == ProbeOutcome::Success;
                if results.send((role, pid, outcome)).await.is_err() {
                    return;
                }
                let pause = match ramp {
                    Some(step) if !passed => {
                        ramp = Some((step * 2).min(probe.interval));
                        step.min(probe.interval)
                    }
                    _ => {
                        ramp = None;
                        probe.interval
                    }
                };
                tokio::time::sleep_until(started + pause).await;
            }
        }))
    }

    /// Samples /proc into the status and the series store; returns an input when the process is above
    /// its memory limit.
    fn sample(&mut self) -> Option<Input> {
        let pid = self.machine.pid()?;
        let sample = process::sample_family(pid)?;
        let now = self.ctx.clock.now();
        let cpu_percent = match self.last_cpu {
            Some((cpu, at)) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                if elapsed > 0.0 { 100.0 * (sample.cpu_seconds - cpu).max(0.0) / elapsed } else { 0.0 }
            }
            None => 0.0,
        };
        self.last_cpu = Some((sample.cpu_seconds, now));
        let stats = ProcessStats {
            cpu_seconds: sample.cpu_seconds,
            cpu_percent,
            rss_bytes: sample.rss_bytes,
            threads: sample.threads,
            open_fds: sample.open_fds,
        };
        self.process_stats = Some(stats);
        let wall = self.ctx.clock.wall();
        let index = self.id.index.to_string();
        let pairs = [("service", self.service.name.as_str()), ("replica", index.as_str())];
        let mut exceeded = self
            .service
            .max_memory_bytes
            .filter(|&limit| sample.rss_bytes > limit)
            .map(|limit_bytes| Input::MemoryExceeded { pid, rss_bytes: sample.rss_bytes, limit_bytes });
        // Stopped for two samples in a row (not a passing SIGSTOP/SIGCONT): hung, whatever the probes say.
        let stopped = sample.state == 'T' && process::family_cpu_state(pid).is_some_and(|(state, _)| state == 'T');
        self.stopped_samples = if stopped { self.stopped_samples + 1 } else { 0 };
        if self.stopped_samples >= 2 {
            let for_secs = self.ctx.sample_interval.as_secs_f64() * f64::from(self.stopped_samples - 1);
            exceeded = Some(Input::Stopped { pid, for_secs });
        }
        let Ok(mut series) = self.ctx.series.write() else { return exceeded };
        let mut values = vec![
            ("mend_replica_cpu_seconds_total", stats.cpu_seconds),
            ("mend_replica_cpu_percent", stats.cpu_percent),
            ("mend_replica_threads", stats.threads as f64),
            ("mend_replica_restarts_total", self.machine.restarts() as f64),
        ];
        // A process has no memory mapped only while it execs (a sample taken just after the spawn) or
        // after it exited: a 0 would be a false low, and the next real value a false rise.
        if stats.rss_bytes > 0 {
            values.push(("mend_replica_resident_memory_bytes", stats.rss_bytes as f64));
        }
        if let Some(started_at) = self.started_at {
            let uptime_ms = wall.as_millis().saturating_sub(started_at.as_millis());
            values.push(("mend_replica_uptime_seconds", uptime_ms as f64 / 1000.0));
        }
        if let Some(open_fds) = stats.open_fds {
            values.push(("mend_replica_open_fds", open_fds as f64));
        }
        for (name, value) in values {
            let labels = series.labels(name, &pairs);
            // A full store refuses new series; the store counts the refusal.
            let _ = series.append(&labels, wall, value);
        }
        exceeded
    }

    /// Records whether the replica runs and is ready, every sample, process or not: series a rule can
    /// alert on (`mend_replica_up == 0`) while a replica is down, as on /metrics.
    fn record_presence(&mut self) {
        let wall = self.ctx.clock.wall();
        let index = self.id.index.to_string();
        let pairs = [("service", self.service.name.as_str()), ("replica", index.as_str())];
        let up = f64::from(u8::from(self.machine.pid().is_some()));
        let ready = f64::from(u8::from(self.machine.ready()));
        let Ok(mut series) = self.ctx.series.write() else { return };
        for (name, value) in [("mend_replica_up", up), ("mend_replica_ready", ready)] {
            let labels = series.labels(name, &pairs);
            let _ = series.append(&labels, wall, value);
        }
    }

    /// Ends the exited process's series (all but the replica's restart count) with a staleness
    /// marker, so that queries stop showing a dead process's memory and CPU at once.
    fn mark_process_series_stale(&mut self) {
        self.end_series(&PROCESS_SERIES);
    }

    /// Ends this replica's series called `names` with a staleness marker.
    fn end_series(&self, names: &[&str]) {
        let wall = self.ctx.clock.wall();
        let index = self.id.index.to_string();
        let pairs = [("service", self.service.name.as_str()), ("replica", index.as_str())];
        let Ok(mut series) = self.ctx.series.write() else { return };
        for name in names {
            let labels = series.labels(name, &pairs);
            series.end_series(&labels, wall);
        }
    }

    fn publish(&mut self) {
        self.ever_ready |= self.machine.ready();
        let state = self.machine.state();
        if state == ReplicaState::Stopped {
            self.ever_ready = false;
        }
        let status = ReplicaStatus {
            index: self.id.index,
            release: self.release.name.clone(),
            port: self.service.port_of(self.id.index),
            pid: self.machine.pid(),
            state,
            ready: self.machine.ready(),
            unready: self.machine.unready(),
            down: self.machine.is_down(),
            restarts: self.machine.restarts(),
            last_exit: self.machine.last_exit(),
            started_at: self.started_at,
            process: self.process_stats,
            generation: self.generation,
            ever_ready: self.ever_ready,
            completed: state == ReplicaState::Exited
                && self.machine.last_exit().is_some_and(|last| last.exit.is_success()),
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }
}
