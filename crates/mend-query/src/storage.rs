//! Where series come from: the [`Storage`] trait, and [`MemoryStorage`], a plain implementation
//! for tests, benches and small callers.

use crate::labels::LabelMatcher;
use crate::value::Series;

/// Where series come from. Times are milliseconds since the Unix epoch.
pub trait Storage {
    /// Every series matching all `matchers` (the metric name is the `__name__` label), with its
    /// points in `[start_ms, end_ms]`, oldest first. Series without points in the range may be
    /// omitted; points outside the range are ignored by the evaluator.
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Vec<Series>;
}

impl<S: Storage + ?Sized> Storage for &S {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Vec<Series> {
        (**self).select(matchers, start_ms, end_ms)
    }
}

/// A [`Storage`] over a list of series held in memory, scanned on every `select`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryStorage {
    /// The series; points must be oldest first.
    pub series: Vec<Series>,
}

impl MemoryStorage {
    /// A storage holding `series`.
    pub fn new(series: Vec<Series>) -> MemoryStorage {
        MemoryStorage { series }
    }
}

impl Storage for MemoryStorage {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Vec<Series> {
        self.series
            .iter()
            .filter(|series| matchers.iter().all(|matcher| matcher.matches(&series.labels)))
            .filter_map(|series| {
                let lo = series.points.partition_point(|&(t, _)| t < start_ms);
                let hi = series.points.partition_point(|&(t, _)| t <= end_ms);
                (lo < hi).then(|| Series { labels: series.labels.clone(), points: series.points[lo..hi].to_vec() })
            })
            .collect()
    }
}
