//! Precursors (issue 15, item 5): which signals preceded each service's past failures, and by how long;
//! an early warning when one of them appears again.
//!
//! Pure: signals and the time come in, [`PrecursorDecision`]s come out (the learn stage's edge publishes
//! them as `precursor` signals on the stream, where a `[[heal]]` policy with `when = "precursor"` can act
//! before the failure).
//!
//! - A **failure** of a service is a firing built-in diagnosis (`crashed`, `hung`, `crash_loop`...) or a
//!   critical signal on it. Failures of a service less than the window after its previous one are the same
//!   incident (a crash and the crash loop it completes count once).
//! - A **cue** is any other firing signal on the service ([`Cue`]: its kind, name and log template). Each
//!   sighting waits up to the window for a failure: followed (its lead time is kept) or missed.
//! - A cue is a **precursor** once it preceded at least `min_support` of the service's incidents; it warns
//!   when its precision (sightings followed / sightings decided) is at least `min_precision`.
//! - Memory is bounded: cues per service, sightings waiting per service, lead times per cue and services
//!   are capped; the least recently seen goes first.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use mend_types::{ServiceName, Severity, Signal, SignalKind, SignalState, SnapshotError, Timestamp, format_duration};
use serde::{Deserialize, Serialize};

/// The format of [`Precursors::encode`]'s body.
pub const PRECURSOR_SNAPSHOT_VERSION: u32 = 1;
/// Cues remembered per service at most.
pub const MAX_CUES_PER_SERVICE: usize = 64;
/// Services remembered at most (signals name services that config does not, e.g. Alertmanager's).
pub const MAX_SERVICES: usize = 256;
/// Sightings waiting for a failure per service at most (the oldest is decided missed first).
pub const MAX_WAITING: usize = 256;
/// Lead times kept per cue (the most recent).
pub const MAX_LEADS: usize = 32;

/// The identity of a signal that may precede a failure: its kind, its name and, for the log stage's
/// signals, its template.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Cue {
    /// Where the signal came from.
    pub kind: SignalKind,
    /// Rule, detector, forecast or alert name.
    pub name: String,
    /// The log template (`new_log_template`, `log_rate`), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<u64>,
}

impl Cue {
    /// The cue a firing signal is (its template read once from its `template_id` label).
    pub fn of(signal: &Signal) -> Self {
        Self {
            kind: signal.kind,
            name: signal.name.clone(),
            template: signal.labels.get("template_id").and_then(|id| id.parse().ok()),
        }
    }
}

impl std::fmt::Display for Cue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)?;
        if let Some(template) = self.template {
            write!(f, " (template {template})")?;
        }
        Ok(())
    }
}

/// Whether a firing signal is a failure of its service (not a cue).
pub fn is_failure(signal: &Signal) -> bool {
    signal.kind == SignalKind::Diagnosis || signal.severity == Severity::Critical
}

/// The bounds of precursor learning (from `[learn]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrecursorSettings {
    /// Learn and warn at all.
    pub enabled: bool,
    /// How long before a failure a sighting counts as its precursor.
    pub window: Duration,
    /// Incidents a cue must have preceded before it warns.
    pub min_support: u32,
    /// Precision a cue needs to warn.
    pub min_precision: f64,
}

impl PrecursorSettings {
    /// The settings `[learn]` gives.
    pub fn of(learn: &mend_config::Learn) -> Self {
        Self {
            enabled: learn.enabled && learn.precursors,
            window: learn.precursor_window,
            min_support: learn.precursor_min_support,
            min_precision: learn.precursor_min_precision,
        }
    }
}

/// What was learnt about one cue of one service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CueRecord {
    /// Sightings.
    pub n_seen: u64,
    /// Sightings a failure followed within the window.
    pub n_followed: u64,
    /// Sightings no failure followed within the window.
    pub n_missed: u64,
    /// The service's incidents it preceded (its support).
    pub n_incidents: u32,
    /// Lead times (sighting to failure) in milliseconds, the most recent last.
    pub leads_ms: VecDeque<u64>,
    /// Last sighting.
    pub last_seen: Timestamp,
    /// What the signal said at its last sighting, for people.
    pub evidence: String,
}

impl CueRecord {
    /// Followed / decided sightings; None before any was decided.
    pub fn precision(&self) -> Option<f64> {
        let decided = self.n_followed + self.n_missed;
        (decided > 0).then(|| self.n_followed as f64 / decided as f64)
    }

    /// Lead times kept: shortest, median, longest.
    pub fn leads(&self) -> Option<LeadTimes> {
        let mut sorted: Vec<u64> = self.leads_ms.iter().copied().collect();
        sorted.sort_unstable();
        let (first, last) = (sorted.first()?, sorted.last()?);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            // Halves first: a restored snapshot's leads can be any u64.
            sorted[middle - 1] / 2 + sorted[middle] / 2 + (sorted[middle - 1] % 2 + sorted[middle] % 2) / 2
        } else {
            sorted[middle]
        };
        Some(LeadTimes { min: ms(*first), median: ms(median), max: ms(*last) })
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// How long before failures a cue was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeadTimes {
    /// Shortest.
    pub min: Duration,
    /// Median.
    pub median: Duration,
    /// Longest.
    pub max: Duration,
}

/// An early warning: a learnt precursor of `service`'s failures appeared.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    /// The service expected to fail.
    pub service: ServiceName,
    /// The precursor seen.
    pub cue: Cue,
    /// When it was seen.
    pub at: Timestamp,
    /// Its lead times before past failures.
    pub leads: LeadTimes,
    /// The service's incidents it preceded.
    pub n_incidents: u32,
    /// The service's incidents since mend started learning it.
    pub n_service_incidents: u32,
    /// Followed / decided sightings.
    pub precision: f64,
    /// Why, in words a person can check.
    pub evidence: String,
}

/// How a warning ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The failure came, this long after the sighting.
    Followed(Duration),
    /// The window passed without a failure.
    Missed,
    /// What was learnt about the service (or the cue) was forgotten while the warning stood.
    Forgotten,
}

/// What the model decided.
#[derive(Clone, Debug, PartialEq)]
pub enum PrecursorDecision {
    /// Warn: a learnt precursor appeared.
    Warn(Warning),
    /// A warning ends (its signal resolves).
    End {
        /// The service warned about.
        service: ServiceName,
        /// The precursor.
        cue: Cue,
        /// When it was seen (the warning's start).
        since: Timestamp,
        /// Now.
        at: Timestamp,
        /// Followed by the failure, or not.
        ending: Ending,
    },
}

#[derive(Clone, Debug)]
struct Sighting {
    cue: Cue,
    at: Timestamp,
    warned: bool,
}

#[derive(Clone, Debug, Default)]
struct ServiceMemory {
    cues: BTreeMap<Cue, CueRecord>,
    /// Sightings within the window, waiting for a failure (oldest first); not persisted.
    waiting: VecDeque<Sighting>,
    n_incidents: u32,
    last_failure: Option<Timestamp>,
    last_active: Timestamp,
}

/// A service's memory as persisted (JSON maps need string keys: cues go as a list).
#[derive(Serialize, Deserialize)]
struct PersistedService {
    service: ServiceName,
    n_incidents: u32,
    last_failure: Option<Timestamp>,
    last_active: Timestamp,
    cues: Vec<(Cue, CueRecord)>,
}

/// One learnt cue of one service, for `mend learn`.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecursorRow<'a> {
    /// The service.
    pub service: &'a ServiceName,
    /// The cue.
    pub cue: &'a Cue,
    /// What was learnt.
    pub record: &'a CueRecord,
    /// The service's incidents.
    pub n_service_incidents: u32,
    /// Whether it warns now (support and precision within bounds).
    pub warns: bool,
}

/// What mend learnt about precursors of every service's failures.
#[derive(Clone, Debug)]
pub struct Precursors {
    settings: PrecursorSettings,
    services: BTreeMap<ServiceName, ServiceMemory>,
}

fn millis_between(earlier: Timestamp, later: Timestamp) -> u64 {
    u64::try_from(later.as_millis().saturating_sub(earlier.as_millis())).unwrap_or(0)
}

fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

impl Precursors {
    /// Nothing learnt yet.
    pub fn new(settings: PrecursorSettings) -> Self {
        Self { settings, services: BTreeMap::new() }
    }

    /// New bounds (a reload); what was learnt stays.
    pub fn reconfigure(&mut self, settings: PrecursorSettings) {
        self.settings = settings;
    }

    /// The bounds.
    pub fn settings(&self) -> PrecursorSettings {
        self.settings
    }

    /// Takes one signal transition; warnings it raises and warnings it ends.
    pub fn observe(&mut self, signal: &Signal) -> Vec<PrecursorDecision> {
        let mut decisions = self.tick(signal.at);
        let Some(service) = &signal.service else { return decisions };
        // Warnings are this model's own output; a resolution says nothing new.
        if !self.settings.enabled || signal.kind == SignalKind::Precursor || signal.state != SignalState::Firing {
            return decisions;
        }
        decisions.extend(self.make_room(service, signal.at));
        if is_failure(signal) {
            decisions.extend(self.failure(service, signal.at));
        } else {
            decisions.extend(self.sighting(service, Cue::of(signal), signal.at, &signal.evidence));
        }
        decisions
    }

    /// Sightings older than the window are decided missed; warnings among them end.
    pub fn tick(&mut self, now: Timestamp) -> Vec<PrecursorDecision> {
        let window = window_ms(self.settings.window);
        let mut decisions = Vec::new();
        for (service, memory) in &mut self.services {
            while memory.waiting.front().is_some_and(|sighting| millis_between(sighting.at, now) > window) {
                let Some(sighting) = memory.waiting.pop_front() else { break };
                decisions.extend(missed(&self.settings, service, memory, sighting, now));
            }
        }
        decisions
    }

    /// Room for `service` within [`MAX_SERVICES`]: the least recently active one is forgotten, and the
    /// warnings standing for it end.
    fn make_room(&mut self, service: &ServiceName, now: Timestamp) -> Vec<PrecursorDecision> {
        if self.services.contains_key(service) || self.services.len() < MAX_SERVICES {
            return Vec::new();
        }
        let stalest = self.services.iter().min_by_key(|(_, memory)| memory.last_active).map(|(s, _)| s.clone());
        let Some((stalest, memory)) = stalest.and_then(|stalest| self.services.remove_entry(&stalest)) else {
            return Vec::new();
        };
        memory.waiting.into_iter().filter_map(|sighting| forgotten(&stalest, sighting, now)).collect()
    }

    fn memory(&mut self, service: &ServiceName, now: Timestamp) -> &mut ServiceMemory {
        let memory = self.services.entry(service.clone()).or_default();
        memory.last_active = memory.last_active.max(now);
        memory
    }

    fn failure(&mut self, service: &ServiceName, at: Timestamp) -> Vec<PrecursorDecision> {
        let window = window_ms(self.settings.window);
        let memory = self.memory(service, at);
        let same_incident = memory.last_failure.is_some_and(|last| millis_between(last, at) < window);
        memory.last_failure = Some(at);
        if !same_incident {
            memory.n_incidents += 1;
        }
        let mut decisions = Vec::new();
        // Each cue's earliest sighting gives its lead for this incident; every sighting was followed.
        let mut earliest: BTreeMap<Cue, Timestamp> = BTreeMap::new();
        for sighting in memory.waiting.drain(..) {
            earliest.entry(sighting.cue.clone()).or_insert(sighting.at);
            let lead = ms(millis_between(sighting.at, at));
            if let Some(record) = memory.cues.get_mut(&sighting.cue) {
                record.n_followed += 1;
            }
            if sighting.warned {
                decisions.push(PrecursorDecision::End {
                    service: service.clone(),
                    cue: sighting.cue,
                    since: sighting.at,
                    at,
                    ending: Ending::Followed(lead),
                });
            }
        }
        if !same_incident {
            for (cue, seen_at) in earliest {
                let Some(record) = memory.cues.get_mut(&cue) else { continue };
                record.n_incidents += 1;
                record.leads_ms.push_back(millis_between(seen_at, at));
                while record.leads_ms.len() > MAX_LEADS {
                    record.leads_ms.pop_front();
                }
            }
        }
        decisions
    }

    fn sighting(&mut self, service: &ServiceName, cue: Cue, at: Timestamp, evidence: &str) -> Vec<PrecursorDecision> {
        let settings = self.settings;
        let mut evicted = Vec::new();
        let memory = self.memory(service, at);
        let n_service_incidents = memory.n_incidents;
        if !memory.cues.contains_key(&cue) && memory.cues.len() >= MAX_CUES_PER_SERVICE {
            let stalest = memory.cues.iter().min_by_key(|(_, record)| record.last_seen).map(|(c, _)| c.clone());
            if let Some(stalest) = stalest {
                memory.cues.remove(&stalest);
                let (gone, kept): (VecDeque<Sighting>, VecDeque<Sighting>) =
                    memory.waiting.drain(..).partition(|sighting| sighting.cue == stalest);
                memory.waiting = kept;
                evicted.extend(gone.into_iter().filter_map(|sighting| forgotten(service, sighting, at)));
            }
        }
        let record = memory.cues.entry(cue.clone()).or_insert_with(|| CueRecord {
            n_seen: 0,
            n_followed: 0,
            n_missed: 0,
            n_incidents: 0,
            leads_ms: VecDeque::new(),
            last_seen: at,
            evidence: String::new(),
        });
        // The warning quotes this sighting's own words (what is happening now), not the last one's.
        record.evidence = evidence.to_owned();
        // One warning per cue at a time: a sighting while an earlier one's warning stands waits unwarned
        // (the standing warning's signal has the same identity; a second would fire it twice); the
        // warning passes to it if the earlier one ends missed while it waits (see `missed`).
        let standing = memory.waiting.iter().any(|sighting| sighting.warned && sighting.cue == cue);
        // Decided on what was learnt before this sighting.
        let warning = (warns(&settings, record) && !standing).then(|| {
            let leads = record.leads().unwrap_or(LeadTimes { min: ms(0), median: ms(0), max: ms(0) });
            let precision = record.precision().unwrap_or(1.0);
            Warning {
                evidence: evidence_of(service, &cue, record, n_service_incidents, settings.window, &leads),
                service: service.clone(),
                cue: cue.clone(),
                at,
                leads,
                n_incidents: record.n_incidents,
                n_service_incidents,
                precision,
            }
        });
        record.n_seen += 1;
        record.last_seen = record.last_seen.max(at);
        memory.waiting.push_back(Sighting { cue, at, warned: warning.is_some() });
        let mut decisions = evicted;
        decisions.extend(warning.map(PrecursorDecision::Warn));
        while memory.waiting.len() > MAX_WAITING {
            let Some(oldest) = memory.waiting.pop_front() else { break };
            decisions.extend(missed(&settings, service, memory, oldest, at));
        }
        decisions
    }

    /// Every learnt cue, by service then cue.
    pub fn rows(&self) -> impl Iterator<Item = PrecursorRow<'_>> {
        self.services.iter().flat_map(move |(service, memory)| {
            memory.cues.iter().map(move |(cue, record)| PrecursorRow {
                service,
                cue,
                record,
                n_service_incidents: memory.n_incidents,
                warns: warns(&self.settings, record),
            })
        })
    }

    /// Forgets one service, or every one; the warnings standing for what is forgotten end.
    pub fn forget(&mut self, service: Option<&ServiceName>, now: Timestamp) -> Vec<PrecursorDecision> {
        let gone: Vec<(ServiceName, ServiceMemory)> = match service {
            Some(service) => self.services.remove_entry(service).into_iter().collect(),
            None => std::mem::take(&mut self.services).into_iter().collect(),
        };
        gone.into_iter()
            .flat_map(|(service, memory)| {
                memory.waiting.into_iter().filter_map(move |sighting| forgotten(&service, sighting, now))
            })
            .collect()
    }

    /// What was learnt as a snapshot body (version [`PRECURSOR_SNAPSHOT_VERSION`]); sightings still
    /// waiting are not kept (their warnings end with the run).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let persisted: Vec<PersistedService> = self
            .services
            .iter()
            .map(|(service, memory)| PersistedService {
                service: service.clone(),
                n_incidents: memory.n_incidents,
                last_failure: memory.last_failure,
                last_active: memory.last_active,
                cues: memory.cues.iter().map(|(cue, record)| (cue.clone(), record.clone())).collect(),
            })
            .collect();
        serde_json::to_vec(&persisted)
    }

    /// Takes a snapshot back; a newer or unreadable one is refused and nothing changes.
    pub fn restore(&mut self, version: u32, body: &[u8]) -> Result<usize, SnapshotError> {
        if version > PRECURSOR_SNAPSHOT_VERSION {
            return Err(SnapshotError::TooNew { found: version, supported: PRECURSOR_SNAPSHOT_VERSION });
        }
        let persisted: Vec<PersistedService> = serde_json::from_slice(body).map_err(SnapshotError::Corrupt)?;
        let mut services: BTreeMap<ServiceName, ServiceMemory> = persisted
            .into_iter()
            .map(|p| {
                let memory = ServiceMemory {
                    cues: p.cues.into_iter().collect(),
                    waiting: VecDeque::new(),
                    n_incidents: p.n_incidents,
                    last_failure: p.last_failure,
                    last_active: p.last_active,
                };
                (p.service, memory)
            })
            .collect();
        // A snapshot is trusted no further than the caps; what goes is the least recently active, as
        // when the caps are reached live.
        if services.len() > MAX_SERVICES {
            let mut by_activity: Vec<(Timestamp, ServiceName)> =
                services.iter().map(|(service, memory)| (memory.last_active, service.clone())).collect();
            by_activity.sort();
            for (_, service) in by_activity.iter().take(services.len() - MAX_SERVICES) {
                services.remove(service);
            }
        }
        for memory in services.values_mut() {
            if memory.cues.len() > MAX_CUES_PER_SERVICE {
                let mut by_sighting: Vec<(Timestamp, Cue)> =
                    memory.cues.iter().map(|(cue, record)| (record.last_seen, cue.clone())).collect();
                by_sighting.sort();
                for (_, cue) in by_sighting.iter().take(memory.cues.len() - MAX_CUES_PER_SERVICE) {
                    memory.cues.remove(cue);
                }
            }
            for record in memory.cues.values_mut() {
                while record.leads_ms.len() > MAX_LEADS {
                    record.leads_ms.pop_front();
                }
            }
        }
        self.services = services;
        Ok(self.services.values().map(|memory| memory.cues.len()).sum())
    }
}

/// `sighting` was not followed by a failure: counted missed; its warning, if it gave one, ends, unless the
/// cue was seen again within the window and is still trusted with this miss counted: then the warning
/// stands, carried by the latest such sighting (ending and firing it again would read as a flap).
fn missed(
    settings: &PrecursorSettings,
    service: &ServiceName,
    memory: &mut ServiceMemory,
    sighting: Sighting,
    now: Timestamp,
) -> Option<PrecursorDecision> {
    if let Some(record) = memory.cues.get_mut(&sighting.cue) {
        record.n_missed += 1;
    }
    if !sighting.warned {
        return None;
    }
    let window = window_ms(settings.window);
    let heir = memory
        .waiting
        .iter_mut()
        .rev()
        .find(|waiting| waiting.cue == sighting.cue && millis_between(waiting.at, now) <= window);
    if let Some(heir) = heir
        && memory.cues.get(&sighting.cue).is_some_and(|record| warns(settings, record))
    {
        heir.warned = true;
        return None;
    }
    Some(PrecursorDecision::End {
        service: service.clone(),
        cue: sighting.cue,
        since: sighting.at,
        at: now,
        ending: Ending::Missed,
    })
}

/// The end of `sighting`'s warning, if it warned, when what it stood on is forgotten.
fn forgotten(service: &ServiceName, sighting: Sighting, now: Timestamp) -> Option<PrecursorDecision> {
    sighting.warned.then(|| PrecursorDecision::End {
        service: service.clone(),
        cue: sighting.cue,
        since: sighting.at,
        at: now,
        ending: Ending::Forgotten,
    })
}

fn warns(settings: &PrecursorSettings, record: &CueRecord) -> bool {
    settings.enabled
        && record.n_incidents >= settings.min_support
        && record.precision().unwrap_or(1.0) >= settings.min_precision
}

fn evidence_of(
    service: &ServiceName,
    cue: &Cue,
    record: &CueRecord,
    n_service_incidents: u32,
    window: Duration,
    leads: &LeadTimes,
) -> String {
    let span = if leads.min == leads.max {
        format_duration(leads.min)
    } else {
        format!("{}–{}", format_duration(leads.min), format_duration(leads.max))
    };
    let what = if record.evidence.is_empty() { String::new() } else { format!(" (\"{}\")", record.evidence) };
    format!(
        "{} of the {n_service_incidents} incidents of {service} followed {cue}{what} by {span}; {} of its {} \
         sightings were followed within {}: {service} may fail in about {}",
        record.n_incidents,
        record.n_followed,
        record.n_followed + record.n_missed,
        format_duration(window),
        format_duration(leads.median),
    )
}

#[cfg(test)]
#[path = "precursor_tests.rs"]
mod tests;
