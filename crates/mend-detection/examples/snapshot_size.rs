//! Measures the detect stage's snapshot (issue 15): bytes per series for each registered detector, and
//! how long writing and restoring one takes, for 1,000 series warmed on 600 points each (one a second). Run with
//! `cargo run --release -p mend-detection --example snapshot_size`.
#![allow(clippy::print_stdout, clippy::disallowed_methods)] // A measuring program prints its figures and times itself.

use std::time::Instant;

use mend_detection::Detection;
use mend_detection::snapshot::DETECT_SNAPSHOT_VERSION;
use mend_query::{Labels, MemoryStorage, Series};
use mend_types::Timestamp;

const N_SERIES: usize = 1_000;
const N_POINTS: i64 = 600;
const START_S: i64 = 1_700_000_000;

fn main() {
    println!("detector  bytes/series  snapshot  restore   ({N_SERIES} series, {N_POINTS} points each)");
    for detector in ["default", "ewma", "mad", "seasonal", "cusum", "shift"] {
        let text = format!("[[detect]]\nname = \"x\"\nseries = \"demo_value\"\ndetector = \"{detector}\"\n");
        let config = mend_config::parse("bench.toml", &text, std::path::Path::new(".")).expect("valid config");
        let mut detection = Detection::new(&config);
        // Noisy steady series, fed a minute at a time (within the feed window).
        let series: Vec<Series> = (0..N_SERIES)
            .map(|idx| {
                let instance = idx.to_string();
                let labels = Labels::new([("__name__", "demo_value"), ("instance", instance.as_str())]);
                let points = (0..N_POINTS)
                    .map(|s| ((START_S + s) * 1000, 10.0 + ((s * 7 + idx as i64) % 13) as f64 * 0.1))
                    .collect();
                Series { labels, points }
            })
            .collect();
        let storage = MemoryStorage::new(series);
        for minute in 1..=N_POINTS / 60 {
            detection.evaluate(&storage, Timestamp::from_millis((START_S + minute * 60) * 1000));
        }
        let started = Instant::now();
        let body = detection.snapshot();
        let snapshot_time = started.elapsed();
        let mut restarted = Detection::new(&config);
        let started = Instant::now();
        let restored =
            restarted.restore(DETECT_SNAPSHOT_VERSION, &body, (START_S + N_POINTS) as f64).expect("restores");
        let restore_time = started.elapsed();
        assert_eq!(restored.n_series, N_SERIES);
        println!(
            "{detector:<9} {:>12}  {:>6.1} ms  {:>6.1} ms",
            body.len() / N_SERIES,
            snapshot_time.as_secs_f64() * 1000.0,
            restore_time.as_secs_f64() * 1000.0
        );
    }
}
