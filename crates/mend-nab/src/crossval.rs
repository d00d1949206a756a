//! Cross-validation: tune on some files, score on the others (the out-of-sample NAB score).
//!
//! NAB's scoreboard optimises each detector's threshold on the very files it scores, and a detector whose
//! constants were chosen on those files scores its tuning, not itself. Here every choice — which candidate
//! (a parameter set, a detector) and which threshold — is made on the training files of a fold alone, and
//! the held-out files of that fold are scored at that choice. Folds come in two kinds:
//!
//! * **stratified random splits**: a fixed fraction of each category's files held out (at least one, never
//!   all), drawn by a seeded generator, repeated;
//! * **leave one category out**: a whole category held out, so the choice is made without any file of its kind.
//!
//! Detection runs once per candidate over the whole corpus (an online detector scores each file on its own,
//! so a file's scores do not depend on which fold it is in); folds only re-score subsets. Deterministic.

use std::collections::BTreeMap;

use crate::scoring::{Profile, ScoredFile, score_corpus, score_file_at};

/// Which files a fold holds out (indices into the corpus), and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fold {
    /// `split 7`, `without realTweets`, ...
    pub name: String,
    /// Indices of the held-out files, ascending.
    pub test: Vec<usize>,
}

/// `n_repeats` random splits holding out `test_fraction` of each category's files (rounded, at least one,
/// never every file of a category with two or more; a one-file category stays in training).
pub fn stratified_splits(categories: &[&str], n_repeats: usize, test_fraction: f64, seed: u64) -> Vec<Fold> {
    let mut by_category: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (file_idx, category) in categories.iter().enumerate() {
        by_category.entry(category).or_default().push(file_idx);
    }
    let mut rng = SplitMix64(seed);
    (0..n_repeats)
        .map(|repeat_idx| {
            let mut test = Vec::new();
            for files in by_category.values() {
                if files.len() < 2 {
                    continue;
                }
                let n_test = ((files.len() as f64 * test_fraction).round() as usize).clamp(1, files.len() - 1);
                let mut shuffled = files.clone();
                // Fisher–Yates: the first n_test of a uniform permutation.
                for idx in 0..n_test {
                    let pick = idx + rng.below(shuffled.len() - idx);
                    shuffled.swap(idx, pick);
                }
                test.extend_from_slice(&shuffled[..n_test]);
            }
            test.sort_unstable();
            Fold { name: format!("split {}", repeat_idx + 1), test }
        })
        .collect()
}

/// One fold per category, holding out all of its files.
pub fn leave_one_category_out(categories: &[&str]) -> Vec<Fold> {
    let mut by_category: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (file_idx, category) in categories.iter().enumerate() {
        by_category.entry(category).or_default().push(file_idx);
    }
    by_category.into_iter().map(|(category, test)| Fold { name: format!("without {category}"), test }).collect()
}

/// A thing to choose among: a detector or a parameter set, with its scores over the whole corpus.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// How to name it in a report.
    pub label: String,
    /// One scored file per corpus file, in corpus order.
    pub scored: Vec<ScoredFile>,
}

/// What one fold gave under one profile.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldOutcome {
    /// The fold's name.
    pub fold: String,
    /// Index of the candidate chosen on the training files.
    pub chosen: usize,
    /// The threshold chosen with it on the training files.
    pub threshold: f64,
    /// The normalised score of the chosen candidate on the training files (what the tuning saw).
    pub train_score: f64,
    /// The normalised score on the held-out files at the training threshold: the out-of-sample score.
    /// `None` when the held-out files have no window (then see `test_false_positives`).
    pub test_score: Option<f64>,
    /// The held-out files scored with their own best threshold (NAB's scoreboard convention), for the
    /// candidate chosen on the training files: what the detector would score there if the threshold were
    /// re-optimised, its constants not. `None` without windows.
    pub test_score_own_threshold: Option<f64>,
    /// Windows of the held-out files.
    pub test_windows: usize,
    /// Detections outside windows in the held-out files at the training threshold.
    pub test_false_positives: usize,
}

/// Tunes on each fold's training files under `profile` (best candidate and threshold there), scores its
/// held-out files at that choice. Candidates must all score the same corpus, in the same order.
pub fn cross_validate(candidates: &[Candidate], folds: &[Fold], profile: &Profile) -> Vec<FoldOutcome> {
    folds
        .iter()
        .filter_map(|fold| {
            let is_test = |file_idx: usize| fold.test.binary_search(&file_idx).is_ok();
            let subset = |candidate: &Candidate, test: bool| -> Vec<ScoredFile> {
                candidate
                    .scored
                    .iter()
                    .enumerate()
                    .filter(|&(idx, _)| is_test(idx) == test)
                    .map(|(_, f)| f.clone())
                    .collect()
            };
            // Best on training: ties go to the earlier candidate (list the default first).
            let mut best: Option<(usize, f64, f64)> = None;
            for (candidate_idx, candidate) in candidates.iter().enumerate() {
                let train = score_corpus(&subset(candidate, false), profile);
                if best.is_none_or(|(_, score, _)| train.normalized_score > score) {
                    best = Some((candidate_idx, train.normalized_score, train.threshold));
                }
            }
            let (chosen, train_score, threshold) = best?;
            let test_files = subset(&candidates[chosen], true);
            let test_windows: usize = test_files.iter().map(|f| f.windows.len()).sum();
            let outcomes: Vec<_> = test_files.iter().map(|f| score_file_at(f, profile, threshold)).collect();
            let raw: f64 = outcomes.iter().map(|o| o.raw_score).sum();
            let test_false_positives = outcomes.iter().map(|o| o.n_false_positives).sum();
            let normalise = |raw: f64| {
                let w = test_windows as f64;
                100.0 * (raw + profile.fn_weight * w) / ((profile.tp_weight + profile.fn_weight) * w)
            };
            let (test_score, test_score_own_threshold) = if test_windows == 0 {
                (None, None)
            } else {
                (Some(normalise(raw)), Some(score_corpus(&test_files, profile).normalized_score))
            };
            Some(FoldOutcome {
                fold: fold.name.clone(),
                chosen,
                threshold,
                train_score,
                test_score,
                test_score_own_threshold,
                test_windows,
                test_false_positives,
            })
        })
        .collect()
}

/// Replaces every score by the alarm decision it stands for: 1 at or above `alarm_level`, else 0.
///
/// A mend detector alarms at [`mend_detect::attach::ALARM_SCORE`] on every series; scored this way, no threshold
/// is left to choose on any fold (every threshold in `(0, 1]` gives the same score), so the fold measures the
/// detector's own, per-series decision rather than a corpus-wide threshold picked on the training files.
pub fn alarm_decisions(scored: &mut [ScoredFile], alarm_level: f64) {
    for file in scored {
        for score in &mut file.scores {
            *score = if *score >= alarm_level { 1.0 } else { 0.0 };
        }
    }
}

/// Mean, sample standard deviation, minimum and maximum of a set of scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (0 for one value).
    pub std: f64,
    /// The lowest.
    pub min: f64,
    /// The highest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var =
            if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Some(Self {
            n: values.len(),
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// SplitMix64: a tiny, well-mixed, seeded generator (enough to draw folds reproducibly).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1), by rejection so no index is favoured.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let value = self.next();
            if value < zone {
                return (value % n) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn categories() -> Vec<&'static str> {
        vec!["a", "a", "a", "b", "b", "b", "b", "b", "b", "c"]
    }

    #[test]
    fn splits_hold_out_a_share_of_every_category_and_are_reproducible() {
        let folds = stratified_splits(&categories(), 20, 1.0 / 3.0, 7);
        assert_eq!(folds.len(), 20);
        for fold in &folds {
            let held = |range: std::ops::Range<usize>| fold.test.iter().filter(|idx| range.contains(idx)).count();
            // a: 3 files → 1 held out; b: 6 → 2; c: a single file stays in training.
            assert_eq!((held(0..3), held(3..9), held(9..10)), (1, 2, 0), "{fold:?}");
        }
        assert_eq!(folds, stratified_splits(&categories(), 20, 1.0 / 3.0, 7));
        assert_ne!(folds, stratified_splits(&categories(), 20, 1.0 / 3.0, 8));
        // Every file of a category is held out in some fold.
        for file_idx in 0..9 {
            assert!(folds.iter().any(|f| f.test.contains(&file_idx)), "file {file_idx} never held out");
        }
    }

    #[test]
    fn leave_one_category_out_holds_out_whole_categories() {
        let folds = leave_one_category_out(&categories());
        let tests: Vec<(&str, Vec<usize>)> = folds.iter().map(|f| (f.name.as_str(), f.test.clone())).collect();
        assert_eq!(
            tests,
            [("without a", vec![0, 1, 2]), ("without b", vec![3, 4, 5, 6, 7, 8]), ("without c", vec![9])]
        );
    }

    /// A file of 100 rows with one window at rows 50..=59 and the given detections.
    fn file(name: &str, detections: &[(usize, f64)]) -> ScoredFile {
        let mut scores = vec![0.0; 100];
        for &(row, score) in detections {
            scores[row] = score;
        }
        ScoredFile { rel_path: name.to_owned(), scores, windows: vec![(50, 59)] }
    }

    #[test]
    fn the_choice_is_made_on_training_files_and_scored_on_held_out_ones() {
        // Candidate 0 detects every window at score 0.9. Candidate 1 detects the training windows at 0.8
        // and, on the held-out file, only a false positive at 0.8 plus the window at 0.3: perfect on the
        // training files too, but worse where it was not tuned. Ties on training go to the first.
        let good = Candidate {
            label: "good".to_owned(),
            scored: vec![file("x", &[(50, 0.9)]), file("y", &[(50, 0.9)]), file("z", &[(50, 0.9)])],
        };
        let overfit = Candidate {
            label: "overfit".to_owned(),
            scored: vec![file("x", &[(50, 0.8)]), file("y", &[(50, 0.8)]), file("z", &[(20, 0.8), (52, 0.3)])],
        };
        let fold = Fold { name: "hold out z".to_owned(), test: vec![2] };
        let outcomes = cross_validate(&[overfit, good.clone()], std::slice::from_ref(&fold), &Profile::standard());
        let outcome = &outcomes[0];
        assert_eq!((outcome.chosen, outcome.threshold), (0, 0.8));
        assert!((outcome.train_score - 100.0).abs() < 1e-9, "{outcome:?}");
        // At the training threshold the held-out file has a false positive and misses its window.
        let expected = 100.0 * (-0.11 - 1.0 + 1.0) / 2.0;
        assert!((outcome.test_score.expect("has a window") - expected).abs() < 1e-9, "{outcome:?}");
        assert_eq!(outcome.test_false_positives, 1);
        // With its own threshold (0.3, NAB's convention) the held-out file does better, false positive
        // included.
        let own = outcome.test_score_own_threshold.expect("has a window");
        assert!(own > expected, "{outcome:?}");
        // The honest candidate holds on the held-out file.
        let outcomes = cross_validate(&[good], &[fold], &Profile::standard());
        assert!((outcomes[0].test_score.expect("has a window") - 100.0).abs() < 1e-9, "{:?}", outcomes[0]);
    }

    #[test]
    fn the_alarm_decision_leaves_no_threshold_to_choose() {
        // Training file x alarms in its window at 0.9 and falsely at 0.55; the held-out file y alarms in its
        // window at 0.52 only. Graded, training chooses 0.9 (dropping x's false alarm) and y's alarm is lost;
        // as alarm decisions, both of x's alarms stand and y's window is detected.
        let graded = Candidate {
            label: "graded".to_owned(),
            scored: vec![file("x", &[(20, 0.55), (50, 0.9)]), file("y", &[(50, 0.52)])],
        };
        let fold = Fold { name: "hold out y".to_owned(), test: vec![1] };
        let profile = Profile::standard();
        let outcome = &cross_validate(std::slice::from_ref(&graded), std::slice::from_ref(&fold), &profile)[0];
        assert_eq!(outcome.threshold, 0.9);
        assert!((outcome.test_score.expect("has a window") - 0.0).abs() < 1e-9, "{outcome:?}");
        let mut decided = graded.clone();
        alarm_decisions(&mut decided.scored, 0.5);
        assert_eq!(decided.scored[0].scores[20], 1.0);
        assert_eq!(decided.scored[1].scores[50], 1.0);
        assert_eq!(decided.scored[1].scores[49], 0.0);
        let outcome = &cross_validate(&[decided], &[fold], &profile)[0];
        assert_eq!(outcome.threshold, 1.0);
        assert!((outcome.test_score.expect("has a window") - 100.0).abs() < 1e-9, "{outcome:?}");
    }

    #[test]
    fn spread_of_scores() {
        let spread = Spread::of(&[70.0, 74.0, 78.0]).expect("not empty");
        assert_eq!((spread.n, spread.mean, spread.std, spread.min, spread.max), (3, 74.0, 4.0, 70.0, 78.0));
        assert_eq!(Spread::of(&[]), None);
    }
}
