//! Snapshots of what the detect stage learnt: every detector attachment's and forecast's per-series
//! state, so that a restarted mend goes on detecting without a warm-up.
//!
//! Compact (bincode, with the detectors' bounded state) and versioned: a snapshot written in a newer
//! format, or one that does not decode, is refused with an error (the caller says so and relearns),
//! never a panic. An attachment's state is taken back only by an attachment configured exactly alike
//! (the same criterion a reload uses to keep it).

use mend_config::{Detect, Forecast};
use mend_detect::alerting::LabelSet;
use mend_detect::attach::{DetectorBankState, ForecastBankState};
use serde::{Deserialize, Serialize};

use crate::Detection;

/// The format version of [`Detection::snapshot`].
pub const DETECT_SNAPSHOT_VERSION: u32 = 1;

/// Largest snapshot decoded: a bound on what a corrupt length prefix may make the decoder allocate.
const MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;

/// Why a detect snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum DetectSnapshotError {
    /// Written by a newer mend.
    #[error("written in format {found}, newer than the {supported} this mend reads")]
    TooNew {
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// Does not decode.
    #[error("not readable")]
    Corrupt(#[source] bincode::error::DecodeError),
}

/// What identifies a detector attachment's configuration.
#[derive(Serialize, Deserialize, PartialEq)]
struct DetectKey {
    name: String,
    series: String,
    detector: String,
    sensitivity: f64,
}

impl DetectKey {
    fn of(detect: &Detect) -> Self {
        Self {
            name: detect.name.clone(),
            series: detect.series.clone(),
            detector: detect.detector.clone(),
            sensitivity: detect.sensitivity,
        }
    }
}

/// What identifies a forecast's configuration.
#[derive(Serialize, Deserialize, PartialEq)]
struct ForecastKey {
    name: String,
    series: String,
    limit: f64,
    horizon_secs: f64,
}

impl ForecastKey {
    fn of(forecast: &Forecast) -> Self {
        Self {
            name: forecast.name.clone(),
            series: forecast.series.clone(),
            limit: forecast.limit,
            horizon_secs: forecast.horizon.as_secs_f64(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    detects: Vec<(DetectKey, DetectorBankState)>,
    forecasts: Vec<(ForecastKey, ForecastBankState)>,
}

/// What a restore took back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Attachments and forecasts that took their state back.
    pub n_attachments: usize,
    /// Series, in all.
    pub n_series: usize,
}

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_SNAPSHOT_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>()
}

impl Detection {
    /// Every attachment's and forecast's learnt state, encoded (format [`DETECT_SNAPSHOT_VERSION`]).
    pub fn snapshot(&self) -> Vec<u8> {
        let state = State {
            detects: self.detects.iter().map(|entry| (DetectKey::of(&entry.detect), entry.bank.export())).collect(),
            forecasts: self
                .forecasts
                .iter()
                .map(|entry| (ForecastKey::of(&entry.forecast), entry.bank.export()))
                .collect(),
        };
        bincode::serde::encode_to_vec(&state, config()).unwrap_or_default()
    }

    /// Takes back what a snapshot of `version` holds, at `now_secs`, for every attachment configured as
    /// when it was taken. Refused (nothing changes) when it is newer or does not decode.
    pub fn restore(&mut self, version: u32, body: &[u8], now_secs: f64) -> Result<Restored, DetectSnapshotError> {
        if version > DETECT_SNAPSHOT_VERSION {
            return Err(DetectSnapshotError::TooNew { found: version, supported: DETECT_SNAPSHOT_VERSION });
        }
        let (state, _): (State, usize) =
            bincode::serde::decode_from_slice(body, config()).map_err(DetectSnapshotError::Corrupt)?;
        let mut restored = Restored::default();
        for (key, bank) in state.detects {
            if let Some(entry) = self.detects.iter_mut().find(|entry| DetectKey::of(&entry.detect) == key) {
                restored.n_series += entry.bank.import(bank, now_secs);
                restored.n_attachments += 1;
            }
        }
        for (key, bank) in state.forecasts {
            if let Some(entry) = self.forecasts.iter_mut().find(|entry| ForecastKey::of(&entry.forecast) == key) {
                restored.n_series += entry.bank.import(bank, now_secs);
                restored.n_attachments += 1;
            }
        }
        Ok(restored)
    }

    /// Forgets what detectors and forecasters learnt about `service`'s series (all with `None`).
    pub fn forget(&mut self, service: Option<&str>) {
        let picks =
            |labels: &LabelSet| service.is_none_or(|service| labels.get("service").is_some_and(|s| s == service));
        for entry in &mut self.detects {
            entry.bank.forget(picks);
        }
        for entry in &mut self.forecasts {
            entry.bank.forget(picks);
        }
    }
}

#[cfg(test)]
mod tests {
    use mend_query::{Labels, MemoryStorage, Series};
    use mend_types::{SignalState, Timestamp};

    use super::*;

    const CONFIG: &str =
        "[[detect]]\nname = \"Slow\"\nseries = \"latency_seconds\"\ndetector = \"ewma\"\nsensitivity = 0.5\n";

    fn detection(text: &str) -> Detection {
        Detection::new(&mend_config::parse("t.toml", text, std::path::Path::new(".")).expect("valid config"))
    }

    fn storage(points: &[(i64, f64)]) -> MemoryStorage {
        let labels = Labels::new([("__name__", "latency_seconds"), ("service", "web")]);
        MemoryStorage::new(vec![Series { labels, points: points.iter().map(|&(s, v)| (s * 1000, v)).collect() }])
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    /// Feeds a steady series for `n` seconds, one round a second.
    fn warm(running: &mut Detection, n: i64) {
        let points: Vec<(i64, f64)> = (1..=n).map(|s| (1_700_000_000 + s, 0.1 + (s % 5) as f64 * 0.001)).collect();
        let store = storage(&points);
        for s in 1..=n {
            assert!(running.evaluate(&store, at(1_700_000_000 + s)).is_empty(), "steady: no anomaly");
        }
    }

    fn spike_fires(running: &mut Detection, secs: i64) -> bool {
        let store = storage(&[(1_700_000_000 + secs, 5.0)]);
        running
            .evaluate(&store, at(1_700_000_000 + secs))
            .iter()
            .any(|s| s.name == "Slow" && s.state == SignalState::Firing)
    }

    #[test]
    fn a_restored_detector_catches_an_anomaly_right_after_the_restart() {
        let mut running = detection(CONFIG);
        warm(&mut running, 60);
        let body = running.snapshot();
        let mut restarted = detection(CONFIG);
        let restored = restarted.restore(DETECT_SNAPSHOT_VERSION, &body, 1_700_000_061.0).expect("restores");
        assert_eq!(restored, Restored { n_attachments: 1, n_series: 1 });
        assert!(spike_fires(&mut restarted, 61), "no warm-up after the restart");
        let mut fresh = detection(CONFIG);
        assert!(!spike_fires(&mut fresh, 61), "a fresh detector would have missed it (warming up)");
    }

    #[test]
    fn a_corrupt_newer_or_differently_configured_snapshot_is_refused_or_ignored() {
        let mut running = detection(CONFIG);
        warm(&mut running, 40);
        let body = running.snapshot();
        let mut restarted = detection(CONFIG);
        let newer = restarted.restore(DETECT_SNAPSHOT_VERSION + 1, &body, 0.0).expect_err("newer refused");
        assert_eq!(newer.to_string(), "written in format 2, newer than the 1 this mend reads");
        for corrupt in [&b""[..], &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..], &body[..body.len() / 2]] {
            let error = restarted.restore(DETECT_SNAPSHOT_VERSION, corrupt, 0.0).expect_err("corrupt refused");
            assert_eq!(error.to_string(), "not readable");
        }
        let mut flipped = body.clone();
        for byte in flipped.iter_mut().step_by(7) {
            *byte ^= 0x5a;
        }
        // Whatever a flipped body decodes to (or not), restoring never panics.
        let _ = restarted.restore(DETECT_SNAPSHOT_VERSION, &flipped, 0.0);
        let mut other = detection(&CONFIG.replace("0.5", "0.3"));
        assert_eq!(other.restore(DETECT_SNAPSHOT_VERSION, &body, 0.0).expect("decodes"), Restored::default());
    }

    #[test]
    fn every_registered_detector_round_trips() {
        for detector in ["default", "ewma", "mad", "seasonal", "cusum", "shift"] {
            let config = CONFIG.replace("\"ewma\"", &format!("\"{detector}\""));
            let mut running = detection(&config);
            warm(&mut running, 40);
            let body = running.snapshot();
            let restored = detection(&config).restore(DETECT_SNAPSHOT_VERSION, &body, 0.0);
            assert_eq!(restored.expect(detector), Restored { n_attachments: 1, n_series: 1 }, "{detector}");
        }
    }

    #[test]
    fn forgetting_a_service_starts_its_detectors_over() {
        let mut running = detection(CONFIG);
        warm(&mut running, 60);
        let body = running.snapshot();
        running.forget(Some("db"));
        assert_eq!(running.snapshot(), body, "another service's series: nothing forgotten");
        running.forget(Some("web"));
        assert!(!spike_fires(&mut running, 61), "forgotten: warming up again");
    }
}
