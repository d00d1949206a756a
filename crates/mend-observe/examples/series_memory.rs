//! Measures the series store's memory: bytes per series and per retained point, from the process's
//! resident memory before and after filling the store. Run with
//! `cargo run --release -p mend-observe --example series_memory`.
#![allow(clippy::print_stdout, clippy::disallowed_methods)] // A measuring program prints its figures.

use std::time::Duration;

use mend_observe::series::{Limits, SeriesStore};
use mend_types::Timestamp;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Fills a store with `n_series` series of node_exporter-like label sets, `n_points` points each, and
/// returns the resident memory it added.
fn measure(n_series: usize, n_points: usize) -> f64 {
    let before = resident_bytes();
    let mut store = SeriesStore::new(Limits {
        points_per_series: n_points.max(1),
        retention: Duration::from_secs(86_400),
        max_series: n_series,
    });
    let mut labels = Vec::with_capacity(n_series);
    for idx in 0..n_series {
        let cpu = (idx % 64).to_string();
        let device = format!("dev{}", idx / 64);
        labels.push(store.labels(
            "node_cpu_seconds_total",
            &[("cpu", &cpu), ("mode", "user"), ("device", &device), ("instance", "127.0.0.1:9100"), ("job", "node")],
        ));
    }
    for point in 0..n_points {
        for series in &labels {
            let _ = store.append(series, Timestamp::from_millis(point as i64 * 1000), point as f64);
        }
    }
    let added = resident_bytes().saturating_sub(before) as f64;
    drop(store);
    added
}

/// Runs one fill in a fresh process (memory freed by a first fill would hide the second's cost).
fn measure_in_child(n_series: usize, n_points: usize) -> f64 {
    let exe = std::env::current_exe().expect("own path");
    let output = std::process::Command::new(exe)
        .args([n_series.to_string(), n_points.to_string()])
        .output()
        .expect("run the measuring child");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("the child prints bytes")
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|arg| arg.parse().ok()).collect();
    if let [n_series, n_points] = args[..] {
        println!("{}", measure(n_series, n_points));
        return;
    }
    let n_series = 100_000;
    // Two fills that differ only in points per series give both figures. Points are compressed in
    // chunks of 120, so both fills end on a chunk boundary and the difference is ten whole chunks.
    let (few, many) = (120, 1320);
    let small = measure_in_child(n_series, few);
    let large = measure_in_child(n_series, many);
    let per_point = (large - small) / (n_series as f64 * (many - few) as f64);
    let per_series = small / n_series as f64 - few as f64 * per_point;
    println!("series store: {per_series:.0} bytes per series + {per_point:.1} bytes per retained point");
    println!(
        "({n_series} series of 5 labels, counters sampled every second; {few} points: {:.1} MiB, {many} points: {:.1} MiB)",
        small / 1048576.0,
        large / 1048576.0
    );
}
