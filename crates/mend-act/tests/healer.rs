//! The healer as data: scripts of inputs at times, and the decisions each must produce, rendered one per
//! line (`incident 1 acting: running restart`, `action 1 restart web/0 running`, `run 1`).

use std::collections::BTreeMap;

use mend_act::{Decision, Healer, ReplicaView, ServiceView, Settings, World};
use mend_incident::BuiltinDiagnoser;
use mend_types::{Event, EventKind, ReplicaId, ServiceName, Severity, Signal, SignalKind, SignalState, Timestamp};

enum Input {
    Fire(&'static str, &'static str, Option<u32>),
    Resolve(&'static str, &'static str, Option<u32>),
    Event(EventKind, &'static str, u32),
    Outcome(u64, bool),
    Tick,
    /// The proxies saw the first service call the second.
    Edge(&'static str, &'static str),
    /// An operator approves pending action N.
    Approve(u64),
    /// A reload with this config.
    Reload(String),
    /// An operator pauses automatic healing.
    Pause,
    /// An operator resumes it.
    Resume,
    /// A reload removed this service.
    Removed(&'static str),
}

fn name(text: &str) -> ServiceName {
    ServiceName::new(text).expect("valid name")
}

fn world(config: &mend_config::Config) -> World {
    World {
        services: config
            .services
            .iter()
            .map(|s| {
                let replicas = (0..s.replicas).map(|index| ReplicaView { index, ready: true }).collect();
                (s.name.clone(), ServiceView { replicas })
            })
            .collect(),
    }
}

fn render(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .map(|decision| match decision {
            Decision::Incident(incident) => format!(
                "incident {} {}: {}",
                incident.id,
                incident.state,
                incident.timeline.last().map(|e| e.note.as_str()).unwrap_or_default()
            ),
            Decision::Action(record) => {
                let target = match (&record.service, record.replica) {
                    (Some(s), Some(r)) => format!("{s}/{r}"),
                    (Some(s), None) => s.to_string(),
                    (None, _) => "-".to_owned(),
                };
                let outcome = record.outcome.as_deref().map(|o| format!(": {o}")).unwrap_or_default();
                format!("action {} {} {target} {}{outcome}", record.id, record.action.describe(), record.state)
            }
            Decision::Run(permit) => format!("run {}", permit.record().id),
            Decision::Signal(signal) => format!("signal {} {}", signal.name, signal.state.as_str()),
            Decision::Observe(request) => {
                let services: Vec<&str> = request.services.iter().map(ServiceName::as_str).collect();
                format!("observe incident {} {}", request.incident, services.join(","))
            }
            Decision::Outcome(outcome) => {
                let target = outcome.service.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".to_owned());
                let recover = outcome.recover_ms.map(|ms| format!(" in {}s", ms / 1000)).unwrap_or_default();
                format!(
                    "outcome {} {} {target} for {}: {}{recover}",
                    outcome.action,
                    outcome.kind.describe(),
                    outcome.trigger,
                    outcome.verdict
                )
            }
            Decision::Event(event) => format!("event {}: {}", event.kind, event.message),
        })
        .collect()
}

/// An approval the healer refused, rendered through [`render`] as a signal named after the refusal.
fn refusal(message: String) -> Signal {
    Signal {
        at: Timestamp::from_millis(0),
        since: Timestamp::from_millis(0),
        state: SignalState::Firing,
        kind: SignalKind::External,
        name: format!("refused ({message})"),
        severity: Severity::Warning,
        service: None,
        replica: None,
        value: f64::NAN,
        labels: BTreeMap::new(),
        evidence: String::new(),
    }
}

fn check(config: &str, script: &[(i64, Input, &[&str])]) {
    let config = mend_config::parse("t.toml", config, std::path::Path::new("/")).expect("valid config");
    let world = world(&config);
    let mut healer = Healer::new(Settings::of(&config), 1, 1, Box::new(BuiltinDiagnoser));
    for (step, (at_secs, input, expected)) in script.iter().enumerate() {
        let now = Timestamp::from_millis(1_000_000 + at_secs * 1000);
        let signal = |signal_name: &str, service: &str, replica: Option<u32>, state| {
            let mut labels = BTreeMap::from([("service".to_owned(), service.to_owned())]);
            if let Some(replica) = replica {
                labels.insert("replica".to_owned(), replica.to_string());
            }
            Signal {
                at: now,
                since: now,
                state,
                kind: SignalKind::External,
                name: signal_name.to_owned(),
                severity: Severity::Warning,
                service: Some(name(service)),
                replica,
                value: f64::NAN,
                labels,
                evidence: format!("{signal_name} evidence"),
            }
        };
        let decisions = match input {
            Input::Fire(n, s, r) => healer.signal(&signal(n, s, *r, SignalState::Firing), &world, now),
            Input::Resolve(n, s, r) => healer.signal(&signal(n, s, *r, SignalState::Resolved), &world, now),
            Input::Event(kind, service, index) => {
                let event = Event::new(now, *kind, kind.as_str())
                    .replica(&ReplicaId::new(name(service), *index))
                    .detail("cause", "program");
                healer.event(&event, &world, now)
            }
            Input::Outcome(id, ok) => {
                healer.outcome(mend_types::ActionId(*id), *ok, "done".into(), String::new(), &world, now)
            }
            Input::Tick => healer.tick(&world, now),
            Input::Edge(caller, callee) => {
                healer.observe_edge(name(caller), name(callee), now);
                Vec::new()
            }
            Input::Reload(config) => {
                let config = mend_config::parse("t.toml", config, std::path::Path::new("/")).expect("valid config");
                healer.reconfigure(Settings::of(&config));
                Vec::new()
            }
            Input::Pause => healer.pause(now),
            Input::Resume => healer.resume(&world, now),
            Input::Removed(service) => healer.service_removed(&name(service), now),
            Input::Approve(id) => healer
                .approve(mend_types::ActionId(*id), &world, now)
                .unwrap_or_else(|refused| vec![Decision::Signal(refusal(refused))]),
        };
        assert_eq!(render(&decisions), *expected, "step {step} at {at_secs}s");
    }
}

const TWO_SERVICES: &str = r#"
[healing]
cooldown = "60s"
[service.api]
command = ["api"]
replicas = 2
depends_on = ["db"]
[service.db]
command = ["db"]
replicas = 2
[notify.ops]
url = "http://127.0.0.1:9/"
[[heal]]
when = "alert:Slow"
actions = ["restart", "restart", "escalate"]
verify = "10s"
"#;

#[test]
fn a_policy_acts_verifies_goes_on_and_resolves() {
    check(
        TWO_SERVICES,
        &[
            // api calls db: a trigger on it waits `settle` (3s) for db's trouble to show, if it is there.
            (
                0,
                Input::Fire("Slow", "api", Some(1)),
                &[
                    "incident 1 open: external Slow fired: Slow evidence",
                    "incident 1 open: restart waits: it calls db, whose trouble shows on it too: waiting up to 3.0s for the diagnosis to name the root",
                ],
            ),
            (2, Input::Tick, &[]),
            (3, Input::Tick, &["action 1 restart api/1 running", "run 1", "incident 1 acting: running restart"]),
            (
                3,
                Input::Outcome(1, true),
                &[
                    "action 1 restart api/1 succeeded: done",
                    "incident 1 verifying: restart done: done; verifying for 10s",
                ],
            ),
            (5, Input::Tick, &[]),
            // Still firing after the verify window: the second restart waits for the cooldown (noted once).
            (
                13,
                Input::Tick,
                &[
                    "outcome 1 restart api for alert:Slow: not_resolved",
                    "incident 1 open: verify window over and signals still firing: next action",
                    "incident 1 open: restart waits: cooling down (50s left)",
                ],
            ),
            (20, Input::Tick, &[]),
            (63, Input::Tick, &["action 2 restart api/1 running", "run 2", "incident 1 acting: running restart"]),
            (
                64,
                Input::Outcome(2, true),
                &[
                    "action 2 restart api/1 succeeded: done",
                    "incident 1 verifying: restart done: done; verifying for 10s",
                ],
            ),
            (
                65,
                Input::Resolve("Slow", "api", Some(1)),
                &[
                    "incident 1 verifying: external Slow resolved: Slow evidence",
                    "outcome 2 restart api for alert:Slow: resolved in 2s",
                    "incident 1 resolved: every signal resolved",
                ],
            ),
        ],
    );
}

#[test]
fn a_removed_service_closes_its_own_incidents_only() {
    check(
        TWO_SERVICES,
        &[
            (0, Input::Fire("Leak", "db", Some(0)), &["incident 1 open: external Leak fired: Leak evidence"]),
            (1, Input::Removed("api"), &[]),
            (2, Input::Removed("db"), &["incident 1 resolved: service removed"]),
            // Closed: nothing more happens.
            (100, Input::Tick, &[]),
        ],
    );
}

#[test]
fn a_victim_is_not_acted_on_and_an_exhausted_policy_escalates() {
    // The policy is limited to api: it keeps its scope, and the guard refuses to disrupt a victim.
    let scoped = TWO_SERVICES.replace("when = \"alert:Slow\"", "when = \"alert:Slow\"\nservice = \"api\"");
    check(
        &scoped,
        &[
            (0, Input::Fire("DbDown", "db", None), &["incident 1 open: external DbDown fired: DbDown evidence"]),
            // api depends on db: the incident's root is db, api a victim; the guard refuses the restart
            // (and the next), then the policy says escalate, which tells ops.
            (
                1,
                Input::Fire("Slow", "api", Some(0)),
                &[
                    "incident 1 open: external Slow fired: Slow evidence",
                    "action 1 restart api/0 refused: only a victim: the cause is in db",
                    "incident 1 open: restart refused: only a victim: the cause is in db",
                    "action 2 restart api/0 refused: only a victim: the cause is in db",
                    "incident 1 open: restart refused: only a victim: the cause is in db",
                    "action 3 escalate db running",
                    "run 3",
                    "incident 1 escalated: escalated: policy for alert:Slow says escalate",
                ],
            ),
            // Closed: nothing more happens, however long it fires.
            (100, Input::Tick, &[]),
        ],
    );
}

/// Issue 11: a policy not limited to a service that matched on a victim acts on the incident's root.
#[test]
fn issue_11_a_policy_that_matched_on_a_victim_acts_on_the_root() {
    check(
        TWO_SERVICES,
        &[
            (0, Input::Fire("DbDown", "db", None), &["incident 1 open: external DbDown fired: DbDown evidence"]),
            (
                1,
                Input::Fire("Slow", "api", Some(0)),
                &[
                    "incident 1 open: external Slow fired: Slow evidence",
                    "action 1 restart db running",
                    "run 1",
                    "incident 1 acting: running restart",
                ],
            ),
        ],
    );
}

#[test]
fn the_supervisors_give_up_is_a_crash_loop_escalated_by_the_default_policy() {
    check(
        TWO_SERVICES,
        &[
            (
                0,
                Input::Event(EventKind::GaveUp, "db", 1),
                &[
                    "signal crash_loop firing",
                    "incident 1 open: diagnosis crash_loop fired: gave_up",
                    "action 1 escalate db running",
                    "run 1",
                    "incident 1 escalated: escalated: policy for crash_loop says escalate",
                ],
            ),
            (
                1,
                Input::Outcome(1, true),
                &["action 1 escalate db succeeded: done", "incident 1 escalated: escalate succeeded: done"],
            ),
        ],
    );
}

/// A diagnoser that observes: without observations it knows nothing; with them, `db` is the root and
/// `api` its victim (`dependency_failure`).
struct Observing;

impl mend_incident::Diagnoser for Observing {
    fn diagnose(
        &self,
        signals: &[mend_types::IncidentSignal],
        graph: &mend_incident::DependencyGraph,
        observations: Option<&mend_incident::Observations>,
    ) -> mend_types::Diagnosis {
        let Some(observations) = observations else { return BuiltinDiagnoser.diagnose(signals, graph, None) };
        let ranked = |service: &str, diagnosis: &str| mend_types::RankedService {
            service: name(service),
            score: 10.0,
            onset: None,
            diagnosis: diagnosis.to_owned(),
            confidence: 0.7,
            explained_by: (service == "api").then(|| name("db")),
            evidence: Vec::new(),
        };
        mend_types::Diagnosis {
            name: "overload".into(),
            root: Some(name("db")),
            victims: [name("api")].into(),
            evidence: "db is slow".into(),
            confidence: Some(0.6),
            facts: vec!["cpu of db rose".into()],
            ranking: vec![ranked("db", "overload"), ranked("api", "dependency_failure")],
            diagnosed_at: Some(observations.now),
        }
    }

    fn request(
        &self,
        incident: mend_types::IncidentId,
        _: &[mend_types::IncidentSignal],
        services: &std::collections::BTreeSet<ServiceName>,
        graph: &mend_incident::DependencyGraph,
    ) -> Option<mend_incident::ObservationRequest> {
        Some(mend_incident::ObservationRequest {
            incident,
            services: graph.neighbourhood(services, 10),
            from: Timestamp::from_millis(0),
        })
    }
}

/// Issue 11: an incident waits for the observations its diagnosis asked for, then a policy on a diagnosis
/// of a victim acts on the root; a rule that fired on the victim is redirected there too.
#[test]
fn issue_11_the_live_diagnosis_is_awaited_and_policies_act_on_the_root() {
    for policy in ["when = \"dependency_failure\"", "when = \"alert:Slow\""] {
        let config = format!(
            "[service.api]\ncommand = [\"api\"]\ndepends_on = [\"db\"]\n[service.db]\ncommand = [\"db\"]\n[[heal]]\n{policy}\nactions = [\"restart\"]\nverify = \"10s\"\n"
        );
        let config = mend_config::parse("t.toml", &config, std::path::Path::new("/")).expect("valid config");
        let world = world(&config);
        let mut healer = Healer::new(Settings::of(&config), 1, 1, Box::new(Observing));
        let now = Timestamp::from_millis(1_000_000);
        let slow = Signal {
            at: now,
            since: now,
            state: SignalState::Firing,
            kind: SignalKind::External,
            name: "Slow".into(),
            severity: Severity::Warning,
            service: Some(name("api")),
            replica: Some(0),
            value: f64::NAN,
            labels: BTreeMap::from([("service".to_owned(), "api".to_owned())]),
            evidence: "Slow evidence".into(),
        };
        assert_eq!(
            render(&healer.signal(&slow, &world, now)),
            ["observe incident 1 api,db", "incident 1 open: external Slow fired: Slow evidence"],
            "{policy}: nothing acts before the diagnosis"
        );
        assert!(render(&healer.tick(&world, Timestamp::from_millis(1_001_000))).is_empty(), "{policy}: it waits");
        let observations = mend_incident::Observations { now, ..Default::default() };
        let later = Timestamp::from_millis(1_001_500);
        let reason = match policy {
            "when = \"dependency_failure\"" => "diagnosis dependency_failure of api, a victim of db: acting on db",
            _ => "alert:Slow fired on api, a victim of db: acting on db",
        };
        let decisions = healer.observed(mend_types::IncidentId(1), &observations, &world, later);
        assert_eq!(
            render(&decisions),
            [
                "incident 1 open: diagnosed: overload (60%), root db: db is slow",
                "action 1 restart db running",
                "run 1",
                "incident 1 acting: running restart",
            ],
            "{policy}"
        );
        let Some(Decision::Action(record)) = decisions.get(1) else { panic!("an action") };
        assert!(record.reason.starts_with(reason), "{policy}: {}", record.reason);
    }
}

/// Without an answer, the incident acts on what it has after the wait.
#[test]
fn issue_11_an_unanswered_observation_request_delays_action_by_three_seconds_at_most() {
    let config = "[service.api]\ncommand = [\"api\"]\n[[heal]]\nwhen = \"alert:Slow\"\nactions = [\"restart\"]\n";
    let config = mend_config::parse("t.toml", config, std::path::Path::new("/")).expect("valid config");
    let world = world(&config);
    let mut healer = Healer::new(Settings::of(&config), 1, 1, Box::new(Observing));
    let at = |secs: i64| Timestamp::from_millis(1_000_000 + secs * 1000);
    let slow = Signal {
        at: at(0),
        since: at(0),
        state: SignalState::Firing,
        kind: SignalKind::External,
        name: "Slow".into(),
        severity: Severity::Warning,
        service: Some(name("api")),
        replica: None,
        value: f64::NAN,
        labels: BTreeMap::from([("service".to_owned(), "api".to_owned())]),
        evidence: "Slow evidence".into(),
    };
    assert_eq!(render(&healer.signal(&slow, &world, at(0)))[0], "observe incident 1 api");
    assert!(render(&healer.tick(&world, at(2))).is_empty());
    assert_eq!(
        render(&healer.tick(&world, at(3))),
        [
            "incident 1 open: no observations for the diagnosis within 3s: acting on the signals",
            "action 1 restart api running",
            "run 1",
            "incident 1 acting: running restart",
        ]
    );
}

const UNDECLARED: &str = r#"
[healing]
cooldown = "60s"
[service.web]
command = ["web"]
replicas = 2
[service.api]
command = ["api"]
replicas = 2
[notify.ops]
url = "http://127.0.0.1:9/"
[[heal]]
when = "alert:Slow"
actions = ["restart", "escalate"]
verify = "10s"
"#;

#[test]
fn without_a_known_call_a_callers_trouble_is_its_own_incident() {
    check(
        UNDECLARED,
        &[
            (0, Input::Fire("ApiDown", "api", None), &["incident 1 open: external ApiDown fired: ApiDown evidence"]),
            (
                1,
                Input::Fire("Slow", "web", Some(0)),
                &[
                    "incident 2 open: external Slow fired: Slow evidence",
                    "action 1 restart web/0 running",
                    "run 1",
                    "incident 2 acting: running restart",
                ],
            ),
        ],
    );
}

#[test]
fn a_call_the_proxy_observed_makes_the_caller_a_victim_as_a_declared_dependency_does() {
    check(
        UNDECLARED,
        &[
            (0, Input::Edge("web", "api"), &[]),
            (0, Input::Fire("ApiDown", "api", None), &["incident 1 open: external ApiDown fired: ApiDown evidence"]),
            (
                1,
                Input::Fire("Slow", "web", Some(0)),
                // web is only a victim: the policy (not limited to a service) acts on the root, api.
                &[
                    "incident 1 open: external Slow fired: Slow evidence",
                    "action 1 restart api running",
                    "run 1",
                    "incident 1 acting: running restart",
                ],
            ),
        ],
    );
}

const APPROVE: &str = r#"
[healing]
mode = "approve"
pending_expiry = "60s"
[service.web]
command = ["web"]
replicas = 2
[notify.ops]
url = "http://127.0.0.1:9/"
[[heal]]
when = "alert:Slow"
actions = ["restart"]
verify = "10s"
"#;

#[test]
fn an_action_nobody_approves_expires_and_the_incident_escalates() {
    check(
        APPROVE,
        &[
            (
                0,
                Input::Fire("Slow", "web", Some(1)),
                &[
                    "incident 1 open: external Slow fired: Slow evidence",
                    "action 1 restart web/1 pending",
                    "incident 1 acting: restart waits for approval (mend approve 1 / mend deny 1)",
                ],
            ),
            (59, Input::Tick, &[]),
            (
                60,
                Input::Tick,
                &[
                    "action 1 restart web/1 expired: nobody approved it in time",
                    "action 2 escalate web running",
                    "run 2",
                    "incident 1 escalated: escalated: restart nobody approved it in time: the operator takes over",
                ],
            ),
            // Too late to approve.
            (61, Input::Approve(1), &["signal refused (no pending action 1) firing"]),
            (120, Input::Tick, &[]),
        ],
    );
}

#[test]
fn an_approved_action_runs_and_a_second_approval_is_refused() {
    check(
        APPROVE,
        &[
            (
                0,
                Input::Fire("Slow", "web", Some(1)),
                &[
                    "incident 1 open: external Slow fired: Slow evidence",
                    "action 1 restart web/1 pending",
                    "incident 1 acting: restart waits for approval (mend approve 1 / mend deny 1)",
                ],
            ),
            (
                5,
                Input::Approve(1),
                &[
                    "action 1 restart web/1 running",
                    "run 1",
                    "incident 1 acting: restart approved by an operator: running",
                ],
            ),
            (6, Input::Approve(1), &["signal refused (action 1 is running, not pending) firing"]),
            (
                7,
                Input::Outcome(1, true),
                &[
                    "action 1 restart web/1 succeeded: done",
                    "incident 1 verifying: restart done: done; verifying for 10s",
                ],
            ),
            (
                8,
                Input::Resolve("Slow", "web", Some(1)),
                &[
                    "incident 1 verifying: external Slow resolved: Slow evidence",
                    "outcome 1 restart web for alert:Slow: resolved in 3s",
                    "incident 1 resolved: every signal resolved",
                ],
            ),
        ],
    );
}

#[test]
fn a_pause_and_a_resume_are_noted_in_open_incidents_and_acting_waits_for_the_resume() {
    check(
        APPROVE,
        &[
            (0, Input::Pause, &[]),
            (1, Input::Fire("Slow", "web", Some(1)), &["incident 1 open: external Slow fired: Slow evidence"]),
            (2, Input::Pause, &["incident 1 open: automatic healing paused by an operator"]),
            (
                3,
                Input::Resume,
                &[
                    "incident 1 open: automatic healing resumed by an operator",
                    "action 1 restart web/1 pending",
                    "incident 1 acting: restart waits for approval (mend approve 1 / mend deny 1)",
                ],
            ),
        ],
    );
}

const FLAPPY: &str = r#"
[healing]
cooldown = "1s"
window = "5m"
[service.web]
command = ["web"]
replicas = 2
[service.web.healing]
max_replicas = 4
[notify.ops]
url = "http://127.0.0.1:9/"
[[heal]]
when = "alert:Flappy"
actions = ["restart", "scale +1"]
verify = "10s"
"#;

#[test]
fn a_flapping_trigger_keeps_one_incident_and_walks_its_policy_instead_of_repeating_it() {
    check(
        FLAPPY,
        &[
            (
                0,
                Input::Fire("Flappy", "web", Some(0)),
                &[
                    "incident 1 open: external Flappy fired: Flappy evidence",
                    "action 1 restart web/0 running",
                    "run 1",
                    "incident 1 acting: running restart",
                ],
            ),
            (
                2,
                Input::Outcome(1, true),
                &[
                    "action 1 restart web/0 succeeded: done",
                    "incident 1 verifying: restart done: done; verifying for 10s",
                ],
            ),
            (
                4,
                Input::Resolve("Flappy", "web", Some(0)),
                &[
                    "incident 1 verifying: external Flappy resolved: Flappy evidence",
                    "outcome 1 restart web for alert:Flappy: resolved in 4s",
                    "incident 1 resolved: every signal resolved",
                ],
            ),
            // Fires again within the window: the same incident reopens; the restart did not hold, so the next
            // action runs rather than the same one again.
            (
                30,
                Input::Fire("Flappy", "web", Some(0)),
                &[
                    "incident 1 open: reopened: Flappy fired again within the window (flapping)",
                    "action 2 scale +1 web running",
                    "run 2",
                    "incident 1 acting: running scale +1",
                ],
            ),
            (
                32,
                Input::Outcome(2, true),
                &[
                    "action 2 scale +1 web succeeded: done",
                    "incident 1 verifying: scale +1 done: done; verifying for 10s",
                ],
            ),
            (
                34,
                Input::Resolve("Flappy", "web", Some(0)),
                &[
                    "incident 1 verifying: external Flappy resolved: Flappy evidence",
                    "outcome 2 scale +1 web for alert:Flappy: resolved in 4s",
                    "incident 1 resolved: every signal resolved",
                ],
            ),
            // And again: the list is exhausted, the incident escalates (no third action).
            (
                60,
                Input::Fire("Flappy", "web", Some(0)),
                &[
                    "incident 1 open: reopened: Flappy fired again within the window (flapping)",
                    "action 3 escalate web running",
                    "run 3",
                    "incident 1 escalated: escalated: policy for alert:Flappy exhausted (2 actions)",
                ],
            ),
            // Escalated: mend no longer acts, however often it flaps.
            (62, Input::Resolve("Flappy", "web", Some(0)), &[]),
            (
                90,
                Input::Fire("Flappy", "web", Some(0)),
                &["incident 1 escalated: escalated: policy for alert:Flappy exhausted (2 actions)"],
            ),
            // Past the window after its close, the same trigger is a new incident.
            (500, Input::Tick, &[]),
            (
                501,
                Input::Fire("Flappy", "web", Some(0)),
                &[
                    "incident 2 open: external Flappy fired: Flappy evidence",
                    "action 4 restart web/0 running",
                    "run 4",
                    "incident 2 acting: running restart",
                ],
            ),
        ],
    );
}

#[test]
fn an_incident_escalated_while_its_action_waits_for_approval_takes_the_approval_away() {
    let config = APPROVE.replace("pending_expiry = \"60s\"", "pending_expiry = \"10m\"\nescalate_after = \"30s\"");
    check(
        &config,
        &[
            (
                0,
                Input::Fire("Slow", "web", Some(1)),
                &[
                    "incident 1 open: external Slow fired: Slow evidence",
                    "action 1 restart web/1 pending",
                    "incident 1 acting: restart waits for approval (mend approve 1 / mend deny 1)",
                ],
            ),
            (
                30,
                Input::Tick,
                &[
                    "action 1 restart web/1 expired: no longer needed: the incident was escalated",
                    "action 2 escalate web running",
                    "run 2",
                    "incident 1 escalated: escalated: still firing after 30s (escalate_after)",
                ],
            ),
            // The approval came too late: nothing runs.
            (31, Input::Approve(1), &["signal refused (no pending action 1) firing"]),
        ],
    );
}

#[test]
fn a_reload_changes_the_incident_window_at_once() {
    let shorter = FLAPPY.replace("window = \"5m\"", "window = \"10s\"");
    check(
        FLAPPY,
        &[
            (
                0,
                Input::Fire("Flappy", "web", Some(0)),
                &[
                    "incident 1 open: external Flappy fired: Flappy evidence",
                    "action 1 restart web/0 running",
                    "run 1",
                    "incident 1 acting: running restart",
                ],
            ),
            (
                2,
                Input::Outcome(1, true),
                &[
                    "action 1 restart web/0 succeeded: done",
                    "incident 1 verifying: restart done: done; verifying for 10s",
                ],
            ),
            (
                4,
                Input::Resolve("Flappy", "web", Some(0)),
                &[
                    "incident 1 verifying: external Flappy resolved: Flappy evidence",
                    "outcome 1 restart web for alert:Flappy: resolved in 4s",
                    "incident 1 resolved: every signal resolved",
                ],
            ),
            (5, Input::Reload(shorter), &[]),
            // 20 s after it resolved: within the old window of 5 minutes, past the new one of 10 s.
            (
                24,
                Input::Fire("Flappy", "web", Some(0)),
                &[
                    "incident 2 open: external Flappy fired: Flappy evidence",
                    "action 2 restart web/0 running",
                    "run 2",
                    "incident 2 acting: running restart",
                ],
            ),
        ],
    );
}

const CHAIN: &str = r#"
[service.frontend]
command = ["frontend"]
depends_on = ["api"]
[service.api]
command = ["api"]
depends_on = ["db"]
[service.db]
command = ["db"]
[notify.ops]
url = "http://127.0.0.1:9/"
"#;

/// Issue 14 (the chain game day): a rule on every service of `frontend → api → db` fires first on api.
/// api calls db, so the policy on the rule waits for the incident to settle; db's signal joins, the
/// diagnosis names db the root, and the restart goes to db. The victims are never acted on.
#[test]
fn issue_14_a_trigger_on_a_caller_waits_for_the_root_and_the_root_is_acted_on() {
    let config = format!("{CHAIN}[[heal]]\nwhen = \"alert:Errors\"\nactions = [\"restart\"]\nverify = \"10s\"\n");
    check(
        &config,
        &[
            (
                0,
                Input::Fire("Errors", "api", None),
                &[
                    "incident 1 open: external Errors fired: Errors evidence",
                    "incident 1 open: restart waits: it calls db, whose trouble shows on it too: waiting up to 3.0s for the diagnosis to name the root",
                ],
            ),
            (
                1,
                Input::Fire("Errors", "db", None),
                &[
                    "incident 1 open: external Errors fired: Errors evidence",
                    "action 1 restart db running",
                    "run 1",
                    "incident 1 acting: running restart",
                ],
            ),
            (
                1,
                Input::Fire("Errors", "frontend", None),
                &["incident 1 acting: external Errors fired: Errors evidence"],
            ),
            (5, Input::Tick, &[]),
        ],
    );
}

/// The same rule limited to the victim api: once db is known as the root, nothing runs on api, and the
/// refusal says why; the root's own trigger is acted on.
#[test]
fn issue_14_a_victims_trigger_with_a_known_root_elsewhere_is_refused_and_the_roots_is_acted_on() {
    let config = format!(
        "{CHAIN}[[heal]]\nwhen = \"alert:Errors\"\nservice = \"api\"\nactions = [\"restart\"]\n\
         [[heal]]\nwhen = \"alert:DbErrors\"\nactions = [\"restart\"]\n"
    );
    check(
        &config,
        &[
            (
                0,
                Input::Fire("Errors", "api", None),
                &[
                    "incident 1 open: external Errors fired: Errors evidence",
                    "incident 1 open: restart waits: it calls db, whose trouble shows on it too: waiting up to 3.0s for the diagnosis to name the root",
                ],
            ),
            // db's trouble joins: the root is db, api its victim; the policy limited to api is refused
            // there (one action in its list: then nothing is left, and the incident escalates).
            (
                1,
                Input::Fire("DbErrors", "db", None),
                &[
                    "incident 1 open: external DbErrors fired: DbErrors evidence",
                    "action 1 restart api refused: only a victim: the cause is in db",
                    "incident 1 open: restart refused: only a victim: the cause is in db",
                    "action 2 escalate db running",
                    "run 2",
                    "incident 1 escalated: escalated: policy for alert:Errors exhausted (1 actions)",
                ],
            ),
        ],
    );
    // db's own trigger first: its policy acts on db at once (db calls nothing: no wait).
    check(
        &config,
        &[(
            0,
            Input::Fire("DbErrors", "db", None),
            &[
                "incident 1 open: external DbErrors fired: DbErrors evidence",
                "action 1 restart db running",
                "run 1",
                "incident 1 acting: running restart",
            ],
        )],
    );
}

/// A policy on `dependency_failure` fires when the diagnosis names a root and victims (here from the
/// dependency graph alone: the ranking named nothing) and acts on the root, also when it is limited to
/// the victim whose dependency failed.
#[test]
fn issue_14_a_dependency_failure_policy_acts_on_the_root_the_diagnosis_names() {
    for scope in ["", "service = \"api\"\n"] {
        let config = format!("{CHAIN}[[heal]]\nwhen = \"dependency_failure\"\n{scope}actions = [\"restart\"]\n");
        let parsed = mend_config::parse("t.toml", &config, std::path::Path::new("/")).expect("valid config");
        let world = world(&parsed);
        let mut healer = Healer::new(Settings::of(&parsed), 1, 1, Box::new(BuiltinDiagnoser));
        let at = |secs: i64| Timestamp::from_millis(1_000_000 + secs * 1000);
        let errors = |service: &str, now: Timestamp| Signal {
            at: now,
            since: now,
            state: SignalState::Firing,
            kind: SignalKind::Rule,
            name: "Errors".into(),
            severity: Severity::Warning,
            service: Some(name(service)),
            replica: None,
            value: f64::NAN,
            labels: BTreeMap::from([("service".to_owned(), service.to_owned())]),
            evidence: format!("5xx share of {service} above 0.5"),
        };
        // api alone: its own trouble, no dependency failure (yet): nothing runs.
        assert_eq!(
            render(&healer.signal(&errors("api", at(0)), &world, at(0))),
            ["incident 1 open: rule Errors fired: 5xx share of api above 0.5"],
            "{scope}"
        );
        let decisions = healer.signal(&errors("db", at(1)), &world, at(1));
        assert_eq!(
            render(&decisions),
            [
                "incident 1 open: rule Errors fired: 5xx share of db above 0.5",
                "action 1 restart db running",
                "run 1",
                "incident 1 acting: running restart",
            ],
            "{scope}"
        );
        let Some(Decision::Action(record)) = decisions.get(1) else { panic!("an action") };
        assert!(
            record.reason.starts_with("diagnosis dependency_failure of api, a victim of db: acting on db"),
            "{scope}: {}",
            record.reason
        );
        // frontend joins as a victim too: nothing more runs.
        let decisions = healer.signal(&errors("frontend", at(1)), &world, at(1));
        assert_eq!(render(&decisions), ["incident 1 acting: rule Errors fired: 5xx share of frontend above 0.5"]);
    }
}
