//! The autoscalers at the edge: every service's [`Autoscaler`] is fed an observation from the series
//! store at its interval; a change goes to the healer, which journals it and has the guard grant it
//! (bounds, `max_unavailable`), and runs through the executor like any scale. A change counts in the
//! autoscaler's rate limits and flap budget once it succeeded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use mend_act::{Autoscaler, Decision, Healer, Observation, World};
use mend_api::AutoscaleDto;
use mend_config::{AutoscaleMetric, Config};
use mend_observe::series::SeriesStore;
use mend_query::{EvalOptions, Query, Value};
use mend_supervisor::Supervisor;
use mend_types::{ActionId, ServiceName, Severity, Signal, SignalKind, SignalState, Timestamp};

/// The name of the signal raised when an autoscaler's flap budget holds its count.
pub(crate) const FLAPPING: &str = "autoscale_flapping";

struct Entry {
    autoscaler: Autoscaler,
    /// The query it evaluates (CPU: the replicas' CPU series).
    query: Option<Query>,
    next_at: Timestamp,
    /// The last refusal journalled (the same refusal is not journalled again at every interval).
    last_refusal: Option<String>,
    /// The flap signal is firing.
    flapping: bool,
}

/// Every autoscaled service's autoscaler, and the changes in flight.
pub(crate) struct Autoscaling {
    entries: BTreeMap<ServiceName, Entry>,
    /// Scales under way: service, from, to.
    in_flight: HashMap<ActionId, (ServiceName, u32, u32)>,
    /// What the API shows.
    shown: Arc<Mutex<BTreeMap<String, AutoscaleDto>>>,
}

fn query_of(service: &ServiceName, metric: &AutoscaleMetric) -> Option<Query> {
    let expr = match metric {
        AutoscaleMetric::Cpu => mend_act::cpu_query(service.as_str()),
        AutoscaleMetric::Query(expr) => expr.clone(),
    };
    // Checked at config load; a failure here leaves the autoscaler without data (it holds).
    Query::parse(&expr).map_err(|error| tracing::error!(service = %service, error = %error, "autoscale query")).ok()
}

impl Autoscaling {
    pub(crate) fn new(config: &Config) -> Self {
        let mut autoscaling =
            Self { entries: BTreeMap::new(), in_flight: HashMap::new(), shown: Arc::new(Mutex::new(BTreeMap::new())) };
        autoscaling.reconfigure(config, Timestamp::from_millis(0));
        autoscaling
    }

    /// What the API reads.
    pub(crate) fn shown(&self) -> Arc<Mutex<BTreeMap<String, AutoscaleDto>>> {
        self.shown.clone()
    }

    /// Takes a reloaded config: new autoscalers start, removed ones go, changed ones keep their history.
    pub(crate) fn reconfigure(&mut self, config: &Config, now: Timestamp) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        self.entries.retain(|name, _| config.service(name.as_str()).is_some_and(|s| s.autoscale.is_some()));
        shown.retain(|name, _| config.service(name).is_some_and(|s| s.autoscale.is_some()));
        for service in &config.services {
            let Some(spec) = &service.autoscale else { continue };
            let dto = shown.entry(service.name.to_string()).or_insert_with(|| AutoscaleDto {
                min: spec.min,
                max: spec.max,
                metric: String::new(),
                target: spec.target,
                observed: None,
                desired: None,
                last: None,
            });
            (dto.min, dto.max, dto.metric, dto.target) =
                (spec.min, spec.max, spec.metric.label().to_owned(), spec.target);
            match self.entries.get_mut(&service.name) {
                Some(entry) if entry.autoscaler.spec() == spec => {}
                Some(entry) => {
                    entry.query = query_of(&service.name, &spec.metric);
                    entry.autoscaler.reconfigure(spec.clone());
                }
                None => {
                    self.entries.insert(
                        service.name.clone(),
                        Entry {
                            autoscaler: Autoscaler::new(spec.clone()),
                            query: query_of(&service.name, &spec.metric),
                            next_at: now.saturating_add(spec.interval),
                            last_refusal: None,
                            flapping: false,
                        },
                    );
                }
            }
        }
    }

    /// Runs the autoscalers that are due: their decisions (records to journal, permits to run, signals).
    pub(crate) fn tick(
        &mut self,
        healer: &mut Healer,
        supervisor: &Supervisor,
        series: &RwLock<SeriesStore>,
        world: &World,
        now: Timestamp,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for (name, entry) in &mut self.entries {
            if entry.next_at > now {
                continue;
            }
            entry.next_at = now.saturating_add(entry.autoscaler.spec().interval);
            // One change at a time per service.
            if self.in_flight.values().any(|(service, _, _)| service == name) {
                continue;
            }
            let Some(service) = supervisor.service(name.as_str()) else { continue };
            let current = service.config().replicas;
            let observation = match (&entry.query, series.read()) {
                (Some(query), Ok(store)) => observe(query, &entry.autoscaler, &store, current, now),
                _ => Observation::Missing,
            };
            let recommendation = entry.autoscaler.recommend(current, observation, now);
            if let Some(dto) = self.shown.lock().unwrap_or_else(PoisonError::into_inner).get_mut(name.as_str()) {
                dto.observed = recommendation.observed;
                dto.desired = Some(recommendation.desired);
                dto.last = Some(recommendation.to_string());
            }
            if recommendation.flap_exceeded && !entry.flapping {
                entry.flapping = true;
                tracing::warn!(service = %name, "{recommendation}");
                decisions.push(Decision::Signal(flap_signal(
                    name,
                    SignalState::Firing,
                    &recommendation.to_string(),
                    now,
                )));
            }
            if !recommendation.changes() {
                continue;
            }
            if entry.flapping {
                entry.flapping = false;
                decisions.push(Decision::Signal(flap_signal(
                    name,
                    SignalState::Resolved,
                    "changes go through again",
                    now,
                )));
            }
            let delta = i64::from(recommendation.desired) - i64::from(current);
            let delta = i32::try_from(delta).unwrap_or(if delta > 0 { i32::MAX } else { i32::MIN });
            let (permit, records) = healer.autoscale(name.clone(), delta, recommendation.to_string(), world, now);
            match permit {
                Some(permit) => {
                    entry.last_refusal = None;
                    tracing::info!(service = %name, "autoscaling: {recommendation}");
                    self.in_flight.insert(permit.record().id, (name.clone(), current, recommendation.desired));
                    decisions.extend(records);
                    decisions.push(Decision::Run(permit));
                }
                None => {
                    let outcome = records.iter().find_map(|d| match d {
                        Decision::Action(record) => record.outcome.clone(),
                        _ => None,
                    });
                    if outcome != entry.last_refusal {
                        entry.last_refusal = outcome;
                        decisions.extend(records);
                    }
                }
            }
        }
        decisions
    }

    /// An action ended: a scale of an autoscaler counts in its limits once it succeeded; after a failed
    /// one (the supervisor refused: a port range, a dependency still starting) the autoscaler waits four
    /// intervals before it tries again, so that a lasting refusal does not fill the journal.
    pub(crate) fn outcome(&mut self, id: ActionId, succeeded: bool, now: Timestamp) {
        let Some((name, from, to)) = self.in_flight.remove(&id) else { return };
        let Some(entry) = self.entries.get_mut(&name) else { return };
        if succeeded {
            entry.autoscaler.scaled(from, to, now);
        } else {
            entry.next_at = now.saturating_add(entry.autoscaler.spec().interval.saturating_mul(4));
        }
    }
}

/// The observation per replica: CPU averaged over the replicas that report it (of those running),
/// a query's values summed and divided by the replicas running.
fn observe(query: &Query, autoscaler: &Autoscaler, store: &SeriesStore, current: u32, now: Timestamp) -> Observation {
    let Ok(Value::Vector(samples)) = query.eval_instant(store, now.as_millis(), &EvalOptions::default()) else {
        return Observation::Missing;
    };
    let values: Vec<f64> = samples
        .iter()
        .filter(|sample| {
            // CPU of replicas running now (a scaled-in replica's last points are not the service's).
            !mend_act::averaged(&autoscaler.spec().metric)
                || sample.labels.get("replica").and_then(|r| r.parse::<u32>().ok()).is_some_and(|r| r < current)
        })
        .map(|sample| sample.value)
        .filter(|value| value.is_finite())
        .collect();
    if values.is_empty() || current == 0 {
        return Observation::Missing;
    }
    let sum: f64 = values.iter().sum();
    if mend_act::averaged(&autoscaler.spec().metric) {
        Observation::Value { per_replica: sum / values.len() as f64, n_reporting: values.len() as u32 }
    } else {
        Observation::Value { per_replica: sum / f64::from(current), n_reporting: current }
    }
}

fn flap_signal(service: &ServiceName, state: SignalState, evidence: &str, now: Timestamp) -> Signal {
    Signal {
        at: now,
        since: now,
        state,
        kind: SignalKind::Diagnosis,
        name: FLAPPING.to_owned(),
        severity: Severity::Warning,
        service: Some(service.clone()),
        replica: None,
        value: 0.0,
        labels: BTreeMap::from([("service".to_owned(), service.to_string())]),
        evidence: evidence.to_owned(),
    }
}
