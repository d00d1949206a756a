//! `mend report INCIDENT`: the post-incident report, as Markdown (pastes into a ticket) or as one
//! self-contained HTML page with SVG charts (`chart.rs`) of the key series around the incident.
//!
//! Three parts, IO only at the ends: [`gather`] reads the incident, its actions, its signals' transitions,
//! the events around it and the outcomes learnt from the SQLite store; [`charts`] evaluates PromQL over
//! the daemon's in-memory series store (so only the daemon draws charts: `mend report` without a running
//! daemon builds the report from the store alone and says why the charts are missing); [`render`] is
//! pure: what was gathered in, text out, every piece of data escaped for its format.
//!
//! The daemon serves it at `GET /api/v1/incidents/{id}/report?format=md|html` ([`Reports`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mend_api::{ReportApi, ReportError, ReportFormat};
use mend_observe::series::SeriesStore;
use mend_store::{EventQuery, SignalQuery, Store, StoreError};
use mend_types::{
    ActionOutcome, ActionRecord, ActionState, Actor, Clock, Event, EventKind, Incident, IncidentId, IncidentState,
    Signal, SignalKind, Timestamp,
};

use crate::chart::{Band, Chart, Marker, MarkerKind, Series, escape};

/// How far before the incident's first signal and after its end the report looks.
const MARGIN: Duration = Duration::from_secs(60);
/// The longest window the report reads events and draws charts over (an incident open for days is shown
/// from its start, up to this long).
const MAX_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// Events and signal transitions read per page, and pages at most (of each).
const PAGE_ROWS: usize = 2_000;
const MAX_PAGES: usize = 20;
/// Timeline rows shown at most (the rest is counted).
const MAX_TIMELINE: usize = 400;
/// Services charted at most.
const MAX_SERVICES: usize = 4;
/// Points per chart line, about.
const POINTS_PER_LINE: i64 = 240;

/// Event kinds that belong in an incident's timeline (lifecycle of the replicas, traffic, chaos, learning).
const TIMELINE_KINDS: [EventKind; 17] = [
    EventKind::SpawnFailed,
    EventKind::Ready,
    EventKind::Unready,
    EventKind::Unhealthy,
    EventKind::Exited,
    EventKind::Restarted,
    EventKind::GaveUp,
    EventKind::ChaosStarted,
    EventKind::ChaosEnded,
    EventKind::CanaryWeightChanged,
    EventKind::Ejected,
    EventKind::Returned,
    EventKind::MendTrouble,
    EventKind::ActionsReordered,
    EventKind::SensitivityChanged,
    EventKind::Rollout,
    EventKind::ConfigReloaded,
];

/// What the report is made of, as read from the store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gathered {
    pub(crate) incident: Incident,
    pub(crate) actions: Vec<ActionRecord>,
    /// Transitions of the incident's signals within the window, oldest first.
    pub(crate) signals: Vec<Signal>,
    /// Events of the incident's services within the window, oldest first.
    pub(crate) events: Vec<Event>,
    /// Outcomes recorded for the incident's actions.
    pub(crate) outcomes: Vec<ActionOutcome>,
    /// Where the window starts and ends.
    pub(crate) from: Timestamp,
    pub(crate) to: Timestamp,
    /// When the report was made.
    pub(crate) now: Timestamp,
}

/// The charts, or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Charts {
    Drawn(Vec<Chart>),
    Missing(String),
}

/// The window around an incident: from a minute before its first signal to a minute after it closed (or
/// now, while open), at most [`MAX_WINDOW`] long.
fn window(incident: &Incident, now: Timestamp) -> (Timestamp, Timestamp) {
    let first = incident.signals.iter().map(|signal| signal.since).chain([incident.opened_at]).min();
    let from = first.unwrap_or(incident.opened_at).saturating_sub(MARGIN);
    let to = incident.closed_at.map_or(now, |closed| closed.saturating_add(MARGIN).min(now.max(closed)));
    let to = to.max(incident.opened_at).min(from.saturating_add(MAX_WINDOW));
    (from, to)
}

/// Reads what the report of incident `id` needs; `None` when there is no such incident.
pub(crate) fn gather(store: &Store, id: IncidentId, now: Timestamp) -> Result<Option<Gathered>, StoreError> {
    let Some((incident, actions)) = store.incident(id)? else { return Ok(None) };
    let (from, to) = window(&incident, now);
    let fingerprints: BTreeSet<&str> = incident.signals.iter().map(|signal| signal.fingerprint.as_str()).collect();
    // Paged forward from the window's start (ids follow commit order), so that an old incident's rows
    // are found however much the store holds after them.
    let mut signals = Vec::new();
    let mut after_id = 0;
    for _ in 0..MAX_PAGES {
        let query = SignalQuery { since: Some(from), after_id: Some(after_id), limit: PAGE_ROWS, ..Default::default() };
        let page = store.signals(&query)?;
        let (n_rows, past) = (page.len(), page.last().is_none_or(|stored| stored.signal.at > to));
        after_id = page.last().map_or(after_id, |stored| stored.id);
        signals.extend(
            page.into_iter()
                .map(|stored| stored.signal)
                .filter(|signal| signal.at <= to && fingerprints.contains(signal.fingerprint().as_str())),
        );
        if n_rows < PAGE_ROWS || past {
            break;
        }
    }
    let mut events = Vec::new();
    let mut after_id = 0;
    for _ in 0..MAX_PAGES {
        let query = EventQuery {
            since: Some(from),
            after_id: Some(after_id),
            kinds: TIMELINE_KINDS.to_vec(),
            limit: PAGE_ROWS,
            ..Default::default()
        };
        let page = store.events(&query)?;
        let (n_rows, past) = (page.len(), page.last().is_none_or(|stored| stored.event.at > to));
        after_id = page.last().map_or(after_id, |stored| stored.id);
        events.extend(
            page.into_iter().map(|stored| stored.event).filter(|event| event.at <= to && concerns(&incident, event)),
        );
        if n_rows < PAGE_ROWS || past {
            break;
        }
    }
    let outcomes = store.incident_outcomes(id)?;
    Ok(Some(Gathered { incident, actions, signals, events, outcomes, from, to, now }))
}

/// Whether `event` belongs in the incident's timeline: one of its services', or feedback on it.
fn concerns(incident: &Incident, event: &Event) -> bool {
    let about_this = event.details.get("incident").and_then(serde_json::Value::as_u64).map(IncidentId);
    match event.kind {
        EventKind::SensitivityChanged => about_this == Some(incident.id),
        EventKind::ConfigReloaded | EventKind::MendTrouble => event.service.is_none(),
        _ => event.service.as_ref().is_some_and(|service| incident.services.contains(service)),
    }
}

/// A PromQL string literal.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Seconds from the incident's opening (the charts' x axis).
fn offset(incident: &Incident, at: Timestamp) -> f64 {
    (at.as_millis() - incident.opened_at.as_millis()) as f64 / 1000.0
}

/// Evaluates `expr` over the window; each result series as a line named by `name` (and its labels).
fn lines(
    series: &SeriesStore,
    gathered: &Gathered,
    expr: &str,
    name: &dyn Fn(&mend_query::Labels) -> String,
    scale: f64,
) -> Vec<Series> {
    let Ok(query) = mend_query::Query::parse(expr) else { return Vec::new() };
    let (start, end) = (gathered.from.as_millis(), gathered.to.as_millis());
    let step = ((end - start) / POINTS_PER_LINE).max(1000);
    let Ok(result) = query.eval_range(series, start, end, step, &mend_query::EvalOptions::default()) else {
        return Vec::new();
    };
    result
        .into_iter()
        .filter(|line| line.points.iter().any(|(_, value)| value.is_finite()))
        .map(|line| Series {
            name: name(&line.labels),
            points: line
                .points
                .iter()
                .map(|&(at, value)| (offset(&gathered.incident, Timestamp::from_millis(at)), value * scale))
                .collect(),
        })
        .collect()
}

/// Labels of a result line, for its name in a legend (the metric name aside).
fn label_text(labels: &mend_query::Labels) -> String {
    let pairs: Vec<String> =
        labels.iter().filter(|(name, _)| *name != mend_query::METRIC_NAME).map(|(k, v)| format!("{k}={v}")).collect();
    if pairs.is_empty() { "value".to_owned() } else { pairs.join(",") }
}

/// The charts of the incident's key series: each signal's own series (from the rule's expression or the
/// detector's series, `exprs` by signal name), and each service's error ratio, latency and replicas, with
/// the incident shaded and its detection, diagnosis and actions marked.
pub(crate) fn charts(series: &SeriesStore, gathered: &Gathered, exprs: &BTreeMap<String, String>) -> Vec<Chart> {
    let incident = &gathered.incident;
    let mut markers =
        vec![Marker { at: 0.0, label: format!("incident {} opened", incident.id), kind: MarkerKind::Detection }];
    if let Some(at) = incident.diagnosis.diagnosed_at {
        markers.push(Marker {
            at: offset(incident, at),
            label: format!("diagnosed {}", incident.diagnosis.name),
            kind: MarkerKind::Diagnosis,
        });
    }
    for action in &gathered.actions {
        let at = action.started_at.unwrap_or(action.requested_at);
        markers.push(Marker {
            at: offset(incident, at),
            label: format!("{} ({})", action_title(action), action.state),
            kind: MarkerKind::Action,
        });
    }
    let onset = incident.signals.iter().map(|signal| signal.since).min().unwrap_or(incident.opened_at);
    let end = incident.closed_at.unwrap_or(gathered.to);
    let bands = vec![Band {
        from: offset(incident, onset),
        to: offset(incident, end),
        label: format!("incident {} ({})", incident.id, incident.state.as_str()),
    }];
    let chart = |title: String, y_label: &str, lines: Vec<Series>| Chart {
        title,
        x_label: format!("seconds from the incident's opening ({})", incident.opened_at),
        y_label: y_label.to_owned(),
        series: lines,
        bands: bands.clone(),
        markers: markers.clone(),
    };
    let mut charts = Vec::new();
    let mut charted = BTreeSet::new();
    for signal in &incident.signals {
        if !has_series(signal.kind) || !charted.insert(signal.name.clone()) {
            continue;
        }
        let expr = match (exprs.get(&signal.name), signal_series_name(gathered, &signal.fingerprint)) {
            (Some(expr), _) => expr.clone(),
            (None, Some(name)) => match &signal.service {
                Some(service) => format!("{name}{{service={}}}", quoted(service.as_str())),
                None => name,
            },
            (None, None) => continue,
        };
        let mut found = lines(series, gathered, &expr, &label_text, 1.0);
        found.truncate(6);
        if !found.is_empty() {
            charts.push(chart(format!("{} {}: {expr}", signal.kind.as_str(), signal.name), "value", found));
        }
    }
    for service in incident.services.iter().take(MAX_SERVICES) {
        let selector = format!("service={}", quoted(service.as_str()));
        let errors = lines(
            series,
            gathered,
            &format!(
                "sum(rate(mend_proxy_requests_total{{{selector},code=\"5xx\"}}[15s])) / sum(rate(mend_proxy_requests_total{{{selector}}}[15s]))"
            ),
            &|_| "5xx / all".to_owned(),
            1.0,
        );
        if !errors.is_empty() {
            charts.push(chart(format!("{service}: error ratio"), "ratio", errors));
        }
        let mut latency = Vec::new();
        for (quantile, name) in [("0.5", "p50"), ("0.99", "p99")] {
            latency.extend(lines(
                series,
                gathered,
                &format!(
                    "histogram_quantile({quantile}, sum by (le) (rate(mend_proxy_request_duration_seconds_bucket{{{selector}}}[15s])))"
                ),
                &|_| name.to_owned(),
                1000.0,
            ));
        }
        if !latency.is_empty() {
            charts.push(chart(format!("{service}: latency"), "ms", latency));
        }
        let mut replicas =
            lines(series, gathered, &format!("sum(mend_replica_up{{{selector}}})"), &|_| "up".into(), 1.0);
        replicas.extend(lines(
            series,
            gathered,
            &format!("sum(mend_replica_ready{{{selector}}})"),
            &|_| "ready".into(),
            1.0,
        ));
        if !replicas.is_empty() {
            charts.push(chart(format!("{service}: replicas"), "replicas", replicas));
        }
    }
    charts
}

/// The metric name a signal's transitions carried (detectors and forecasts label their signals with
/// the series' labels).
fn signal_series_name(gathered: &Gathered, fingerprint: &str) -> Option<String> {
    gathered
        .signals
        .iter()
        .filter(|signal| signal.fingerprint() == fingerprint)
        .find_map(|signal| signal.labels.get(mend_query::METRIC_NAME).cloned())
}

fn action_title(action: &ActionRecord) -> String {
    let target = match (&action.service, action.replica) {
        (Some(service), Some(replica)) => format!(" {service}/{replica}"),
        (Some(service), None) => format!(" {service}"),
        (None, _) => String::new(),
    };
    format!("#{} {}{target}", action.id, action.action.describe())
}

/// A duration for people: `850ms`, `12.3s`, `4m 05s`, `2h 03m`.
fn human(millis: i64) -> String {
    let millis = millis.max(0);
    match millis {
        0..1_000 => format!("{millis}ms"),
        1_000..60_000 => format!("{:.1}s", millis as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", millis / 60_000, millis / 1000 % 60),
        _ => format!("{}h {:02}m", millis / 3_600_000, millis / 60_000 % 60),
    }
}

/// The times that measure how mend did.
#[derive(Debug, Clone, PartialEq)]
struct Times {
    /// When the condition began: the earliest of the signals' onsets and the root's anomaly onset.
    onset: Timestamp,
    detect: i64,
    diagnose: Option<i64>,
    /// Until resolved (none while open, or when escalated).
    recover: Option<i64>,
    duration: i64,
}

fn times(gathered: &Gathered) -> Times {
    let incident = &gathered.incident;
    let root_onset =
        incident.diagnosis.root.as_ref().and_then(|root| incident.diagnosis.ranked(root)).and_then(|r| r.onset);
    let onset = incident
        .signals
        .iter()
        .map(|signal| signal.since)
        .chain(root_onset)
        .chain([incident.opened_at])
        .min()
        .unwrap_or(incident.opened_at);
    let opened = incident.opened_at.as_millis();
    let end = incident.closed_at.unwrap_or(gathered.now).as_millis();
    Times {
        onset,
        detect: opened - onset.as_millis(),
        diagnose: incident.diagnosis.diagnosed_at.map(|at| at.as_millis() - opened),
        recover: (incident.state == IncidentState::Resolved)
            .then_some(incident.closed_at)
            .flatten()
            .map(|closed| closed.as_millis() - opened),
        duration: end - onset.as_millis(),
    }
}

/// One row of the merged timeline.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    at: Timestamp,
    what: &'static str,
    text: String,
}

fn timeline(gathered: &Gathered) -> Vec<Row> {
    let mut rows = Vec::new();
    for entry in &gathered.incident.timeline {
        rows.push(Row { at: entry.at, what: "incident", text: format!("[{}] {}", entry.state.as_str(), entry.note) });
    }
    for signal in &gathered.signals {
        let state = signal.state.as_str();
        let place = match (&signal.service, signal.replica) {
            (Some(service), Some(replica)) => format!(" on {service}/{replica}"),
            (Some(service), None) => format!(" on {service}"),
            _ => String::new(),
        };
        rows.push(Row {
            at: signal.at,
            what: "signal",
            text: format!("{} {} {state}{place}: {}", signal.kind.as_str(), signal.name, signal.evidence),
        });
    }
    for event in &gathered.events {
        let place = match (&event.service, event.replica) {
            (Some(service), Some(replica)) => format!("{service}/{replica}: "),
            (Some(service), None) => format!("{service}: "),
            _ => String::new(),
        };
        rows.push(Row { at: event.at, what: "event", text: format!("{place}{}", event.message) });
    }
    for action in &gathered.actions {
        rows.push(Row {
            at: action.requested_at,
            what: "action",
            text: format!("{} asked by {}: {}", action_title(action), action.actor, action.reason),
        });
        if let (Some(at), Some(outcome)) = (action.finished_at, &action.outcome) {
            rows.push(Row {
                at,
                what: "action",
                text: format!("{} {}: {outcome}", action_title(action), action.state),
            });
        }
    }
    rows.sort_by_key(|row| row.at);
    rows
}

/// What humans decided: operators' actions, approvals, denials, pauses and resumptions, feedback.
fn human_decisions(gathered: &Gathered) -> Vec<Row> {
    let mut rows = Vec::new();
    for action in &gathered.actions {
        if action.actor == Actor::Operator {
            rows.push(Row {
                at: action.requested_at,
                what: "command",
                text: format!("{} by an operator: {}", action_title(action), action.reason),
            });
        }
        match action.state {
            ActionState::Denied => rows.push(Row {
                at: action.finished_at.unwrap_or(action.requested_at),
                what: "denied",
                text: format!("{}: denied by an operator", action_title(action)),
            }),
            ActionState::Expired => rows.push(Row {
                at: action.finished_at.unwrap_or(action.requested_at),
                what: "expired",
                text: format!("{}: nobody approved it in time", action_title(action)),
            }),
            _ => {}
        }
    }
    for entry in &gathered.incident.timeline {
        let note = entry.note.as_str();
        let what = if note.contains("approved by an operator") {
            "approved"
        } else if note.contains("paused by an operator") {
            "paused"
        } else if note.contains("resumed by an operator") {
            "resumed"
        } else {
            continue;
        };
        rows.push(Row { at: entry.at, what, text: note.to_owned() });
    }
    for event in gathered.events.iter().filter(|event| event.kind == EventKind::SensitivityChanged) {
        rows.push(Row { at: event.at, what: "feedback", text: event.message.clone() });
    }
    rows.sort_by_key(|row| row.at);
    rows
}

/// The report in `format`.
pub(crate) fn render(gathered: &Gathered, charts: &Charts, format: ReportFormat) -> String {
    match format {
        ReportFormat::Markdown => markdown(gathered, charts),
        ReportFormat::Html => html(gathered, charts),
    }
}

/// Escapes text for a Markdown paragraph or table cell: no markup, no HTML, one line.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '|' | '*' | '`' | '[' | ']' | '_' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The summary's rows: (name, value), values unescaped.
fn summary(gathered: &Gathered) -> Vec<(&'static str, String)> {
    let incident = &gathered.incident;
    let times = times(gathered);
    let services: Vec<&str> = incident.services.iter().map(|s| s.as_str()).collect();
    let outcome = match incident.state {
        IncidentState::Resolved => format!("resolved after {}", human(times.recover.unwrap_or_default())),
        IncidentState::Escalated => "escalated to a human".to_owned(),
        state => format!("still {} (report made {})", state.as_str(), gathered.now),
    };
    let n_done = gathered.actions.iter().filter(|a| a.state == ActionState::Succeeded).count();
    vec![
        ("Services", if services.is_empty() { "-".to_owned() } else { services.join(", ") }),
        (
            "Diagnosis",
            if incident.diagnosis.name.is_empty() { "-".to_owned() } else { incident.diagnosis.name.clone() },
        ),
        (
            "Root cause",
            match &incident.diagnosis.root {
                Some(root) => format!("{root}: {}", incident.diagnosis.evidence),
                None => incident.diagnosis.evidence.clone(),
            },
        ),
        ("Opened", incident.opened_at.to_string()),
        ("Closed", incident.closed_at.map_or_else(|| "-".to_owned(), |at| at.to_string())),
        ("Duration", format!("{} (from the first signal's onset)", human(times.duration))),
        ("Actions", format!("{} ({n_done} succeeded)", gathered.actions.len())),
        ("Outcome", outcome),
    ]
}

fn times_rows(gathered: &Gathered) -> Vec<(&'static str, String, &'static str)> {
    let times = times(gathered);
    let incident = &gathered.incident;
    vec![
        ("Time to detect", human(times.detect), "from the onset of the first signal's condition to the incident"),
        (
            "Time to diagnose",
            times.diagnose.map_or_else(|| "-".to_owned(), human),
            "from the incident to its diagnosis (none: named from the signals as they came)",
        ),
        (
            "Time to recover",
            match (times.recover, incident.state) {
                (Some(ms), _) => human(ms),
                (None, IncidentState::Escalated) => "not recovered: escalated".to_owned(),
                (None, _) => "not recovered yet".to_owned(),
            },
            "from the incident to its resolution",
        ),
    ]
}

/// What was learnt: outcomes, reorderings and sensitivity changes; `(outcome rows, reorderings, changes)`.
fn learnt(gathered: &Gathered) -> (Vec<Vec<String>>, Vec<&Event>, Vec<&Event>) {
    let outcomes = gathered
        .outcomes
        .iter()
        .map(|outcome| {
            vec![
                format!("#{}", outcome.action),
                outcome.kind.describe(),
                outcome.service.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
                outcome.trigger.clone(),
                outcome.verdict.as_str().to_owned(),
                outcome.recover_ms.map_or_else(|| "-".to_owned(), |ms| human(ms.min(i64::MAX as u64) as i64)),
            ]
        })
        .collect();
    let reorders = gathered.events.iter().filter(|e| e.kind == EventKind::ActionsReordered).collect();
    let changes = gathered.events.iter().filter(|e| e.kind == EventKind::SensitivityChanged).collect();
    (outcomes, reorders, changes)
}

fn md_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(header.len()));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|cell| md(cell)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn signal_rows(gathered: &Gathered) -> Vec<Vec<String>> {
    gathered
        .incident
        .signals
        .iter()
        .map(|signal| {
            vec![
                signal.kind.as_str().to_owned(),
                signal.name.clone(),
                match (&signal.service, signal.replica) {
                    (Some(service), Some(replica)) => format!("{service}/{replica}"),
                    (Some(service), None) => service.to_string(),
                    _ => "-".to_owned(),
                },
                signal.since.to_string(),
                if signal.firing { "firing".to_owned() } else { "resolved".to_owned() },
                signal.evidence.clone(),
            ]
        })
        .collect()
}

fn ranking_rows(gathered: &Gathered) -> Vec<Vec<String>> {
    gathered
        .incident
        .diagnosis
        .ranking
        .iter()
        .enumerate()
        .map(|(idx, ranked)| {
            vec![
                (idx + 1).to_string(),
                ranked.service.to_string(),
                ranked.diagnosis.clone(),
                format!("{:.2}", ranked.score),
                format!("{:.0}%", ranked.confidence * 100.0),
                ranked.explained_by.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
                ranked.evidence.join("; "),
            ]
        })
        .collect()
}

fn action_rows(gathered: &Gathered) -> Vec<Vec<String>> {
    gathered
        .actions
        .iter()
        .map(|action| {
            vec![
                action_title(action),
                action.actor.to_string(),
                action.reason.clone(),
                action.state.to_string(),
                action.requested_at.to_string(),
                action.finished_at.map_or_else(|| "-".to_owned(), |at| at.to_string()),
                action.outcome.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect()
}

const SIGNAL_HEADER: [&str; 6] = ["kind", "name", "where", "since", "state", "evidence"];
const RANKING_HEADER: [&str; 7] = ["#", "service", "diagnosis", "score", "confidence", "explained by", "evidence"];
const ACTION_HEADER: [&str; 7] = ["action", "by", "why", "guard / state", "asked", "ended", "outcome"];
const OUTCOME_HEADER: [&str; 6] = ["action", "what", "service", "trigger", "verdict", "recovered in"];

fn title(gathered: &Gathered) -> String {
    let incident = &gathered.incident;
    let services: Vec<&str> = incident.services.iter().map(|s| s.as_str()).collect();
    format!(
        "Incident {}: {} on {}",
        incident.id,
        if incident.diagnosis.name.is_empty() { "undiagnosed" } else { &incident.diagnosis.name },
        if services.is_empty() { "-".to_owned() } else { services.join(", ") }
    )
}

fn markdown(gathered: &Gathered, charts: &Charts) -> String {
    let incident = &gathered.incident;
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", md(&title(gathered)));
    out.push_str("## Summary\n\n");
    let rows: Vec<Vec<String>> = summary(gathered).into_iter().map(|(k, v)| vec![k.to_owned(), v]).collect();
    md_table(&mut out, &["", ""], &rows);
    out.push_str("## Time to detect, diagnose, recover\n\n");
    let rows: Vec<Vec<String>> =
        times_rows(gathered).into_iter().map(|(k, v, how)| vec![k.to_owned(), v, how.to_owned()]).collect();
    md_table(&mut out, &["", "", "measured"], &rows);
    out.push_str("## Diagnosis\n\n");
    let confidence =
        incident.diagnosis.confidence.map_or_else(String::new, |c| format!(" (confidence {:.0}%)", c * 100.0));
    let _ = writeln!(out, "**{}**{confidence}: {}\n", md(&incident.diagnosis.name), md(&incident.diagnosis.evidence));
    if !incident.diagnosis.victims.is_empty() {
        let victims: Vec<&str> = incident.diagnosis.victims.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(out, "Victims: {}\n", md(&victims.join(", ")));
    }
    if !incident.diagnosis.facts.is_empty() {
        out.push_str("Evidence:\n\n");
        for fact in &incident.diagnosis.facts {
            let _ = writeln!(out, "- {}", md(fact));
        }
        out.push('\n');
    }
    if incident.diagnosis.ranking.is_empty() {
        out.push_str("No ranked candidates: the diagnosis came from the signals alone.\n\n");
    } else {
        out.push_str("Ranked candidates:\n\n");
        md_table(&mut out, &RANKING_HEADER, &ranking_rows(gathered));
    }
    out.push_str("## Signals\n\n");
    md_table(&mut out, &SIGNAL_HEADER, &signal_rows(gathered));
    out.push_str("## Actions\n\n");
    if gathered.actions.is_empty() {
        out.push_str("No action was taken.\n\n");
    } else {
        md_table(&mut out, &ACTION_HEADER, &action_rows(gathered));
    }
    out.push_str("## Human decisions\n\n");
    let decisions = human_decisions(gathered);
    if decisions.is_empty() {
        out.push_str("None: no approval, denial, operator command, pause or feedback touched this incident.\n\n");
    } else {
        let rows: Vec<Vec<String>> =
            decisions.into_iter().map(|row| vec![row.at.to_string(), row.what.to_owned(), row.text]).collect();
        md_table(&mut out, &["at", "decision", "what"], &rows);
    }
    out.push_str("## Timeline\n\n");
    let rows = timeline(gathered);
    let n_rows = rows.len();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .take(MAX_TIMELINE)
        .map(|row| vec![row.at.to_string(), row.what.to_owned(), row.text])
        .collect();
    md_table(&mut out, &["at", "source", "what"], &rows);
    if n_rows > MAX_TIMELINE {
        let _ = writeln!(out, "({} more rows not shown)\n", n_rows - MAX_TIMELINE);
    }
    out.push_str("## What was learnt\n\n");
    let (outcomes, reorders, changes) = learnt(gathered);
    if outcomes.is_empty() {
        out.push_str("No outcome recorded for this incident's actions (only policies' actions are scored).\n\n");
    } else {
        out.push_str("Outcomes recorded:\n\n");
        md_table(&mut out, &OUTCOME_HEADER, &outcomes);
    }
    for event in reorders {
        let _ = writeln!(out, "- Reordered: {}", md(&event.message));
    }
    for event in changes {
        let _ = writeln!(out, "- Sensitivity changed: {}", md(&event.message));
    }
    out.push_str("\n## Charts\n\n");
    match charts {
        Charts::Drawn(drawn) => {
            let _ = writeln!(
                out,
                "{} charts are omitted from the Markdown: `mend report {} --format html` draws them \
                 (the daemon serves them at /api/v1/incidents/{}/report?format=html).",
                drawn.len(),
                incident.id,
                incident.id
            );
        }
        Charts::Missing(why) => {
            let _ = writeln!(out, "No charts: {}.", md(why));
        }
    }
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:72em;\
padding:0 1em;color:#222;line-height:1.4}h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;\
margin-top:1.6em}table{border-collapse:collapse;margin:.5em 0;width:100%}td,th{border:1px solid #ccc;padding:3px 6px;\
text-align:left;vertical-align:top;font-size:.92em}th{background:#f4f4f4}td.k{white-space:nowrap;font-weight:600;\
width:12em}.ok{color:#067a3a}.bad{color:#b00020;font-weight:600}.note{color:#555}svg{display:block;margin:1em 0;\
max-width:100%;height:auto}code{font-family:ui-monospace,monospace}\
@media print{body{margin:0;max-width:none;font-size:10pt}h2{break-after:avoid}tr,svg{break-inside:avoid}\
a{color:inherit;text-decoration:none}}";

fn html_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><tr>");
    for name in header {
        let _ = write!(out, "<th>{}</th>", escape(name));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn html(gathered: &Gathered, charts: &Charts) -> String {
    let incident = &gathered.incident;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>{CSS}</style></head><body><h1>{title}</h1>",
        title = escape(&title(gathered))
    );
    out.push_str("<h2 id=\"summary\">Summary</h2><table>");
    for (name, value) in summary(gathered) {
        let class = match (name, incident.state) {
            ("Outcome", IncidentState::Resolved) => " class=\"ok\"",
            ("Outcome", _) => " class=\"bad\"",
            _ => "",
        };
        let _ = write!(out, "<tr><td class=\"k\">{}</td><td{class}>{}</td></tr>", escape(name), escape(&value));
    }
    out.push_str("</table><h2 id=\"times\">Time to detect, diagnose, recover</h2><table>");
    for (name, value, how) in times_rows(gathered) {
        let _ = write!(
            out,
            "<tr><td class=\"k\">{}</td><td>{}</td><td class=\"note\">{}</td></tr>",
            escape(name),
            escape(&value),
            escape(how)
        );
    }
    out.push_str("</table><h2 id=\"diagnosis\">Diagnosis</h2>");
    let confidence =
        incident.diagnosis.confidence.map_or_else(String::new, |c| format!(" (confidence {:.0}%)", c * 100.0));
    let _ = write!(
        out,
        "<p><strong>{}</strong>{}: {}</p>",
        escape(&incident.diagnosis.name),
        escape(&confidence),
        escape(&incident.diagnosis.evidence)
    );
    if !incident.diagnosis.victims.is_empty() {
        let victims: Vec<&str> = incident.diagnosis.victims.iter().map(|s| s.as_str()).collect();
        let _ = write!(out, "<p>Victims: {}</p>", escape(&victims.join(", ")));
    }
    if !incident.diagnosis.facts.is_empty() {
        out.push_str("<p>Evidence:</p><ul>");
        for fact in &incident.diagnosis.facts {
            let _ = write!(out, "<li>{}</li>", escape(fact));
        }
        out.push_str("</ul>");
    }
    if incident.diagnosis.ranking.is_empty() {
        out.push_str("<p class=\"note\">No ranked candidates: the diagnosis came from the signals alone.</p>");
    } else {
        out.push_str("<p>Ranked candidates:</p>");
        html_table(&mut out, &RANKING_HEADER, &ranking_rows(gathered));
    }
    out.push_str("<h2 id=\"signals\">Signals</h2>");
    html_table(&mut out, &SIGNAL_HEADER, &signal_rows(gathered));
    out.push_str("<h2 id=\"actions\">Actions</h2>");
    if gathered.actions.is_empty() {
        out.push_str("<p class=\"note\">No action was taken.</p>");
    } else {
        html_table(&mut out, &ACTION_HEADER, &action_rows(gathered));
    }
    out.push_str("<h2 id=\"decisions\">Human decisions</h2>");
    let decisions = human_decisions(gathered);
    if decisions.is_empty() {
        out.push_str(
            "<p class=\"note\">None: no approval, denial, operator command, pause or feedback touched this incident.</p>",
        );
    } else {
        let rows: Vec<Vec<String>> =
            decisions.into_iter().map(|row| vec![row.at.to_string(), row.what.to_owned(), row.text]).collect();
        html_table(&mut out, &["at", "decision", "what"], &rows);
    }
    out.push_str("<h2 id=\"charts\">Charts</h2>");
    match charts {
        Charts::Drawn(drawn) if drawn.is_empty() => {
            out.push_str("<p class=\"note\">No charts: the series store holds none of this incident's series.</p>");
        }
        Charts::Drawn(drawn) => {
            for chart in drawn {
                out.push_str(&chart.render(880, 240));
            }
        }
        Charts::Missing(why) => {
            let _ = write!(out, "<p class=\"note\">No charts: {}.</p>", escape(why));
        }
    }
    out.push_str("<h2 id=\"timeline\">Timeline</h2>");
    let rows = timeline(gathered);
    let n_rows = rows.len();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .take(MAX_TIMELINE)
        .map(|row| vec![row.at.to_string(), row.what.to_owned(), row.text])
        .collect();
    html_table(&mut out, &["at", "source", "what"], &rows);
    if n_rows > MAX_TIMELINE {
        let _ = write!(out, "<p class=\"note\">({} more rows not shown)</p>", n_rows - MAX_TIMELINE);
    }
    out.push_str("<h2 id=\"learnt\">What was learnt</h2>");
    let (outcomes, reorders, changes) = learnt(gathered);
    if outcomes.is_empty() {
        out.push_str(
            "<p class=\"note\">No outcome recorded for this incident's actions (only policies' actions are scored).</p>",
        );
    } else {
        out.push_str("<p>Outcomes recorded:</p>");
        html_table(&mut out, &OUTCOME_HEADER, &outcomes);
    }
    if !reorders.is_empty() || !changes.is_empty() {
        out.push_str("<ul>");
        for event in reorders {
            let _ = write!(out, "<li>Reordered: {}</li>", escape(&event.message));
        }
        for event in changes {
            let _ = write!(out, "<li>Sensitivity changed: {}</li>", escape(&event.message));
        }
        out.push_str("</ul>");
    }
    let _ = write!(out, "<p class=\"note\">Made by mend at {}.</p></body></html>", gathered.now);
    out
}

/// The daemon's report builder: the store for what happened, the series store for the charts.
pub(crate) struct Reports {
    pub(crate) store: Arc<Store>,
    pub(crate) series: Arc<RwLock<SeriesStore>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The expression behind each rule, detector and forecast, by name (as configured at start).
    pub(crate) exprs: Arc<BTreeMap<String, String>>,
}

impl Reports {
    /// The expressions of `config`'s rules, detectors and forecasts, by name.
    pub(crate) fn exprs(config: &mend_config::Config) -> BTreeMap<String, String> {
        let rules = config.rules.iter().map(|rule| (rule.name.clone(), rule.expr.clone()));
        let detects = config.detects.iter().map(|detect| (detect.name.clone(), detect.series.clone()));
        let forecasts = config.forecasts.iter().map(|forecast| (forecast.name.clone(), forecast.series.clone()));
        rules.chain(detects).chain(forecasts).collect()
    }
}

impl ReportApi for Reports {
    fn report(&self, id: IncidentId, format: ReportFormat) -> mend_api::Pending<Result<String, ReportError>> {
        let (store, series, exprs, now) =
            (self.store.clone(), self.series.clone(), self.exprs.clone(), self.clock.wall());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let gathered = gather(&store, id, now)
                    .map_err(|error| ReportError::Failed(format!("cannot read incident {id}: {error}")))?
                    .ok_or(ReportError::NotFound(id))?;
                let drawn = match series.read() {
                    Ok(series) => Charts::Drawn(charts(&series, &gathered, &exprs)),
                    Err(_) => Charts::Missing("the series store is unavailable (a writer panicked)".to_owned()),
                };
                Ok(render(&gathered, &drawn, format))
            })
            .await
            .map_err(|error| ReportError::Failed(format!("the report task failed: {error}")))?
        })
    }
}

/// The report of incident `id` from the store at `store_path` alone (the daemon is not running: `why`),
/// without charts.
pub(crate) fn offline(
    store_path: &std::path::Path,
    id: u64,
    format: ReportFormat,
    why: &str,
) -> Result<String, String> {
    if !store_path.exists() {
        return Err(format!("{why}, and there is no event store at {} to build the report from", store_path.display()));
    }
    let store = Store::open(store_path, mend_store::Retention::default())
        .map_err(|error| format!("cannot open the event store {}: {error}", store_path.display()))?;
    let now = mend_types::SystemClock.wall();
    let gathered = gather(&store, IncidentId(id), now)
        .map_err(|error| format!("cannot read incident {id} from {}: {error}", store_path.display()))?;
    let _ = store.close();
    let gathered = gathered.ok_or_else(|| format!("no incident {id} in {}", store_path.display()))?;
    let missing = Charts::Missing(format!(
        "{why}; the charts are drawn from the series the daemon keeps in memory, so this report was built \
         from the event store alone"
    ));
    Ok(render(&gathered, &missing, format))
}

/// Kinds of signal that never have a series of their own.
fn has_series(kind: SignalKind) -> bool {
    !matches!(kind, SignalKind::External | SignalKind::Diagnosis | SignalKind::Precursor)
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
