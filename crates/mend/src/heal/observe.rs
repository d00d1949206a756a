//! What the live diagnosis reads, gathered at the edge: the services' series from the series store
//! (their replicas' CPU, memory and file descriptors; their proxies' request rate, error ratio and mean
//! latency per second, derived from the cumulative counters), their lifecycle facts (from the events on
//! the stream), their memory against its limit, and the caller → callee edges the proxies observed with
//! their error ratios. The diagnosis itself is pure (`mend_incident::RankingDiagnoser`).
//!
//! Bounded: the request names at most `RankingDiagnoser::max_services` services and a window of the
//! baseline plus the lookback (about ten minutes: 600 points a series at one a second); lifecycle facts
//! are kept [`FACTS_PER_SERVICE`] per service for [`FACTS_FOR`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;
use std::time::Duration;

use mend_config::Config;
use mend_diagnose::{
    Component, EdgeSource, Lifecycle, LifecycleFact, ProbeKind, Resource, ResourceUse, SeriesInput, ServiceFacts,
};
use mend_incident::{ObservationRequest, Observations};
use mend_observe::series::SeriesStore;
use mend_types::{Event, EventKind, ExitCause, ExitInfo, LastExit, ProbeOutcome, ServiceName, StopReason, Timestamp};

/// Lifecycle facts kept per service.
pub(crate) const FACTS_PER_SERVICE: usize = 64;
/// How long lifecycle facts are kept.
pub(crate) const FACTS_FOR: Duration = Duration::from_secs(900);
/// The window over which an observed edge's error ratio is taken.
pub(crate) const EDGE_WINDOW: Duration = Duration::from_secs(30);

/// The replicas' series diagnosis reads, as the runners record them.
const REPLICA_SERIES: [&str; 3] =
    ["mend_replica_cpu_percent", "mend_replica_resident_memory_bytes", "mend_replica_open_fds"];

/// The lifecycle fact an event is, with its service.
pub(crate) fn fact_of(event: &Event) -> Option<(ServiceName, LifecycleFact)> {
    let service = event.service.clone()?;
    let replica = event.replica?;
    let text = |key: &str| event.details.get(key).and_then(|value| value.as_str());
    let number =
        |key: &str| event.details.get(key).and_then(|value| value.as_i64()).and_then(|n| i32::try_from(n).ok());
    let what = match event.kind {
        EventKind::Exited => {
            let cause = match text("cause")? {
                "program" => ExitCause::Program,
                "external_signal" => ExitCause::ExternalSignal,
                "mend" => ExitCause::Mend(text("stop_reason").and_then(stop_reason).unwrap_or(StopReason::Restart)),
                _ => return None,
            };
            let core_dumped = event.details.get("core_dumped").and_then(|v| v.as_bool()).unwrap_or(false);
            let exit = ExitInfo { code: number("code"), signal: number("signal"), core_dumped };
            Lifecycle::Exited(LastExit { exit, cause })
        }
        EventKind::Unhealthy => Lifecycle::Replaced(text("stop_reason").and_then(stop_reason)?),
        EventKind::GaveUp => Lifecycle::GaveUp,
        // Out of the ready set because its probes fail while it runs; not because mend stops it or it
        // exited (those are facts of their own).
        EventKind::Unready if text("reason").is_some_and(|reason| reason.contains("probe")) => Lifecycle::Unready,
        EventKind::Ready => Lifecycle::Ready,
        EventKind::Ejected => Lifecycle::Ejected(mend_incident::builtin::ejection_facts(event)),
        EventKind::ProbeFailed => {
            let probe = match text("probe")? {
                "liveness" => ProbeKind::Liveness,
                "readiness" => ProbeKind::Readiness,
                "startup" => ProbeKind::Startup,
                _ => return None,
            };
            let busy = event.details.get("busy").and_then(|v| v.as_bool()).unwrap_or(false);
            let outcome = if busy {
                ProbeOutcome::Timeout { evidence: None }
            } else {
                ProbeOutcome::Failure { reason: text("reason").unwrap_or(&event.message).to_owned() }
            };
            Lifecycle::ProbeFailed { probe, outcome }
        }
        _ => return None,
    };
    Some((service, LifecycleFact { at: event.at, replica, what }))
}

fn stop_reason(name: &str) -> Option<StopReason> {
    [
        StopReason::Hung,
        StopReason::Liveness,
        StopReason::Busy,
        StopReason::Startup,
        StopReason::Memory,
        StopReason::Stop,
        StopReason::Restart,
    ]
    .into_iter()
    .find(|reason| reason.as_str() == name)
}

/// Recent lifecycle facts per service, from the stream's events.
#[derive(Default)]
pub(crate) struct FactLog {
    facts: HashMap<ServiceName, VecDeque<LifecycleFact>>,
}

impl FactLog {
    /// Takes `event` if it is a lifecycle fact.
    pub(crate) fn record(&mut self, event: &Event) {
        let Some((service, fact)) = fact_of(event) else { return };
        let oldest = fact.at.saturating_sub(FACTS_FOR);
        let facts = self.facts.entry(service).or_default();
        facts.push_back(fact);
        while facts.len() > FACTS_PER_SERVICE || facts.front().is_some_and(|f| f.at < oldest) {
            facts.pop_front();
        }
    }

    fn since(&self, service: &ServiceName, from: Timestamp) -> Vec<LifecycleFact> {
        self.facts
            .get(service)
            .map(|facts| facts.iter().filter(|f| f.at >= from).cloned().collect())
            .unwrap_or_default()
    }
}

/// Points summed across series at each time (the proxy's counters per release and status class, all
/// sampled at the same instants).
fn summed<'a>(
    store: &SeriesStore,
    labels: impl Iterator<Item = &'a mend_observe::series::Labels>,
    from: Timestamp,
    now: Timestamp,
) -> BTreeMap<i64, f64> {
    let mut sums: BTreeMap<i64, f64> = BTreeMap::new();
    for labels in labels {
        for point in store.range(labels, from, now) {
            if point.value.is_finite() {
                *sums.entry(point.at.as_millis()).or_insert(0.0) += point.value;
            }
        }
    }
    sums
}

/// Per-interval changes of a cumulative counter: `(at, increase, seconds)` between consecutive samples
/// (a decrease, a counter reset, gives nothing for that interval).
pub(crate) fn increases(counter: &BTreeMap<i64, f64>) -> BTreeMap<i64, (f64, f64)> {
    counter
        .iter()
        .zip(counter.iter().skip(1))
        .filter_map(|((t0, v0), (t1, v1))| {
            let seconds = (t1 - t0) as f64 / 1000.0;
            (v1 >= v0 && seconds > 0.0).then_some((*t1, (v1 - v0, seconds)))
        })
        .collect()
}

/// The proxy's figures of one service as per-second series: requests per second, the share of them
/// answered 5xx and their mean latency (intervals without requests have no ratio and no latency).
pub(crate) fn proxy_series(
    component: &Component,
    total: &BTreeMap<i64, f64>,
    errors: &BTreeMap<i64, f64>,
    latency_sum: &BTreeMap<i64, f64>,
    latency_count: &BTreeMap<i64, f64>,
) -> Vec<SeriesInput> {
    let requests = increases(total);
    let failed = increases(errors);
    let seconds = increases(latency_sum);
    let counted = increases(latency_count);
    let make = |metric: &str, points: Vec<(Timestamp, f64)>| SeriesInput {
        component: component.clone(),
        instance: None,
        metric: metric.to_owned(),
        points,
    };
    let rate = requests.iter().map(|(at, (n, secs))| (Timestamp::from_millis(*at), n / secs)).collect();
    let ratio = requests
        .iter()
        .filter(|(_, (n, _))| *n > 0.0)
        .map(|(at, (n, _))| (Timestamp::from_millis(*at), failed.get(at).map_or(0.0, |(e, _)| (e / n).min(1.0))))
        .collect();
    let mean = counted
        .iter()
        .filter(|(_, (n, _))| *n > 0.0)
        .filter_map(|(at, (n, _))| Some((Timestamp::from_millis(*at), seconds.get(at)?.0 / n)))
        .collect();
    vec![
        make("mend_proxy_requests_per_second", rate),
        make("mend_proxy_error_ratio", ratio),
        make("mend_proxy_request_duration_mean_seconds", mean),
    ]
}

/// Gathers what `request` asks for from the series store, the lifecycle log and the config. The store
/// is read-locked one service at a time, so that the runners and samplers that append every second wait
/// for one service's reading at most.
pub(crate) fn gather(
    request: &ObservationRequest,
    lock: &RwLock<SeriesStore>,
    facts: &FactLog,
    config: &Config,
    span_edges: &[mend_trace::SpanEdge],
    now: Timestamp,
) -> Observations {
    let from = request.from;
    let mut services = Vec::new();
    let mut series = Vec::new();
    for name in &request.services {
        let Ok(store) = lock.read() else { break };
        let component = Component::from(name);
        let service_config = config.services.iter().find(|s| s.name == *name);
        let mut service_facts =
            ServiceFacts::new(component.clone(), service_config.map_or(1, |s| s.total_replicas().max(1)));
        service_facts.lifecycle = facts.since(name, from);
        let matching = [("service", name.as_str())];
        for metric in REPLICA_SERIES {
            for labels in store.select(metric, &matching) {
                let points: Vec<(Timestamp, f64)> = store
                    .range(labels, from, now)
                    .into_iter()
                    .filter(|p| p.value.is_finite())
                    .map(|p| (p.at, p.value))
                    .collect();
                let instance = labels.get("replica").map(str::to_owned);
                if metric == "mend_replica_resident_memory_bytes"
                    && let (Some(limit), Some(&(_, used))) =
                        (service_config.and_then(|s| s.max_memory_bytes), points.last())
                {
                    service_facts.resources.push(ResourceUse {
                        replica: instance.as_deref().and_then(|i| i.parse().ok()),
                        resource: Resource::Memory,
                        used,
                        limit: limit as f64,
                        seconds_to_limit: None,
                    });
                }
                if !points.is_empty() {
                    series.push(SeriesInput {
                        component: component.clone(),
                        instance,
                        metric: metric.to_owned(),
                        points,
                    });
                }
            }
        }
        let total = summed(&store, store.select("mend_proxy_requests_total", &matching), from, now);
        if !total.is_empty() {
            let errors_matching = [("service", name.as_str()), ("code", "5xx")];
            let errors = summed(&store, store.select("mend_proxy_requests_total", &errors_matching), from, now);
            let latency_sum =
                summed(&store, store.select("mend_proxy_request_duration_seconds_sum", &matching), from, now);
            let latency_count =
                summed(&store, store.select("mend_proxy_request_duration_seconds_count", &matching), from, now);
            series.extend(
                proxy_series(&component, &total, &errors, &latency_sum, &latency_count)
                    .into_iter()
                    .filter(|s| !s.points.is_empty()),
            );
        }
        services.push(service_facts);
    }
    let mut edges = lock.read().map(|store| edges(request, &store, config, now)).unwrap_or_default();
    merge_span_edges(&mut edges, request, config, span_edges);
    Observations { now, services, series, edges }
}

/// The proxies' observed caller → callee edges touching the request's services, with the error ratio of
/// the calls over the last [`EDGE_WINDOW`].
fn edges(
    request: &ObservationRequest,
    store: &SeriesStore,
    config: &Config,
    now: Timestamp,
) -> Vec<(ServiceName, ServiceName, EdgeSource)> {
    let known = |name: &str| config.services.iter().find(|s| s.name.as_str() == name).map(|s| s.name.clone());
    let window_start = now.saturating_sub(EDGE_WINDOW);
    let mut found = Vec::new();
    for labels in store.select("mend_proxy_edge_requests_total", &[]) {
        let (Some(caller), Some(callee)) = (labels.get("caller").and_then(known), labels.get("callee").and_then(known))
        else {
            continue;
        };
        if !request.services.contains(&caller) && !request.services.contains(&callee) {
            continue;
        }
        let increase = |points: Vec<mend_observe::series::Point>| match (points.first(), points.last()) {
            (Some(first), Some(last)) if last.value >= first.value => Some(last.value - first.value),
            _ => None,
        };
        let requests = increase(store.range(labels, window_start, now));
        let pairs = [("caller", caller.as_str()), ("callee", callee.as_str())];
        let errors = store
            .select("mend_proxy_edge_errors_total", &pairs)
            .next()
            .and_then(|labels| increase(store.range(labels, window_start, now)));
        let error_ratio = match (requests, errors) {
            (Some(n), Some(e)) if n > 0.0 => Some((e / n).min(1.0)),
            _ => None,
        };
        found.push((caller, callee, EdgeSource::Observed { error_ratio, p99_seconds: None }));
    }
    found
}

/// Adds what the stored spans say to the proxies' edges: the p99 of an edge the proxy counted (its
/// counters have no latency per edge), and the edges only trace context shows (a service that passes
/// `traceparent` on but sends no `x-mend-caller`), with their error share too.
fn merge_span_edges(
    edges: &mut Vec<(ServiceName, ServiceName, EdgeSource)>,
    request: &ObservationRequest,
    config: &Config,
    span_edges: &[mend_trace::SpanEdge],
) {
    let known = |name: &str| config.services.iter().find(|s| s.name.as_str() == name).map(|s| s.name.clone());
    for edge in span_edges {
        let (Some(caller), Some(callee)) = (known(&edge.caller), known(&edge.callee)) else { continue };
        if edge.calls == 0 || (!request.services.contains(&caller) && !request.services.contains(&callee)) {
            continue;
        }
        let p99 = Some(edge.p99.as_secs_f64());
        match edges.iter_mut().find(|(from, to, _)| *from == caller && *to == callee) {
            Some((_, _, EdgeSource::Observed { p99_seconds, .. })) => *p99_seconds = p99,
            Some((_, _, source)) => {
                *source = EdgeSource::Observed { error_ratio: Some(edge.error_ratio()), p99_seconds: p99 }
            }
            None => edges.push((
                caller,
                callee,
                EdgeSource::Observed { error_ratio: Some(edge.error_ratio()), p99_seconds: p99 },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: EventKind, details: serde_json::Value) -> Event {
        let replica = mend_types::ReplicaId::new(ServiceName::new("back").expect("valid"), 1);
        let mut event = Event::new(Timestamp::from_millis(5_000), kind, "message").replica(&replica);
        if let serde_json::Value::Object(map) = details {
            event.details = map;
        }
        event
    }

    #[test]
    fn events_become_lifecycle_facts() {
        let check = |event: Event, expected: Option<Lifecycle>| {
            assert_eq!(fact_of(&event).map(|(_, fact)| fact.what), expected, "{event:?}");
        };
        let exited = |cause: ExitCause, exit: ExitInfo| Some(Lifecycle::Exited(LastExit { exit, cause }));
        check(
            event(EventKind::Exited, json!({"cause": "program", "code": 3})),
            exited(ExitCause::Program, ExitInfo::code(3)),
        );
        check(
            event(EventKind::Exited, json!({"cause": "external_signal", "signal": 9})),
            exited(ExitCause::ExternalSignal, ExitInfo::signal(9)),
        );
        check(
            event(EventKind::Exited, json!({"cause": "mend", "stop_reason": "memory", "signal": 9})),
            exited(ExitCause::Mend(StopReason::Memory), ExitInfo::signal(9)),
        );
        check(event(EventKind::Exited, json!({"cause": "aliens"})), None);
        check(
            event(EventKind::Unhealthy, json!({"check": "liveness", "hung": true, "stop_reason": "hung"})),
            Some(Lifecycle::Replaced(StopReason::Hung)),
        );
        check(event(EventKind::Unhealthy, json!({"check": "liveness"})), None);
        check(
            event(EventKind::ProbeFailed, json!({"probe": "readiness", "reason": "status 503"})),
            Some(Lifecycle::ProbeFailed {
                probe: ProbeKind::Readiness,
                outcome: ProbeOutcome::Failure { reason: "status 503".into() },
            }),
        );
        check(
            event(EventKind::Unready, json!({"reason": "readiness probe failed: status 503"})),
            Some(Lifecycle::Unready),
        );
        check(event(EventKind::Unready, json!({"reason": "stopping"})), None);
        check(event(EventKind::Started, json!({})), None);
        let mut no_replica = event(EventKind::GaveUp, json!({}));
        no_replica.replica = None;
        check(no_replica, None);
    }

    #[test]
    fn the_fact_log_is_bounded_by_count_and_age() {
        let mut log = FactLog::default();
        let back = ServiceName::new("back").expect("valid");
        for second in 0..100 {
            let mut ready = event(EventKind::Ready, json!({}));
            ready.at = Timestamp::from_millis(second * 1000);
            log.record(&ready);
        }
        assert_eq!(log.since(&back, Timestamp::from_millis(0)).len(), FACTS_PER_SERVICE);
        let mut late = event(EventKind::Ready, json!({}));
        late.at = Timestamp::from_millis(2_000_000);
        log.record(&late);
        assert_eq!(log.since(&back, Timestamp::from_millis(0)).len(), 1);
    }

    #[test]
    fn counters_become_rates_ratios_and_mean_latencies_per_interval() {
        let counter = |values: &[(i64, f64)]| values.iter().map(|&(t, v)| (t * 1000, v)).collect::<BTreeMap<_, _>>();
        let total = counter(&[(0, 100.0), (1, 110.0), (2, 110.0), (3, 130.0), (4, 5.0), (6, 25.0)]);
        let errors = counter(&[(0, 0.0), (1, 0.0), (2, 0.0), (3, 10.0), (4, 10.0), (6, 30.0)]);
        let sum = counter(&[(0, 1.0), (1, 1.1), (2, 1.1), (3, 3.1), (6, 3.3)]);
        let count = counter(&[(0, 100.0), (1, 110.0), (2, 110.0), (3, 130.0), (6, 150.0)]);
        let series = proxy_series(&Component::new("back"), &total, &errors, &sum, &count);
        let points = |idx: usize| -> Vec<(i64, f64)> {
            series[idx].points.iter().map(|(t, v)| (t.as_millis() / 1000, (v * 1000.0).round() / 1000.0)).collect()
        };
        assert_eq!(series[0].metric, "mend_proxy_requests_per_second");
        // The reset between 3 and 4 gives nothing; 4 to 6 is 20 requests over 2 s.
        assert_eq!(points(0), [(1, 10.0), (2, 0.0), (3, 20.0), (6, 10.0)]);
        assert_eq!(points(1), [(1, 0.0), (3, 0.5), (6, 1.0)], "no requests, no ratio");
        assert_eq!(points(2), [(1, 0.01), (3, 0.1), (6, 0.01)]);
    }
}
