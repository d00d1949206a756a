//! Robust statistics of a series against its own recent baseline: median and interquartile range, a
//! floor for flat series, and the sustained deviation of what came after.

/// Scale of a standard normal distribution per unit of interquartile range.
const NORMAL_IQR: f64 = 1.349;

/// How a series behaved before an incident: its median and a robust scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    /// The median of the baseline values.
    pub median: f64,
    /// The scale deviations are measured in: the IQR over 1.349 (a standard deviation for normal data),
    /// at least `relative_floor` of the median's magnitude, and never zero.
    pub scale: f64,
    /// How many values the baseline holds.
    pub n: usize,
}

impl Baseline {
    /// The baseline of `values` (in any order; non-finite values are ignored), or `None` with fewer than
    /// `min_points` finite values.
    ///
    /// `relative_floor` keeps a flat series honest: a process's memory that did not move for an hour has
    /// an IQR of zero, and a change of a few pages would otherwise score as high as a doubling. With a
    /// floor of 1 % of the median, the few pages score near zero and the doubling 100.
    pub fn of(values: &[f64], min_points: usize, relative_floor: f64) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.len() < min_points.max(1) {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let median = quantile(&sorted, 0.5);
        let spread = (quantile(&sorted, 0.75) - quantile(&sorted, 0.25)) / NORMAL_IQR;
        let scale = spread.max(relative_floor * median.abs()).max(f64::MIN_POSITIVE);
        Some(Self { median, scale, n: sorted.len() })
    }

    /// The robust z-score of `value`: its signed distance from the median in units of the scale
    /// (clamped to ±1e12 so that sums and comparisons stay finite).
    pub fn z(&self, value: f64) -> f64 {
        ((value - self.median) / self.scale).clamp(-1e12, 1e12)
    }
}

/// The `q` quantile of sorted values, interpolated linearly (numpy's default, R's type 7).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(&last) = sorted.last() else { return f64::NAN };
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    if below >= sorted.len() {
        return last;
    }
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

/// The strongest deviation that lasted: among runs of consecutive z-scores of one sign, the largest
/// value that `persist` consecutive points all reach, with the index of the first point of that stretch.
///
/// A single spike is not sustained: with `persist = 2` it scores no more than its neighbour. When fewer
/// than `persist` values exist, all of them must agree in sign and the weakest counts.
pub fn sustained(zs: &[f64], persist: usize) -> Option<Sustained> {
    let persist = persist.max(1).min(zs.len());
    if persist == 0 {
        return None;
    }
    let mut best: Option<Sustained> = None;
    for start in 0..=(zs.len() - persist) {
        let window = &zs[start..start + persist];
        let positive = window.iter().all(|&z| z > 0.0);
        let negative = window.iter().all(|&z| z < 0.0);
        if !positive && !negative {
            continue;
        }
        let weakest = window.iter().map(|z| z.abs()).fold(f64::INFINITY, f64::min);
        let z = if positive { weakest } else { -weakest };
        if best.is_none_or(|b| weakest > b.z.abs()) {
            best = Some(Sustained { z, start });
        }
    }
    best
}

/// A sustained deviation (see [`sustained`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sustained {
    /// The signed z-score that `persist` consecutive points all reached.
    pub z: f64,
    /// Index of the first of those points.
    pub start: usize,
}

/// The index of the first point of the first run of `persist` consecutive z-scores of one sign whose
/// magnitudes all reach `threshold`: when a series became anomalous.
pub fn first_run(zs: &[f64], persist: usize, threshold: f64) -> Option<usize> {
    let persist = persist.max(1).min(zs.len());
    if persist == 0 {
        return None;
    }
    (0..=(zs.len() - persist)).find(|&start| {
        let window = &zs[start..start + persist];
        (window.iter().all(|&z| z >= threshold)) || window.iter().all(|&z| z <= -threshold)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_is_median_and_iqr_with_a_floor() {
        let baseline = Baseline::of(&[1.0, 2.0, 3.0, 4.0, 100.0], 3, 0.01).expect("enough points");
        assert_eq!(baseline.median, 3.0);
        // Quartiles 2 and 4: the outlier 100 moves neither.
        assert!((baseline.scale - 2.0 / 1.349).abs() < 1e-12);
        let flat = Baseline::of(&[500.0; 10], 3, 0.01).expect("enough points");
        assert_eq!(flat.scale, 5.0);
        assert_eq!(flat.z(1000.0), 100.0);
        let zeros = Baseline::of(&[0.0; 10], 3, 0.01).expect("enough points");
        assert!(zeros.z(1.0) > 1e9);
        assert_eq!(Baseline::of(&[1.0, f64::NAN], 2, 0.01), None);
    }

    #[test]
    fn sustained_ignores_lone_spikes_and_keeps_the_sign() {
        let check = |zs: &[f64], persist, expected: Option<(f64, usize)>| {
            assert_eq!(sustained(zs, persist).map(|s| (s.z, s.start)), expected, "{zs:?}");
        };
        check(&[0.5, 40.0, 0.2, 6.0, 7.0, 5.0], 2, Some((6.0, 3)));
        check(&[-3.0, -4.0, 1.0], 2, Some((-3.0, 0)));
        check(&[9.0, -9.0, 9.0], 2, None);
        check(&[4.0], 2, Some((4.0, 0)));
        check(&[], 2, None);
        assert_eq!(first_run(&[1.0, 5.0, 2.0, 4.0, 6.0], 2, 3.0), Some(3));
        assert_eq!(first_run(&[1.0, 5.0, 2.0], 2, 3.0), None);
    }
}
