//! Cost of diagnosing one incident of 100 services with 4 series each (an hour of baseline plus 5
//! minutes after the onset), along a graph where every service calls the next two, one of them faulty:
//! the size the daemon would hand over for a large deployment. Two sampling steps: 10 s (a scrape
//! interval) and 1 s (mend's own replica sampling). `rank` alone, and `diagnose` (rank, then the
//! decision procedure for every service). And the live shape: the daemon gathers at most 32 services
//! for an incident, six series each (three of the replica, three from its proxy), one point a second over
//! its 10-minute baseline, 15 s lookback and half a minute after the onset: what one live diagnosis costs
//! however many services mend runs.

use criterion::{Criterion, criterion_group, criterion_main};
use mend_diagnose::{
    Component, DecideParams, DependencyGraph, EdgeSource, IncidentInput, RankInput, RankParams, SeriesInput,
    ServiceFacts, diagnose, rank,
};
use mend_types::Timestamp;

const METRICS: [&str; 4] = ["latency_p99_seconds", "errors_ratio", "cpu_usage_cores", "memory_bytes"];
const LIVE_METRICS: [&str; 6] = [
    "mend_replica_cpu_percent",
    "mend_replica_resident_memory_bytes",
    "mend_replica_open_fds",
    "mend_proxy_requests_per_second",
    "mend_proxy_error_ratio",
    "mend_proxy_request_duration_mean_seconds",
];

fn incident(n_services: usize, step_secs: usize) -> (Vec<SeriesInput>, DependencyGraph) {
    shaped(n_services, step_secs, &METRICS, 3600, 3900)
}

/// `n_services` services, each calling the next two, `metrics` per service, a point every `step_secs`
/// from 0 to `end`; the middle service's series jump at `onset`.
fn shaped(
    n_services: usize,
    step_secs: usize,
    metrics: &[&str],
    onset: i64,
    end: i64,
) -> (Vec<SeriesInput>, DependencyGraph) {
    let at = |secs: i64| Timestamp::from_millis(1_700_000_000_000 + secs * 1000);
    let mut state = 42_u64;
    let mut noise = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) % 1000) as f64 / 1000.0
    };
    let mut series = Vec::new();
    let mut graph = DependencyGraph::new();
    for idx in 0..n_services {
        let name = Component::new(&format!("svc-{idx:03}"));
        for callee in [idx + 1, idx + 2].into_iter().filter(|&c| c < n_services) {
            graph.add(name.clone(), Component::new(&format!("svc-{callee:03}")), EdgeSource::Declared);
        }
        for metric in metrics {
            let faulty = idx == n_services / 2;
            let points = (0..end)
                .step_by(step_secs)
                .map(|t| (at(t), if faulty && t >= onset { 50.0 } else { 1.0 + noise() }))
                .collect();
            series.push(SeriesInput { component: name.clone(), instance: None, metric: (*metric).to_owned(), points });
        }
    }
    (series, graph)
}

fn bench(c: &mut Criterion) {
    let at = |secs: i64| Timestamp::from_millis(1_700_000_000_000 + secs * 1000);
    for step in [10, 1] {
        let (series, graph) = incident(100, step);
        let points = 3900 / step;
        c.bench_function(&format!("rank 100 services x 4 series x {points} points"), |b| {
            b.iter(|| {
                rank(&RankInput {
                    onset: at(3600),
                    now: at(3900),
                    series: &series,
                    graph: &graph,
                    params: RankParams::default(),
                })
            })
        });
        let services: Vec<ServiceFacts> =
            (0..100).map(|idx| ServiceFacts::new(Component::new(&format!("svc-{idx:03}")), 2)).collect();
        c.bench_function(&format!("diagnose 100 services x 4 series x {points} points"), |b| {
            b.iter(|| {
                diagnose(&IncidentInput {
                    onset: at(3600),
                    now: at(3900),
                    services: &services,
                    series: &series,
                    graph: &graph,
                    rank: RankParams::default(),
                    decide: DecideParams::default(),
                })
            })
        });
    }
}

fn bench_live(c: &mut Criterion) {
    let at = |secs: i64| Timestamp::from_millis(1_700_000_000_000 + secs * 1000);
    // The live window: 600 s of baseline, 15 s of lookback, 30 s after the onset.
    let (series, graph) = shaped(32, 1, &LIVE_METRICS, 615, 645);
    let services: Vec<ServiceFacts> =
        (0..32).map(|idx| ServiceFacts::new(Component::new(&format!("svc-{idx:03}")), 1)).collect();
    let params = RankParams {
        baseline: std::time::Duration::from_secs(600),
        lookback: std::time::Duration::from_secs(15),
        ..RankParams::default()
    };
    c.bench_function("diagnose live: 32 services x 6 series x 645 points", |b| {
        b.iter(|| {
            diagnose(&IncidentInput {
                onset: at(630),
                now: at(645),
                services: &services,
                series: &series,
                graph: &graph,
                rank: params,
                decide: DecideParams::default(),
            })
        })
    });
}

criterion_group!(benches, bench, bench_live);
criterion_main!(benches);
