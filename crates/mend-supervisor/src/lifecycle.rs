//! The life of one replica as a pure state machine: inputs and a clock in, effects out, no IO.
//!
//! The runner (`runner.rs`) feeds it process exits, probe outcomes, operator commands and timer ticks,
//! executes the effects it returns (spawn, signal, kill, events) and asks it when to wake up next. All
//! restart policy, back-off, restart intensity, probe hysteresis and hang-versus-busy judgement live here,
//! so they are tested deterministically.

use std::time::{Duration, Instant};

use mend_config::{Backoff, ProbeRole, RestartLimit, RestartPolicy, Service};
use mend_types::{EventKind, ExitCause, ExitInfo, LastExit, ProbeOutcome, StopReason, Unit, is_fault_signal};
use serde_json::{Map, Value, json};

use crate::backoff::restart_delay;
use crate::intensity::RestartIntensity;

/// Thresholds of one probe, as the state machine needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes to pass.
    pub success: u32,
    /// Consecutive failures to fail.
    pub failure: u32,
}

/// How liveness outcomes are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    /// Consecutive failures that make the replica unhealthy.
    pub thresholds: Thresholds,
    /// How long a busy (CPU-using) but unresponsive replica is tolerated.
    pub busy_timeout: Duration,
    /// Until the probe first passes, failures within this time of the start are not counted: a process
    /// that is still binding its port is starting, not failing. A stopped process is replaced regardless.
    pub start_grace: Duration,
}

/// The probe that gates readiness, as the state machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessGate {
    /// The readiness probe, else the liveness probe.
    pub role: ProbeRole,
    /// Its thresholds.
    pub thresholds: Thresholds,
    /// Until it first passes, a replica whose gate fails within this time of its start is starting; after
    /// it, the replica runs and is not ready because its gate fails.
    pub start_grace: Duration,
}

/// The parts of a service's config that govern one replica's life.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Back-off between restarts.
    pub backoff: Backoff,
    /// Restart intensity.
    pub restart_limit: RestartLimit,
    /// Signal number that asks the process to stop.
    pub stop_signal: i32,
    /// Grace period before SIGKILL.
    pub stop_timeout: Duration,
    /// Startup probe thresholds, if there is a startup probe.
    pub startup: Option<Thresholds>,
    /// The liveness probe's policy, if there is a liveness probe.
    pub liveness: Option<LivenessPolicy>,
    /// Which probe gates readiness: the readiness probe, else the liveness probe, else none (a replica is
    /// ready once it runs and has started).
    pub readiness_gate: Option<ReadinessGate>,
}

impl Policy {
    /// Extracts the policy of `service`.
    pub fn of(service: &Service) -> Self {
        let thresholds = |role| {
            service.probe(role).map(|p| Thresholds { success: p.success_threshold, failure: p.failure_threshold })
        };
        let gate = |role| {
            service.probe(role).map(|p| ReadinessGate {
                role,
                thresholds: Thresholds { success: p.success_threshold, failure: p.failure_threshold },
                start_grace: p.initial_delay + p.interval.saturating_mul(p.failure_threshold),
            })
        };
        let readiness_gate = gate(ProbeRole::Readiness).or_else(|| gate(ProbeRole::Liveness));
        Self {
            restart: service.restart,
            backoff: service.backoff,
            restart_limit: service.restart_limit,
            stop_signal: service.stop_signal.number,
            stop_timeout: service.stop_timeout,
            startup: thresholds(ProbeRole::Startup),
            liveness: service.liveness.as_ref().map(|p| LivenessPolicy {
                thresholds: Thresholds { success: p.success_threshold, failure: p.failure_threshold },
                busy_timeout: p.busy_timeout,
                start_grace: p.initial_delay + p.interval.saturating_mul(p.failure_threshold),
            }),
            readiness_gate,
        }
    }
}

/// Who asked for a restart and why: an operator, or a healing policy whose restarts count against the
/// replica's restart intensity (the budget that protects against restart storms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Why, for the events: the operator's reason, or the policy's trigger and diagnosis.
    pub reason: std::sync::Arc<str>,
    /// Counted against the restart intensity (a policy's automatic restart); an operator's is not.
    pub counted: bool,
}

impl Request {
    /// An operator's restart.
    pub fn operator(reason: Option<&str>) -> Self {
        let reason = match reason {
            Some(reason) => format!("restart requested by operator: {reason}"),
            None => "restart requested by operator".to_owned(),
        };
        Self { reason: reason.into(), counted: false }
    }

    /// A healing policy's restart, with its reason.
    pub fn policy(reason: &str) -> Self {
        Self { reason: format!("restart by healing policy: {reason}").into(), counted: true }
    }
}

/// Something that happened to the replica, or was asked of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start (at boot once dependencies are ready, or by an operator). Clears a given-up state.
    Start,
    /// Stop and stay stopped (operator or shutdown).
    Stop,
    /// Stop gracefully, then start again at once (an operator, or a policy within the restart intensity).
    Restart(Request),
    /// The process was spawned.
    Spawned {
        /// Its pid (and process group id).
        pid: u32,
    },
    /// The process could not be spawned.
    SpawnFailed {
        /// Why.
        error: String,
    },
    /// The process ended.
    Exited(ExitInfo),
    /// A probe finished.
    Probe {
        /// Which probe.
        role: ProbeRole,
        /// The pid it probed; outcomes about an earlier process are ignored.
        pid: u32,
        /// What it found.
        outcome: ProbeOutcome,
    },
    /// The deadline from [`Lifecycle::next_deadline`] passed.
    Timer,
    /// Every process of the replica has been stopped (state T, SIGSTOP) for a while: it cannot serve,
    /// whatever its probes say (a TCP connect even succeeds into a stopped process's backlog).
    Stopped {
        /// The pid sampled.
        pid: u32,
        /// For how long it was seen stopped.
        for_secs: f64,
    },
    /// The process's resident memory is above the service's `max_memory_bytes`.
    MemoryExceeded {
        /// The pid sampled.
        pid: u32,
        /// Its resident memory.
        rss_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
}

/// Something the runner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Spawn the process now.
    Spawn,
    /// Take the process out of traffic and wait (bounded) for its in-flight requests, before it is asked
    /// to stop. A no-op for services without a proxy. Once done, the runner restarts the stop clock
    /// ([`Lifecycle::restart_stop_clock`]) so that the drain does not eat the grace period.
    Drain {
        /// Wait first until another replica can take the traffic (a rolling restart); a stop or a
        /// shutdown does not wait.
        wait_for_others: bool,
    },
    /// Send this signal to the process group.
    Signal(i32),
    /// Send SIGKILL to the process group.
    Kill,
    /// Record an event.
    Event {
        /// What happened.
        kind: EventKind,
        /// One line for people.
        message: String,
        /// Structured facts.
        details: Map<String, Value>,
    },
}

/// What to do once a stopping process has exited.
#[derive(Debug, Clone, PartialEq)]
enum AfterStop {
    StayStopped,
    /// Restart; `automatic` restarts follow the restart policy, back-off and intensity, an operator's
    /// restart happens at once.
    Restart {
        reason: String,
        automatic: bool,
        /// A requested restart that counts against the restart intensity (a policy's).
        counted: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Not started yet: waiting for dependencies or an operator.
    Idle,
    Running {
        pid: u32,
        since: Instant,
        /// The startup probe has passed (or there is none).
        started: bool,
    },
    Stopping {
        pid: u32,
        /// When the process started (not when the stop began).
        since: Instant,
        deadline: Instant,
        /// mend has sent SIGKILL.
        killed: bool,
        /// Why mend stops it (the first reason, should another come while it stops).
        cause: StopReason,
        then: AfterStop,
    },
    BackingOff {
        until: Instant,
    },
    /// Stopped on purpose.
    Stopped,
    /// Gave up after too many restarts.
    Failed,
    /// Ended and the restart policy says not to restart.
    Exited,
}

/// Where a replica is in its life, for people and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaState {
    /// Not started yet: waiting for its dependencies (or an operator).
    Waiting,
    /// Its process runs and has not been ready yet: the startup probe, or the readiness gate within its
    /// start grace.
    Starting,
    /// Its process runs; see [`Lifecycle::unready`] for why it may be out of the ready set.
    Running,
    /// Being stopped.
    Stopping,
    /// Waiting out a restart delay.
    Backoff,
    /// Stopped on purpose.
    Stopped,
    /// mend gave up on it after too many restarts.
    Failed,
    /// Its process ended and the restart policy does not restart it.
    Exited,
}

impl ReplicaState {
    /// Stable name, for the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Backoff => "backoff",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Exited => "exited",
        }
    }
}

impl std::fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a running replica is out of the ready set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unready {
    /// The probe that gates readiness (the readiness probe, else the liveness probe) fails.
    Failing(ProbeRole),
    /// The probe that gates readiness times out while the process works: busy, not hung.
    Busy(ProbeRole),
}

impl std::fmt::Display for Unready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failing(role) => write!(f, "{} failing", role.as_str()),
            Self::Busy(role) => write!(f, "busy ({} probe times out while the process uses CPU)", role.as_str()),
        }
    }
}

/// Which probes should be running for the replica right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActiveProbes {
    /// The startup probe.
    pub startup: bool,
    /// The liveness probe.
    pub liveness: bool,
    /// The readiness probe.
    pub readiness: bool,
}

/// Consecutive-result counters with a passing state: flips only after enough results in a row.
#[derive(Debug, Clone, Copy, Default)]
struct Hysteresis {
    passing: bool,
    successes: u32,
    failures: u32,
}

impl Hysteresis {
    /// Records one result; returns the new state when it flips.
    fn record(&mut self, ok: bool, thresholds: Thresholds) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.passing && self.successes >= thresholds.success {
                self.passing = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.passing && self.failures >= thresholds.failure {
                self.passing = false;
                return Some(false);
            }
        }
        None
    }
}

/// The state machine of one replica.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    policy: Policy,
    phase: Phase,
    ready: bool,
    readiness: Hysteresis,
    startup_failures: u32,
    liveness_failures: u32,
    liveness_passed: bool,
    /// A probe was inconclusive through mend's own trouble, and none has judged the replica since.
    mend_trouble: bool,
    busy_since: Option<Instant>,
    consecutive_failures: u32,
    intensity: RestartIntensity,
    restarts: u64,
    last_exit: Option<LastExit>,
    /// The readiness gate has passed since the process started.
    gate_passed: bool,
    /// Why the running process is not ready, once past its start (see [`ReadinessGate::start_grace`]).
    unready: Option<Unready>,
}

/// How the machine reads one liveness or startup outcome.
enum Verdict {
    Healthy,
    /// Counts toward the failure threshold.
    Failing(String),
    /// The process cannot answer at all (stopped): replace it now.
    Hung(String),
    /// Unresponsive but working: judged by the busy timeout, not the failure threshold.
    Busy(String),
}

fn verdict(outcome: &ProbeOutcome, timeout_reason: &str) -> Verdict {
    match outcome {
        ProbeOutcome::Success => Verdict::Healthy,
        ProbeOutcome::Failure { reason } => Verdict::Failing(reason.clone()),
        ProbeOutcome::Timeout { evidence: Some(evidence) } if evidence.is_stopped() => {
            Verdict::Hung("process is stopped (state T) and cannot answer".to_owned())
        }
        ProbeOutcome::Timeout { evidence: Some(evidence) } if evidence.is_busy() => Verdict::Busy(format!(
            "timed out while the process is busy (state {}, {:.0}% CPU)",
            evidence.state,
            100.0 * evidence.cpu_seconds / evidence.window_seconds.max(f64::EPSILON)
        )),
        ProbeOutcome::Timeout { evidence: Some(evidence) } => Verdict::Failing(format!(
            "{timeout_reason} and the process made no progress (state {}, {:.1}% CPU)",
            evidence.state,
            100.0 * evidence.cpu_seconds / evidence.window_seconds.max(f64::EPSILON)
        )),
        ProbeOutcome::Timeout { evidence: None } => Verdict::Failing(timeout_reason.to_owned()),
        // Never judged: `probe` returns before.
        ProbeOutcome::Inconclusive { reason, .. } => Verdict::Failing(reason.clone()),
    }
}

fn event(kind: EventKind, message: impl Into<String>, details: Value) -> Effect {
    let details = match details {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Effect::Event { kind, message: message.into(), details }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Lifecycle {
    /// Takes a reloaded service's policy; it governs what happens from the next input on (the current
    /// restart budget and probe counts stay).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// A replica that has not started yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            phase: Phase::Idle,
            ready: false,
            readiness: Hysteresis::default(),
            startup_failures: 0,
            liveness_failures: 0,
            liveness_passed: false,
            mend_trouble: false,
            busy_since: None,
            consecutive_failures: 0,
            intensity: RestartIntensity::default(),
            restarts: 0,
            last_exit: None,
            gate_passed: false,
            unready: None,
        }
    }

    /// Whether the replica may receive traffic.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The pid of the live process, if any.
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { pid, .. } | Phase::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// When the current process started.
    pub fn running_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Automatic restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// How the last process ended, and who ended it.
    pub fn last_exit(&self) -> Option<LastExit> {
        self.last_exit
    }

    /// Where the replica is in its life.
    pub fn state(&self) -> ReplicaState {
        match &self.phase {
            Phase::Idle => ReplicaState::Waiting,
            Phase::Running { started: false, .. } => ReplicaState::Starting,
            Phase::Running { .. } if !self.ready && self.unready.is_none() => ReplicaState::Starting,
            Phase::Running { .. } => ReplicaState::Running,
            Phase::Stopping { .. } => ReplicaState::Stopping,
            Phase::BackingOff { .. } => ReplicaState::Backoff,
            Phase::Stopped => ReplicaState::Stopped,
            Phase::Failed => ReplicaState::Failed,
            Phase::Exited => ReplicaState::Exited,
        }
    }

    /// Why a running replica is not ready: its readiness gate fails (after it passed once, or past its
    /// start grace). None while it starts, is ready, or does not run.
    pub fn unready(&self) -> Option<Unready> {
        match self.phase {
            Phase::Running { started: true, .. } if !self.ready => self.unready,
            _ => None,
        }
    }

    /// True when the replica is down for good until an operator acts (stopped, failed or exited).
    pub fn is_down(&self) -> bool {
        matches!(self.phase, Phase::Stopped | Phase::Failed | Phase::Exited | Phase::Idle)
    }

    /// Starts the grace period of a stop over from `now`: called after a drain, so that the process gets
    /// its whole `stop_timeout` once it is actually asked to stop.
    pub fn restart_stop_clock(&mut self, now: Instant) {
        if let Phase::Stopping { deadline, killed: false, .. } = &mut self.phase {
            *deadline = now + self.policy.stop_timeout;
        }
    }

    /// When the machine wants a [`Input::Timer`].
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::BackingOff { until } => Some(until),
            Phase::Stopping { deadline, killed: false, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Which probes should run now.
    pub fn active_probes(&self) -> ActiveProbes {
        match self.phase {
            Phase::Running { started: false, .. } => ActiveProbes { startup: true, ..Default::default() },
            Phase::Running { started: true, .. } => ActiveProbes { startup: false, liveness: true, readiness: true },
            _ => ActiveProbes::default(),
        }
    }

    /// Feeds one input at `now`; `jitter` in [-1, 1] spreads the back-off. Returns the effects to execute,
    /// in order. After [`Effect::Spawn`] the runner must feed back `Spawned` or `SpawnFailed`.
    pub fn handle(&mut self, input: Input, now: Instant, jitter: f64) -> Vec<Effect> {
        let mut effects = Vec::new();
        match input {
            Input::Start => self.start(&mut effects),
            Input::Stop => self.stop(now, &mut effects),
            Input::Restart(request) => self.requested_restart(now, request, &mut effects),
            Input::Spawned { pid } => self.spawned(pid, now, &mut effects),
            Input::SpawnFailed { error } => {
                effects.push(event(
                    EventKind::SpawnFailed,
                    format!("spawn failed: {error}"),
                    json!({ "error": error }),
                ));
                self.phase = Phase::Idle;
                self.automatic_restart(format!("spawn failed: {error}"), None, now, jitter, &mut effects);
            }
            Input::Exited(exit) => self.exited(exit, now, jitter, &mut effects),
            Input::Probe { role, pid, outcome } => {
                if let Phase::Running { pid: running_pid, started, .. } = self.phase
                    && running_pid == pid
                {
                    self.probe(role, started, outcome, now, &mut effects);
                }
            }
            Input::Timer => self.timer(now, &mut effects),
            Input::Stopped { pid, for_secs } => {
                if self.pid() == Some(pid) && matches!(self.phase, Phase::Running { .. }) {
                    let reason = format!("process is stopped (state T) for {for_secs:.0}s and cannot serve");
                    self.unhealthy("process", StopReason::Hung, reason, now, &mut effects);
                }
            }
            Input::MemoryExceeded { pid, rss_bytes, limit_bytes } => {
                if self.pid() == Some(pid) && matches!(self.phase, Phase::Running { .. }) {
                    let reason = format!(
                        "resident memory {} is above max_memory_bytes ({})",
                        Unit::Bytes.format(rss_bytes as f64),
                        Unit::Bytes.format(limit_bytes as f64)
                    );
                    self.unhealthy("memory", StopReason::Memory, reason, now, &mut effects);
                }
            }
        }
        effects
    }

    fn start(&mut self, effects: &mut Vec<Effect>) {
        match &mut self.phase {
            Phase::Idle | Phase::Stopped | Phase::Failed | Phase::Exited | Phase::BackingOff { .. } => {
                // An operator's start acknowledges earlier failures: the replica gets a fresh budget.
                self.intensity.reset();
                self.consecutive_failures = 0;
                effects.push(Effect::Spawn);
            }
            Phase::Stopping { then, .. } => {
                *then =
                    AfterStop::Restart { reason: "started by operator".to_owned(), automatic: false, counted: false };
            }
            Phase::Running { .. } => {}
        }
    }

    fn stop(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        match &mut self.phase {
            Phase::Running { pid, .. } => {
                let pid = *pid;
                self.begin_stop(pid, now, AfterStop::StayStopped, StopReason::Stop, effects);
            }
            Phase::Stopping { then, .. } => *then = AfterStop::StayStopped,
            Phase::Stopped => {}
            Phase::Idle | Phase::BackingOff { .. } | Phase::Failed | Phase::Exited => {
                self.phase = Phase::Stopped;
                effects.push(event(EventKind::Stopped, "stopped", json!({})));
            }
        }
    }

    fn requested_restart(&mut self, now: Instant, request: Request, effects: &mut Vec<Effect>) {
        match self.phase {
            Phase::Running { pid, .. } => {
                let then = AfterStop::Restart {
                    reason: request.reason.to_string(),
                    automatic: false,
                    counted: request.counted,
                };
                self.begin_stop(pid, now, then, StopReason::Restart, effects);
            }
            // A policy does not start what is down (an operator's or mend's decision); an operator does.
            _ if request.counted => {}
            _ => self.start(effects),
        }
    }

    /// Asks the process to stop for `cause` (or kills it at once when it is hung), leaving the ready set
    /// first.
    fn begin_stop(&mut self, pid: u32, now: Instant, then: AfterStop, cause: StopReason, effects: &mut Vec<Effect>) {
        let kill = cause == StopReason::Hung;
        let was_ready = self.ready;
        self.set_ready(false, "stopping", effects);
        let reason = match &then {
            AfterStop::StayStopped => "stop requested".to_owned(),
            AfterStop::Restart { reason, .. } => reason.clone(),
        };
        if kill {
            effects.push(event(
                EventKind::Stopping,
                format!("killing pid {pid}: {reason}"),
                json!({ "pid": pid, "signal": 9, "reason": reason }),
            ));
            effects.push(Effect::Kill);
        } else {
            let signal = self.policy.stop_signal;
            effects.push(event(
                EventKind::Stopping,
                format!("sending {} to pid {pid}: {reason}", mend_types::signal_name(signal)),
                json!({ "pid": pid, "signal": signal, "reason": reason, "grace_ms": millis(self.policy.stop_timeout) }),
            ));
            // A graceful stop of a replica that had traffic first lets the proxy finish its requests; a hung
            // process is killed at once instead (its requests are retried elsewhere).
            if was_ready {
                let wait_for_others = matches!(then, AfterStop::Restart { automatic: false, .. });
                effects.push(Effect::Drain { wait_for_others });
            }
            effects.push(Effect::Signal(signal));
        }
        // The process's own start: how long it ran decides whether its end resets the back-off.
        let since = match self.phase {
            Phase::Running { since, .. } | Phase::Stopping { since, .. } => since,
            _ => now,
        };
        self.phase =
            Phase::Stopping { pid, since, deadline: now + self.policy.stop_timeout, killed: kill, cause, then };
    }

    fn spawned(&mut self, pid: u32, now: Instant, effects: &mut Vec<Effect>) {
        let started = self.policy.startup.is_none();
        self.phase = Phase::Running { pid, since: now, started };
        self.readiness = Hysteresis::default();
        self.startup_failures = 0;
        self.liveness_failures = 0;
        self.liveness_passed = false;
        self.busy_since = None;
        self.gate_passed = false;
        self.unready = None;
        effects.push(event(EventKind::Started, format!("started pid {pid}"), json!({ "pid": pid })));
        if started && self.policy.readiness_gate.is_none() {
            self.set_ready(true, "running (no readiness or liveness probe)", effects);
        }
    }

    fn exited(&mut self, exit: ExitInfo, now: Instant, jitter: f64, effects: &mut Vec<Effect>) {
        let (pid, since, then, stopping) = match &self.phase {
            Phase::Running { pid, since, .. } => (*pid, *since, None, None),
            Phase::Stopping { pid, since, then, killed, cause, .. } => {
                (*pid, *since, Some(then.clone()), Some((*cause, *killed)))
            }
            // A stale exit (the process was already accounted for): nothing to do.
            _ => return,
        };
        let cause = self.exit_cause(exit, stopping);
        self.last_exit = Some(LastExit { exit, cause });
        let ran_for = Some(now.saturating_duration_since(since));
        self.set_ready(false, "exited", effects);
        let mut details = json!({
            "pid": pid,
            "code": exit.code,
            "signal": exit.signal,
            "uptime_ms": millis(now.saturating_duration_since(since)),
            "cause": cause.as_str(),
        });
        if let Some(reason) = cause.stop_reason() {
            details["stop_reason"] = Value::from(reason.as_str());
        }
        if exit.core_dumped {
            details["core_dumped"] = Value::Bool(true);
        }
        effects.push(event(EventKind::Exited, format!("pid {pid} {exit}"), details));
        match then {
            None => {
                self.phase = Phase::Idle;
                let restart = match self.policy.restart {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !exit.is_success(),
                    RestartPolicy::Never => false,
                };
                if restart {
                    self.automatic_restart(format!("{exit}"), ran_for, now, jitter, effects);
                } else {
                    self.phase = Phase::Exited;
                }
            }
            Some(AfterStop::StayStopped) => {
                self.phase = Phase::Stopped;
                effects.push(event(EventKind::Stopped, "stopped", json!({})));
            }
            Some(AfterStop::Restart { reason, automatic: true, .. }) => {
                self.phase = Phase::Idle;
                if self.policy.restart == RestartPolicy::Never {
                    self.phase = Phase::Exited;
                } else {
                    self.automatic_restart(reason, ran_for, now, jitter, effects);
                }
            }
            Some(AfterStop::Restart { reason, automatic: false, counted }) => {
                if counted {
                    // A policy's restart spends the replica's restart budget: past it, give up as after
                    // crashes (and the give-up escalates).
                    let limit = self.policy.restart_limit;
                    if !self.intensity.try_restart(&limit, now) {
                        self.phase = Phase::Failed;
                        effects.push(event(
                            EventKind::GaveUp,
                            format!(
                                "gave up: more than {} restarts within {}s (last: {reason}); start it again with `mend start`",
                                limit.max_restarts,
                                limit.within.as_secs_f64()
                            ),
                            json!({ "reason": reason, "max_restarts": limit.max_restarts, "within_ms": millis(limit.within) }),
                        ));
                        return;
                    }
                    self.restarts += 1;
                }
                effects.push(event(
                    EventKind::Restarted,
                    format!("restarting: {reason}"),
                    json!({ "reason": reason, "delay_ms": 0 }),
                ));
                effects.push(Effect::Spawn);
            }
        }
    }

    /// Who ended a process that exited with `exit`; `stopping` says why mend was stopping it, if it was,
    /// and whether it had sent SIGKILL.
    fn exit_cause(&self, exit: ExitInfo, stopping: Option<(StopReason, bool)>) -> ExitCause {
        let mend_killed = |killed: bool| killed || self.policy.stop_signal == 9;
        match (stopping, exit.signal) {
            // A SIGKILL that mend did not send ended a graceful stop: someone else's.
            (Some((_, killed)), Some(9)) if !mend_killed(killed) => ExitCause::ExternalSignal,
            (Some((reason, _)), _) => ExitCause::Mend(reason),
            (None, Some(signal)) if !is_fault_signal(signal) => ExitCause::ExternalSignal,
            (None, _) => ExitCause::Program,
        }
    }

    /// Restarts after a failure, subject to the restart limit and back-off. `ran_for` is how long the
    /// failed process ran (None when it never started): a long enough run resets the back-off.
    fn automatic_restart(
        &mut self,
        reason: String,
        ran_for: Option<Duration>,
        now: Instant,
        jitter: f64,
        effects: &mut Vec<Effect>,
    ) {
        if ran_for.is_some_and(|ran| ran >= self.policy.backoff.reset_after) {
            self.consecutive_failures = 0;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let limit = self.policy.restart_limit;
        if !self.intensity.try_restart(&limit, now) {
            self.phase = Phase::Failed;
            effects.push(event(
                EventKind::GaveUp,
                format!(
                    "gave up: more than {} restarts within {}s (last: {reason}); start it again with `mend start`",
                    limit.max_restarts,
                    limit.within.as_secs_f64()
                ),
                json!({ "reason": reason, "max_restarts": limit.max_restarts, "within_ms": millis(limit.within) }),
            ));
            return;
        }
        self.restarts += 1;
        let delay = restart_delay(&self.policy.backoff, self.consecutive_failures, jitter);
        effects.push(event(
            EventKind::Restarted,
            format!("restarting in {}ms: {reason}", delay.as_millis()),
            json!({ "reason": reason, "delay_ms": millis(delay), "restarts": self.restarts, "consecutive_failures": self.consecutive_failures }),
        ));
        if delay.is_zero() {
            effects.push(Effect::Spawn);
        } else {
            self.phase = Phase::BackingOff { until: now + delay };
        }
    }

    fn probe(
        &mut self,
        role: ProbeRole,
        started: bool,
        outcome: ProbeOutcome,
        now: Instant,
        effects: &mut Vec<Effect>,
    ) {
        // mend's own trouble says nothing about the replica: neither a failure nor a pass is counted, and
        // the trouble is reported once, as mend's.
        if let ProbeOutcome::Inconclusive { trouble, reason } = &outcome {
            if !self.mend_trouble {
                self.mend_trouble = true;
                effects.push(event(
                    EventKind::MendTrouble,
                    format!(
                        "{} probe cannot judge the replica: {reason}; mend's own trouble, not the replica's",
                        role.as_str()
                    ),
                    json!({ "probe": role.as_str(), "trouble": trouble.as_str(), "reason": reason }),
                ));
            }
            return;
        }
        if std::mem::take(&mut self.mend_trouble) {
            effects.push(event(
                EventKind::MendTrouble,
                format!("mend's trouble is over: the {} probe can judge the replica again", role.as_str()),
                json!({ "probe": role.as_str(), "over": true }),
            ));
        }
        match role {
            ProbeRole::Startup if !started => self.startup_probe(outcome, now, effects),
            ProbeRole::Liveness if started => {
                let gates_readiness = self.policy.readiness_gate.is_some_and(|gate| gate.role == ProbeRole::Liveness);
                self.liveness_probe(outcome.clone(), now, effects);
                if gates_readiness && matches!(self.phase, Phase::Running { .. }) {
                    self.readiness_probe(outcome, now, effects);
                }
            }
            ProbeRole::Readiness if started => self.readiness_probe(outcome, now, effects),
            // Outcomes of probes that should no longer run (a late startup result, say).
            _ => {}
        }
    }

    fn startup_probe(&mut self, outcome: ProbeOutcome, now: Instant, effects: &mut Vec<Effect>) {
        let Some(thresholds) = self.policy.startup else { return };
        match verdict(&outcome, "startup probe timed out") {
            Verdict::Healthy => {
                if let Phase::Running { started, .. } = &mut self.phase {
                    *started = true;
                }
                if self.policy.readiness_gate.is_none() {
                    self.set_ready(true, "startup probe passed", effects);
                }
            }
            Verdict::Hung(reason) => self.unhealthy("startup", StopReason::Hung, reason, now, effects),
            Verdict::Failing(reason) | Verdict::Busy(reason) => {
                self.startup_failures += 1;
                if self.startup_failures >= thresholds.failure {
                    let reason = format!("not started after {} startup probes (last: {reason})", self.startup_failures);
                    self.unhealthy("startup", StopReason::Startup, reason, now, effects);
                }
            }
        }
    }

    fn liveness_probe(&mut self, outcome: ProbeOutcome, now: Instant, effects: &mut Vec<Effect>) {
        let Some(LivenessPolicy { thresholds, busy_timeout, start_grace }) = self.policy.liveness else { return };
        let starting = match self.phase {
            Phase::Running { since, .. } => !self.liveness_passed && now.saturating_duration_since(since) < start_grace,
            _ => false,
        };
        match verdict(&outcome, "liveness probe timed out") {
            Verdict::Failing(_) | Verdict::Busy(_) if starting => {}
            Verdict::Healthy => {
                self.liveness_passed = true;
                if self.liveness_failures > 0 || self.busy_since.is_some() {
                    effects.push(event(
                        EventKind::ProbeRecovered,
                        "liveness probe passes again",
                        json!({ "probe": "liveness", "failures": self.liveness_failures }),
                    ));
                }
                self.liveness_failures = 0;
                self.busy_since = None;
            }
            Verdict::Hung(reason) => self.unhealthy("liveness", StopReason::Hung, reason, now, effects),
            Verdict::Failing(reason) => {
                self.liveness_failures += 1;
                if self.liveness_failures == 1 {
                    effects.push(event(
                        EventKind::ProbeFailed,
                        format!("liveness probe failed: {reason}"),
                        json!({ "probe": "liveness", "reason": reason, "failures": 1, "threshold": thresholds.failure }),
                    ));
                }
                if self.liveness_failures >= thresholds.failure {
                    let reason =
                        format!("liveness probe failed {} times in a row (last: {reason})", self.liveness_failures);
                    // An unresponsive process that uses no CPU is hung: it would not honour a graceful stop.
                    let cause = match outcome {
                        ProbeOutcome::Timeout { .. } => StopReason::Hung,
                        _ => StopReason::Liveness,
                    };
                    self.unhealthy("liveness", cause, reason, now, effects);
                }
            }
            Verdict::Busy(reason) => {
                let since = *self.busy_since.get_or_insert(now);
                if since == now {
                    effects.push(event(
                        EventKind::ProbeFailed,
                        format!(
                            "liveness probe failed: {reason}; busy, not hung: replaced only after {}s",
                            busy_timeout.as_secs_f64()
                        ),
                        json!({ "probe": "liveness", "reason": reason, "busy": true }),
                    ));
                }
                if now.saturating_duration_since(since) >= busy_timeout {
                    let reason =
                        format!("unresponsive for {}s while busy (last: {reason})", busy_timeout.as_secs_f64());
                    self.unhealthy("liveness", StopReason::Busy, reason, now, effects);
                }
            }
        }
    }

    fn readiness_probe(&mut self, outcome: ProbeOutcome, now: Instant, effects: &mut Vec<Effect>) {
        let Some(ReadinessGate { role, thresholds, start_grace }) = self.policy.readiness_gate else { return };
        let ok = outcome == ProbeOutcome::Success;
        if let Some(passing) = self.readiness.record(ok, thresholds) {
            let reason = match &outcome {
                ProbeOutcome::Success => format!("{} probe passed", role.as_str()),
                ProbeOutcome::Failure { reason } => format!("{} probe failed: {reason}", role.as_str()),
                ProbeOutcome::Timeout { .. } => format!("{} probe timed out", role.as_str()),
                ProbeOutcome::Inconclusive { reason, .. } => format!("{} probe inconclusive: {reason}", role.as_str()),
            };
            self.set_ready(passing, &reason, effects);
        }
        self.gate_passed |= self.ready;
        // Not ready once past its start (it was ready, or its start grace is over): its gate is failing.
        let past_start = self.gate_passed
            || matches!(self.phase, Phase::Running { since, .. } if now.saturating_duration_since(since) >= start_grace);
        let busy = matches!(&outcome, ProbeOutcome::Timeout { evidence: Some(evidence) } if evidence.is_busy());
        self.unready = match (self.ready, past_start) {
            (false, true) if busy => Some(Unready::Busy(role)),
            (false, true) => Some(Unready::Failing(role)),
            _ => None,
        };
    }

    /// A live process must be replaced (`check` says which check failed, `cause` why mend stops it): stop
    /// it (kill it at once when it is hung) and restart it.
    fn unhealthy(&mut self, check: &str, cause: StopReason, reason: String, now: Instant, effects: &mut Vec<Effect>) {
        let Phase::Running { pid, .. } = self.phase else { return };
        let hung = cause == StopReason::Hung;
        effects.push(event(
            EventKind::Unhealthy,
            format!("{check} check failed: {reason}"),
            json!({ "check": check, "reason": reason, "pid": pid, "hung": hung, "stop_reason": cause.as_str() }),
        ));
        let then =
            AfterStop::Restart { reason: format!("{check} check failed: {reason}"), automatic: true, counted: true };
        self.begin_stop(pid, now, then, cause, effects);
    }

    fn timer(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        match &mut self.phase {
            Phase::BackingOff { until } if now >= *until => effects.push(Effect::Spawn),
            Phase::Stopping { pid, deadline, killed, .. } if !*killed && now >= *deadline => {
                *killed = true;
                effects.push(event(
                    EventKind::Stopping,
                    format!(
                        "pid {pid} did not stop within {}s: sending SIGKILL",
                        self.policy.stop_timeout.as_secs_f64()
                    ),
                    json!({ "pid": *pid, "signal": 9, "reason": "stop timeout" }),
                ));
                effects.push(Effect::Kill);
            }
            _ => {}
        }
    }

    fn set_ready(&mut self, ready: bool, reason: &str, effects: &mut Vec<Effect>) {
        if self.ready == ready {
            return;
        }
        self.ready = ready;
        let kind = if ready { EventKind::Ready } else { EventKind::Unready };
        let message = if ready { format!("ready: {reason}") } else { format!("not ready: {reason}") };
        effects.push(event(kind, message, json!({ "reason": reason })));
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
