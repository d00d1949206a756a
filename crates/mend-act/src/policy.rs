//! Policies: the file's `[[heal]]` tables, then the default set.

use mend_config::{HealPolicy, Trigger};
use mend_types::{ActionKind, BuiltinDiagnosis, IncidentSignal, ServiceName, SignalKind};

/// The policies that ship: appended after the file's, so that a config without `[[heal]]` heals at least
/// as well as before (the supervisor restarts crashes and hangs itself) and a crash loop, which the
/// supervisor gives up on, is escalated to the notification targets.
pub fn default_policies() -> Vec<HealPolicy> {
    vec![HealPolicy {
        when: Trigger::Builtin(BuiltinDiagnosis::CrashLoop),
        service: None,
        actions: vec![ActionKind::Escalate],
        verify: None,
    }]
}

/// The file's policies followed by the defaults; the first that matches an incident's signal is its
/// policy.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    list: Vec<HealPolicy>,
}

/// Whether `signal` is what `trigger` names.
pub(crate) fn matches(trigger: &Trigger, signal: &IncidentSignal) -> bool {
    match trigger {
        Trigger::Rule(name) => signal.kind == SignalKind::Rule && signal.name == *name,
        Trigger::Detect(name) => signal.kind == SignalKind::Anomaly && signal.name == *name,
        Trigger::Forecast(name) => signal.kind == SignalKind::Predictive && signal.name == *name,
        Trigger::Alert(name) => signal.kind == SignalKind::External && signal.name == *name,
        Trigger::Builtin(diagnosis) => {
            (signal.kind == SignalKind::Diagnosis
                || (*diagnosis == BuiltinDiagnosis::MemoryExhaustion && signal.kind == SignalKind::Predictive))
                && signal.name == diagnosis.as_str()
        }
    }
}

impl Policies {
    /// `configured` followed by the defaults.
    pub fn new(configured: &[HealPolicy]) -> Self {
        let mut list = configured.to_vec();
        list.extend(default_policies());
        Self { list }
    }

    /// The policy at `idx`.
    pub fn get(&self, idx: usize) -> Option<&HealPolicy> {
        self.list.get(idx)
    }

    /// The first policy that matches one of `signals` (firing), with the signal it matched; `root` is the
    /// incident's root service, which a signal without a service of its own stands for.
    pub fn find<'a>(&self, signals: &'a [IncidentSignal]) -> Option<(usize, &'a IncidentSignal)> {
        self.list.iter().enumerate().find_map(|(idx, policy)| {
            signals
                .iter()
                .filter(|signal| signal.firing)
                .find(|signal| matches(&policy.when, signal) && service_matches(policy.service.as_ref(), signal))
                .map(|signal| (idx, signal))
        })
    }
}

fn service_matches(wanted: Option<&ServiceName>, signal: &IncidentSignal) -> bool {
    wanted.is_none_or(|wanted| signal.service.as_ref() == Some(wanted))
}
