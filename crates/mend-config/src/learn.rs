//! Learning configuration: `[learn]`, from its raw table to the validated [`Learn`].
//!
//! What mend learns (the order in which a policy tries its actions, how sensitive a detector or how long
//! a rule's `for` is after feedback) always stays within what these bounds allow, and `enabled = false`
//! turns it all off: the configured order and sensitivities then hold.

use std::time::Duration;

use serde::Deserialize;

use crate::validate::{KeyPath, Problems, duration, integer};

/// `[learn]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLearn {
    enabled: Option<bool>,
    min_outcomes: Option<i64>,
    prior_weight: Option<f64>,
    feedback_step: Option<f64>,
    max_relax: Option<f64>,
    correct_run: Option<i64>,
    min_for: Option<String>,
    snapshot_every: Option<String>,
    precursors: Option<bool>,
    precursor_window: Option<String>,
    precursor_min_support: Option<i64>,
    precursor_min_precision: Option<f64>,
}

/// `[learn]`: how mend learns from its actions' outcomes and from operators' feedback.
#[derive(Debug, Clone, PartialEq)]
pub struct Learn {
    /// Learn at all: reorder policies' actions and apply feedback to detection (off: the configured order
    /// and sensitivities hold; outcomes are still recorded).
    pub enabled: bool,
    /// Outcomes an action needs (for one trigger and service) before its record counts.
    pub min_outcomes: u32,
    /// Weight of the configured order (a Beta prior worth this many outcomes).
    pub prior_weight: f64,
    /// How far one false positive relaxes the rule or detector that raised it: its relax factor is
    /// multiplied by `1 + feedback_step` (a rule's `for` lengthens by it, a detector's sensitivity is
    /// divided by it).
    pub feedback_step: f64,
    /// The largest relax factor feedback may reach (`for` at most this many times the configured one,
    /// sensitivity at least the configured one divided by it).
    pub max_relax: f64,
    /// Correct detections in a row that take one step back towards the configured sensitivity.
    pub correct_run: u32,
    /// A rule configured with no `for` (0 s) relaxes from this `for`.
    pub min_for: Duration,
    /// How often learnt state (detector state, sensitivities) is written to the store; also at a clean
    /// shutdown.
    pub snapshot_every: Duration,
    /// Learn which signals precede each service's failures and warn when one appears again.
    pub precursors: bool,
    /// How long before a failure a signal counts as its precursor (and how long a warning waits for the
    /// failure it announces).
    pub precursor_window: Duration,
    /// Past incidents of the service a precursor must have preceded before it warns.
    pub precursor_min_support: u32,
    /// Share of a precursor's sightings that a failure followed within the window, at least, for it to warn.
    pub precursor_min_precision: f64,
}

impl Default for Learn {
    fn default() -> Self {
        Self {
            enabled: true,
            min_outcomes: 5,
            prior_weight: 4.0,
            feedback_step: 0.5,
            max_relax: 4.0,
            correct_run: 5,
            min_for: Duration::from_secs(15),
            snapshot_every: Duration::from_secs(300),
            precursors: true,
            precursor_window: Duration::from_secs(600),
            precursor_min_support: 2,
            precursor_min_precision: 0.5,
        }
    }
}

fn float(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    value: Option<f64>,
    allowed: (f64, f64),
    default: f64,
) -> Option<f64> {
    let value = value.unwrap_or(default);
    if value.is_finite() && value >= allowed.0 && value <= allowed.1 {
        Some(value)
    } else {
        problems.add(path, format!("{value} is out of range (allowed: {} to {})", allowed.0, allowed.1));
        None
    }
}

/// Validates `[learn]` (absent: the defaults), collecting every problem.
pub(crate) fn validate(problems: &mut Problems<'_>, raw: Option<&RawLearn>) -> Learn {
    let defaults = Learn::default();
    let root = KeyPath::default().key("learn");
    let empty = RawLearn::default();
    let raw = raw.unwrap_or(&empty);
    let count = |problems: &mut Problems<'_>, key: &str, value: Option<i64>, default: u32| {
        integer(problems, &root.key(key), value, 1..=10_000, i64::from(default)).map_or(default, |n| n as u32)
    };
    let learn = Learn {
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        min_outcomes: count(problems, "min_outcomes", raw.min_outcomes, defaults.min_outcomes),
        prior_weight: float(
            problems,
            &root.key("prior_weight"),
            raw.prior_weight,
            (0.0, 1000.0),
            defaults.prior_weight,
        )
        .unwrap_or(defaults.prior_weight),
        feedback_step: float(
            problems,
            &root.key("feedback_step"),
            raw.feedback_step,
            (0.01, 10.0),
            defaults.feedback_step,
        )
        .unwrap_or(defaults.feedback_step),
        max_relax: float(problems, &root.key("max_relax"), raw.max_relax, (1.0, 100.0), defaults.max_relax)
            .unwrap_or(defaults.max_relax),
        correct_run: count(problems, "correct_run", raw.correct_run, defaults.correct_run),
        min_for: duration(problems, &root.key("min_for"), raw.min_for.as_ref(), defaults.min_for)
            .unwrap_or(defaults.min_for),
        snapshot_every: duration(
            problems,
            &root.key("snapshot_every"),
            raw.snapshot_every.as_ref(),
            defaults.snapshot_every,
        )
        .unwrap_or(defaults.snapshot_every),
        precursors: raw.precursors.unwrap_or(defaults.precursors),
        precursor_window: duration(
            problems,
            &root.key("precursor_window"),
            raw.precursor_window.as_ref(),
            defaults.precursor_window,
        )
        .unwrap_or(defaults.precursor_window),
        precursor_min_support: count(
            problems,
            "precursor_min_support",
            raw.precursor_min_support,
            defaults.precursor_min_support,
        ),
        precursor_min_precision: float(
            problems,
            &root.key("precursor_min_precision"),
            raw.precursor_min_precision,
            (0.0, 1.0),
            defaults.precursor_min_precision,
        )
        .unwrap_or(defaults.precursor_min_precision),
    };
    if learn.precursor_window < Duration::from_secs(1) || learn.precursor_window > Duration::from_secs(24 * 3600) {
        problems.add(&root.key("precursor_window"), "precursor_window must be between 1s and 24h");
    }
    if learn.snapshot_every < Duration::from_secs(1) {
        problems.add(&root.key("snapshot_every"), "snapshots must be at least 1s apart");
    }
    if learn.min_for.is_zero() {
        problems.add(&root.key("min_for"), "min_for must be longer than 0s");
    }
    learn
}
