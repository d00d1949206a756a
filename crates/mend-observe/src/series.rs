//! The in-memory series store: per labelled series a bounded ring of (time, value) points, compressed
//! in chunks (see [`crate::chunk`]).
//!
//! Memory is bounded three ways: points per series, age (points older than the retention, relative to
//! the newest append, are no longer read and leave memory a whole chunk at a time), and the number of
//! series (new series beyond the limit are refused and counted, so a cardinality explosion cannot grow
//! the store). Label strings are interned.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mend_types::Timestamp;

use crate::chunk::CompressedPoints;

pub use mend_query::{is_stale_marker, stale_marker};

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
    /// Points kept per series (memory holds up to one chunk more until it can leave whole).
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

/// The store.
pub struct SeriesStore {
    limits: Limits,
    strings: HashSet<Arc<str>>,
    series: HashMap<Labels, CompressedPoints>,
    /// Series by metric name: almost every query selects by name.
    by_name: HashMap<Arc<str>, Vec<Labels>>,
    dropped_series: u64,
}

impl SeriesStore {
    /// An empty store with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, strings: HashSet::new(), series: HashMap::new(), by_name: HashMap::new(), dropped_series: 0 }
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

    /// Makes room for `additional` new series (and as many new strings) at once: grown one insert at a
    /// time, the index rehashed everything it held at every doubling, and half a million series from one
    /// scrape held the store's lock for seconds at the last ones.
    pub fn reserve(&mut self, additional: usize) {
        let room = additional.min(self.limits.max_series.saturating_sub(self.series.len()));
        self.series.reserve(room);
        self.strings.reserve(room);
    }

    /// Appends a point. Points are kept in arrival order; the ring drops the oldest beyond the capacity
    /// and points older than the retention (relative to the point appended).
    pub fn append(&mut self, labels: &Labels, at: Timestamp, value: f64) -> Result<(), AppendError> {
        let limits = self.limits;
        let points = match self.series.get_mut(labels) {
            Some(points) => points,
            None => {
                if self.series.len() >= limits.max_series {
                    self.dropped_series += 1;
                    return Err(AppendError::TooManySeries { limit: limits.max_series });
                }
                self.by_name.entry(labels.name.clone()).or_default().push(labels.clone());
                self.series.entry(labels.clone()).or_default()
            }
        };
        let keep = limits.points_per_series.max(1);
        let oldest_kept = at.saturating_sub(limits.retention).as_millis();
        points.drop_front_chunks(|held, count, newest| held - count >= keep || newest < oldest_kept);
        let chunk_points = u16::try_from(keep).unwrap_or(u16::MAX);
        points.push(at.as_millis(), value, chunk_points);
        Ok(())
    }

    /// The points of one series that are still retained, within `[start, end]`.
    fn retained(&self, points: &CompressedPoints, start: Timestamp, end: Timestamp) -> Vec<Point> {
        let Some((newest, _)) = points.last() else { return Vec::new() };
        let keep = self.limits.points_per_series.max(1);
        let oldest_kept = Timestamp::from_millis(newest).saturating_sub(self.limits.retention);
        let start = start.max(oldest_kept);
        points
            .range(points.len().saturating_sub(keep), start.as_millis(), end.as_millis())
            .into_iter()
            .map(|(at, value)| Point { at: Timestamp::from_millis(at), value })
            .collect()
    }

    /// Points of the series with exactly `labels` between `start` and `end` (inclusive).
    pub fn range(&self, labels: &Labels, start: Timestamp, end: Timestamp) -> Vec<Point> {
        let Some(points) = self.series.get(labels) else { return Vec::new() };
        self.retained(points, start, end)
    }

    /// The newest point of the series with exactly `labels`.
    pub fn latest(&self, labels: &Labels) -> Option<Point> {
        let (at, value) = self.series.get(labels)?.last()?;
        Some(Point { at: Timestamp::from_millis(at), value })
    }

    /// Series whose name is `name` and whose labels include every pair of `matching`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Labels> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter(move |labels| matching.iter().all(|(k, v)| labels.get(k) == Some(*v)))
    }

    /// Ends the series with exactly `labels` with a staleness marker at `at`, unless it has none or has
    /// ended already.
    pub fn end_series(&mut self, labels: &Labels, at: Timestamp) {
        if self.latest(labels).is_some_and(|point| !is_stale_marker(point.value)) {
            let _ = self.append(labels, at, stale_marker());
        }
    }

    /// Ends every series whose labels include `key="value"` (whatever its name) with a staleness
    /// marker at `at` (a service that went away); returns how many it ended.
    pub fn end_matching(&mut self, key: &str, value: &str, at: Timestamp) -> usize {
        let matching: Vec<Labels> =
            self.series.keys().filter(|labels| labels.get(key) == Some(value)).cloned().collect();
        let mut n_ended = 0;
        for labels in &matching {
            if self.latest(labels).is_some_and(|point| !is_stale_marker(point.value)) {
                self.end_series(labels, at);
                n_ended += 1;
            }
        }
        n_ended
    }

    /// Whether any series' newest point is older than `now` minus the retention: what [`sweep`] would
    /// drop. A read-only scan, so that the sweep's write lock is taken only when there is work.
    ///
    /// [`sweep`]: Self::sweep
    pub fn has_stale(&self, now: Timestamp) -> bool {
        let oldest_kept = now.saturating_sub(self.limits.retention).as_millis();
        self.series.values().any(|points| points.last().is_none_or(|(at, _)| at < oldest_kept))
    }

    /// Drops series whose newest point is older than `now` minus the retention; returns how many. Only
    /// the names and strings of what it dropped are revisited: with half a million live series and none
    /// stale, it is one scan, not a rebuild of every index.
    pub fn sweep(&mut self, now: Timestamp) -> usize {
        let oldest_kept = now.saturating_sub(self.limits.retention).as_millis();
        let stale: Vec<Labels> = self
            .series
            .iter()
            .filter(|(_, points)| points.last().is_none_or(|(at, _)| at < oldest_kept))
            .map(|(labels, _)| labels.clone())
            .collect();
        if stale.is_empty() {
            return 0;
        }
        for labels in &stale {
            self.series.remove(labels);
        }
        let series = &self.series;
        let names: HashSet<&Arc<str>> = stale.iter().map(|labels| &labels.name).collect();
        for name in names {
            if let Some(members) = self.by_name.get_mut(name) {
                members.retain(|labels| series.contains_key(labels));
                if members.is_empty() {
                    self.by_name.remove(name);
                }
            }
        }
        // A string may still be used by a series that was kept: collect what is in use only when some of
        // the dropped series' strings are candidates.
        let candidates: HashSet<&str> = stale
            .iter()
            .flat_map(|labels| {
                std::iter::once(&*labels.name).chain(labels.pairs.iter().flat_map(|(k, v)| [&**k, &**v]))
            })
            .collect();
        let in_use: HashSet<&str> = self
            .series
            .keys()
            .flat_map(|labels| {
                std::iter::once(&*labels.name).chain(labels.pairs.iter().flat_map(|(k, v)| [&**k, &**v]))
            })
            .filter(|text| candidates.contains(text))
            .collect();
        let unused: Vec<Arc<str>> = candidates
            .iter()
            .filter(|text| !in_use.contains(*text))
            .filter_map(|text| self.strings.get(*text).cloned())
            .collect();
        for text in unused {
            self.strings.remove(&text);
        }
        stale.len()
    }

    /// Every series held, in no particular order (remote write walks them for new points).
    pub fn all(&self) -> impl Iterator<Item = &Labels> + '_ {
        self.series.keys()
    }

    /// Whether the series with exactly `labels` is held.
    pub fn contains(&self, labels: &Labels) -> bool {
        self.series.contains_key(labels)
    }

    /// Number of series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The limits it was made with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends refused because of the series limit, since the store was made.
    pub fn dropped_series(&self) -> u64 {
        self.dropped_series
    }
}

impl mend_query::Storage for SeriesStore {
    fn select(&self, matchers: &[mend_query::LabelMatcher], start_ms: i64, end_ms: i64) -> Vec<mend_query::Series> {
        let name = matchers
            .iter()
            .find(|m| m.name() == mend_query::METRIC_NAME && m.op() == mend_query::MatchOp::Equal)
            .map(|m| m.value());
        let matches = |labels: &Labels| {
            matchers.iter().all(|matcher| {
                // A missing label matches as the empty string, as in Prometheus.
                let value = if matcher.name() == mend_query::METRIC_NAME {
                    labels.name()
                } else {
                    labels.get(matcher.name()).unwrap_or("")
                };
                matcher.matches_value(value)
            })
        };
        let (start, end) = (Timestamp::from_millis(start_ms), Timestamp::from_millis(end_ms));
        let candidates: Box<dyn Iterator<Item = &Labels>> = match name {
            Some(name) => Box::new(self.by_name.get(name).into_iter().flatten()),
            None => Box::new(self.series.keys()),
        };
        // Labels first: points are decoded only for the series that match.
        candidates
            .filter(|labels| matches(labels))
            .filter_map(|labels| {
                let points = self.retained(self.series.get(labels)?, start, end);
                (!points.is_empty()).then_some((labels, points))
            })
            .map(|(labels, points)| mend_query::Series {
                labels: mend_query::Labels::new(
                    std::iter::once((mend_query::METRIC_NAME, labels.name())).chain(labels.pairs()),
                ),
                points: points.iter().map(|p| (p.at.as_millis(), p.value)).collect(),
            })
            .collect()
    }
}

/// Reads a shared store for a query, taking its lock once per selector rather than for the whole
/// evaluation (writers — replica sampling, scrapes — wait at most one copy), and within a budget of points:
/// a query that would copy more reads nothing further and reports it.
pub struct LockedStore<'a> {
    store: &'a std::sync::RwLock<SeriesStore>,
    budget: std::cell::Cell<usize>,
    exceeded: std::cell::Cell<bool>,
}

impl<'a> LockedStore<'a> {
    /// Reads `store`, copying at most `max_points` points in all.
    pub fn new(store: &'a std::sync::RwLock<SeriesStore>, max_points: usize) -> Self {
        Self { store, budget: std::cell::Cell::new(max_points), exceeded: std::cell::Cell::new(false) }
    }

    /// True when a selector would have gone over the budget (the result is then incomplete).
    pub fn exceeded(&self) -> bool {
        self.exceeded.get()
    }
}

impl mend_query::Storage for LockedStore<'_> {
    fn select(&self, matchers: &[mend_query::LabelMatcher], start_ms: i64, end_ms: i64) -> Vec<mend_query::Series> {
        if self.exceeded.get() {
            return Vec::new();
        }
        let Ok(store) = self.store.read() else { return Vec::new() };
        let selected = mend_query::Storage::select(&*store, matchers, start_ms, end_ms);
        drop(store);
        let n_points: usize = selected.iter().map(|series| series.points.len()).sum();
        if n_points > self.budget.get() {
            self.exceeded.set(true);
            return Vec::new();
        }
        self.budget.set(self.budget.get() - n_points);
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn a_removed_service_has_its_series_ended_and_no_other() {
        let mut store =
            SeriesStore::new(Limits { points_per_series: 10, retention: Duration::from_secs(100), max_series: 10 });
        let web = store.labels("rss_bytes", &[("service", "web"), ("replica", "0")]);
        let proxy = store.labels("mend_proxy_requests_total", &[("service", "web")]);
        let api = store.labels("rss_bytes", &[("service", "api"), ("replica", "0")]);
        for labels in [&web, &proxy, &api] {
            store.append(labels, at(1), 1.0).expect("within limits");
        }
        assert_eq!(store.end_matching("service", "web", at(2)), 2);
        assert!(store.latest(&web).is_some_and(|p| is_stale_marker(p.value)));
        assert!(store.latest(&proxy).is_some_and(|p| is_stale_marker(p.value)));
        assert_eq!(store.latest(&api).map(|p| p.value), Some(1.0));
        // Ended already: nothing more.
        assert_eq!(store.end_matching("service", "web", at(3)), 0);
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
    fn a_series_that_keeps_few_points_holds_few() {
        let mut store =
            SeriesStore::new(Limits { points_per_series: 10, retention: Duration::from_secs(3600), max_series: 10 });
        let labels = store.labels("x", &[]);
        for secs in 0..1000 {
            store.append(&labels, at(secs), secs as f64).expect("within limits");
        }
        assert_eq!(store.range(&labels, at(0), at(1000)).len(), 10);
        let held = store.series.get(&labels).map_or(0, CompressedPoints::len);
        assert!(held <= 20, "{held} points held for 10 kept");
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
    fn sweep_drops_series_that_stopped_and_their_strings() {
        let mut store =
            SeriesStore::new(Limits { points_per_series: 10, retention: Duration::from_secs(60), max_series: 10 });
        let old = store.labels("gone", &[("pod", "a")]);
        let live = store.labels("live", &[]);
        store.append(&old, at(0), 1.0).expect("within limits");
        store.append(&live, at(100), 1.0).expect("within limits");
        // A stopped series sharing a name and a label with a live one: only its own strings go.
        let stopped = store.labels("live", &[("job", "x"), ("pod", "b")]);
        let kept = store.labels("live", &[("job", "x")]);
        store.append(&stopped, at(0), 1.0).expect("within limits");
        store.append(&kept, at(100), 1.0).expect("within limits");
        assert!(store.has_stale(at(100)));
        assert_eq!(store.sweep(at(100)), 2);
        assert!(!store.has_stale(at(100)));
        assert_eq!(store.sweep(at(100)), 0, "nothing left to drop");
        assert_eq!(store.len(), 2);
        assert_eq!(store.select("gone", &[]).count(), 0);
        assert_eq!(store.select("live", &[]).count(), 2);
        assert!(!store.strings.contains("pod") && !store.strings.contains("a") && !store.strings.contains("b"));
        assert!(store.strings.contains("live") && store.strings.contains("job") && store.strings.contains("x"));
        assert!(!store.strings.contains("gone"));
    }

    #[test]
    fn serves_promql_queries() {
        use mend_query::{EvalOptions, Query, Value};
        let mut store = SeriesStore::new(Limits::default());
        for (code, per_sec) in [("200", 10.0), ("500", 2.0)] {
            let labels = store.labels("http_requests_total", &[("code", code), ("service", "web")]);
            for secs in 0..=60 {
                store.append(&labels, at(secs), per_sec * secs as f64).expect("within limits");
            }
        }
        let query =
            Query::parse(r#"sum(rate(http_requests_total{code=~"5.."}[30s])) / sum(rate(http_requests_total[30s]))"#)
                .expect("valid query");
        let value = query.eval_instant(&store, 60_000, &EvalOptions::default()).expect("evaluates");
        let Value::Vector(samples) = value else { panic!("a vector: {value:?}") };
        assert_eq!(samples.len(), 1);
        assert!((samples[0].value - 2.0 / 12.0).abs() < 1e-9, "{}", samples[0].value);
    }

    #[test]
    fn a_locked_store_stops_at_its_point_budget() {
        use mend_query::Storage;
        let store = std::sync::RwLock::new(SeriesStore::new(Limits::default()));
        {
            let mut guard = store.write().expect("lock");
            let labels = guard.labels("x", &[]);
            for secs in 0..100 {
                guard.append(&labels, at(secs), 1.0).expect("within limits");
            }
        }
        let matcher = [mend_query::LabelMatcher::equal(mend_query::METRIC_NAME, "x")];
        let roomy = LockedStore::new(&store, 1000);
        assert_eq!(roomy.select(&matcher, 0, 1_000_000)[0].points.len(), 100);
        assert!(!roomy.exceeded());
        let tight = LockedStore::new(&store, 50);
        assert!(tight.select(&matcher, 0, 1_000_000).is_empty());
        assert!(tight.exceeded());
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
