//! Operators' feedback on detection: which rule or detector raised an incident, and how much to relax
//! it. Pure: verdicts in, [`Change`]s out; the edge persists them and hands the detect loop the
//! [`Relaxations`].
//!
//! A false positive multiplies the relax factor of every rule and detector whose signal was in the
//! incident by `1 + feedback_step`, up to `max_relax`; `correct_run` correct verdicts in a row divide it
//! by the same step, down to 1 (as configured). A relaxed rule waits longer before firing: its `for`
//! (at least `min_for`) times the factor; a relaxed detector needs a higher score to alarm (see
//! `mend_detect::attach::DetectorBank::relax`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mend_config::Learn;
use mend_types::SnapshotError;
use serde::{Deserialize, Serialize};

/// What raised a signal: a rule or a detector attachment, by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Source {
    /// A `[[rule]]`.
    Rule(String),
    /// A `[[detect]]`.
    Detect(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule(name) => write!(f, "rule {name}"),
            Self::Detect(name) => write!(f, "detector {name}"),
        }
    }
}

/// An operator's verdict on an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing was wrong: the detection was a false alarm.
    FalsePositive,
    /// The detection was right.
    Correct,
}

impl Verdict {
    /// `false-positive` or `correct` (as the CLI writes them).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "false-positive" | "false_positive" => Some(Self::FalsePositive),
            "correct" => Some(Self::Correct),
            _ => None,
        }
    }
}

/// How relaxed one source is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relax {
    /// 1 = as configured; at most `max_relax`.
    pub factor: f64,
    /// False positives reported so far.
    pub n_false_positive: u32,
    /// Correct verdicts since the last false positive or step back.
    pub n_correct_run: u32,
}

impl Default for Relax {
    fn default() -> Self {
        Self { factor: 1.0, n_false_positive: 0, n_correct_run: 0 }
    }
}

/// A change of a source's relax factor, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Which.
    pub source: Source,
    /// The factor before.
    pub from: f64,
    /// The factor after.
    pub to: f64,
    /// Why, for people.
    pub why: String,
}

/// The relax factors the detect loop applies, and the `for` a rule configured without one relaxes
/// from.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Relaxations {
    /// Factor per source (absent: 1).
    pub factors: BTreeMap<Source, f64>,
    /// `[learn] min_for`.
    pub min_for: Duration,
}

impl Relaxations {
    /// The factor of `source`.
    pub fn factor(&self, source: &Source) -> f64 {
        self.factors.get(source).copied().unwrap_or(1.0)
    }

    /// The `for` of a rule configured with `configured`, relaxed by its factor.
    pub fn rule_for(&self, name: &str, configured: Duration) -> Duration {
        relaxed_for(configured, self.factor(&Source::Rule(name.to_owned())), self.min_for)
    }
}

/// A rule's `for` relaxed by `factor` (configured below `min_for` relaxes from `min_for`).
pub fn relaxed_for(configured: Duration, factor: f64, min_for: Duration) -> Duration {
    if factor <= 1.0 || !factor.is_finite() {
        return configured;
    }
    configured.max(min_for).mul_f64(factor)
}

/// The format version of [`Sensitivities::encode`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// The relax factors learnt from feedback.
#[derive(Clone, Debug)]
pub struct Sensitivities {
    settings: Learn,
    relax: BTreeMap<Source, Relax>,
}

fn round(factor: f64) -> f64 {
    (factor * 1000.0).round() / 1000.0
}

impl Sensitivities {
    /// Nothing learnt.
    pub fn new(settings: Learn) -> Self {
        Self { settings, relax: BTreeMap::new() }
    }

    /// New settings (a reload): factors beyond the new bound are brought within it.
    pub fn reconfigure(&mut self, settings: Learn) {
        for relax in self.relax.values_mut() {
            relax.factor = relax.factor.min(settings.max_relax);
        }
        self.settings = settings;
    }

    /// How relaxed each source is.
    pub fn all(&self) -> impl Iterator<Item = (&Source, &Relax)> {
        self.relax.iter()
    }

    /// What the detect loop applies.
    pub fn relaxations(&self) -> Relaxations {
        let factors = if self.settings.enabled {
            self.relax.iter().filter(|(_, r)| r.factor > 1.0).map(|(s, r)| (s.clone(), r.factor)).collect()
        } else {
            BTreeMap::new()
        };
        Relaxations { factors, min_for: self.settings.min_for }
    }

    /// An operator's verdict on an incident raised by `sources`: the changes it makes.
    pub fn feedback(&mut self, sources: &[Source], verdict: Verdict) -> Vec<Change> {
        if !self.settings.enabled {
            return Vec::new();
        }
        let step = 1.0 + self.settings.feedback_step;
        let mut changes = Vec::new();
        for source in sources {
            let relax = self.relax.entry(source.clone()).or_default();
            let from = relax.factor;
            match verdict {
                Verdict::FalsePositive => {
                    relax.n_false_positive += 1;
                    relax.n_correct_run = 0;
                    relax.factor = round((relax.factor * step).min(self.settings.max_relax));
                    if relax.factor != from {
                        changes.push(Change {
                            source: source.clone(),
                            from,
                            to: relax.factor,
                            why: format!(
                                "marked a false positive ({} so far): relaxed ×{:.2} (at most ×{})",
                                relax.n_false_positive, relax.factor, self.settings.max_relax
                            ),
                        });
                    }
                }
                Verdict::Correct => {
                    relax.n_correct_run += 1;
                    if relax.factor > 1.0 && relax.n_correct_run >= self.settings.correct_run {
                        relax.n_correct_run = 0;
                        relax.factor = round((relax.factor / step).max(1.0));
                        changes.push(Change {
                            source: source.clone(),
                            from,
                            to: relax.factor,
                            why: format!(
                                "{} correct detections in a row: back one step to ×{:.2}",
                                self.settings.correct_run, relax.factor
                            ),
                        });
                    }
                }
            }
        }
        changes
    }

    /// Forgets every factor: the configured sensitivities hold.
    pub fn forget(&mut self) {
        self.relax.clear();
    }

    /// The factors as a snapshot body (version [`SNAPSHOT_VERSION`]).
    pub fn encode(&self) -> Vec<u8> {
        let entries: Vec<(&Source, &Relax)> = self.relax.iter().collect();
        serde_json::to_vec(&entries).unwrap_or_default()
    }

    /// Takes the factors of a snapshot body of `version` (refused: nothing changes).
    pub fn restore(&mut self, version: u32, body: &[u8]) -> Result<usize, SnapshotError> {
        if version > SNAPSHOT_VERSION {
            return Err(SnapshotError::TooNew { found: version, supported: SNAPSHOT_VERSION });
        }
        let entries: Vec<(Source, Relax)> = serde_json::from_slice(body).map_err(SnapshotError::Corrupt)?;
        let max = self.settings.max_relax;
        self.relax = entries
            .into_iter()
            .filter(|(_, relax)| relax.factor.is_finite())
            .map(|(source, mut relax)| {
                relax.factor = relax.factor.clamp(1.0, max);
                (source, relax)
            })
            .collect();
        Ok(self.relax.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Source {
        Source::Rule("HighErrors".to_owned())
    }

    #[test]
    fn false_positives_relax_within_bounds_and_correct_runs_step_back() {
        let mut learnt = Sensitivities::new(Learn::default());
        // feedback_step 0.5, max_relax 4: 1 → 1.5 → 2.25 → 3.375 → 4 (bounded) → no change.
        let factors: Vec<f64> = (0..5)
            .map(|_| {
                learnt.feedback(&[rule()], Verdict::FalsePositive);
                learnt.relaxations().factor(&rule())
            })
            .collect();
        assert_eq!(factors, [1.5, 2.25, 3.375, 4.0, 4.0]);
        assert!(learnt.feedback(&[rule()], Verdict::FalsePositive).is_empty(), "at the bound: no change");
        // Four correct verdicts change nothing; the fifth (correct_run 5) steps back once.
        for _ in 0..4 {
            assert!(learnt.feedback(&[rule()], Verdict::Correct).is_empty());
        }
        let back = learnt.feedback(&[rule()], Verdict::Correct);
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].from, back[0].to), (4.0, 2.667));
        assert_eq!(back[0].why, "5 correct detections in a row: back one step to ×2.67");
    }

    #[test]
    fn a_relaxed_rule_waits_longer_and_one_without_for_starts_from_min_for() {
        let min_for = Duration::from_secs(15);
        assert_eq!(relaxed_for(Duration::from_secs(30), 1.0, min_for), Duration::from_secs(30));
        assert_eq!(relaxed_for(Duration::from_secs(30), 2.0, min_for), Duration::from_secs(60));
        assert_eq!(relaxed_for(Duration::ZERO, 1.5, min_for), Duration::from_millis(22_500));
    }

    #[test]
    fn snapshots_round_trip_and_bad_or_newer_ones_are_refused() {
        let mut learnt = Sensitivities::new(Learn::default());
        learnt.feedback(&[rule(), Source::Detect("Slow".to_owned())], Verdict::FalsePositive);
        let body = learnt.encode();
        let mut restored = Sensitivities::new(Learn::default());
        assert_eq!(restored.restore(SNAPSHOT_VERSION, &body).expect("restores"), 2);
        assert_eq!(restored.relaxations(), learnt.relaxations());
        let newer = restored.restore(SNAPSHOT_VERSION + 1, &body).expect_err("newer refused");
        assert_eq!(newer.to_string(), "written in format 2, newer than the 1 this mend reads");
        let corrupt = restored.restore(SNAPSHOT_VERSION, b"{not json").expect_err("corrupt refused");
        assert_eq!(corrupt.to_string(), "not readable");
        assert_eq!(restored.relaxations(), learnt.relaxations(), "a refused snapshot changes nothing");
    }

    #[test]
    fn disabled_learning_applies_nothing() {
        let mut learnt = Sensitivities::new(Learn { enabled: false, ..Learn::default() });
        assert!(learnt.feedback(&[rule()], Verdict::FalsePositive).is_empty());
        assert_eq!(learnt.relaxations().factor(&rule()), 1.0);
    }
}
