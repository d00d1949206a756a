//! The learning vocabulary: how each healing action turned out (its outcome), the unit the learner
//! counts and the journal keeps.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ActionId, ActionKind, IncidentId, ServiceName, Timestamp};

/// How a policy's action turned out once its verify window was over (or cut short).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every signal of the incident resolved within the action's verify window.
    Resolved,
    /// The verify window ended with signals still firing (or the incident escalated meanwhile).
    NotResolved,
    /// The action itself failed (the supervisor, proxy, hook or webhook said no).
    Failed,
}

impl Verdict {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::NotResolved => "not_resolved",
            Self::Failed => "failed",
        }
    }

    /// The verdict called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Resolved, Self::NotResolved, Self::Failed].into_iter().find(|v| v.as_str() == name)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one action a policy ran: what was tried, against what, and whether it healed.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// The action.
    pub action: ActionId,
    /// Its incident.
    pub incident: IncidentId,
    /// The policy's `when` (a rule, detector, forecast, alert or built-in diagnosis name).
    pub trigger: String,
    /// The incident's diagnosis when the action ran.
    pub diagnosis: String,
    /// The service acted on.
    pub service: Option<ServiceName>,
    /// What was done.
    pub kind: ActionKind,
    /// How it turned out.
    pub verdict: Verdict,
    /// When the action started.
    #[serde(with = "crate::time::rfc3339")]
    pub started_at: Timestamp,
    /// When the verdict was reached.
    #[serde(with = "crate::time::rfc3339")]
    pub decided_at: Timestamp,
    /// The verify window it had, in milliseconds.
    pub verify_ms: u64,
    /// From the action's start to the incident's resolution, in milliseconds (resolved ones only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_round_trip() {
        for verdict in [Verdict::Resolved, Verdict::NotResolved, Verdict::Failed] {
            assert_eq!(Verdict::parse(verdict.as_str()), Some(verdict));
            assert_eq!(serde_json::to_value(verdict).expect("serialises"), verdict.as_str());
        }
    }
}

/// Why a snapshot of something learnt (sensitivities, precursors) was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Written by a newer mend.
    #[error("written in format {found}, newer than the {supported} this mend reads")]
    TooNew {
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// Not a snapshot this mend wrote.
    #[error("not readable")]
    Corrupt(#[source] serde_json::Error),
}
