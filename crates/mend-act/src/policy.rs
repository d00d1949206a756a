//! Policies: the file's `[[heal]]` tables, then the default set.

use mend_config::{HealPolicy, Trigger};
use mend_types::{ActionKind, BuiltinDiagnosis, Incident, IncidentSignal, ServiceName, SignalKind};

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

    /// The first policy that matches `incident` (a firing signal, or its diagnosis), with what it matched.
    pub fn find(&self, incident: &Incident) -> Option<(usize, Target)> {
        self.list.iter().enumerate().find_map(|(idx, policy)| target(policy, incident, true).map(|t| (idx, t)))
    }
}

/// What a policy matched in an incident: the service (and replica) it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service the matched signal or diagnosis names.
    pub service: Option<ServiceName>,
    /// The replica the matched signal names (not for a signal attributed through the incident).
    pub replica: Option<u32>,
    /// What matched, for people: the signal's name, or `diagnosis X of S`.
    pub matched: String,
}

fn service_matches(wanted: Option<&ServiceName>, service: Option<&ServiceName>) -> bool {
    wanted.is_none_or(|wanted| service == Some(wanted))
}

/// What `policy` matches in `incident`, if anything: a signal (firing, or with `firing_only` false any
/// when none fires), else for a built-in diagnosis the incident's diagnosis of one of its services. The
/// root's match comes first, then those of services that are not victims: the policy's action goes where
/// the cause is.
pub(crate) fn target(policy: &HealPolicy, incident: &Incident, firing_only: bool) -> Option<Target> {
    let root = incident.diagnosis.root.as_ref();
    let victim = |service: Option<&ServiceName>| {
        service.is_some_and(|s| root.is_some_and(|r| r != s) && incident.diagnosis.victims.contains(s))
    };
    let order = |service: Option<&ServiceName>| (service != root, victim(service));
    let matching = |firing: bool| {
        let mut found: Vec<&IncidentSignal> = incident
            .signals
            .iter()
            .filter(|s| s.firing == firing || !firing_only && !firing)
            .filter(|s| matches(&policy.when, s) && service_matches(policy.service.as_ref(), s.service.as_ref()))
            .collect();
        found.sort_by_key(|s| order(s.service.as_ref()));
        found.first().map(|s| Target {
            service: s.service.clone(),
            replica: s.replica.filter(|_| !s.attributed),
            matched: s.name.clone(),
        })
    };
    if let Some(found) = matching(true) {
        return Some(found);
    }
    if let Trigger::Builtin(diagnosis) = &policy.when {
        let name = diagnosis.as_str();
        let mut named: Vec<&ServiceName> = root
            .filter(|_| incident.diagnosis.name == name)
            .into_iter()
            .chain(incident.diagnosis.ranking.iter().filter(|r| r.diagnosis == name).map(|r| &r.service))
            .filter(|service| service_matches(policy.service.as_ref(), Some(service)))
            .collect();
        named.sort_by_key(|service| order(Some(service)));
        if let Some(service) = named.first() {
            return Some(Target {
                service: Some((*service).clone()),
                replica: None,
                matched: format!("diagnosis {name} of {service}"),
            });
        }
    }
    if firing_only { None } else { matching(false) }
}
