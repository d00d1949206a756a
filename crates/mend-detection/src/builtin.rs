//! The built-in diagnoses drawn from the proxies' figures, evaluated with the rules every second:
//!
//! - `bad_replica`: errors concentrated on one replica: over the last 30 s, at least 20 % of its attempts
//!   answered 5xx (at least 5 attempts), at least three times the error ratio of the other replicas of
//!   its release taken together (which must have had traffic: otherwise nothing says the fault is the
//!   replica's; a canary replica is judged against the canary's others, its release against the stable
//!   one by the rollout's verdict, `bad_release`). Only a replica in its proxy's table now (sampled in
//!   the last [`PRESENT_WITHIN_MS`]) is judged: one stopped, replaced or rolled back keeps its attempts
//!   in the window for 30 s, and is no longer anything to diagnose. Fires after 10 s, resolves 10 s
//!   after it stops holding.
//! - `overload`: latency and load high on every replica: the service's 90th percentile latency over 30 s
//!   is at least 1 s and every replica in the proxy's table has at least 2 requests in flight. Fires after
//!   30 s.
//! - the built-in rule `ServiceErrors` (a rule's signal, not a diagnosis: it says what clients see, the
//!   diagnosis says why): at least half of the service's requests through its proxy answered 5xx over
//!   the last 10 s (at least 10 requests, its proxy's own answers included: no replica to take one), and
//!   still over the last 3 s (so that a service healed meanwhile, by a policy on a faster rule of the
//!   user's, say, is not an incident after it recovered because its window still holds the errors), while
//!   at least one replica is in its proxy's table (a service stopped or scaled to 0 answers 503 by design;
//!   one with every replica down has its own diagnoses). Fires after 5 s, resolves 5 s after it stops
//!   holding (a share hovering at one half does not flap); at a steady rate a service that starts failing
//!   every request raises it about 10 s in, and clears about 8 s after it recovered. Without it a service
//!   failing every request with every replica failing alike (a dependency down, a bad config) raised
//!   nothing unless a `[[rule]]` said so.
//!
//! The arithmetic is pure ([`bad_replicas`], [`overloaded`]); the figures come from PromQL over the
//! series the traffic sampler records (`mend_proxy_backend_attempts_total`, `..._in_flight`,
//! `mend_proxy_request_duration_seconds_bucket`).

use std::collections::{BTreeMap, BTreeSet};

use mend_detect::alerting::{AlertTransition, LabelSet, RuleState};
use mend_query::{EvalOptions, Query, Storage, Value};
use mend_types::{BuiltinDiagnosis, Severity, Signal, SignalKind, SignalState, Timestamp};

/// Least share of a replica's attempts answered 5xx for it to be a bad replica.
pub const BAD_REPLICA_ERROR_RATIO: f64 = 0.2;
/// How many times the other replicas' error ratio the bad one's must be.
pub const BAD_REPLICA_CONCENTRATION: f64 = 3.0;
/// Least attempts in the window for a ratio to mean something.
pub const BAD_REPLICA_MIN_ATTEMPTS: f64 = 5.0;
/// Latency (90th percentile) from which a service may be overloaded.
pub const OVERLOAD_LATENCY_SECONDS: f64 = 1.0;
/// Requests in flight on every replica from which a service may be overloaded.
pub const OVERLOAD_IN_FLIGHT: f64 = 2.0;
/// Least share of a service's requests answered 5xx for `ServiceErrors`: most of them, where a share that
/// low only a retry storm or a bad replica (with its own diagnosis) reaches.
pub const SERVICE_ERROR_RATIO: f64 = 0.5;
/// Least requests in `ServiceErrors`' window for its share to mean something.
pub const SERVICE_MIN_REQUESTS: f64 = 10.0;

/// How recent a replica's `mend_proxy_backend_in_flight` sample must be for it to be in its proxy's
/// table now (the traffic stage samples every second, and only the replicas in the table).
pub const PRESENT_WITHIN_MS: i64 = 3000;

/// A replica as the proxy's series name it: (service, release, replica).
pub type ReplicaKey = (String, String, String);

/// A replica's attempts and 5xx answers over the window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Attempts {
    /// Attempts.
    pub total: f64,
    /// Of which 5xx.
    pub errors: f64,
}

/// The replicas of each service whose errors are concentrated on them, among those `present` (in their
/// proxy's table now), compared with the other replicas of their release: (service, replica, error
/// ratio).
pub fn bad_replicas(
    attempts: &BTreeMap<ReplicaKey, Attempts>,
    present: &BTreeSet<ReplicaKey>,
) -> Vec<(String, String, f64)> {
    let mut bad = Vec::new();
    for (key, mine) in attempts {
        let (service, release, replica) = key;
        if mine.total < BAD_REPLICA_MIN_ATTEMPTS || !present.contains(key) {
            continue;
        }
        let ratio = mine.errors / mine.total;
        if ratio < BAD_REPLICA_ERROR_RATIO {
            continue;
        }
        let others = attempts.iter().filter(|((s, rel, r), _)| s == service && rel == release && r != replica).fold(
            Attempts::default(),
            |sum, (_, a)| Attempts { total: sum.total + a.total, errors: sum.errors + a.errors },
        );
        if others.total < 1.0 {
            continue;
        }
        let others_ratio = others.errors / others.total;
        if ratio >= BAD_REPLICA_CONCENTRATION * others_ratio {
            bad.push((service.clone(), replica.clone(), ratio));
        }
    }
    bad
}

/// The services whose requests mostly failed: (service, share answered 5xx over the window), from each
/// service's requests and 5xx answers over the window and over its last seconds (`recent`), where most
/// must still fail.
pub fn failing_services(
    window: &BTreeMap<String, Attempts>,
    recent: &BTreeMap<String, Attempts>,
) -> Vec<(String, f64)> {
    let still_failing = |service: &String| {
        recent.get(service).is_some_and(|now| now.total > 0.0 && now.errors / now.total >= SERVICE_ERROR_RATIO)
    };
    window
        .iter()
        .filter(|(service, seen)| seen.total >= SERVICE_MIN_REQUESTS && still_failing(service))
        .map(|(service, seen)| (service.clone(), seen.errors / seen.total))
        .filter(|(_, ratio)| *ratio >= SERVICE_ERROR_RATIO)
        .collect()
}

/// Whether a service with 90th percentile latency `p90` and `in_flight` requests per replica is overloaded.
pub fn overloaded(p90: f64, in_flight: &[f64]) -> bool {
    p90 >= OVERLOAD_LATENCY_SECONDS && !in_flight.is_empty() && in_flight.iter().all(|n| *n >= OVERLOAD_IN_FLIGHT)
}

/// The built-in proxy diagnoses with their alert state.
pub struct ProxyDiagnoses {
    totals: Query,
    errors: Query,
    p90: Query,
    in_flight: Query,
    requests: Query,
    failed_requests: Query,
    recent_requests: Query,
    recent_failed_requests: Query,
    bad_replica: RuleState,
    overload: RuleState,
    service_errors: RuleState,
}

fn query(text: &str) -> Option<Query> {
    match Query::parse(text) {
        Ok(query) => Some(query),
        Err(error) => {
            tracing::error!(expr = text, error = %error, "built-in diagnosis query refused");
            None
        }
    }
}

fn vector(query: &Query, storage: &dyn Storage, now: Timestamp, options: &EvalOptions) -> Vec<(LabelSet, f64)> {
    match query.eval_instant(storage, now.as_millis(), options) {
        Ok(Value::Vector(samples)) => samples
            .into_iter()
            .map(|s| (s.labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(), s.value))
            .collect(),
        _ => Vec::new(),
    }
}

fn label(labels: &LabelSet, name: &str) -> String {
    labels.get(name).cloned().unwrap_or_default()
}

impl ProxyDiagnoses {
    /// The diagnoses (None if a query does not parse, which is a bug).
    pub fn new() -> Option<Self> {
        Some(Self {
            totals: query("sum by (service, release, replica) (increase(mend_proxy_backend_attempts_total[30s]))")?,
            errors: query(
                "sum by (service, release, replica) (increase(mend_proxy_backend_attempts_total{code=\"5xx\"}[30s]))",
            )?,
            p90: query(
                "histogram_quantile(0.9, sum by (service, le) (rate(mend_proxy_request_duration_seconds_bucket{release!=\"proxy\"}[30s])))",
            )?,
            in_flight: query("mend_proxy_backend_in_flight")?,
            requests: query("sum by (service) (increase(mend_proxy_requests_total[10s]))")?,
            failed_requests: query("sum by (service) (increase(mend_proxy_requests_total{code=\"5xx\"}[10s]))")?,
            recent_requests: query("sum by (service) (increase(mend_proxy_requests_total[3s]))")?,
            recent_failed_requests: query("sum by (service) (increase(mend_proxy_requests_total{code=\"5xx\"}[3s]))")?,
            bad_replica: RuleState::default(),
            overload: RuleState::default(),
            service_errors: RuleState::default(),
        })
    }

    /// One round at `now`: the signals of what started or stopped holding.
    pub fn evaluate(&mut self, storage: &dyn Storage, now: Timestamp, options: &EvalOptions) -> Vec<Signal> {
        let now_secs = now.as_secs_f64();
        let key = |labels: &LabelSet| (label(labels, "service"), label(labels, "release"), label(labels, "replica"));
        let mut attempts: BTreeMap<ReplicaKey, Attempts> = BTreeMap::new();
        for (labels, total) in vector(&self.totals, storage, now, options) {
            attempts.entry(key(&labels)).or_default().total = total;
        }
        for (labels, errors) in vector(&self.errors, storage, now, options) {
            attempts.entry(key(&labels)).or_default().errors = errors;
        }
        let recent = EvalOptions { lookback_delta_ms: PRESENT_WITHIN_MS, ..*options };
        let present: BTreeSet<ReplicaKey> =
            vector(&self.in_flight, storage, now, &recent).iter().map(|(labels, _)| key(labels)).collect();
        let bad: Vec<(LabelSet, f64)> = bad_replicas(&attempts, &present)
            .into_iter()
            .map(|(service, replica, ratio)| {
                (LabelSet::from([("service".to_owned(), service), ("replica".to_owned(), replica)]), ratio)
            })
            .collect();
        let mut signals = Vec::new();
        for transition in self.bad_replica.evaluate(bad, now_secs, 10.0, 10.0) {
            let evidence = if transition.firing {
                format!(
                    "{:.0}% of the attempts on replica {} answered 5xx over 30s, at least {BAD_REPLICA_CONCENTRATION} times the other replicas' share",
                    transition.value * 100.0,
                    label(&transition.labels, "replica")
                )
            } else {
                "resolved: the replica's errors are no longer concentrated on it".to_owned()
            };
            signals.push(signal(
                SignalKind::Diagnosis,
                BuiltinDiagnosis::BadReplica.as_str(),
                transition,
                now,
                evidence,
            ));
        }
        let mut in_flight: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (labels, value) in vector(&self.in_flight, storage, now, options) {
            in_flight.entry(label(&labels, "service")).or_default().push(value);
        }
        let services: BTreeSet<String> = in_flight.keys().cloned().collect();
        let mut overloaded_now = Vec::new();
        for (labels, p90) in vector(&self.p90, storage, now, options) {
            let service = label(&labels, "service");
            if services.contains(&service) && overloaded(p90, &in_flight[&service]) {
                overloaded_now.push((LabelSet::from([("service".to_owned(), service)]), p90));
            }
        }
        for transition in self.overload.evaluate(overloaded_now, now_secs, 30.0, 10.0) {
            let evidence = if transition.firing {
                format!(
                    "90th percentile latency {:.2}s over 30s with every replica at {OVERLOAD_IN_FLIGHT}+ requests in flight",
                    transition.value
                )
            } else {
                "resolved: latency or load came down".to_owned()
            };
            signals.push(signal(SignalKind::Diagnosis, BuiltinDiagnosis::Overload.as_str(), transition, now, evidence));
        }
        let per_service = |totals: &Query, errors: &Query| {
            let mut seen: BTreeMap<String, Attempts> = BTreeMap::new();
            for (labels, total) in vector(totals, storage, now, options) {
                seen.entry(label(&labels, "service")).or_default().total = total;
            }
            for (labels, failed) in vector(errors, storage, now, options) {
                seen.entry(label(&labels, "service")).or_default().errors = failed;
            }
            seen
        };
        let window = per_service(&self.requests, &self.failed_requests);
        let recent = per_service(&self.recent_requests, &self.recent_failed_requests);
        // A service with no replica in its proxy's table (stopped, scaled to 0, every replica down) answers
        // 503 by design or has its own diagnoses (crashed, crash_loop): not this rule's to say.
        let routable: BTreeSet<&String> = present.iter().map(|(service, _, _)| service).collect();
        let failing = failing_services(&window, &recent)
            .into_iter()
            .filter(|(service, _)| routable.contains(service))
            .map(|(service, ratio)| (LabelSet::from([("service".to_owned(), service)]), ratio));
        for transition in self.service_errors.evaluate(failing, now_secs, 5.0, 5.0) {
            let service = label(&transition.labels, "service");
            let evidence = if transition.firing {
                format!(
                    "{:.0}% of the requests to {service} through its proxy answered 5xx over the last 10s",
                    transition.value * 100.0
                )
            } else {
                format!("resolved: fewer than half of the requests to {service} answer 5xx")
            };
            signals.push(signal(SignalKind::Rule, mend_types::SERVICE_ERRORS_RULE, transition, now, evidence));
        }
        signals
    }
}

/// The signal of `transition` of the built-in named `name` (a diagnosis, or the built-in rule).
fn signal(kind: SignalKind, name: &str, transition: AlertTransition, now: Timestamp, evidence: String) -> Signal {
    let labels = transition.labels;
    Signal {
        at: now,
        since: Timestamp::from_millis((transition.active_since * 1000.0) as i64),
        state: if transition.firing { SignalState::Firing } else { SignalState::Resolved },
        kind,
        name: name.to_owned(),
        severity: Severity::Warning,
        service: labels.get("service").and_then(|name| mend_types::ServiceName::new(name).ok()),
        replica: labels.get("replica").and_then(|replica| replica.parse().ok()),
        value: transition.value,
        labels,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str, release: &str, replica: &str) -> ReplicaKey {
        (service.to_owned(), release.to_owned(), replica.to_owned())
    }

    /// Rows (service, release, replica, attempts, errors); every replica present unless `gone`.
    fn bad(rows: &[(&str, &str, &str, f64, f64)], gone: &[&str]) -> Vec<(String, String, f64)> {
        let attempts = rows
            .iter()
            .map(|(s, rel, r, total, errors)| (key(s, rel, r), Attempts { total: *total, errors: *errors }))
            .collect();
        let present =
            rows.iter().filter(|(_, _, r, _, _)| !gone.contains(r)).map(|(s, rel, r, _, _)| key(s, rel, r)).collect();
        bad_replicas(&attempts, &present)
    }

    #[test]
    fn errors_concentrated_on_one_replica_make_it_bad_and_spread_errors_do_not() {
        let concentrated = [("web", "stable", "0", 100.0, 1.0), ("web", "stable", "1", 100.0, 50.0)];
        assert_eq!(bad(&concentrated, &[]), [("web".to_owned(), "1".to_owned(), 0.5)]);
        let spread = [("web", "stable", "0", 100.0, 40.0), ("web", "stable", "1", 100.0, 50.0)];
        assert!(bad(&spread, &[]).is_empty());
        // Alone, or with too little traffic, nothing says the fault is the replica's.
        assert!(bad(&[("web", "stable", "1", 100.0, 50.0)], &[]).is_empty());
        assert!(bad(&[("web", "stable", "0", 100.0, 0.0), ("web", "stable", "1", 4.0, 4.0)], &[]).is_empty());
        assert!(overloaded(1.5, &[3.0, 2.0]) && !overloaded(1.5, &[3.0, 1.0]) && !overloaded(0.5, &[9.0]));
    }

    #[test]
    fn a_replica_gone_from_the_table_or_of_another_release_is_not_a_bad_replica() {
        // A rolled-back canary: its 30 s window still holds its 500s, but it is stopped.
        let rolled_back = [
            ("web", "stable", "0", 100.0, 0.0),
            ("web", "stable", "1", 100.0, 0.0),
            ("web", "canary", "2", 40.0, 12.0),
        ];
        assert!(bad(&rolled_back, &["2"]).is_empty(), "a replica that no longer exists is not diagnosed");
        // While it runs, a lone canary replica is the rollout's to judge (`bad_release`), not compared
        // with the stable replicas.
        assert!(bad(&rolled_back, &[]).is_empty());
        // Two canary replicas, one bad: a bad replica of the canary.
        let canaries =
            [("web", "stable", "0", 100.0, 0.0), ("web", "canary", "2", 40.0, 0.0), ("web", "canary", "3", 40.0, 12.0)];
        assert_eq!(bad(&canaries, &[]), [("web".to_owned(), "3".to_owned(), 0.3)]);
        // A stopped stable replica is not judged either, nor does it make its siblings bad.
        let stopped = [("web", "stable", "0", 100.0, 60.0), ("web", "stable", "1", 100.0, 0.0)];
        assert!(bad(&stopped, &["0"]).is_empty());
    }

    #[test]
    fn a_service_whose_requests_mostly_fail_is_failing_and_a_few_errors_or_requests_are_not() {
        let figures = |rows: &[(&str, f64, f64)]| -> BTreeMap<String, Attempts> {
            rows.iter()
                .map(|(service, total, errors)| ((*service).to_owned(), Attempts { total: *total, errors: *errors }))
                .collect()
        };
        let still = figures(&[("web", 15.0, 15.0), ("api", 15.0, 15.0)]);
        let seen = |rows: &[(&str, f64, f64)]| failing_services(&figures(rows), &still);
        assert_eq!(seen(&[("web", 50.0, 25.0), ("api", 50.0, 24.0)]), [("web".to_owned(), 0.5)]);
        assert!(seen(&[("web", 9.0, 9.0)]).is_empty(), "too few requests to say");
        assert!(seen(&[("web", 0.0, 0.0)]).is_empty());
        // Healed meanwhile: the window still holds the errors, its last seconds do not.
        let window = figures(&[("web", 50.0, 40.0)]);
        assert!(failing_services(&window, &figures(&[("web", 15.0, 1.0)])).is_empty());
        assert!(failing_services(&window, &figures(&[])).is_empty(), "no traffic lately: nothing to say");
    }
}
