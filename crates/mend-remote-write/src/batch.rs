//! What to send, decided without IO: which points of which series are new since the last pass
//! ([`Cursor`]), how they become size-bounded [`WriteRequest`]s ([`requests`]), and what an answer means
//! for a request ([`Verdict::of_status`]).

use std::collections::{BTreeMap, HashMap};

use mend_observe::series::{Labels, SeriesStore};
use mend_types::Timestamp;

use crate::proto::{Label, Sample, TimeSeries, WriteRequest};

/// Per series, the newest timestamp already taken for sending, so that each sample goes out once.
///
/// Its memory follows the store's: a series the store no longer holds is forgotten at the next pass.
#[derive(Debug, Default)]
pub struct Cursor {
    sent_until: HashMap<Labels, i64>,
    /// Where a series not taken from yet starts: nothing at or before it is sent.
    floor: Option<i64>,
}

/// Series that have points newer than what was taken, with where their new points start.
#[derive(Debug, Default)]
pub struct Pending {
    series: Vec<(Labels, Option<i64>)>,
}

impl Pending {
    /// Series with new points.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when nothing is new.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// Points copied out of the store for one request: per series its labels and samples, oldest first.
pub type Batch = Vec<(Labels, Vec<Sample>)>;

impl Cursor {
    /// A cursor that has taken nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cursor that has taken everything up to `floor` (points restored from before a restart).
    pub fn after(floor: Option<Timestamp>) -> Self {
        Self { sent_until: HashMap::new(), floor: floor.map(Timestamp::as_millis) }
    }

    /// Series with points newer than those taken (cheap: the newest point of each series only). Also
    /// forgets series the store no longer holds.
    pub fn pending(&mut self, store: &SeriesStore) -> Pending {
        let mut kept = HashMap::with_capacity(self.sent_until.len().min(store.len()));
        let mut series = Vec::new();
        for labels in store.all() {
            let Some(latest) = store.latest(labels) else { continue };
            let sent_until = self.sent_until.get(labels).copied().or(self.floor);
            if let Some(sent_until) = sent_until {
                kept.insert(labels.clone(), sent_until);
            }
            if sent_until.is_none_or(|sent_until| latest.at.as_millis() > sent_until) {
                series.push((labels.clone(), sent_until));
            }
        }
        self.sent_until = kept;
        Pending { series }
    }

    /// Copies up to `max_samples` new points out of `store` for the series at the front of `pending`,
    /// taking them (a series cut short stays at the front with the rest). Points that are not newer than
    /// the last one taken are skipped: the receiver refuses out-of-order samples, and one refused sample
    /// loses its whole request.
    pub fn take(&mut self, store: &SeriesStore, pending: &mut Pending, max_samples: usize) -> Batch {
        let mut batch = Batch::new();
        let mut n_samples = 0;
        let mut n_done = 0;
        for (labels, sent_until) in pending.series.iter_mut() {
            if n_samples >= max_samples {
                break;
            }
            let start = sent_until.map_or(0, |at| at.saturating_add(1));
            let points = store.range(labels, Timestamp::from_millis(start), Timestamp::from_millis(i64::MAX));
            let mut samples = Vec::new();
            let mut newest = *sent_until;
            let mut cut_short = false;
            for point in points {
                let at = point.at.as_millis();
                if newest.is_some_and(|newest| at <= newest) {
                    continue;
                }
                if n_samples + samples.len() >= max_samples {
                    cut_short = true;
                    break;
                }
                samples.push(Sample { value: point.value, timestamp: at });
                newest = Some(at);
            }
            n_samples += samples.len();
            if let Some(newest) = newest {
                self.sent_until.insert(labels.clone(), newest);
            }
            *sent_until = newest;
            if !samples.is_empty() {
                batch.push((labels.clone(), samples));
            }
            if cut_short {
                break;
            }
            n_done += 1;
        }
        pending.series.drain(..n_done);
        batch
    }
}

/// The write request for `batch`: each series' labels with `extra` added (a series' own label of the
/// same name wins, as with Prometheus' external labels), sorted by name as the protocol requires.
pub fn request(batch: &Batch, extra: &BTreeMap<String, String>) -> WriteRequest {
    let timeseries = batch
        .iter()
        .map(|(labels, samples)| {
            let mut pairs: Vec<Label> = Vec::with_capacity(1 + extra.len() + labels.pairs().count());
            pairs.push(Label { name: "__name__".to_owned(), value: labels.name().to_owned() });
            pairs.extend(labels.pairs().map(|(name, value)| Label { name: name.to_owned(), value: value.to_owned() }));
            for (name, value) in extra {
                if labels.get(name).is_none() {
                    pairs.push(Label { name: name.clone(), value: value.clone() });
                }
            }
            pairs.sort_by(|a, b| a.name.cmp(&b.name));
            TimeSeries { labels: pairs, samples: samples.clone() }
        })
        .collect();
    WriteRequest { timeseries }
}

/// Samples in a request.
pub fn n_samples(request: &WriteRequest) -> usize {
    request.timeseries.iter().map(|series| series.samples.len()).sum()
}

/// What a request's answer (or its absence) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the samples are in.
    Sent,
    /// 5xx, 429, no answer: the receiver may take it later; send it again after a back-off.
    Retry,
    /// Another 4xx: the receiver will never take this request; drop it and count its samples.
    Rejected,
}

impl Verdict {
    /// The verdict on an HTTP status.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Self::Sent,
            429 | 500..=599 => Self::Retry,
            // 1xx and 3xx are not answers a receiver gives; redirects are not followed.
            _ => Self::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mend_observe::series::Limits;

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
    }

    fn store() -> SeriesStore {
        SeriesStore::new(Limits { points_per_series: 100, retention: Duration::from_secs(3600), max_series: 100 })
    }

    fn samples(batch: &Batch) -> Vec<(String, Vec<f64>)> {
        let mut out: Vec<(String, Vec<f64>)> = batch
            .iter()
            .map(|(labels, samples)| (labels.to_string(), samples.iter().map(|s| s.value).collect()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn each_sample_is_taken_once() {
        let mut store = store();
        let a = store.labels("a", &[("service", "web")]);
        let b = store.labels("b", &[]);
        store.append(&a, at(0), 1.0).expect("room");
        store.append(&a, at(1), 2.0).expect("room");
        store.append(&b, at(0), 10.0).expect("room");
        let mut cursor = Cursor::new();
        let mut pending = cursor.pending(&store);
        let batch = cursor.take(&store, &mut pending, 100);
        assert_eq!(samples(&batch), [("a{service=\"web\"}".to_owned(), vec![1.0, 2.0]), ("b".to_owned(), vec![10.0])]);
        assert!(pending.is_empty());
        assert!(cursor.pending(&store).is_empty(), "nothing new: nothing pending");
        store.append(&a, at(2), 3.0).expect("room");
        let mut pending = cursor.pending(&store);
        assert_eq!(pending.len(), 1);
        assert_eq!(samples(&cursor.take(&store, &mut pending, 100)), [("a{service=\"web\"}".to_owned(), vec![3.0])]);
    }

    #[test]
    fn points_restored_from_before_a_restart_are_not_sent_again() {
        let mut store = store();
        let a = store.labels("a", &[]);
        store.append(&a, at(0), 1.0).expect("room");
        store.append(&a, at(1), 2.0).expect("room");
        let mut cursor = Cursor::after(Some(at(1)));
        assert!(cursor.pending(&store).is_empty(), "everything restored went out before");
        store.append(&a, at(2), 3.0).expect("room");
        let mut pending = cursor.pending(&store);
        assert_eq!(samples(&cursor.take(&store, &mut pending, 100)), [("a".to_owned(), vec![3.0])]);
    }

    #[test]
    fn a_full_request_leaves_the_rest_for_the_next() {
        let mut store = store();
        let a = store.labels("a", &[]);
        for secs in 0..5 {
            store.append(&a, at(secs), secs as f64).expect("room");
        }
        let mut cursor = Cursor::new();
        let mut pending = cursor.pending(&store);
        assert_eq!(samples(&cursor.take(&store, &mut pending, 2)), [("a".to_owned(), vec![0.0, 1.0])]);
        assert_eq!(samples(&cursor.take(&store, &mut pending, 2)), [("a".to_owned(), vec![2.0, 3.0])]);
        assert_eq!(samples(&cursor.take(&store, &mut pending, 2)), [("a".to_owned(), vec![4.0])]);
        assert!(pending.is_empty());
        assert!(cursor.take(&store, &mut pending, 2).is_empty());
    }

    #[test]
    fn out_of_order_points_are_skipped() {
        let mut store = store();
        let a = store.labels("a", &[]);
        store.append(&a, at(5), 5.0).expect("room");
        let mut cursor = Cursor::new();
        let mut pending = cursor.pending(&store);
        cursor.take(&store, &mut pending, 10);
        // Older than what was sent (a scrape with its own timestamps), then a duplicate: neither goes out.
        store.append(&a, at(3), 3.0).expect("room");
        store.append(&a, at(6), 6.0).expect("room");
        store.append(&a, at(6), 6.5).expect("room");
        let mut pending = cursor.pending(&store);
        assert_eq!(samples(&cursor.take(&store, &mut pending, 10)), [("a".to_owned(), vec![6.0])]);
    }

    #[test]
    fn series_the_store_dropped_are_forgotten() {
        let mut store = store();
        let a = store.labels("a", &[]);
        store.append(&a, at(0), 1.0).expect("room");
        let mut cursor = Cursor::new();
        let mut pending = cursor.pending(&store);
        cursor.take(&store, &mut pending, 10);
        assert_eq!(cursor.sent_until.len(), 1);
        store.sweep(at(7200));
        cursor.pending(&store);
        assert!(cursor.sent_until.is_empty());
    }

    #[test]
    fn requests_carry_sorted_labels_and_the_extra_ones() {
        let mut store = store();
        let a = store.labels("mend_replica_up", &[("service", "web"), ("host", "own"), ("Zone", "z")]);
        let batch = vec![(a, vec![Sample { value: 1.0, timestamp: 7 }])];
        let extra = BTreeMap::from([("host".to_owned(), "h1".to_owned()), ("dc".to_owned(), "x".to_owned())]);
        let request = request(&batch, &extra);
        let labels: Vec<(&str, &str)> =
            request.timeseries[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(
            labels,
            [("Zone", "z"), ("__name__", "mend_replica_up"), ("dc", "x"), ("host", "own"), ("service", "web")]
        );
        assert_eq!(n_samples(&request), 1);
    }

    #[test]
    fn verdicts() {
        for (status, verdict) in [
            (200, Verdict::Sent),
            (204, Verdict::Sent),
            (400, Verdict::Rejected),
            (401, Verdict::Rejected),
            (404, Verdict::Rejected),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (503, Verdict::Retry),
            (302, Verdict::Rejected),
        ] {
            assert_eq!(Verdict::of_status(status), verdict, "status {status}");
        }
    }
}
