//! End to end: a tiny NAB-layout corpus on disk is run, written in NAB's results layout and scored.

use std::fs;
use std::path::{Path, PathBuf};

use mend_detect::Sensitivity;
use mend_nab::{NabError, Profile, run_corpus, score};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("mend-nab-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("temp dir is writable");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn timestamp(row_idx: usize) -> String {
    // 5-minute rows from 2014-01-01 00:00:00; 288 rows per day.
    let day = 1 + row_idx / 288;
    let minutes = (row_idx % 288) * 5;
    format!("2014-01-{day:02} {:02}:{:02}:00", minutes / 60, minutes % 60)
}

fn write_series(path: &Path, values: &[f64]) {
    let mut text = String::from("timestamp,value\n");
    for (row_idx, value) in values.iter().enumerate() {
        text.push_str(&format!("{},{value}\n", timestamp(row_idx)));
    }
    fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    fs::write(path, text).expect("write data");
}

/// Two files: one with a spike inside its window, one quiet file without windows.
fn corpus(root: &Path) -> (PathBuf, PathBuf) {
    let data = root.join("data");
    let spiky: Vec<f64> = (0..2_000).map(|i| if i == 1_500 { 90.0 } else { 10.0 + (i % 5) as f64 }).collect();
    let quiet: Vec<f64> = (0..1_000).map(|i| 20.0 + (i % 3) as f64).collect();
    write_series(&data.join("synthetic/spiky.csv"), &spiky);
    write_series(&data.join("synthetic/quiet.csv"), &quiet);
    let labels = root.join("combined_windows.json");
    let windows = format!(
        r#"{{"synthetic/spiky.csv": [["{}.000000", "{}.000000"]], "synthetic/quiet.csv": []}}"#,
        timestamp(1_400),
        timestamp(1_600)
    );
    fs::write(&labels, windows).expect("write labels");
    (data, labels)
}

#[test]
fn run_writes_nab_layout_and_score_finds_the_spike() {
    let temp = TempDir::new("e2e");
    let (data, labels) = corpus(&temp.0);
    let out = temp.0.join("results");
    let mut seen = Vec::new();
    let summary = run_corpus(&data, &out, "default", Sensitivity::DEFAULT, |progress| {
        seen.push((progress.file_idx, progress.n_files, progress.rel_path.to_owned(), progress.n_rows));
    })
    .expect("run succeeds");
    assert_eq!(summary.n_files, 2);
    assert_eq!(summary.n_rows, 3_000);
    assert_eq!(
        seen,
        vec![(0, 2, "synthetic/quiet.csv".to_owned(), 1_000), (1, 2, "synthetic/spiky.csv".to_owned(), 2_000),]
    );

    let result_path = out.join("default/synthetic/default_spiky.csv");
    let text = fs::read_to_string(&result_path).expect("results written");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2_000);
    assert!(rows[1_500].starts_with(&format!("{},90,", timestamp(1_500))), "{}", rows[1_500]);

    let scores = score(&data, &labels, &out, "default", &Profile::nab_profiles()).expect("scoring succeeds");
    assert_eq!(scores.len(), 3);
    for profile_score in &scores {
        assert_eq!(profile_score.n_windows, 1);
        assert!(profile_score.threshold <= 1.0, "{profile_score:?}");
        assert_eq!(profile_score.files[1].n_windows_detected, 1);
        // Detected at the window's middle and nothing else: 100 · (0.86 + 1) / 2 for standard.
        assert!(profile_score.normalized_score > 90.0, "{profile_score:?}");
    }
}

#[test]
fn errors_name_the_file_and_line() {
    let temp = TempDir::new("errors");
    let (data, labels) = corpus(&temp.0);
    let out = temp.0.join("results");

    let unknown = run_corpus(&data, &out, "nope", Sensitivity::DEFAULT, |_| {}).expect_err("unknown detector");
    assert!(matches!(unknown, NabError::UnknownDetector { .. }), "{unknown}");

    let missing = score(&data, &labels, &out, "default", &[Profile::standard()]).expect_err("no results yet");
    assert!(missing.to_string().contains("default_quiet.csv"), "{missing}");

    fs::write(data.join("synthetic/quiet.csv"), "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,x\n")
        .expect("overwrite");
    let bad = run_corpus(&data, &out, "default", Sensitivity::DEFAULT, |_| {}).expect_err("bad value");
    let message = bad.to_string();
    assert!(message.ends_with("quiet.csv:3: invalid value \"x\""), "{message}");
}
