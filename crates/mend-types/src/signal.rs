//! Signals: what detection hands to diagnosis. A firing rule, an anomaly, a forecast of exhaustion, or an
//! alert from an existing Prometheus setup.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ServiceName, Timestamp};

/// Where a signal came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// An alerting rule (`[[rule]]`) whose condition held for its `for` duration.
    Rule,
    /// A streaming detector (`[[detect]]`) scored a point as anomalous.
    Anomaly,
    /// A forecast says a resource reaches its limit within the horizon (`[[forecast]]`, memory limits).
    Predictive,
    /// An alert received from Alertmanager's webhook.
    External,
    /// A built-in diagnosis that mend draws from its own lifecycle events and proxy figures
    /// (`crashed`, `crash_loop`, `hung`, ...; see [`crate::BuiltinDiagnosis`]).
    Diagnosis,
    /// An early warning: a signal that preceded a service's past failures appeared again (the learn
    /// stage's precursors, issue 15 item 5).
    Precursor,
}

impl SignalKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Anomaly => "anomaly",
            Self::Predictive => "predictive",
            Self::External => "external",
            Self::Diagnosis => "diagnosis",
            Self::Precursor => "precursor",
        }
    }

    /// Parses a stable name back into a kind.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Rule, Self::Anomaly, Self::Predictive, Self::External, Self::Diagnosis, Self::Precursor]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// The signal the log stage raises when a service starts logging a new error template.
pub const NEW_LOG_TEMPLATE_SIGNAL: &str = "new_log_template";
/// The signal the log stage raises when a template's rate is anomalous.
pub const LOG_RATE_SIGNAL: &str = "log_rate";
/// The built-in rule every service with a proxy has (a [`SignalKind::Rule`] signal): most of its requests
/// answered 5xx lately. A policy names it as it names a `[[rule]]`: `when = "ServiceErrors"`.
pub const SERVICE_ERRORS_RULE: &str = "ServiceErrors";

/// How urgent a signal is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon.
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// Parses `info`, `warning` or `critical` (also `page` → critical, `ticket` → warning, as many rule
    /// files say).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "info" | "none" => Some(Self::Info),
            "warning" | "warn" | "ticket" => Some(Self::Warning),
            "critical" | "page" | "error" => Some(Self::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Firing or resolved.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SignalState {
    /// The condition holds.
    Firing,
    /// It no longer does.
    Resolved,
}

impl SignalState {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One signal transition: a condition started firing, or resolved.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Signal {
    /// When this transition happened.
    pub at: Timestamp,
    /// Since when the condition holds (equal to `at` when it starts firing).
    pub since: Timestamp,
    /// Firing or resolved.
    pub state: SignalState,
    /// Where it came from.
    pub kind: SignalKind,
    /// Rule, detector or forecast name, or the alert's `alertname`.
    pub name: String,
    /// How urgent.
    pub severity: Severity,
    /// The service it concerns, if known (from the series' `service` label).
    pub service: Option<ServiceName>,
    /// The replica it concerns, if known (from the series' `replica` label).
    pub replica: Option<u32>,
    /// The value behind it (rule result, anomaly score, seconds to exhaustion...).
    pub value: f64,
    /// Identifying labels (the series' labels plus the rule's own).
    pub labels: BTreeMap<String, String>,
    /// Why, in one line for people.
    pub evidence: String,
}

impl Signal {
    /// Whether the log stage raised it (a new error template, a template's unusual rate).
    pub fn is_log(&self) -> bool {
        self.kind == SignalKind::Anomaly && (self.name == NEW_LOG_TEMPLATE_SIGNAL || self.name == LOG_RATE_SIGNAL)
    }

    /// A stable identity of the condition: kind, name and labels. Firing and resolved transitions of one
    /// condition share it.
    pub fn fingerprint(&self) -> String {
        let mut key = format!("{}:{}", self.kind.as_str(), self.name);
        for (name, value) in &self.labels {
            key.push_str(&format!(",{name}={value:?}"));
        }
        key
    }
}

/// Where signals go: the store in the daemon, a vector in tests. Must not block.
pub trait SignalSink: Send + Sync {
    /// Records one signal transition.
    fn signal(&self, signal: Signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_identify_a_condition_across_transitions() {
        let mut signal = Signal {
            at: Timestamp::from_millis(1),
            since: Timestamp::from_millis(1),
            state: SignalState::Firing,
            kind: SignalKind::Rule,
            name: "HighErrors".into(),
            severity: Severity::Warning,
            service: None,
            replica: None,
            value: 0.3,
            labels: BTreeMap::from([("service".to_owned(), "web".to_owned())]),
            evidence: String::new(),
        };
        let firing = signal.fingerprint();
        signal.state = SignalState::Resolved;
        signal.value = 0.0;
        assert_eq!(signal.fingerprint(), firing);
        assert_eq!(firing, "rule:HighErrors,service=\"web\"");
        assert_eq!(Severity::parse("page"), Some(Severity::Critical));
    }
}
