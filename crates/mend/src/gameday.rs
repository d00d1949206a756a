//! `mend gameday FILE`: a topology under load, faults on a schedule, and a report of how fast and how
//! well mend healed it, with pass/fail against SLOs.
//!
//! The run is IO (`run`): start mend (or use a running one), drive the load (`gameday/load.rs`), inject
//! the faults through mend's API, poll the services' readiness, then read back events, signals,
//! incidents and the action journal. The measuring is pure (`evaluate`): what was recorded in, one
//! `FaultResult` per fault out. The report (`gameday/report.rs`) prints the table and writes the JSON
//! and the self-contained HTML with SVG charts (`chart.rs`).

mod load;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hyper::Method;
use mend_config::{Expect, FaultAction, Load, Scenario, ScheduledFault, Slo, Topology};
use mend_types::{Clock, SystemClock, Timestamp};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, encode_query_value};
use crate::heal::hook::bounded;
use crate::output;

pub(crate) use load::Sample;

/// Exit code when an SLO failed (1 is a run that could not be done; 78 an invalid scenario file).
const EXIT_SLO_FAILED: u8 = 3;

/// Options of `mend gameday`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) file: PathBuf,
    /// Where NAME.json and NAME.html go.
    pub(crate) out: PathBuf,
    /// Print the JSON to stdout instead of the table.
    pub(crate) json: bool,
    /// Bearer token for a running mend (a started one takes it from its config).
    pub(crate) token: Option<String>,
}

/// Readiness of one service at one poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ReadyPoint {
    pub(crate) at: f64,
    pub(crate) service: String,
    pub(crate) ready: u32,
    pub(crate) desired: u32,
}

/// Something mend noticed (an event, a signal, an incident opening), seconds after the start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Notice {
    pub(crate) at: f64,
    pub(crate) service: String,
    pub(crate) what: String,
}

/// An incident as the game day sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct IncidentSeen {
    pub(crate) id: String,
    pub(crate) services: Vec<String>,
    pub(crate) opened: f64,
    pub(crate) diagnosis: String,
    pub(crate) root: Option<String>,
    pub(crate) diagnosed: Option<f64>,
    pub(crate) escalated: Option<f64>,
    /// Every diagnosis it was given, oldest first.
    pub(crate) diagnoses: Vec<DiagnosisSeen>,
}

/// A diagnosis an incident was given, and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DiagnosisSeen {
    pub(crate) at: f64,
    pub(crate) name: String,
    pub(crate) root: Option<String>,
}

/// An action from the journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ActionSeen {
    pub(crate) at: f64,
    pub(crate) service: String,
    pub(crate) what: String,
}

/// A fault as injected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Injected {
    pub(crate) at: f64,
    pub(crate) service: String,
    pub(crate) description: String,
    /// Why it could not be injected, if so.
    pub(crate) error: Option<String>,
}

/// Everything recorded during a run.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    pub(crate) duration: f64,
    pub(crate) samples: Vec<Sample>,
    pub(crate) ready: Vec<ReadyPoint>,
    pub(crate) notices: Vec<Notice>,
    pub(crate) incidents: Vec<IncidentSeen>,
    pub(crate) actions: Vec<ActionSeen>,
    pub(crate) injected: Vec<Injected>,
    /// `ready` events: when a replica of a service became ready (finer than the polls).
    pub(crate) readies: Vec<(f64, String)>,
    /// Output of an external load command.
    pub(crate) load_output: Option<String>,
}

/// The measures of one fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FaultResult {
    pub(crate) at: f64,
    pub(crate) service: String,
    pub(crate) fault: String,
    pub(crate) injected: bool,
    pub(crate) detect_s: Option<f64>,
    pub(crate) detected_by: Option<String>,
    pub(crate) diagnose_s: Option<f64>,
    pub(crate) diagnosis: Option<String>,
    pub(crate) expected_diagnosis: Option<String>,
    pub(crate) right_diagnosis: Option<bool>,
    /// Time to recover (healthy and serving again), or to escalate when that is what is expected.
    pub(crate) recover_s: Option<f64>,
    pub(crate) expect: &'static str,
    /// Requests of the built-in load during the fault that failed, and all of them; None without the
    /// built-in load (an external command's requests are not seen one by one).
    pub(crate) failed: Option<usize>,
    pub(crate) total: Option<usize>,
    pub(crate) actions: Vec<String>,
    /// SLOs that failed, in words.
    pub(crate) violations: Vec<String>,
}

/// Event kinds that show mend noticed trouble with a service.
const NOTICING_EVENTS: [&str; 7] =
    ["exited", "unhealthy", "probe_failed", "ejected", "gave_up", "unready", "spawn_failed"];

/// Measures each fault from what was recorded. A fault's window runs from its injection to the next
/// fault's (or the run's end).
pub(crate) fn evaluate(scenario: &Scenario, recording: &Recording) -> Vec<FaultResult> {
    let mut results = Vec::new();
    for (idx, fault) in scenario.faults.iter().enumerate() {
        let injected = recording.injected.get(idx);
        let start = injected.map_or(fault.at.as_secs_f64(), |i| i.at);
        let end = scenario.faults.get(idx + 1).map_or(recording.duration, |next| next.at.as_secs_f64());
        let in_window = |at: f64| at >= start && at < end;
        let detected = recording
            .notices
            .iter()
            .filter(|notice| in_window(notice.at) && notice.service == fault.service)
            .min_by(|a, b| a.at.total_cmp(&b.at));
        let incident = recording
            .incidents
            .iter()
            .filter(|incident| in_window(incident.opened) && incident.services.contains(&fault.service))
            .min_by(|a, b| a.opened.total_cmp(&b.opened));
        let detect_s = match (detected.map(|n| n.at), incident.map(|i| i.opened)) {
            (Some(a), Some(b)) => Some(a.min(b) - start),
            (a, b) => a.or(b).map(|at| at - start),
        };
        let detected_by = match (detected, incident) {
            (Some(notice), Some(incident)) if incident.opened < notice.at => Some(format!("incident {}", incident.id)),
            (Some(notice), _) => Some(notice.what.clone()),
            (None, Some(incident)) => Some(format!("incident {}", incident.id)),
            (None, None) => None,
        };
        // A diagnosis can take longer than the gap to a fault elsewhere: it is the fault's until the next
        // fault on the same service.
        let diagnosis_end = scenario.faults[idx + 1..]
            .iter()
            .find(|next| next.service == fault.service)
            .map_or(recording.duration, |next| next.at.as_secs_f64());
        let diagnosed = diagnosis_for(recording, &fault.service, |at: f64| at >= start && at < diagnosis_end);
        let diagnosis = diagnosed.as_ref().map(|given| match &given.root {
            Some(root) if root != &fault.service => format!("{} (root {root})", given.name),
            _ => given.name.clone(),
        });
        // Right: the expected name, and the faulty service as the root when one is named.
        let right_diagnosis = fault.expect_diagnosis.as_ref().map(|expected| {
            diagnosed.as_ref().is_some_and(|given| {
                &given.name == expected && given.root.as_ref().is_none_or(|root| root == &fault.service)
            })
        });
        let recover_s = match fault.expect {
            Expect::Recover => recovered_at(fault, recording, start, end).map(|at| at - start),
            Expect::Escalate => recording
                .incidents
                .iter()
                .filter(|incident| incident.services.contains(&fault.service))
                .filter_map(|incident| incident.escalated.filter(|at| in_window(*at)))
                .min_by(f64::total_cmp)
                .map(|at| at - start),
            Expect::ScaleOut => scaled_out_at(fault, recording, start, end).map(|at| at - start),
        };
        let window_samples: Vec<&Sample> = recording.samples.iter().filter(|s| in_window(s.at)).collect();
        let counted = matches!(scenario.load, Some(Load::Builtin { .. }));
        let failed = counted.then(|| window_samples.iter().filter(|s| !s.ok).count());
        let actions: Vec<String> = recording
            .actions
            .iter()
            .filter(|action| in_window(action.at))
            .map(|action| format!("{:.1}s {}", action.at - start, action.what))
            .collect();
        let mut result = FaultResult {
            at: start,
            service: fault.service.clone(),
            fault: describe(fault),
            injected: injected.is_some_and(|i| i.error.is_none()),
            detect_s,
            detected_by,
            diagnose_s: diagnosed.as_ref().map(|given| given.at - start),
            diagnosis,
            expected_diagnosis: fault.expect_diagnosis.clone(),
            right_diagnosis,
            recover_s,
            expect: match fault.expect {
                Expect::Recover => "recover",
                Expect::Escalate => "escalate",
                Expect::ScaleOut => "scale out",
            },
            failed,
            total: counted.then_some(window_samples.len()),
            actions,
            violations: Vec::new(),
        };
        result.violations = violations(&scenario.slo, fault, &result, recording, start, end);
        results.push(result);
    }
    results
}

/// The earliest time in `[start, end)` from which the service was fully ready at every poll and every
/// request succeeded until the window's end; None if it was still broken at the end.
fn recovered_at(fault: &ScheduledFault, recording: &Recording, start: f64, end: f64) -> Option<f64> {
    let polls: Vec<&ReadyPoint> =
        recording.ready.iter().filter(|p| p.service == fault.service && p.at >= start && p.at < end).collect();
    let last_bad_poll = polls
        .iter()
        .filter(|p| p.ready < p.desired)
        .map(|p| p.at)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let last_failure = recording
        .samples
        .iter()
        .filter(|s| !s.ok && s.at >= start && s.at < end)
        .map(|s| s.at)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    // The first good poll after the last bad one, and after the last failed request.
    let after_bad = match last_bad_poll {
        None => start,
        Some(bad) => polls.iter().map(|p| p.at).find(|at| *at > bad)?,
    };
    // A replica that went down and came back between two polls: its `ready` event after the last time
    // mend noticed trouble.
    let last_trouble = recording
        .notices
        .iter()
        .filter(|n| n.service == fault.service && n.at >= start && n.at < end)
        .map(|n| n.at)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let after_bad = match last_trouble {
        None => after_bad,
        Some(trouble) => {
            let back = recording.readies.iter().find(|(at, service)| *service == fault.service && *at >= trouble);
            match back {
                Some((at, _)) => after_bad.max(*at),
                None => after_bad,
            }
        }
    };
    let after_failure = last_failure.map_or(start, |at| at);
    let recovered = after_bad.max(after_failure);
    // Still failing at the very end: not recovered.
    if last_failure.is_some_and(|at| end - at < 0.5) && end < recording.duration {
        return None;
    }
    Some(recovered)
}

/// The first poll in `[start, end)` at which the service wanted its highest replica count of the window,
/// more than it wanted at the injection, and had all of them ready; None if it never scaled out. (A
/// scale-out shows in `desired`: the autoscaler's change, unlike a crash, never leaves a replica down.)
fn scaled_out_at(fault: &ScheduledFault, recording: &Recording, start: f64, end: f64) -> Option<f64> {
    let polls: Vec<&ReadyPoint> =
        recording.ready.iter().filter(|p| p.service == fault.service && p.at >= start && p.at < end).collect();
    let before = polls.first()?.desired;
    let most = polls.iter().map(|p| p.desired).max()?;
    if most <= before {
        return None;
    }
    polls.iter().find(|p| p.desired == most && p.ready >= most).map(|p| p.at)
}

fn violations(
    slo: &Slo,
    fault: &ScheduledFault,
    result: &FaultResult,
    recording: &Recording,
    start: f64,
    end: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    if !result.injected {
        out.push("the fault could not be injected".to_owned());
    }
    if let Some(bound) = slo.detect {
        match result.detect_s {
            Some(detect) if detect <= bound.as_secs_f64() => {}
            Some(detect) => out.push(format!("detected after {detect:.2}s (SLO {}s)", bound.as_secs_f64())),
            None => out.push("not detected".to_owned()),
        }
    }
    if let Some(bound) = slo.recover {
        let what = result.expect;
        match result.recover_s {
            Some(recover) if recover <= bound.as_secs_f64() => {}
            Some(recover) => out.push(format!("{what} after {recover:.2}s (SLO {}s)", bound.as_secs_f64())),
            None => out.push(format!("did not {what}")),
        }
    }
    if let Some(bound) = slo.failed_requests
        && let Some(failed) = result.failed
        && failed as u64 > bound
    {
        out.push(format!("{failed} failed requests (SLO {bound})"));
    }
    if slo.right_diagnosis && result.right_diagnosis == Some(false) {
        out.push(format!(
            "diagnosed {} (expected {})",
            result.diagnosis.as_deref().unwrap_or("nothing"),
            result.expected_diagnosis.as_deref().unwrap_or("?")
        ));
    }
    for victim in &fault.untouched {
        let touched: Vec<&ActionSeen> = recording
            .actions
            .iter()
            .filter(|action| action.at >= start && action.at < end && &action.service == victim)
            .collect();
        if !touched.is_empty() {
            out.push(format!("{victim} was acted on ({}) though it is a victim", touched[0].what));
        }
    }
    out
}

fn describe(fault: &ScheduledFault) -> String {
    let replica = fault.replica.map(|r| format!("/{r}")).unwrap_or_default();
    match &fault.action {
        FaultAction::Chaos(kind) => format!("{kind} {}{replica}", fault.service),
        FaultAction::Knob(path) => format!("POST {path} to {}{replica}", fault.service),
        FaultAction::Run(argv) => format!("run {}", argv.join(" ")),
    }
}

/// Runs `mend gameday`.
pub(crate) fn main(options: &Options) -> ExitCode {
    let scenario = match mend_config::load_scenario(&options.file) {
        Ok(scenario) => scenario,
        Err(mend_config::LoadError::Invalid(errors)) => {
            for error in &errors.0 {
                output::error_line(&error.to_string());
            }
            return ExitCode::from(78);
        }
        Err(error) => {
            output::error_line(&format!("error: {error}"));
            return ExitCode::from(78);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error_line(&format!("error: cannot start: {error}"));
            return ExitCode::FAILURE;
        }
    };
    // Interrupted (Ctrl-C, SIGTERM), the run is dropped: the load command's and faults' process groups
    // and the mend it started are killed with it, rather than left loading the target.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run(&scenario, options) => Some(result),
            () = interrupted() => None,
        }
    });
    let Some(outcome) = outcome else {
        output::error_line("interrupted: the load, the faults and the topology were stopped");
        return ExitCode::from(130);
    };
    match outcome {
        Ok(results) => {
            let failed = results.iter().any(|result| !result.violations.is_empty());
            if failed { ExitCode::from(EXIT_SLO_FAILED) } else { ExitCode::SUCCESS }
        }
        Err(error) => {
            output::error_line(&format!("error: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM (never, if neither can be watched).
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// A mend started for the game day, stopped at its end (its state directory and log stay in
/// `OUT/NAME.mend/` for a look afterwards).
struct Started {
    child: tokio::process::Child,
}

impl Started {
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The game day's processes: mend, a load command, fault and reset commands (argv, never a shell). A bare
/// `mend` is this binary (as the supervisor finds `mend-demo` next to it), so a `run` fault can say
/// `["mend", "deploy", ...]` without mend on the PATH and gets the same build as the daemon it talks to.
fn command(program: &str) -> tokio::process::Command {
    match std::env::current_exe() {
        Ok(exe) if program == "mend" => tokio::process::Command::new(exe),
        _ => tokio::process::Command::new(program),
    }
}

async fn start_mend(config: &Path, work_dir: &Path) -> anyhow::Result<(Started, SocketAddr, Option<String>)> {
    use anyhow::Context as _;
    let api = mend_config::load_api(config).with_context(|| format!("cannot read {}", config.display()))?;
    // A fresh state each run: nothing of an earlier game day's journal counts in this one.
    if work_dir.exists() {
        std::fs::remove_dir_all(work_dir).with_context(|| format!("cannot clear {}", work_dir.display()))?;
    }
    std::fs::create_dir_all(work_dir).with_context(|| format!("cannot create {}", work_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the mend binary")?;
    let log = std::fs::File::create(work_dir.join("mend.log")).context("cannot write mend's log")?;
    let child = command(&exe.to_string_lossy())
        .arg("run")
        .arg("-c")
        .arg(config)
        .arg("--state-dir")
        .arg(work_dir.join("state"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start mend")?;
    Ok((Started { child }, api.listen, api.token))
}

async fn services(client: &Client) -> Vec<mend_api::ServiceDto> {
    client
        .json::<mend_api::ServicesResponse>(Method::GET, "/api/v1/services")
        .await
        .map(|response| response.services)
        .unwrap_or_default()
}

async fn run(scenario: &Scenario, options: &Options) -> anyhow::Result<Vec<FaultResult>> {
    use anyhow::Context as _;
    let clock = SystemClock;
    if let Some(reset) = &scenario.reset {
        run_reset(reset).await?;
    }
    let (started, address, token) = match &scenario.topology {
        Topology::Config(path) => {
            let work_dir = options.out.join(format!("{}.mend", scenario.name));
            let (started, address, token) = start_mend(path, &work_dir).await?;
            (Some(started), address, token.or_else(|| options.token.clone()))
        }
        Topology::Api(address) => (None, *address, options.token.clone()),
    };
    let client = Client::new(address, token);
    let outcome = async {
        // Bounded: mend answers and every replica is ready within 60 s.
        let ready_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all = services(&client).await;
            if !all.is_empty() && all.iter().all(|s| s.ready_replicas >= s.desired_replicas) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < ready_deadline,
                "mend at {address} did not get every service ready within 60s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        progress(
            0.0,
            &format!(
                "game day {:?}: {} faults over {}s",
                scenario.name,
                scenario.faults.len(),
                scenario.duration.as_secs_f64()
            ),
        );
        let recording = drive(scenario, &client, &clock).await?;
        Ok::<_, anyhow::Error>(recording)
    }
    .await;
    if let Some(started) = started {
        started.stop().await;
    }
    if let Some(reset) = &scenario.reset {
        run_reset(reset).await?;
    }
    let recording = outcome?;
    let results = evaluate(scenario, &recording);
    let report = report::Report::new(scenario, &recording, &results);
    std::fs::create_dir_all(&options.out).with_context(|| format!("cannot create {}", options.out.display()))?;
    let json = report.json();
    let json_path = options.out.join(format!("{}.json", scenario.name));
    std::fs::write(&json_path, &json).with_context(|| format!("cannot write {}", json_path.display()))?;
    let html_path = options.out.join(format!("{}.html", scenario.name));
    std::fs::write(&html_path, report.html()).with_context(|| format!("cannot write {}", html_path.display()))?;
    if options.json {
        output::line(&json);
    } else {
        output::raw(report.table().as_bytes());
        output::line(&format!("report: {} and {}", json_path.display(), html_path.display()));
    }
    Ok(results)
}

/// Runs the scenario's reset command, bounded to 10 s.
async fn run_reset(argv: &[String]) -> anyhow::Result<()> {
    let run = command(&argv[0]).args(&argv[1..]).kill_on_drop(true).output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => anyhow::bail!("reset {:?} failed: {}", argv[0], output.status),
        Ok(Err(error)) => anyhow::bail!("cannot run reset {:?}: {error}", argv[0]),
        Err(_) => anyhow::bail!("reset {:?} took over 10s", argv[0]),
    }
}

fn progress(at: f64, text: &str) {
    output::error_line(&format!("[{at:6.1}s] {text}"));
}

/// Runs the load, the faults and the polls for the scenario's duration; then reads back what mend did.
async fn drive(scenario: &Scenario, client: &Client, clock: &SystemClock) -> anyhow::Result<Recording> {
    let t0 = Instant::now();
    let wall0 = clock.wall();
    let total = scenario.duration;
    let mut external = None;
    let load = match &scenario.load {
        Some(Load::Builtin { url, rate, concurrency, timeout }) => {
            Some((load::start(url.address, url.path.clone(), *rate, *concurrency, *timeout, t0, total), *timeout))
        }
        Some(Load::Command(argv)) => {
            external = Some(start_load_command(argv)?);
            None
        }
        None => None,
    };
    let mut recording = Recording { duration: total.as_secs_f64(), ..Recording::default() };
    // `run` faults still running: stopped at their `for`, or when the game day ends.
    let mut running = tokio::task::JoinSet::new();
    let mut next_fault = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    // A poll delayed (by an injection) is not made up for with a burst of polls.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_progress = 0.0;
    loop {
        ticker.tick().await;
        let now = t0.elapsed();
        if now >= total {
            break;
        }
        while let Some(fault) = scenario.faults.get(next_fault).filter(|fault| fault.at <= now) {
            let injected = inject(client, fault, t0, &mut running).await;
            match &injected.error {
                None => progress(injected.at, &format!("fault: {}", injected.description)),
                Some(error) => progress(injected.at, &format!("fault {} not injected: {error}", describe(fault))),
            }
            recording.injected.push(injected);
            next_fault += 1;
        }
        // Stamped after the injections (a `run` fault takes up to a second).
        let at = t0.elapsed().as_secs_f64();
        for service in services(client).await {
            recording.ready.push(ReadyPoint {
                at,
                service: service.name.clone(),
                ready: service.ready_replicas,
                desired: service.desired_replicas,
            });
        }
        if at - last_progress >= 5.0 {
            last_progress = at;
            let ready: Vec<String> = recording
                .ready
                .iter()
                .rev()
                .take_while(|p| p.at == at)
                .map(|p| format!("{} {}/{}", p.service, p.ready, p.desired))
                .collect();
            let traffic = load
                .as_ref()
                .map(|(run, _)| run.so_far())
                .map_or(String::new(), |(n, failed)| format!(", {n} requests ({failed} failed)"));
            progress(at, &format!("ready: {}{traffic}", ready.join(", ")));
        }
    }
    running.shutdown().await;
    if let Some((run, timeout)) = load {
        let recorded = run.finish(timeout).await;
        if recorded.skipped > 0 {
            progress(
                t0.elapsed().as_secs_f64(),
                &format!("{} requests not sent: every connection was busy", recorded.skipped),
            );
        }
        recording.samples = recorded.samples;
    }
    if let Some(load) = external {
        recording.load_output = Some(stop_load_command(load).await);
    }
    read_back(client, wall0, &mut recording).await;
    Ok(recording)
}

/// A running load command, its process group, and the tasks draining its stdout and stderr.
struct LoadCommand {
    child: tokio::process::Child,
    /// Killed when dropped: a game day that ends early leaves no load running.
    group: ProcessGroup,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

fn start_load_command(argv: &[String]) -> anyhow::Result<LoadCommand> {
    use anyhow::Context as _;
    let Some((program, args)) = argv.split_first() else { anyhow::bail!("the load command is empty") };
    let mut child = command(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group: a wrapper (`sh -c "hey ..."`) and what it starts are stopped together.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run the load command {program:?}"))?;
    let group = ProcessGroup(child.id().and_then(|pid| i32::try_from(pid).ok()).map(nix::unistd::Pid::from_raw));
    // Drained while it runs: a command that writes more than a pipe holds would block.
    let stdout = child.stdout.take().map(|out| tokio::spawn(output_tail(out)));
    let stderr = child.stderr.take().map(|err| tokio::spawn(output_tail(err)));
    Ok(LoadCommand { child, group, stdout, stderr })
}

/// The most of a load command's output kept: the end, where load tools print their summary.
const LOAD_OUTPUT_BYTES: usize = 16 * 1024;

/// Reads `reader` to its end, keeping the last [`LOAD_OUTPUT_BYTES`].
async fn output_tail(mut reader: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buffer = [0_u8; 8192];
    while let Ok(n @ 1..) = reader.read(&mut buffer).await {
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * LOAD_OUTPUT_BYTES {
            kept.drain(..kept.len() - LOAD_OUTPUT_BYTES);
        }
    }
    let excess = kept.len().saturating_sub(LOAD_OUTPUT_BYTES);
    kept.drain(..excess);
    kept
}

/// Stops a load command at the end of the game day: SIGINT to its process group first, on which load
/// tools (hey, wrk, ab) stop and print their summary, SIGKILL after 5 s. Its output: stdout, then stderr.
async fn stop_load_command(load: LoadCommand) -> String {
    let LoadCommand { mut child, group, stdout, stderr } = load;
    group.signal(nix::sys::signal::Signal::SIGINT);
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    // At once after the leader's exit (or its 5 s): what is left of the group goes, before its id could
    // be anyone else's.
    group.kill_once();
    let _ = child.wait().await;
    let mut output = String::new();
    for task in [stdout, stderr].into_iter().flatten() {
        // Bounded: a process that left the group may hold the pipe open.
        let abort = task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(bytes)) => output.push_str(&String::from_utf8_lossy(&bytes)),
            _ => abort.abort(),
        }
    }
    output
}

fn seconds_since(wall0: Timestamp, at: Timestamp) -> f64 {
    (at.as_millis() - wall0.as_millis()) as f64 / 1000.0
}

/// Events, signals, incidents and actions since the start, as seconds after it.
async fn read_back(client: &Client, wall0: Timestamp, recording: &mut Recording) {
    let since = encode_query_value(&wall0.to_string());
    if let Ok(events) =
        client.json::<mend_api::EventsResponse>(Method::GET, &format!("/api/v1/events?limit=10000&since={since}")).await
    {
        for event in events.events {
            let at = seconds_since(wall0, Timestamp::from_millis(event.at_ms));
            if event.kind == "ready" {
                recording.readies.push((at, event.service.clone().unwrap_or_default()));
            }
            if event.kind == "restarted" {
                recording.actions.push(ActionSeen {
                    at,
                    service: event.service.clone().unwrap_or_default(),
                    what: format!("supervisor: {}", event.message),
                });
            }
            if NOTICING_EVENTS.contains(&event.kind.as_str()) {
                recording.notices.push(Notice {
                    at: seconds_since(wall0, Timestamp::from_millis(event.at_ms)),
                    service: event.service.unwrap_or_default(),
                    what: format!("{}: {}", event.kind, event.message),
                });
            }
        }
    }
    if let Ok(signals) = client
        .json::<mend_api::SignalsResponse>(Method::GET, &format!("/api/v1/signals?limit=10000&since={since}"))
        .await
    {
        for signal in signals.signals.into_iter().filter(|signal| signal.state == "firing") {
            if let Some(at) = Timestamp::parse(&signal.at) {
                recording.notices.push(Notice {
                    at: seconds_since(wall0, at),
                    service: signal.service.unwrap_or_default(),
                    what: format!("signal {}", signal.name),
                });
            }
        }
    }
    if let Ok(incidents) = client.json::<mend_api::IncidentsResponse>(Method::GET, "/api/v1/incidents?limit=1000").await
    {
        for dto in incidents.incidents {
            let incident = dto.incident;
            if incident.opened_at < wall0 {
                continue;
            }
            let escalated = incident
                .timeline
                .iter()
                .find(|entry| entry.state == mend_types::IncidentState::Escalated)
                .map(|entry| seconds_since(wall0, entry.at));
            recording.incidents.push(IncidentSeen {
                id: incident.id.to_string(),
                services: incident.services.iter().map(ToString::to_string).collect(),
                opened: seconds_since(wall0, incident.opened_at),
                diagnosis: incident.diagnosis.name.clone(),
                root: incident.diagnosis.root.as_ref().map(ToString::to_string),
                diagnosed: incident.diagnosis.diagnosed_at.map(|at| seconds_since(wall0, at)),
                escalated,
                diagnoses: incident
                    .diagnoses
                    .iter()
                    .map(|change| DiagnosisSeen {
                        at: seconds_since(wall0, change.at),
                        name: change.name.clone(),
                        root: change.root.as_ref().map(ToString::to_string),
                    })
                    .collect(),
            });
        }
    }
    if let Ok(actions) = client.json::<mend_api::ActionsResponse>(Method::GET, "/api/v1/actions?limit=1000").await {
        for action in actions.actions {
            if action.requested_at < wall0 {
                continue;
            }
            let replica = action.replica.map(|r| format!("/{r}")).unwrap_or_default();
            let service = action.service.as_ref().map(ToString::to_string).unwrap_or_default();
            recording.actions.push(ActionSeen {
                at: seconds_since(wall0, action.requested_at),
                service: service.clone(),
                what: format!(
                    "{} {service}{replica} by {} ({})",
                    action.action.describe(),
                    action.actor,
                    action.outcome.as_deref().unwrap_or(&format!("{:?}", action.state).to_lowercase())
                ),
            });
        }
    }
    recording.actions.sort_by(|a, b| a.at.total_cmp(&b.at));
}

/// The diagnosis mend gave a fault on `service`: the last one an incident of the service was given while
/// the fault's window ran (an incident can outlive a fault and be diagnosed again for the next), else
/// what the first incident opened in the window ended with (a daemon that records no history).
fn diagnosis_for(recording: &Recording, service: &str, in_window: impl Fn(f64) -> bool) -> Option<DiagnosisSeen> {
    let involved = || recording.incidents.iter().filter(|incident| incident.services.iter().any(|s| s == service));
    let given = involved()
        .flat_map(|incident| &incident.diagnoses)
        .filter(|change| in_window(change.at))
        .max_by(|a, b| a.at.total_cmp(&b.at));
    if let Some(given) = given {
        return Some(given.clone());
    }
    involved()
        .filter(|incident| {
            in_window(incident.opened) && !incident.diagnosis.is_empty() && incident.diagnoses.is_empty()
        })
        .min_by(|a, b| a.opened.total_cmp(&b.opened))
        .map(|incident| DiagnosisSeen {
            at: incident.diagnosed.unwrap_or(incident.opened),
            name: incident.diagnosis.clone(),
            root: incident.root.clone(),
        })
}

/// How long a `run` fault's command has to fail for the fault to count as not injected; one still running
/// then goes on in the background while the game day measures.
const RUN_FAILS_WITHIN: Duration = Duration::from_secs(1);

/// Injects one fault; never fails the run (a fault that could not be injected is reported). A `run`
/// fault's command that outlives [`RUN_FAILS_WITHIN`] joins `running` and is stopped at its `for`.
async fn inject(
    client: &Client,
    fault: &ScheduledFault,
    t0: Instant,
    running: &mut tokio::task::JoinSet<()>,
) -> Injected {
    let at = t0.elapsed().as_secs_f64();
    let mut injected = Injected { at, service: fault.service.clone(), description: describe(fault), error: None };
    let result: Result<String, String> = match &fault.action {
        FaultAction::Chaos(kind) => {
            let mut body = serde_json::json!({ "by": "gameday" });
            if *kind != mend_types::ChaosFault::Kill {
                body["for"] = format!("{}ms", fault.duration.as_millis()).into();
            }
            if let Some(replica) = fault.replica {
                body["replica"] = replica.into();
            }
            if let Some(caller) = &fault.caller {
                body["caller"] = caller.clone().into();
            }
            if let Some(rate) = fault.mib_per_sec {
                body["mib_per_sec"] = rate.into();
            }
            let path = format!("/api/v1/services/{}/chaos/{kind}", encode_query_value(&fault.service));
            client
                .json_with_body::<mend_api::ChaosDto>(Method::POST, &path, Some(&body))
                .await
                .map(|dto| dto.description)
                .map_err(|e| e.to_string())
        }
        FaultAction::Knob(knob) => {
            let replicas = services(client).await;
            let port = replicas
                .iter()
                .find(|s| s.name == fault.service)
                .and_then(|s| s.replicas.iter().find(|r| Some(r.index) == fault.replica.or(Some(0))))
                .and_then(|r| r.port);
            match port {
                None => Err(format!("{} has no such replica with a port", fault.service)),
                Some(port) => {
                    let knob_client = Client::new(SocketAddr::from(([127, 0, 0, 1], port)), None);
                    match knob_client.json_with_body::<serde_json::Value>(Method::POST, knob, None).await {
                        // The knobs answer text, not JSON: any 2xx is fine.
                        Ok(_) | Err(crate::client::ClientError::Other(_)) => Ok(injected.description.clone()),
                        Err(error) => Err(error.to_string()),
                    }
                }
            }
        }
        FaultAction::Run(argv) => {
            run_fault(argv, fault.duration, t0, running).await.map(|()| injected.description.clone())
        }
    };
    match result {
        Ok(description) => injected.description = description,
        Err(error) => injected.error = Some(error),
    }
    injected
}

/// A `run` fault's or the load command's process group, killed when dropped.
struct ProcessGroup(Option<nix::unistd::Pid>);

impl ProcessGroup {
    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(group) = self.0 {
            let _ = nix::sys::signal::killpg(group, signal);
        }
    }

    fn kill(&self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }

    /// Kills the group now, and not again when dropped (its id may be another's by then).
    fn kill_once(mut self) {
        self.kill();
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a `run` fault's command, in its own process group. It failed to inject if it cannot start or
/// exits unsuccessfully within [`RUN_FAILS_WITHIN`]; otherwise it is injected (a command still running may
/// later fail because mend healed what it was holding, a client cut off by a restart) and what it started
/// goes on in `running` until `limit`, then its process group is killed (a command that put a process in
/// the background and exited too), or when the game day ends.
async fn run_fault(
    argv: &[String],
    limit: Duration,
    t0: Instant,
    running: &mut tokio::task::JoinSet<()>,
) -> Result<(), String> {
    let mut child = command(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {:?}: {error}", argv[0]))?;
    let group = ProcessGroup(child.id().and_then(|pid| i32::try_from(pid).ok()).map(nix::unistd::Pid::from_raw));
    let remaining = limit.saturating_sub(RUN_FAILS_WITHIN);
    match tokio::time::timeout(RUN_FAILS_WITHIN, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            running.spawn(async move {
                tokio::time::sleep(remaining).await;
                drop(group);
            });
            return Ok(());
        }
        Ok(Ok(status)) => {
            let stderr = match child.stderr.take() {
                Some(pipe) => tokio::time::timeout(Duration::from_secs(1), bounded(pipe)).await.unwrap_or_default(),
                None => Vec::new(),
            };
            return Err(format!("{status} ({})", String::from_utf8_lossy(&stderr).trim()));
        }
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => {}
    }
    let program = argv.join(" ");
    running.spawn(async move {
        // Its error output is drained (a full pipe would stall it) and the first of it quoted if it fails.
        let pipe = child.stderr.take();
        let drain = async {
            match pipe {
                Some(pipe) => bounded(pipe).await,
                None => Vec::new(),
            }
        };
        let wait = async {
            let ended = match tokio::time::timeout(remaining, child.wait()).await {
                Ok(Ok(status)) => (!status.success()).then(|| status.to_string()),
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("stopped at its `for`".to_owned()),
            };
            // What it started ends with it, and its error output with them.
            group.kill();
            ended
        };
        let (ended, stderr) = tokio::join!(wait, tokio::time::timeout(limit + Duration::from_secs(1), drain));
        if let Some(ended) = ended {
            let stderr = stderr.map(|text| String::from_utf8_lossy(&text).trim().to_owned()).unwrap_or_default();
            let said = if stderr.is_empty() { String::new() } else { format!(" ({stderr})") };
            progress(t0.elapsed().as_secs_f64(), &format!("fault command `{program}` ended: {ended}{said}"));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests;
