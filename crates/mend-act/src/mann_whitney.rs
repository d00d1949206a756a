//! The Mann-Whitney U test (Wilcoxon rank-sum) on two latency samples, as Kayenta judges a canary:
//! ranks with ties averaged, the normal approximation with tie correction and continuity correction
//! (scipy's `mannwhitneyu(method="asymptotic")`). Pure and allocation-light: samples are bounded by the
//! proxy's reservoir.

/// The outcome of a one-sided test "the canary's values are larger than the baseline's".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the canary sample (the number of (canary, baseline) pairs where the canary's is larger, ties
    /// counting one half).
    pub u_canary: f64,
    /// One-sided p-value of "canary larger".
    pub p_greater: f64,
}

/// Tests whether `canary` is stochastically greater than `baseline`. None when either sample is empty or
/// holds a NaN.
pub fn mann_whitney_greater(canary: &[f64], baseline: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (canary.len(), baseline.len());
    if n1 == 0 || n2 == 0 || canary.iter().chain(baseline).any(|value| value.is_nan()) {
        return None;
    }
    // (value, from the canary) sorted by value; ties get the mean of their ranks.
    let mut all: Vec<(f64, bool)> =
        canary.iter().map(|value| (*value, true)).chain(baseline.iter().map(|value| (*value, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_sum_canary = 0.0;
    let mut tie_term = 0.0; // Σ (t³ - t) over groups of ties
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && all[end].0 == all[start].0 {
            end += 1;
        }
        let ties = (end - start) as f64;
        // Ranks start + 1 ..= end, averaged.
        let rank = (start + 1 + end) as f64 / 2.0;
        rank_sum_canary += rank * all[start..end].iter().filter(|(_, from_canary)| *from_canary).count() as f64;
        tie_term += ties * ties * ties - ties;
        start = end;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u_canary = rank_sum_canary - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let variance = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    let p_greater = if variance <= 0.0 {
        // Every value tied: no evidence either way.
        1.0
    } else {
        // Continuity correction towards the mean, as scipy does.
        let z = (u_canary - mean - 0.5) / variance.sqrt();
        normal_tail(z)
    };
    Some(MannWhitney { u_canary, p_greater: p_greater.clamp(0.0, 1.0) })
}

/// Upper tail of the standard normal, `P(Z > z)`.
fn normal_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function, fractional error below 1.2e-7 (Numerical Recipes' `erfcc`; the same as
/// mend-detect's, which act may not depend on).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let result = t * poly.exp();
    if x >= 0.0 { result } else { 2.0 - result }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from scipy 1.17.1:
    /// `mannwhitneyu(canary, baseline, alternative="greater", method="asymptotic", use_continuity=True)`.
    #[test]
    fn matches_scipy() {
        let check = |canary: &[f64], baseline: &[f64], u: f64, p: f64| {
            let result = mann_whitney_greater(canary, baseline).expect("samples");
            assert_eq!(result.u_canary, u);
            assert!((result.p_greater - p).abs() < 1e-6, "p {} against scipy's {p}", result.p_greater);
        };
        // Ties across and within the samples.
        check(
            &[2.0, 3.0, 3.0, 4.0, 6.0, 7.0, 7.0, 8.0, 9.0, 9.0],
            &[1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 6.0],
            67.0,
            0.038_537_312_412_883_22,
        );
        // Overlapping ranges, no ties.
        let baseline: Vec<f64> = (0..30).map(|i| 10.0 + f64::from(i) * 0.5).collect();
        let canary: Vec<f64> = (0..25).map(|i| 12.0 + f64::from(i) * 0.5).collect();
        check(&canary, &baseline, 412.5, 0.265_757_059_835_784_6);
        // The same sample: no evidence.
        let same = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        check(&same, &same, 32.0, 0.521_063_189_889_179_5);
    }

    #[test]
    fn a_slower_sample_is_significant_and_a_faster_one_is_not() {
        let baseline: Vec<f64> = (0..200).map(|i| 5.0 + f64::from(i % 17) * 0.1).collect();
        let slower: Vec<f64> = baseline.iter().map(|value| value * 1.5).collect();
        let faster: Vec<f64> = baseline.iter().map(|value| value * 0.7).collect();
        assert!(mann_whitney_greater(&slower, &baseline).expect("samples").p_greater < 1e-6);
        assert!(mann_whitney_greater(&faster, &baseline).expect("samples").p_greater > 0.99);
    }

    #[test]
    fn degenerate_samples_give_no_verdict_or_no_evidence() {
        assert_eq!(mann_whitney_greater(&[], &[1.0]), None);
        assert_eq!(mann_whitney_greater(&[1.0], &[]), None);
        assert_eq!(mann_whitney_greater(&[f64::NAN], &[1.0]), None);
        assert_eq!(mann_whitney_greater(&[3.0, 3.0], &[3.0, 3.0]).map(|r| r.p_greater), Some(1.0));
    }
}
