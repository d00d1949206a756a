//! Small streaming statistics shared by the detectors: exponential moments, the normal tail, a sorted ring.

use serde::{Deserialize, Serialize};

/// Exponentially weighted mean and variance with a bias-corrected start.
///
/// For the first `1/alpha` samples the weights are those of a plain running mean, so early
/// estimates are not dragged toward the zero initial state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ewm {
    alpha: f64,
    mean: f64,
    var: f64,
    n: u64,
}

impl Ewm {
    pub(crate) fn new(alpha: f64) -> Self {
        Self { alpha: alpha.clamp(1e-9, 1.0), mean: 0.0, var: 0.0, n: 0 }
    }

    pub(crate) fn update(&mut self, x: f64) {
        self.n = self.n.saturating_add(1);
        let rate = (1.0 / self.n as f64).max(self.alpha);
        let delta = x - self.mean;
        self.mean += rate * delta;
        // West's incremental form: stays non-negative and reduces to the sample variance for rate = 1/n.
        self.var = (1.0 - rate) * (self.var + rate * delta * delta);
    }

    pub(crate) fn mean(&self) -> f64 {
        self.mean
    }

    pub(crate) fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// Whether `x` is strictly positive (false for NaN).
pub(crate) fn is_positive(x: f64) -> bool {
    x > 0.0
}

/// Clips `x` into `[-limit, limit]`; a NaN limit leaves `x` unchanged (never panics, unlike `clamp`).
pub(crate) fn clip(x: f64, limit: f64) -> f64 {
    x.max(-limit).min(limit)
}

/// Complementary error function, fractional error below 1.2e-7 everywhere (Numerical Recipes' `erfcc`).
pub(crate) fn erfc(x: f64) -> f64 {
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

/// Upper tail of the standard normal, `P(Z > z)`.
pub(crate) fn normal_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Maps a tail probability to a score in `[0, 1]`: `log(p + 1e-10) / log(1e-10)`, Numenta's log-likelihood.
///
/// 0.5 corresponds to p ≈ 1e-5, 0.3 to p = 1e-3.
pub(crate) fn log_tail_score(tail: f64) -> f64 {
    const FLOOR: f64 = 1e-10;
    ((tail.clamp(0.0, 1.0) + FLOOR).ln() / FLOOR.ln()).clamp(0.0, 1.0)
}

/// A fixed-capacity window of the most recent values, kept in arrival order and in sorted order.
///
/// Insert and evict are O(capacity) memmoves on small arrays; median and MAD are O(capacity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SortedRing {
    capacity: usize,
    arrival: Vec<f64>,
    head: usize,
    sorted: Vec<f64>,
}

impl SortedRing {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { capacity, arrival: Vec::with_capacity(capacity), head: 0, sorted: Vec::with_capacity(capacity) }
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Adds a finite value, evicting the oldest once full.
    pub(crate) fn push(&mut self, x: f64) {
        if self.arrival.len() < self.capacity {
            self.arrival.push(x);
        } else {
            let old = std::mem::replace(&mut self.arrival[self.head], x);
            self.head = (self.head + 1) % self.capacity;
            let idx = self.sorted.partition_point(|&v| v < old);
            if idx < self.sorted.len() {
                self.sorted.remove(idx);
            }
        }
        let idx = self.sorted.partition_point(|&v| v < x);
        self.sorted.insert(idx, x);
    }

    /// The median of the window (0 when empty).
    pub(crate) fn median(&self) -> f64 {
        let n = self.sorted.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => self.sorted[n / 2],
            _ => 0.5 * (self.sorted[n / 2 - 1] + self.sorted[n / 2]),
        }
    }

    /// The `q` quantile of the window (0 ≤ q ≤ 1), interpolated linearly between order statistics as
    /// numpy and R's type 7 do (0 when empty).
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return 0.0;
        }
        let position = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let below = position.floor() as usize;
        let above = (below + 1).min(n - 1);
        let fraction = position - below as f64;
        self.sorted[below] + (self.sorted[above] - self.sorted[below]) * fraction
    }

    /// Median absolute deviation from `center`, by a merge walk outward from the center (O(n)).
    pub(crate) fn mad(&self, center: f64) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return 0.0;
        }
        // Two pointers walking outward from the center produce |x - center| in increasing order.
        let split = self.sorted.partition_point(|&v| v < center);
        let (mut left, mut right) = (split, split);
        let target = (n - 1) / 2;
        let mut last = 0.0;
        let mut previous = 0.0;
        for taken in 0..=(n / 2) {
            let left_dist = if left > 0 { center - self.sorted[left - 1] } else { f64::INFINITY };
            let right_dist = if right < n { self.sorted[right] - center } else { f64::INFINITY };
            previous = last;
            if left_dist <= right_dist {
                last = left_dist;
                left -= 1;
            } else {
                last = right_dist;
                right += 1;
            }
            if taken == target && n % 2 == 1 {
                return last;
            }
        }
        if n % 2 == 1 { last } else { 0.5 * (previous + last) }
    }

    /// The window's values in sorted order.
    pub(crate) fn values(&self) -> &[f64] {
        &self.sorted
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.arrival.capacity() + self.sorted.capacity()) * size_of::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewm_matches_sample_moments_during_warm_up() {
        let mut ewm = Ewm::new(0.001);
        for x in [1.0, 2.0, 3.0, 4.0] {
            ewm.update(x);
        }
        assert!((ewm.mean() - 2.5).abs() < 1e-12);
        // Population variance of 1..4 is 1.25.
        assert!((ewm.std() - 1.25f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn normal_tail_known_values() {
        for (z, expected) in
            [(0.0, 0.5), (1.0, 0.158_655_25), (3.0, 0.001_349_898), (6.0, 9.865_876e-10), (-1.0, 0.841_344_75)]
        {
            let got = normal_tail(z);
            assert!((got - expected).abs() / expected < 1e-6, "z={z}: {got} vs {expected}");
        }
    }

    #[test]
    fn sorted_ring_median_and_mad_match_brute_force() {
        let mut ring = SortedRing::new(7);
        let mut window = Vec::new();
        let mut state = 12_345u64;
        for _ in 0..200 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let x = ((state >> 33) % 50) as f64;
            ring.push(x);
            window.push(x);
            if window.len() > 7 {
                window.remove(0);
            }
            let mut sorted = window.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
            let mut dev: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
            dev.sort_by(f64::total_cmp);
            let mad = if n % 2 == 1 { dev[n / 2] } else { 0.5 * (dev[n / 2 - 1] + dev[n / 2]) };
            assert_eq!(ring.median(), median);
            assert_eq!(ring.mad(median), mad, "window {window:?}");
        }
    }
}
