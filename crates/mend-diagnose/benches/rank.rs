//! Cost of diagnosing one incident of 100 services with 4 series each (an hour of baseline plus 5
//! minutes after the onset), along a graph where every service calls the next two, one of them faulty:
//! the size the daemon would hand over for a large deployment. Two sampling steps: 10 s (a scrape
//! interval) and 1 s (mend's own replica sampling). `rank` alone, and `diagnose` (rank, then the
//! decision procedure for every service).

use criterion::{Criterion, criterion_group, criterion_main};
use mend_diagnose::{
    Component, DecideParams, DependencyGraph, EdgeSource, IncidentInput, RankInput, RankParams, SeriesInput,
    ServiceFacts, diagnose, rank,
};
use mend_types::Timestamp;

fn incident(n_services: usize, step_secs: usize) -> (Vec<SeriesInput>, DependencyGraph) {
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
        for metric in ["latency_p99_seconds", "errors_ratio", "cpu_usage_cores", "memory_bytes"] {
            let faulty = idx == n_services / 2;
            let points = (0..3900)
                .step_by(step_secs)
                .map(|t| (at(t), if faulty && t >= 3600 { 50.0 } else { 1.0 + noise() }))
                .collect();
            series.push(SeriesInput { component: name.clone(), instance: None, metric: metric.to_owned(), points });
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

criterion_group!(benches, bench);
criterion_main!(benches);
