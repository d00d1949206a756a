//! Built-in diagnoses drawn from mend's own lifecycle events: a signal fires when a replica crashes, loops,
//! hangs, runs out of memory or fails its probes while running, and resolves once the replica is ready
//! again (a crash loop: once it has stayed ready for the window without crashing).
//!
//! `bad_replica` fires here too, on an ejection: the proxy ejected a replica for 5xx answers while its
//! siblings (same release) answered without errors ([`bad_replica_of`]). With retries and ejection the
//! bad replica gets few attempts, so its error share over a window (the detect stage's `bad_replica`,
//! from the proxies' figures) may never say so; the ejection is the evidence. It resolves when the
//! replica stops or has been back in rotation for [`BACK_FOR`] without another ejection.
//! `overload` comes from the proxies' figures and is evaluated by the detect stage.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use mend_types::{BuiltinDiagnosis, Event, EventKind, ReplicaId, Severity, Signal, SignalKind, SignalState, Timestamp};

/// Crashes of one replica within the window that make a crash loop.
pub const CRASHES_FOR_A_LOOP: usize = 3;

/// How long an ejected bad replica must be back in rotation, not ejected again, for its `bad_replica` to
/// resolve.
pub const BACK_FOR: Duration = Duration::from_secs(30);

/// What an `ejected` event says of the ejection (its details, as `mend::traffic` writes them): the 5xx
/// status that ended the run (`status`), the run's length (`consecutive_failures`), and the siblings'
/// figures (`siblings`: `[{replica, attempts, errors}]` over `siblings_window_seconds`).
pub fn ejection_facts(event: &Event) -> mend_diagnose::EjectionFacts {
    let number = |key: &str| event.details.get(key).and_then(serde_json::Value::as_u64);
    let siblings = event
        .details
        .get("siblings")
        .and_then(serde_json::Value::as_array)
        .map(|siblings| {
            siblings
                .iter()
                .filter_map(|sibling| {
                    let field = |key: &str| sibling.get(key).and_then(serde_json::Value::as_u64);
                    Some(mend_diagnose::SiblingAnswers {
                        replica: u32::try_from(field("replica")?).ok()?,
                        attempts: field("attempts")?,
                        errors: field("errors")?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    mend_diagnose::EjectionFacts {
        status: number("status").and_then(|status| u16::try_from(status).ok()),
        in_a_row: number("consecutive_failures").and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        siblings,
        window: Duration::from_secs(number("siblings_window_seconds").unwrap_or(0)),
    }
}

/// The evidence of a bad replica in an ejection, if it is one: ejected for 5xx answers while its
/// siblings answered (at least one attempt) with at most one error in ten. Pure: the decision only.
pub fn bad_replica_of(ejection: &mend_diagnose::EjectionFacts, replica: u32, at: Timestamp) -> Option<String> {
    ejection.is_bad_replica().then(|| ejection.describe(replica, at))
}

/// The built-in diagnoses' state: what fires per replica, and recent crashes.
#[derive(Debug, Clone)]
pub struct Builtins {
    window: Duration,
    firing: BTreeMap<ReplicaId, BTreeSet<BuiltinDiagnosis>>,
    crashes: BTreeMap<ReplicaId, VecDeque<Timestamp>>,
    /// Since when each replica has been ready (for the crash loop's resolution).
    ready_since: BTreeMap<ReplicaId, Timestamp>,
    /// Since when each bad replica has been back in rotation (for its `bad_replica`'s resolution).
    back_since: BTreeMap<ReplicaId, Timestamp>,
}

/// The signal of `diagnosis` on `replica`.
pub fn signal(
    diagnosis: BuiltinDiagnosis,
    replica: &ReplicaId,
    state: SignalState,
    at: Timestamp,
    evidence: String,
) -> Signal {
    let mut labels = BTreeMap::from([
        ("service".to_owned(), replica.service.to_string()),
        ("replica".to_owned(), replica.index.to_string()),
    ]);
    // Told apart from the detect stage's `bad_replica` (from the error share over a window) on the same
    // replica: each condition fires and resolves on its own.
    if diagnosis == BuiltinDiagnosis::BadReplica {
        labels.insert("source".to_owned(), "ejection".to_owned());
    }
    let severity = match diagnosis {
        BuiltinDiagnosis::CrashLoop | BuiltinDiagnosis::MemoryExhaustion => Severity::Critical,
        _ => Severity::Warning,
    };
    Signal {
        at,
        since: at,
        state,
        kind: SignalKind::Diagnosis,
        name: diagnosis.as_str().to_owned(),
        severity,
        service: Some(replica.service.clone()),
        replica: Some(replica.index),
        value: f64::NAN,
        labels,
        evidence,
    }
}

fn detail<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event.details.get(key).and_then(|value| value.as_str())
}

impl Builtins {
    /// Built-in diagnoses with crash loops counted within `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            firing: BTreeMap::new(),
            crashes: BTreeMap::new(),
            ready_since: BTreeMap::new(),
            back_since: BTreeMap::new(),
        }
    }

    /// Counts crash loops and their resolution within `window` from now on (a reload).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    fn fire(
        &mut self,
        diagnosis: BuiltinDiagnosis,
        replica: &ReplicaId,
        at: Timestamp,
        evidence: String,
    ) -> Option<Signal> {
        let firing = self.firing.entry(replica.clone()).or_default();
        firing.insert(diagnosis).then(|| signal(diagnosis, replica, SignalState::Firing, at, evidence))
    }

    fn resolve(
        &mut self,
        diagnosis: BuiltinDiagnosis,
        replica: &ReplicaId,
        at: Timestamp,
        evidence: &str,
    ) -> Option<Signal> {
        let firing = self.firing.get_mut(replica)?;
        firing.remove(&diagnosis).then(|| signal(diagnosis, replica, SignalState::Resolved, at, evidence.to_owned()))
    }

    /// Whether events of `kind` may raise or resolve a diagnosis (the others need not be looked at).
    pub fn concerns(kind: EventKind) -> bool {
        matches!(
            kind,
            EventKind::Exited
                | EventKind::GaveUp
                | EventKind::Unhealthy
                | EventKind::Unready
                | EventKind::Ready
                | EventKind::Stopped
                | EventKind::Ejected
                | EventKind::Returned
        )
    }

    /// The diagnosis signals an event raises or resolves.
    pub fn on_event(&mut self, event: &Event) -> Vec<Signal> {
        let (Some(service), Some(index)) = (&event.service, event.replica) else { return Vec::new() };
        let replica = ReplicaId::new(service.clone(), index);
        let at = event.at;
        let mut signals = Vec::new();
        match event.kind {
            EventKind::Exited => {
                self.ready_since.remove(&replica);
                // Only an end mend did not cause: its own stops (restarts, replacements) are not crashes.
                if detail(event, "cause") != Some("mend") {
                    signals.extend(self.fire(BuiltinDiagnosis::Crashed, &replica, at, event.message.clone()));
                    let crashes = self.crashes.entry(replica.clone()).or_default();
                    crashes.push_back(at);
                    while crashes
                        .front()
                        .is_some_and(|first| at.as_millis() - first.as_millis() > self.window.as_millis() as i64)
                    {
                        crashes.pop_front();
                    }
                    if crashes.len() >= CRASHES_FOR_A_LOOP {
                        let evidence = format!(
                            "{} crashes within {}s (last: {})",
                            crashes.len(),
                            self.window.as_secs(),
                            event.message
                        );
                        signals.extend(self.fire(BuiltinDiagnosis::CrashLoop, &replica, at, evidence));
                    }
                }
            }
            EventKind::GaveUp => {
                self.ready_since.remove(&replica);
                signals.extend(self.fire(BuiltinDiagnosis::CrashLoop, &replica, at, event.message.clone()));
            }
            EventKind::Unhealthy => {
                self.ready_since.remove(&replica);
                let hung = event.details.get("hung").and_then(|hung| hung.as_bool()).unwrap_or(false);
                let diagnosis = match detail(event, "check") {
                    Some("memory") => Some(BuiltinDiagnosis::MemoryExhaustion),
                    _ if hung => Some(BuiltinDiagnosis::Hung),
                    Some("liveness" | "startup") => Some(BuiltinDiagnosis::Unhealthy),
                    _ => None,
                };
                if let Some(diagnosis) = diagnosis {
                    signals.extend(self.fire(diagnosis, &replica, at, event.message.clone()));
                }
            }
            EventKind::Unready => {
                self.ready_since.remove(&replica);
                // Out of the ready set because a probe fails while the process runs (not a stop or an exit).
                if detail(event, "reason").is_some_and(|reason| reason.contains("probe")) {
                    signals.extend(self.fire(BuiltinDiagnosis::Unhealthy, &replica, at, event.message.clone()));
                }
            }
            EventKind::Ready => {
                self.ready_since.insert(replica.clone(), at);
                let evidence = "resolved: the replica is ready again";
                for diagnosis in [
                    BuiltinDiagnosis::Crashed,
                    BuiltinDiagnosis::Hung,
                    BuiltinDiagnosis::MemoryExhaustion,
                    BuiltinDiagnosis::Unhealthy,
                ] {
                    signals.extend(self.resolve(diagnosis, &replica, at, evidence));
                }
            }
            EventKind::Ejected => {
                self.back_since.remove(&replica);
                let ejection = ejection_facts(event);
                if let Some(evidence) = bad_replica_of(&ejection, index, at) {
                    signals.extend(self.fire(BuiltinDiagnosis::BadReplica, &replica, at, evidence));
                }
            }
            EventKind::Returned
                if self.firing.get(&replica).is_some_and(|firing| firing.contains(&BuiltinDiagnosis::BadReplica)) =>
            {
                self.back_since.insert(replica.clone(), at);
            }
            EventKind::Stopped => {
                // Stopped on purpose (an operator, a scale-in): nothing of it is a fault any more.
                self.ready_since.remove(&replica);
                self.back_since.remove(&replica);
                self.crashes.remove(&replica);
                let evidence = "resolved: the replica was stopped";
                for diagnosis in BuiltinDiagnosis::ALL {
                    signals.extend(self.resolve(diagnosis, &replica, at, evidence));
                }
            }
            _ => {}
        }
        signals
    }

    /// Resolves crash loops of replicas that have stayed ready for the window.
    pub fn on_tick(&mut self, now: Timestamp) -> Vec<Signal> {
        let stable: Vec<ReplicaId> = self
            .ready_since
            .iter()
            .filter(|(_, since)| now.as_millis() - since.as_millis() >= self.window.as_millis() as i64)
            .map(|(replica, _)| replica.clone())
            .collect();
        let mut signals = Vec::new();
        for replica in stable {
            self.crashes.remove(&replica);
            let evidence = format!("resolved: ready for {}s without a crash", self.window.as_secs());
            signals.extend(self.resolve(BuiltinDiagnosis::CrashLoop, &replica, now, &evidence));
        }
        let back: Vec<ReplicaId> = self
            .back_since
            .iter()
            .filter(|(_, since)| now.as_millis() - since.as_millis() >= BACK_FOR.as_millis() as i64)
            .map(|(replica, _)| replica.clone())
            .collect();
        for replica in back {
            self.back_since.remove(&replica);
            let evidence = format!("resolved: back in rotation for {}s without an ejection", BACK_FOR.as_secs());
            signals.extend(self.resolve(BuiltinDiagnosis::BadReplica, &replica, now, &evidence));
        }
        signals
    }
}

#[cfg(test)]
mod tests {
    use mend_types::ServiceName;
    use serde_json::json;

    use super::*;

    fn event(at_secs: i64, kind: EventKind, details: serde_json::Value) -> Event {
        let replica = ReplicaId::new(ServiceName::new("web").expect("valid"), 0);
        let mut event = Event::new(Timestamp::from_millis(at_secs * 1000), kind, kind.as_str()).replica(&replica);
        if let serde_json::Value::Object(map) = details {
            event.details = map;
        }
        event
    }

    fn names(signals: &[Signal]) -> Vec<String> {
        signals.iter().map(|s| format!("{} {}", s.name, s.state.as_str())).collect()
    }

    #[test]
    fn crashes_fire_resolve_on_ready_and_three_within_the_window_are_a_loop() {
        let mut builtins = Builtins::new(Duration::from_secs(60));
        let crash = |at| event(at, EventKind::Exited, json!({"cause": "program"}));
        assert_eq!(names(&builtins.on_event(&crash(0))), ["crashed firing"]);
        assert_eq!(names(&builtins.on_event(&event(1, EventKind::Ready, json!({})))), ["crashed resolved"]);
        // mend's own stop is not a crash.
        assert!(builtins.on_event(&event(2, EventKind::Exited, json!({"cause": "mend"}))).is_empty());
        builtins.on_event(&crash(10));
        assert_eq!(names(&builtins.on_event(&crash(20))), ["crash_loop firing"], "crashed is already firing");
        assert_eq!(names(&builtins.on_event(&event(21, EventKind::Ready, json!({})))), ["crashed resolved"]);
        assert!(builtins.on_tick(Timestamp::from_millis(60_000)).is_empty(), "not ready for the window yet");
        assert_eq!(names(&builtins.on_tick(Timestamp::from_millis(81_000))), ["crash_loop resolved"]);
    }

    fn ejected(at_secs: i64, status: u16, siblings: serde_json::Value) -> Event {
        event(
            at_secs,
            EventKind::Ejected,
            json!({"reason": "server_error", "status": status, "consecutive_failures": 3,
                   "siblings": siblings, "siblings_window_seconds": 30}),
        )
    }

    #[test]
    fn an_ejection_for_500s_beside_healthy_siblings_is_a_bad_replica_until_it_stays_back() {
        let mut builtins = Builtins::new(Duration::from_secs(60));
        let healthy =
            json!([{"replica": 1, "attempts": 400, "errors": 0}, {"replica": 2, "attempts": 390, "errors": 1}]);
        let fired = builtins.on_event(&ejected(43_203, 500, healthy.clone()));
        assert_eq!(names(&fired), ["bad_replica firing"]);
        assert_eq!(
            fired[0].evidence,
            "replica 0 answered 500 to 3 attempts in a row and was ejected at 12:00:03; replicas 1 and 2 answered 1 error to 790 attempts in the 30s before"
        );
        assert_eq!(fired[0].labels.get("source").map(String::as_str), Some("ejection"));
        // Back, ejected again within the 30 s: still firing, and the clock starts over.
        assert!(builtins.on_event(&event(43_208, EventKind::Returned, json!({}))).is_empty());
        assert!(builtins.on_event(&ejected(43_209, 500, healthy.clone())).is_empty(), "already firing");
        assert!(builtins.on_event(&event(43_219, EventKind::Returned, json!({}))).is_empty());
        assert!(builtins.on_tick(Timestamp::from_millis(43_248_000)).is_empty(), "back for 29 s");
        assert_eq!(names(&builtins.on_tick(Timestamp::from_millis(43_249_000))), ["bad_replica resolved"]);
        // Stopped: resolved at once.
        builtins.on_event(&ejected(43_300, 500, healthy));
        assert_eq!(names(&builtins.on_event(&event(43_301, EventKind::Stopped, json!({})))), ["bad_replica resolved"]);
    }

    #[test]
    fn near_misses_of_a_bad_replica_by_ejection() {
        let cases = [
            // Every replica fails: the service's fault, not this replica's.
            ("siblings failing", ejected(0, 500, json!([{"replica": 1, "attempts": 100, "errors": 30}]))),
            // Siblings that got nothing say nothing.
            ("siblings idle", ejected(0, 500, json!([{"replica": 1, "attempts": 0, "errors": 0}]))),
            ("siblings unknown", ejected(0, 500, json!(null))),
            // Ejected for failed connects: a crash, which has its own diagnosis.
            (
                "connect failures",
                event(
                    0,
                    EventKind::Ejected,
                    json!({"reason": "connect_failure", "consecutive_failures": 3,
                    "siblings": [{"replica": 1, "attempts": 100, "errors": 0}]}),
                ),
            ),
        ];
        for (name, ejection) in cases {
            let mut builtins = Builtins::new(Duration::from_secs(60));
            assert!(builtins.on_event(&ejection).is_empty(), "{name}");
        }
    }

    #[test]
    fn hangs_memory_and_failing_probes_have_their_diagnoses() {
        let mut builtins = Builtins::new(Duration::from_secs(60));
        let hung = event(0, EventKind::Unhealthy, json!({"check": "liveness", "hung": true}));
        assert_eq!(names(&builtins.on_event(&hung)), ["hung firing"]);
        let memory = event(0, EventKind::Unhealthy, json!({"check": "memory", "hung": false}));
        assert_eq!(names(&builtins.on_event(&memory)), ["memory_exhaustion firing"]);
        let unready = event(0, EventKind::Unready, json!({"reason": "readiness probe failed: 503"}));
        assert_eq!(names(&builtins.on_event(&unready)), ["unhealthy firing"]);
        assert!(builtins.on_event(&event(0, EventKind::Unready, json!({"reason": "stopping"}))).is_empty());
        let gave_up = event(0, EventKind::GaveUp, json!({}));
        assert_eq!(names(&builtins.on_event(&gave_up)), ["crash_loop firing"]);
        assert_eq!(
            names(&builtins.on_event(&event(1, EventKind::Stopped, json!({})))),
            ["crash_loop resolved", "hung resolved", "memory_exhaustion resolved", "unhealthy resolved"]
        );
    }
}
