//! The series store's recent history kept across a restart: what diagnosis measures each series'
//! baseline against (an hour by default) would otherwise be relearnt from zero after every restart, and
//! for that hour every incident would be ranked against whatever little mend had seen since.
//!
//! [`SeriesStore::history`] copies the store out, thinned to at most one point per `step` and series
//! (the last of each step, so counters stay counters); [`encode`] and [`decode`] turn it into a compact
//! versioned body (16 bytes a point) and back, refusing a truncated or malformed one with where it went
//! wrong; [`SeriesStore::restore`] appends it to a store that has not started yet, within the retention,
//! each series ended with a staleness marker where mend stopped (so a query at "now" does not read a
//! value from before the restart as current, while a range over the last hour does).

use std::fmt;
use std::time::Duration;

use mend_types::Timestamp;

use crate::series::{Labels, Point, SeriesStore, is_stale_marker, stale_marker};

/// The format of [`encode`]'s body.
pub const HISTORY_VERSION: u32 = 1;

/// One series' thinned points.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesHistory {
    /// The metric name.
    pub name: String,
    /// Its label pairs.
    pub labels: Vec<(String, String)>,
    /// Its points, oldest first.
    pub points: Vec<Point>,
}

/// The store's history, as [`SeriesStore::history`] took it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The series, each with its points.
    pub series: Vec<SeriesHistory>,
}

impl History {
    /// Points in all.
    pub fn n_points(&self) -> usize {
        self.series.iter().map(|series| series.points.len()).sum()
    }
}

/// What [`SeriesStore::restore`] put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Series restored.
    pub n_series: usize,
    /// Points restored.
    pub n_points: usize,
    /// Series refused by the store's limits, whole or from the point the limit was met (such a series
    /// is counted in `n_series` too, with the points it got).
    pub n_refused: usize,
}

impl SeriesStore {
    /// The store's points, at most one per `step` and series (the last of each step), newest series
    /// kept first when `max_points` would be exceeded. Staleness markers are left out: a restored series
    /// gets its own at its end.
    pub fn history(&self, step: Duration, max_points: usize) -> History {
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
        let mut series: Vec<SeriesHistory> = self
            .all()
            .filter_map(|labels| {
                let mut points: Vec<Point> = Vec::new();
                for point in self.range(labels, Timestamp::from_millis(i64::MIN), Timestamp::from_millis(i64::MAX)) {
                    if is_stale_marker(point.value) {
                        continue;
                    }
                    match points.last_mut() {
                        Some(last)
                            if last.at.as_millis().div_euclid(step_ms) == point.at.as_millis().div_euclid(step_ms) =>
                        {
                            *last = point;
                        }
                        _ => points.push(point),
                    }
                }
                (!points.is_empty()).then(|| SeriesHistory {
                    name: labels.name().to_owned(),
                    labels: labels.pairs().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                    points,
                })
            })
            .collect();
        // Within the bound, the series seen most recently first (a replica long gone matters least).
        series.sort_by_key(|s| std::cmp::Reverse(s.points.last().map(|p| p.at)));
        let mut budget = max_points;
        series.retain(|s| {
            let fits = s.points.len() <= budget;
            if fits {
                budget -= s.points.len();
            }
            fits
        });
        History { series }
    }

    /// Appends `history` to this store, which must not have started (its series are older than
    /// anything appended later): points older than the retention before `now`, or after `now`, are
    /// left out; each series ends with a staleness marker just after its last point.
    pub fn restore(&mut self, history: &History, now: Timestamp) -> Restored {
        let oldest = now.saturating_sub(self.limits().retention);
        let mut restored = Restored::default();
        for series in &history.series {
            let pairs: Vec<(&str, &str)> = series.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let labels: Labels = self.labels(&series.name, &pairs);
            let mut last = None;
            let mut n_points = 0;
            // Any value a scrape can store (±Inf, NaN) comes back; a staleness marker only as the one at the end.
            for point in series.points.iter().filter(|p| p.at >= oldest && p.at <= now && !is_stale_marker(p.value)) {
                if last.is_some_and(|at| point.at <= at) {
                    continue;
                }
                if self.append(&labels, point.at, point.value).is_err() {
                    restored.n_refused += 1;
                    break;
                }
                last = Some(point.at);
                n_points += 1;
            }
            if let Some(at) = last {
                let _ = self.append(&labels, Timestamp::from_millis(at.as_millis() + 1), stale_marker());
                restored.n_series += 1;
                restored.n_points += n_points;
            }
        }
        restored
    }
}

/// Why a history body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// A format this mend does not know (a newer one's).
    Version {
        /// The body's.
        found: u32,
    },
    /// The body ends before what it announces.
    Truncated {
        /// Where, in bytes.
        offset: usize,
        /// What was being read.
        reading: &'static str,
    },
    /// A name or label is not UTF-8.
    NotUtf8 {
        /// Where, in bytes.
        offset: usize,
    },
    /// Bytes left after the last series.
    Trailing {
        /// How many.
        n_bytes: usize,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version { found } => {
                write!(f, "series history format {found}; this mend reads format {HISTORY_VERSION}")
            }
            Self::Truncated { offset, reading } => write!(f, "truncated at byte {offset} reading {reading}"),
            Self::NotUtf8 { offset } => write!(f, "a name that is not UTF-8 at byte {offset}"),
            Self::Trailing { n_bytes } => write!(f, "{n_bytes} bytes after the last series"),
        }
    }
}

impl std::error::Error for HistoryError {}

/// `history` as a body of format [`HISTORY_VERSION`] (little-endian: per series its name, labels and
/// points as 8-byte milliseconds and 8-byte values). Texts longer than 65,535 bytes are cut.
pub fn encode(history: &History) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, text: &str) {
        let mut end = text.len().min(usize::from(u16::MAX));
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.extend_from_slice(&(end as u16).to_le_bytes());
        out.extend_from_slice(&text.as_bytes()[..end]);
    }
    let mut out = Vec::with_capacity(4 + history.n_points() * 16 + history.series.len() * 64);
    let n_series = history.series.len().min(u32::MAX as usize);
    out.extend_from_slice(&(n_series as u32).to_le_bytes());
    for series in history.series.iter().take(n_series) {
        text(&mut out, &series.name);
        let n_labels = series.labels.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(n_labels as u16).to_le_bytes());
        for (key, value) in series.labels.iter().take(n_labels) {
            text(&mut out, key);
            text(&mut out, value);
        }
        let n_points = series.points.len().min(u32::MAX as usize);
        out.extend_from_slice(&(n_points as u32).to_le_bytes());
        for point in series.points.iter().take(n_points) {
            out.extend_from_slice(&point.at.as_millis().to_le_bytes());
            out.extend_from_slice(&point.value.to_bits().to_le_bytes());
        }
    }
    out
}

/// Reads a body that [`encode`] wrote with format `version`.
pub fn decode(version: u32, body: &[u8]) -> Result<History, HistoryError> {
    if version != HISTORY_VERSION {
        return Err(HistoryError::Version { found: version });
    }
    let mut reader = Reader { body, offset: 0 };
    let n_series = reader.u32("the series count")? as usize;
    // Each series takes at least 8 bytes: a count beyond that is a lie, not an allocation to make.
    let mut series = Vec::with_capacity(n_series.min(body.len() / 8));
    for _ in 0..n_series {
        let name = reader.text("a series name")?;
        let n_labels = reader.u16("a label count")?;
        let mut labels = Vec::with_capacity(usize::from(n_labels).min(reader.left() / 4));
        for _ in 0..n_labels {
            labels.push((reader.text("a label name")?, reader.text("a label value")?));
        }
        let n_points = reader.u32("a point count")? as usize;
        if n_points.saturating_mul(16) > reader.left() {
            return Err(HistoryError::Truncated { offset: reader.offset, reading: "points" });
        }
        let mut points = Vec::with_capacity(n_points);
        for _ in 0..n_points {
            let at = i64::from_le_bytes(reader.bytes::<8>("a point's time")?);
            let value = f64::from_bits(u64::from_le_bytes(reader.bytes::<8>("a point's value")?));
            points.push(Point { at: Timestamp::from_millis(at), value });
        }
        series.push(SeriesHistory { name, labels, points });
    }
    if reader.left() > 0 {
        return Err(HistoryError::Trailing { n_bytes: reader.left() });
    }
    Ok(History { series })
}

struct Reader<'a> {
    body: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.body.len() - self.offset
    }

    fn bytes<const N: usize>(&mut self, reading: &'static str) -> Result<[u8; N], HistoryError> {
        let slice = self
            .body
            .get(self.offset..self.offset + N)
            .ok_or(HistoryError::Truncated { offset: self.offset, reading })?;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        self.offset += N;
        Ok(out)
    }

    fn u16(&mut self, reading: &'static str) -> Result<u16, HistoryError> {
        Ok(u16::from_le_bytes(self.bytes::<2>(reading)?))
    }

    fn u32(&mut self, reading: &'static str) -> Result<u32, HistoryError> {
        Ok(u32::from_le_bytes(self.bytes::<4>(reading)?))
    }

    fn text(&mut self, reading: &'static str) -> Result<String, HistoryError> {
        let length = usize::from(self.u16(reading)?);
        let start = self.offset;
        let slice = self.body.get(start..start + length).ok_or(HistoryError::Truncated { offset: start, reading })?;
        self.offset += length;
        String::from_utf8(slice.to_vec()).map_err(|_| HistoryError::NotUtf8 { offset: start })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Limits;

    fn store() -> SeriesStore {
        SeriesStore::new(Limits { points_per_series: 3600, retention: Duration::from_secs(3600), max_series: 10 })
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn history_is_thinned_encoded_decoded_and_restored_within_the_retention() {
        let mut before = store();
        let cpu = before.labels("cpu", &[("service", "web"), ("replica", "0")]);
        let up = before.labels("up", &[("service", "web")]);
        for second in 0..600 {
            before.append(&cpu, at(second), second as f64).expect("room");
        }
        before.append(&up, at(0), 1.0).expect("room");
        before.end_series(&up, at(1));
        let le_inf = before.labels("bucket_bound", &[("le", "+Inf")]);
        before.append(&le_inf, at(590), f64::INFINITY).expect("room");
        let history = before.history(Duration::from_secs(10), 10_000);
        let thinned = history.series.iter().find(|s| s.name == "cpu").expect("cpu kept");
        // One point per 10 s, the last of each step; the staleness marker is not history.
        assert_eq!(thinned.points.len(), 60);
        assert_eq!(thinned.points[0], Point { at: at(9), value: 9.0 });
        assert_eq!(history.series.iter().find(|s| s.name == "up").map(|s| s.points.len()), Some(1));

        let body = encode(&history);
        assert_eq!(decode(HISTORY_VERSION, &body), Ok(history.clone()));

        // Restored 58 minutes after the last point: what is older than an hour before then is left out.
        let mut after = store();
        let restored = after.restore(&history, at(600 + 58 * 60));
        let cpu = after.labels("cpu", &[("replica", "0"), ("service", "web")]);
        let points = after.range(&cpu, at(0), at(100_000));
        let kept: Vec<&Point> = points.iter().filter(|p| !is_stale_marker(p.value)).collect();
        assert_eq!(kept.first().map(|p| p.at), Some(at(489)), "points older than an hour before now are left out");
        assert!(points.last().is_some_and(|p| is_stale_marker(p.value)), "the series ends where mend stopped");
        let le_inf = after.labels("bucket_bound", &[("le", "+Inf")]);
        assert_eq!(after.range(&le_inf, at(0), at(100_000)).first().map(|p| p.value), Some(f64::INFINITY));
        assert_eq!(restored, Restored { n_series: 2, n_points: kept.len() + 1, n_refused: 0 });
    }

    #[test]
    fn the_bound_keeps_the_most_recent_series() {
        let mut before = store();
        let old = before.labels("old", &[]);
        let new = before.labels("new", &[]);
        before.append(&old, at(0), 1.0).expect("room");
        before.append(&old, at(20), 1.0).expect("room");
        before.append(&new, at(30), 1.0).expect("room");
        before.append(&new, at(40), 1.0).expect("room");
        let history = before.history(Duration::from_secs(1), 3);
        assert_eq!(history.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["new"]);
    }

    #[test]
    fn a_bad_body_is_refused_with_where_and_why_never_a_panic() {
        let mut before = store();
        let cpu = before.labels("cpu", &[("service", "web")]);
        before.append(&cpu, at(0), 0.5).expect("room");
        let body = encode(&before.history(Duration::from_secs(1), 100));
        assert_eq!(decode(2, &body), Err(HistoryError::Version { found: 2 }));
        for cut in 0..body.len() {
            assert!(decode(HISTORY_VERSION, &body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(decode(HISTORY_VERSION, &longer), Err(HistoryError::Trailing { n_bytes: 1 }));
        // A count that promises more than the body holds allocates nothing large.
        let lying = [u32::MAX.to_le_bytes().as_slice(), &[0; 4]].concat();
        assert!(decode(HISTORY_VERSION, &lying).is_err());
        let mut bad_utf8 = body;
        bad_utf8[6] = 0xff;
        assert_eq!(decode(HISTORY_VERSION, &bad_utf8), Err(HistoryError::NotUtf8 { offset: 6 }));
    }
}
