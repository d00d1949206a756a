//! [`ContextNovelty`]: whether the latest few quantised values form a context this series never showed.

use serde::{Deserialize, Serialize};

/// Contexts of `len` consecutive values, each quantised to one of `levels` levels, as one bit each.
///
/// A cheap online form of CAD OSE's contextual novelty: a series whose pattern changes (new orders of
/// familiar values, a familiar level reached by an unfamiliar path) shows contexts it never showed before,
/// even when no single value is new or rare. `levels^len` bits (at most 4096, 512 bytes); nothing is
/// forgotten, so a series that keeps exploring new contexts soon knows them all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContextNovelty {
    seen: Vec<u64>,
    levels: u32,
    n_contexts: u32,
    context: u32,
    filled: u32,
    len: u32,
}

impl ContextNovelty {
    /// Largest number of contexts (bits) kept.
    pub(crate) const MAX_CONTEXTS: u32 = 4096;

    pub(crate) fn new(levels: u32, len: u32) -> Self {
        let levels = levels.clamp(2, 64);
        let mut n_contexts = 1u32;
        let mut used_len = 0;
        while used_len < len.max(1) && n_contexts.saturating_mul(levels) <= Self::MAX_CONTEXTS {
            n_contexts *= levels;
            used_len += 1;
        }
        Self {
            seen: vec![0; (n_contexts as usize).div_ceil(64)],
            levels,
            n_contexts,
            context: 0,
            filled: 0,
            len: used_len.max(1),
        }
    }

    /// The level (in `0..levels`) of `x` within `[low, high]`; the lowest level when the range is empty.
    pub(crate) fn level_of(&self, x: f64, low: f64, high: f64) -> u32 {
        let range = high - low;
        if !(range > 0.0 && range.is_finite()) {
            return 0;
        }
        let position = ((x - low) / range * f64::from(self.levels)).floor();
        position.clamp(0.0, f64::from(self.levels - 1)) as u32
    }

    /// Records the latest level; 1 when the context it closes was never seen before, else 0.
    pub(crate) fn observe(&mut self, level: u32) -> f64 {
        self.context = (self.context * self.levels + level.min(self.levels - 1)) % self.n_contexts;
        self.filled = self.filled.saturating_add(1);
        if self.filled < self.len {
            return 0.0;
        }
        let (word, bit) = ((self.context / 64) as usize, self.context % 64);
        let Some(slot) = self.seen.get_mut(word) else { return 0.0 };
        let novel = *slot & (1 << bit) == 0;
        *slot |= 1 << bit;
        if novel { 1.0 } else { 0.0 }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.seen.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_pattern_becomes_familiar_and_a_new_order_is_novel() {
        let mut context = ContextNovelty::new(8, 3);
        let pattern = [0, 2, 4, 6];
        let mut novel = 0.0;
        for step in 0..400 {
            novel += context.observe(pattern[step % 4]);
        }
        assert_eq!(novel, 4.0);
        // The same levels, in another order.
        let novel: f64 = [6, 4, 2, 0].iter().map(|&level| context.observe(level)).sum();
        assert!(novel >= 2.0, "{novel}");
    }

    #[test]
    fn levels_cover_the_range_and_clamp_outside() {
        let context = ContextNovelty::new(16, 3);
        assert_eq!(context.level_of(0.0, 0.0, 16.0), 0);
        assert_eq!(context.level_of(15.9, 0.0, 16.0), 15);
        assert_eq!(context.level_of(99.0, 0.0, 16.0), 15);
        assert_eq!(context.level_of(-5.0, 0.0, 16.0), 0);
        assert_eq!(context.level_of(3.0, 1.0, 1.0), 0);
        assert_eq!(ContextNovelty::new(64, 5).heap_bytes(), 512);
    }
}
