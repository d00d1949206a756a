//! The autoscaler as data, and simulated over hours: a square wave, noise, missing data, flapping.

use std::time::Duration;

use mend_config::{Autoscale, AutoscaleMetric};
use mend_types::Timestamp;

use super::*;

fn spec() -> Autoscale {
    Autoscale {
        min: 2,
        max: 8,
        metric: AutoscaleMetric::Cpu,
        target: 70.0,
        tolerance: 0.1,
        window: Duration::from_secs(300),
        interval: Duration::from_secs(15),
        rate_window: Duration::from_secs(60),
        max_up: 4,
        max_down: 1,
        flap_budget: 30,
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_000_000_000 + secs * 1000)
}

fn cpu(per_replica: f64, n: u32) -> Observation {
    Observation::Value { per_replica, n_reporting: n }
}

#[test]
fn desired_is_ceil_of_current_times_observed_over_target() {
    let mut autoscaler = Autoscaler::new(spec());
    let up = autoscaler.recommend(2, cpu(142.0, 2), at(0));
    assert_eq!((up.desired, up.hold.clone()), (5, None));
    assert_eq!(up.to_string(), "cpu 142% of 70% target across 2 replicas → 5");
    // Within 10 %: nothing.
    let mut autoscaler = Autoscaler::new(spec());
    let held = autoscaler.recommend(4, cpu(76.0, 4), at(0));
    assert_eq!((held.desired, held.hold), (4, Some(Hold::WithinTolerance)));
    // Bounds: never above max, never below min.
    let mut autoscaler = Autoscaler::new(spec());
    assert_eq!(autoscaler.recommend(2, cpu(1000.0, 2), at(0)).desired, 6, "max_up 4 per minute");
    let at_max = autoscaler.recommend(8, cpu(1000.0, 8), at(15));
    assert_eq!((at_max.desired, at_max.hold), (8, Some(Hold::AtBound)));
    assert_eq!(Autoscaler::new(spec()).recommend(1, cpu(10.0, 1), at(0)).desired, 2, "back to min");
}

#[test]
fn scale_down_waits_for_the_window_and_takes_the_highest_recommendation() {
    let mut autoscaler = Autoscaler::new(spec());
    // Load high enough for 6, then gone.
    assert_eq!(autoscaler.recommend(6, cpu(70.0, 6), at(0)).desired, 6);
    let early = autoscaler.recommend(6, cpu(10.0, 6), at(15));
    assert_eq!(early.desired, 6);
    assert_eq!(early.hold, Some(Hold::Stabilising { lower: 2, window: Duration::from_secs(300) }));
    // Still within 5 minutes of the recommendation of 6.
    assert_eq!(autoscaler.recommend(6, cpu(10.0, 6), at(299)).desired, 6);
    // Past the window: down, one replica per minute (max_down).
    let down = autoscaler.recommend(6, cpu(10.0, 6), at(301));
    assert_eq!(down.desired, 5, "{down}");
    autoscaler.scaled(6, 5, at(301));
    let limited = autoscaler.recommend(5, cpu(12.0, 5), at(316));
    assert!(matches!(limited.hold, Some(Hold::RateLimited { wanted: 2, .. })), "{limited:?}");
    assert_eq!(autoscaler.recommend(5, cpu(12.0, 5), at(362)).desired, 4);
}

#[test]
fn missing_or_unready_data_never_scales_down() {
    let mut autoscaler = Autoscaler::new(spec());
    let missing = autoscaler.recommend(6, Observation::Missing, at(0));
    assert_eq!((missing.desired, missing.hold.clone()), (6, Some(Hold::Missing)));
    assert_eq!(missing.to_string(), "cpu missing across 6 replicas: no data, 6 stays");
    assert_eq!(autoscaler.recommend(6, cpu(f64::NAN, 6), at(15)).hold, Some(Hold::Missing));
    // Two of six report a low value: the four silent ones count as at target, so no scale-in.
    let mut autoscaler = Autoscaler::new(Autoscale { window: Duration::ZERO, ..spec() });
    let unready = autoscaler.recommend(6, cpu(50.0, 2), at(0));
    assert_eq!((unready.desired, unready.hold), (6, Some(Hold::Unready { n_reporting: 2 })));
    // Going up, the silent ones count as 0: 2 × 300 % over 4 replicas = 150 % → ceil(4 × 150/70) = 9 → max 8.
    let up = autoscaler.recommend(4, cpu(300.0, 2), at(15));
    assert_eq!(up.desired, 8);
}

/// Drives the autoscaler every `interval` for `duration`: `load(t)` is the total CPU in percent (spread
/// evenly over the replicas), `None` a missing observation; changes apply at once. Returns the count
/// at each step and the number of changes.
fn simulate(
    autoscaler: &mut Autoscaler,
    start: u32,
    duration_secs: i64,
    mut load: impl FnMut(i64) -> Option<f64>,
) -> (Vec<(i64, u32)>, usize, usize) {
    let interval = autoscaler.spec().interval.as_secs() as i64;
    let (mut current, mut n_changes, mut n_flap_signals) = (start, 0, 0);
    let mut trace = Vec::new();
    let mut t = 0;
    while t < duration_secs {
        let observation = match load(t) {
            Some(total) => cpu(total / f64::from(current), current),
            None => Observation::Missing,
        };
        let recommendation = autoscaler.recommend(current, observation, at(t));
        n_flap_signals += usize::from(recommendation.flap_exceeded);
        if recommendation.changes() {
            autoscaler.scaled(current, recommendation.desired, at(t));
            current = recommendation.desired;
            n_changes += 1;
        }
        trace.push((t, current));
        t += interval;
    }
    (trace, n_changes, n_flap_signals)
}

#[test]
fn a_square_wave_scales_out_at_once_and_in_once_per_low_phase_without_flapping() {
    // 20-minute periods: 10 minutes at 420 % total CPU (6 replicas at 70 %), 10 minutes at 140 % (2).
    let mut autoscaler = Autoscaler::new(spec());
    let load = |t: i64| Some(if (t / 600) % 2 == 0 { 420.0 } else { 140.0 });
    let (trace, n_changes, n_flap_signals) = simulate(&mut autoscaler, 2, 6 * 3600, load);
    assert_eq!(n_flap_signals, 0);
    for (t, n) in &trace {
        let phase = t % 1200;
        if (60..600).contains(&phase) {
            // Scaled out within one decision of the step (4 at once, then the rest after the rate window).
            assert_eq!(*n, 6, "at {t}s: {trace:?}");
        }
        if (600..900).contains(&phase) {
            assert_eq!(*n, 6, "no scale-in within the 5-minute window of the high phase (at {t}s)");
        }
        if (1140..1200).contains(&phase) {
            assert_eq!(*n, 2, "scaled in by the end of the low phase (at {t}s)");
        }
    }
    // Per period: up (4, then 2 after a minute), down one by one (4): at most 6 changes, 8 replicas moved.
    assert!(n_changes <= 18 * 6, "{n_changes} changes in 18 periods");
}

#[test]
fn noise_within_the_tolerance_and_short_dips_change_nothing() {
    let mut autoscaler = Autoscaler::new(spec());
    let mut rng = fastrand::Rng::with_seed(7);
    // 280 % total on 4 replicas is 70 % each; noise ± 8 %, and a 2-minute dip to half every 20 minutes.
    let load = move |t: i64| {
        let base = if t % 1200 < 120 { 140.0 } else { 280.0 };
        Some(base * (1.0 + (rng.f64() - 0.5) * 0.16))
    };
    let (trace, n_changes, _) = simulate(&mut autoscaler, 4, 4 * 3600, load);
    assert_eq!(n_changes, 0, "{:?}", trace.iter().filter(|(_, n)| *n != 4).take(5).collect::<Vec<_>>());
}

#[test]
fn missing_data_holds_through_an_outage() {
    let mut autoscaler = Autoscaler::new(spec());
    // High load for 10 minutes, then the metric goes missing for an hour: the count stays.
    let load = |t: i64| if t < 600 { Some(420.0) } else { None };
    let (trace, _, _) = simulate(&mut autoscaler, 2, 4200, load);
    assert!(trace.iter().filter(|(t, _)| *t >= 120).all(|(_, n)| *n == 6), "{trace:?}");
}

#[test]
fn the_flap_budget_holds_the_count_and_signals_once() {
    // No stabilisation and no rate limit: a fast square wave would flap; the budget stops it.
    let mut autoscaler =
        Autoscaler::new(Autoscale { window: Duration::ZERO, max_up: 100, max_down: 100, flap_budget: 12, ..spec() });
    let load = |t: i64| Some(if (t / 30) % 2 == 0 { 420.0 } else { 140.0 });
    let (trace, n_changes, n_flap_signals) = simulate(&mut autoscaler, 2, 1800, load);
    // 2 → 6 → 2 → 6: 12 starts and stops, then held.
    assert_eq!(n_changes, 3, "{trace:?}");
    assert_eq!(n_flap_signals, 1, "one signal while it holds");
    let moved: u32 = trace.windows(2).map(|w| w[0].1.abs_diff(w[1].1)).sum();
    assert!(moved <= 12);
    // An hour after the changes, the budget is back.
    let recommendation = autoscaler.recommend(6, cpu(140.0 / 6.0, 6), at(4000));
    assert_eq!(recommendation.desired, 2, "{recommendation}");
}
