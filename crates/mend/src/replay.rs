//! `mend replay`: recorded incidents through the daemon's own series store, detectors and diagnosis, at
//! accelerated time, and their scores against the labels that come with them.
//!
//! A case is a directory with `metrics.om` (OpenMetrics text with timestamps) and `case.json` (format:
//! `../shared/rca/README.md`). The samples go into a [`SeriesStore`] in time order; after each timestamp
//! the detect stage ([`Detection`], as configured by `-c`, else one `shift` detector on every series)
//! evaluates at that time. Its signals group into episodes (this module's stand-in for the incident
//! engine: a firing signal opens one, or joins the open one; it closes once every signal resolved and
//! [`QUIET`] passed without a new one), and each episode is diagnosed by `mend_diagnose::diagnose` at
//! its end. A case's answer is its latest episode, the one open when the recording ends.
//!
//! The diagnosing run reads only `id` and `system` from `case.json`: the labels (`root_cause_service`,
//! `fault_type`) are read for scoring, and `inject_time` only for scoring and for `--told`, which skips
//! detection and diagnoses from the given injection time (a separately labelled figure).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use mend_diagnose::baselines::{SimpleRanker, rank_simple};
use mend_diagnose::{
    Component, DecideParams, DependencyGraph, EdgeSource, IncidentDiagnosis, IncidentInput, RankParams, SeriesInput,
    ServiceFacts, diagnose,
};
use mend_observe::series::{Limits, SeriesStore};
use mend_types::{Clock, Signal, SignalState, SystemClock, Timestamp};

use crate::output;
use mend_detection::Detection;

/// An episode closes once every signal resolved and this long passed without a new one.
pub(crate) const QUIET: Duration = Duration::from_secs(300);
/// Most samples one case may hold (the parser's bound; about 100 B of memory each while parsing).
const MAX_SAMPLES: usize = 20_000_000;

/// The detect stage of a replay without `-c`, or with a config that has no rules, detectors or forecasts.
const DEFAULT_DETECTION: &str = r#"# mend replay's detect stage when the config gives none.
[[detect]]
name = "replay"
series = '{__name__=~".+"}'
detector = "shift"
# The sensitivity the replay figures were measured at (a [[detect]]'s default is the cautious 0.2).
sensitivity = 0.5
"#;

/// Which ranking a replay reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Ranker {
    /// mend's diagnosis (robust sustained scores, onsets, the graph).
    Mend,
    /// Baseline: largest z-score (mean and standard deviation) after the onset.
    Zscore,
    /// Baseline: largest robust score (median and IQR), no sustain, no graph.
    Robust,
}

/// What `mend replay` was asked.
pub(crate) struct ReplayOptions {
    pub(crate) dir: PathBuf,
    pub(crate) config: Option<PathBuf>,
    pub(crate) json: bool,
    pub(crate) ranker: Ranker,
    pub(crate) told: bool,
    pub(crate) settings: Vec<Setting>,
}

/// One of the ranking's constants, changed with `--set KEY=VALUE`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Setting {
    Baseline(Duration),
    Lookback(Duration),
    Persist(usize),
    RelativeFloor(f64),
    AnomalousZ(f64),
}

impl Setting {
    fn apply(self, params: &mut RankParams) {
        match self {
            Self::Baseline(value) => params.baseline = value,
            Self::Lookback(value) => params.lookback = value,
            Self::Persist(value) => params.persist = value,
            Self::RelativeFloor(value) => params.relative_floor = value,
            Self::AnomalousZ(value) => params.anomalous_z = value,
        }
    }
}

/// Parses `--set KEY=VALUE`.
pub(crate) fn parse_setting(text: &str) -> Result<Setting, String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    let number = |what: &str| -> Result<f64, String> {
        value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{key}: expected {what}, got {value:?}"))
    };
    match key.trim() {
        "baseline" => mend_config::parse_duration(value).map(Setting::Baseline).map_err(|e| format!("baseline: {e}")),
        "lookback" => mend_config::parse_duration(value).map(Setting::Lookback).map_err(|e| format!("lookback: {e}")),
        "persist" => match value.trim().parse::<usize>() {
            Ok(n @ 1..=100) => Ok(Setting::Persist(n)),
            _ => Err(format!("persist: expected a whole number of points from 1 to 100, got {value:?}")),
        },
        "relative_floor" => number("a share such as 0.01").map(Setting::RelativeFloor),
        "anomalous_z" => number("a z-score such as 3").map(Setting::AnomalousZ),
        other => Err(format!(
            "unknown setting {other:?}: expected baseline, lookback, persist, relative_floor or anomalous_z"
        )),
    }
}

/// What the diagnosing run may read of `case.json`.
#[derive(Debug, Clone)]
struct CaseInfo {
    id: String,
    system: String,
}

/// What only scoring (and `--told`) reads of `case.json`.
#[derive(Debug, Clone, Default)]
struct CaseLabels {
    root_cause_service: Option<String>,
    fault_type: Option<String>,
    inject_time: Option<i64>,
}

/// The recording of one case, in time order.
struct Recording {
    /// (metric name, labels) per series.
    series: Vec<(String, Vec<(String, String)>)>,
    /// (time, series index, value), sorted by time.
    samples: Vec<(i64, usize, f64)>,
    /// Series without a `service` label: read, not attributable to a service.
    without_service: usize,
}

/// A group of signals: the replay's stand-in for an incident.
#[derive(Debug, Clone)]
struct Episode {
    onset: Timestamp,
    opened_at: Timestamp,
    closed_at: Option<Timestamp>,
    signals: Vec<Signal>,
}

impl Episode {
    fn services(&self) -> BTreeSet<String> {
        self.signals.iter().filter_map(|s| s.labels.get("service").cloned()).collect()
    }
}

/// One episode's diagnosis.
struct Diagnosed {
    episode: Episode,
    /// (service, score), most likely root cause first.
    ranking: Vec<(String, f64)>,
    diagnosis: Option<IncidentDiagnosis>,
}

/// The outcome of one case.
struct CaseResult {
    info: CaseInfo,
    labels: CaseLabels,
    n_series: usize,
    n_samples: usize,
    without_service: usize,
    n_signals: usize,
    episodes: Vec<Diagnosed>,
}

impl CaseResult {
    /// The case's answer: the latest episode.
    fn reported(&self) -> Option<&Diagnosed> {
        self.episodes.last()
    }
}

/// Runs `mend replay`.
pub(crate) fn run(options: &ReplayOptions) -> ExitCode {
    let setup = match Setup::new(options) {
        Ok(setup) => setup,
        Err(error) => {
            output::error_line(&format!("error: {error:#}"));
            return ExitCode::FAILURE;
        }
    };
    let cases = match find_cases(&options.dir) {
        Ok(cases) if cases.is_empty() => {
            output::error_line(&format!(
                "error: {}: no case directory (a directory with metrics.om or case.json) found",
                options.dir.display()
            ));
            return ExitCode::FAILURE;
        }
        Ok(cases) => cases,
        Err(error) => {
            output::error_line(&format!("error: {error:#}"));
            return ExitCode::FAILURE;
        }
    };
    let started = SystemClock.now();
    let mut scores = Scoreboard::default();
    let mut failed = 0;
    let mut n_samples = 0;
    for (idx, case_dir) in cases.iter().enumerate() {
        let label = case_dir.strip_prefix(&options.dir).unwrap_or(case_dir).display().to_string();
        output::progress(idx, cases.len(), &label);
        match replay_case(case_dir, &options.dir, &setup) {
            Ok(result) => {
                n_samples += result.n_samples;
                scores.add(&result);
                output::progress_done();
                if options.json {
                    output::line(&json_line(&result));
                } else {
                    output::raw(text_report(&result, options).as_bytes());
                }
            }
            Err(error) => {
                failed += 1;
                output::progress_done();
                // The error names the file (and line) already.
                output::error_line(&format!("error: {error:#}"));
                // A case that could not be read scores 0, if it has a label to score against.
                if let Ok((info, labels)) = read_case_json(&case_dir.join("case.json"), case_dir, &options.dir) {
                    scores.add_missing(&info, &labels);
                }
            }
        }
    }
    output::progress_done();
    let elapsed = started.elapsed().as_secs_f64();
    let summary = format!(
        "{} cases ({failed} failed), {n_samples} samples in {elapsed:.2} s ({:.0} samples/s){}",
        cases.len(),
        n_samples as f64 / elapsed.max(1e-9),
        if options.told { "; told the injection time" } else { "" }
    );
    let table = scores.table(options);
    if options.json {
        output::error_line(&summary);
        if !table.is_empty() {
            output::error_line(table.trim_end());
        }
    } else {
        output::line(&summary);
        output::raw(table.as_bytes());
    }
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// What every case shares: the detect stage's configuration and the graph.
struct Setup {
    config: mend_config::Config,
    graph: DependencyGraph,
    ranker: Ranker,
    told: bool,
    params: RankParams,
}

impl Setup {
    fn new(options: &ReplayOptions) -> anyhow::Result<Self> {
        let default =
            || mend_config::parse("<replay default>", DEFAULT_DETECTION, Path::new(".")).map_err(|e| anyhow!("{e}"));
        let config = match &options.config {
            Some(path) => {
                let config = mend_config::load(path).map_err(|error| anyhow!("{error}"))?;
                if config.rules.is_empty() && config.detects.is_empty() && config.forecasts.is_empty() {
                    let mut with_default = default()?;
                    with_default.services = config.services;
                    with_default
                } else {
                    config
                }
            }
            None => default()?,
        };
        let mut graph = DependencyGraph::new();
        for service in &config.services {
            for dependency in &service.depends_on {
                graph.add(Component::from(&service.name), Component::from(dependency), EdgeSource::Declared);
            }
        }
        let mut params = RankParams::default();
        for setting in &options.settings {
            setting.apply(&mut params);
        }
        Ok(Self { config, graph, ranker: options.ranker, told: options.told, params })
    }
}

/// The case directories under `dir` (itself, when it is one), sorted.
fn find_cases(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn is_case(dir: &Path) -> bool {
        dir.join("metrics.om").exists() || dir.join("case.json").exists()
    }
    fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        if is_case(dir) {
            found.push(dir.to_path_buf());
            return Ok(());
        }
        if depth == 0 {
            return Ok(());
        }
        let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry.with_context(|| format!("cannot read {}", dir.display()))?.path();
            if path.is_dir() {
                walk(&path, depth - 1, found)?;
            }
        }
        Ok(())
    }
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let mut found = Vec::new();
    walk(dir, 4, &mut found)?;
    found.sort();
    Ok(found)
}

/// Reads `case.json`: what the diagnosing run may know, and the labels, apart.
fn read_case_json(path: &Path, case_dir: &Path, root: &Path) -> anyhow::Result<(CaseInfo, CaseLabels)> {
    let fallback_id = case_dir.strip_prefix(root).unwrap_or(case_dir).display().to_string();
    let fallback_id = if fallback_id.is_empty() {
        case_dir.file_name().map_or_else(|| case_dir.display().to_string(), |n| n.to_string_lossy().into_owned())
    } else {
        fallback_id
    };
    if !path.exists() {
        bail!("{}: missing (a case needs metrics.om and case.json)", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| anyhow!("{}:{}:{}: {error}", path.display(), error.line(), error.column()))?;
    let object = value.as_object().ok_or_else(|| anyhow!("{}:1:1: expected a JSON object", path.display()))?;
    let string = |key: &str| -> anyhow::Result<Option<String>> {
        match object.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => bail!("{}: `{key}` must be a string, not {other}", path.display()),
        }
    };
    let info = CaseInfo {
        id: string("id")?.unwrap_or(fallback_id),
        system: string("system")?.unwrap_or_else(|| "unknown".to_owned()),
    };
    let inject_time = match object.get("inject_time") {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .ok_or_else(|| anyhow!("{}: `inject_time` must be whole Unix seconds, not {value}", path.display()))?,
        ),
    };
    let labels = CaseLabels {
        root_cause_service: string("root_cause_service")?,
        fault_type: string("fault_type")?,
        inject_time,
    };
    Ok((info, labels))
}

/// Reads and checks `metrics.om`.
fn read_metrics(path: &Path) -> anyhow::Result<Recording> {
    if !path.exists() {
        bail!("{}: missing (a case needs metrics.om and case.json)", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let limits = mend_promtext::Limits { max_samples: MAX_SAMPLES, ..mend_promtext::Limits::DEFAULT };
    let families = mend_promtext::parse_bytes(&bytes, mend_promtext::Format::OpenMetrics, &limits)
        .map_err(|error| anyhow!("{}:{}:{}: {}", path.display(), error.line, error.column, error.kind))?;
    // OpenMetrics has one sample per line that is not a comment: the line of sample k is the k-th such line.
    let text = std::str::from_utf8(&bytes).unwrap_or_default();
    let sample_lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with('#') && !line.is_empty())
        .map(|(n, _)| n + 1)
        .collect();
    let mut series_idx: BTreeMap<(String, Vec<(String, String)>), usize> = BTreeMap::new();
    let mut series = Vec::new();
    let mut last_time: Vec<i64> = Vec::new();
    let mut samples = Vec::new();
    let mut without_service = BTreeSet::new();
    for (sample_idx, (_, sample)) in mend_promtext::samples(&families).enumerate() {
        let line = sample_lines.get(sample_idx).copied().unwrap_or(0);
        let Some(time) = sample.timestamp_ms else {
            bail!(
                "{}:{line}: sample of {} has no timestamp (a recording needs one on every sample)",
                path.display(),
                sample.name
            );
        };
        let labels: Vec<(String, String)> =
            sample.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
        let key = (sample.name.to_string(), labels);
        if !key.1.iter().any(|(name, _)| name == "service") {
            without_service.insert(key);
            continue;
        }
        let idx = *series_idx.entry(key.clone()).or_insert_with(|| {
            series.push(key);
            last_time.push(i64::MIN);
            series.len() - 1
        });
        if time <= last_time[idx] {
            bail!(
                "{}:{line}: sample of {} at {} is not after the series' previous sample",
                path.display(),
                sample.name,
                Timestamp::from_millis(time)
            );
        }
        last_time[idx] = time;
        if sample.value.is_finite() {
            samples.push((time, idx, sample.value));
        }
    }
    samples.sort_by_key(|&(time, idx, _)| (time, idx));
    Ok(Recording { series, samples, without_service: without_service.len() })
}

fn replay_case(case_dir: &Path, root: &Path, setup: &Setup) -> anyhow::Result<CaseResult> {
    let (info, labels) = read_case_json(&case_dir.join("case.json"), case_dir, root)?;
    let recording = read_metrics(&case_dir.join("metrics.om"))?;
    let (Some(&(first, _, _)), Some(&(last, _, _))) = (recording.samples.first(), recording.samples.last()) else {
        bail!("{}: no samples with a `service` label", case_dir.join("metrics.om").display());
    };
    let span = Duration::from_millis(u64::try_from(last - first).unwrap_or(0));
    let mut store = SeriesStore::new(Limits {
        points_per_series: recording.samples.len().max(1),
        retention: span + Duration::from_secs(3600),
        max_series: recording.series.len().max(1),
    });
    let labels_of: Vec<_> = recording
        .series
        .iter()
        .map(|(name, pairs)| {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            store.labels(name, &pairs)
        })
        .collect();

    // Detection at accelerated time: after each timestamp, one evaluation at that time.
    let mut detection = Detection::new(&setup.config);
    let mut signals = Vec::new();
    let mut idx = 0;
    while idx < recording.samples.len() {
        let time = recording.samples[idx].0;
        while idx < recording.samples.len() && recording.samples[idx].0 == time {
            let (_, series, value) = recording.samples[idx];
            store
                .append(&labels_of[series], Timestamp::from_millis(time), value)
                .context("series store refused a sample")?;
            idx += 1;
        }
        if !setup.told {
            signals.extend(detection.evaluate(&store, Timestamp::from_millis(time)));
        }
    }
    let end = Timestamp::from_millis(last);
    let mut episodes = if setup.told {
        let inject = labels.inject_time.ok_or_else(|| anyhow!("--told: case.json has no inject_time"))?;
        let at = Timestamp::from_millis(inject * 1000);
        vec![Episode { onset: at, opened_at: at, closed_at: None, signals: Vec::new() }]
    } else {
        group(&signals, end)
    };
    let n_signals = signals.iter().filter(|s| s.state == SignalState::Firing).count();

    // Every series, as diagnosis reads it.
    let series: Vec<SeriesInput> = recording
        .series
        .iter()
        .zip(&labels_of)
        .filter_map(|((name, pairs), labels)| {
            let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let component = Component::new(&get("service")?);
            let instance = get("pod").or_else(|| get("replica")).or_else(|| get("instance"));
            let points = store
                .range(labels, Timestamp::from_millis(first), end)
                .into_iter()
                .map(|point| (point.at, point.value))
                .collect();
            Some(SeriesInput { component, instance, metric: name.clone(), points })
        })
        .collect();
    let components: BTreeSet<Component> = series.iter().map(|s| s.component.clone()).collect();
    let diagnosed = episodes
        .drain(..)
        .map(|episode| {
            let now = episode.closed_at.unwrap_or(end);
            let params = setup.params;
            let (ranking, diagnosis) = match setup.ranker {
                Ranker::Mend => {
                    let services: Vec<ServiceFacts> = components
                        .iter()
                        .map(|component| {
                            let mut facts = ServiceFacts::new(component.clone(), 1);
                            facts.signals = episode
                                .signals
                                .iter()
                                .filter(|s| s.labels.get("service").map(String::as_str) == Some(component.as_str()))
                                .cloned()
                                .collect();
                            facts
                        })
                        .collect();
                    let diagnosis = diagnose(&IncidentInput {
                        onset: episode.onset,
                        now,
                        services: &services,
                        series: &series,
                        graph: &setup.graph,
                        rank: params,
                        decide: DecideParams::default(),
                    });
                    let ranking =
                        diagnosis.ranking.candidates.iter().map(|c| (c.component.to_string(), c.rank_score)).collect();
                    (ranking, Some(diagnosis))
                }
                Ranker::Zscore | Ranker::Robust => {
                    let ranker =
                        if setup.ranker == Ranker::Zscore { SimpleRanker::ZScore } else { SimpleRanker::Robust };
                    let onset = episode.onset.saturating_sub(params.lookback);
                    let ranking = rank_simple(ranker, &series, onset, now, &params)
                        .into_iter()
                        .map(|(c, score)| (c.to_string(), score))
                        .collect();
                    (ranking, None)
                }
            };
            Diagnosed { episode, ranking, diagnosis }
        })
        .collect();
    Ok(CaseResult {
        info,
        labels,
        n_series: recording.series.len(),
        n_samples: recording.samples.len(),
        without_service: recording.without_service,
        n_signals,
        episodes: diagnosed,
    })
}

/// Groups signal transitions into episodes: a firing signal opens one or joins the open one; an episode
/// closes once all its signals resolved and [`QUIET`] passed without a new firing one.
fn group(signals: &[Signal], end: Timestamp) -> Vec<Episode> {
    let quiet = i64::try_from(QUIET.as_millis()).unwrap_or(i64::MAX);
    let mut episodes: Vec<Episode> = Vec::new();
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut last_change = Timestamp::from_millis(i64::MIN);
    for signal in signals {
        let open = episodes.last().is_some_and(|e| e.closed_at.is_none());
        if open
            && firing.is_empty()
            && signal.at.as_millis().saturating_sub(last_change.as_millis()) > quiet
            && let Some(episode) = episodes.last_mut()
        {
            episode.closed_at = Some(Timestamp::from_millis(last_change.as_millis().saturating_add(quiet)));
        }
        match signal.state {
            SignalState::Firing => {
                firing.insert(signal.fingerprint());
                match episodes.last_mut().filter(|e| e.closed_at.is_none()) {
                    Some(episode) => {
                        episode.onset = episode.onset.min(signal.since);
                        episode.signals.push(signal.clone());
                    }
                    None => episodes.push(Episode {
                        onset: signal.since,
                        opened_at: signal.at,
                        closed_at: None,
                        signals: vec![signal.clone()],
                    }),
                }
            }
            SignalState::Resolved => {
                firing.remove(&signal.fingerprint());
            }
        }
        last_change = signal.at;
    }
    if firing.is_empty()
        && end.as_millis().saturating_sub(last_change.as_millis()) > quiet
        && let Some(episode) = episodes.last_mut().filter(|e| e.closed_at.is_none())
    {
        episode.closed_at = Some(Timestamp::from_millis(last_change.as_millis().saturating_add(quiet)));
    }
    episodes
}

fn json_line(result: &CaseResult) -> String {
    let reported = result.reported();
    let ranking: Vec<&str> = reported.map(|d| d.ranking.iter().map(|(s, _)| s.as_str()).collect()).unwrap_or_default();
    let diagnosis = reported.and_then(|d| d.diagnosis.as_ref()).and_then(|d| d.root()).map(|d| d.kind.as_str());
    let detected_at = reported.map(|d| d.episode.opened_at.to_string());
    serde_json::json!({
        "id": result.info.id,
        "ranking": ranking,
        "diagnosis": diagnosis,
        "detected_at": detected_at,
    })
    .to_string()
}

fn text_report(result: &CaseResult, options: &ReplayOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} series, {} samples, {} signals, {} {}",
        result.info.id,
        result.n_series,
        result.n_samples,
        result.n_signals,
        result.episodes.len(),
        if options.told { "incident (told the injection time)" } else { "incidents" }
    );
    if result.without_service > 0 {
        let _ = writeln!(out, "  {} series without a `service` label ignored", result.without_service);
    }
    for (idx, diagnosed) in result.episodes.iter().enumerate() {
        let episode = &diagnosed.episode;
        let reported = idx + 1 == result.episodes.len();
        let services: Vec<String> = episode.services().into_iter().collect();
        let _ = writeln!(
            out,
            "  incident {} from {} (first signal {}{}){}{}",
            idx + 1,
            episode.onset,
            episode.opened_at,
            episode.closed_at.map(|c| format!(", closed {c}")).unwrap_or_default(),
            if services.is_empty() { String::new() } else { format!(", signals on {}", services.join(", ")) },
            if reported { "; reported" } else { "" }
        );
        for (rank, (service, score)) in diagnosed.ranking.iter().take(5).enumerate() {
            let why = diagnosed
                .diagnosis
                .as_ref()
                .and_then(|d| d.ranking.candidates.iter().find(|c| c.component.as_str() == service))
                .map(|c| {
                    let explained =
                        c.explained_by.as_ref().map(|e| format!(" (explained by {})", e.by)).unwrap_or_default();
                    format!("  {}{explained}", mend_diagnose::Shift::from(&c.finding))
                })
                .unwrap_or_default();
            let _ = writeln!(out, "    {}. {service}  score {score:.1}{why}", rank + 1);
        }
        if let Some(root) = diagnosed.diagnosis.as_ref().and_then(|d| d.root()) {
            let _ = writeln!(out, "    diagnosis: {} (confidence {:.2})", root.kind, root.confidence.value());
            for line in root.explain().iter().take(3) {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    if let (Some(answer), Some(reported)) = (&result.labels.root_cause_service, result.reported()) {
        let position = dedup_top5(&reported.ranking).iter().position(|s| s == answer);
        let _ = writeln!(
            out,
            "  label: {answer}{}: {}",
            result.labels.fault_type.as_deref().map(|f| format!(" ({f})")).unwrap_or_default(),
            position.map_or("not in the top 5".to_owned(), |p| format!("ranked {}", p + 1))
        );
    }
    out
}

/// The first five distinct services of a ranking (README section 5: repeats removed, first kept).
fn dedup_top5(ranking: &[(String, f64)]) -> Vec<String> {
    let mut seen = Vec::new();
    for (service, _) in ranking {
        if !seen.contains(service) {
            seen.push(service.clone());
        }
        if seen.len() == 5 {
            break;
        }
    }
    seen
}

/// AC@k per group: hits at k = 1..5 and the number of cases.
#[derive(Default)]
struct Scoreboard {
    /// (group, cases, hits at k = 1..5); groups: `system`, `system / fault_type`, `overall`.
    groups: BTreeMap<String, (usize, [usize; 5])>,
}

impl Scoreboard {
    fn add(&mut self, result: &CaseResult) {
        let Some(answer) = &result.labels.root_cause_service else { return };
        let top5 = result.reported().map(|d| dedup_top5(&d.ranking)).unwrap_or_default();
        let position = top5.iter().position(|s| s == answer);
        self.record(&result.info, &result.labels, position);
    }

    fn add_missing(&mut self, info: &CaseInfo, labels: &CaseLabels) {
        if labels.root_cause_service.is_some() {
            self.record(info, labels, None);
        }
    }

    fn record(&mut self, info: &CaseInfo, labels: &CaseLabels, position: Option<usize>) {
        let mut groups = vec![format!("{} (all)", info.system), "overall".to_owned()];
        if let Some(fault) = &labels.fault_type {
            groups.push(format!("{} / {fault}", info.system));
        }
        for group in groups {
            let entry = self.groups.entry(group).or_insert((0, [0; 5]));
            entry.0 += 1;
            for (k, hits) in entry.1.iter_mut().enumerate() {
                if position.is_some_and(|p| p <= k) {
                    *hits += 1;
                }
            }
        }
    }

    fn table(&self, options: &ReplayOptions) -> String {
        if self.groups.is_empty() {
            return String::new();
        }
        let mut rows: Vec<Vec<String>> = self
            .groups
            .iter()
            .filter(|(name, _)| name.as_str() != "overall")
            .chain(self.groups.get_key_value("overall"))
            .map(|(name, (n, hits))| {
                let ac = |k: usize| hits[k - 1] as f64 / *n as f64;
                let avg5 = (1..=5).map(ac).sum::<f64>() / 5.0;
                vec![
                    name.clone(),
                    n.to_string(),
                    format!("{:.2}", ac(1)),
                    format!("{:.2}", ac(3)),
                    format!("{avg5:.2}"),
                ]
            })
            .collect();
        rows.dedup();
        let ranker = match options.ranker {
            Ranker::Mend => "mend",
            Ranker::Zscore => "z-score baseline",
            Ranker::Robust => "robust-score baseline",
        };
        let timing = if options.told { "told the injection time" } else { "finding the fault time itself" };
        let settings: Vec<String> = options.settings.iter().map(|s| format!("{s:?}")).collect();
        let settings = if settings.is_empty() { String::new() } else { format!(", {}", settings.join(", ")) };
        format!("{ranker}, {timing}{settings}:\n{}", output::table(&["GROUP", "CASES", "AC@1", "AC@3", "Avg@5"], &rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend_types::{Severity, SignalKind};

    fn signal(at_secs: i64, since_secs: i64, name: &str, firing: bool) -> Signal {
        Signal {
            at: Timestamp::from_millis(at_secs * 1000),
            since: Timestamp::from_millis(since_secs * 1000),
            state: if firing { SignalState::Firing } else { SignalState::Resolved },
            kind: SignalKind::Anomaly,
            name: "replay".to_owned(),
            severity: Severity::Warning,
            service: None,
            replica: None,
            value: 0.6,
            labels: BTreeMap::from([("series".to_owned(), name.to_owned())]),
            evidence: String::new(),
        }
    }

    #[test]
    fn episodes_stay_open_while_signals_fire_and_close_after_the_quiet_time() {
        let signals = [
            signal(100, 60, "a", true),
            signal(400, 60, "a", false),
            // Within the quiet time after the last resolution: joins.
            signal(650, 640, "b", true),
            signal(700, 640, "b", false),
            // Long after: a new episode.
            signal(2000, 1990, "c", true),
        ];
        let episodes = group(&signals, Timestamp::from_millis(2_100_000));
        assert_eq!(episodes.len(), 2, "{episodes:?}");
        assert_eq!(episodes[0].onset, Timestamp::from_millis(60_000));
        assert_eq!(episodes[0].signals.len(), 2);
        assert_eq!(episodes[0].closed_at, Some(Timestamp::from_millis(1_000_000)));
        assert_eq!(episodes[1].onset, Timestamp::from_millis(1_990_000));
        assert_eq!(episodes[1].closed_at, None);
        // Once the recording ends long after the last resolution, the episode is closed.
        let resolved = [signal(100, 60, "a", true), signal(200, 60, "a", false)];
        assert_eq!(
            group(&resolved, Timestamp::from_millis(600_000))[0].closed_at,
            Some(Timestamp::from_millis(500_000))
        );
        assert_eq!(group(&resolved, Timestamp::from_millis(400_000))[0].closed_at, None);
    }

    #[test]
    fn the_top_five_drop_repeats() {
        let ranking: Vec<(String, f64)> =
            ["a", "b", "a", "c", "d", "e", "f"].iter().map(|s| ((*s).to_owned(), 1.0)).collect();
        assert_eq!(dedup_top5(&ranking), ["a", "b", "c", "d", "e"]);
    }
}
