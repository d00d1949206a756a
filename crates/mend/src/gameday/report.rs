//! The game day's report: a table for the terminal, JSON, and a self-contained HTML page (inline CSS
//! and SVG charts, no scripts, nothing fetched) with latency, error rate and ready replicas over time,
//! faults shaded and actions marked.

use std::fmt::Write as _;

use mend_config::{Load, Scenario};
use serde::Serialize;

use super::{FaultResult, Recording};
use crate::chart::{Band, Chart, Marker, MarkerKind, Series, escape};

/// Everything the report shows.
#[derive(Debug, Serialize)]
pub(crate) struct Report<'a> {
    pub(crate) scenario: &'a str,
    pub(crate) duration_s: f64,
    pub(crate) passed: bool,
    /// Requests of the built-in load, and how many failed; null without one (an external load command's
    /// requests are not seen one by one).
    pub(crate) requests: Option<usize>,
    pub(crate) failed_requests: Option<usize>,
    pub(crate) faults: &'a [FaultResult],
    #[serde(skip)]
    recording: &'a Recording,
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"))
}

/// Per-second buckets of the load: (second, p50 ms, p99 ms, error %).
fn per_second(recording: &Recording) -> Vec<(f64, f64, f64, f64)> {
    let n_buckets = recording.duration.ceil().max(1.0) as usize;
    let mut buckets: Vec<Vec<(f64, bool)>> = vec![Vec::new(); n_buckets];
    for sample in &recording.samples {
        if let Some(bucket) = buckets.get_mut(sample.at.max(0.0) as usize) {
            bucket.push((sample.latency_ms, sample.ok));
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .filter(|(_, bucket)| !bucket.is_empty())
        .map(|(second, mut bucket)| {
            bucket.sort_by(|a, b| a.0.total_cmp(&b.0));
            let quantile = |q: f64| bucket[((bucket.len() - 1) as f64 * q).round() as usize].0;
            let errors = bucket.iter().filter(|(_, ok)| !ok).count() as f64 / bucket.len() as f64 * 100.0;
            (second as f64 + 0.5, quantile(0.5), quantile(0.99), errors)
        })
        .collect()
}

impl<'a> Report<'a> {
    pub(crate) fn new(scenario: &'a Scenario, recording: &'a Recording, faults: &'a [FaultResult]) -> Self {
        let counted = matches!(scenario.load, Some(Load::Builtin { .. }));
        Report {
            scenario: &scenario.name,
            duration_s: recording.duration,
            passed: faults.iter().all(|fault| fault.violations.is_empty()),
            requests: counted.then_some(recording.samples.len()),
            failed_requests: counted.then(|| recording.samples.iter().filter(|s| !s.ok).count()),
            faults,
            recording,
        }
    }

    /// "960 requests, 0 failed", or why there is no count.
    fn traffic(&self) -> String {
        match (self.requests, self.failed_requests) {
            (Some(requests), Some(failed)) => format!("{requests} requests, {failed} failed"),
            _ => "requests not counted (no built-in load)".to_owned(),
        }
    }

    pub(crate) fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    }

    pub(crate) fn table(&self) -> String {
        let header = ["FAULT", "DETECT", "DIAGNOSIS", "RECOVER", "FAILED", "ACTIONS", "SLO"];
        let rows: Vec<Vec<String>> = self
            .faults
            .iter()
            .map(|fault| {
                let diagnosis = match (&fault.diagnosis, fault.right_diagnosis) {
                    (Some(name), Some(true)) => format!("{name} (right) {}", seconds(fault.diagnose_s)),
                    (Some(name), Some(false)) => format!(
                        "{name} (expected {}) {}",
                        fault.expected_diagnosis.as_deref().unwrap_or("?"),
                        seconds(fault.diagnose_s)
                    ),
                    (Some(name), None) => format!("{name} {}", seconds(fault.diagnose_s)),
                    (None, _) => "-".to_owned(),
                };
                let recover = match fault.expect {
                    "escalate" => format!("escalated {}", seconds(fault.recover_s)),
                    "scale out" => format!("scaled out {}", seconds(fault.recover_s)),
                    _ => seconds(fault.recover_s),
                };
                vec![
                    format!("{:.1}s {}", fault.at, fault.fault),
                    seconds(fault.detect_s),
                    diagnosis,
                    recover,
                    requests(fault),
                    fault.actions.len().to_string(),
                    if fault.violations.is_empty() { "pass".to_owned() } else { fault.violations.join("; ") },
                ]
            })
            .collect();
        let mut out = crate::output::table(&header, &rows);
        let _ = writeln!(
            out,
            "{}: {}; {}",
            self.scenario,
            self.traffic(),
            if self.passed { "every SLO held" } else { "SLO FAILED" }
        );
        out
    }

    fn charts(&self) -> Vec<Chart> {
        let bands: Vec<Band> = self
            .faults
            .iter()
            .map(|fault| Band {
                from: fault.at,
                to: fault.at + fault.recover_s.unwrap_or(1.0).max(0.3),
                label: fault.fault.clone(),
            })
            .collect();
        let markers: Vec<Marker> = self
            .recording
            .actions
            .iter()
            .map(|action| Marker { at: action.at, label: action.what.clone(), kind: MarkerKind::Action })
            .collect();
        let buckets = per_second(self.recording);
        let latency = Chart {
            title: "Latency per second".into(),
            x_label: "seconds".into(),
            y_label: "ms".into(),
            series: vec![
                Series { name: "p50".into(), points: buckets.iter().map(|b| (b.0, b.1)).collect() },
                Series { name: "p99".into(), points: buckets.iter().map(|b| (b.0, b.2)).collect() },
            ],
            bands: bands.clone(),
            markers: markers.clone(),
        };
        let errors = Chart {
            title: "Failed requests per second".into(),
            x_label: "seconds".into(),
            y_label: "%".into(),
            series: vec![Series { name: "failed %".into(), points: buckets.iter().map(|b| (b.0, b.3)).collect() }],
            bands: bands.clone(),
            markers: markers.clone(),
        };
        let mut services: Vec<&str> = self.recording.ready.iter().map(|p| p.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        let replicas = Chart {
            title: "Ready replicas".into(),
            x_label: "seconds".into(),
            y_label: "replicas".into(),
            series: services
                .iter()
                .map(|service| Series {
                    name: (*service).to_owned(),
                    points: self
                        .recording
                        .ready
                        .iter()
                        .filter(|p| p.service == *service)
                        .map(|p| (p.at, f64::from(p.ready)))
                        .collect(),
                })
                .collect(),
            bands,
            markers,
        };
        vec![latency, errors, replicas]
    }

    pub(crate) fn html(&self) -> String {
        let mut html = String::new();
        let verdict = if self.passed { "every SLO held" } else { "SLO FAILED" };
        let _ = write!(
            html,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>game day: {name}</title><style>\
             body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
             .pass{{color:#096}}.fail{{color:#b00;font-weight:bold}}svg{{display:block;margin:1em 0}}</style></head><body>\
             <h1>Game day: {name}</h1><p class=\"{class}\">{verdict}: {traffic}, over {duration:.0}s</p>",
            name = escape(self.scenario),
            class = if self.passed { "pass" } else { "fail" },
            traffic = self.traffic(),
            duration = self.duration_s,
        );
        html.push_str(
            "<table><tr><th>fault</th><th>detect</th><th>detected by</th><th>diagnosis</th><th>recover</th>\
             <th>failed / total</th><th>actions</th><th>SLO</th></tr>",
        );
        for fault in self.faults {
            let diagnosis = match (&fault.diagnosis, &fault.expected_diagnosis) {
                (Some(name), Some(expected)) if name == expected => format!("{name} (right)"),
                (Some(name), Some(expected)) => format!("{name} (expected {expected})"),
                (Some(name), None) => name.clone(),
                (None, Some(expected)) => format!("none (expected {expected})"),
                (None, None) => "-".to_owned(),
            };
            let slo = if fault.violations.is_empty() { "pass".to_owned() } else { fault.violations.join("; ") };
            let _ = write!(
                html,
                "<tr><td>{:.1}s {}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                fault.at,
                escape(&fault.fault),
                seconds(fault.detect_s),
                escape(fault.detected_by.as_deref().unwrap_or("-")),
                escape(&diagnosis),
                seconds(fault.diagnose_s),
                match fault.expect {
                    "escalate" => "escalated ",
                    "scale out" => "scaled out ",
                    _ => "",
                },
                seconds(fault.recover_s),
                requests(fault),
                fault.actions.iter().map(|a| escape(a)).collect::<Vec<_>>().join("<br>"),
                if fault.violations.is_empty() { "pass" } else { "fail" },
                escape(&slo),
            );
        }
        html.push_str("</table>");
        for chart in self.charts() {
            html.push_str(&chart.render(900, 240));
        }
        if let Some(output) = &self.recording.load_output {
            let _ = write!(html, "<h2>Load command output</h2><pre>{}</pre>", escape(output));
        }
        html.push_str("</body></html>\n");
        html
    }
}

/// Failed / total requests during a fault; "-" when none were counted (an external load command's
/// requests are not seen one by one, nor are there any without a load).
fn requests(fault: &FaultResult) -> String {
    match (fault.failed, fault.total) {
        (Some(failed), Some(total)) => format!("{failed} / {total}"),
        _ => "-".to_owned(),
    }
}
