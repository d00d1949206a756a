//! Running a detector over the corpus (files on disk or in memory) and scoring NAB results directories.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use mend_detect::{AnyDetector, Detector, Point, Sensitivity, registry};

use crate::corpus::{DataFile, LabelledFile, list_data_files, load_labelled_corpus, read_data_file};
use crate::error::NabError;
use crate::scoring::{Profile, ProfileScore, ScoredFile, score_corpus};

/// Progress of [`run_corpus`], reported once per finished file.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// 0-based index of the file just finished.
    pub file_idx: usize,
    /// Number of files in the corpus.
    pub n_files: usize,
    /// Path of the file relative to the data directory.
    pub rel_path: &'a str,
    /// Rows processed in that file.
    pub n_rows: usize,
}

/// What [`run_corpus`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Files processed.
    pub n_files: usize,
    /// Rows processed over all files.
    pub n_rows: usize,
    /// The directory the results went to (`OUT/<detector>`).
    pub detector_dir: PathBuf,
}

/// Streams every row of `file` through a fresh detector; one score per row, in order.
pub fn detect_file(detector: &mut AnyDetector, file: &DataFile) -> Vec<f64> {
    file.rows.iter().map(|row| detector.update(Point::new(row.timestamp.as_secs_f64(), row.value)).value()).collect()
}

/// Runs detector `detector_name` over every `DIR/<category>/<file>.csv` and writes NAB's results layout
/// `OUT/<detector>/<category>/<detector>_<file>.csv` (`timestamp,value,anomaly_score`, one row per input row).
pub fn run_corpus(
    data_dir: &Path,
    out_dir: &Path,
    detector_name: &str,
    sensitivity: Sensitivity,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<RunSummary, NabError> {
    build_detector(detector_name, sensitivity)?;
    let files = list_data_files(data_dir)?;
    let detector_dir = out_dir.join(detector_name);
    let mut n_rows = 0;
    for (file_idx, (category, name)) in files.iter().enumerate() {
        let data = read_data_file(data_dir, category, name)?;
        let mut detector = build_detector(detector_name, sensitivity)?;
        let scores = detect_file(&mut detector, &data);
        let mut text = String::with_capacity(data.rows.len() * 48 + 32);
        text.push_str("timestamp,value,anomaly_score\n");
        for (row, score) in data.rows.iter().zip(&scores) {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{},{},{}", row.timestamp_text, row.value_text, score);
        }
        let category_dir = detector_dir.join(category);
        fs::create_dir_all(&category_dir).map_err(NabError::io(&category_dir))?;
        let path = category_dir.join(format!("{detector_name}_{name}"));
        fs::write(&path, text).map_err(NabError::io(&path))?;
        n_rows += data.rows.len();
        progress(Progress { file_idx, n_files: files.len(), rel_path: &data.rel_path(), n_rows: data.rows.len() });
    }
    Ok(RunSummary { n_files: files.len(), n_rows, detector_dir })
}

fn build_detector(name: &str, sensitivity: Sensitivity) -> Result<AnyDetector, NabError> {
    registry::build(name, sensitivity).map_err(|source| NabError::UnknownDetector { name: name.to_owned(), source })
}

/// Reads the anomaly scores of a results file and checks it has `expected_rows` rows.
fn read_result_scores(path: &Path, expected_rows: usize) -> Result<Vec<f64>, NabError> {
    let text = fs::read_to_string(path).map_err(NabError::io(path))?;
    let csv_error = |line: usize, message: String| NabError::Csv { path: path.to_path_buf(), line, message };
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, header)| header.trim_end_matches('\r')).unwrap_or_default();
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let score_col = columns
        .iter()
        .position(|&c| c == "anomaly_score")
        .ok_or_else(|| csv_error(1, format!("no `anomaly_score` column in header {header:?}")))?;
    let mut scores = Vec::with_capacity(expected_rows);
    for (line_idx, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let field = line
            .split(',')
            .nth(score_col)
            .ok_or_else(|| csv_error(line_idx + 1, format!("missing `anomaly_score` field in {line:?}")))?;
        let score: f64 =
            field.trim().parse().map_err(|_| csv_error(line_idx + 1, format!("invalid anomaly score {field:?}")))?;
        scores.push(score);
    }
    if scores.len() != expected_rows {
        return Err(NabError::RowCount { path: path.to_path_buf(), expected: expected_rows, found: scores.len() });
    }
    Ok(scores)
}

/// Scores `RESULTS/<detector>/<category>/<detector>_<file>.csv` against the data and labels, per profile.
pub fn score(
    data_dir: &Path,
    labels_file: &Path,
    results_dir: &Path,
    detector_name: &str,
    profiles: &[Profile],
) -> Result<Vec<ProfileScore>, NabError> {
    let corpus = load_labelled_corpus(data_dir, labels_file)?;
    let scored = read_results(&corpus, results_dir, detector_name)?;
    Ok(profiles.iter().map(|profile| score_corpus(&scored, profile)).collect())
}

/// Reads `RESULTS/<detector>/<category>/<detector>_<file>.csv` for every file of `corpus`, in corpus order
/// (a results directory written by [`run_corpus`], or NAB's stored results of another detector).
pub fn read_results(
    corpus: &[LabelledFile],
    results_dir: &Path,
    detector_name: &str,
) -> Result<Vec<ScoredFile>, NabError> {
    let mut scored = Vec::with_capacity(corpus.len());
    for file in corpus {
        let path = results_dir
            .join(detector_name)
            .join(&file.data.category)
            .join(format!("{detector_name}_{}", file.data.name));
        let scores = read_result_scores(&path, file.data.rows.len())?;
        scored.push(ScoredFile { rel_path: file.data.rel_path(), scores, windows: file.windows.clone() });
    }
    Ok(scored)
}

/// Runs a detector factory over an in-memory corpus (no files written); for tuning loops and tests.
pub fn detect_corpus(corpus: &[LabelledFile], mut make_detector: impl FnMut() -> AnyDetector) -> Vec<ScoredFile> {
    corpus
        .iter()
        .map(|file| {
            let mut detector = make_detector();
            ScoredFile {
                rel_path: file.data.rel_path(),
                scores: detect_file(&mut detector, &file.data),
                windows: file.windows.clone(),
            }
        })
        .collect()
}
