//! The series store's recent history across restarts (issue 15, item 4): diagnosis ranks each incident's
//! series against their own baseline (the last hour by default), which a restart would otherwise empty.
//! A thinned copy of the store (`mend_observe::history`) is written through the store's acknowledged
//! path every `[learn] snapshot_every` and at a clean shutdown, and appended back at start before any
//! replica, scrape or remote write runs. A body this mend cannot read is refused (an event and a
//! warning) and the baselines are learnt again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use mend_observe::history::{self, HISTORY_VERSION};
use mend_observe::series::SeriesStore;
use mend_store::{JournalEntry, Snapshot, Store};
use mend_types::{Clock, EventSink, Timestamp};

/// The store key of the series history.
const SERIES_KEY: &str = "series";
/// One point per series and step is kept: enough for a baseline's median and spread, a tenth of what a
/// series sampled every second holds.
const STEP: Duration = Duration::from_secs(10);
/// Points kept at most (16 bytes each: 16 MB), the most recently seen series first.
const MAX_POINTS: usize = 1_000_000;
/// Held while a snapshot is taken and written.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Appends the last history written to `series` (which nothing has written yet); returns the newest
/// time restored, from which remote write sends (what is older went out before the restart).
pub(crate) fn restore(
    store: &Store,
    events: &dyn EventSink,
    clock: &dyn Clock,
    series: &RwLock<SeriesStore>,
) -> anyhow::Result<Option<Timestamp>> {
    let Some(snapshot) = store.snapshot(SERIES_KEY).context("cannot read the series history")? else {
        return Ok(None);
    };
    let decoded = match history::decode(snapshot.version, &snapshot.body) {
        Ok(decoded) => decoded,
        Err(error) => {
            crate::learn::refused(
                events,
                clock,
                SERIES_KEY,
                snapshot.version,
                &error,
                "diagnosis learns the series' baselines again",
            );
            return Ok(None);
        }
    };
    // Nothing after now is restored (a clock stepped back): remote write must not wait for it.
    let now = clock.wall();
    let newest = decoded.series.iter().filter_map(|s| s.points.last().map(|p| p.at)).max().map(|at| at.min(now));
    let mut series = series.write().map_err(|_| anyhow::anyhow!("the series store's lock is poisoned"))?;
    let restored = series.restore(&decoded, now);
    tracing::info!(
        n_series = restored.n_series,
        n_points = restored.n_points,
        n_refused = restored.n_refused,
        taken_at = %snapshot.at,
        "series history restored: diagnosis keeps its baselines"
    );
    Ok(newest)
}

/// Writes the series store's history now (periodically, and at a clean shutdown).
pub(crate) async fn snapshot(store: Arc<Store>, series: Arc<RwLock<SeriesStore>>, clock: Arc<dyn Clock>) {
    let written = tokio::task::spawn_blocking(move || {
        // One snapshot at a time, taken and written in order: a periodic one still running when the
        // shutdown's is taken (aborting its task does not stop its blocking half) finishes first, so the
        // newer is written last.
        let _one_at_a_time = WRITING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = series.read().map(|series| series.history(STEP, MAX_POINTS));
        let Ok(taken) = taken else { return Err(anyhow::anyhow!("the series store's lock is poisoned")) };
        let (n_series, n_points) = (taken.series.len(), taken.n_points());
        let body = history::encode(&taken);
        drop(taken);
        let snapshot =
            Snapshot { key: SERIES_KEY.to_owned(), service: None, version: HISTORY_VERSION, at: clock.wall(), body };
        store.journal(vec![JournalEntry::Learnt(Box::new(snapshot))])?;
        Ok((n_series, n_points))
    })
    .await;
    match written {
        Ok(Ok((n_series, n_points))) => tracing::debug!(n_series, n_points, "series history written"),
        Ok(Err(error)) => tracing::warn!(error = %error, "cannot write the series history"),
        Err(error) => tracing::warn!(error = %error, "cannot write the series history"),
    }
}

/// Writes the history every `every` until the returned task is aborted.
pub(crate) fn spawn_snapshots(
    store: Arc<Store>,
    series: Arc<RwLock<SeriesStore>>,
    clock: Arc<dyn Clock>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            snapshot(store.clone(), series.clone(), clock.clone()).await;
        }
    })
}
