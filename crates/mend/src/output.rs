//! Everything the CLI prints: tables, event lines, errors. The only module allowed to print.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

use mend_api::{EventDto, IncidentDto, ServicesResponse, SignalDto};
use mend_types::ActionRecord;

/// Prints one line (or a few) to stdout, control characters other than newlines and tabs escaped.
pub(crate) fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", escape_controls(text, true));
}

/// Writes bytes to stdout (tables, log streams) and flushes them. On a terminal, control characters
/// other than newlines and tabs are escaped (`\x1b`): a replica's log or a stored name could otherwise
/// clear the screen or move the cursor to forge lines (issue 20). Piped output stays as it is.
pub(crate) fn raw(bytes: &[u8]) {
    use std::io::IsTerminal;
    let mut stdout = std::io::stdout().lock();
    let _ = if stdout.is_terminal() { stdout.write_all(&escape_control_bytes(bytes)) } else { stdout.write_all(bytes) };
    let _ = stdout.flush();
}

/// `text` with its control characters (C0, DEL, C1) written as escapes (`\x1b`, `\u{9b}`), newlines and
/// tabs kept when `keep_lines` (else `\n`, `\t`): stored text (event messages, signal names and
/// summaries from Alertmanager, replica output) must not drive the terminal.
pub(crate) fn escape_controls(text: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let is_bad = |c: char| c.is_control() && !(keep_lines && (c == '\n' || c == '\t'));
    if !text.chars().any(is_bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_bad(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`escape_controls`] for bytes that may not be UTF-8 (a replica's output), newlines and tabs kept.
fn escape_control_bytes(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let is_bad = |idx: usize| {
        let byte = bytes[idx];
        (byte < 0x20 && byte != b'\n' && byte != b'\t')
            || byte == 0x7f
            // C1 controls in UTF-8: 0xC2 0x80..=0x9F.
            || (byte == 0xc2 && bytes.get(idx + 1).is_some_and(|next| (0x80..=0x9f).contains(next)))
    };
    if !(0..bytes.len()).any(is_bad) {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut idx = 0;
    while idx < bytes.len() {
        if is_bad(idx) {
            if bytes[idx] == 0xc2 {
                out.extend_from_slice(format!("\\u{{{:x}}}", bytes[idx + 1]).as_bytes());
                idx += 2;
                continue;
            }
            out.extend_from_slice(format!("\\x{:02x}", bytes[idx]).as_bytes());
        } else {
            out.push(bytes[idx]);
        }
        idx += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Prints an error line to stderr.
pub(crate) fn error_line(text: &str) {
    eprintln!("{text}");
}

/// Draws a progress bar on stderr when it is a terminal (`[#####.....] 12/39 label`).
pub(crate) fn progress(done: usize, total: usize, label: &str) {
    use std::io::IsTerminal;
    let mut stderr = std::io::stderr().lock();
    if !stderr.is_terminal() {
        return;
    }
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width).min(width);
    let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
    let _ = write!(stderr, "\r\x1b[2K[{bar}] {done}/{total} {label}");
    let _ = stderr.flush();
}

/// Ends a progress bar.
pub(crate) fn progress_done() {
    use std::io::IsTerminal;
    let mut stderr = std::io::stderr().lock();
    if stderr.is_terminal() {
        let _ = write!(stderr, "\r\x1b[2K");
        let _ = stderr.flush();
    }
}

/// Formats bytes as KiB/MiB/GiB.
pub(crate) fn human_bytes(bytes: u64) -> String {
    mend_types::Unit::Bytes.format(bytes as f64)
}

/// Formats whole seconds as `45s`, `3m10s`, `2h05m`, `3d04h`: from a minute on as [`mend_types::Unit::Seconds`]
/// writes them; below it without the space (`45s`, not `45 s`), as the ages in a table column.
pub(crate) fn human_age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => format!("{s}s"),
        s => mend_types::Unit::Seconds.format(s as f64),
    }
}

/// Renders rows as left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|cell| escape_controls(cell, false).into_owned()).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (idx, cell) in row.iter().enumerate() {
            widths[idx] = widths[idx].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let mut text = String::new();
        for (idx, cell) in cells.iter().enumerate() {
            if idx + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[idx]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push_row(header.to_vec());
    for row in &rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    out
}

/// `mend logs NAME --patterns`: one row per template, most frequent first.
pub(crate) fn patterns_table(response: &mend_api::PatternsDto) -> String {
    if response.patterns.is_empty() {
        return format!("{} has logged nothing since mend started\n", response.service);
    }
    let rows: Vec<Vec<String>> = response
        .patterns
        .iter()
        .map(|pattern| {
            vec![
                pattern.id.to_string(),
                pattern.count.to_string(),
                pattern.level.clone(),
                pattern.template.clone(),
                pattern.example.clone(),
            ]
        })
        .collect();
    table(&["ID", "COUNT", "LEVEL", "TEMPLATE", "EXAMPLE"], &rows)
}

/// The `mend status` table; a RELEASE column appears when a service runs a canary.
pub(crate) fn status_table(response: &ServicesResponse, now_ms: i64) -> String {
    let with_release = response.services.iter().flat_map(|s| &s.replicas).any(|r| r.release != "stable");
    let mut header = vec!["SERVICE", "REPLICA"];
    if with_release {
        header.push("RELEASE");
    }
    header.extend(["PID", "PORT", "STATE", "READY", "RESTARTS", "CPU%", "RSS", "UPTIME", "LAST EXIT"]);
    let dash = || "-".to_owned();
    let mut rows = Vec::new();
    for service in &response.services {
        if service.replicas.is_empty() {
            let mut row = vec![service.name.clone(), dash()];
            if with_release {
                row.push(dash());
            }
            row.extend([dash(), dash(), "no replicas".into(), dash(), dash(), dash(), dash(), dash(), dash()]);
            rows.push(row);
        }
        for replica in &service.replicas {
            let uptime = replica
                .started_at
                .as_deref()
                .and_then(mend_types::Timestamp::parse)
                .map(|at| human_age((now_ms - at.as_millis()) / 1000))
                .unwrap_or_else(dash);
            let mut row = vec![service.name.clone(), replica.index.to_string()];
            if with_release {
                row.push(replica.release.clone());
            }
            let state = match &replica.not_ready {
                Some(why) => format!("{}, not ready: {why}", replica.state),
                None => replica.state.clone(),
            };
            row.extend([
                replica.pid.map_or_else(dash, |pid| pid.to_string()),
                replica.port.map_or_else(dash, |port| port.to_string()),
                state,
                if replica.ready { "yes".into() } else { "no".into() },
                replica.restarts.to_string(),
                replica.cpu_percent.map_or_else(dash, |cpu| format!("{cpu:.1}")),
                replica.rss_bytes.map_or_else(dash, human_bytes),
                uptime,
                replica.last_exit.clone().unwrap_or_else(dash),
            ]);
            rows.push(row);
        }
    }
    let mut text = table(&header, &rows);
    text.push_str(&proxy_notes(response));
    text
}

/// What services' proxies do besides routing, one line each after the status table: the canary's share,
/// injected faults with the time they have left, replicas ejected and why.
fn proxy_notes(response: &ServicesResponse) -> String {
    let mut lines = Vec::new();
    for service in &response.services {
        if let Some(weight) = service.canary_weight {
            lines.push(format!("{}: the canary gets {weight}% of unpinned requests", service.name));
        }
        if let Some(autoscale) = &service.autoscale {
            let unit = if autoscale.metric == "cpu" { "%" } else { "" };
            let mut line = format!(
                "{}: autoscale {} .. {} replicas, target {} {}{unit} per replica, {} now",
                service.name,
                autoscale.min,
                autoscale.max,
                autoscale.metric,
                autoscale.target,
                service.desired_replicas
            );
            if let Some(last) = &autoscale.last {
                line.push_str(&format!(": {last}"));
            }
            lines.push(line);
        }
        for fault in &service.chaos {
            let left = mend_types::Unit::Seconds.format(fault.seconds_left);
            lines.push(format!("{}: chaos: {}, {left} left", service.name, fault.description));
        }
        for replica in &service.replicas {
            if let Some(ejection) = &replica.ejected {
                let left = mend_types::Unit::Seconds.format(ejection.seconds_left);
                lines.push(format!(
                    "{}[{}]: ejected by the proxy until {} ({left} left): {}",
                    service.name, replica.index, ejection.until, ejection.description
                ));
            }
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = lines.iter().map(|line| escape_controls(line, false).into_owned()).collect();
    format!("\n{}\n", lines.join("\n"))
}

/// One event as a line: time, replica, kind, message.
pub(crate) fn event_line(event: &EventDto) -> String {
    let subject = match (&event.service, event.replica) {
        (Some(service), Some(replica)) => format!("{service}[{replica}]"),
        (Some(service), None) => service.clone(),
        _ => "mend".to_owned(),
    };
    let line = format!("{}  {subject:<12}  {:<15}  {}", event.at, event.kind, event.message);
    escape_controls(&line, false).into_owned()
}

/// One signal as a line: time, state, severity, kind/name, subject, value, evidence.
pub(crate) fn signal_line(signal: &SignalDto) -> String {
    let subject = match (&signal.service, signal.replica) {
        (Some(service), Some(replica)) => format!("{service}[{replica}]"),
        (Some(service), None) => service.clone(),
        _ => "-".to_owned(),
    };
    let line = format!(
        "{}  {:<8}  {:<8}  {:<28}  {subject:<12}  {}",
        signal.at,
        signal.state,
        signal.severity,
        format!("{}/{}", signal.kind, signal.name),
        signal.evidence
    );
    escape_controls(&line, false).into_owned()
}

/// `mend incidents`: one row per incident.
pub(crate) fn incidents_table(incidents: &[IncidentDto]) -> String {
    if incidents.is_empty() {
        return "no incidents\n".to_owned();
    }
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|dto| {
            let incident = &dto.incident;
            let services: Vec<&str> = incident.services.iter().map(|s| s.as_str()).collect();
            let last =
                dto.action_records.last().map(|a| format!("{} {}", a.action.describe(), a.state)).unwrap_or_default();
            vec![
                incident.id.to_string(),
                incident.state.to_string(),
                incident.opened_at.to_string(),
                if services.is_empty() { "-".to_owned() } else { services.join(",") },
                incident.diagnosis.name.clone(),
                dto.action_records.len().to_string(),
                last,
            ]
        })
        .collect();
    table(&["ID", "STATE", "OPENED", "SERVICES", "DIAGNOSIS", "ACTIONS", "LAST ACTION"], &rows)
}

/// One action, for people: `#3 restart web/0 by policy "Slow" (step 1): succeeded: ... (why: ...)`.
pub(crate) fn action_line(record: &ActionRecord) -> String {
    let target = match (&record.service, record.replica) {
        (Some(service), Some(replica)) => format!("{service}/{replica}"),
        (Some(service), None) => service.to_string(),
        (None, _) => "-".to_owned(),
    };
    let outcome = record.outcome.as_deref().map(|o| format!(": {o}")).unwrap_or_default();
    format!(
        "action {} {} {target} by {}: {}{outcome} (why: {})",
        record.id,
        record.action.describe(),
        record.actor,
        record.state,
        record.reason
    )
}

/// `mend actions`: one row per action.
pub(crate) fn actions_table(actions: &[ActionRecord]) -> String {
    if actions.is_empty() {
        return "no actions\n".to_owned();
    }
    let rows: Vec<Vec<String>> = actions
        .iter()
        .map(|record| {
            vec![
                record.id.to_string(),
                record.incident.map(|i| i.to_string()).unwrap_or_else(|| "-".to_owned()),
                record.requested_at.to_string(),
                record.action.describe(),
                match (&record.service, record.replica) {
                    (Some(service), Some(replica)) => format!("{service}/{replica}"),
                    (Some(service), None) => service.to_string(),
                    (None, _) => "-".to_owned(),
                },
                record.actor.to_string(),
                record.state.to_string(),
                record.outcome.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "INCIDENT", "REQUESTED", "ACTION", "TARGET", "BY", "STATE", "OUTCOME"], &rows)
}

/// `mend incident ID`: the incident's summary, then its timeline and actions in time order.
pub(crate) fn incident_timeline(dto: &IncidentDto) -> String {
    let incident = &dto.incident;
    let services: Vec<&str> = incident.services.iter().map(|s| s.as_str()).collect();
    let mut text = format!(
        "incident {} {} (opened {}{})\nservices: {}\ndiagnosis: {}{}\n",
        incident.id,
        incident.state,
        incident.opened_at,
        incident.closed_at.map(|at| format!(", closed {at}")).unwrap_or_default(),
        if services.is_empty() { "-".to_owned() } else { services.join(", ") },
        incident.diagnosis.name,
        if incident.diagnosis.evidence.is_empty() {
            String::new()
        } else {
            format!(" ({})", incident.diagnosis.evidence)
        },
    );
    if let Some(root) = &incident.diagnosis.root {
        text.push_str(&format!("root: {root}"));
        if !incident.diagnosis.victims.is_empty() {
            let victims: Vec<&str> = incident.diagnosis.victims.iter().map(|s| s.as_str()).collect();
            text.push_str(&format!(", victims: {}", victims.join(", ")));
        }
        text.push('\n');
    }
    let diagnosis = &incident.diagnosis;
    if let Some(confidence) = diagnosis.confidence {
        text.push_str(&format!("confidence: {:.0}%\n", confidence * 100.0));
    }
    if !diagnosis.facts.is_empty() {
        text.push_str("evidence:\n");
        for fact in &diagnosis.facts {
            text.push_str(&format!("  {}\n", escape_controls(fact, false)));
        }
    }
    if !diagnosis.ranking.is_empty() {
        text.push_str(&format!(
            "ranking{}:\n",
            diagnosis.diagnosed_at.map(|at| format!(" (diagnosed {at})")).unwrap_or_default()
        ));
        for (idx, ranked) in diagnosis.ranking.iter().enumerate() {
            let score = if ranked.score >= 1000.0 { ">999".to_owned() } else { format!("{:.1}", ranked.score) };
            text.push_str(&format!(
                "  {}. {:<16} {:<18} {:>3.0}%  score {score}{}\n",
                idx + 1,
                ranked.service.as_str(),
                ranked.diagnosis,
                ranked.confidence * 100.0,
                ranked.explained_by.as_ref().map(|by| format!(", explained by {by}")).unwrap_or_default(),
            ));
            for line in ranked.evidence.iter().take(3) {
                text.push_str(&format!("       {}\n", escape_controls(line, false)));
            }
        }
    }
    if incident.flaps > 0 {
        text.push_str(&format!("flapped {} times\n", incident.flaps));
    }
    text.push_str("\ntimeline:\n");
    for entry in &incident.timeline {
        text.push_str(&format!("  {}  {:<9}  {}\n", entry.at, entry.state.as_str(), entry.note));
    }
    if !dto.action_records.is_empty() {
        text.push_str("\nactions:\n");
        for record in &dto.action_records {
            text.push_str(&format!("  {}  {}\n", record.requested_at, action_line(record)));
        }
    }
    text
}

/// `mend learn`: outcomes, orders and sensitivities, each a table.
pub(crate) fn learn_report(report: &mend_api::LearnReport) -> String {
    let mut out = String::new();
    if !report.enabled {
        out.push_str("learning is off ([learn] enabled = false): the configured orders and sensitivities hold\n\n");
    }
    out.push_str("OUTCOMES\n");
    if report.outcomes.is_empty() {
        out.push_str("no outcomes recorded yet\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .outcomes
            .iter()
            .map(|row| {
                vec![
                    row.trigger.clone(),
                    row.service.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
                    row.action.clone(),
                    format!("{}/{}", row.n_resolved, row.n),
                    row.n_failed.to_string(),
                    row.mean_recover_ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                ]
            })
            .collect();
        out.push_str(&table(&["TRIGGER", "SERVICE", "ACTION", "RESOLVED", "FAILED", "MEAN RECOVERY"], &rows));
    }
    out.push_str("\nORDERS\n");
    if report.orders.is_empty() {
        out.push_str("no policy has outcomes yet: every policy tries its actions in the configured order\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .orders
            .iter()
            .map(|row| {
                vec![
                    row.trigger.clone(),
                    row.service.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string),
                    row.configured.join(", "),
                    if row.learnt == row.configured { "(as configured)".to_owned() } else { row.learnt.join(", ") },
                    row.why.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(&["TRIGGER", "SERVICE", "CONFIGURED", "LEARNT", "WHY"], &rows));
    }
    out.push_str("\nSENSITIVITIES\n");
    if report.sensitivities.is_empty() {
        out.push_str("no rules or detectors configured\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .sensitivities
            .iter()
            .map(|row| {
                let (kind, configured, current) = match row.kind {
                    mend_api::SourceKind::Rule => {
                        ("rule", format!("for {}s", row.configured), format!("for {}s", row.current))
                    }
                    mend_api::SourceKind::Detect => {
                        ("detect", format!("alarm at {:.3}", row.configured), format!("alarm at {:.3}", row.current))
                    }
                };
                vec![
                    kind.to_owned(),
                    row.name.clone(),
                    configured,
                    current,
                    format!("x{}", row.relax),
                    row.n_false_positive.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["KIND", "NAME", "CONFIGURED", "CURRENT", "RELAX", "FALSE POSITIVES"], &rows));
    }
    out.push_str("\nPRECURSORS\n");
    if report.precursors.is_empty() {
        out.push_str("no signal has preceded a failure yet\n");
    } else {
        let seconds = |ms: Option<u64>| ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let rows: Vec<Vec<String>> = report
            .precursors
            .iter()
            .map(|row| {
                let template = row.template.map(|id| format!(" (template {id})")).unwrap_or_default();
                vec![
                    row.service.to_string(),
                    format!("{} {}{template}", row.kind.as_str(), row.name),
                    format!("{}/{}", row.n_incidents, row.n_service_incidents),
                    row.precision.map_or_else(
                        || "-".to_owned(),
                        |p| format!("{:.2} ({}/{})", p, row.n_followed, row.n_followed + row.n_missed),
                    ),
                    format!(
                        "{} / {} / {}",
                        seconds(row.lead_min_ms),
                        seconds(row.lead_median_ms),
                        seconds(row.lead_max_ms)
                    ),
                    if row.warns { "yes".to_owned() } else { "no".to_owned() },
                ]
            })
            .collect();
        out.push_str(&table(&["SERVICE", "SIGNAL", "INCIDENTS", "PRECISION", "LEAD MIN/MEDIAN/MAX", "WARNS"], &rows));
    }
    out
}

/// `mend feedback`: what the verdict changed.
pub(crate) fn feedback_answer(answer: &mend_api::FeedbackAnswer) -> String {
    let verdict = match answer.verdict {
        mend_api::FeedbackVerdict::FalsePositive => "a false positive",
        mend_api::FeedbackVerdict::Correct => "correct",
    };
    let mut out = format!("incident {} marked {verdict}\n", answer.incident);
    if answer.sources.is_empty() {
        out.push_str(
            "no rule or detector raised it (built-in diagnoses and external alerts have no sensitivity here)\n",
        );
    }
    for change in &answer.changes {
        let kind = if change.kind == mend_api::SourceKind::Rule { "rule" } else { "detector" };
        out.push_str(&format!("{kind} {}: x{} -> x{}: {}\n", change.name, change.from, change.to, change.why));
    }
    if !answer.sources.is_empty() && answer.changes.is_empty() {
        out.push_str("no sensitivity changed (learning off, at a bound, or a run of correct verdicts not complete)\n");
    }
    out
}
/// `mend fleet status`: one row per host, the leader marked, then whether etcd answers.
pub(crate) fn fleet_status(view: &mend_fleet::FleetView) -> String {
    let reference = view.last_contact_ms;
    let rows: Vec<Vec<String>> = view
        .hosts
        .iter()
        .map(|host| {
            let services = host.state.as_ref().map_or_else(
                || "-".to_owned(),
                |state| {
                    state
                        .services
                        .iter()
                        .map(|s| {
                            format!(
                                "{} {}/{}{}",
                                s.name,
                                s.ready,
                                s.replicas,
                                if s.healthy { "" } else { " unhealthy" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            );
            let n_incidents = host.state.as_ref().map_or(0, |state| state.incidents.len());
            let published = match (host.state.as_ref(), reference) {
                (Some(state), Some(now)) => format!("{} ago", human_age((now - state.at_ms) / 1000)),
                _ => "-".to_owned(),
            };
            vec![
                format!("{}{}", host.host, if host.host == view.host { " (this host)" } else { "" }),
                if host.registered { "registered" } else { "gone" }.to_owned(),
                if view.leader.as_deref() == Some(host.host.as_str()) { "leader" } else { "" }.to_owned(),
                n_incidents.to_string(),
                published,
                services,
            ]
        })
        .collect();
    let mut out = table(&["HOST", "LEASE", "ROLE", "INCIDENTS", "PUBLISHED", "SERVICES"], &rows);
    match (&view.error, view.reachable) {
        (_, true) => out.push_str(&format!("etcd reachable; leader: {}\n", view.leader.as_deref().unwrap_or("none"))),
        (Some(error), false) => out.push_str(&format!(
            "etcd unreachable ({}): healing on local budgets only; the hosts above are as last seen\n",
            escape_controls(error, false)
        )),
        (None, false) => out.push_str("etcd unreachable: healing on local budgets only\n"),
    }
    out
}

/// `mend fleet incidents`: the leader's fleet incidents, then each host's open incidents.
pub(crate) fn fleet_incidents(view: &mend_fleet::FleetView) -> String {
    let mut out = String::new();
    if view.incidents.is_empty() {
        out.push_str("no fleet incident (no service unhealthy on most hosts at once)\n");
    } else {
        let rows: Vec<Vec<String>> = view
            .incidents
            .iter()
            .map(|incident| {
                vec![
                    incident.service.clone(),
                    format!("{} of {}", incident.unhealthy.len(), incident.n_hosts),
                    incident.unhealthy.join(", "),
                ]
            })
            .collect();
        out.push_str("fleet incidents (no host acts on these alone; escalated):\n");
        out.push_str(&table(&["SERVICE", "UNHEALTHY ON", "HOSTS"], &rows));
    }
    let rows: Vec<Vec<String>> = view
        .hosts
        .iter()
        .flat_map(|host| {
            host.state.iter().flat_map(move |state| {
                state.incidents.iter().map(move |incident| {
                    vec![
                        host.host.clone(),
                        incident.id.to_string(),
                        incident.state.clone(),
                        incident.name.clone(),
                        incident.services.join(", "),
                    ]
                })
            })
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no open incident on any host\n");
    } else {
        out.push_str(&table(&["HOST", "ID", "STATE", "DIAGNOSIS", "SERVICES"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: `mend signals` printed an Alertmanager summary's `ESC[2J` (clear screen) and newlines
    /// (forged lines) as they were.
    #[test]
    fn issue_20_control_characters_in_stored_text_are_escaped() {
        assert_eq!(escape_controls("plain text", false), "plain text");
        assert_eq!(
            escape_controls("\x1b[2Jgone\nfake line\ttab\u{9b}31m", false),
            "\\x1b[2Jgone\\nfake line\\ttab\\u{9b}31m"
        );
        assert_eq!(escape_controls("two\nlines\x07", true), "two\nlines\\x07");
        assert_eq!(escape_control_bytes(b"ok\n\x1b[31mred\xc2\x9b\xff\n").as_ref(), b"ok\n\\x1b[31mred\\u{9b}\xff\n");
        let signal: SignalDto = serde_json::from_value(serde_json::json!({
            "id": 1, "at": "2026-01-01T00:00:00Z", "since": "2026-01-01T00:00:00Z", "state": "firing",
            "kind": "external", "severity": "warning", "name": "Evil\u{1b}[2J", "service": null, "replica": null,
            "value": null, "labels": {}, "evidence": "line one\nline two"
        }))
        .expect("a signal");
        let line = signal_line(&signal);
        assert!(!line.contains('\x1b') && !line.contains('\n'), "{line}");
        assert!(line.contains("external/Evil\\x1b[2J") && line.ends_with("line one\\nline two"), "{line}");
    }

    #[test]
    fn humanises_sizes_and_ages() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(5 * 1024 * 1024 + 100 * 1024), "5.1 MiB");
        assert_eq!(human_age(-3), "0s");
        assert_eq!(human_age(42), "42s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(60), "1m00s");
        assert_eq!(human_age(190), "3m10s");
        assert_eq!(human_age(7500), "2h05m");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600), "3d04h");
    }

    #[test]
    fn status_says_why_a_replica_is_not_ready_and_how_its_last_process_ended() {
        let replica = |index: u32, state: &str, not_ready: Option<&str>, last_exit: Option<&str>| {
            serde_json::from_value::<mend_api::ReplicaDto>(serde_json::json!({
                "index": index, "release": "stable", "pid": 100 + index, "port": 9100 + index, "state": state,
                "ready": not_ready.is_none() && state == "running", "not_ready": not_ready, "health": "healthy",
                "restarts": 1, "last_exit": last_exit, "last_exit_code": null, "last_exit_signal": null,
                "started_at": null, "cpu_percent": null, "cpu_seconds": null, "rss_bytes": null, "threads": null,
                "open_fds": null,
            }))
            .expect("a replica")
        };
        let response = ServicesResponse {
            services: vec![mend_api::ServiceDto {
                name: "web".into(),
                desired_replicas: 2,
                ready_replicas: 1,
                canary_weight: None,
                chaos: Vec::new(),
                autoscale: None,
                replicas: vec![
                    replica(0, "running", None, Some("killed by mend: hung")),
                    replica(1, "running", Some("readiness failing"), Some("killed by SIGKILL (9) from outside mend")),
                ],
            }],
        };
        let table = status_table(&response, 0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "SERVICE  REPLICA  PID  PORT  STATE                                  READY  RESTARTS  CPU%  RSS  UPTIME  LAST EXIT",
                "web      0        100  9100  running                                yes    1         -     -    -       killed by mend: hung",
                "web      1        101  9101  running, not ready: readiness failing  no     1         -     -    -       killed by SIGKILL (9) from outside mend",
            ]
        );
    }

    #[test]
    fn proxy_notes_follow_the_table() {
        let response: ServicesResponse = serde_json::from_value(serde_json::json!({"services": [{
            "name": "web", "desired_replicas": 2, "ready_replicas": 2, "canary_weight": 10,
            "autoscale": {"min": 2, "max": 8, "metric": "cpu", "target": 70.0, "observed": 142.0, "desired": 5,
                          "last": "cpu 142% of 70% target across 2 replicas → 5"},
            "chaos": [{"fault": "latency", "latency_ms": 200, "status": null, "percent": 10.0,
                       "until": "2026-01-01T00:00:30.000Z", "seconds_left": 25.0,
                       "description": "200 ms latency on 10% of requests"}],
            "replicas": [
                {"index": 0, "release": "stable", "pid": 7, "port": 9000, "state": "running", "ready": true,
                 "health": "healthy", "restarts": 0},
                {"index": 1, "release": "canary", "pid": 8, "port": 9001, "state": "running", "ready": true,
                 "health": "healthy", "restarts": 0,
                 "ejected": {"until": "2026-01-01T00:00:04.000Z", "seconds_left": 4.0, "reason": "server_error",
                             "status": 503, "consecutive_failures": 3,
                             "description": "3 failures in a row, the last a 503 answer"}}
            ]
        }]}))
        .expect("a services response");
        let text = status_table(&response, 0);
        let notes: Vec<&str> = text.lines().skip_while(|line| !line.is_empty()).skip(1).collect();
        assert_eq!(
            notes,
            [
                "web: the canary gets 10% of unpinned requests",
                "web: autoscale 2 .. 8 replicas, target cpu 70% per replica, 2 now: cpu 142% of 70% target across 2 replicas → 5",
                "web: chaos: 200 ms latency on 10% of requests, 25 s left",
                "web[1]: ejected by the proxy until 2026-01-01T00:00:04.000Z (4 s left): 3 failures in a row, the last a 503 answer",
            ]
        );
        // Nothing to say, nothing added.
        let quiet: ServicesResponse = serde_json::from_value(serde_json::json!({"services": [{
            "name": "db", "desired_replicas": 0, "ready_replicas": 0, "replicas": []}]}))
        .expect("a services response");
        assert!(!status_table(&quiet, 0).contains("\n\n"));
    }

    #[test]
    fn issue_18_the_fleet_as_tables() {
        let view: mend_fleet::FleetView = serde_json::from_value(serde_json::json!({
            "host": "a", "reachable": true, "error": null, "last_contact_ms": 10_000, "leader": "b",
            "hosts": [
                {"host": "a", "registered": true, "state": {"host": "a", "at_ms": 9_000,
                    "services": [{"name": "web", "replicas": 2, "ready": 1, "healthy": false}],
                    "incidents": [{"id": 4, "state": "acting", "name": "crashed", "services": ["web"]}]}},
                {"host": "b", "registered": false, "state": null}
            ],
            "incidents": [{"service": "web", "n_hosts": 3, "unhealthy": ["a", "c"], "since_ms": 1}]
        }))
        .expect("a fleet view");
        assert_eq!(
            fleet_status(&view),
            "HOST           LEASE       ROLE    INCIDENTS  PUBLISHED  SERVICES\n\
             a (this host)  registered          1          1s ago     web 1/2 unhealthy\n\
             b              gone        leader  0          -          -\n\
             etcd reachable; leader: b\n"
        );
        assert_eq!(
            fleet_incidents(&view),
            "fleet incidents (no host acts on these alone; escalated):\n\
             SERVICE  UNHEALTHY ON  HOSTS\n\
             web      2 of 3        a, c\n\
             HOST  ID  STATE   DIAGNOSIS  SERVICES\n\
             a     4   acting  crashed    web\n"
        );
        let cut_off = mend_fleet::FleetView { reachable: false, error: Some("etcd: refused".into()), ..view };
        assert!(fleet_status(&cut_off).ends_with(
            "etcd unreachable (etcd: refused): healing on local budgets only; the hosts above are as last seen\n"
        ));
    }

    #[test]
    fn tables_align_columns() {
        let text = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(text, "A    LONGER\nxyz  1\nq    22\n");
    }
}
