//! The autoscaler: a service's replica count follows a metric per replica, as Kubernetes'
//! HorizontalPodAutoscaler does. Pure: the spec, what was decided and done before, an observation and
//! the time come in; a [`Recommendation`] (the count wanted, and why) comes out. The edge sends a
//! change through the [`crate::Guard`] like any other scale, and reports it back with
//! [`Autoscaler::scaled`].
//!
//! - desired = ceil(current × observed / target), within `min ..= max`; nothing while observed is within
//!   `tolerance` of the target;
//! - up at once; down only to the highest recommendation over the stabilisation `window` (so a dip
//!   shorter than the window never scales in; the count found at the first observation counts as one);
//! - at most `max_up` replicas added and `max_down` removed within `rate_window`;
//! - a flap budget: starts and stops per hour beyond `flap_budget` hold the count, and the first hold
//!   raises a signal;
//! - a missing observation holds the count; replicas that did not report count as 0 % of the target
//!   when scaling up and as 100 % when scaling down (so they never cause a scale-in).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use mend_config::{Autoscale, AutoscaleMetric};
use mend_types::Timestamp;

/// What was measured, per replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// The value per replica (CPU percent, or the query's value), from `n_reporting` replicas.
    Value {
        /// Average over the replicas that reported.
        per_replica: f64,
        /// How many replicas reported it.
        n_reporting: u32,
    },
    /// No value (no series, a failed evaluation, NaN).
    Missing,
}

/// Why the count stays.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// The observed value is within the tolerance of the target.
    WithinTolerance,
    /// A lower count was recommended, but a higher one was within the stabilisation window.
    Stabilising {
        /// The count the observation alone asks for.
        lower: u32,
        /// The window.
        window: Duration,
    },
    /// `max_up` or `max_down` replicas already changed within `rate_window`.
    RateLimited {
        /// The count the observation asks for.
        wanted: u32,
        /// The window.
        window: Duration,
    },
    /// The flap budget (starts and stops per hour) would be exceeded.
    FlapBudget {
        /// The count the observation asks for.
        wanted: u32,
        /// Starts and stops within the last hour.
        moved: u32,
        /// The budget.
        budget: u32,
    },
    /// The observation asks for more (or fewer) replicas than `max` (`min`) allows.
    AtBound,
    /// No observation: never scale on missing data.
    Missing,
    /// Not every replica reported, and counting the missing ones as at target changes the direction.
    Unready {
        /// Replicas that reported.
        n_reporting: u32,
    },
}

/// What the autoscaler wants now.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The count now.
    pub current: u32,
    /// The count wanted (equal to `current` when holding).
    pub desired: u32,
    /// The observation, per replica (None when missing).
    pub observed: Option<f64>,
    /// The target, per replica.
    pub target: f64,
    /// The metric's label (`cpu`, `query`).
    pub metric: &'static str,
    /// Why the count holds (None: it changes, or there is nothing to change).
    pub hold: Option<Hold>,
    /// The flap budget was exceeded just now (it was not at the last recommendation): raise a signal.
    pub flap_exceeded: bool,
}

impl Recommendation {
    /// Whether the count changes.
    pub fn changes(&self) -> bool {
        self.desired != self.current
    }
}

impl fmt::Display for Recommendation {
    /// `cpu 142% of 70% target across 2 replicas → 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.metric == "cpu" { "%" } else { "" };
        let (current, desired) = (self.current, self.desired);
        match self.observed {
            Some(observed) => write!(
                f,
                "{} {}{unit} of {}{unit} target across {current} replicas",
                self.metric,
                round(observed),
                round(self.target)
            )?,
            None => write!(f, "{} missing across {current} replicas", self.metric)?,
        }
        match &self.hold {
            None => write!(f, " → {desired}"),
            Some(Hold::WithinTolerance) => write!(f, ": within tolerance, {current} stays"),
            Some(Hold::Stabilising { lower, window }) => write!(
                f,
                " → {lower}, held at {current}: a higher recommendation within the {}s stabilisation window",
                window.as_secs()
            ),
            Some(Hold::RateLimited { wanted, window }) => {
                write!(f, " → {wanted}, held at {current}: the rate limit per {}s is spent", window.as_secs())
            }
            Some(Hold::FlapBudget { wanted, moved, budget }) => write!(
                f,
                " → {wanted}, held at {current}: {moved} replica starts and stops in the last hour, flap budget {budget}"
            ),
            Some(Hold::AtBound) => write!(f, ": {current} is the bound"),
            Some(Hold::Missing) => write!(f, ": no data, {current} stays"),
            Some(Hold::Unready { n_reporting }) => {
                write!(f, ": only {n_reporting} replicas reported, {current} stays")
            }
        }
    }
}

fn round(value: f64) -> String {
    if value >= 10.0 { format!("{value:.0}") } else { format!("{value:.2}") }
}

const HOUR: Duration = Duration::from_secs(3600);

/// One service's autoscaler.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    spec: Autoscale,
    /// Recent recommendations (before stabilisation), for the scale-down window.
    recommendations: VecDeque<(Timestamp, u32)>,
    /// Changes carried out: when, and by how many replicas.
    changes: VecDeque<(Timestamp, i64)>,
    /// The last change wanted was held on the flap budget (a signal was raised; the next is raised once a
    /// change went through again).
    flapping: bool,
    /// It has seen an observation.
    started: bool,
}

impl Autoscaler {
    /// An autoscaler with nothing seen yet.
    pub fn new(spec: Autoscale) -> Self {
        Self { spec, recommendations: VecDeque::new(), changes: VecDeque::new(), flapping: false, started: false }
    }

    /// The spec.
    pub fn spec(&self) -> &Autoscale {
        &self.spec
    }

    /// Takes a reloaded spec; the history (window, rate limits, flap budget) stays.
    pub fn reconfigure(&mut self, spec: Autoscale) {
        self.spec = spec;
    }

    /// The count wanted now, with `current` replicas running and `observation`.
    pub fn recommend(&mut self, current: u32, observation: Observation, now: Timestamp) -> Recommendation {
        let spec = &self.spec;
        let keep = spec.window.max(spec.rate_window).max(HOUR);
        while self.changes.front().is_some_and(|(at, _)| *at < now.saturating_sub(keep)) {
            self.changes.pop_front();
        }
        while self.recommendations.front().is_some_and(|(at, _)| *at < now.saturating_sub(spec.window)) {
            self.recommendations.pop_front();
        }
        let mut recommendation = Recommendation {
            current,
            desired: current,
            observed: None,
            target: spec.target,
            metric: spec.metric.label(),
            hold: None,
            flap_exceeded: false,
        };
        let (min, max) = (spec.min, spec.max.max(spec.min));
        if current < min || current > max {
            // Outside the bounds (a reload changed them, an operator scaled): back within them first.
            recommendation.desired = current.clamp(min, max);
            return recommendation;
        }
        let Observation::Value { per_replica, n_reporting } = observation else {
            recommendation.hold = Some(Hold::Missing);
            return recommendation;
        };
        if !per_replica.is_finite() || n_reporting == 0 || current == 0 {
            recommendation.hold = Some(Hold::Missing);
            return recommendation;
        }
        if self.recommendations.is_empty() && self.changes.is_empty() && !self.started {
            // The count it found counts as a recommendation: no scale-in before a window has passed.
            self.recommendations.push_back((now, current));
        }
        self.started = true;
        recommendation.observed = Some(per_replica);
        let ratio = per_replica / spec.target;
        let within = |ratio: f64| (ratio - 1.0).abs() <= spec.tolerance;
        let raw = if within(ratio) {
            current
        } else {
            let n_reporting = n_reporting.min(current);
            let n_missing = f64::from(current - n_reporting);
            // Replicas that did not report: at 0 going up, at the target going down (as HPA).
            let adjusted = if ratio > 1.0 {
                per_replica * f64::from(n_reporting) / f64::from(current)
            } else {
                (per_replica * f64::from(n_reporting) + spec.target * n_missing) / f64::from(current)
            } / spec.target;
            if n_missing > 0.0 && (within(adjusted) || (adjusted > 1.0) != (ratio > 1.0)) {
                recommendation.hold = Some(Hold::Unready { n_reporting });
                return recommendation;
            }
            let wanted = (f64::from(current) * adjusted).ceil();
            (wanted.clamp(f64::from(min), f64::from(max))) as u32
        };
        self.recommendations.push_back((now, raw));
        // Down only to the highest recommendation within the window.
        let stabilised = if raw < current {
            self.recommendations.iter().map(|(_, n)| *n).max().unwrap_or(raw).min(current)
        } else {
            raw
        };
        if stabilised == current {
            recommendation.hold = Some(if raw < current {
                Hold::Stabilising { lower: raw, window: spec.window }
            } else if within(ratio) {
                Hold::WithinTolerance
            } else {
                Hold::AtBound
            });
            return recommendation;
        }
        // Rate limits within rate_window.
        let since = now.saturating_sub(spec.rate_window);
        let recent = self.changes.iter().filter(|(at, _)| *at > since);
        let (added, removed) =
            recent.fold(
                (0i64, 0i64),
                |(up, down), (_, delta)| {
                    if *delta > 0 { (up + delta, down) } else { (up, down - delta) }
                },
            );
        let limited = if stabilised > current {
            let room = (i64::from(spec.max_up) - added).max(0);
            (i64::from(stabilised)).min(i64::from(current) + room) as u32
        } else {
            let room = (i64::from(spec.max_down) - removed).max(0);
            (i64::from(stabilised)).max(i64::from(current) - room) as u32
        };
        if limited == current {
            recommendation.hold = Some(Hold::RateLimited { wanted: stabilised, window: spec.rate_window });
            return recommendation;
        }
        // The flap budget: starts and stops within the last hour.
        let hour_ago = now.saturating_sub(HOUR);
        let moved: i64 = self.changes.iter().filter(|(at, _)| *at > hour_ago).map(|(_, d)| d.abs()).sum();
        let step = (i64::from(limited) - i64::from(current)).abs();
        if moved + step > i64::from(spec.flap_budget) {
            recommendation.hold =
                Some(Hold::FlapBudget { wanted: limited, moved: moved as u32, budget: spec.flap_budget });
            recommendation.flap_exceeded = !self.flapping;
            self.flapping = true;
            return recommendation;
        }
        self.flapping = false;
        recommendation.desired = limited;
        recommendation
    }

    /// A change was carried out: `from` → `to` replicas at `now` (counted in the rate limits and the flap
    /// budget). Changes by others (an operator's `mend scale`) are not reported here.
    pub fn scaled(&mut self, from: u32, to: u32, now: Timestamp) {
        if from != to {
            self.changes.push_back((now, i64::from(to) - i64::from(from)));
        }
    }
}

/// The query an observation of `metric` reads for `service`: CPU from the supervisor's process series.
pub fn cpu_query(service: &str) -> String {
    format!("mend_replica_cpu_percent{{service=\"{service}\"}}")
}

/// Whether `metric` is averaged over the series that report (CPU) or summed and divided by the running
/// replicas (a query).
pub fn averaged(metric: &AutoscaleMetric) -> bool {
    matches!(metric, AutoscaleMetric::Cpu)
}

#[cfg(test)]
#[path = "autoscale_tests.rs"]
mod tests;
