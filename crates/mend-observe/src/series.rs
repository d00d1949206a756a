//! The in-memory series store: one fixed-capacity ring of (time, value) points per labelled series.
//!
//! Memory is bounded three ways: points per series (the ring's capacity), age (points older than the
//! retention are dropped on append), and the number of series (new series beyond the limit are refused
//! and counted, so a cardinality explosion cannot grow the store). Label strings are interned.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mend_types::Timestamp;

/// A series identity: metric name plus label pairs, sorted by label name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    name: Arc<str>,
    pairs: Arc<[(Arc<str>, Arc<str>)]>,
}

impl Labels {
    /// The metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of label `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    /// Label pairs, sorted by name.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl fmt::Display for Labels {
    /// Prometheus notation: `name{a="1",b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.pairs.is_empty() {
            f.write_str("{")?;
            for (idx, (key, value)) in self.pairs.iter().enumerate() {
                if idx > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{key}={value:?}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When.
    pub at: Timestamp,
    /// The value.
    pub value: f64,
}

/// Limits that bound the store's memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Points kept per series.
    pub points_per_series: usize,
    /// Points older than this (relative to the newest append) are dropped.
    pub retention: Duration,
    /// Series kept in total; appends that would create more are refused.
    pub max_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // An hour at one sample a second; 100k series stay far below a gigabyte.
        Self { points_per_series: 3600, retention: Duration::from_secs(3600), max_series: 100_000 }
    }
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// Creating the series would exceed `max_series`.
    TooManySeries {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManySeries { limit } => write!(f, "series limit of {limit} reached; new series dropped"),
        }
    }
}

impl std::error::Error for AppendError {}

struct Series {
    labels: Labels,
    points: VecDeque<Point>,
}

/// The store.
pub struct SeriesStore {
    limits: Limits,
    strings: HashSet<Arc<str>>,
    index: HashMap<Labels, usize>,
    series: Vec<Series>,
    dropped_series: u64,
}

impl SeriesStore {
    /// An empty store with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, strings: HashSet::new(), index: HashMap::new(), series: Vec::new(), dropped_series: 0 }
    }

    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(existing) = self.strings.get(text) {
            return existing.clone();
        }
        let interned: Arc<str> = Arc::from(text);
        self.strings.insert(interned.clone());
        interned
    }

    /// Builds interned labels for `name` and `pairs` (any order; later duplicates of a key win).
    pub fn labels(&mut self, name: &str, pairs: &[(&str, &str)]) -> Labels {
        let mut sorted: Vec<(&str, &str)> = pairs.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = later.1;
                true
            } else {
                false
            }
        });
        let pairs: Vec<(Arc<str>, Arc<str>)> =
            sorted.into_iter().map(|(k, v)| (self.intern(k), self.intern(v))).collect();
        Labels { name: self.intern(name), pairs: pairs.into() }
    }

    /// Appends a point. Points older than the series' newest are accepted only if not older than the
    /// retention; they are kept in arrival order.
    pub fn append(&mut self, labels: &Labels, at: Timestamp, value: f64) -> Result<(), AppendError> {
        let idx = match self.index.get(labels) {
            Some(&idx) => idx,
            None => {
                if self.series.len() >= self.limits.max_series {
                    self.dropped_series += 1;
                    return Err(AppendError::TooManySeries { limit: self.limits.max_series });
                }
                self.series.push(Series { labels: labels.clone(), points: VecDeque::new() });
                self.index.insert(labels.clone(), self.series.len() - 1);
                self.series.len() - 1
            }
        };
        let limits = self.limits;
        let series = &mut self.series[idx];
        let oldest_kept = at.saturating_sub(limits.retention);
        while series.points.front().is_some_and(|p| p.at < oldest_kept)
            || series.points.len() >= limits.points_per_series
        {
            series.points.pop_front();
        }
        series.points.push_back(Point { at, value });
        Ok(())
    }

    /// Points of the series with exactly `labels` between `start` and `end` (inclusive).
    pub fn range(&self, labels: &Labels, start: Timestamp, end: Timestamp) -> Vec<Point> {
        let Some(&idx) = self.index.get(labels) else { return Vec::new() };
        self.series[idx].points.iter().filter(|p| p.at >= start && p.at <= end).copied().collect()
    }

    /// The newest point of the series with exactly `labels`.
    pub fn latest(&self, labels: &Labels) -> Option<Point> {
        self.index.get(labels).and_then(|&idx| self.series[idx].points.back().copied())
    }

    /// Series whose name is `name` and whose labels include every pair of `matching`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Labels> + 'a {
        self.series
            .iter()
            .map(|series| &series.labels)
            .filter(move |labels| labels.name() == name && matching.iter().all(|(k, v)| labels.get(k) == Some(*v)))
    }

    /// Number of series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Appends refused because of the series limit, since the store was made.
    pub fn dropped_series(&self) -> u64 {
        self.dropped_series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn rings_keep_the_newest_points() {
        let mut store =
            SeriesStore::new(Limits { points_per_series: 3, retention: Duration::from_secs(100), max_series: 10 });
        let labels = store.labels("rss_bytes", &[("service", "web"), ("replica", "0")]);
        for secs in 0..5 {
            store.append(&labels, at(secs), secs as f64).expect("within limits");
        }
        let values: Vec<f64> = store.range(&labels, at(0), at(10)).iter().map(|p| p.value).collect();
        assert_eq!(values, [2.0, 3.0, 4.0]);
        assert_eq!(store.latest(&labels).map(|p| p.value), Some(4.0));
    }

    #[test]
    fn retention_drops_old_points() {
        let mut store =
            SeriesStore::new(Limits { points_per_series: 100, retention: Duration::from_secs(10), max_series: 10 });
        let labels = store.labels("x", &[]);
        for secs in [0, 5, 9, 15, 20] {
            store.append(&labels, at(secs), 1.0).expect("within limits");
        }
        let times: Vec<i64> = store.range(&labels, at(0), at(100)).iter().map(|p| p.at.as_millis() / 1000).collect();
        assert_eq!(times, [15, 20]);
    }

    #[test]
    fn the_series_limit_refuses_new_series_and_counts_them() {
        let mut store =
            SeriesStore::new(Limits { points_per_series: 10, retention: Duration::from_secs(10), max_series: 2 });
        for idx in 0..5 {
            let labels = store.labels("x", &[("id", &idx.to_string())]);
            let result = store.append(&labels, at(0), 1.0);
            assert_eq!(result.is_ok(), idx < 2);
        }
        assert_eq!(store.len(), 2);
        assert_eq!(store.dropped_series(), 3);
        // Existing series still accept points.
        let first = store.labels("x", &[("id", "0")]);
        assert!(store.append(&first, at(1), 2.0).is_ok());
    }

    #[test]
    fn labels_are_sorted_interned_and_selectable() {
        let mut store = SeriesStore::new(Limits::default());
        let a = store.labels("cpu", &[("service", "web"), ("replica", "1")]);
        let b = store.labels("cpu", &[("replica", "1"), ("service", "web")]);
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.name, &b.name));
        assert_eq!(a.to_string(), "cpu{replica=\"1\",service=\"web\"}");
        let c = store.labels("cpu", &[("service", "db"), ("replica", "0")]);
        store.append(&a, at(0), 1.0).expect("within limits");
        store.append(&c, at(0), 1.0).expect("within limits");
        let web: Vec<String> = store.select("cpu", &[("service", "web")]).map(ToString::to_string).collect();
        assert_eq!(web, ["cpu{replica=\"1\",service=\"web\"}"]);
        assert_eq!(store.select("cpu", &[]).count(), 2);
    }
}
