//! Criterion benchmark: one instant evaluation of a typical alerting rule over 1,000 series × 300 points.
//!
//! Why this input: mend evaluates every rule once a second over its in-memory store, which samples
//! each series once a second, so 300 points is the last five minutes of a series, and 1,000
//! series is a busy host (50 services × 2 status classes × 10 instances). The rule is the common
//! error-ratio alert: a regex selector, `rate` over a 1-minute window, two `sum by`, a
//! vector/vector division with one-to-one matching and a filtering comparison. The measured time
//! includes [`MemoryStorage::select`] copying the points out (mend's own store does the same), so
//! it is an upper bound for the evaluator alone. Values are seeded: runs are comparable.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use mend_query::{EvalOptions, Labels, MemoryStorage, Query, Series, Storage, Value};
use std::hint::black_box;

const N_SERVICES: usize = 50;
const N_INSTANCES: usize = 10;
const N_POINTS: i64 = 300;
const STEP_MS: i64 = 1_000;
const START_MS: i64 = 1_700_000_000_000;

/// A small xorshift generator, so that the bench needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counters of requests per service, instance and status class (`200` and `500`).
fn storage() -> MemoryStorage {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut series = Vec::with_capacity(N_SERVICES * N_INSTANCES * 2);
    for service in 0..N_SERVICES {
        for instance in 0..N_INSTANCES {
            for (code, mean_rate) in [("200", 100.0), ("500", if service % 10 == 0 { 8.0 } else { 1.0 })] {
                let mut counter = 0.0;
                let points = (0..N_POINTS)
                    .map(|idx| {
                        counter += mean_rate * (0.5 + rng.next_f64());
                        (START_MS + idx * STEP_MS, counter.floor())
                    })
                    .collect();
                let labels = Labels::new([
                    ("__name__", "http_requests_total".to_owned()),
                    ("service", format!("svc-{service:02}")),
                    ("instance", format!("10.0.0.{instance}:8080")),
                    ("code", code.to_owned()),
                ]);
                series.push(Series { labels, points });
            }
        }
    }
    MemoryStorage::new(series)
}

fn alerting_rule(c: &mut Criterion) {
    let storage = storage();
    let query = Query::parse(
        r#"sum by (service) (rate(http_requests_total{code=~"5.."}[1m]))
             / sum by (service) (rate(http_requests_total[1m])) > 0.05"#,
    )
    .expect("supported rule");
    let at_ms = START_MS + (N_POINTS - 1) * STEP_MS;
    let options = EvalOptions::default();
    match query.eval_instant(&storage, at_ms, &options) {
        Ok(Value::Vector(firing)) => assert_eq!(firing.len(), N_SERVICES / 10, "one in ten services is failing"),
        other => panic!("unexpected result {other:?}"),
    }
    c.bench_function("alerting_rule_1000_series_x_300_points", |b| {
        b.iter(|| black_box(query.eval_instant(black_box(&storage), at_ms, &options)))
    });
    // The storage's share of the figure above: the same two selects, nothing evaluated.
    c.bench_function("alerting_rule_storage_selects_only", |b| {
        b.iter(|| {
            for selector in query.selectors() {
                let window_ms = selector.range_ms().unwrap_or(options.lookback_delta_ms);
                black_box(storage.select(selector.matchers(), at_ms - window_ms + 1, at_ms));
            }
        })
    });
}

criterion_group!(benches, alerting_rule);
criterion_main!(benches);
