//! [`GrowingHistogram`]: a fixed number of equal-width bins whose range doubles to take in new values.

use serde::{Deserialize, Serialize};

use crate::stats::is_positive;

/// A value histogram with `n_bins` equal-width bins and exponentially decaying counts.
///
/// The covered range `[low, low + n_bins · width)` is never known in advance: it starts at the
/// first two distinct values and, whenever a value falls outside it, the bin width doubles (pairs
/// of bins merge) and the range extends on that side, until the value fits. So bins are always
/// between 1/(2·n_bins) and 1/n_bins of the range seen so far (or less, early on). Counts decay
/// by `1 − decay` per inserted value, implemented with a growing increment so an insert is O(1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct GrowingHistogram {
    counts: Vec<f32>,
    low: f64,
    width: f64,
    first: f64,
    increment: f32,
    total: f32,
    decay_keep: f32,
    n_seen: u32,
}

impl GrowingHistogram {
    pub(crate) fn new(n_bins: usize, decay: f64) -> Self {
        let n_bins = n_bins.max(4) & !1;
        Self {
            counts: vec![0.0; n_bins],
            low: 0.0,
            width: 0.0,
            first: 0.0,
            increment: 1.0,
            total: 0.0,
            decay_keep: (1.0 - decay.clamp(0.0, 0.5)) as f32,
            n_seen: 0,
        }
    }

    fn n_bins(&self) -> usize {
        self.counts.len()
    }

    /// The bin of `x`, or `None` when it lies outside the covered range (or no range exists yet).
    fn bin_of(&self, x: f64) -> Option<usize> {
        if !(is_positive(self.width) && self.width.is_finite() && self.low.is_finite()) {
            return None;
        }
        let position = ((x - self.low) / self.width).floor();
        (position >= 0.0 && position < self.n_bins() as f64).then_some(position as usize)
    }

    /// Fraction of the (decayed) mass in bins no more populated than `x`'s bin: a p-value for
    /// "a value this unusual". Values outside the range, or before any range exists, get `None`.
    pub(crate) fn rarity_p(&self, x: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let bin = self.bin_of(x)?;
        let own = self.counts[bin];
        // Branch-free so the loop vectorises: this is the ensemble's hottest loop.
        let mass: f32 = self.counts.iter().map(|&c| if c <= own { c } else { 0.0 }).sum();
        Some(f64::from(mass / self.total).clamp(0.0, 1.0))
    }

    /// The covered range's width.
    pub(crate) fn span(&self) -> f64 {
        self.width * self.n_bins() as f64
    }

    pub(crate) fn insert(&mut self, x: f64) {
        self.n_seen = self.n_seen.saturating_add(1);
        if self.n_seen == 1 {
            self.first = x;
            self.total += self.increment;
            return;
        }
        if !is_positive(self.width) {
            if x == self.first || !(x - self.first).is_finite() {
                self.total += self.increment;
                return;
            }
            // Two distinct values: center them in a range 4× their distance.
            let distance = (x - self.first).abs();
            let width = 4.0 * distance / self.n_bins() as f64;
            let low = self.first.min(x) - 1.5 * distance;
            if !(is_positive(width) && width.is_finite() && low.is_finite()) {
                // Too close (underflow) or too far apart (overflow) to bin: count it, keep waiting.
                self.total += self.increment;
                return;
            }
            self.width = width;
            self.low = low;
            let pending = self.total;
            if let Some(bin) = self.bin_of(self.first) {
                self.counts[bin] = pending;
            }
        }
        let mut doublings = 0;
        while self.bin_of(x).is_none() {
            // f64 spans at most ~2100 doublings; beyond that (or once the range overflows) the
            // value cannot be binned and is skipped rather than looping forever.
            if doublings > 2_200 || !(self.span() * 4.0).is_finite() {
                return;
            }
            self.grow(x < self.low);
            doublings += 1;
        }
        if let Some(bin) = self.bin_of(x) {
            self.counts[bin] += self.increment;
            self.total += self.increment;
        }
        self.increment /= self.decay_keep;
        if self.increment > 1e6 {
            let scale = 1.0 / self.increment;
            self.counts.iter_mut().for_each(|c| *c *= scale);
            self.total *= scale;
            self.increment = 1.0;
        }
    }

    /// Doubles the bin width, extending the range downward (`extend_low`) or upward.
    fn grow(&mut self, extend_low: bool) {
        let n_bins = self.n_bins();
        let half = n_bins / 2;
        if extend_low {
            // Old bins 2i, 2i+1 merge into bin half + i; walk upward so sources are read first.
            for idx in (0..half).rev() {
                let merged = self.counts[2 * idx] + self.counts[2 * idx + 1];
                self.counts[half + idx] = merged;
            }
            self.counts[..half].iter_mut().for_each(|c| *c = 0.0);
            self.low -= self.span();
        } else {
            for idx in 0..half {
                let merged = self.counts[2 * idx] + self.counts[2 * idx + 1];
                self.counts[idx] = merged;
            }
            self.counts[half..].iter_mut().for_each(|c| *c = 0.0);
        }
        self.width *= 2.0;
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.counts.capacity() * size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_values_are_not_rare_and_new_levels_are() {
        let mut histogram = GrowingHistogram::new(32, 0.0);
        for step in 0..1_000 {
            histogram.insert(f64::from(step % 10));
        }
        assert!(histogram.rarity_p(5.0).unwrap_or(0.0) > 0.5);
        histogram.insert(100.0);
        let rare = histogram.rarity_p(100.0).unwrap_or(1.0);
        assert!(rare < 0.01, "{rare}");
        assert!(histogram.rarity_p(1e9).is_none());
        assert!(histogram.span() >= 100.0);
    }

    #[test]
    fn grows_downward_and_keeps_mass() {
        let mut histogram = GrowingHistogram::new(8, 0.0);
        for x in [10.0, 11.0, 12.0, -50.0, 13.0] {
            histogram.insert(x);
        }
        let mass: f32 = histogram.counts.iter().sum();
        assert!((mass - 5.0).abs() < 1e-4);
        assert!(histogram.rarity_p(-50.0).is_some());
    }
}
