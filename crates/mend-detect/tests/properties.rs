//! Property tests over every registered detector: bounded scores, no panics, monotone sensitivity.

use mend_detect::{Detector, Point, Sensitivity, registry};
use proptest::prelude::*;

/// A series with structure worth detecting: noise around a level, random spikes and shifts.
fn structured_series() -> impl Strategy<Value = Vec<f64>> {
    (
        prop::collection::vec(-1.0f64..1.0, 200..1_200),
        prop::collection::vec((0usize..1_200, -50.0f64..50.0), 0..6),
        -1e6f64..1e6,
        1e-3f64..1e3,
    )
        .prop_map(|(noise, events, level, scale)| {
            let mut values: Vec<f64> = noise.iter().map(|n| level + scale * n).collect();
            for (at, size) in events {
                if at < values.len() {
                    // Alternate spikes and shifts by the sign of the size.
                    if size > 0.0 {
                        values[at] += size * scale;
                    } else {
                        for value in &mut values[at..] {
                            *value += size * scale;
                        }
                    }
                }
            }
            values
        })
}

fn run(name: &str, sensitivity: Sensitivity, times: &[f64], values: &[f64]) -> Vec<f64> {
    let mut detector = registry::build(name, sensitivity).expect("registered detector");
    times.iter().zip(values).map(|(&t, &v)| detector.update(Point::new(t, v)).value()).collect()
}

fn regular_times(len: usize) -> Vec<f64> {
    (0..len).map(|idx| 1.7e9 + idx as f64 * 300.0).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Finite input, at any spacing (duplicate timestamps and long gaps included), keeps every number of
    /// the state finite: a NaN or ∞ inside would pin the detector's scores (a `Score` is clamped into
    /// [0, 1], so the scores alone cannot show it) and cannot be written for a warm start (JSON has no
    /// NaN: it would come back as null, which is not a number). So the state must round-trip exactly.
    /// At least one point: a detector that has seen nothing holds sentinels (the ensemble's extremes
    /// start at ±∞), which the first point replaces; its snapshot (mend-detection) is bincode, not JSON.
    #[test]
    fn finite_input_keeps_the_state_finite_and_restorable(
        values in prop::collection::vec(-1e12f64..1e12, 1..800),
        gaps in prop::collection::vec(prop_oneof![Just(0.0), 0.0f64..1e5], 800),
    ) {
        let mut now = 0.0;
        let times: Vec<f64> = gaps.iter().take(values.len()).map(|gap| { now += gap; now }).collect();
        for name in registry::NAMES {
            let mut detector = registry::build(name, Sensitivity::DEFAULT).expect("registered detector");
            for (&time, &value) in times.iter().zip(&values) {
                detector.update(Point::new(time, value));
            }
            let saved = serde_json::to_string(&detector).expect("serialisable");
            let restored: Result<registry::AnyDetector, _> = serde_json::from_str(&saved);
            prop_assert!(restored.is_ok(), "{}: state not finite after finite input: {:?}", name, restored.err());
            prop_assert!(restored.ok() == Some(detector), "{}: the state does not round-trip", name);
        }
    }

    #[test]
    fn arbitrary_input_never_panics(
        values in prop::collection::vec(prop::num::f64::ANY, 0..300),
        times in prop::collection::vec(prop::num::f64::ANY, 300),
    ) {
        for name in registry::NAMES {
            let scores = run(name, Sensitivity::DEFAULT, &times[..values.len()], &values);
            prop_assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{name}");
        }
    }

    #[test]
    fn higher_sensitivity_never_flags_fewer_points(
        values in structured_series(),
        low in 0.0f64..=1.0,
        high in 0.0f64..=1.0,
    ) {
        let (low, high) = if low <= high { (low, high) } else { (high, low) };
        let (low, high) = (Sensitivity::new(low).expect("in range"), Sensitivity::new(high).expect("in range"));
        let times = regular_times(values.len());
        for name in registry::NAMES {
            let cautious = run(name, low, &times, &values);
            let eager = run(name, high, &times, &values);
            for threshold in [0.3, 0.5, 0.7, 0.9] {
                let n_cautious = cautious.iter().filter(|&&s| s >= threshold).count();
                let n_eager = eager.iter().filter(|&&s| s >= threshold).count();
                prop_assert!(n_eager >= n_cautious, "{name} at {threshold}: {n_eager} < {n_cautious}");
            }
        }
    }
}

/// The value that `slot` turns into a non-finite one, if any.
fn non_finite(slot: u8) -> Option<f64> {
    match slot {
        0 => Some(f64::NAN),
        1 => Some(f64::INFINITY),
        2 => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Contract: a non-finite value scores 0 (NaN) or 1 (±∞) and leaves the state untouched, so the
    /// finite points score exactly as they would without it. With non-finite values first, this is
    /// also a detector that has seen nothing usable: it must carry on as a fresh one.
    #[test]
    fn non_finite_values_score_fixed_and_change_nothing(
        values in structured_series(),
        slots in prop::collection::vec(0u8..12, 1_200),
        leading in 0usize..5,
    ) {
        let times = regular_times(values.len());
        let mut mixed_times = Vec::new();
        let mut mixed_values = Vec::new();
        let mut expected = Vec::new();
        for idx in 0..leading {
            mixed_times.push(times[0] - 150.0);
            mixed_values.push(non_finite(idx as u8 % 3).expect("a non-finite value"));
        }
        for (idx, (&time, &value)) in times.iter().zip(&values).enumerate() {
            if let Some(bad) = non_finite(slots[idx]) {
                // Between two points: a detector that kept the time of a non-finite value would show it.
                mixed_times.push(time - 150.0);
                mixed_values.push(bad);
            }
            mixed_times.push(time);
            mixed_values.push(value);
            expected.push(mixed_values.len() - 1);
        }
        for name in registry::NAMES {
            let clean = run(name, Sensitivity::DEFAULT, &times, &values);
            let mixed = run(name, Sensitivity::DEFAULT, &mixed_times, &mixed_values);
            for (idx, (&value, &score)) in mixed_values.iter().zip(&mixed).enumerate() {
                if value.is_nan() {
                    prop_assert_eq!(score, 0.0, "{}: NaN at {}", name, idx);
                } else if value.is_infinite() {
                    prop_assert_eq!(score, 1.0, "{}: {} at {}", name, value, idx);
                }
            }
            let changed = expected.iter().map(|&idx| mixed[idx]).zip(&clean).position(|(mixed, &clean)| mixed != clean);
            prop_assert!(
                changed.is_none(),
                "{}: a non-finite value changed the score of finite point {:?}",
                name,
                changed
            );
        }
    }
}

#[test]
fn a_detector_that_has_seen_nothing_is_small_and_calm() {
    for name in registry::NAMES {
        let mut detector = registry::build(name, Sensitivity::DEFAULT).expect("registered");
        let state_bytes = detector.state_bytes();
        assert!(state_bytes > 0 && state_bytes <= 4096, "{name}: {state_bytes} B of state");
        // With no history nothing is unusual: the first points of a flat series raise no alarm.
        for idx in 0..10 {
            let score = detector.update(Point::new(1.7e9 + f64::from(idx) * 60.0, 42.0)).value();
            assert!(score < 0.5, "{name}: point {idx} of a flat series scored {score}");
        }
    }
}
