//! Tests of the NAB scorer: the README's worked example and one hand-computed case per rule.

use super::*;

fn file(rel_path: &str, n_rows: usize, nonzero: &[(usize, f64)], windows: &[(usize, usize)]) -> ScoredFile {
    let mut scores = vec![0.0; n_rows];
    for &(row_idx, score) in nonzero {
        scores[row_idx] = score;
    }
    ScoredFile { rel_path: rel_path.to_owned(), scores, windows: windows.to_vec() }
}

fn assert_close(got: f64, expected: f64, tolerance: f64, what: &str) {
    assert!((got - expected).abs() <= tolerance, "{what}: got {got}, expected {expected}");
}

/// README §10: file A (40 rows, window 20..27) and file B (20 rows, no window).
fn worked_example() -> Vec<ScoredFile> {
    vec![
        file("a.csv", 40, &[(2, 0.9), (10, 0.6), (22, 0.8), (25, 0.9), (30, 0.7)], &[(20, 27)]),
        file("b.csv", 20, &[(1, 1.0), (5, 1.0)], &[]),
    ]
}

#[test]
fn worked_example_row_weights() {
    let windows = [(20, 27)];
    let standard = Profile::standard();
    let a_max = scaled_sigmoid(-1.0);
    assert_close(a_max, 0.986_614_298_151_43, 1e-12, "A_max");
    let cases =
        [(10, -0.11), (20, 1.0), (22, 0.966_989), (25, 0.744_031), (27, 0.306_817), (28, -0.037_696), (30, -0.086_900)];
    for (row_idx, expected) in cases {
        let (weight, _) = row_weight(row_idx, &windows, &standard, a_max);
        assert_close(weight, expected, 5e-7, &format!("row {row_idx}"));
    }
}

#[test]
fn worked_example_thresholds_and_scores() {
    let corpus = worked_example();
    // (profile, S at θ = 1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.0)
    let table = [
        (Profile::standard(), [-1.0, -1.11, 0.634_031, 0.856_989, 0.770_089, 0.660_089, -3.568_263]),
        (Profile::reward_low_fp_rate(), [-1.0, -1.22, 0.524_031, 0.746_989, 0.573_189, 0.353_189, -8.136_525]),
        (Profile::reward_low_fn_rate(), [-2.0, -2.11, 0.634_031, 0.856_989, 0.770_089, 0.660_089, -3.568_263]),
    ];
    let thresholds = [1.1, 1.0, 0.9, 0.8, 0.7, 0.6, 0.0];
    for (profile, expected) in &table {
        for (&threshold, &want) in thresholds.iter().zip(expected) {
            let got: f64 = corpus.iter().map(|f| score_file_at(f, profile, threshold).raw_score).sum();
            assert_close(got, want, 1e-6, &format!("{} at {threshold}", profile.name));
        }
        let result = score_corpus(&corpus, profile);
        assert_eq!(result.threshold, 0.8, "{}", profile.name);
        assert_close(result.raw_score, expected[3], 1e-6, &profile.name);
        assert_eq!(result.n_windows, 1);
        assert_eq!(result.counts.tp, 2);
        assert_eq!(result.counts.fp, 1);
    }
    let normalized: Vec<f64> = table.iter().map(|(p, _)| score_corpus(&corpus, p).normalized_score).collect();
    assert_close(normalized[0], 92.849_45, 1e-4, "standard");
    assert_close(normalized[1], 87.349_45, 1e-4, "low FP");
    assert_close(normalized[2], 95.232_97, 1e-4, "low FN");
}

#[test]
fn probationary_rows_follow_the_formula() {
    for (n_rows, expected) in [(40, 6), (20, 3), (4032, 604), (1624, 243), (5000, 750), (22_695, 750), (0, 0), (6, 0)] {
        assert_eq!(probationary_rows(n_rows), expected, "N = {n_rows}");
    }
}

#[test]
fn detections_in_probation_are_ignored() {
    // 100 rows → P = 15; a huge score at row 3 must neither count nor become a candidate threshold.
    let corpus = [file("p.csv", 100, &[(3, 1.0), (50, 0.5)], &[(40, 60)])];
    let result = score_corpus(&corpus, &Profile::standard());
    assert_eq!(result.threshold, 0.5);
    assert_eq!(result.counts.fp, 0);
    assert_eq!(result.counts.tp, 1);
}

#[test]
fn only_the_earliest_detection_in_a_window_counts() {
    let windows = [(40, 49)];
    let early = file("e.csv", 100, &[(42, 0.9), (48, 0.9)], &windows);
    let early_only = file("e.csv", 100, &[(42, 0.9)], &windows);
    let profile = Profile::standard();
    let both = score_file_at(&early, &profile, 0.9).raw_score;
    let single = score_file_at(&early_only, &profile, 0.9).raw_score;
    assert_close(both, single, 1e-15, "later detection adds nothing");
    // x = −(49 − 42 + 1)/10 = −0.8.
    assert_close(single, scaled_sigmoid(-0.8) / scaled_sigmoid(-1.0), 1e-15, "earliest weight");
}

#[test]
fn false_positive_after_a_window_is_reduced_by_distance() {
    // Window 40..49 (w = 10): a detection at row 52 has x = 3/9.
    let corpus = file("f.csv", 100, &[(52, 0.9)], &[(40, 49)]);
    let profile = Profile::standard();
    let got = score_file_at(&corpus, &profile, 0.9).raw_score;
    let expected = -1.0 + 0.11 * scaled_sigmoid(3.0 / 9.0);
    assert_close(got, expected, 1e-15, "reduced FP");
    assert!(got > -1.0 - 0.11 && got < -1.0);
}

#[test]
fn false_positive_before_the_first_window_costs_full_weight() {
    // Row 39 is adjacent to the window but before it: full −fpW.
    let corpus = file("b.csv", 100, &[(39, 0.9)], &[(40, 49)]);
    let got = score_file_at(&corpus, &Profile::reward_low_fp_rate(), 0.9).raw_score;
    assert_close(got, -1.0 - 0.22, 1e-15, "full FP before window");
}

#[test]
fn missed_window_costs_fn_weight() {
    let corpus = [file("m.csv", 100, &[], &[(40, 49), (70, 79)])];
    for profile in Profile::nab_profiles() {
        let result = score_corpus(&corpus, &profile);
        assert_eq!(result.threshold, 1.1);
        assert_close(result.raw_score, -2.0 * profile.fn_weight, 1e-15, &profile.name);
        assert_close(result.normalized_score, 0.0, 1e-12, &profile.name);
    }
}

#[test]
fn ties_go_to_the_larger_threshold() {
    // Row 40 opens the window (+1.0); row 45 is a later detection in the same window and adds
    // nothing, so S(0.7) == S(0.4) == 1.0 and the larger threshold must win.
    let corpus = [file("t.csv", 100, &[(40, 0.7), (45, 0.4)], &[(40, 49)])];
    let result = score_corpus(&corpus, &Profile::standard());
    assert_eq!(result.threshold, 0.7);
    assert_close(result.raw_score, 1.0, 1e-15, "raw");
}

#[test]
fn far_false_positive_costs_exactly_fp_weight() {
    // Window 40..44 (w = 5, w − 1 = 4): row 57 has x = 13/4 > 3 → exactly −fpW; row 52 has x = 2 → A(2).
    let profile = Profile::standard();
    let far = score_file_at(&file("x.csv", 100, &[(57, 0.9)], &[(40, 44)]), &profile, 0.9);
    assert_eq!(far.raw_score, -1.0 - 0.11);
    let near = score_file_at(&file("x.csv", 100, &[(52, 0.9)], &[(40, 44)]), &profile, 0.9);
    assert_close(near.raw_score, -1.0 + 0.11 * scaled_sigmoid(2.0), 1e-15, "x = 2");
    assert!(near.raw_score > far.raw_score);
    // x exactly 3 still uses the sigmoid.
    assert_close(scaled_sigmoid(3.0), 2.0 / (1.0 + 15f64.exp()) - 1.0, 1e-15, "A(3)");
}

#[test]
fn window_starting_in_probation_still_scores_its_late_rows() {
    // 100 rows → P = 15; window 10..20 (w = 11): row 16 has x = −5/11.
    let corpus = [file("w.csv", 100, &[(16, 0.9)], &[(10, 20)])];
    let result = score_corpus(&corpus, &Profile::standard());
    assert_close(result.raw_score, scaled_sigmoid(-5.0 / 11.0) / scaled_sigmoid(-1.0), 1e-15, "late rows");
}

#[test]
fn nan_scores_never_detect() {
    let corpus = [file("n.csv", 100, &[(45, f64::NAN)], &[(40, 49)])];
    let result = score_corpus(&corpus, &Profile::standard());
    assert_eq!(result.threshold, 1.1);
}
