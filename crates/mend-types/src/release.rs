//! Releases over time: what a service runs, what it ran, and a rollout in progress, as persisted by the
//! store and driven by `mend_act::rollout`.

use serde::{Deserialize, Serialize};

use crate::{ReleaseName, ServiceName, Timestamp};

/// What happened to a release of a service (one row of its history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseChange {
    /// The release ran as stable when mend started (from the config or the store).
    Stable,
    /// A rollout started it as the canary.
    Deployed,
    /// Its rollout promoted it: it is stable now.
    Promoted,
    /// Its rollout was aborted and it was taken away (weight 0, drained, stopped).
    RolledBack,
    /// A healing `rollback` returned the service to it (its last good release).
    Restored,
}

impl ReleaseChange {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Deployed => "deployed",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
            Self::Restored => "restored",
        }
    }
}

/// One row of a service's release history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseHistoryEntry {
    /// The service.
    pub service: ServiceName,
    /// The release.
    pub release: ReleaseName,
    /// When.
    pub at: Timestamp,
    /// What happened.
    pub change: ReleaseChange,
    /// Why, in words a person can check.
    pub reason: String,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// The canary's replicas are starting; no traffic yet.
    Starting,
    /// Walking the weight steps, judging at each.
    Stepping,
    /// Judged good: the canary becomes stable, the old stable drains away.
    Promoting,
    /// Judged bad (or aborted): weight 0, the canary drains and stops.
    RollingBack,
    /// Done: the canary is stable.
    Promoted,
    /// Done: the stable release is what runs, the canary is gone.
    RolledBack,
}

impl RolloutPhase {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Stepping => "stepping",
            Self::Promoting => "promoting",
            Self::RollingBack => "rolling_back",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
        }
    }

    /// True once the rollout has ended either way.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Promoted | Self::RolledBack)
    }
}

/// A rollout of a release to a service, as persisted after every step: a mend restarted mid-rollout
/// reads it back and resumes (or rolls back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The service.
    pub service: ServiceName,
    /// The release being rolled out (the canary).
    pub canary: ReleaseName,
    /// The release it replaces (stable when the rollout started).
    pub stable: ReleaseName,
    /// Replicas of the canary.
    #[serde(default = "one")]
    pub canary_replicas: u32,
    /// Weight steps in percent, increasing, the last 100 or less (promotion follows the last).
    pub steps: Vec<u8>,
    /// The step in force (index into `steps`) while stepping.
    pub step_idx: usize,
    /// How long each step bakes before it is judged.
    pub interval_ms: u64,
    /// Where it is.
    pub phase: RolloutPhase,
    /// Paused by an operator: no step advances (an abort still happens).
    pub paused: bool,
    /// When it started.
    pub started_at: Timestamp,
    /// When the current phase or step began (its bake time counts from here).
    pub since: Timestamp,
    /// Windows in a row judged inconclusive at the current step (too little traffic).
    pub inconclusive: u32,
    /// Why it is where it is: the last verdict's reason.
    pub reason: String,
}

impl Rollout {
    /// The canary's weight in percent now: the current step's while stepping, 0 before and after.
    pub fn weight(&self) -> u8 {
        match self.phase {
            RolloutPhase::Stepping => self.steps.get(self.step_idx).copied().unwrap_or(0),
            RolloutPhase::Promoting | RolloutPhase::Promoted => 100,
            RolloutPhase::Starting | RolloutPhase::RollingBack | RolloutPhase::RolledBack => 0,
        }
    }
}

fn one() -> u32 {
    1
}

/// What the store knows about a service's releases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReleases {
    /// The service.
    pub service: ServiceName,
    /// The release that runs by default now.
    pub stable: ReleaseName,
    /// The last release that was stable and healthy: a rollback returns to it.
    pub last_good: Option<ReleaseName>,
    /// The rollout in progress (or the last one, done).
    pub rollout: Option<Rollout>,
}
