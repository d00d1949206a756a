//! Policies: the file's `[[heal]]` tables, then the default set.

use std::time::Duration;

use mend_config::{HealPolicy, Trigger};
use mend_types::{ActionKind, BuiltinDiagnosis, Incident, IncidentSignal, ServiceName, SignalKind, Timestamp};

use crate::guard::Refusal;

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
        Trigger::Precursor => signal.kind == SignalKind::Precursor,
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
        // A dependency failure is what the diagnosis' victims suffer from, whatever the ranking could
        // name them: an error ratio alone moves no series the ranking scores, and the root then comes
        // from the dependency graph (the service with signals the others call), with the others as its
        // victims.
        let victims = incident
            .diagnosis
            .victims
            .iter()
            .filter(|_| *diagnosis == BuiltinDiagnosis::DependencyFailure && root.is_some())
            .filter(|victim| Some(*victim) != root);
        let mut named: Vec<&ServiceName> = root
            .filter(|_| incident.diagnosis.name == name)
            .into_iter()
            .chain(incident.diagnosis.ranking.iter().filter(|r| r.diagnosis == name).map(|r| &r.service))
            .chain(victims)
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

/// Whether `policy` acts on the root of its incident even when it is limited to a service that is a
/// victim: a policy on `dependency_failure` names the victim whose trouble it reacts to, and its
/// diagnosis is that the cause is elsewhere (any other policy limited to a victim is refused there).
pub(crate) fn acts_on_the_root(policy: &HealPolicy) -> bool {
    policy.when == Trigger::Builtin(BuiltinDiagnosis::DependencyFailure)
}

/// Whether an action that `policy` decided on `service` in `incident` must wait for the incident to
/// settle, and for how long: a policy keyed on a trigger (a rule, detector, forecast or alert fires
/// where the trouble shows, and a failing callee's shows on its callers in the same second) on a
/// service that calls others (`calls`), while the diagnosis names no other root and nothing credible of
/// the service itself (its own fault, or a named diagnosis of it ranked as the root), within `settle`
/// of the incident's opening. The callees' signals join meanwhile and the diagnosis is made again with
/// them: the action then goes to the root (or is refused on a victim). A policy on a built-in diagnosis
/// does not wait: it names a fault of the service's own (`crashed`, `hung`) or acts on the root already
/// (`dependency_failure`).
pub fn settling(
    policy: &HealPolicy,
    incident: &Incident,
    service: &ServiceName,
    calls: &[ServiceName],
    settle: Duration,
    now: Timestamp,
) -> Option<Refusal> {
    if matches!(policy.when, Trigger::Builtin(_)) || calls.is_empty() {
        return None;
    }
    let diagnosis = &incident.diagnosis;
    if diagnosis.root.as_ref().is_some_and(|root| root != service) {
        // Another service is named the root: the guard decides (a victim is refused, or the action goes
        // to the root), no need to wait.
        return None;
    }
    let named_itself = diagnosis.root.as_ref() == Some(service)
        && diagnosis.ranking.first().is_some_and(|ranked| {
            ranked.service == *service && !matches!(ranked.diagnosis.as_str(), "unknown" | "dependency_failure")
        });
    if named_itself {
        return None;
    }
    let open_for = Duration::from_millis((now.as_millis() - incident.opened_at.as_millis()).max(0) as u64);
    let remaining = settle.checked_sub(open_for).filter(|left| !left.is_zero())?;
    Some(Refusal::Settling { calls: calls.to_vec(), remaining })
}

#[cfg(test)]
mod tests {
    use mend_types::{Diagnosis, IncidentId, IncidentState, RankedService};

    use super::*;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text).expect("valid name")
    }

    fn incident(root: Option<&str>, ranked_first: Option<(&str, &str)>) -> Incident {
        let opened_at = Timestamp::from_millis(1_000_000);
        Incident {
            id: IncidentId(1),
            state: IncidentState::Open,
            opened_at,
            updated_at: opened_at,
            closed_at: None,
            services: [name("api")].into(),
            replicas: Default::default(),
            signals: Vec::new(),
            diagnosis: Diagnosis {
                root: root.map(name),
                ranking: ranked_first
                    .map(|(service, diagnosis)| RankedService {
                        service: name(service),
                        score: 5.0,
                        onset: None,
                        diagnosis: diagnosis.to_owned(),
                        confidence: 0.7,
                        explained_by: None,
                        evidence: Vec::new(),
                    })
                    .into_iter()
                    .collect(),
                ..Diagnosis::default()
            },
            diagnoses: Vec::new(),
            actions: Vec::new(),
            flaps: 0,
            timeline: Vec::new(),
        }
    }

    /// The wait of a trigger-keyed action on api (which calls db) as data: (case, policy trigger, what
    /// api calls, root, first ranked, seconds since the incident opened) → waits.
    #[test]
    fn a_trigger_on_a_caller_waits_only_while_its_callee_may_yet_be_named_the_root() {
        let rule = Trigger::Rule("Errors".into());
        let builtin = Trigger::Builtin(BuiltinDiagnosis::Hung);
        type Case<'a> = (&'a str, &'a Trigger, &'a [&'a str], Option<&'a str>, Option<(&'a str, &'a str)>, i64, bool);
        let cases: [Case<'_>; 7] = [
            ("nothing known yet", &rule, &["db"], None, None, 1, true),
            ("api named root by the graph alone", &rule, &["db"], Some("api"), Some(("api", "unknown")), 2, true),
            ("settled", &rule, &["db"], Some("api"), Some(("api", "unknown")), 3, false),
            (
                "api named root with a fault of its own",
                &rule,
                &["db"],
                Some("api"),
                Some(("api", "overload")),
                0,
                false,
            ),
            ("db named root: the guard decides", &rule, &["db"], Some("db"), None, 0, false),
            ("api calls nothing", &rule, &[], None, None, 0, false),
            ("a built-in diagnosis of api's own", &builtin, &["db"], None, None, 0, false),
        ];
        for (case, trigger, calls, root, ranked, after, waits) in cases {
            let policy =
                HealPolicy { when: trigger.clone(), service: None, actions: vec![ActionKind::Restart], verify: None };
            let calls: Vec<ServiceName> = calls.iter().map(|c| name(c)).collect();
            let now = Timestamp::from_millis(1_000_000 + after * 1000);
            let decided = settling(&policy, &incident(root, ranked), &name("api"), &calls, Duration::from_secs(3), now);
            assert_eq!(decided.is_some(), waits, "{case}: {decided:?}");
            if let Some(refusal) = decided {
                assert!(refusal.is_transient(), "{case}");
                assert!(
                    refusal.to_string().starts_with("it calls db, whose trouble shows on it too"),
                    "{case}: {refusal}"
                );
            }
        }
    }
}
