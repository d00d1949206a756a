//! Remote write throughput and cost against a real receiver (BENCHMARKS.md has the command): a series
//! store of `SERIES` series with `POINTS` points each (one a second, ending now, as mend's runners write
//! them) is sent to `URL`; prints samples per second, CPU seconds of this process per million samples,
//! and compressed bytes per sample.
//!
//! `cargo run --release -p mend-remote-write --example throughput -- URL [SERIES] [POINTS]`
#![allow(clippy::disallowed_methods, clippy::print_stdout)] // A benchmark reads the wall clock and prints.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mend_observe::series::{Limits, SeriesStore};
use mend_remote_write::{Endpoint, RemoteWriter, Settings};
use mend_types::Timestamp;

/// User plus system CPU time of this process, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |idx: usize| fields.get(idx).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat(5) are the 12th and 13th after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(url) = args.get(1) else {
        println!("usage: throughput URL [SERIES] [POINTS]");
        return;
    };
    let n_series: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let n_points: i64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(600);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut store = SeriesStore::new(Limits { max_series: n_series + 1, ..Limits::default() });
    // Series shaped like mend's own: a gauge per replica with a few labels, values that move a little.
    for series_idx in 0..n_series {
        let replica = (series_idx % 4).to_string();
        let service = format!("svc{}", series_idx / 4);
        let labels =
            store.labels("mend_replica_resident_memory_bytes", &[("service", &service), ("replica", &replica)]);
        for point_idx in 0..n_points {
            let at = Timestamp::from_millis(now_ms - (n_points - point_idx) * 1000);
            let value = 30_000_000.0 + ((series_idx as i64 * 7 + point_idx * 13) % 4096) as f64;
            store.append(&labels, at, value).expect("room");
        }
    }
    let total = n_series as u64 * n_points as u64;
    let settings = Settings {
        endpoint: Endpoint::parse(url).expect("an http:// URL"),
        interval: Duration::from_millis(100),
        max_samples_per_request: 2_000,
        queue_requests: 64,
        timeout: Duration::from_secs(30),
        authorization: None,
        labels: BTreeMap::from([("host".to_owned(), "bench".to_owned())]),
        send_after: None,
    };
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let writer = RemoteWriter::start(settings, Arc::new(RwLock::new(store)));
    let stats = writer.stats().clone();
    loop {
        let done = stats.samples_sent.load(Relaxed)
            + stats.samples_rejected.load(Relaxed)
            + stats.samples_dropped_queue_full.load(Relaxed);
        if done >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            println!("gave up after 600 s: {done} of {total}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let sent = stats.samples_sent.load(Relaxed);
    let bytes = stats.bytes_sent.load(Relaxed);
    println!(
        "{n_series} series x {n_points} points: sent {sent} of {total} (rejected {}, dropped {}, retried requests {}) in {seconds:.2} s = {:.0} samples/s; CPU {cpu:.2} s = {:.2} CPU s per million samples; {:.2} bytes per sample compressed ({} requests)",
        stats.samples_rejected.load(Relaxed),
        stats.samples_dropped_queue_full.load(Relaxed),
        stats.requests_retried.load(Relaxed),
        sent as f64 / seconds,
        cpu / (sent as f64 / 1e6),
        bytes as f64 / sent as f64,
        stats.requests_sent.load(Relaxed),
    );
}
