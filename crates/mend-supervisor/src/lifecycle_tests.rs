//! Scenarios for the replica state machine: inputs at given times and the effects they must produce.
#![allow(clippy::disallowed_methods)] // Scenarios build instants from a real starting point.

use std::time::{Duration, Instant};

use mend_config::{Backoff, ProbeRole, RestartLimit, RestartPolicy};
use mend_types::{ExitCause, ExitInfo, MendTrouble, ProbeOutcome, ProcessEvidence, StopReason};

use super::{
    Effect, Input, Lifecycle, LivenessPolicy, Policy, ReadinessGate, ReplicaState, Request, Thresholds, Unready,
};

/// The probe `role` gates readiness with these thresholds, after a start grace of 1.5 s.
fn gate(role: ProbeRole, success: u32, failure: u32) -> ReadinessGate {
    ReadinessGate { role, thresholds: Thresholds { success, failure }, start_grace: Duration::from_millis(1500) }
}

fn policy() -> Policy {
    Policy {
        restart: RestartPolicy::Always,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
            jitter: 0.1,
        },
        restart_limit: RestartLimit { max_restarts: 3, within: Duration::from_secs(60) },
        stop_signal: 15,
        stop_timeout: Duration::from_secs(5),
        startup: None,
        liveness: Some(LivenessPolicy {
            thresholds: Thresholds { success: 1, failure: 3 },
            busy_timeout: Duration::from_secs(30),
            start_grace: Duration::from_millis(1500),
        }),
        readiness_gate: Some(gate(ProbeRole::Liveness, 1, 3)),
    }
}

/// Renders effects compactly: `spawn`, `signal 15`, `kill`, `event <kind>: <message>`.
fn render(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Spawn => "spawn".to_owned(),
            Effect::Drain { wait_for_others: true } => "drain, waiting for others".to_owned(),
            Effect::Drain { wait_for_others: false } => "drain".to_owned(),
            Effect::Signal(signal) => format!("signal {signal}"),
            Effect::Kill => "kill".to_owned(),
            Effect::Event { kind, message, .. } => format!("{kind}: {message}"),
        })
        .collect()
}

/// Drives `machine` through `steps` of (milliseconds since start, input, expected effects).
fn check(machine: &mut Lifecycle, start: Instant, steps: &[(u64, Input, &[&str])]) {
    for (step_idx, (at_ms, input, expected)) in steps.iter().enumerate() {
        let effects = machine.handle(input.clone(), start + Duration::from_millis(*at_ms), 0.0);
        assert_eq!(render(&effects), *expected, "step {step_idx} at {at_ms}ms: {input:?}");
    }
}

fn crash(code: i32) -> Input {
    Input::Exited(ExitInfo::code(code))
}

fn liveness(pid: u32, outcome: ProbeOutcome) -> Input {
    Input::Probe { role: ProbeRole::Liveness, pid, outcome }
}

fn timeout(state: char, cpu_share: f64) -> ProbeOutcome {
    ProbeOutcome::Timeout {
        evidence: Some(ProcessEvidence { state, cpu_seconds: 0.4 * cpu_share, window_seconds: 0.4 }),
    }
}

fn failure() -> ProbeOutcome {
    ProbeOutcome::Failure { reason: "http status 500 (expected 200-399)".into() }
}

#[test]
fn crash_restarts_immediately_then_backs_off_exponentially() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    check(
        &mut machine,
        start,
        &[
            (0, Input::Start, &["spawn"]),
            (0, Input::Spawned { pid: 10 }, &["started: started pid 10"]),
            (5, liveness(10, ProbeOutcome::Success), &["ready: ready: liveness probe passed"]),
            (
                1000,
                crash(1),
                &[
                    "unready: not ready: exited",
                    "exited: pid 10 exit code 1",
                    "restarted: restarting in 0ms: exit code 1",
                    "spawn",
                ],
            ),
            (1000, Input::Spawned { pid: 11 }, &["started: started pid 11"]),
            (1500, crash(1), &["exited: pid 11 exit code 1", "restarted: restarting in 100ms: exit code 1"]),
            (1550, Input::Timer, &[]),
            (1600, Input::Timer, &["spawn"]),
            (1600, Input::Spawned { pid: 12 }, &["started: started pid 12"]),
            (
                1700,
                Input::Exited(ExitInfo::signal(11)),
                &["exited: pid 12 killed by SIGSEGV (11)", "restarted: restarting in 200ms: killed by SIGSEGV (11)"],
            ),
        ],
    );
    assert_eq!(machine.restarts(), 3);
    assert_eq!(machine.state(), ReplicaState::Backoff);
    assert_eq!(machine.next_deadline(), Some(start + Duration::from_millis(1900)));
}

#[test]
fn a_stable_run_resets_the_backoff() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy {
        restart_limit: RestartLimit { max_restarts: 100, within: Duration::from_secs(60) },
        ..policy()
    });
    check(
        &mut machine,
        start,
        &[
            (0, Input::Start, &["spawn"]),
            (0, Input::Spawned { pid: 1 }, &["started: started pid 1"]),
            (100, crash(1), &["exited: pid 1 exit code 1", "restarted: restarting in 0ms: exit code 1", "spawn"]),
            (100, Input::Spawned { pid: 2 }, &["started: started pid 2"]),
            (200, crash(1), &["exited: pid 2 exit code 1", "restarted: restarting in 100ms: exit code 1"]),
            (300, Input::Timer, &["spawn"]),
            (300, Input::Spawned { pid: 3 }, &["started: started pid 3"]),
            // Ran for 10 s: stable, so the next crash restarts at once again.
            (10_300, crash(1), &["exited: pid 3 exit code 1", "restarted: restarting in 0ms: exit code 1", "spawn"]),
        ],
    );
}

#[test]
fn crash_loop_gives_up_after_the_restart_limit() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    check(
        &mut machine,
        start,
        &[(0, Input::Start, &["spawn"]), (0, Input::Spawned { pid: 1 }, &["started: started pid 1"])],
    );
    let mut now = 0;
    for pid in 2..=4 {
        now += 10;
        let effects = render(&machine.handle(crash(2), start + Duration::from_millis(now), 0.0));
        assert_eq!(effects[0], format!("exited: pid {} exit code 2", pid - 1));
        if machine.next_deadline().is_some() {
            now += 1000;
            assert_eq!(render(&machine.handle(Input::Timer, start + Duration::from_millis(now), 0.0)), ["spawn"]);
        }
        machine.handle(Input::Spawned { pid }, start + Duration::from_millis(now), 0.0);
    }
    check(
        &mut machine,
        start,
        &[(
            now + 10,
            crash(2),
            &[
                "exited: pid 4 exit code 2",
                "gave_up: gave up: more than 3 restarts within 60s (last: exit code 2); start it again with `mend start`",
            ],
        )],
    );
    assert_eq!(machine.state(), ReplicaState::Failed);
    assert_eq!(machine.next_deadline(), None);
    // An operator's start gives it a fresh budget.
    check(&mut machine, start, &[(now + 20, Input::Start, &["spawn"])]);
}

#[test]
fn issue_9_a_policy_restart_says_why_and_spends_the_restart_budget() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy { readiness_gate: None, liveness: None, ..policy() });
    let ready = "ready: ready: running (no readiness or liveness probe)";
    check(
        &mut machine,
        start,
        &[(0, Input::Start, &["spawn"]), (0, Input::Spawned { pid: 1 }, &["started: started pid 1", ready])],
    );
    let request = Request::policy("Slow fired on web; diagnosis: Slow");
    // Three restarts are the budget (policy(): 3 within 60 s); each is announced with its reason.
    for pid in 1..=3 {
        let at = u64::from(pid) * 100;
        let effects = render(&machine.handle(Input::Restart(request.clone()), start + Duration::from_millis(at), 0.0));
        assert!(
            effects.contains(&format!(
                "stopping: sending SIGTERM to pid {pid}: restart by healing policy: Slow fired on web; diagnosis: Slow"
            )),
            "{effects:?}"
        );
        let effects =
            render(&machine.handle(Input::Exited(ExitInfo::signal(15)), start + Duration::from_millis(at + 10), 0.0));
        assert_eq!(effects[1], "restarted: restarting: restart by healing policy: Slow fired on web; diagnosis: Slow");
        machine.handle(Input::Spawned { pid: pid + 1 }, start + Duration::from_millis(at + 10), 0.0);
    }
    assert_eq!(machine.restarts(), 3, "a policy's restarts count");
    machine.handle(Input::Restart(request.clone()), start + Duration::from_millis(500), 0.0);
    let effects = render(&machine.handle(Input::Exited(ExitInfo::signal(15)), start + Duration::from_millis(510), 0.0));
    assert!(effects[1].starts_with("gave_up: gave up: more than 3 restarts within 60s"), "{effects:?}");
    assert_eq!(machine.state(), ReplicaState::Failed);
    // A policy does not start what is down; an operator does.
    assert!(machine.handle(Input::Restart(request), start + Duration::from_millis(600), 0.0).is_empty());
    assert_eq!(
        render(&machine.handle(
            Input::Restart(Request::operator(Some("fixed the disk"))),
            start + Duration::from_millis(700),
            0.0
        )),
        ["spawn"]
    );
}

#[test]
fn restart_policies_decide_whether_an_exit_restarts() {
    let start = Instant::now();
    for (restart, exit, expected_state) in [
        (RestartPolicy::Always, ExitInfo::code(0), ReplicaState::Running),
        (RestartPolicy::OnFailure, ExitInfo::code(0), ReplicaState::Exited),
        (RestartPolicy::OnFailure, ExitInfo::code(1), ReplicaState::Running),
        (RestartPolicy::OnFailure, ExitInfo::signal(9), ReplicaState::Running),
        (RestartPolicy::Never, ExitInfo::code(1), ReplicaState::Exited),
    ] {
        let mut machine = Lifecycle::new(Policy { restart, readiness_gate: None, liveness: None, ..policy() });
        machine.handle(Input::Start, start, 0.0);
        machine.handle(Input::Spawned { pid: 1 }, start, 0.0);
        let effects = machine.handle(Input::Exited(exit), start, 0.0);
        if effects.contains(&Effect::Spawn) {
            machine.handle(Input::Spawned { pid: 2 }, start, 0.0);
        }
        assert_eq!(machine.state(), expected_state, "{restart:?} {exit}");
    }
}

#[test]
fn a_stopped_process_is_killed_on_the_first_timed_out_probe() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    check(
        &mut machine,
        start,
        &[
            (0, Input::Start, &["spawn"]),
            (0, Input::Spawned { pid: 7 }, &["started: started pid 7"]),
            (10, liveness(7, ProbeOutcome::Success), &["ready: ready: liveness probe passed"]),
            (
                900,
                liveness(7, timeout('T', 0.0)),
                &[
                    "unhealthy: liveness check failed: process is stopped (state T) and cannot answer",
                    "unready: not ready: stopping",
                    "stopping: killing pid 7: liveness check failed: process is stopped (state T) and cannot answer",
                    "kill",
                ],
            ),
            (
                905,
                Input::Exited(ExitInfo::signal(9)),
                &[
                    "exited: pid 7 killed by SIGKILL (9)",
                    "restarted: restarting in 0ms: liveness check failed: process is stopped (state T) and cannot answer",
                    "spawn",
                ],
            ),
        ],
    );
}

#[test]
fn a_busy_replica_is_not_restarted_before_its_busy_timeout() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    machine.handle(liveness(7, ProbeOutcome::Success), start, 0.0);
    // Busy: 90 % of a core while not answering. Ten timeouts in a row, far beyond the failure threshold.
    let first = render(&machine.handle(liveness(7, timeout('R', 0.9)), start + Duration::from_secs(1), 0.0));
    assert_eq!(
        first,
        [
            "probe_failed: liveness probe failed: timed out while the process is busy (state R, 90% CPU); busy, not hung: replaced only after 30s"
        ]
    );
    for secs in 2..=10 {
        let effects = machine.handle(liveness(7, timeout('R', 0.9)), start + Duration::from_secs(secs), 0.0);
        assert!(
            !effects.contains(&Effect::Kill) && !effects.iter().any(|e| matches!(e, Effect::Signal(_))),
            "{secs}s: {effects:?}"
        );
    }
    assert_eq!(machine.state(), ReplicaState::Running, "busy replicas leave the ready set but keep running");
    assert_eq!(machine.unready(), Some(Unready::Busy(ProbeRole::Liveness)));
    // Recovers: counted as healthy again.
    let effects = render(&machine.handle(liveness(7, ProbeOutcome::Success), start + Duration::from_secs(11), 0.0));
    assert_eq!(effects, ["probe_recovered: liveness probe passes again", "ready: ready: liveness probe passed"]);
    // Busy again for longer than the busy timeout: replaced, gracefully.
    machine.handle(liveness(7, timeout('R', 0.9)), start + Duration::from_secs(20), 0.0);
    let effects = render(&machine.handle(liveness(7, timeout('R', 0.9)), start + Duration::from_secs(50), 0.0));
    assert_eq!(effects.last().map(String::as_str), Some("signal 15"), "{effects:?}");
}

fn mend_trouble(trouble: MendTrouble, reason: &str) -> ProbeOutcome {
    ProbeOutcome::Inconclusive { trouble, reason: reason.into() }
}

/// Issue 20: with mend out of file descriptors (300 idle API connections, an fd limit of 256), its own
/// liveness probe failed with "Too many open files", and mend stopped a healthy replica. A probe that
/// fails through mend's own trouble is mend's incident: reported once, counted neither for nor against
/// the replica (its earlier failure count stands), and no replica is stopped however long it lasts.
#[test]
fn issue_20_mend_trouble_never_stops_a_replica() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    let emfile = "connect to 127.0.0.1:9000: Too many open files (os error 24)";
    let lag = "no answer within 400 ms, but mend's event loop ran up to 2.1 s late meanwhile";
    let mut steps: Vec<(u64, Input, &[&str])> = vec![
        (0, Input::Start, &["spawn"]),
        (0, Input::Spawned { pid: 7 }, &["started: started pid 7"]),
        (10, liveness(7, ProbeOutcome::Success), &["ready: ready: liveness probe passed"]),
        (500, liveness(7, failure()), &["probe_failed: liveness probe failed: http status 500 (expected 200-399)"]),
        (
            1000,
            liveness(7, mend_trouble(MendTrouble::FileDescriptors, emfile)),
            &[
                "mend_trouble: liveness probe cannot judge the replica: connect to 127.0.0.1:9000: Too many open files (os error 24); mend's own trouble, not the replica's",
            ],
        ),
    ];
    // Far more inconclusive probes than the failure threshold, of every kind: nothing happens.
    for idx in 0..20 {
        let outcome = match idx % 3 {
            0 => mend_trouble(MendTrouble::FileDescriptors, emfile),
            1 => mend_trouble(MendTrouble::Memory, "connect: Cannot allocate memory (os error 12)"),
            _ => mend_trouble(MendTrouble::Lag, lag),
        };
        steps.push((1500 + idx * 500, liveness(7, outcome), &[]));
    }
    steps.extend([
        (
            12_000,
            liveness(7, ProbeOutcome::Success),
            &[
                "mend_trouble: mend's trouble is over: the liveness probe can judge the replica again",
                "probe_recovered: liveness probe passes again",
            ][..],
        ),
        // The trouble began and ended: a new episode is reported again.
        (
            12_500,
            liveness(7, mend_trouble(MendTrouble::Lag, lag)),
            &["mend_trouble: liveness probe cannot judge the replica: no answer within 400 ms, but mend's event loop ran up to 2.1 s late meanwhile; mend's own trouble, not the replica's"],
        ),
    ]);
    check(&mut machine, start, &steps);
    assert_eq!(machine.state(), ReplicaState::Running);
    assert!(machine.ready());

    // The failure count stands across mend's trouble: two real failures, trouble, a third real one.
    let mut machine = Lifecycle::new(policy());
    let effects = drive(
        &mut machine,
        start,
        &[
            (0, Input::Start),
            (0, Input::Spawned { pid: 8 }),
            (10, liveness(8, ProbeOutcome::Success)),
            (500, liveness(8, failure())),
            (1000, liveness(8, failure())),
            (1500, liveness(8, mend_trouble(MendTrouble::FileDescriptors, emfile))),
            (2000, liveness(8, failure())),
        ],
    );
    assert!(
        render(&effects)
            .iter()
            .any(|e| e.starts_with("unhealthy: liveness check failed: liveness probe failed 3 times")),
        "{:?}",
        render(&effects)
    );
}

#[test]
fn an_idle_unresponsive_replica_fails_after_the_threshold_and_is_killed() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    check(
        &mut machine,
        start,
        &[
            (0, Input::Start, &["spawn"]),
            (0, Input::Spawned { pid: 7 }, &["started: started pid 7"]),
            (10, liveness(7, ProbeOutcome::Success), &["ready: ready: liveness probe passed"]),
            (
                500,
                liveness(7, timeout('S', 0.0)),
                &[
                    "probe_failed: liveness probe failed: liveness probe timed out and the process made no progress (state S, 0.0% CPU)",
                ],
            ),
            (1000, liveness(7, timeout('S', 0.01)), &[]),
            (
                1500,
                liveness(7, timeout('S', 0.0)),
                &[
                    "unhealthy: liveness check failed: liveness probe failed 3 times in a row (last: liveness probe timed out and the process made no progress (state S, 0.0% CPU))",
                    "unready: not ready: stopping",
                    "stopping: killing pid 7: liveness check failed: liveness probe failed 3 times in a row (last: liveness probe timed out and the process made no progress (state S, 0.0% CPU))",
                    "kill",
                ],
            ),
        ],
    );
}

#[test]
fn explicit_liveness_failures_stop_gracefully_and_escalate_to_sigkill() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    machine.handle(liveness(7, ProbeOutcome::Success), start, 0.0);
    machine.handle(liveness(7, failure()), start, 0.0);
    machine.handle(liveness(7, failure()), start, 0.0);
    let effects = render(&machine.handle(liveness(7, failure()), start, 0.0));
    assert_eq!(effects.last().map(String::as_str), Some("signal 15"));
    assert_eq!(machine.next_deadline(), Some(start + Duration::from_secs(5)));
    check(
        &mut machine,
        start,
        &[
            (4000, Input::Timer, &[]),
            (5000, Input::Timer, &["stopping: pid 7 did not stop within 5s: sending SIGKILL", "kill"]),
            (5001, Input::Timer, &[]),
        ],
    );
    assert_eq!(machine.next_deadline(), None);
}

#[test]
fn probe_results_about_an_earlier_process_are_ignored() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    assert_eq!(render(&machine.handle(liveness(6, timeout('T', 0.0)), start, 0.0)), Vec::<String>::new());
}

#[test]
fn startup_probe_holds_liveness_off_until_it_passes() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy { startup: Some(Thresholds { success: 1, failure: 3 }), ..policy() });
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    assert!(machine.active_probes().startup && !machine.active_probes().liveness);
    // Liveness outcomes during start-up are ignored: they cannot restart the replica.
    for _ in 0..5 {
        assert!(machine.handle(liveness(7, failure()), start, 0.0).is_empty());
    }
    let startup = |outcome| Input::Probe { role: ProbeRole::Startup, pid: 7, outcome };
    check(&mut machine, start, &[(100, startup(failure()), &[]), (200, startup(ProbeOutcome::Success), &[])]);
    assert!(!machine.active_probes().startup && machine.active_probes().liveness);
    check(&mut machine, start, &[(300, liveness(7, ProbeOutcome::Success), &["ready: ready: liveness probe passed"])]);
}

#[test]
fn startup_probe_failing_too_long_restarts() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy { startup: Some(Thresholds { success: 1, failure: 2 }), ..policy() });
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    let startup = |outcome| Input::Probe { role: ProbeRole::Startup, pid: 7, outcome };
    machine.handle(startup(failure()), start, 0.0);
    let effects = render(&machine.handle(startup(failure()), start, 0.0));
    assert_eq!(effects.last().map(String::as_str), Some("signal 15"), "{effects:?}");
}

#[test]
fn readiness_toggles_with_hysteresis() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy { readiness_gate: Some(gate(ProbeRole::Readiness, 2, 2)), ..policy() });
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    let readiness = |outcome| Input::Probe { role: ProbeRole::Readiness, pid: 7, outcome };
    check(
        &mut machine,
        start,
        &[
            (0, readiness(ProbeOutcome::Success), &[]),
            (1, readiness(ProbeOutcome::Success), &["ready: ready: readiness probe passed"]),
            (2, readiness(failure()), &[]),
            (3, readiness(ProbeOutcome::Success), &[]),
            (4, readiness(failure()), &[]),
            (
                5,
                readiness(failure()),
                &["unready: not ready: readiness probe failed: http status 500 (expected 200-399)"],
            ),
            (6, readiness(ProbeOutcome::Success), &[]),
            (7, readiness(ProbeOutcome::Success), &["ready: ready: readiness probe passed"]),
        ],
    );
    // Readiness failures never restart: only liveness does.
    for _ in 0..10 {
        machine.handle(readiness(failure()), start, 0.0);
    }
    assert_eq!(machine.pid(), Some(7));
}

#[test]
fn operator_stop_start_and_restart() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy { readiness_gate: None, liveness: None, ..policy() });
    check(
        &mut machine,
        start,
        &[
            (0, Input::Start, &["spawn"]),
            (
                0,
                Input::Spawned { pid: 1 },
                &["started: started pid 1", "ready: ready: running (no readiness or liveness probe)"],
            ),
            (
                10,
                Input::Restart(Request::operator(None)),
                &[
                    "unready: not ready: stopping",
                    "stopping: sending SIGTERM to pid 1: restart requested by operator",
                    "drain, waiting for others",
                    "signal 15",
                ],
            ),
            (
                20,
                Input::Exited(ExitInfo::signal(15)),
                &[
                    "exited: pid 1 killed by SIGTERM (15)",
                    "restarted: restarting: restart requested by operator",
                    "spawn",
                ],
            ),
            (
                20,
                Input::Spawned { pid: 2 },
                &["started: started pid 2", "ready: ready: running (no readiness or liveness probe)"],
            ),
            (
                30,
                Input::Stop,
                &[
                    "unready: not ready: stopping",
                    "stopping: sending SIGTERM to pid 2: stop requested",
                    "drain",
                    "signal 15",
                ],
            ),
            (40, Input::Exited(ExitInfo::code(0)), &["exited: pid 2 exit code 0", "stopped: stopped"]),
            (50, Input::Stop, &[]),
            (60, Input::Start, &["spawn"]),
        ],
    );
    assert_eq!(machine.restarts(), 0, "operator restarts are not counted as failures");
}

#[test]
fn liveness_failures_while_starting_are_not_counted_until_the_grace_ends() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    // Connection refused while the process binds its port: not failures yet.
    for ms in [10, 20, 40, 80, 160, 320, 640, 1280] {
        let effects = machine.handle(liveness(7, failure()), start + Duration::from_millis(ms), 0.0);
        assert!(effects.is_empty(), "{ms}ms: {effects:?}");
    }
    // A stopped process is replaced even while starting.
    let effects = render(&machine.handle(liveness(7, timeout('T', 0.0)), start + Duration::from_millis(1300), 0.0));
    assert_eq!(effects.last().map(String::as_str), Some("kill"));
    // A replica that never passes is judged once the grace is over.
    let mut machine = Lifecycle::new(policy());
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 8 }, start, 0.0);
    for ms in [1500, 2000] {
        machine.handle(liveness(8, failure()), start + Duration::from_millis(ms), 0.0);
    }
    let mut machine_effects = render(&machine.handle(liveness(8, failure()), start + Duration::from_millis(2500), 0.0));
    assert_eq!(machine_effects.pop().as_deref(), Some("signal 15"));
}

#[test]
fn a_replica_above_its_memory_limit_is_replaced_gracefully() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy { readiness_gate: None, liveness: None, ..policy() });
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    let over = |pid| Input::MemoryExceeded { pid, rss_bytes: 300 * 1_048_576, limit_bytes: 256 * 1_048_576 };
    assert!(machine.handle(over(6), start, 0.0).is_empty(), "a sample of an earlier process is ignored");
    check(
        &mut machine,
        start,
        &[(
            1000,
            over(7),
            &[
                "unhealthy: memory check failed: resident memory 300.0 MiB is above max_memory_bytes (256.0 MiB)",
                "unready: not ready: stopping",
                "stopping: sending SIGTERM to pid 7: memory check failed: resident memory 300.0 MiB is above max_memory_bytes (256.0 MiB)",
                "drain",
                "signal 15",
            ],
        )],
    );
}

#[test]
fn a_drain_does_not_eat_the_grace_period_and_unready_replicas_are_not_drained() {
    let start = Instant::now();
    let mut machine = Lifecycle::new(policy());
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    // Never ready: nothing to drain.
    let effects = render(&machine.handle(Input::Stop, start, 0.0));
    assert!(!effects.iter().any(|e| e.starts_with("drain")), "{effects:?}");
    let mut machine = Lifecycle::new(policy());
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 8 }, start, 0.0);
    machine.handle(liveness(8, ProbeOutcome::Success), start, 0.0);
    let effects = render(&machine.handle(Input::Stop, start, 0.0));
    assert!(effects.contains(&"drain".to_owned()), "{effects:?}");
    // The drain took 20 s; the process still gets its whole 5 s grace from the signal on.
    machine.restart_stop_clock(start + Duration::from_secs(20));
    assert_eq!(machine.next_deadline(), Some(start + Duration::from_secs(25)));
}

#[test]
fn a_replacement_after_a_long_run_is_immediate_every_time() {
    // How long a replaced process ran counts from its start, not from when its stop began: a replica
    // replaced once an hour is not backed off as if it were crash-looping.
    let start = Instant::now();
    let mut machine = Lifecycle::new(Policy { readiness_gate: None, liveness: None, ..policy() });
    machine.handle(Input::Start, start, 0.0);
    machine.handle(Input::Spawned { pid: 7 }, start, 0.0);
    let over = |pid| Input::MemoryExceeded { pid, rss_bytes: 300 * 1_048_576, limit_bytes: 256 * 1_048_576 };
    let reason = "memory check failed: resident memory 300.0 MiB is above max_memory_bytes (256.0 MiB)";
    for (round, pid) in [(1_u64, 7_u32), (2, 8)] {
        let at = round * 60_000;
        machine.handle(over(pid), start + Duration::from_millis(at), 0.0);
        check(
            &mut machine,
            start,
            &[(
                at + 100,
                Input::Exited(ExitInfo::signal(15)),
                &[
                    &format!("exited: pid {pid} killed by SIGTERM (15)"),
                    &format!("restarted: restarting in 0ms: {reason}"),
                    "spawn",
                ],
            )],
        );
        machine.handle(Input::Spawned { pid: pid + 1 }, start + Duration::from_millis(at + 100), 0.0);
    }
}

/// Drives a fresh machine with `policy` through `steps` of (milliseconds since start, input), whatever
/// their effects, and returns the effects of the last step.
fn drive(machine: &mut Lifecycle, start: Instant, steps: &[(u64, Input)]) -> Vec<Effect> {
    let mut last = Vec::new();
    for (at_ms, input) in steps {
        last = machine.handle(input.clone(), start + Duration::from_millis(*at_ms), 0.0);
    }
    last
}

#[test]
fn the_last_exit_says_who_ended_the_process() {
    let start = Instant::now();
    let over = Input::MemoryExceeded { pid: 7, rss_bytes: 300 * 1_048_576, limit_bytes: 256 * 1_048_576 };
    let exit = |exit: ExitInfo| Input::Exited(exit);
    let startup = |outcome| Input::Probe { role: ProbeRole::Startup, pid: 7, outcome };
    let with_startup = Policy { startup: Some(Thresholds { success: 1, failure: 2 }), ..policy() };
    /// What happens, under which policy, the steps after a start, who ended the process, what status shows.
    type Case = (&'static str, Policy, Vec<(u64, Input)>, ExitCause, &'static str);
    let cases: Vec<Case> = vec![
        ("the program exits", policy(), vec![(100, crash(1))], ExitCause::Program, "exit code 1"),
        (
            "the program aborts",
            policy(),
            vec![(100, exit(ExitInfo::signal(6)))],
            ExitCause::Program,
            "crashed: SIGABRT (6)",
        ),
        (
            "an operator's kill -9",
            policy(),
            vec![(100, exit(ExitInfo::signal(9)))],
            ExitCause::ExternalSignal,
            "killed by SIGKILL (9) from outside mend",
        ),
        (
            "someone's SIGTERM",
            policy(),
            vec![(100, exit(ExitInfo::signal(15)))],
            ExitCause::ExternalSignal,
            "killed by SIGTERM (15) from outside mend",
        ),
        (
            "a stopped process, seen by its probe",
            policy(),
            vec![(100, liveness(7, timeout('T', 0.0))), (105, exit(ExitInfo::signal(9)))],
            ExitCause::Mend(StopReason::Hung),
            "killed by mend: hung",
        ),
        (
            "a stopped process, seen by sampling",
            policy(),
            vec![(100, Input::Stopped { pid: 7, for_secs: 1.0 }), (105, exit(ExitInfo::signal(9)))],
            ExitCause::Mend(StopReason::Hung),
            "killed by mend: hung",
        ),
        (
            "an idle process that does not answer",
            policy(),
            vec![
                (500, liveness(7, timeout('S', 0.0))),
                (1000, liveness(7, timeout('S', 0.0))),
                (1500, liveness(7, timeout('S', 0.0))),
                (1505, exit(ExitInfo::signal(9))),
            ],
            ExitCause::Mend(StopReason::Hung),
            "killed by mend: hung",
        ),
        (
            "a liveness probe that fails",
            policy(),
            vec![
                (500, liveness(7, failure())),
                (1000, liveness(7, failure())),
                (1500, liveness(7, failure())),
                (1600, exit(ExitInfo::signal(15))),
            ],
            ExitCause::Mend(StopReason::Liveness),
            "stopped by mend: liveness probe failing (SIGTERM)",
        ),
        (
            "busy past its busy timeout",
            policy(),
            vec![
                (1000, liveness(7, timeout('R', 0.9))),
                (31_000, liveness(7, timeout('R', 0.9))),
                (31_100, exit(ExitInfo::code(0))),
            ],
            ExitCause::Mend(StopReason::Busy),
            "stopped by mend: busy past busy_timeout (exit code 0)",
        ),
        (
            "a startup probe that never passes",
            with_startup,
            vec![(100, startup(failure())), (200, startup(failure())), (300, exit(ExitInfo::signal(15)))],
            ExitCause::Mend(StopReason::Startup),
            "stopped by mend: startup probe failing (SIGTERM)",
        ),
        (
            "over its memory limit",
            policy(),
            vec![(100, over.clone()), (200, exit(ExitInfo::code(0)))],
            ExitCause::Mend(StopReason::Memory),
            "stopped by mend: over its memory limit (exit code 0)",
        ),
        (
            "over its memory limit, deaf to SIGTERM",
            policy(),
            vec![(100, over.clone()), (5100, Input::Timer), (5105, exit(ExitInfo::signal(9)))],
            ExitCause::Mend(StopReason::Memory),
            "killed by mend: over its memory limit",
        ),
        (
            "a kill -9 from outside while mend stops it gracefully",
            policy(),
            vec![(100, over), (200, exit(ExitInfo::signal(9)))],
            ExitCause::ExternalSignal,
            "killed by SIGKILL (9) from outside mend",
        ),
        (
            "an operator's stop",
            policy(),
            vec![(100, Input::Stop), (200, exit(ExitInfo::code(0)))],
            ExitCause::Mend(StopReason::Stop),
            "stopped by mend: stop requested (exit code 0)",
        ),
        (
            "an operator's restart",
            policy(),
            vec![(100, Input::Restart(Request::operator(None))), (200, exit(ExitInfo::signal(15)))],
            ExitCause::Mend(StopReason::Restart),
            "stopped by mend: restart requested (SIGTERM)",
        ),
        (
            "a stop signal that is SIGKILL",
            Policy { stop_signal: 9, ..policy() },
            vec![(100, Input::Stop), (105, exit(ExitInfo::signal(9)))],
            ExitCause::Mend(StopReason::Stop),
            "killed by mend: stop requested",
        ),
    ];
    for (what, policy, steps, cause, shown) in cases {
        let mut machine = Lifecycle::new(policy);
        let started = [(0, Input::Start), (0, Input::Spawned { pid: 7 }), (10, liveness(7, ProbeOutcome::Success))];
        drive(&mut machine, start, &started);
        let effects = drive(&mut machine, start, &steps);
        let last = machine.last_exit().unwrap_or_else(|| panic!("{what}: no exit"));
        assert_eq!((last.cause, last.to_string().as_str()), (cause, shown), "{what}");
        // The exited event carries it too.
        let details = effects.iter().find_map(|effect| match effect {
            Effect::Event { kind: mend_types::EventKind::Exited, details, .. } => Some(details.clone()),
            _ => None,
        });
        let details = details.unwrap_or_else(|| panic!("{what}: no exited event in {effects:?}"));
        assert_eq!(details["cause"], cause.as_str(), "{what}");
        assert_eq!(details.get("stop_reason").and_then(|r| r.as_str()), cause.stop_reason().map(StopReason::as_str));
    }
}

/// Drives `machine` through `steps` of (milliseconds since start, input, state and why it is not ready
/// after the input).
fn check_states(machine: &mut Lifecycle, start: Instant, steps: &[(u64, Input, ReplicaState, Option<Unready>)]) {
    for (step_idx, (at_ms, input, state, unready)) in steps.iter().enumerate() {
        machine.handle(input.clone(), start + Duration::from_millis(*at_ms), 0.0);
        assert_eq!((machine.state(), machine.unready()), (*state, *unready), "step {step_idx} at {at_ms}ms: {input:?}");
    }
}

#[test]
fn a_running_replica_out_of_the_ready_set_says_why_once_past_its_start() {
    use ReplicaState::{Running, Starting, Stopping, Waiting};
    let start = Instant::now();
    let readiness = |outcome| Input::Probe { role: ProbeRole::Readiness, pid: 7, outcome };
    let failing = Some(Unready::Failing(ProbeRole::Readiness));
    let mut machine = Lifecycle::new(Policy {
        readiness_gate: Some(ReadinessGate {
            start_grace: Duration::from_millis(300),
            ..gate(ProbeRole::Readiness, 1, 2)
        }),
        ..policy()
    });
    check_states(
        &mut machine,
        start,
        &[
            (0, Input::Start, Waiting, None),
            (0, Input::Spawned { pid: 7 }, Starting, None),
            // Refused while it binds its port: starting.
            (10, readiness(failure()), Starting, None),
            (200, readiness(failure()), Starting, None),
            // Never ready, past its start grace: running, and its readiness fails.
            (400, readiness(failure()), Running, failing),
            (500, readiness(ProbeOutcome::Success), Running, None),
            // Ready, then failing (the threshold is 2): a readiness-only failure, not a start.
            (600, readiness(failure()), Running, None),
            (700, readiness(failure()), Running, failing),
            (800, readiness(ProbeOutcome::Success), Running, None),
            (900, Input::Stop, Stopping, None),
        ],
    );
    // Without a readiness probe the liveness probe gates readiness; a new process starts again.
    let mut machine = Lifecycle::new(policy());
    check_states(
        &mut machine,
        start,
        &[
            (0, Input::Start, Waiting, None),
            (0, Input::Spawned { pid: 7 }, Starting, None),
            (10, liveness(7, ProbeOutcome::Success), Running, None),
            // Busy outcomes take it out of the ready set after 3 (its failure threshold).
            (1000, liveness(7, timeout('R', 0.9)), Running, None),
            (2000, liveness(7, timeout('R', 0.9)), Running, None),
            (3000, liveness(7, timeout('R', 0.9)), Running, Some(Unready::Busy(ProbeRole::Liveness))),
            (4000, liveness(7, failure()), Running, Some(Unready::Failing(ProbeRole::Liveness))),
            (4100, crash(1), Waiting, None),
            (4100, Input::Spawned { pid: 8 }, Starting, None),
        ],
    );
}
