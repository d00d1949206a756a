//! Scenario tests as data: planted anomalies each detector must flag, and quiet series it must not.

use mend_detect::synthetic::{Shape, generate};
use mend_detect::{Detector, Point, Sensitivity, registry};

/// Length of every scenario: 14 days of 5-minute points, like most NAB files.
const LEN: usize = 4_032;
/// Where the anomaly is planted.
const CHANGE: usize = 3_000;
/// Points ignored at the start (warm-up), as NAB's probation would.
const SKIP: usize = 600;
/// The alarm threshold every detector's score is designed around.
const ALARM: f64 = 0.5;

fn scores(name: &str, shape: Shape, seed: u64) -> Vec<f64> {
    scores_at(name, Sensitivity::DEFAULT, shape, seed)
}

fn scores_at(name: &str, sensitivity: Sensitivity, shape: Shape, seed: u64) -> Vec<f64> {
    let mut detector = registry::build(name, sensitivity).expect("registered detector");
    let series = generate(shape, LEN, CHANGE, seed);
    series.timestamps.iter().zip(&series.values).map(|(&t, &v)| detector.update(Point::new(t, v)).value()).collect()
}

/// What a scenario expects from a detector.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// An alarm within `within` points from the change, and none between SKIP and the change.
    AlarmWithin { within: usize },
    /// An alarm within `within` points from the change (earlier alarms allowed).
    Detects { within: usize },
    /// No alarm after SKIP.
    Quiet,
    /// At most this many alarms per 1000 points after SKIP.
    Rate { per_thousand: f64 },
}

fn check(name: &str, shape: Shape, expect: Expect) {
    check_at(name, Sensitivity::DEFAULT, shape, expect);
}

fn check_at(name: &str, sensitivity: Sensitivity, shape: Shape, expect: Expect) {
    for seed in 1..=3 {
        let scores = scores_at(name, sensitivity, shape, seed);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{name} {shape:?}: score out of range");
        let alarms: Vec<usize> = (SKIP..LEN).filter(|&i| scores[i] >= ALARM).collect();
        match expect {
            Expect::AlarmWithin { within } => {
                let early: Vec<&usize> = alarms.iter().filter(|&&i| i < CHANGE).collect();
                assert!(early.is_empty(), "{name} {shape:?} seed {seed}: false alarms before the change at {early:?}");
                let first = alarms.iter().find(|&&i| i >= CHANGE);
                assert!(
                    first.is_some_and(|&i| i <= CHANGE + within),
                    "{name} {shape:?} seed {seed}: first alarm {first:?}, wanted within {within} of {CHANGE}"
                );
            }
            Expect::Detects { within } => {
                let first = alarms.iter().find(|&&i| i >= CHANGE);
                assert!(
                    first.is_some_and(|&i| i <= CHANGE + within),
                    "{name} {shape:?} seed {seed}: first alarm {first:?}, wanted within {within} of {CHANGE}"
                );
            }
            Expect::Quiet => {
                assert!(alarms.is_empty(), "{name} {shape:?} seed {seed}: false alarms at {alarms:?}");
            }
            Expect::Rate { per_thousand } => {
                let rate = alarms.len() as f64 * 1000.0 / (LEN - SKIP) as f64;
                assert!(rate <= per_thousand, "{name} {shape:?} seed {seed}: {rate:.2} alarms per 1000 at {alarms:?}");
            }
        }
    }
}

/// At the default sensitivity (tuned on NAB, which rewards flagging even small new extremes),
/// unbounded Gaussian noise still sets a new record now and then, and each alarms; a lower
/// sensitivity asks new extremes to clear the noise by a margin and is silent.
#[test]
fn default_on_noise_only_series_alarms_rarely_and_not_at_all_below_default_sensitivity() {
    use Expect::*;
    for shape in [Shape::Noise, Shape::Seasonal, Shape::HeavyTailed] {
        check("default", shape, Rate { per_thousand: 1.5 });
    }
    let cautious = Sensitivity::new(0.3).expect("in range");
    for shape in [Shape::Noise, Shape::Seasonal] {
        check_at("default", cautious, shape, Quiet);
    }
}

#[test]
fn default_flags_each_planted_anomaly() {
    use Expect::*;
    // (shape, alarm within at the default sensitivity, within at a cautious one).
    let cases = [
        (Shape::Spike { height: 12.0 }, 0, 0),
        // Cautious: the refractory period started by the default-sensitivity alarm (which keeps
        // sensitivity monotone) can delay a cautious alarm by up to `refractory_points`.
        (Shape::LevelShift { shift: 6.0 }, 5, 35),
        // Cautious: a slow ramp sets new extremes by less than the noise margin each time, so
        // only the rarity likelihood catches it, later.
        (Shape::TrendChange { slope: 0.05 }, 150, 500),
        (Shape::Flatline, 35, 65),
        (Shape::SeasonalityBreak, 288, 288),
    ];
    let cautious = Sensitivity::new(0.3).expect("in range");
    for (shape, within, cautious_within) in cases {
        // At the default sensitivity noise records may alarm before the change (see above).
        check("default", shape, Detects { within });
        // A cautious sensitivity is silent on the noise and still finds every planted anomaly.
        check_at("default", cautious, shape, AlarmWithin { within: cautious_within });
    }
}

#[test]
fn single_detectors_flag_what_they_are_for() {
    use Expect::*;
    let cases = [
        ("ewma", Shape::Noise, Rate { per_thousand: 0.5 }),
        ("ewma", Shape::Spike { height: 12.0 }, AlarmWithin { within: 0 }),
        ("ewma", Shape::LevelShift { shift: 8.0 }, AlarmWithin { within: 0 }),
        ("mad", Shape::Noise, Rate { per_thousand: 0.5 }),
        ("mad", Shape::Spike { height: 12.0 }, Detects { within: 0 }),
        ("mad", Shape::LevelShift { shift: 8.0 }, Detects { within: 0 }),
        ("seasonal", Shape::Seasonal, Rate { per_thousand: 0.5 }),
        ("seasonal", Shape::Spike { height: 12.0 }, AlarmWithin { within: 0 }),
        ("seasonal", Shape::SeasonalityBreak, AlarmWithin { within: 288 }),
        ("cusum", Shape::Noise, Rate { per_thousand: 0.5 }),
        ("cusum", Shape::LevelShift { shift: 2.0 }, AlarmWithin { within: 20 }),
        ("cusum", Shape::TrendChange { slope: 0.02 }, AlarmWithin { within: 200 }),
        ("shift", Shape::Noise, Rate { per_thousand: 0.5 }),
        ("shift", Shape::HeavyTailed, Rate { per_thousand: 0.5 }),
        ("shift", Shape::LevelShift { shift: 6.0 }, AlarmWithin { within: 3 }),
        // A single spike is no shift, however high.
        ("shift", Shape::Spike { height: 12.0 }, Quiet),
    ];
    for (name, shape, expect) in cases {
        check(name, shape, expect);
    }
}

#[test]
fn every_registered_name_builds_and_unknown_names_are_rejected() {
    for name in registry::NAMES {
        assert!(registry::build(name, Sensitivity::DEFAULT).is_ok(), "{name}");
    }
    let err = registry::build("nope", Sensitivity::DEFAULT).expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown detector \"nope\", expected one of default, ewma, mad, seasonal, cusum, shift, cad_ose"
    );
}

#[test]
fn scores_of_a_prefix_do_not_depend_on_later_points() {
    for name in registry::NAMES {
        let full = scores(name, Shape::LevelShift { shift: 6.0 }, 9);
        let mut detector = registry::build(name, Sensitivity::DEFAULT).expect("registered");
        let series = generate(Shape::LevelShift { shift: 6.0 }, 3_100, CHANGE, 9);
        for (idx, (&t, &v)) in series.timestamps.iter().zip(&series.values).enumerate() {
            assert_eq!(detector.update(Point::new(t, v)).value(), full[idx], "{name} at {idx}");
        }
    }
}

#[test]
fn serialised_state_resumes_exactly() {
    for name in registry::NAMES {
        let series = generate(Shape::SeasonalityBreak, LEN, CHANGE, 5);
        let points: Vec<Point> =
            series.timestamps.iter().zip(&series.values).map(|(&t, &v)| Point::new(t, v)).collect();
        let mut straight = registry::build(name, Sensitivity::DEFAULT).expect("registered");
        let expected: Vec<f64> = points.iter().map(|&p| straight.update(p).value()).collect();
        let mut first_half = registry::build(name, Sensitivity::DEFAULT).expect("registered");
        for &point in &points[..2_000] {
            first_half.update(point);
        }
        let json = serde_json::to_string(&first_half).expect("state serialises");
        let mut resumed: mend_detect::AnyDetector = serde_json::from_str(&json).expect("state deserialises");
        for (idx, &point) in points.iter().enumerate().skip(2_000) {
            assert_eq!(resumed.update(point).value(), expected[idx], "{name} at {idx}");
        }
    }
}

#[test]
fn state_stays_within_budget() {
    for name in registry::NAMES {
        let mut detector = registry::build(name, Sensitivity::DEFAULT).expect("registered");
        let series = generate(Shape::Seasonal, LEN, CHANGE, 2);
        for (&t, &v) in series.timestamps.iter().zip(&series.values) {
            detector.update(Point::new(t, v));
        }
        let bytes = detector.state_bytes();
        assert!(bytes <= 4_096, "{name}: {bytes} bytes of state");
    }
}

#[test]
fn irregular_duplicate_and_backward_timestamps_are_tolerated() {
    let times = [0.0, 300.0, 300.0, 300.0, 100.0, 5_000.0, 5_000.0, 1e7, f64::NAN, 1e7 + 300.0];
    for name in registry::NAMES {
        let mut detector = registry::build(name, Sensitivity::DEFAULT).expect("registered");
        for round in 0..100 {
            for (idx, &t) in times.iter().enumerate() {
                let score = detector.update(Point::new(t + f64::from(round) * 1e7, (idx % 3) as f64)).value();
                assert!((0.0..=1.0).contains(&score), "{name}");
            }
        }
    }
}

/// A freshly started idle process: its RSS moves page by page while it starts (up to a minute of
/// samples), then holds one value for hours. The long run after a short history of movement is
/// how every idle service settles, not a stuck sensor: nothing may alarm.
#[test]
fn a_process_that_settles_after_start_up_is_not_a_stuck_value() {
    const PAGE: f64 = 4096.0;
    for start_up in [5_u32, 20, 60] {
        for sensitivity in [Sensitivity::DEFAULT, Sensitivity::new(0.9).expect("in range")] {
            let mut detector = registry::build("default", sensitivity).expect("registered detector");
            let mut rss = 6.0 * 1024.0 * 1024.0;
            let mut alarms = Vec::new();
            for i in 0..20_000_u32 {
                if i < start_up {
                    // Start-up: allocations and page faults, a few pages at a time.
                    rss += PAGE * f64::from(i % 7);
                }
                let score = detector.update(Point::new(1_700_000_000.0 + f64::from(i), rss)).value();
                if score >= ALARM {
                    alarms.push(i);
                }
            }
            assert!(alarms.is_empty(), "start-up of {start_up} samples, {sensitivity:?}: alarms at {alarms:?}");
        }
    }
}
