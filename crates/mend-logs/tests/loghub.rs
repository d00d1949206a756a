//! Grouping accuracy of the miner on two real Loghub samples kept in the repository (HDFS, OpenSSH;
//! `tests/data/loghub`, with Loghub's licence and citation). The bounds sit below the measured figures
//! (BENCHMARKS.md) and fail when mining breaks: masking, the tree, the similarity or merging.

#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;

use mend_logs::{Drain, DrainConfig};

/// The `Content` and `EventTemplate` columns of a structured sample.
fn sample(system: &str) -> (Vec<String>, Vec<String>) {
    let path: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "tests/data/loghub", system, &format!("{system}_2k.log_structured_corrected.csv")]
            .iter()
            .collect();
    let mut reader = csv::Reader::from_path(&path).expect("the sample is in the repository");
    let headers = reader.headers().expect("a header row").clone();
    let column = |name: &str| headers.iter().position(|header| header == name).expect("the column exists");
    let (content, template) = (column("Content"), column("EventTemplate"));
    reader
        .records()
        .map(|record| {
            let record = record.expect("a valid row");
            (record[content].to_owned(), record[template].to_owned())
        })
        .unzip()
}

/// Loghub-2.0's grouping accuracy: lines whose parsed group is exactly their true template's group.
fn grouping_accuracy(system: &str) -> f64 {
    let (contents, truth) = sample(system);
    let mut drain = Drain::new(DrainConfig::default());
    let ids: Vec<_> = contents.iter().map(|content| drain.add(content).id).collect();
    let mut truth_sizes: HashMap<&str, usize> = HashMap::new();
    for template in &truth {
        *truth_sizes.entry(template).or_default() += 1;
    }
    let mut groups: HashMap<_, Vec<usize>> = HashMap::new();
    for (line_idx, id) in ids.iter().enumerate() {
        groups.entry(*id).or_default().push(line_idx);
    }
    let n_correct: usize = groups
        .values()
        .filter(|lines| {
            let first = truth[lines[0]].as_str();
            lines.iter().all(|&idx| truth[idx] == first) && truth_sizes[first] == lines.len()
        })
        .map(Vec::len)
        .sum();
    n_correct as f64 / truth.len() as f64
}

#[test]
fn groups_hdfs_lines_as_loghub_does() {
    let ga = grouping_accuracy("HDFS");
    assert!(ga >= 0.95, "GA {ga:.3} on HDFS (measured 0.998)");
}

#[test]
fn groups_openssh_lines_as_loghub_does() {
    let ga = grouping_accuracy("OpenSSH");
    assert!(ga >= 0.70, "GA {ga:.3} on OpenSSH (measured 0.789)");
}
