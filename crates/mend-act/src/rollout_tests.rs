//! The rollout controller as data: observations in, decisions out; and long seeded simulations.

use mend_types::{ReleaseName, Rollout, RolloutPhase, ServiceName, Timestamp};

use super::*;

fn rollout(steps: &[u8]) -> Rollout {
    Rollout {
        service: ServiceName::new("web").expect("name"),
        canary: ReleaseName::new("v2").expect("v2"),
        stable: ReleaseName::new("v1").expect("v1"),
        canary_replicas: 1,
        steps: steps.to_vec(),
        step_idx: 0,
        interval_ms: 30_000,
        phase: RolloutPhase::Starting,
        paused: false,
        started_at: Timestamp::from_millis(0),
        since: Timestamp::from_millis(0),
        inconclusive: 0,
        reason: String::new(),
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_millis(seconds * 1000)
}

/// `requests` requests with `errors` failures and latencies spread evenly around `median_ms`.
fn served(requests: u64, errors: u64, median_ms: f64) -> ReleaseWindow {
    let n_samples = requests.min(500) as usize;
    let latencies_ms = (0..n_samples).map(|i| median_ms * (0.8 + 0.4 * (i as f64 / n_samples.max(1) as f64))).collect();
    ReleaseWindow { requests, errors, latencies_ms }
}

fn window(stable: ReleaseWindow, canary: ReleaseWindow) -> Observation {
    Observation { canary_ready: true, window: Some(Window { stable, canary }), ..Observation::default() }
}

fn ready() -> Observation {
    Observation { canary_ready: true, ..Observation::default() }
}

fn kinds(decisions: &[RolloutDecision]) -> Vec<&'static str> {
    decisions
        .iter()
        .map(|decision| match decision {
            RolloutDecision::SetWeight { .. } => "set_weight",
            RolloutDecision::Promote { .. } => "promote",
            RolloutDecision::RollBack { .. } => "roll_back",
            RolloutDecision::Hold { .. } => "hold",
        })
        .collect()
}

#[test]
fn a_good_canary_walks_every_step_and_is_promoted() {
    let mut controller = RolloutController::new(rollout(&[10, 50, 100]), Analysis::default());
    assert_eq!(controller.step(&Observation::default(), at(1)), [], "not ready: nothing yet");
    let decisions = controller.step(&ready(), at(2));
    assert!(matches!(decisions[..], [RolloutDecision::SetWeight { weight: 10, .. }]), "{decisions:?}");
    assert_eq!(controller.step(&window(served(900, 1, 10.0), served(100, 0, 10.0)), at(20)), [], "still baking");
    let decisions = controller.step(&window(served(900, 1, 10.0), served(100, 0, 10.0)), at(32));
    assert!(matches!(decisions[..], [RolloutDecision::SetWeight { weight: 50, .. }]), "{decisions:?}");
    let decisions = controller.step(&window(served(500, 0, 10.0), served(500, 1, 10.2)), at(62));
    assert!(matches!(decisions[..], [RolloutDecision::SetWeight { weight: 100, .. }]), "{decisions:?}");
    // At 100 % the stable release gets nothing: judged against the previous window's stable figures.
    let decisions = controller.step(&window(served(0, 0, 0.0), served(1000, 2, 10.1)), at(92));
    assert_eq!(kinds(&decisions), ["promote"], "{decisions:?}");
    assert_eq!(controller.rollout.phase, RolloutPhase::Promoting);
    assert_eq!(controller.step(&ready(), at(93)), [], "waits for the edge");
    let finished = Observation { finished: true, ..ready() };
    assert_eq!(controller.step(&finished, at(95)), []);
    assert_eq!(controller.rollout.phase, RolloutPhase::Promoted);
}

#[test]
fn an_erroring_canary_is_rolled_back_at_its_first_step() {
    let mut controller = RolloutController::new(rollout(&[10, 50, 100]), Analysis::default());
    controller.step(&ready(), at(1));
    let decisions = controller.step(&window(served(900, 0, 10.0), served(100, 30, 10.0)), at(31));
    let [RolloutDecision::RollBack { reason }] = &decisions[..] else { panic!("{decisions:?}") };
    assert!(reason.contains("canary error ratio 30.00% (30 of 100) against stable 0.00% (0 of 900)"), "{reason}");
    assert_eq!(controller.rollout.phase, RolloutPhase::RollingBack);
    assert_eq!(controller.rollout.weight(), 0);
}

#[test]
fn a_slower_canary_fails_the_latency_judgement() {
    let analysis = Analysis { max_p99_ratio: 10.0, ..Analysis::default() };
    // 40 % slower at the median; p99 within its (wide) allowance: only Mann-Whitney catches it.
    let verdict = judge(&Window { stable: served(500, 0, 20.0), canary: served(200, 0, 28.0) }, None, &analysis);
    let Verdict::Fail(reason) = verdict else { panic!("{verdict:?}") };
    assert!(reason.contains("Mann-Whitney"), "{reason}");
    // The same shift in a 1 ms service is below the latency slack: it passes.
    let verdict = judge(&Window { stable: served(500, 0, 1.0), canary: served(200, 0, 1.4) }, None, &analysis);
    assert!(matches!(verdict, Verdict::Pass(_)), "{verdict:?}");
    // And the p99 threshold alone: the same median, a slow tail of 3 % at five times the latency.
    let mut tail = served(200, 0, 20.0);
    for latency in tail.latencies_ms.iter_mut().step_by(33) {
        *latency *= 5.0;
    }
    let verdict = judge(&Window { stable: served(500, 0, 20.0), canary: tail }, None, &Analysis::default());
    let Verdict::Fail(reason) = verdict else { panic!("{verdict:?}") };
    assert!(reason.contains("p99"), "{reason}");
}

#[test]
fn no_traffic_holds_the_step_and_never_promotes_or_aborts() {
    let mut controller = RolloutController::new(rollout(&[10, 100]), Analysis::default());
    controller.step(&ready(), at(1));
    for window_idx in 1..=20 {
        let now = at(1 + 30 * window_idx);
        let decisions = controller.step(&window(served(0, 0, 0.0), served(0, 0, 0.0)), now);
        let [RolloutDecision::Hold { reason }] = &decisions[..] else { panic!("{decisions:?}") };
        assert!(reason.contains("fewer than the 50 a verdict needs"), "{reason}");
        assert!(reason.contains(&format!("{window_idx} inconclusive window")), "{reason}");
    }
    // A few errors on a handful of requests are still no verdict.
    let decisions = controller.step(&window(served(3, 0, 1.0), served(3, 3, 1.0)), at(1 + 30 * 21));
    assert_eq!(kinds(&decisions), ["hold"]);
    assert_eq!((controller.rollout.phase, controller.rollout.weight()), (RolloutPhase::Stepping, 10));
}

#[test]
fn trouble_rolls_back_whatever_the_statistics() {
    let mut controller = RolloutController::new(rollout(&[10, 100]), Analysis::default());
    controller.step(&ready(), at(1));
    let trouble = Observation { canary_trouble: Some("replica 3 crash-loops (4 exits in 30 s)".into()), ..ready() };
    let decisions = controller.step(&trouble, at(5));
    let [RolloutDecision::RollBack { reason }] = &decisions[..] else { panic!("{decisions:?}") };
    assert_eq!(reason, "the canary is in trouble: replica 3 crash-loops (4 exits in 30 s)");
    // Before it was ever ready, too; and a canary never ready is rolled back after the timeout.
    let mut controller = RolloutController::new(rollout(&[10]), Analysis::default());
    assert_eq!(controller.step(&Observation::default(), at(119)), []);
    let decisions = controller.step(&Observation::default(), at(120));
    let [RolloutDecision::RollBack { reason }] = &decisions[..] else { panic!("{decisions:?}") };
    assert_eq!(reason, "the canary was not ready within 120 s");
}

#[test]
fn operators_pause_resume_abort_and_promote() {
    let mut controller = RolloutController::new(rollout(&[10, 50]), Analysis::default());
    controller.step(&ready(), at(1));
    let pause = Observation { command: Some(RolloutCommand::Pause), ..ready() };
    assert_eq!(kinds(&controller.step(&pause, at(2))), ["hold"]);
    // A passing window while paused holds the step.
    assert_eq!(kinds(&controller.step(&window(served(900, 0, 10.0), served(100, 0, 10.0)), at(31))), ["hold"]);
    assert_eq!(controller.rollout.weight(), 10);
    // A failing one still rolls back.
    let mut failing = controller.clone();
    assert_eq!(kinds(&failing.step(&window(served(900, 0, 10.0), served(100, 50, 10.0)), at(61))), ["roll_back"]);
    let resume = Observation { command: Some(RolloutCommand::Resume), ..ready() };
    assert_eq!(kinds(&controller.step(&resume, at(40))), ["hold"]);
    assert!(!controller.rollout.paused);
    assert_eq!(controller.step(&window(served(900, 0, 10.0), served(100, 0, 10.0)), at(60)), [], "bakes again");
    let promote = Observation { command: Some(RolloutCommand::Promote), ..ready() };
    assert_eq!(kinds(&controller.clone().step(&promote, at(61))), ["promote"]);
    let abort = Observation { command: Some(RolloutCommand::Abort), ..ready() };
    let decisions = controller.step(&abort, at(61));
    assert!(matches!(&decisions[..], [RolloutDecision::RollBack { reason }] if reason == "aborted by an operator"));
}

#[test]
fn a_restart_resumes_a_step_with_a_new_window_and_repeats_a_rollback() {
    let mut controller = RolloutController::new(rollout(&[10, 50]), Analysis::default());
    controller.step(&ready(), at(1));
    controller.step(&window(served(900, 0, 10.0), served(100, 0, 10.0)), at(31));
    let mut restarted = RolloutController::new(controller.rollout.clone(), Analysis::default());
    let decisions = restarted.resume_after_restart(at(100));
    assert!(matches!(decisions[..], [RolloutDecision::SetWeight { weight: 50, .. }]), "{decisions:?}");
    assert_eq!(restarted.step(&window(served(900, 0, 10.0), served(100, 0, 10.0)), at(120)), []);
    controller.step(&window(served(900, 0, 10.0), served(100, 90, 10.0)), at(61));
    let mut restarted = RolloutController::new(controller.rollout.clone(), Analysis::default());
    assert_eq!(kinds(&restarted.resume_after_restart(at(100))), ["roll_back"]);
}

/// A seeded random walk over thousands of rollouts: whatever the traffic, a rollout never promotes or
/// rolls back on a window with too few requests, never goes backwards in its steps, a bad canary (errors
/// or latency far worse) is never promoted, and every rollout with traffic ends.
#[test]
fn simulation_over_many_rollouts_keeps_the_invariants() {
    let analysis = Analysis::default();
    let mut rng = fastrand::Rng::with_seed(13);
    let (mut n_promoted, mut n_rolled_back) = (0, 0);
    for _ in 0..2_000 {
        let bad = rng.bool();
        let mut controller = RolloutController::new(rollout(&[5, 25, 50, 100]), analysis);
        let mut now = 0;
        let mut last_weight = 0;
        for _tick in 0..400 {
            now += 1 + rng.i64(0..20);
            let traffic = if rng.u8(0..10) == 0 { 0 } else { rng.u64(0..2_000) };
            let canary_share = u64::from(controller.rollout.weight());
            let canary_requests = traffic * canary_share / 100;
            let stable_requests = traffic - canary_requests;
            let canary = if bad {
                served(canary_requests, canary_requests / 5, 10.0)
            } else {
                served(canary_requests, canary_requests / 1000, 10.0)
            };
            let observation = Observation {
                canary_ready: rng.u8(0..4) != 0,
                window: Some(Window { stable: served(stable_requests, stable_requests / 1000, 10.0), canary }),
                finished: rng.bool(),
                ..Observation::default()
            };
            let before = controller.rollout.clone();
            let decisions = controller.step(&observation, at(now));
            for decision in &decisions {
                match decision {
                    RolloutDecision::Promote { .. } => {
                        assert!(!bad, "a bad canary was promoted: {before:?}");
                        assert!(canary_requests >= analysis.min_requests, "promoted on {canary_requests} requests");
                    }
                    RolloutDecision::RollBack { .. } => {
                        assert!(canary_requests >= analysis.min_requests, "rolled back on {canary_requests} requests");
                    }
                    RolloutDecision::SetWeight { weight, .. } => {
                        assert!(*weight >= last_weight, "weight went back from {last_weight} to {weight}");
                        last_weight = *weight;
                    }
                    RolloutDecision::Hold { .. } => {}
                }
            }
            if controller.rollout.phase.is_done() {
                break;
            }
        }
        match controller.rollout.phase {
            RolloutPhase::Promoted => n_promoted += 1,
            RolloutPhase::RolledBack => n_rolled_back += 1,
            other => panic!("a rollout did not end in 400 ticks: {other:?} {:?}", controller.rollout),
        }
    }
    assert!(n_promoted > 500 && n_rolled_back > 500, "{n_promoted} promoted, {n_rolled_back} rolled back");
}
