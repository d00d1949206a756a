//! Parse throughput per MiB of exposition, on real scrapes saved as fixtures (deterministic inputs, no generator).
//!
//! Run: `cargo bench -p mend-promtext --bench parse` (criterion prints MiB/s as `thrpt`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mend_promtext::{Format, encode, parse};

/// node_exporter 1.5: the static target mend scrapes on every host. Many small families, each with HELP and TYPE,
/// short label sets, mostly integer and exponent values: the common case, dominated by line and name scanning.
const NODE_EXPORTER: &str = include_str!("../tests/data/node_exporter.prom");

/// Prometheus 2.42's own metrics: histograms with long bucket runs, so label sets (`le`, handler names) and float
/// values weigh more than in node_exporter.
const PROMETHEUS_SERVER: &str = include_str!("../tests/data/prometheus_server.prom");

/// The Python client's OpenMetrics output: every OpenMetrics type, exemplars, `_created` samples and per-type value
/// checks, so the stricter path is measured too.
const PYTHON_CLIENT_OPENMETRICS: &str = include_str!("../tests/data/python_client.om");

fn bench(criterion: &mut Criterion, name: &str, input: &str, format: Format) {
    let mut group = criterion.benchmark_group("parse");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function(name, |bencher| bencher.iter(|| parse(black_box(input), format)));
    group.finish();
}

fn parse_benches(criterion: &mut Criterion) {
    bench(criterion, "node_exporter", NODE_EXPORTER, Format::Text);
    bench(criterion, "prometheus_server", PROMETHEUS_SERVER, Format::Text);
    bench(criterion, "python_client_openmetrics", PYTHON_CLIENT_OPENMETRICS, Format::OpenMetrics);
}

/// Encoding the parsed node_exporter scrape back to 0.0.4, per MiB of output.
fn encode_bench(criterion: &mut Criterion) {
    let families = parse(NODE_EXPORTER, Format::Text).expect("the fixture parses");
    let mut group = criterion.benchmark_group("encode");
    group.throughput(Throughput::Bytes(encode(&families).len() as u64));
    group.bench_function("node_exporter", |bencher| bencher.iter(|| encode(black_box(&families))));
    group.finish();
}

criterion_group!(benches, parse_benches, encode_bench);
criterion_main!(benches);
