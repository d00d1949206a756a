//! The rollout controller: a [`Rollout`] (mend-types, persisted after every decision) plus what the edge
//! observed (the canary's readiness and trouble, the proxy's per-release window, operator commands) plus
//! the time → [`RolloutDecision`]s. Pure: the edge (the binary) journals each decision before and after it
//! carries it out through the guarded action path.
//!
//! Judging a step (Flagger's thresholds and Kayenta's statistics):
//! - too few requests on either side in the window (`min_requests`) → *inconclusive*: the step holds and
//!   a new window starts; a rollout is never promoted or aborted on empty data;
//! - the canary's error ratio above the stable's by more than `max_error_ratio_increase` → fail;
//! - a one-sided Mann-Whitney U test says the canary's latencies are larger (p < `alpha`) and its median
//!   is larger by more than `min_effect` → fail (a significant but negligible shift passes);
//! - the canary's p99 above the stable's × `max_p99_ratio` (and by more than `latency_slack_ms`) → fail
//!   (a slow tail that leaves the median alone);
//! - otherwise pass: the next step, or promotion after the last.
//!
//! At a 100 % step the stable release gets no unpinned traffic: the canary is judged against the stable
//! figures of the previous window (kept in the controller), or on its error ratio alone if there are none.
//!
//! A canary that crash-loops, fails readiness or has a healing incident during its bake time is rolled
//! back whatever the statistics say; one that is not ready within `ready_timeout` too.

use mend_types::{Rollout, RolloutPhase, Timestamp};

use crate::mann_whitney::mann_whitney_greater;

/// How a rollout judges its canary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Analysis {
    /// Fewest requests each release must have served in a window for a verdict.
    pub min_requests: u64,
    /// Largest allowed excess of the canary's error ratio over the stable's (0..1).
    pub max_error_ratio_increase: f64,
    /// Largest allowed ratio of the canary's p99 latency to the stable's.
    pub max_p99_ratio: f64,
    /// Latency differences below this many milliseconds never fail a canary (timer noise).
    pub latency_slack_ms: f64,
    /// Significance level of the Mann-Whitney test.
    pub alpha: f64,
    /// Smallest relative increase of the median latency that fails a canary when significant.
    pub min_effect: f64,
    /// How long the canary's replicas may take to be ready.
    pub ready_timeout_ms: u64,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            min_requests: 50,
            max_error_ratio_increase: 0.01,
            max_p99_ratio: 1.5,
            latency_slack_ms: 5.0,
            alpha: 0.01,
            min_effect: 0.1,
            ready_timeout_ms: 120_000,
        }
    }
}

/// What one release served in a window: counts and a bounded latency sample (milliseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseWindow {
    /// Requests answered (or failed).
    pub requests: u64,
    /// Of which failed: 5xx, or no answer.
    pub errors: u64,
    /// Latencies of a uniform sample of the window's requests, in milliseconds.
    pub latencies_ms: Vec<f64>,
}

impl ReleaseWindow {
    /// Errors over requests (0 without requests).
    pub fn error_ratio(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The `q` quantile of the latency sample (nearest rank), None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }
}

/// The proxy's figures for the stable and the canary release since the current step began.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// The stable release.
    pub stable: ReleaseWindow,
    /// The canary release.
    pub canary: ReleaseWindow,
}

/// What an operator asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutCommand {
    /// Hold the current step (judging goes on; only trouble or an abort moves it).
    Pause,
    /// Go on from where it was paused.
    Resume,
    /// Roll back now.
    Abort,
    /// Promote now, without further judging.
    Promote,
}

/// What the edge observed since the last call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Every canary replica is ready.
    pub canary_ready: bool,
    /// The canary is in trouble (crash loop, failed readiness after being ready, a healing incident),
    /// in words a person can check.
    pub canary_trouble: Option<String>,
    /// The window since the step began (None while the canary gets no traffic).
    pub window: Option<Window>,
    /// An operator's command.
    pub command: Option<RolloutCommand>,
    /// The edge finished the promotion or the rollback it was asked for.
    pub finished: bool,
}

/// A judgement of one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The canary is no worse than the stable release.
    Pass(String),
    /// The canary is worse: why, with the figures.
    Fail(String),
    /// Too little traffic to tell.
    Inconclusive(String),
}

/// What the edge must do (each journalled before and after, with its reason).
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutDecision {
    /// Send this share of unpinned requests to the canary.
    SetWeight {
        /// Percent.
        weight: u8,
        /// Why.
        reason: String,
    },
    /// Make the canary stable and drain the old stable release away.
    Promote {
        /// Why.
        reason: String,
    },
    /// Weight 0, drain and stop the canary, open an incident with the evidence.
    RollBack {
        /// Why, with the figures.
        reason: String,
    },
    /// Nothing moves; the reason says why (inconclusive, paused).
    Hold {
        /// Why.
        reason: String,
    },
}

/// Judges a window. `previous_stable` stands in for the stable release when it got no traffic (a 100 %
/// step).
pub fn judge(window: &Window, previous_stable: Option<&ReleaseWindow>, analysis: &Analysis) -> Verdict {
    let canary = &window.canary;
    if canary.requests < analysis.min_requests {
        return Verdict::Inconclusive(format!(
            "the canary served {} requests in the window, fewer than the {} a verdict needs",
            canary.requests, analysis.min_requests
        ));
    }
    let stable = if window.stable.requests >= analysis.min_requests {
        Some(&window.stable)
    } else {
        previous_stable.filter(|previous| previous.requests >= analysis.min_requests)
    };
    let Some(stable) = stable else {
        // Judged alone: its error ratio against the allowance, nothing to compare latency with.
        let ratio = canary.error_ratio();
        if ratio > analysis.max_error_ratio_increase {
            return Verdict::Fail(format!(
                "canary error ratio {:.2}% over {} requests is above the allowed {:.2}% (no stable traffic to compare)",
                ratio * 100.0,
                canary.requests,
                analysis.max_error_ratio_increase * 100.0
            ));
        }
        if window.stable.requests == 0 {
            return Verdict::Pass(format!(
                "canary error ratio {:.2}% over {} requests (no stable traffic to compare latency)",
                ratio * 100.0,
                canary.requests
            ));
        }
        return Verdict::Inconclusive(format!(
            "the stable release served {} requests in the window, fewer than the {} a verdict needs",
            window.stable.requests, analysis.min_requests
        ));
    };
    let (canary_ratio, stable_ratio) = (canary.error_ratio(), stable.error_ratio());
    if canary_ratio - stable_ratio > analysis.max_error_ratio_increase {
        return Verdict::Fail(format!(
            "canary error ratio {:.2}% ({} of {}) against stable {:.2}% ({} of {}): more than {:.2} points worse",
            canary_ratio * 100.0,
            canary.errors,
            canary.requests,
            stable_ratio * 100.0,
            stable.errors,
            stable.requests,
            analysis.max_error_ratio_increase * 100.0
        ));
    }
    if let (Some(test), Some(canary_median), Some(stable_median)) = (
        mann_whitney_greater(&canary.latencies_ms, &stable.latencies_ms),
        canary.quantile_ms(0.5),
        stable.quantile_ms(0.5),
    ) && test.p_greater < analysis.alpha
        && canary_median > stable_median * (1.0 + analysis.min_effect)
        && canary_median - stable_median > analysis.latency_slack_ms
    {
        return Verdict::Fail(format!(
            "canary latencies are larger (Mann-Whitney U = {:.0}, p = {:.2e} < {}; median {canary_median:.1} ms against {stable_median:.1} ms over {} and {} samples)",
            test.u_canary,
            test.p_greater,
            analysis.alpha,
            canary.latencies_ms.len(),
            stable.latencies_ms.len()
        ));
    }
    if let (Some(canary_p99), Some(stable_p99)) = (canary.quantile_ms(0.99), stable.quantile_ms(0.99))
        && canary_p99 > stable_p99 * analysis.max_p99_ratio
        && canary_p99 - stable_p99 > analysis.latency_slack_ms
    {
        return Verdict::Fail(format!(
            "canary p99 latency {canary_p99:.1} ms against stable {stable_p99:.1} ms: above {}×",
            analysis.max_p99_ratio
        ));
    }
    Verdict::Pass(format!(
        "canary error ratio {:.2}% against stable {:.2}% over {} and {} requests; latency no worse",
        canary_ratio * 100.0,
        stable_ratio * 100.0,
        canary.requests,
        stable.requests
    ))
}

/// The controller: the persisted rollout plus what is not worth persisting (the last stable window).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutController {
    /// The rollout (persist after every call that returned decisions).
    pub rollout: Rollout,
    analysis: Analysis,
    previous_stable: Option<ReleaseWindow>,
}

impl RolloutController {
    /// A controller for `rollout` (new, or read back from the store).
    pub fn new(rollout: Rollout, analysis: Analysis) -> Self {
        Self { rollout, analysis, previous_stable: None }
    }

    /// The analysis settings.
    pub fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    /// When the current step's bake time ends (the edge collects its window until then).
    pub fn step_ends_at(&self) -> Timestamp {
        Timestamp::from_millis(self.rollout.since.as_millis().saturating_add(self.rollout.interval_ms as i64))
    }

    /// A rollout read back after mend restarted: a step in progress resumes with a fresh window (the
    /// proxy's figures did not survive the restart); a promotion or rollback in progress is asked for
    /// again (both are idempotent at the edge).
    pub fn resume_after_restart(&mut self, now: Timestamp) -> Vec<RolloutDecision> {
        let reason = "mend restarted mid-rollout".to_owned();
        let decisions = self.resume_decisions(now, &reason);
        if let Some(
            RolloutDecision::Hold { reason }
            | RolloutDecision::SetWeight { reason, .. }
            | RolloutDecision::Promote { reason }
            | RolloutDecision::RollBack { reason },
        ) = decisions.first()
        {
            self.rollout.reason = reason.clone();
        }
        decisions
    }

    fn resume_decisions(&mut self, now: Timestamp, reason: &str) -> Vec<RolloutDecision> {
        match self.rollout.phase {
            RolloutPhase::Starting => {
                self.rollout.since = now;
                vec![RolloutDecision::Hold { reason: format!("{reason}: waiting for the canary to be ready again") }]
            }
            RolloutPhase::Stepping => {
                self.rollout.since = now;
                vec![RolloutDecision::SetWeight {
                    weight: self.rollout.weight(),
                    reason: format!("{reason}: step {}% resumes with a new window", self.rollout.weight()),
                }]
            }
            RolloutPhase::Promoting => vec![RolloutDecision::Promote { reason: format!("{reason}: promoting again") }],
            RolloutPhase::RollingBack => {
                vec![RolloutDecision::RollBack {
                    reason: format!("{reason}: rolling back again ({})", self.rollout.reason),
                }]
            }
            RolloutPhase::Promoted | RolloutPhase::RolledBack => Vec::new(),
        }
    }

    /// One step of the controller at `now`.
    pub fn step(&mut self, observation: &Observation, now: Timestamp) -> Vec<RolloutDecision> {
        let phase = self.rollout.phase;
        if phase.is_done() {
            return Vec::new();
        }
        if observation.finished {
            match phase {
                RolloutPhase::Promoting => return self.enter(RolloutPhase::Promoted, now, "promotion finished"),
                RolloutPhase::RollingBack => {
                    let reason = self.rollout.reason.clone();
                    return self.enter(RolloutPhase::RolledBack, now, &reason);
                }
                _ => {}
            }
        }
        if matches!(phase, RolloutPhase::Promoting | RolloutPhase::RollingBack) {
            return Vec::new();
        }
        match observation.command {
            Some(RolloutCommand::Abort) => return self.roll_back(now, "aborted by an operator".to_owned()),
            Some(RolloutCommand::Promote) => return self.promote(now, "promoted by an operator".to_owned()),
            Some(RolloutCommand::Pause) if !self.rollout.paused => {
                self.rollout.paused = true;
                return vec![RolloutDecision::Hold { reason: "paused by an operator".to_owned() }];
            }
            Some(RolloutCommand::Resume) if self.rollout.paused => {
                self.rollout.paused = false;
                // The pause's window is not judged: the step bakes again from now.
                self.rollout.since = now;
                return vec![RolloutDecision::Hold {
                    reason: "resumed by an operator: the step bakes again".to_owned(),
                }];
            }
            _ => {}
        }
        if let Some(trouble) = &observation.canary_trouble {
            return self.roll_back(now, format!("the canary is in trouble: {trouble}"));
        }
        match phase {
            RolloutPhase::Starting => {
                if observation.canary_ready {
                    let weight = self.rollout.steps.first().copied().unwrap_or(100);
                    self.rollout.step_idx = 0;
                    let reason = format!("the canary is ready: {weight}% of unpinned requests go to it");
                    let mut decisions = self.enter(RolloutPhase::Stepping, now, &reason);
                    decisions.insert(0, RolloutDecision::SetWeight { weight, reason });
                    decisions
                } else if now.as_millis() - self.rollout.since.as_millis() >= self.analysis.ready_timeout_ms as i64 {
                    self.roll_back(
                        now,
                        format!("the canary was not ready within {} s", self.analysis.ready_timeout_ms / 1000),
                    )
                } else {
                    Vec::new()
                }
            }
            RolloutPhase::Stepping => {
                if now < self.step_ends_at() {
                    return Vec::new();
                }
                let window = observation.window.clone().unwrap_or_default();
                let verdict = judge(&window, self.previous_stable.as_ref(), &self.analysis);
                if window.stable.requests >= self.analysis.min_requests {
                    self.previous_stable = Some(window.stable.clone());
                }
                match verdict {
                    Verdict::Fail(reason) => self.roll_back(now, reason),
                    Verdict::Inconclusive(reason) => {
                        self.rollout.inconclusive += 1;
                        self.rollout.since = now;
                        let reason = format!(
                            "step {}% holds ({} inconclusive window{} in a row): {reason}",
                            self.rollout.weight(),
                            self.rollout.inconclusive,
                            if self.rollout.inconclusive == 1 { "" } else { "s" }
                        );
                        self.rollout.reason = reason.clone();
                        vec![RolloutDecision::Hold { reason }]
                    }
                    Verdict::Pass(_) if self.rollout.paused => {
                        self.rollout.since = now;
                        vec![RolloutDecision::Hold { reason: "paused by an operator".to_owned() }]
                    }
                    Verdict::Pass(reason) => {
                        let passed = self.rollout.weight();
                        if self.rollout.step_idx + 1 < self.rollout.steps.len() {
                            self.rollout.step_idx += 1;
                            self.rollout.inconclusive = 0;
                            self.rollout.since = now;
                            let weight = self.rollout.weight();
                            let reason = format!("step {passed}% passed ({reason}): {weight}% next");
                            self.rollout.reason = reason.clone();
                            vec![RolloutDecision::SetWeight { weight, reason }]
                        } else {
                            self.promote(now, format!("the last step ({passed}%) passed: {reason}"))
                        }
                    }
                }
            }
            _ => Vec::new(),
        }
    }

    fn promote(&mut self, now: Timestamp, reason: String) -> Vec<RolloutDecision> {
        let mut decisions = self.enter(RolloutPhase::Promoting, now, &reason);
        decisions.push(RolloutDecision::Promote { reason });
        decisions
    }

    fn roll_back(&mut self, now: Timestamp, reason: String) -> Vec<RolloutDecision> {
        let mut decisions = self.enter(RolloutPhase::RollingBack, now, &reason);
        decisions.push(RolloutDecision::RollBack { reason });
        decisions
    }

    fn enter(&mut self, phase: RolloutPhase, now: Timestamp, reason: &str) -> Vec<RolloutDecision> {
        self.rollout.phase = phase;
        self.rollout.since = now;
        self.rollout.inconclusive = 0;
        self.rollout.reason = reason.to_owned();
        Vec::new()
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
