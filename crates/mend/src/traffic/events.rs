//! What the proxies do that people should see, as events: faults injected and ended (`chaos_started`,
//! `chaos_ended`, expiry included), the canary's share changed (`canary_weight_changed`), replicas
//! ejected and back (`ejected`, `returned`). Pure: the caller passes the time and the proxy's figures,
//! and emits and logs what comes back; one wording for the event, the log line and `mend status`.
//!
//! Ejections are read from the proxy's statistics once a second, not pushed by the request path (which
//! never waits on anything but sockets): several ejections of one replica between two looks are one
//! event with their count. A storm is bounded too: at most [`EJECTIONS_PER_MINUTE`] ejection events per
//! service a minute (a token bucket); beyond that they are counted, and the next event that may go out
//! is one without a replica saying how many were not reported one by one. A reported ejection gets its
//! `returned` event (unless the replica is ejected again before the next look, or leaves the table); an
//! unreported one's return is not reported either. Replicas out of the route table (not ready, being
//! replaced) make no events, but their ejections count in the total, and their counts are remembered for
//! as long as the proxy lists them, so that a replica that is ready again is not taken for new.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mend_api::{EjectionDto, EjectionReasonDto, FaultDto, FaultKindDto};
use mend_proxy::{BackendId, Ejection, EjectionReason, Fault, FaultKind, ProxyStats};
use mend_types::{Event, EventKind, ReplicaId, ServiceName, Timestamp, format_duration, format_percent};

/// Ejection events (with their returns) recorded per service and minute, at most, on average.
pub(crate) const EJECTIONS_PER_MINUTE: u32 = 10;

/// A fault in words: `200 ms latency`, `503 answers`, `aborted connections`.
fn fault_words(kind: FaultKind) -> String {
    match kind {
        FaultKind::Latency(delay) => format!("{} latency", format_duration(delay)),
        FaultKind::Status(status) => format!("{status} answers"),
        FaultKind::Abort => "aborted connections".to_owned(),
    }
}

fn fault_kind(kind: FaultKind) -> FaultKindDto {
    match kind {
        FaultKind::Latency(_) => FaultKindDto::Latency,
        FaultKind::Status(_) => FaultKindDto::Status,
        FaultKind::Abort => FaultKindDto::Abort,
    }
}

/// `kind`'s facts as event details.
fn fault_details(event: Event, fault: &Fault) -> Event {
    let event = event.detail("fault", fault_kind(fault.kind).as_str()).detail("percent", fault.percent);
    match fault.kind {
        FaultKind::Latency(delay) => event.detail("latency_ms", delay.as_millis() as u64),
        FaultKind::Status(status) => event.detail("status", status),
        FaultKind::Abort => event,
    }
}

/// Wall-clock time of `instant`, given that `now` is `wall`.
fn wall_at(instant: Instant, now: Instant, wall: Timestamp) -> Timestamp {
    if instant >= now { wall.saturating_add(instant - now) } else { wall.saturating_sub(now - instant) }
}

/// Why a chaos fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChaosEnd {
    /// Its time was up.
    Expired,
    /// `mend chaos clear` (or `DELETE .../chaos`).
    Cleared,
    /// A new fault of the same kind took its place.
    Replaced,
}

impl ChaosEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Cleared => "cleared",
            Self::Replaced => "replaced",
        }
    }
}

/// The faults a service's proxy was told to inject, to record when each ends.
#[derive(Default)]
pub(crate) struct ChaosLog {
    /// The faults still active as far as this log knows, with when each started.
    active: Vec<(Fault, Instant)>,
}

impl ChaosLog {
    /// Records `fault`, set on `service` at `now` (wall time `wall`): a `chaos_started` event, after a
    /// `chaos_ended` for the fault of the same kind it replaces.
    pub(crate) fn started(&mut self, service: &ServiceName, fault: Fault, now: Instant, wall: Timestamp) -> Vec<Event> {
        let same_kind = |active: &Fault| std::mem::discriminant(&active.kind) == std::mem::discriminant(&fault.kind);
        let mut events = self.end(service, now, wall, |active| same_kind(active), ChaosEnd::Replaced);
        let duration = fault.until.saturating_duration_since(now);
        let message = format!(
            "injecting {} into {} of {service}'s requests for {}",
            fault_words(fault.kind),
            format_percent(fault.percent),
            format_duration(duration)
        );
        let event = Event::new(wall, EventKind::ChaosStarted, message)
            .service(service)
            .detail("seconds", duration.as_secs_f64())
            .detail("until", wall.saturating_add(duration).to_string());
        events.push(fault_details(event, &fault));
        self.active.push((fault, now));
        events
    }

    /// Every active fault ended (`mend chaos clear`).
    pub(crate) fn cleared(&mut self, service: &ServiceName, now: Instant, wall: Timestamp) -> Vec<Event> {
        self.end(service, now, wall, |active| active.until > now, ChaosEnd::Cleared)
    }

    /// The faults whose time is up, stamped when they expired.
    pub(crate) fn expire(&mut self, service: &ServiceName, now: Instant, wall: Timestamp) -> Vec<Event> {
        self.end(service, now, wall, |active| active.until <= now, ChaosEnd::Expired)
    }

    fn end(
        &mut self,
        service: &ServiceName,
        now: Instant,
        wall: Timestamp,
        ends: impl Fn(&Fault) -> bool,
        why: ChaosEnd,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        self.active.retain(|(fault, started)| {
            if !ends(fault) {
                return true;
            }
            // An expired fault ended when its time was up, not when this log noticed.
            let ended = if why == ChaosEnd::Expired { fault.until.min(now) } else { now };
            let lasted = ended.saturating_duration_since(*started);
            let message = format!(
                "stopped injecting {} into {} of {service}'s requests after {}: {}",
                fault_words(fault.kind),
                format_percent(fault.percent),
                format_duration(lasted),
                why.as_str()
            );
            let event = Event::new(wall_at(ended, now, wall), EventKind::ChaosEnded, message)
                .service(service)
                .detail("reason", why.as_str())
                .detail("lasted_seconds", lasted.as_secs_f64());
            events.push(fault_details(event, fault));
            false
        });
        events
    }
}

/// A fault as the API shows it.
pub(crate) fn fault_dto(fault: &Fault, now: Instant, wall: Timestamp) -> FaultDto {
    let left = fault.until.saturating_duration_since(now);
    FaultDto {
        fault: fault_kind(fault.kind),
        latency_ms: match fault.kind {
            FaultKind::Latency(delay) => Some(delay.as_millis() as u64),
            _ => None,
        },
        status: match fault.kind {
            FaultKind::Status(status) => Some(status),
            _ => None,
        },
        percent: fault.percent,
        until: wall.saturating_add(left).to_string(),
        seconds_left: (left.as_secs_f64() * 10.0).round() / 10.0,
        description: format!("{} on {} of requests", fault_words(fault.kind), format_percent(fault.percent)),
    }
}

/// `canary_weight_changed`, when the weight changed.
pub(crate) fn canary_weight_changed(service: &ServiceName, from: u8, to: u8, wall: Timestamp) -> Option<Event> {
    (from != to).then(|| {
        Event::new(
            wall,
            EventKind::CanaryWeightChanged,
            format!("{service}'s canary gets {to}% of unpinned requests (was {from}%)"),
        )
        .service(service)
        .detail("from", from)
        .detail("to", to)
    })
}

fn ejection_reason(reason: EjectionReason) -> EjectionReasonDto {
    match reason {
        EjectionReason::ServerError(_) => EjectionReasonDto::ServerError,
        EjectionReason::ConnectFailure => EjectionReasonDto::ConnectFailure,
        EjectionReason::Reset => EjectionReasonDto::Reset,
        EjectionReason::Timeout => EjectionReasonDto::Timeout,
        EjectionReason::BrokenBody => EjectionReasonDto::BrokenBody,
    }
}

/// `3 failures in a row, the last a 503 answer`.
fn ejection_words(ejection: &Ejection) -> String {
    let last = match ejection.reason {
        EjectionReason::ServerError(status) => format!("a {status} answer"),
        EjectionReason::ConnectFailure => "a failed connect".to_owned(),
        EjectionReason::Reset => "a reset connection".to_owned(),
        EjectionReason::Timeout => "a timeout".to_owned(),
        EjectionReason::BrokenBody => "a response cut off after its headers".to_owned(),
    };
    format!("{} failures in a row, the last {last}", ejection.consecutive_failures)
}

/// An ejection as the API shows it.
pub(crate) fn ejection_dto(ejection: &Ejection, wall: Timestamp) -> EjectionDto {
    EjectionDto {
        until: wall.saturating_add(ejection.remaining).to_string(),
        seconds_left: (ejection.remaining.as_secs_f64() * 10.0).round() / 10.0,
        reason: ejection_reason(ejection.reason),
        status: match ejection.reason {
            EjectionReason::ServerError(status) => Some(status),
            _ => None,
        },
        consecutive_failures: ejection.consecutive_failures,
        description: ejection_words(ejection),
    }
}

/// What the log remembers of a backend from the last look.
#[derive(Clone, Copy, Default)]
struct Seen {
    ejections: u64,
    ejected: bool,
    /// Whether its latest ejection was reported (then so is its return).
    reported: bool,
}

/// A token bucket: `capacity` tokens, one more every `refill`.
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    const CAPACITY: f64 = EJECTIONS_PER_MINUTE as f64;
    const REFILL: Duration = Duration::from_secs(60 / EJECTIONS_PER_MINUTE as u64);

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = self.at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + elapsed.as_secs_f64() / Self::REFILL.as_secs_f64()).min(Self::CAPACITY);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How far back an ejection event reports what the ejected replica's siblings answered.
pub(crate) const SIBLINGS_WINDOW: Duration = Duration::from_secs(30);

/// A backend's attempts and failed attempts (5xx, failed connects, resets, timeouts) so far.
fn answers(backend: &mend_proxy::BackendStats) -> (u64, u64) {
    let attempts = &backend.attempts;
    let failed = attempts.connect_failures + attempts.resets + attempts.timeouts;
    (attempts.responses() + failed, attempts.status_5xx + failed)
}

/// Each backend's [`answers`] at one look.
type Answers = HashMap<BackendId, (u64, u64)>;

/// Ejections of a service's replicas as seen at each look, turned into rate-limited events.
pub(crate) struct EjectionLog {
    seen: HashMap<BackendId, Seen>,
    /// Each backend's [`answers`] at the looks of the last [`SIBLINGS_WINDOW`] (and the one before),
    /// oldest first: what an ejected replica's siblings answered meanwhile.
    history: std::collections::VecDeque<(Instant, Answers)>,
    bucket: Bucket,
    /// Ejections not reported one by one since the last summary, and since when.
    unreported: Option<(u64, Instant)>,
    /// Ejections ever counted (backends come and go; the total only grows).
    total: u64,
}

impl Default for EjectionLog {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
            history: std::collections::VecDeque::new(),
            bucket: Bucket { tokens: Bucket::CAPACITY, at: None },
            unreported: None,
            total: 0,
        }
    }
}

impl EjectionLog {
    /// Ejections ever counted.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Looks at `stats` at `now` (wall time `wall`); returns the events since the last look.
    pub(crate) fn observe(
        &mut self,
        service: &ServiceName,
        stats: &ProxyStats,
        now: Instant,
        wall: Timestamp,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some((ejections, since)) = self.unreported
            && self.bucket.take(now)
        {
            self.unreported = None;
            let message = format!(
                "{ejections} ejections of {service}'s replicas in the last {} were not reported one by one, nor their returns (at most {EJECTIONS_PER_MINUTE} a minute are); mend_proxy_ejections_total counts every ejection",
                format_duration(now.saturating_duration_since(since)),
            );
            events.push(
                Event::new(wall, EventKind::Ejected, message)
                    .service(service)
                    .detail("unreported_ejections", ejections),
            );
        }
        let now_answers: Answers = stats.backends.iter().map(|backend| (backend.id, answers(backend))).collect();
        while self.history.len() > 1
            && self.history.get(1).is_some_and(|(at, _)| now.saturating_duration_since(*at) >= SIBLINGS_WINDOW)
        {
            self.history.pop_front();
        }
        // What `backend`'s siblings (in the table, same release, not draining) answered since the oldest
        // look of the window: (replica, attempts, failed).
        let siblings_of = |ejected: &mend_proxy::BackendStats| -> Vec<(u32, u64, u64)> {
            stats
                .backends
                .iter()
                .filter(|other| {
                    other.in_table
                        && !other.draining
                        && other.id.release == ejected.id.release
                        && other.id.index != ejected.id.index
                })
                .map(|other| {
                    let (attempts, failed) = answers(other);
                    let (attempts_then, failed_then) = self
                        .history
                        .iter()
                        .find_map(|(_, look)| look.get(&other.id).copied())
                        .filter(|(then, _)| *then <= attempts)
                        .unwrap_or((0, 0));
                    (other.id.index, attempts - attempts_then, failed.saturating_sub(failed_then))
                })
                .collect()
        };
        // Every backend the proxy lists is remembered, in the table or not: the table holds ready
        // replicas only, and a replica ready again within a minute gets its backend back with its
        // cumulative count, whose past ejections are not new.
        let mut next = HashMap::with_capacity(stats.backends.len());
        for backend in &stats.backends {
            let seen = self.seen.get(&backend.id).copied().unwrap_or_default();
            // A count below the last one is a new backend under the same id (another address): a reset.
            let new_ejections = if backend.ejections >= seen.ejections {
                backend.ejections - seen.ejections
            } else {
                backend.ejections
            };
            self.total += new_ejections;
            let mut now_seen = Seen { ejections: backend.ejections, ejected: backend.ejected, reported: seen.reported };
            if !backend.in_table {
                // Out of rotation anyway: its ejections count, but make no event, nor does its return.
                now_seen.reported = false;
                next.insert(backend.id, now_seen);
                continue;
            }
            let replica = ReplicaId { service: service.clone(), index: backend.id.index };
            // Back since the last look (or ejected and back within it): the end of the ejection seen.
            let returned = (seen.ejected || new_ejections > 0) && !backend.ejected;
            if returned && seen.reported && new_ejections == 0 {
                events.push(returned_event(&replica, backend.last_ejection.as_ref(), wall));
                now_seen.reported = false;
            }
            if new_ejections > 0
                && let Some(ejection) = &backend.last_ejection
            {
                if self.bucket.take(now) {
                    let event = ejected_event(&replica, backend.id, ejection, new_ejections, wall);
                    events.push(with_siblings(event, &siblings_of(backend)));
                    now_seen.reported = true;
                    if returned {
                        events.push(returned_event(&replica, Some(ejection), wall));
                        now_seen.reported = false;
                    }
                } else {
                    self.unreported.get_or_insert((0, now)).0 += new_ejections;
                    now_seen.reported = false;
                }
            }
            next.insert(backend.id, now_seen);
        }
        // Backends the proxy no longer lists are forgotten (one that comes back starts from zero).
        self.seen = next;
        self.history.push_back((now, now_answers));
        events
    }
}

fn ejected_event(replica: &ReplicaId, id: BackendId, ejection: &Ejection, count: u64, wall: Timestamp) -> Event {
    let times = if count > 1 { format!(" ({count} ejections since the last look)") } else { String::new() };
    let message = format!(
        "ejected from {}'s proxy for {}: {}{times}",
        replica.service,
        format_duration(ejection.duration),
        ejection_words(ejection)
    );
    let mut event = Event::new(wall, EventKind::Ejected, message)
        .replica(replica)
        .detail("reason", ejection_reason(ejection.reason).as_str())
        .detail("consecutive_failures", ejection.consecutive_failures)
        .detail("seconds", ejection.duration.as_secs_f64())
        .detail("until", wall.saturating_add(ejection.remaining).to_string())
        .detail("streak", ejection.streak)
        .detail("ejections", count)
        .detail("release", id.release.as_str())
        .detail("pid", id.generation);
    if let EjectionReason::ServerError(status) = ejection.reason {
        event = event.detail("status", status);
    }
    event
}

/// The ejected replica's siblings as the event's details: `siblings` = `[{replica, attempts, errors}]`
/// over the last `siblings_window_seconds` (read back by `mend_incident::builtin::ejection_facts`).
fn with_siblings(event: Event, siblings: &[(u32, u64, u64)]) -> Event {
    let siblings: Vec<serde_json::Value> = siblings
        .iter()
        .map(|(replica, attempts, errors)| {
            serde_json::json!({"replica": replica, "attempts": attempts, "errors": errors})
        })
        .collect();
    event.detail("siblings", siblings).detail("siblings_window_seconds", SIBLINGS_WINDOW.as_secs())
}

fn returned_event(replica: &ReplicaId, ejection: Option<&Ejection>, wall: Timestamp) -> Event {
    let out = ejection.map(|ejection| ejection.duration);
    let message = match out {
        Some(out) => format!("back in {}'s proxy rotation after {} out", replica.service, format_duration(out)),
        None => format!("back in {}'s proxy rotation", replica.service),
    };
    let event = Event::new(wall, EventKind::Returned, message).replica(replica);
    match out {
        Some(out) => event.detail("ejected_seconds", out.as_secs_f64()),
        None => event,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use mend_proxy::{BackendStats, Release, RequestStats};

    use super::*;

    fn service() -> ServiceName {
        ServiceName::new("web").expect("valid name")
    }

    fn id(index: u32) -> BackendId {
        BackendId { release: Release::Stable, index, generation: 100 + u64::from(index) }
    }

    /// Backend `index` as a look finds it: ejections so far, and whether it is out now.
    fn backend(index: u32, ejections: u64, ejected: bool) -> BackendStats {
        BackendStats {
            id: id(index),
            addr: SocketAddr::from(([127, 0, 0, 1], 9000 + index as u16)),
            in_table: true,
            draining: false,
            ejected,
            in_flight: 0,
            attempts: RequestStats::default(),
            retries: 0,
            ejections,
            last_ejection: (ejections > 0).then_some(Ejection {
                reason: EjectionReason::ServerError(503),
                consecutive_failures: 3,
                duration: Duration::from_secs(5),
                remaining: if ejected { Duration::from_secs(4) } else { Duration::ZERO },
                streak: 1,
            }),
        }
    }

    /// `backend` after it left the route table (the proxy keeps listing it, with its counts, for a while).
    fn out_of_table(backend: BackendStats) -> BackendStats {
        BackendStats { in_table: false, ..backend }
    }

    /// Runs looks `(seconds, backends)` and renders the events as `kind[replica] message`, then the
    /// ejections counted as `total N`.
    fn check(looks: &[(u64, Vec<BackendStats>)], expected: &[&str]) {
        let start = mend_types::Clock::now(&mend_types::SystemClock);
        let mut log = EjectionLog::default();
        let mut rendered = Vec::new();
        for (secs, backends) in looks {
            let stats = ProxyStats { backends: backends.clone(), ..ProxyStats::default() };
            let at = start + Duration::from_secs(*secs);
            for event in log.observe(&service(), &stats, at, Timestamp::from_millis(0)) {
                let replica = event.replica.map(|r| format!("[{r}]")).unwrap_or_default();
                rendered.push(format!("{}{replica} {}", event.kind, event.message));
            }
        }
        rendered.push(format!("total {}", log.total()));
        assert_eq!(rendered, expected);
    }

    #[test]
    fn an_ejection_and_its_return_are_one_event_each() {
        check(
            &[
                (0, vec![backend(0, 0, false), backend(1, 0, false)]),
                (1, vec![backend(0, 0, false), backend(1, 1, true)]),
                (2, vec![backend(0, 0, false), backend(1, 1, true)]),
                (6, vec![backend(0, 0, false), backend(1, 1, false)]),
            ],
            &[
                "ejected[1] ejected from web's proxy for 5 s: 3 failures in a row, the last a 503 answer",
                "returned[1] back in web's proxy rotation after 5 s out",
                "total 1",
            ],
        );
    }

    #[test]
    fn an_ejection_says_what_its_siblings_answered_over_the_window() {
        let answered = |index: u32, ok: u64, errors: u64, ejections: u64| BackendStats {
            attempts: RequestStats { status_2xx: ok, status_5xx: errors, ..RequestStats::default() },
            ..backend(index, ejections, ejections > 0)
        };
        let start = mend_types::Clock::now(&mend_types::SystemClock);
        let mut log = EjectionLog::default();
        let mut last = Vec::new();
        // Replica 0 answers 10 a second; 2 had 5 errors 40 s ago (out of the window), 1 goes bad at 45 s.
        for t in 0..=45_u64 {
            let errors_of_2 = if t >= 5 { 5 } else { 0 };
            let backends = vec![
                answered(0, 10 * t, 0, 0),
                answered(1, 10 * t, if t == 45 { 3 } else { 0 }, u64::from(t == 45)),
                answered(2, 10 * t, errors_of_2, 0),
            ];
            let stats = ProxyStats { backends, ..ProxyStats::default() };
            last = log.observe(&service(), &stats, start + Duration::from_secs(t), Timestamp::from_millis(0));
        }
        let ejected = last.iter().find(|event| event.kind == EventKind::Ejected).expect("ejected at 45 s");
        assert_eq!(
            ejected.details["siblings"],
            serde_json::json!([{"replica": 0, "attempts": 300, "errors": 0}, {"replica": 2, "attempts": 300, "errors": 0}])
        );
        let facts = mend_incident::builtin::ejection_facts(ejected);
        assert_eq!((facts.status, facts.in_a_row, facts.window), (Some(503), 3, SIBLINGS_WINDOW));
        assert!(facts.for_errors() && facts.siblings_healthy());
    }

    #[test]
    fn ejections_between_two_looks_are_one_event_with_their_count() {
        check(
            &[(0, vec![backend(0, 0, false)]), (1, vec![backend(0, 3, false)])],
            &[
                "ejected[0] ejected from web's proxy for 5 s: 3 failures in a row, the last a 503 answer (3 ejections since the last look)",
                "returned[0] back in web's proxy rotation after 5 s out",
                "total 3",
            ],
        );
    }

    #[test]
    fn a_storm_is_reported_ten_a_minute_and_the_rest_summed_up() {
        // A replica ejected for a second, back for a second, for a minute and a half: 45 ejections.
        let start = mend_types::Clock::now(&mend_types::SystemClock);
        let mut log = EjectionLog::default();
        let mut events = Vec::new();
        for t in 0..=90_u64 {
            let stats = ProxyStats { backends: vec![backend(0, t.div_ceil(2), t % 2 == 1)], ..ProxyStats::default() };
            events.extend(log.observe(&service(), &stats, start + Duration::from_secs(t), Timestamp::from_millis(0)));
        }
        let ejected = events.iter().filter(|e| e.kind == EventKind::Ejected && e.replica.is_some()).count() as u64;
        let summaries: Vec<&Event> =
            events.iter().filter(|e| e.kind == EventKind::Ejected && e.replica.is_none()).collect();
        let returned = events.iter().filter(|e| e.kind == EventKind::Returned).count() as u64;
        // The bucket's 10 at once, then one every 6 s (shared with the summaries): 25 at most.
        let reported = ejected + summaries.len() as u64;
        assert!((10..=26).contains(&reported), "{ejected} ejections and {} summaries reported", summaries.len());
        assert!(!summaries.is_empty(), "a storm is summed up");
        assert!(summaries[0].message.contains(" ejections of web's replicas in the last "), "{}", summaries[0].message);
        assert_eq!(returned, ejected, "every reported ejection has its return, and only those");
        let summed: u64 = summaries.iter().filter_map(|e| e.details["unreported_ejections"].as_u64()).sum();
        let pending = log.unreported.map_or(0, |(ejections, _)| ejections);
        assert_eq!(ejected + summed + pending, 45, "every ejection is reported or counted");
        assert_eq!(log.total(), 45);
    }

    #[test]
    fn a_replica_that_leaves_while_ejected_is_forgotten() {
        check(
            &[(0, vec![backend(0, 1, true)]), (1, vec![]), (2, vec![])],
            &["ejected[0] ejected from web's proxy for 5 s: 3 failures in a row, the last a 503 answer", "total 1"],
        );
    }

    #[test]
    fn a_new_backend_under_a_known_id_counts_from_zero() {
        // The same replica and pid on another port within the proxy's memory: a fresh backend state.
        let moved = |ejections, ejected| BackendStats {
            addr: SocketAddr::from(([127, 0, 0, 1], 9100)),
            ..backend(0, ejections, ejected)
        };
        check(
            &[(0, vec![backend(0, 3, false)]), (1, vec![moved(1, true)])],
            &[
                "ejected[0] ejected from web's proxy for 5 s: 3 failures in a row, the last a 503 answer (3 ejections since the last look)",
                "returned[0] back in web's proxy rotation after 5 s out",
                "ejected[0] ejected from web's proxy for 5 s: 3 failures in a row, the last a 503 answer",
                "total 4",
            ],
        );
    }

    /// The route table holds ready replicas only, and the proxy revives a backend's state (its cumulative
    /// ejections included) when the replica is ready again soon: its past ejections are not new, and
    /// those it had while out of the table count without an event.
    #[test]
    fn issue_8_a_replica_whose_readiness_flaps_keeps_its_ejection_count() {
        check(
            &[
                (0, vec![backend(0, 0, false), backend(1, 1, true)]),
                // Not ready: out of the table, still ejected, still listed.
                (1, vec![backend(0, 0, false), out_of_table(backend(1, 1, true))]),
                // Ready again: the same backend, its one ejection long over.
                (8, vec![backend(0, 0, false), backend(1, 1, false)]),
                // Replica 0 is ejected and leaves the table between two looks, then comes back.
                (9, vec![out_of_table(backend(0, 1, true)), backend(1, 1, false)]),
                (20, vec![backend(0, 1, false), backend(1, 1, false)]),
            ],
            &["ejected[1] ejected from web's proxy for 5 s: 3 failures in a row, the last a 503 answer", "total 2"],
        );
    }

    #[test]
    fn chaos_is_worded_and_ends_by_expiry_clearing_or_replacement() {
        let start = mend_types::Clock::now(&mend_types::SystemClock);
        let at = |ms: u64| start + Duration::from_millis(ms);
        let wall = |ms: u64| Timestamp::from_millis(1_000_000 + ms as i64);
        let mut log = ChaosLog::default();
        let latency = Fault { kind: FaultKind::Latency(Duration::from_millis(200)), percent: 10.0, until: at(30_000) };
        let started = log.started(&service(), latency, at(0), wall(0));
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].message, "injecting 200 ms latency into 10% of web's requests for 30 s");
        assert_eq!(
            (started[0].details["fault"].as_str(), started[0].details["latency_ms"].as_u64()),
            (Some("latency"), Some(200))
        );
        let status = Fault { kind: FaultKind::Status(503), percent: 50.0, until: at(1_000) };
        let started = log.started(&service(), status, at(0), wall(0));
        assert_eq!(started[0].message, "injecting 503 answers into 50% of web's requests for 1 s");
        // Expired at its end, even if seen later.
        assert!(log.expire(&service(), at(900), wall(900)).is_empty());
        let expired = log.expire(&service(), at(1_400), wall(1_400));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].message, "stopped injecting 503 answers into 50% of web's requests after 1 s: expired");
        assert_eq!(expired[0].at, wall(1_000));
        // A new latency fault replaces the first.
        let abort = Fault { kind: FaultKind::Latency(Duration::from_secs(1)), percent: 100.0, until: at(62_000) };
        let replaced = log.started(&service(), abort, at(2_000), wall(2_000));
        assert_eq!(
            replaced.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            [
                "stopped injecting 200 ms latency into 10% of web's requests after 2 s: replaced",
                "injecting 1 s latency into 100% of web's requests for 1m00s",
            ]
        );
        let cleared = log.cleared(&service(), at(3_000), wall(3_000));
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].details["reason"], "cleared");
        assert!(log.expire(&service(), at(100_000), wall(100_000)).is_empty(), "nothing left to end");
    }

    #[test]
    fn status_shows_faults_and_ejections_in_words() {
        let now = mend_types::Clock::now(&mend_types::SystemClock);
        let fault = Fault { kind: FaultKind::Abort, percent: 12.5, until: now + Duration::from_secs(25) };
        let dto = fault_dto(&fault, now, Timestamp::from_millis(0));
        assert_eq!((dto.fault, dto.seconds_left), (FaultKindDto::Abort, 25.0));
        assert_eq!(dto.description, "aborted connections on 12.5% of requests");
        let ejection = backend(0, 1, true).last_ejection.expect("ejected");
        let dto = ejection_dto(&ejection, Timestamp::from_millis(0));
        assert_eq!((dto.reason, dto.status, dto.seconds_left), (EjectionReasonDto::ServerError, Some(503), 4.0));
        assert_eq!(dto.description, "3 failures in a row, the last a 503 answer");
        assert_eq!(dto.until, "1970-01-01T00:00:04.000Z");
        assert!(canary_weight_changed(&service(), 10, 10, Timestamp::from_millis(0)).is_none());
        let changed = canary_weight_changed(&service(), 10, 50, Timestamp::from_millis(0)).expect("changed");
        assert_eq!(changed.message, "web's canary gets 50% of unpinned requests (was 10%)");
    }
}
