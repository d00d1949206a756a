//! Tests of the post-incident report: sections, times, escaping, charts, as data.

use std::collections::BTreeMap;

use mend_types::{
    ActionId, ActionKind, Diagnosis, IncidentSignal, RankedService, ServiceName, Severity, SignalState, TimelineEntry,
    Verdict,
};

use super::*;

const HOSTILE: &str = "<script>alert(1)</script> | *bold* `tick` ]]> & \"quote\"";

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
}

fn web() -> ServiceName {
    ServiceName::new("web").expect("a valid name")
}

fn gathered() -> Gathered {
    let signal = Signal {
        at: at(2),
        since: at(1),
        state: SignalState::Firing,
        kind: SignalKind::Rule,
        name: "HighErrors".into(),
        severity: Severity::Critical,
        service: Some(web()),
        replica: None,
        value: 0.5,
        labels: BTreeMap::from([("service".to_owned(), "web".to_owned())]),
        evidence: format!("log line {HOSTILE}"),
    };
    let incident = Incident {
        id: IncidentId(7),
        state: IncidentState::Resolved,
        opened_at: at(2),
        updated_at: at(20),
        closed_at: Some(at(20)),
        services: [web()].into(),
        replicas: Default::default(),
        signals: vec![IncidentSignal {
            fingerprint: signal.fingerprint(),
            name: signal.name.clone(),
            kind: SignalKind::Rule,
            service: Some(web()),
            replica: None,
            firing: false,
            since: at(1),
            at: at(2),
            evidence: signal.evidence.clone(),
            attributed: false,
        }],
        diagnosis: Diagnosis {
            name: "crash_loop".into(),
            root: Some(web()),
            evidence: format!("web exited 3 times: {HOSTILE}"),
            confidence: Some(0.9),
            facts: vec!["exits: 3 in 10s".into()],
            ranking: vec![RankedService {
                service: web(),
                score: 4.5,
                onset: Some(at(0)),
                diagnosis: "crash_loop".into(),
                confidence: 0.9,
                explained_by: None,
                evidence: vec!["exit code 3".into()],
            }],
            diagnosed_at: Some(at(4)),
            ..Default::default()
        },
        diagnoses: Vec::new(),
        actions: vec![ActionId(1)],
        flaps: 0,
        timeline: vec![
            TimelineEntry { at: at(2), state: IncidentState::Open, note: "opened on HighErrors".into() },
            TimelineEntry {
                at: at(6),
                state: IncidentState::Acting,
                note: "restart approved by an operator: running".into(),
            },
            TimelineEntry {
                at: at(7),
                state: IncidentState::Acting,
                note: "automatic healing paused by an operator".into(),
            },
        ],
    };
    let action = ActionRecord {
        id: ActionId(1),
        incident: Some(IncidentId(7)),
        action: ActionKind::Restart,
        service: Some(web()),
        replica: Some(0),
        actor: Actor::Policy { when: "crash_loop".into(), step: 0 },
        reason: "crash_loop on web".into(),
        state: ActionState::Succeeded,
        requested_at: at(5),
        started_at: Some(at(6)),
        finished_at: Some(at(8)),
        outcome: Some(format!("restarted; said {HOSTILE}")),
        output: String::new(),
    };
    let outcome = ActionOutcome {
        action: ActionId(1),
        incident: IncidentId(7),
        trigger: "crash_loop".into(),
        diagnosis: "crash_loop".into(),
        service: Some(web()),
        kind: ActionKind::Restart,
        verdict: Verdict::Resolved,
        started_at: at(6),
        decided_at: at(20),
        verify_ms: 10_000,
        recover_ms: Some(14_000),
    };
    let feedback = Event::new(at(30), EventKind::SensitivityChanged, "rule HighErrors: incident 7 relaxed")
        .service(&web())
        .detail("incident", 7);
    Gathered {
        incident,
        actions: vec![action],
        signals: vec![signal],
        events: vec![
            Event::new(at(1), EventKind::Exited, format!("exited with code 3: {HOSTILE}")).service(&web()),
            feedback,
        ],
        outcomes: vec![outcome],
        from: at(-59),
        to: at(80),
        now: at(90),
    }
}

#[test]
fn times_run_from_the_onset_to_detection_diagnosis_and_resolution() {
    let times = times(&gathered());
    // The root's onset (0) is earlier than the signal's (1): detection took 2 s from it.
    assert_eq!(times.onset, at(0));
    assert_eq!(
        (times.detect, times.diagnose, times.recover, times.duration),
        (2_000, Some(2_000), Some(18_000), 20_000)
    );
    let mut open = gathered();
    open.incident.state = IncidentState::Escalated;
    assert_eq!(super::times(&open).recover, None);
    assert_eq!([human(850), human(12_340), human(245_000), human(7_380_000)], ["850ms", "12.3s", "4m 05s", "2h 03m"]);
}

#[test]
fn markdown_has_every_section_and_escapes_data() {
    let text = render(&gathered(), &Charts::Missing("mend is not running".into()), ReportFormat::Markdown);
    for section in [
        "# Incident 7: crash\\_loop on web",
        "## Summary",
        "## Time to detect, diagnose, recover",
        "## Diagnosis",
        "Ranked candidates:",
        "## Signals",
        "## Actions",
        "## Human decisions",
        "## Timeline",
        "## What was learnt",
        "## Charts",
        "No charts: mend is not running.",
        "| Time to detect | 2.0s |",
        "| Time to recover | 18.0s |",
    ] {
        assert!(text.contains(section), "{section:?} missing from\n{text}");
    }
    // Human decisions: the approval, the pause and the feedback, in time order.
    let decisions = text.split("## Human decisions").nth(1).and_then(|rest| rest.split("## Timeline").next());
    let decisions = decisions.expect("the section");
    let (approved, paused, feedback) =
        (decisions.find("| approved |"), decisions.find("| paused |"), decisions.find("| feedback |"));
    assert!(approved < paused && paused < feedback && approved.is_some(), "{decisions}");
    // Data cannot open HTML, break a table cell or start markup.
    assert!(!text.contains("<script>") && !text.contains("| *bold*"), "{text}");
    assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt; \\| \\*bold\\* \\`tick\\`"), "{text}");
    for line in text.lines().filter(|line| line.starts_with('|')) {
        assert!(line.ends_with(" |") || line.ends_with("--- |"), "a cell spilled: {line}");
    }
}

#[test]
fn html_is_self_contained_escaped_and_prints() {
    let chart = Chart {
        title: format!("web: error ratio {HOSTILE}"),
        series: vec![Series { name: "5xx / all".into(), points: vec![(-10.0, 0.0), (5.0, 0.5)] }],
        ..Default::default()
    };
    let page = render(&gathered(), &Charts::Drawn(vec![chart]), ReportFormat::Html);
    assert!(page.starts_with("<!doctype html>") && page.ends_with("</body></html>"));
    for section in ["Summary", "Time to detect", "Diagnosis", "Signals", "Actions", "Human decisions", "Charts"] {
        assert!(page.contains(&format!("\">{section}")), "{section} missing");
    }
    assert!(page.contains("@media print") && page.contains("<svg "), "print CSS and the chart");
    // Nothing is fetched: no script, no link, no url(), no src, no address but the SVG namespace's name.
    let without_namespace = page.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
    for banned in ["<script", "<link", "url(", "src=", "http://", "https://", "@import"] {
        assert!(!without_namespace.contains(banned), "{banned} in the page");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let no_charts =
        render(&gathered(), &Charts::Missing("mend is not running at 127.0.0.1:1".into()), ReportFormat::Html);
    assert!(no_charts.contains("No charts: mend is not running at 127.0.0.1:1.") && !no_charts.contains("<svg"));
}

#[test]
fn charts_draw_the_signal_and_service_series_with_markers() {
    let gathered = gathered();
    let mut store = SeriesStore::new(mend_observe::series::Limits {
        points_per_series: 10_000,
        retention: Duration::from_secs(3600),
        max_series: 1000,
    });
    for second in -50..70 {
        let when = at(second);
        let ready = if (0..15).contains(&second) { 0.0 } else { 1.0 };
        let labels = store.labels("mend_replica_ready", &[("service", "web"), ("replica", "0")]);
        let _ = store.append(&labels, when, ready);
        let labels = store.labels("mend_replica_up", &[("service", "web"), ("replica", "0")]);
        let _ = store.append(&labels, when, 1.0);
        let labels = store.labels("errors_ratio", &[("service", "web")]);
        let _ = store.append(&labels, when, if (0..15).contains(&second) { 0.5 } else { 0.0 });
    }
    let exprs = BTreeMap::from([("HighErrors".to_owned(), "errors_ratio > -1".to_owned())]);
    let charts = charts(&store, &gathered, &exprs);
    let titles: Vec<&str> = charts.iter().map(|chart| chart.title.as_str()).collect();
    assert_eq!(titles, ["rule HighErrors: errors_ratio > -1", "web: replicas"], "no proxy: no error or latency chart");
    let replicas = &charts[1];
    assert_eq!(replicas.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["up", "ready"]);
    // Ready dips to 0 between the onset and 15 s; x is seconds from the opening (2 s after `at(0)`).
    let ready = &replicas.series[1].points;
    assert!(ready.iter().any(|&(x, y)| (-2.0..13.0).contains(&x) && y == 0.0), "{ready:?}");
    let kinds: Vec<MarkerKind> = replicas.markers.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MarkerKind::Detection, MarkerKind::Diagnosis, MarkerKind::Action]);
    assert_eq!(replicas.markers.iter().map(|m| m.at).collect::<Vec<_>>(), [0.0, 2.0, 4.0]);
    // The incident is shaded from the signal's onset to its close.
    assert_eq!((replicas.bands[0].from, replicas.bands[0].to), (-1.0, 18.0));
    let svg = replicas.render(800, 240);
    assert!(svg.contains("diagnosed") && svg.contains("detected"), "{svg}");
}

#[test]
fn gather_reads_an_old_incident_from_a_store_that_has_much_more_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("mend.db"), mend_store::Retention::default()).expect("opens");
    let expected = gathered();
    store
        .journal(vec![
            mend_store::JournalEntry::Incident(Box::new(expected.incident.clone())),
            mend_store::JournalEntry::Action(Box::new(expected.actions[0].clone())),
            mend_store::JournalEntry::Outcome(Box::new(expected.outcomes[0].clone())),
        ])
        .expect("journalled");
    let (events, signals) = (store.sink(), store.signal_sink());
    for event in &expected.events {
        events.emit(event.clone());
    }
    signals.signal(expected.signals[0].clone());
    // Another service's event inside the window, and far more than a page of rows after the window.
    let db = ServiceName::new("db").expect("a valid name");
    events.emit(Event::new(at(3), EventKind::Exited, "db exited").service(&db));
    for second in 0..2_500 {
        events.emit(Event::new(at(500 + second), EventKind::Ready, "ready again").service(&web()));
        let mut later = expected.signals[0].clone();
        later.at = at(500 + second);
        signals.signal(later);
    }
    store.flush().expect("flushed");
    let read = gather(&store, IncidentId(7), at(10_000)).expect("reads").expect("the incident");
    assert_eq!((read.from, read.to), (at(-59), at(80)), "a minute either side of the incident");
    let messages: Vec<&str> = read.events.iter().map(|event| event.message.as_str()).collect();
    assert_eq!(messages, [expected.events[0].message.as_str(), "rule HighErrors: incident 7 relaxed"]);
    assert_eq!(read.signals, expected.signals);
    assert_eq!((read.actions, read.outcomes), (expected.actions, expected.outcomes));
    assert_eq!(gather(&store, IncidentId(8), at(10_000)).expect("reads"), None);
    store.close().expect("closes");
}
