//! Lines mined per second on one core: the Loghub HDFS and OpenSSH samples (real lines of two shapes:
//! HDFS's few long-lived templates with block ids, OpenSSH's many short templates with IPs and users),
//! each line through the whole miner (level, header, masking, Drain, statistics), as replica output goes.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mend_logs::{DrainConfig, LogMiner};
use mend_types::Timestamp;

fn lines(system: &str) -> Vec<String> {
    let path = format!("{}/tests/data/loghub/{system}/{system}_2k.log", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the Loghub sample is in the repository");
    text.lines().map(str::to_owned).collect()
}

fn mining(c: &mut Criterion) {
    let mut group = c.benchmark_group("mine");
    for system in ["HDFS", "OpenSSH"] {
        let lines = lines(system);
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function(system, |b| {
            b.iter(|| {
                let mut miner = LogMiner::new(DrainConfig::default());
                for line in &lines {
                    black_box(miner.observe(line, Timestamp::from_millis(0)));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, mining);
criterion_main!(benches);
