//! NAB scoring on in-memory data: row weights, the exhaustive threshold search and normalisation (README §4–§7).

use serde::{Deserialize, Serialize};

/// The cost weights of one NAB profile (`config/profiles.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Profile name, e.g. `standard`.
    pub name: String,
    /// Reward for a detection on the first row of a window.
    pub tp_weight: f64,
    /// Cost of a false positive far from any window.
    pub fp_weight: f64,
    /// Cost of a missed window.
    pub fn_weight: f64,
}

impl Profile {
    /// NAB's `standard` profile.
    pub fn standard() -> Self {
        Self::new("standard", 1.0, 0.11, 1.0)
    }

    /// NAB's `reward_low_FP_rate` profile.
    pub fn reward_low_fp_rate() -> Self {
        Self::new("reward_low_FP_rate", 1.0, 0.22, 1.0)
    }

    /// NAB's `reward_low_FN_rate` profile.
    pub fn reward_low_fn_rate() -> Self {
        Self::new("reward_low_FN_rate", 1.0, 0.11, 2.0)
    }

    /// NAB's three profiles, in the order NAB lists them.
    pub fn nab_profiles() -> Vec<Self> {
        vec![Self::standard(), Self::reward_low_fp_rate(), Self::reward_low_fn_rate()]
    }

    fn new(name: &str, tp_weight: f64, fp_weight: f64, fn_weight: f64) -> Self {
        Self { name: name.to_owned(), tp_weight, fp_weight, fn_weight }
    }
}

/// One file's anomaly scores and label windows, ready to be scored.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredFile {
    /// Path relative to the data directory, e.g. `realKnownCause/nyc_taxi.csv`.
    pub rel_path: String,
    /// One anomaly score per data row, in row order.
    pub scores: Vec<f64>,
    /// Windows as inclusive 0-based row ranges `(first, last)`, in time order, not overlapping.
    pub windows: Vec<(usize, usize)>,
}

/// Row counts over scored rows at a threshold (they do not enter the score).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Detections inside windows.
    pub tp: usize,
    /// Detections outside windows.
    pub fp: usize,
    /// Undetected rows inside windows.
    pub fn_: usize,
    /// Undetected rows outside windows.
    pub tn: usize,
}

/// The outcome of one file at the chosen threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileOutcome {
    /// Path relative to the data directory.
    pub rel_path: String,
    /// The file's raw score `S_file(θ*)`.
    pub raw_score: f64,
    /// Number of windows of the file.
    pub n_windows: usize,
    /// Windows with at least one detection.
    pub n_windows_detected: usize,
    /// Detections outside windows.
    pub n_false_positives: usize,
    /// Row counts.
    pub counts: Counts,
}

/// The result of one profile over a corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileScore {
    /// Profile name.
    pub profile: String,
    /// The optimal threshold θ* (1.1 means "never detect").
    pub threshold: f64,
    /// The raw corpus score `S(θ*)`.
    pub raw_score: f64,
    /// The normalised NAB score, `100 · (S* + fnW·W) / ((tpW + fnW) · W)`; 0 when the corpus has no window.
    pub normalized_score: f64,
    /// Number of windows `W` of the corpus.
    pub n_windows: usize,
    /// Row counts over all files at θ*.
    pub counts: Counts,
    /// Per-file outcomes at θ*, in corpus order.
    pub files: Vec<FileOutcome>,
}

/// NAB's scaled sigmoid `A(x) = 2 / (1 + e^(5x)) − 1` for `x ≤ 3`, and `−1` beyond.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x > 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * x).exp()) - 1.0 }
}

/// The probationary length `P = min(floor(0.15 · N), 750)` of a file with `n_rows` rows.
pub fn probationary_rows(n_rows: usize) -> usize {
    // floor(0.15 · N) computed exactly in integers: 0.15 · N = 3N / 20.
    (n_rows.saturating_mul(3) / 20).min(750)
}

/// Where a scored row sits relative to the windows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RowKind {
    /// Inside window number `window_idx` (file-local).
    Inside { window_idx: usize },
    /// Outside all windows.
    Outside,
}

/// The weight `v_i` of a detection at `row_idx` and whether it is inside a window.
fn row_weight(row_idx: usize, windows: &[(usize, usize)], profile: &Profile, a_max: f64) -> (f64, RowKind) {
    let mut previous: Option<(usize, usize)> = None;
    for (window_idx, &(first, last)) in windows.iter().enumerate() {
        if row_idx < first {
            break;
        }
        if row_idx <= last {
            let width = (last - first + 1) as f64;
            let x = -((last - row_idx + 1) as f64) / width;
            return (profile.tp_weight * scaled_sigmoid(x) / a_max, RowKind::Inside { window_idx });
        }
        previous = Some((first, last));
    }
    match previous {
        None => (-profile.fp_weight, RowKind::Outside),
        Some((first, last)) => {
            let width_minus_one = (last - first) as f64;
            let x = (row_idx - last) as f64 / width_minus_one;
            (profile.fp_weight * scaled_sigmoid(x), RowKind::Outside)
        }
    }
}

struct Candidate {
    score: f64,
    weight: f64,
    /// Global window index, when the row is inside a window.
    window: Option<usize>,
}

/// Scores a corpus under one profile: exhaustive threshold search, ties to the larger threshold, normalisation.
///
/// Non-finite anomaly scores never count as detections (NaN is ordered below every threshold).
pub fn score_corpus(files: &[ScoredFile], profile: &Profile) -> ProfileScore {
    let a_max = scaled_sigmoid(-1.0);
    let mut candidates = Vec::new();
    let mut n_windows = 0usize;
    let mut n_scored_windows = 0usize;
    for file in files {
        let probation = probationary_rows(file.scores.len());
        for &(_, last) in &file.windows {
            if last >= probation && last < file.scores.len() {
                n_scored_windows += 1;
            }
        }
        for (row_idx, &score) in file.scores.iter().enumerate().skip(probation) {
            if score.is_nan() {
                continue;
            }
            let (weight, kind) = row_weight(row_idx, &file.windows, profile, a_max);
            let window = match kind {
                RowKind::Inside { window_idx } => Some(n_windows + window_idx),
                RowKind::Outside => None,
            };
            candidates.push(Candidate { score, weight, window });
        }
        n_windows += file.windows.len();
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));

    let mut window_values = vec![-profile.fn_weight; n_windows];
    let mut total = -profile.fn_weight * n_scored_windows as f64;
    let mut best = (total, 1.1);
    let mut group_start = 0;
    while group_start < candidates.len() {
        let group_score = candidates[group_start].score;
        let mut group_end = group_start;
        while group_end < candidates.len() && candidates[group_end].score == group_score {
            let candidate = &candidates[group_end];
            match candidate.window {
                Some(window_idx) => {
                    let current = window_values[window_idx];
                    if candidate.weight > current {
                        total += candidate.weight - current;
                        window_values[window_idx] = candidate.weight;
                    }
                }
                None => total += candidate.weight,
            }
            group_end += 1;
        }
        if group_score < 1.1 && total > best.0 {
            best = (total, group_score);
        }
        group_start = group_end;
    }
    let threshold = best.1;
    let file_outcomes: Vec<FileOutcome> =
        files.iter().map(|file| score_file(file, profile, threshold, a_max)).collect();
    let counts = file_outcomes.iter().fold(Counts::default(), |acc, outcome| Counts {
        tp: acc.tp + outcome.counts.tp,
        fp: acc.fp + outcome.counts.fp,
        fn_: acc.fn_ + outcome.counts.fn_,
        tn: acc.tn + outcome.counts.tn,
    });
    let raw_score = best.0;
    let normalized_score = if n_windows == 0 {
        0.0
    } else {
        let w = n_windows as f64;
        100.0 * (raw_score + profile.fn_weight * w) / ((profile.tp_weight + profile.fn_weight) * w)
    };
    ProfileScore {
        profile: profile.name.clone(),
        threshold,
        raw_score,
        normalized_score,
        n_windows,
        counts,
        files: file_outcomes,
    }
}

/// Scores one file at a fixed threshold: `S_file(θ)` plus its counts.
pub fn score_file_at(file: &ScoredFile, profile: &Profile, threshold: f64) -> FileOutcome {
    score_file(file, profile, threshold, scaled_sigmoid(-1.0))
}

fn score_file(file: &ScoredFile, profile: &Profile, threshold: f64, a_max: f64) -> FileOutcome {
    let probation = probationary_rows(file.scores.len());
    let mut best_in_window: Vec<Option<f64>> = vec![None; file.windows.len()];
    let mut counts = Counts::default();
    let mut outside_total = 0.0;
    let mut n_false_positives = 0;
    for (row_idx, &score) in file.scores.iter().enumerate().skip(probation) {
        let detected = score >= threshold;
        let (weight, kind) = row_weight(row_idx, &file.windows, profile, a_max);
        match (kind, detected) {
            (RowKind::Inside { window_idx }, true) => {
                counts.tp += 1;
                let slot = &mut best_in_window[window_idx];
                *slot = Some(slot.map_or(weight, |current: f64| current.max(weight)));
            }
            (RowKind::Inside { .. }, false) => counts.fn_ += 1,
            (RowKind::Outside, true) => {
                counts.fp += 1;
                n_false_positives += 1;
                outside_total += weight;
            }
            (RowKind::Outside, false) => counts.tn += 1,
        }
    }
    let mut raw_score = outside_total;
    let mut n_windows_detected = 0;
    for (&(_, last), best) in file.windows.iter().zip(&best_in_window) {
        match best {
            Some(value) => {
                n_windows_detected += 1;
                raw_score += value;
            }
            None if last >= probation => raw_score -= profile.fn_weight,
            None => {}
        }
    }
    FileOutcome {
        rel_path: file.rel_path.clone(),
        raw_score,
        n_windows: file.windows.len(),
        n_windows_detected,
        n_false_positives,
        counts,
    }
}

#[cfg(test)]
mod tests;
