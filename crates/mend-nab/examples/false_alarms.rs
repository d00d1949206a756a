//! False alarms per day of the default detector (or `--detector NAME`) on healthy series, as the daemon raises them.
//!
//! Two sources, neither with any anomaly:
//! * a recording of healthy mend-demo replicas under a varying load (`bench/healthy_series.py`: a compressed
//!   day cycle, bursts, a daily rolling restart), replayed with each compressed day stretched to 24 hours;
//! * NAB's `artificialNoAnomaly` files (5-minute samples, 14 days each).
//!
//! Every series goes through `mend_detect::attach::DetectorBank`, as the daemon's detect loop feeds it: an
//! alarm opens an anomaly (one signal) that resolves after a quiet spell; each opened anomaly is a false alarm.
//!
//! ```text
//! cargo run --release -p mend-nab --example false_alarms -- [--recording FILE] [--nab DIR] [--report 0.2,0.5] [--detector NAME]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mend_detect::Sensitivity;
use mend_detect::alerting::LabelSet;
use mend_detect::attach::DetectorBank;

/// Quiet time, in points of the series, after which the daemon resolves an anomaly (60 s of a 1 s scrape).
const RESOLVE_AFTER_POINTS: f64 = 60.0;

struct Series {
    source: String,
    kind: String,
    labels: LabelSet,
    /// (seconds, value), timestamps already on the replayed clock.
    points: Vec<(f64, f64)>,
    /// Seconds between points on the replayed clock (the median gap).
    step: f64,
    /// Recorded seconds per replayed second, and the recorded time (since the recording's start) of the
    /// first point: to place an alarm among the recording's deploys and bursts.
    to_recorded: (f64, f64),
}

/// What happened in the recording around a moment: deploys and bursts, as (first, last) recorded seconds.
#[derive(Default)]
struct Events {
    deploys: Vec<(f64, f64)>,
    bursts: Vec<(f64, f64)>,
}

impl Events {
    /// The event an alarm at recorded second `at` follows (within a minute of its end), if any.
    fn around(&self, at: f64) -> &'static str {
        let near = |&(first, last): &(f64, f64)| at >= first - 5.0 && at <= last + 60.0;
        if self.deploys.iter().any(near) {
            "after a deploy"
        } else if self.bursts.iter().any(near) {
            "in or after a burst"
        } else {
            "no event"
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or(default.to_owned())
}

fn median_step(points: &[(f64, f64)]) -> f64 {
    let mut gaps: Vec<f64> = points.windows(2).map(|w| w[1].0 - w[0].0).filter(|g| *g > 0.0).collect();
    gaps.sort_by(f64::total_cmp);
    gaps.get(gaps.len() / 2).copied().unwrap_or(1.0)
}

fn load_recording(path: &Path) -> Result<(Vec<Series>, f64, usize, Events), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let recording: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    let day_secs = recording["day_secs"].as_f64().ok_or("recording without day_secs")?;
    let days = recording["days"].as_f64().ok_or("recording without days")?;
    let started = recording["started"].as_f64().ok_or("recording without started")?;
    let stretch = 86_400.0 / day_secs;
    let mut series = Vec::new();
    for entry in recording["series"].as_array().ok_or("recording without series")? {
        let kind = entry["name"].as_str().unwrap_or("?").to_owned();
        let labels: LabelSet = entry["labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
            .unwrap_or_default();
        let points: Vec<(f64, f64)> = entry["points"]
            .as_array()
            .ok_or("series without points")?
            .iter()
            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
            // The replayed clock: the recording's start at midnight of day 0, each compressed day 24 h.
            .map(|(t, v)| ((t - started) * stretch, v))
            .collect();
        let step = median_step(&points);
        let first_recorded = points.first().map_or(0.0, |p| p.0 / stretch);
        series.push(Series {
            source: "healthy mend-demo".to_owned(),
            kind,
            labels,
            points,
            step,
            to_recorded: (1.0 / stretch, first_recorded),
        });
    }
    let n_live = recording["live_signals"]
        .as_array()
        .map_or(0, |signals| signals.iter().filter(|s| s["kind"] == "anomaly" && s["state"] == "firing").count());
    let spans = |key: &str| -> Vec<(f64, f64)> {
        recording[key]
            .as_array()
            .map(|items| {
                items.iter().filter_map(|item| Some((item.get(0)?.as_f64()?, item.get(1)?.as_f64()?))).collect()
            })
            .unwrap_or_default()
    };
    let events = Events { deploys: spans("deploys"), bursts: spans("bursts") };
    Ok((series, days, n_live, events))
}

fn load_nab(dir: &Path) -> Result<(Vec<Series>, f64), String> {
    let category = "artificialNoAnomaly";
    let files = mend_nab::list_data_files(dir).map_err(|e| e.to_string())?;
    let mut series = Vec::new();
    let mut days = 0.0;
    for (file_category, name) in files.into_iter().filter(|(c, _)| c == category) {
        let data = mend_nab::read_data_file(dir, &file_category, &name).map_err(|e| e.to_string())?;
        let points: Vec<(f64, f64)> = data.rows.iter().map(|r| (r.timestamp.as_secs_f64(), r.value)).collect();
        let step = median_step(&points);
        if let (Some(first), Some(last)) = (points.first(), points.last()) {
            days = f64::max(days, (last.0 - first.0 + step) / 86_400.0);
        }
        let labels = LabelSet::from([("file".to_owned(), name.clone())]);
        series.push(Series { source: category.to_owned(), kind: name, labels, points, step, to_recorded: (1.0, 0.0) });
    }
    Ok((series, days))
}

/// When (replayed seconds since the series' first point) anomalies opened on `series` at `sensitivity`, fed
/// in chunks of ten points as a detect loop reads them.
fn false_alarms(series: &Series, sensitivity: Sensitivity) -> Vec<f64> {
    let resolve_after = RESOLVE_AFTER_POINTS * series.step;
    let detector = flag("detector", "default");
    let Ok(mut bank) = DetectorBank::new(&detector, sensitivity, 1, resolve_after) else { return Vec::new() };
    let first = series.points.first().map_or(0.0, |p| p.0);
    let mut opened = Vec::new();
    for chunk in series.points.chunks(10) {
        let now = chunk.last().map_or(0.0, |p| p.0);
        opened.extend(bank.feed(&series.labels, chunk, now).iter().filter(|t| t.firing).map(|t| t.since - first));
        bank.sweep(now, f64::INFINITY);
    }
    opened
}

fn run() -> Result<(), String> {
    let detector = flag("detector", "default");
    mend_detect::registry::build(&detector, Sensitivity::DEFAULT).map_err(|e| e.to_string())?;
    let recording = PathBuf::from(flag("recording", "bench/data/healthy_series.json"));
    let nab = PathBuf::from(flag("nab", "/work/shared/nab/data"));
    let (healthy, healthy_days, n_live, events) = load_recording(&recording)?;
    let report: Vec<f64> = flag("report", "0.2,0.5").split(',').filter_map(|s| s.parse().ok()).collect();
    let (artificial, artificial_days) = load_nab(&nab)?;
    let sensitivities: Vec<f64> = (1..=9).map(|s| f64::from(s) / 10.0).collect();
    println!(
        "healthy mend-demo: {} series over {healthy_days} replayed days ({} points; the daemon raised {n_live} anomalies live, on the compressed clock); {}: {} series over {artificial_days:.1} days",
        healthy.len(),
        healthy.iter().map(|s| s.points.len()).sum::<usize>(),
        artificial.first().map_or("", |s| s.source.as_str()),
        artificial.len(),
    );
    print!("{:<34}", "false alarms per day, sensitivity");
    for s in &sensitivities {
        print!(" {s:>6.1}");
    }
    println!();
    for (source, series, days) in
        [("healthy mend-demo", &healthy, healthy_days), ("artificialNoAnomaly", &artificial, artificial_days)]
    {
        let mut by_kind: BTreeMap<&str, (usize, Vec<usize>)> = BTreeMap::new();
        // Alarms on the first day (the detectors still learning) and on the later ones, per sensitivity.
        let mut first_day = vec![0usize; sensitivities.len()];
        for one in series.iter() {
            let entry = by_kind.entry(one.kind.as_str()).or_insert_with(|| (0, vec![0; sensitivities.len()]));
            entry.0 += 1;
            for (idx, &s) in sensitivities.iter().enumerate() {
                let sensitivity = Sensitivity::new(s).map_err(|e| e.to_string())?;
                let alarms = false_alarms(one, sensitivity);
                if report.iter().any(|r| (r - s).abs() < 1e-9) {
                    for at in &alarms {
                        let (scale, first) = one.to_recorded;
                        let recorded = first + at * scale;
                        let replica = one.labels.get("replica").map_or("", String::as_str);
                        println!(
                            "    alarm at sensitivity {s}: {} {replica} on day {:.2} ({})",
                            one.kind,
                            at / 86_400.0,
                            if one.to_recorded.0 < 1.0 { events.around(recorded) } else { "" }
                        );
                    }
                }
                first_day[idx] += alarms.iter().filter(|&&at| at < 86_400.0).count();
                entry.1[idx] += alarms.len();
            }
        }
        let mut total = vec![0usize; sensitivities.len()];
        for (kind, (n_series, counts)) in &by_kind {
            print!("  {:<32}", format!("{kind} (per series, {n_series})"));
            for (idx, count) in counts.iter().enumerate() {
                total[idx] += count;
                print!(" {:>6.2}", *count as f64 / *n_series as f64 / days);
            }
            println!();
        }
        print!("  {:<32}", format!("{source}, all {} series", series.len()));
        for count in &total {
            print!(" {:>6.2}", *count as f64 / days);
        }
        println!();
        print!("  {:<32}", "  on the first day");
        for count in &first_day {
            print!(" {count:>6}");
        }
        println!();
        print!("  {:<32}", "  per later day");
        for (count, first) in total.iter().zip(&first_day) {
            print!(" {:>6.2}", (count - first) as f64 / (days - 1.0).max(1.0));
        }
        println!();
    }
    Ok(())
}
