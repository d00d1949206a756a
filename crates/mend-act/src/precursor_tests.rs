use std::collections::BTreeMap;

use super::*;

fn settings() -> PrecursorSettings {
    PrecursorSettings { enabled: true, window: Duration::from_secs(60), min_support: 2, min_precision: 0.5 }
}

fn orders() -> ServiceName {
    ServiceName::new("orders").expect("valid name")
}

/// A firing signal on orders at `secs`.
fn signal(secs: i64, kind: SignalKind, name: &str) -> Signal {
    Signal {
        at: Timestamp::from_millis(secs * 1000),
        since: Timestamp::from_millis(secs * 1000),
        state: SignalState::Firing,
        kind,
        name: name.to_owned(),
        severity: Severity::Warning,
        service: Some(orders()),
        replica: Some(0),
        value: 1.0,
        labels: BTreeMap::new(),
        evidence: format!("{name} fired"),
    }
}

fn pool(secs: i64) -> Signal {
    let mut signal = signal(secs, SignalKind::Anomaly, "new_log_template");
    signal.labels.insert("template_id".to_owned(), "7".to_owned());
    signal.evidence = "orders started logging `pool exhausted <*>` (error)".to_owned();
    signal
}

fn crash(secs: i64) -> Signal {
    signal(secs, SignalKind::Diagnosis, "crashed")
}

fn pool_cue() -> Cue {
    Cue { kind: SignalKind::Anomaly, name: "new_log_template".to_owned(), template: Some(7) }
}

/// Feeds `signals` in order; the decisions, flattened.
fn feed(model: &mut Precursors, signals: &[Signal]) -> Vec<PrecursorDecision> {
    signals.iter().flat_map(|signal| model.observe(signal)).collect()
}

fn warnings(decisions: &[PrecursorDecision]) -> Vec<&Warning> {
    decisions
        .iter()
        .filter_map(|decision| match decision {
            PrecursorDecision::Warn(warning) => Some(warning),
            PrecursorDecision::End { .. } => None,
        })
        .collect()
}

fn record<'a>(model: &'a Precursors, cue: &Cue) -> &'a CueRecord {
    model.rows().find(|row| row.cue == cue).map(|row| row.record).expect("the cue is learnt")
}

#[test]
fn learns_a_precursor_after_min_support_incidents_and_not_before() {
    let mut model = Precursors::new(settings());
    // Incident 1: pool exhausted 40 s before the crash; incident 2: 90 s... outside the 60 s window;
    // incident 3: 50 s before.
    let first = feed(&mut model, &[pool(0), crash(40)]);
    assert!(warnings(&first).is_empty());
    assert_eq!(record(&model, &pool_cue()).n_incidents, 1);
    let second = feed(&mut model, &[pool(1000), crash(1090)]);
    assert!(warnings(&second).is_empty(), "90 s is outside the window: no support");
    assert_eq!((record(&model, &pool_cue()).n_incidents, record(&model, &pool_cue()).n_missed), (1, 1));
    let third = feed(&mut model, &[pool(2000)]);
    assert!(warnings(&third).is_empty(), "one incident is not enough: {third:?}");
    feed(&mut model, &[crash(2050)]);
    // Now it preceded 2 incidents: the next sighting warns, in its own words.
    let mut now = pool(3000);
    now.evidence = "orders started logging `pool exhausted <*>` (error), replica 0, now".to_owned();
    let fourth = feed(&mut model, &[now]);
    let warned = warnings(&fourth);
    assert_eq!(warned.len(), 1, "{fourth:?}");
    let warning = warned[0];
    assert_eq!((warning.service.as_str(), &warning.cue), ("orders", &pool_cue()));
    assert_eq!(
        warning.leads,
        LeadTimes { min: Duration::from_secs(40), median: Duration::from_secs(45), max: Duration::from_secs(50) }
    );
    assert_eq!((warning.n_incidents, warning.n_service_incidents), (2, 3));
    assert!((warning.precision - 2.0 / 3.0).abs() < 1e-9, "{}", warning.precision);
    assert!(
        warning.evidence.contains("2 of the 3 incidents of orders followed anomaly new_log_template (template 7)")
            && warning.evidence.contains("pool exhausted <*>` (error), replica 0, now")
            && warning.evidence.contains("by 40 s–50 s")
            && warning.evidence.contains("2 of its 3 sightings were followed within 1m00s")
            && warning.evidence.contains("may fail in about 45 s"),
        "{}",
        warning.evidence
    );
    // Seen again while its warning stands: one warning per cue at a time.
    let again = feed(&mut model, &[pool(3010)]);
    assert!(warnings(&again).is_empty(), "{again:?}");
    // The failure comes: the warning ends, followed, with the lead gained.
    let ended = feed(&mut model, &[crash(3042)]);
    assert_eq!(
        ended,
        vec![PrecursorDecision::End {
            service: orders(),
            cue: pool_cue(),
            since: Timestamp::from_millis(3_000_000),
            at: Timestamp::from_millis(3_042_000),
            ending: Ending::Followed(Duration::from_secs(42)),
        }]
    );
    assert_eq!(record(&model, &pool_cue()).n_incidents, 3);
}

#[test]
fn precision_falls_when_the_precursor_appears_without_a_failure_and_then_it_stops_warning() {
    let mut model = Precursors::new(settings());
    feed(&mut model, &[pool(0), crash(30), pool(1000), crash(1030)]);
    assert_eq!(record(&model, &pool_cue()).precision(), Some(1.0));
    // Seen again: it warns; no failure within the window: the warning ends, missed.
    let warned = feed(&mut model, &[pool(2000)]);
    assert_eq!(warnings(&warned).len(), 1);
    let ended = model.tick(Timestamp::from_millis(2_061_000));
    assert!(matches!(ended.as_slice(), [PrecursorDecision::End { ending: Ending::Missed, .. }]), "{ended:?}");
    assert_eq!(record(&model, &pool_cue()).precision(), Some(2.0 / 3.0));
    // Two more false alarms: 2 of 5 < 0.5, it no longer warns.
    feed(&mut model, &[pool(3000), pool(4000)]);
    model.tick(Timestamp::from_millis(5_000_000));
    assert_eq!(record(&model, &pool_cue()).precision(), Some(0.4));
    assert!(warnings(&feed(&mut model, &[pool(6000)])).is_empty());
    assert!(model.rows().all(|row| !row.warns));
}

#[test]
fn a_warning_that_ends_missed_passes_to_a_later_sighting_still_waiting() {
    let mut model = Precursors::new(settings());
    feed(&mut model, &[pool(0), crash(30), pool(1000), crash(1030)]);
    assert_eq!(warnings(&feed(&mut model, &[pool(3000)])).len(), 1);
    // Seen again while the warning stands: no second warning.
    assert!(warnings(&feed(&mut model, &[pool(3030)])).is_empty());
    // The first sighting's window passes: it is a miss, but the cue, seen again 31 s ago and still trusted
    // (2 of 3), keeps its warning standing: nothing ends, nothing fires again.
    let decided = model.tick(Timestamp::from_millis(3_061_000));
    assert!(decided.is_empty(), "{decided:?}");
    assert_eq!(record(&model, &pool_cue()).n_missed, 1);
    // The later sighting's window passes: the warning ends, missed, since the sighting that carried it.
    let decided = model.tick(Timestamp::from_millis(3_091_000));
    let since = Timestamp::from_millis(3_030_000);
    assert!(
        matches!(decided.as_slice(), [PrecursorDecision::End { ending: Ending::Missed, since: s, .. }] if *s == since),
        "{decided:?}"
    );
    // Two sightings whose windows have both passed by the same tick: the warning ends, it is not passed
    // to a sighting that is itself out of its window.
    assert_eq!(warnings(&feed(&mut model, &[pool(5000)])).len(), 1, "2 of 4 is at the bar: it warns");
    feed(&mut model, &[pool(5001)]);
    let decided = model.tick(Timestamp::from_millis(5_062_000));
    assert!(matches!(decided.as_slice(), [PrecursorDecision::End { ending: Ending::Missed, .. }]), "{decided:?}");
    // A cue no longer trusted after the miss does not pass its warning on.
    let mut model = Precursors::new(settings());
    feed(&mut model, &[pool(0), crash(30), pool(1000), crash(1030), pool(2000), pool(2010)]);
    model.tick(Timestamp::from_millis(2_100_000));
    assert_eq!(record(&model, &pool_cue()).precision(), Some(0.5));
    assert_eq!(warnings(&feed(&mut model, &[pool(3000)])).len(), 1, "2 of 4 is at the bar: it warns");
    feed(&mut model, &[pool(3030)]);
    let decided = model.tick(Timestamp::from_millis(3_061_000));
    assert!(
        matches!(decided.as_slice(), [PrecursorDecision::End { ending: Ending::Missed, .. }]),
        "2 of 5: {decided:?}"
    );
}

#[test]
fn a_crash_and_the_crash_loop_it_completes_are_one_incident_and_warnings_are_not_cues() {
    let mut model = Precursors::new(settings());
    let rule = |secs| signal(secs, SignalKind::Rule, "PoolSaturated");
    feed(&mut model, &[rule(0), crash(10), signal(10, SignalKind::Diagnosis, "crash_loop")]);
    feed(&mut model, &[rule(100), crash(110)]);
    let cue = Cue { kind: SignalKind::Rule, name: "PoolSaturated".to_owned(), template: None };
    assert_eq!(record(&model, &cue).n_incidents, 2);
    assert_eq!(model.rows().next().map(|row| row.n_service_incidents), Some(2));
    let mut warning = signal(200, SignalKind::Precursor, "precursor");
    warning.labels.insert("cue".to_owned(), "rule PoolSaturated".to_owned());
    assert!(feed(&mut model, &[warning]).is_empty());
    assert_eq!(model.rows().count(), 1, "a warning is not learnt as a cue");
    // A resolution, a critical signal and a signal of no service.
    let mut resolved = rule(300);
    resolved.state = SignalState::Resolved;
    let mut critical = signal(300, SignalKind::Rule, "Down");
    critical.severity = Severity::Critical;
    let mut nowhere = rule(300);
    nowhere.service = None;
    feed(&mut model, &[resolved, nowhere]);
    assert_eq!(record(&model, &cue).n_seen, 2);
    critical.at = Timestamp::from_millis(420_000);
    feed(&mut model, &[rule(400), critical]);
    assert_eq!(record(&model, &cue).n_incidents, 3, "a critical signal is a failure");
}

#[test]
fn disabled_it_learns_and_warns_nothing() {
    let mut model = Precursors::new(PrecursorSettings { enabled: false, ..settings() });
    let decisions = feed(&mut model, &[pool(0), crash(30), pool(100), crash(130), pool(200)]);
    assert!(decisions.is_empty());
    assert_eq!(model.rows().count(), 0);
}

#[test]
fn memory_is_bounded_per_service_and_in_services() {
    let mut model = Precursors::new(settings());
    for idx in 0..(MAX_CUES_PER_SERVICE as i64 * 3) {
        feed(&mut model, &[signal(idx, SignalKind::Rule, &format!("rule{idx}"))]);
    }
    assert_eq!(model.rows().count(), MAX_CUES_PER_SERVICE);
    let newest = format!("rule{}", MAX_CUES_PER_SERVICE as i64 * 3 - 1);
    assert!(model.rows().any(|row| row.cue.name == newest), "the least recently seen go first");
    assert!(!model.rows().any(|row| row.cue.name == "rule0"));
    // Thousands of sightings within the window: the waiting ones are capped.
    for idx in 0..2_000 {
        feed(&mut model, &[signal(1_000, SignalKind::Rule, &format!("rule{}", idx % 8))]);
    }
    assert!(model.services.values().all(|memory| memory.waiting.len() <= MAX_WAITING));
    // Lead times are capped per cue.
    for incident in 0..(MAX_LEADS as i64 * 2) {
        let at = 10_000 + incident * 1000;
        feed(&mut model, &[pool(at), crash(at + 5)]);
    }
    assert_eq!(record(&model, &pool_cue()).leads_ms.len(), MAX_LEADS);
    // A warning stands for orders when more services than the cap come within the window: orders,
    // the least recently active, is forgotten, and its warning ends with it.
    assert_eq!(warnings(&feed(&mut model, &[pool(99_000)])).len(), 1);
    let mut ended = Vec::new();
    for idx in 0..(MAX_SERVICES + 10) {
        let mut other = pool(99_000);
        other.at = Timestamp::from_millis(99_000_001 + idx as i64);
        other.since = other.at;
        other.service = Some(ServiceName::new(&format!("svc{idx}")).expect("valid name"));
        ended.extend(feed(&mut model, &[other]));
    }
    assert_eq!(model.services.len(), MAX_SERVICES);
    assert!(
        ended.iter().any(|decision| matches!(decision,
            PrecursorDecision::End { service, ending: Ending::Forgotten, .. } if *service == orders())),
        "{ended:?}"
    );
}

#[test]
fn a_snapshot_restores_what_was_learnt_and_a_bad_or_newer_one_is_refused() {
    let mut model = Precursors::new(settings());
    feed(&mut model, &[pool(0), crash(30), pool(1000), crash(1030)]);
    let body = model.encode().expect("encodes");
    let mut restored = Precursors::new(settings());
    assert_eq!(restored.restore(PRECURSOR_SNAPSHOT_VERSION, &body).expect("restores"), 1);
    assert_eq!(record(&restored, &pool_cue()), record(&model, &pool_cue()));
    assert_eq!(warnings(&feed(&mut restored, &[pool(2000)])).len(), 1, "no relearning after a restart");
    let newer = restored.restore(PRECURSOR_SNAPSHOT_VERSION + 1, &body).expect_err("newer refused");
    assert!(newer.to_string().contains("newer"), "{newer}");
    let corrupt = restored.restore(PRECURSOR_SNAPSHOT_VERSION, b"{not json").expect_err("corrupt refused");
    assert_eq!(corrupt.to_string(), "not readable");
    assert_eq!(restored.rows().count(), 1, "a refused snapshot changes nothing");
    // Forgotten while the warning of pool(2000) stands: the warning ends with it.
    let ended = restored.forget(Some(&orders()), Timestamp::from_millis(2_010_000));
    assert!(matches!(ended.as_slice(), [PrecursorDecision::End { ending: Ending::Forgotten, .. }]), "{ended:?}");
    assert_eq!(restored.rows().count(), 0);
}

#[test]
fn a_hostile_snapshot_is_held_to_the_caps_keeping_the_most_recent() {
    // More cues than a service may hold, the most recently seen ones with the lowest names, and lead
    // times that would overflow a naive median.
    let cues: Vec<(Cue, CueRecord)> = (0..MAX_CUES_PER_SERVICE as u64 + 10)
        .map(|i| {
            let cue = Cue { kind: SignalKind::Anomaly, name: "new_log_template".to_owned(), template: Some(i) };
            let record = CueRecord {
                n_seen: 3,
                n_followed: 2,
                n_missed: 1,
                n_incidents: 2,
                leads_ms: VecDeque::from([u64::MAX, u64::MAX - 1]),
                last_seen: Timestamp::from_millis(1_000_000 - i as i64 * 1000),
                evidence: String::new(),
            };
            (cue, record)
        })
        .collect();
    let body = serde_json::to_vec(&[PersistedService {
        service: orders(),
        n_incidents: 2,
        last_failure: None,
        last_active: Timestamp::from_millis(1_000_000),
        cues,
    }])
    .expect("serialises");
    let mut model = Precursors::new(settings());
    assert_eq!(model.restore(PRECURSOR_SNAPSHOT_VERSION, &body).expect("restored"), MAX_CUES_PER_SERVICE);
    let kept: Vec<u64> = model.rows().filter_map(|row| row.cue.template).collect();
    assert!(kept.iter().all(|template| *template < MAX_CUES_PER_SERVICE as u64), "the stalest went: {kept:?}");
    let first = Cue { kind: SignalKind::Anomaly, name: "new_log_template".to_owned(), template: Some(0) };
    let leads = record(&model, &first).leads().expect("leads");
    assert_eq!(leads.median, Duration::from_millis(u64::MAX - 1));
}
