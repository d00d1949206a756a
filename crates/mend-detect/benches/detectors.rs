//! Criterion benchmarks: per-point update cost of every registered detector on NAB-like series.
//!
//! Inputs are generated from fixed seeds (no NAB files needed), 20 160 points each (70 days of
//! 5-minute samples), and every detector is fed the whole series per iteration, so the reported
//! throughput is points per second on one core, including warm-up.
#![allow(missing_docs, clippy::print_stderr)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mend_detect::synthetic::{Series, Shape, generate};
use mend_detect::{Detector, Forecaster, Point, Sensitivity, TrendForecaster, registry};
use std::hint::black_box;

const LEN: usize = 20_160;

/// The input shapes, and why each exists.
fn inputs() -> Vec<(&'static str, Series)> {
    vec![
        // Daily pattern with noise (NAB's artificial and AWS files): keeps the seasonal slots,
        // histogram and likelihoods busy on every point; the common case.
        ("seasonal", generate(Shape::Seasonal, LEN, LEN / 2, 1)),
        // Heavy-tailed counts with bursts (NAB's tweet volumes): frequent new extremes,
        // histogram range growth and alarm/refractory bookkeeping.
        ("heavy_tailed", generate(Shape::HeavyTailed, LEN, LEN / 2, 2)),
        // Noise with a level shift half way (NAB's cpu/traffic files): the change-point path.
        ("level_shift", generate(Shape::LevelShift { shift: 6.0 }, LEN, LEN / 2, 3)),
    ]
}

fn detectors(c: &mut Criterion) {
    let inputs = inputs();
    let mut group = c.benchmark_group("detector_update");
    group.throughput(Throughput::Elements(LEN as u64));
    for name in registry::NAMES {
        for (input_name, series) in &inputs {
            let points: Vec<Point> =
                series.timestamps.iter().zip(&series.values).map(|(&t, &v)| Point::new(t, v)).collect();
            let mut probe = registry::build(name, Sensitivity::DEFAULT).expect("registered detector");
            points.iter().for_each(|&point| {
                probe.update(point);
            });
            eprintln!("state {name} after {input_name}: {} bytes", probe.state_bytes());
            group.bench_with_input(BenchmarkId::new(*name, input_name), &points, |b, points| {
                b.iter(|| {
                    let mut detector = registry::build(name, Sensitivity::DEFAULT).expect("registered detector");
                    let mut sum = 0.0;
                    for &point in points {
                        sum += detector.update(black_box(point)).value();
                    }
                    black_box(sum)
                });
            });
        }
    }
    group.finish();
}

fn forecaster(c: &mut Criterion) {
    // A slowly leaking resource (RSS growing with noise): the forecaster's intended input.
    let series = generate(Shape::TrendChange { slope: 0.01 }, LEN, 0, 4);
    let mut group = c.benchmark_group("forecaster");
    group.throughput(Throughput::Elements(LEN as u64));
    group.bench_function("trend_update_and_forecast", |b| {
        b.iter(|| {
            let mut forecaster = TrendForecaster::new();
            let mut n_forecasts = 0usize;
            for (&t, &v) in series.timestamps.iter().zip(&series.values) {
                forecaster.update(black_box(t), black_box(v));
                n_forecasts += usize::from(forecaster.time_to_reach(1e4).is_some());
            }
            black_box(n_forecasts)
        });
    });
    group.finish();
}

criterion_group!(benches, detectors, forecaster);
criterion_main!(benches);
