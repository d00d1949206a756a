//! Root-cause ranking across services: how far each component's metrics moved from their own recent
//! baseline (robustly), when they started to, and who calls whom.
//!
//! The method, in order (docs/diagnosis.md has the reasoning):
//!
//! 1. **Score every series against its own past.** The baseline is the series' points in the hour
//!    before the incident's onset: median and interquartile range (a scale floor of 1 % of the
//!    median keeps flat series honest). Every point since the onset gets a robust z-score; the
//!    series' score is its strongest *sustained* deviation: the largest |z| that two consecutive
//!    points both reach in one direction. A lone spike is noise; a fault lasts.
//! 2. **A component's score is its strongest series'.** Its onset is the earliest time one of its
//!    series started a run of two points beyond |z| = 3.
//! 3. **Explain victims by their causes.** With a dependency graph, an anomalous component is
//!    explained by another anomalous one (the nearest along the calls, then the earliest, then the
//!    strongest) whose onset is not later (within `simultaneous`) when
//!    trouble travels from the second to the first: from a callee to its callers (it reaches it
//!    through calls) when the callee shows more than a change of traffic (latency, errors, its own
//!    resources: what a caller suffers from) and the caller's strongest move is not in its own
//!    resources (CPU, memory, file descriptors, disk: a pod whose memory doubled did that itself),
//!    and from a caller to a callee whose own anomaly is a change of traffic (the load it is sent). An explained component ranks right below what explains
//!    it, however high its own score: its latency rose *because* its dependency's did. When
//!    explanations form a cycle, its strongest member stays a root.
//! 4. **Order** by the score after explanation, then by onset, then by name.
//!
//! Without a graph, step 3 does nothing and the ranking is by score: the graph only ever moves a
//! victim below its cause. Nothing here depends on a particular system's metric names beyond
//! [`MetricClass::of_metric`](crate::MetricClass::of_metric).

use std::collections::BTreeMap;
use std::time::Duration;

use mend_types::{Timestamp, Unit};

use crate::robust::{Baseline, first_run, sustained};
use crate::{Component, DependencyGraph, MetricClass, SeriesInput};

/// The knobs of [`rank`]. The defaults are the documented method; nothing is fitted to a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankParams {
    /// How far before the onset the baseline reaches.
    pub baseline: Duration,
    /// A series with fewer baseline points is not scored.
    pub min_baseline_points: usize,
    /// The scale is at least this share of the baseline median's magnitude.
    pub relative_floor: f64,
    /// Consecutive points a deviation must hold to count.
    pub persist: usize,
    /// A sustained |z| of at least this is an anomaly: it gives an onset and may explain others.
    pub anomalous_z: f64,
    /// Onsets this close count as simultaneous (sampling decides which comes first within it).
    pub simultaneous: Duration,
    /// How far before the incident's onset the analysis starts: a detector confirms a shift some
    /// points after it began (the `shift` detector on its fourth), and at a minute per sample that is
    /// minutes. The baseline ends where the analysis starts.
    pub lookback: Duration,
}

impl Default for RankParams {
    fn default() -> Self {
        Self {
            baseline: Duration::from_secs(3600),
            min_baseline_points: 10,
            relative_floor: 0.01,
            persist: 2,
            anomalous_z: 3.0,
            simultaneous: Duration::from_secs(15),
            lookback: Duration::from_secs(300),
        }
    }
}

/// What [`rank`] reads.
#[derive(Clone, Copy, Debug)]
pub struct RankInput<'a> {
    /// When the incident began: the earliest `since` of its signals (the analysis starts
    /// `params.lookback` earlier).
    pub onset: Timestamp,
    /// The latest time to read (the diagnosis' now).
    pub now: Timestamp,
    /// Every series of every component that may be involved.
    pub series: &'a [SeriesInput],
    /// Who calls whom; may be empty.
    pub graph: &'a DependencyGraph,
    /// The method's knobs.
    pub params: RankParams,
}

/// How one series moved.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Its component.
    pub component: Component,
    /// Its instance (replica, pod), if any.
    pub instance: Option<String>,
    /// Its metric name.
    pub metric: String,
    /// What the metric measures.
    pub class: MetricClass,
    /// Its unit, for people.
    pub unit: Unit,
    /// The baseline before the onset.
    pub baseline: Baseline,
    /// The sustained deviation, signed (positive: it rose).
    pub z: f64,
    /// The value it held at that deviation (the weaker of the sustained points).
    pub level: f64,
    /// When the sustained stretch began.
    pub at: Timestamp,
    /// When the series first became anomalous (a run beyond `anomalous_z`), if it did.
    pub onset: Option<Timestamp>,
}

impl Finding {
    /// `metric` or `metric of instance`.
    pub fn series(&self) -> String {
        match &self.instance {
            Some(instance) => format!("{} of {instance}", self.metric),
            None => self.metric.clone(),
        }
    }
}

/// How trouble reached an explained component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Through its calls: a dependency (direct or further down) misbehaved first.
    FromDependency,
    /// Through the load its callers send: a caller changed first.
    FromCaller,
}

/// Why a component's anomaly is not its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The component whose anomaly explains it.
    pub by: Component,
    /// The components from the explained one to `by` along the calls (for a caller, from `by` to it).
    pub path: Vec<Component>,
    /// Which way it travelled.
    pub propagation: Propagation,
}

/// One ranked component.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The component.
    pub component: Component,
    /// Its own score: the |z| of its strongest finding.
    pub score: f64,
    /// The score the order uses: its own, or just below what explains it.
    pub rank_score: f64,
    /// When it first became anomalous.
    pub onset: Option<Timestamp>,
    /// Its strongest finding.
    pub finding: Finding,
    /// What explains it, if anything.
    pub explained_by: Option<Explanation>,
}

impl Candidate {
    /// Whether it is anomalous at all (its score reaches `anomalous_z`).
    pub fn is_anomalous(&self, params: &RankParams) -> bool {
        self.score >= params.anomalous_z
    }
}

/// Components ordered from most to least likely root cause, and every series' finding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ranking {
    /// Every component with at least one scored series, most likely root cause first.
    pub candidates: Vec<Candidate>,
    /// Every scored series, strongest first.
    pub findings: Vec<Finding>,
}

impl Ranking {
    /// The most likely root cause.
    pub fn top(&self) -> Option<&Candidate> {
        self.candidates.first()
    }

    /// The components in order.
    pub fn names(&self) -> Vec<&str> {
        self.candidates.iter().map(|c| c.component.as_str()).collect()
    }

    /// The candidate for `component`.
    pub fn candidate(&self, component: &Component) -> Option<&Candidate> {
        self.candidates.iter().find(|c| &c.component == component)
    }
}

/// Scores one series against its baseline before `onset`, over its points from `onset` to `now` (the
/// caller applies the lookback).
pub fn finding(series: &SeriesInput, onset: Timestamp, now: Timestamp, params: &RankParams) -> Option<Finding> {
    let baseline_start = onset.saturating_sub(params.baseline);
    let base: Vec<f64> =
        series.points.iter().filter(|(t, _)| *t >= baseline_start && *t < onset).map(|&(_, v)| v).collect();
    let baseline = Baseline::of(&base, params.min_baseline_points, params.relative_floor)?;
    let after: Vec<(Timestamp, f64)> =
        series.points.iter().filter(|(t, v)| *t >= onset && *t <= now && v.is_finite()).copied().collect();
    let zs: Vec<f64> = after.iter().map(|&(_, v)| baseline.z(v)).collect();
    let best = sustained(&zs, params.persist)?;
    let stretch = &after[best.start..(best.start + params.persist).min(after.len())];
    // The weaker of the sustained points: the level the series held.
    let level = stretch
        .iter()
        .map(|&(_, v)| v)
        .min_by(|a, b| baseline.z(*a).abs().total_cmp(&baseline.z(*b).abs()))
        .unwrap_or(baseline.median);
    let onset_idx = first_run(&zs, params.persist, params.anomalous_z);
    Some(Finding {
        component: series.component.clone(),
        instance: series.instance.clone(),
        metric: series.metric.clone(),
        class: series.class(),
        unit: series.unit(),
        baseline,
        z: best.z,
        level,
        at: after[best.start].0,
        onset: onset_idx.map(|idx| after[idx].0),
    })
}

/// Ranks the components of `input.series` as root causes of an incident that began at `input.onset`.
pub fn rank(input: &RankInput<'_>) -> Ranking {
    let params = input.params;
    let start = input.onset.saturating_sub(params.lookback);
    let mut findings: Vec<Finding> =
        input.series.iter().filter_map(|series| finding(series, start, input.now, &params)).collect();
    findings.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()).then_with(|| a.component.cmp(&b.component)));

    // Per component: the strongest finding, the earliest anomalous onset, and whether anything beyond
    // traffic is anomalous (what a caller can suffer from).
    struct Summary<'f> {
        strongest: &'f Finding,
        onset: Option<Timestamp>,
        beyond_traffic: bool,
    }
    let mut summaries: BTreeMap<&Component, Summary<'_>> = BTreeMap::new();
    for finding in &findings {
        let anomalous = finding.z.abs() >= params.anomalous_z;
        let summary = summaries.entry(&finding.component).or_insert(Summary {
            strongest: finding,
            onset: None,
            beyond_traffic: false,
        });
        if anomalous {
            summary.onset = match (summary.onset, finding.onset) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            summary.beyond_traffic |= finding.class != MetricClass::Traffic;
        }
    }
    let score = |c: &Component| summaries.get(c).map_or(0.0, |s| s.strongest.z.abs());
    let anomalous: Vec<&Component> = summaries
        .iter()
        .filter(|(_, s)| s.strongest.z.abs() >= params.anomalous_z && s.onset.is_some())
        .map(|(c, _)| *c)
        .collect();

    // Who explains whom.
    let simultaneous = i64::try_from(params.simultaneous.as_millis()).unwrap_or(i64::MAX);
    let mut explained: BTreeMap<&Component, Explanation> = BTreeMap::new();
    if !input.graph.is_empty() {
        for &victim in &anomalous {
            let victim_summary = &summaries[victim];
            let Some(victim_onset) = victim_summary.onset else { continue };
            let mut best: Option<((usize, i64, f64), Explanation)> = None;
            for &cause in &anomalous {
                if cause == victim {
                    continue;
                }
                let cause_summary = &summaries[cause];
                let Some(cause_onset) = cause_summary.onset else { continue };
                if cause_onset.as_millis() > victim_onset.as_millis().saturating_add(simultaneous) {
                    continue;
                }
                let explanation = if let Some(path) = input
                    .graph
                    .path(victim, cause)
                    .filter(|_| cause_summary.beyond_traffic && !victim_summary.strongest.class.is_own_resource())
                {
                    Explanation { by: cause.clone(), path, propagation: Propagation::FromDependency }
                } else if let Some(path) =
                    input.graph.path(cause, victim).filter(|_| victim_summary.strongest.class == MetricClass::Traffic)
                {
                    Explanation { by: cause.clone(), path, propagation: Propagation::FromCaller }
                } else {
                    continue;
                };
                // The nearest explainer first (a chain explains itself link by link), then the earliest
                // (onsets within `simultaneous` count as equal), then the strongest.
                let onset_step = cause_onset.as_millis() / simultaneous.max(1);
                let key = (explanation.path.len(), onset_step, -score(cause));
                if best.as_ref().is_none_or(|(best_key, _)| key < *best_key) {
                    best = Some((key, explanation));
                }
            }
            if let Some((_, explanation)) = best {
                explained.insert(victim, explanation);
            }
        }
        // A cycle of explanations (mutual calls, simultaneous onsets): its strongest member is a root.
        for &start in &anomalous {
            let mut chain = vec![start];
            let mut at = start;
            while let Some(next) = explained.get(at).map(|e| &e.by) {
                let Some(next) = anomalous.iter().copied().find(|c| *c == next) else { break };
                if let Some(pos) = chain.iter().position(|c| *c == next) {
                    let strongest = chain[pos..]
                        .iter()
                        .copied()
                        .max_by(|a, b| score(a).total_cmp(&score(b)).then_with(|| b.cmp(a)))
                        .unwrap_or(next);
                    explained.remove(strongest);
                    break;
                }
                chain.push(next);
                at = next;
            }
        }
    }

    // Scores after explanation: just below the explainer's, down each chain from its root (the chains
    // are acyclic now, so each is at most as long as the number of components).
    let rank_score = |component: &Component| -> f64 {
        let mut chain = vec![component];
        let mut at = component;
        while let Some(explanation) = explained.get(at) {
            if chain.len() > summaries.len() {
                break;
            }
            at = &explanation.by;
            chain.push(at);
        }
        let mut value = score(at);
        for member in chain.iter().rev().skip(1) {
            value = score(member).min(value * (1.0 - 1e-3));
        }
        value
    };

    let mut candidates: Vec<Candidate> = summaries
        .iter()
        .map(|(component, summary)| Candidate {
            component: (*component).clone(),
            score: summary.strongest.z.abs(),
            rank_score: rank_score(component),
            onset: summary.onset,
            finding: summary.strongest.clone(),
            explained_by: explained.get(component).cloned(),
        })
        .collect();
    candidates.sort_by(|a, b| {
        b.rank_score
            .total_cmp(&a.rank_score)
            .then_with(|| a.onset.unwrap_or(input.now).cmp(&b.onset.unwrap_or(input.now)))
            .then_with(|| a.component.cmp(&b.component))
    });
    Ranking { candidates, findings }
}
