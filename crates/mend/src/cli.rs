//! Command-line parsing and the client commands. Exit codes: 0 ok, 1 failure, 2 usage; `mend status`
//! exits 3 when a replica has failed (as `systemctl is-active` does not say 0 for a failed unit).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use hyper::Method;
use mend_api::{
    ActionsResponse, EventsResponse, HealingStatus, IncidentDto, IncidentsResponse, ServiceDto, ServicesResponse,
    SignalsResponse,
};
use mend_types::{Clock, SystemClock};

use crate::client::{Client, ClientError, encode_query_value};
use crate::output;

const DEFAULT_CONFIG: &str = "mend.toml";

/// `mend status`'s exit code when a replica has failed: mend gave up on it, or it ended unsuccessfully
/// and is not restarted (LSB's "program is not running").
const EXIT_REPLICA_FAILED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "mend",
    version,
    about = "A self-healing runtime for services",
    propagate_version = true,
    after_long_help = "Exit status: 0 ok; 1 failure (mend not answering, an invalid config, a refused command); \
                       2 usage; 3 `mend status` found a failed replica.\n\
                       Environment: MEND_API and MEND_TOKEN (client commands), MEND_STATE_DIR and MEND_LOG (mend run)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground.
    Run(RunArgs),
    /// Validate config files and print every problem.
    CheckConfig {
        /// Config files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write a commented example config.
    Init {
        /// Where to write it.
        #[arg(default_value = DEFAULT_CONFIG)]
        file: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Show services and replicas; exits 3 when a replica has failed.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show lifecycle events.
    Events {
        #[command(flatten)]
        target: Target,
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
        /// Only this service's events.
        #[arg(long)]
        service: Option<String>,
        /// Only events since this time (RFC 3339) or this long ago ("10m"; a number needs a unit).
        #[arg(long, value_parser = since_arg)]
        since: Option<String>,
        /// At most this many (the newest), 1 to 10000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show recent traces from the span store (the proxies' spans and those services sent over OTLP),
    /// newest first; with a trace id, that trace's spans.
    Traces {
        #[command(flatten)]
        target: Target,
        /// Show this trace's spans (32 hex digits).
        trace_id: Option<String>,
        /// Only traces with a span of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only traces at least as slow as `[tracing] slow`.
        #[arg(long)]
        slow: bool,
        /// Only traces with an error span.
        #[arg(long)]
        errors: bool,
        /// At most this many, 1 to 1000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1_000))]
        limit: u16,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show signals: firing rules, anomalies, forecasts and external alerts.
    Signals {
        #[command(flatten)]
        target: Target,
        /// Keep printing new signals.
        #[arg(short, long)]
        follow: bool,
        /// Only conditions firing now.
        #[arg(long)]
        active: bool,
        /// Only this service's signals.
        #[arg(long)]
        service: Option<String>,
        /// Only signals since this time (RFC 3339) or this long ago ("10m"; a number needs a unit).
        #[arg(long, value_parser = since_arg)]
        since: Option<String>,
        /// At most this many (the newest), 1 to 10000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// List incidents (newest first): signals grouped with their diagnosis, state and actions.
    Incidents {
        #[command(flatten)]
        target: Target,
        /// Only incidents still open.
        #[arg(long)]
        open: bool,
        /// At most this many, 1 to 10000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one incident's timeline: its signals, transitions and actions (what, to which replica, by
    /// whom, why, when, and how it ended).
    Incident {
        #[command(flatten)]
        target: Target,
        /// The incident's id.
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write an incident's post-incident report: summary, timeline, time to detect / diagnose / recover,
    /// what was learnt, and (HTML, from a running daemon) charts of the key series around it. Without a
    /// running daemon the report is built from the state directory's store, without charts.
    Report {
        #[command(flatten)]
        target: Target,
        /// The incident's id.
        id: u64,
        /// `md` (pastes into a ticket; charts omitted) or `html` (one self-contained page with SVG charts).
        #[arg(long, value_enum, default_value_t = ReportFormatArg::Md)]
        format: ReportFormatArg,
        /// Write the report to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// State directory whose store is read when the daemon is not running [default: that of -c FILE,
        /// or of ./mend.toml].
        #[arg(long, env = "MEND_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// List healing actions (newest first).
    Actions {
        #[command(flatten)]
        target: Target,
        /// Only actions pending approval or running.
        #[arg(long)]
        open: bool,
        /// At most this many, 1 to 10000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        limit: u16,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve an action waiting for approval (approve mode): it runs now, within the guard's limits.
    Approve {
        #[command(flatten)]
        target: Target,
        /// The action's id (`mend actions --open`).
        id: u64,
    },
    /// Deny an action waiting for approval: mend stops acting on its incident (escalated).
    Deny {
        #[command(flatten)]
        target: Target,
        /// The action's id.
        id: u64,
    },
    /// Pause all automatic healing (operators' commands still run); incidents are still recorded.
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Resume automatic healing.
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Show what mend learnt: each policy action's outcomes, the order a policy tries its actions in,
    /// and each rule's and detector's sensitivity beside the configured one. `reset` forgets.
    Learn {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<LearnCommand>,
    },
    /// The fleet (`[fleet]`, through etcd) as this host sees it.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Say whether an incident was a false alarm (the rules and detectors that raised it relax, within
    /// the [learn] bounds) or correct (a run of correct ones takes a relaxation back a step).
    Feedback {
        #[command(flatten)]
        target: Target,
        /// The incident's id.
        id: u64,
        /// `false-positive` or `correct`.
        #[arg(value_enum)]
        verdict: FeedbackArg,
    },
    /// Restart a service's replicas (gracefully).
    Restart(ControlArgs),
    /// Stop a service's replicas; they stay stopped.
    Stop(ControlArgs),
    /// Start a service's replicas (also after mend gave up on them).
    Start(ControlArgs),
    /// Run this many replicas of a service (new ones start on the next ports of its range; surplus ones,
    /// highest index first, drain through the proxy and stop).
    Scale {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
        /// How many replicas.
        #[arg(value_parser = clap::value_parser!(u32).range(0..=1024))]
        replicas: u32,
        /// How long to wait for new replicas to be ready or surplus ones to stop (default: the stop
        /// timeout plus a minute).
        #[arg(long)]
        wait: Option<String>,
        /// Why (recorded in the action journal).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reload the config file (as SIGHUP): rules, detectors, forecasts and scrape targets change at once;
    /// prints what changed and what waits for the next start.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Roll a release out: start it as the canary, walk the weight steps judging it against the stable
    /// release at each, then promote it or roll it back.
    Deploy {
        #[command(flatten)]
        target: Target,
        /// The service (it needs [service.NAME.proxy] and [service.NAME.release.RELEASE]).
        name: String,
        /// The release to roll out.
        #[arg(long)]
        release: String,
        /// Weight steps in percent, increasing (promotion follows the last).
        #[arg(long, default_value = "10,50,100", value_delimiter = ',')]
        steps: Vec<i64>,
        /// Bake time of each step before it is judged.
        #[arg(long, default_value = "30s")]
        interval: String,
        /// Replicas of the canary.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
        replicas: u32,
    },
    /// A rollout: where it is, or pause, resume, abort or promote it.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Set the canary release's share of a service's traffic.
    Canary {
        #[command(flatten)]
        target: Target,
        /// The service (it needs [service.NAME.canary]).
        name: String,
        /// Percent of unpinned requests for the canary (0 takes it out of rotation, 100 sends it all).
        #[arg(long)]
        weight: u8,
    },
    /// Inject faults into a service's proxy (always expiring), or clear them.
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Run a game day: a topology under load, faults on a schedule, a report of how fast and how well
    /// mend healed (table, JSON, HTML); exits 3 when an SLO failed, 78 for an invalid scenario file.
    Gameday {
        /// The scenario file (TOML; see examples/gamedays/).
        file: PathBuf,
        /// Where NAME.json and NAME.html are written.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Print the JSON report instead of the table.
        #[arg(long)]
        json: bool,
        /// Bearer token for a running mend's API (a started one takes it from its config).
        #[arg(long, env = "MEND_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Run and score anomaly detectors on a NAB-layout corpus.
    #[command(subcommand)]
    Nab(NabCommand),
    /// Replay recorded incidents (a case directory, or a directory of them) through the series store,
    /// detectors and diagnosis at accelerated time; print the incidents found with their ranked
    /// candidate services, and AC@1, AC@3 and Avg@5 when the cases carry labels.
    Replay {
        /// A case directory (metrics.om and case.json) or a directory of case directories.
        dir: PathBuf,
        /// Config whose [[rule]], [[detect]] and [[forecast]] form the detect stage (default: the `shift`
        /// detector on every series) and whose depends_on form the dependency graph.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print one JSON line per case: id, ranking, diagnosis, detected_at (the summary goes to stderr).
        #[arg(long)]
        json: bool,
        /// Which ranking to report: mend's, or a baseline to compare it with.
        #[arg(long, value_enum, default_value = "mend")]
        ranker: crate::replay::Ranker,
        /// Skip detection and diagnose from case.json's inject_time (a figure to compare with, labelled so).
        #[arg(long)]
        told: bool,
        /// Change one of the ranking's constants, for ablations and cross-validation (docs/diagnosis.md):
        /// baseline=1h, lookback=5m, persist=2, relative_floor=0.01, anomalous_z=3. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::replay::parse_setting)]
        settings: Vec<crate::replay::Setting>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print mend's man page (roff: `mend man | man -l -`), or write one page per command into a directory.
    Man {
        /// Write mend.1 and a mend-COMMAND.1 page per command into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show services' logs: one service's as it wrote them, or several interleaved by time with their
    /// time and `service/replica`; or a service's mined templates.
    Logs {
        #[command(flatten)]
        target: Target,
        /// The services (several are interleaved by time).
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Every service, interleaved by time.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Only this replica.
        #[arg(long, short)]
        replica: Option<u32>,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Lines to show from the end.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Only lines matching this regular expression.
        #[arg(long)]
        grep: Option<String>,
        /// Only lines at this level or above (trace, debug, info, warn, error, fatal).
        #[arg(long, value_parser = level_arg)]
        level: Option<String>,
        /// Only lines since this time (RFC 3339) or this long ago (`10m`).
        #[arg(long, value_parser = since_arg)]
        since: Option<String>,
        /// Show when mend read each line.
        #[arg(long, short = 't')]
        timestamps: bool,
        /// List the service's log templates with counts, level and an example, most frequent first.
        #[arg(long, conflicts_with_all = ["all", "follow", "grep", "level", "since", "timestamps"])]
        patterns: bool,
    },
}

/// `mend learn ...`.
#[derive(Subcommand, Debug)]
enum LearnCommand {
    /// Forget what was learnt: outcomes and the orders learnt from them (about one service with
    /// `--service`), and, without `--service`, the sensitivities learnt from feedback.
    Reset {
        /// Only what concerns this service.
        #[arg(long)]
        service: Option<String>,
    },
}

/// `mend report --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ReportFormatArg {
    /// Markdown.
    Md,
    /// Self-contained HTML.
    Html,
}

/// An operator's verdict on an incident.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FeedbackArg {
    /// Nothing was wrong: the detection was a false alarm.
    FalsePositive,
    /// The detection was right.
    Correct,
}

/// `mend rollout ...`.
#[derive(Subcommand, Debug)]
enum RolloutCommand {
    /// Where the service's rollout is, its releases and their history.
    Status {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hold the current step (a failing judgement still rolls back).
    Pause {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
    },
    /// Go on from the current step.
    Resume {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
    },
    /// Roll back now.
    Abort {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
    },
    /// Promote now, without further judging.
    Promote {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
    },
}

/// `mend chaos ...`.
#[derive(Subcommand, Debug)]
enum ChaosCommand {
    /// Delay, fail or abort a share of a service's requests in its proxy, for a while.
    Proxy {
        #[command(flatten)]
        target: Target,
        /// The service (it needs [service.NAME.proxy]).
        name: String,
        /// Add this latency ("200ms").
        #[arg(long)]
        latency: Option<String>,
        /// Answer with this HTTP status instead of forwarding.
        #[arg(long)]
        status: Option<u16>,
        /// Close the connection without an answer.
        #[arg(long)]
        abort: bool,
        /// Share of requests affected, in percent.
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        /// How long the faults last (at most 1h); they always expire by themselves.
        #[arg(long = "for")]
        duration: String,
    },
    /// Remove a service's injected faults now.
    Clear {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
    },
    /// SIGKILL one replica (the lowest ready one unless --replica).
    Kill(FaultArgs),
    /// SIGSTOP one replica for a while (--for), then SIGCONT unless mend replaced it.
    Hang(FaultArgs),
    /// Burn a CPU in one replica for a while (through its /fault/cpu endpoint).
    Cpu(FaultArgs),
    /// Leak memory in one replica for a while (its /fault/leak endpoint; --mib-per-sec).
    Leak(FaultArgs),
    /// Slow a service's replies for a while (its replicas' /fault/slow, else its proxy; --delay, --percent).
    Slow(FaultArgs),
    /// Fail a service's replies for a while (its replicas' /fault/errors, else its proxy; --status, --percent).
    Errors(FaultArgs),
    /// Cut the edge CALLER → NAME for a while: NAME's proxy refuses requests from --caller.
    Partition(FaultArgs),
    /// The faults active now and what the chaos monkey last decided.
    Status {
        #[command(flatten)]
        target: Target,
    },
}

/// Arguments of a process fault (`mend chaos kill|hang|cpu|leak|slow|errors|partition`).
#[derive(clap::Args, Debug)]
struct FaultArgs {
    #[command(flatten)]
    target: Target,
    /// The service.
    name: String,
    /// The replica (per-replica faults: kill, hang, cpu, leak).
    #[arg(long)]
    replica: Option<u32>,
    /// How long it lasts (at most 10m); it always reverts by itself. A kill needs none.
    #[arg(long = "for")]
    duration: Option<String>,
    /// partition: the calling service cut off.
    #[arg(long)]
    caller: Option<String>,
    /// slow: the delay added ("500ms").
    #[arg(long)]
    delay: Option<String>,
    /// slow, errors: share of requests hit, in percent.
    #[arg(long)]
    percent: Option<f64>,
    /// errors: the status answered.
    #[arg(long)]
    status: Option<u16>,
    /// leak: MiB per second.
    #[arg(long)]
    mib_per_sec: Option<f64>,
}

/// `mend nab ...`.
#[derive(Subcommand, Debug)]
enum NabCommand {
    /// Stream every DATA/<category>/<file>.csv through a detector and write NAB's results layout.
    Run {
        /// Corpus directory (`<category>/<file>.csv`, header `timestamp,value`).
        #[arg(long)]
        data: PathBuf,
        /// Results directory: writes OUT/<detector>/<category>/<detector>_<file>.csv.
        #[arg(long)]
        out: PathBuf,
        /// Detector: default, ewma, mad, seasonal, cusum, shift or cad_ose.
        #[arg(long, default_value = "default")]
        detector: String,
        /// Sensitivity in [0, 1]: higher flags more.
        #[arg(long, default_value_t = 0.5)]
        sensitivity: f64,
    },
    /// Score results exactly as NAB does and print the three profiles' normalised scores.
    Score {
        /// Corpus directory.
        #[arg(long)]
        data: PathBuf,
        /// NAB's combined_windows.json.
        #[arg(long)]
        labels: PathBuf,
        /// Results directory (as written by `mend nab run`).
        #[arg(long)]
        results: PathBuf,
        /// Detector name (the results subdirectory).
        #[arg(long, default_value = "default")]
        detector: String,
        /// NAB's profiles.json (default: NAB's standard, reward_low_FP_rate and reward_low_FN_rate).
        #[arg(long)]
        profiles: Option<PathBuf>,
    },
}

/// Arguments of `mend run`.
#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Config file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub(crate) config: PathBuf,
    /// State directory: event store, replica logs, pid files [default: .mend/<config file stem> in the
    /// config file's directory, e.g. examples/.mend/observe for examples/observe.toml].
    #[arg(long, env = "MEND_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Log filter, e.g. "info" or "warn,mend_supervisor=debug".
    #[arg(long, env = "MEND_LOG", default_value = "info")]
    pub(crate) log: String,
}

impl RunArgs {
    /// `--state-dir` (or `MEND_STATE_DIR`), else the config file's own (see [`default_state_dir`]).
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| default_state_dir(&self.config))
    }
}

/// The state directory of a config file: `.mend/<stem>` beside it. Each config keeps its own events,
/// logs and pid files wherever mend is started from, and two configs never share them (two daemons on
/// one state directory would see each other's events, and the second is refused).
fn default_state_dir(config: &Path) -> PathBuf {
    let dir = config.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = config.file_stem().unwrap_or(std::ffi::OsStr::new("mend"));
    dir.join(".mend").join(stem)
}

/// How a client command finds the daemon.
#[derive(Args, Debug)]
struct Target {
    /// Config file whose [api] table locates the daemon (the rest of the file is not read).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// API address (overrides the config), e.g. 127.0.0.1:7070.
    #[arg(long, env = "MEND_API", global = true)]
    api: Option<String>,
    /// Bearer token for mutating calls (overrides the config).
    #[arg(long, env = "MEND_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Every host (registered or gone), its services and open incidents, the leader, whether etcd
    /// answers.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// The fleet incidents the leader declared (a service unhealthy on most hosts at once) and each
    /// host's open incidents.
    Incidents {
        #[command(flatten)]
        target: Target,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct ControlArgs {
    #[command(flatten)]
    target: Target,
    /// The service.
    name: String,
    /// Only this replica.
    #[arg(long, short)]
    replica: Option<u32>,
    /// How long to wait for each replica to act (default: its stop timeout plus a minute).
    #[arg(long)]
    wait: Option<String>,
    /// Why (recorded in the action journal and the replica's events).
    #[arg(long)]
    reason: Option<String>,
}

/// Parses the command line and runs the command.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => crate::daemon::run(args),
        Command::CheckConfig { files } => check_config(&files),
        Command::Init { file, force } => init(&file, force),
        Command::Nab(command) => nab(command),
        Command::Gameday { file, out, json, token } => {
            crate::gameday::main(&crate::gameday::Options { file, out, json, token })
        }
        Command::Replay { dir, config, json, ranker, told, settings } => {
            crate::replay::run(&crate::replay::ReplayOptions { dir, config, json, ranker, told, settings })
        }
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => return fail(&format!("cannot start: {error}")),
            };
            runtime.block_on(client_command(command))
        }
    }
}

fn fail(message: &str) -> ExitCode {
    output::error_line(&format!("error: {message}"));
    ExitCode::FAILURE
}

fn usage(message: &str) -> ExitCode {
    output::error_line(&format!("error: {message}"));
    ExitCode::from(2)
}

fn check_config(files: &[PathBuf]) -> ExitCode {
    let mut all_valid = true;
    for file in files {
        match mend_config::load(file) {
            Ok(config) => {
                let warnings = program_warnings(file, &config);
                for warning in &warnings {
                    output::error_line(warning);
                }
                let replicas: u32 = config.services.iter().map(|s| s.total_replicas()).sum();
                let warned = match warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".to_owned(),
                    n => format!(", {n} warnings"),
                };
                output::line(&format!(
                    "{}: ok ({} services, {replicas} replicas{warned})",
                    file.display(),
                    config.services.len()
                ));
            }
            Err(error) => {
                all_valid = false;
                output::error_line(&error.to_string());
            }
        }
    }
    if all_valid { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Warnings about a valid config: programs that the daemon would not find (as it looks them up: in
/// `PATH`, then next to the mend binary). Not errors: a program may be installed before mend runs.
fn program_warnings(file: &Path, config: &mend_config::Config) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let self_dir = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
    let mut warnings = Vec::new();
    for service in config.services.iter().filter(|service| !service.shell) {
        let mut checked = Vec::new();
        for release in &service.releases {
            // Where the release's command is written: the service's own (its implicit `stable` release),
            // a legacy canary table, or a release table.
            let named = ["release", release.name.as_str(), "command"];
            let implicit = release.name == service.stable_release && release.name.as_str() == "stable";
            let legacy_canary = release.name.as_str() == "canary"
                && service.canary.as_ref().is_some_and(|canary| canary.release == release.name);
            let key: Vec<&str> = if implicit {
                vec!["command"]
            } else if legacy_canary {
                vec!["canary", "command"]
            } else {
                named.to_vec()
            };
            let key = &key;
            let vars =
                mend_config::TemplateVars { port: service.port_of(0), replica: 0, service: service.name.as_str() };
            let Some(program) = release.command.first().map(|arg| arg.render(&vars)) else { continue };
            if checked.contains(&program) {
                continue;
            }
            let found = mend_supervisor::resolve_program(
                &program,
                service.working_dir_of(release),
                std::env::var_os("PATH"),
                self_dir.as_deref(),
            );
            if let Err(error) = found {
                let keys: Vec<&str> = ["service", service.name.as_str()].iter().chain(key.iter()).copied().collect();
                let (line, column) = mend_config::locate(&text, &keys).unwrap_or((1, 1));
                warnings.push(format!(
                    "{}:{line}:{column}: warning: {}: {error}; its replicas cannot start until it is installed",
                    file.display(),
                    keys.join(".")
                ));
            }
            checked.push(program);
        }
    }
    warnings
}

fn init(file: &Path, force: bool) -> ExitCode {
    if file.exists() && !force {
        return fail(&format!("{} already exists (use --force to overwrite)", file.display()));
    }
    match std::fs::write(file, mend_config::EXAMPLE_CONFIG) {
        Ok(()) => {
            output::line(&format!("wrote {}; check it with `mend check-config {}`", file.display(), file.display()));
            ExitCode::SUCCESS
        }
        Err(error) => fail(&format!("cannot write {}: {error}", file.display())),
    }
}

/// `mend completions SHELL`: the script the shell loads (see the README for where each shell looks).
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mend", &mut script);
    output::raw(&script);
    ExitCode::SUCCESS
}

/// `mend man`: mend(1) on stdout, or with `dir` a page per command (mend.1, mend-status.1, ...).
fn man(dir: Option<&Path>) -> ExitCode {
    match dir {
        Some(dir) => match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(Cli::command(), dir)) {
            Ok(()) => {
                output::line(&format!("wrote mend's man pages to {}", dir.display()));
                ExitCode::SUCCESS
            }
            Err(error) => fail(&format!("cannot write man pages to {}: {error}", dir.display())),
        },
        None => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => {
                    output::raw(&page);
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&format!("cannot render the man page: {error}")),
            }
        }
    }
}

fn nab(command: NabCommand) -> ExitCode {
    match command {
        NabCommand::Run { data, out, detector, sensitivity } => {
            let sensitivity = match mend_detect::Sensitivity::new(sensitivity) {
                Ok(sensitivity) => sensitivity,
                Err(error) => return usage(&format!("--sensitivity: {error}")),
            };
            let started = mend_types::Clock::now(&SystemClock);
            let result = mend_nab::run_corpus(&data, &out, &detector, sensitivity, |progress| {
                output::progress(progress.file_idx + 1, progress.n_files, progress.rel_path);
            });
            output::progress_done();
            match result {
                Ok(summary) => {
                    output::line(&format!(
                        "{} files, {} rows in {:.1}s -> {}",
                        summary.n_files,
                        summary.n_rows,
                        started.elapsed().as_secs_f64(),
                        summary.detector_dir.display()
                    ));
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error.to_string()),
            }
        }
        NabCommand::Score { data, labels, results, detector, profiles } => {
            let profiles = match profiles {
                Some(path) => match mend_nab::read_profiles(&path) {
                    Ok(profiles) => profiles,
                    Err(error) => return fail(&error.to_string()),
                },
                None => mend_nab::Profile::nab_profiles(),
            };
            match mend_nab::score(&data, &labels, &results, &detector, &profiles) {
                Ok(scores) => {
                    let rows: Vec<Vec<String>> = scores
                        .iter()
                        .map(|score| {
                            vec![
                                score.profile.clone(),
                                format!("{:.2}", score.normalized_score),
                                format!("{:.6}", score.threshold),
                                score.counts.tp.to_string(),
                                score.counts.fp.to_string(),
                                score.counts.fn_.to_string(),
                                score.counts.tn.to_string(),
                            ]
                        })
                        .collect();
                    output::raw(
                        output::table(&["PROFILE", "SCORE", "THRESHOLD", "TP", "FP", "FN", "TN"], &rows).as_bytes(),
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error.to_string()),
            }
        }
    }
}

/// Finds the daemon: `--api`, else the `[api]` table of `-c FILE` (or of `./mend.toml` when there is
/// one), else the default address. Only `[api]` is read: a problem elsewhere in the file (a PromQL
/// typo) is the daemon's business, not the client's.
fn client_for(target: &Target) -> Result<Client, String> {
    let needs_file = target.api.is_none() || target.token.is_none();
    let api = match &target.config {
        Some(path) => Some(mend_config::load_api(path).map_err(|error| error.to_string())?),
        None if needs_file && Path::new(DEFAULT_CONFIG).exists() => {
            Some(mend_config::load_api(Path::new(DEFAULT_CONFIG)).map_err(|error| error.to_string())?)
        }
        None => None,
    };
    let address = match &target.api {
        Some(address) => parse_api_address(address)?,
        None => match &api {
            Some(api) => api.listen,
            None => parse_api_address(mend_config::Api::DEFAULT_LISTEN)?,
        },
    };
    // A daemon listening on every interface is reached over loopback.
    let address = if address.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
    } else {
        address
    };
    let token = target.token.clone().or_else(|| api.and_then(|api| api.token));
    Ok(Client::new(address, token))
}

fn parse_api_address(text: &str) -> Result<SocketAddr, String> {
    let trimmed = text.trim().trim_start_matches("http://").trim_end_matches('/');
    trimmed.parse().map_err(|_| format!("invalid API address {text:?} (expected IP:PORT, e.g. 127.0.0.1:7070)"))
}

async fn client_command(command: Command) -> ExitCode {
    let target = match &command {
        Command::Status { target, .. }
        | Command::Events { target, .. }
        | Command::Traces { target, .. }
        | Command::Signals { target, .. }
        | Command::Chaos(
            ChaosCommand::Proxy { target, .. }
            | ChaosCommand::Clear { target, .. }
            | ChaosCommand::Status { target }
            | ChaosCommand::Kill(FaultArgs { target, .. })
            | ChaosCommand::Hang(FaultArgs { target, .. })
            | ChaosCommand::Cpu(FaultArgs { target, .. })
            | ChaosCommand::Leak(FaultArgs { target, .. })
            | ChaosCommand::Slow(FaultArgs { target, .. })
            | ChaosCommand::Errors(FaultArgs { target, .. })
            | ChaosCommand::Partition(FaultArgs { target, .. }),
        )
        | Command::Canary { target, .. }
        | Command::Deploy { target, .. }
        | Command::Rollout(
            RolloutCommand::Status { target, .. }
            | RolloutCommand::Pause { target, .. }
            | RolloutCommand::Resume { target, .. }
            | RolloutCommand::Abort { target, .. }
            | RolloutCommand::Promote { target, .. },
        )
        | Command::Logs { target, .. }
        | Command::Restart(ControlArgs { target, .. })
        | Command::Stop(ControlArgs { target, .. })
        | Command::Start(ControlArgs { target, .. })
        | Command::Reload { target }
        | Command::Incidents { target, .. }
        | Command::Incident { target, .. }
        | Command::Report { target, .. }
        | Command::Actions { target, .. }
        | Command::Approve { target, .. }
        | Command::Learn { target, .. }
        | Command::Fleet(FleetCommand::Status { target, .. } | FleetCommand::Incidents { target, .. })
        | Command::Feedback { target, .. }
        | Command::Deny { target, .. }
        | Command::Pause { target }
        | Command::Resume { target }
        | Command::Scale { target, .. } => target,
        Command::Run(_)
        | Command::CheckConfig { .. }
        | Command::Init { .. }
        | Command::Nab(_)
        | Command::Gameday { .. }
        | Command::Replay { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => {
            return usage("not a client command");
        }
    };
    let client = match client_for(target) {
        Ok(client) => client,
        Err(message) => return fail(&message),
    };
    let result = match command {
        Command::Status { json, .. } => match status(&client, json).await {
            Ok(true) => return ExitCode::from(EXIT_REPLICA_FAILED),
            Ok(false) => Ok(()),
            Err(error) => Err(error),
        },
        Command::Events { follow, service, since, limit, json, .. } => {
            events(&client, follow, service, since, usize::from(limit), json).await
        }
        Command::Traces { trace_id, service, slow, errors, limit, json, .. } => {
            crate::traces::command(&client, trace_id, service, slow, errors, usize::from(limit), json).await
        }
        Command::Signals { follow, active, service, since, limit, json, .. } => {
            signals(&client, follow, active, service, since, usize::from(limit), json).await
        }
        Command::Chaos(command) => chaos(&client, command).await,
        Command::Canary { name, weight, .. } => canary(&client, &name, weight).await,
        Command::Deploy { name, release, steps, interval, replicas, .. } => {
            deploy(&client, &name, &release, &steps, &interval, replicas).await
        }
        Command::Rollout(command) => rollout(&client, command).await,
        Command::Restart(args) => control(&client, "restart", &args).await,
        Command::Stop(args) => control(&client, "stop", &args).await,
        Command::Start(args) => control(&client, "start", &args).await,
        Command::Reload { .. } => reload(&client).await,
        Command::Scale { name, replicas, wait, reason, .. } => {
            scale(&client, &name, replicas, wait.as_deref(), reason.as_deref()).await
        }
        Command::Incidents { open, limit, json, .. } => incidents(&client, open, limit, json).await,
        Command::Incident { id, json, .. } => incident(&client, id, json).await,
        Command::Report { id, format, output, state_dir, target } => {
            let state_dir = state_dir
                .unwrap_or_else(|| default_state_dir(target.config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG))));
            report(&client, id, format, output.as_deref(), &state_dir).await
        }
        Command::Actions { open, limit, json, .. } => actions(&client, open, limit, json).await,
        Command::Approve { id, .. } => decide(&client, id, "approve").await,
        Command::Learn { json, command: None, .. } => learnt(&client, json).await,
        Command::Learn { command: Some(LearnCommand::Reset { service }), .. } => {
            forget(&client, service.as_deref()).await
        }
        Command::Feedback { id, verdict, .. } => feedback(&client, id, verdict).await,
        Command::Fleet(FleetCommand::Status { json, .. }) => fleet(&client, json, false).await,
        Command::Fleet(FleetCommand::Incidents { json, .. }) => fleet(&client, json, true).await,
        Command::Deny { id, .. } => decide(&client, id, "deny").await,
        Command::Pause { .. } => healing(&client, "pause").await,
        Command::Resume { .. } => healing(&client, "resume").await,
        Command::Logs { names, all, replica, follow, tail, grep, level, since, timestamps, patterns, .. } => {
            let filtered = grep.is_some() || level.is_some() || since.is_some();
            match names.as_slice() {
                [name] if patterns => log_patterns(&client, name, tail).await,
                _ if patterns => {
                    Err(ClientError::Other("--patterns lists the templates of one service: give one name".into()))
                }
                [name] if !all && !filtered => logs(&client, name, replica, follow, tail, timestamps).await,
                _ => {
                    let query = LogQuery { names: &names, replica, follow, tail, grep, level, since };
                    aggregate_logs(&client, query).await
                }
            }
        }
        Command::Run(_)
        | Command::CheckConfig { .. }
        | Command::Init { .. }
        | Command::Nab(_)
        | Command::Gameday { .. }
        | Command::Replay { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error.to_string()),
    }
}

/// Prints the services and their replicas; returns whether a replica has failed.
async fn status(client: &Client, json: bool) -> Result<bool, ClientError> {
    let response: ServicesResponse = client.json(Method::GET, "/api/v1/services").await?;
    if json {
        let text = serde_json::to_string_pretty(&response).map_err(|error| ClientError::Other(error.to_string()))?;
        output::line(&text);
    } else {
        output::raw(output::status_table(&response, SystemClock.wall().as_millis()).as_bytes());
    }
    Ok(response.services.iter().flat_map(|service| &service.replicas).any(|replica| replica.failed))
}

/// The `&service=...&since=...` part of a feed's query string.
fn feed_filter(service: Option<&str>, since: Option<&str>) -> (String, String) {
    let service = service.map(|s| format!("&service={}", encode_query_value(s))).unwrap_or_default();
    let since = since.map(|s| format!("&since={}", encode_query_value(s))).unwrap_or_default();
    (service, since)
}

/// What a feed command asks for.
struct FeedQuery {
    /// `/api/v1/events` or `/api/v1/signals`.
    endpoint: &'static str,
    /// Query string of the first page.
    first: String,
    /// Filter for the follow-up pages, when following.
    follow: Option<String>,
    /// Print JSON lines.
    json: bool,
}

/// A list endpoint whose items carry increasing ids (events, signals): prints the newest page, then, when
/// following, polls for what comes after it. Each answer says where to go on from (`next_after`: the
/// newest id when it was read, matching or not), so that following starts at the `--since` boundary, or
/// at the present, and never replays older history, even when nothing matched yet.
async fn feed<R, T>(
    client: &Client,
    query: FeedQuery,
    items: impl Fn(&R) -> &[T],
    next_after: impl Fn(&R) -> i64,
    line: impl Fn(&T) -> String,
) -> Result<(), ClientError>
where
    R: serde::de::DeserializeOwned,
    T: serde::Serialize,
{
    let print = |response: &R| {
        for item in items(response) {
            if query.json {
                output::line(&serde_json::to_string(item).unwrap_or_default());
            } else {
                output::line(&line(item));
            }
        }
    };
    let endpoint = query.endpoint;
    let response: R = client.json(Method::GET, &format!("{endpoint}?{}", query.first)).await?;
    print(&response);
    let Some(follow_filter) = query.follow else { return Ok(()) };
    let mut after = next_after(&response);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let response: R =
            client.json(Method::GET, &format!("{endpoint}?after={after}&limit=1000{follow_filter}")).await?;
        print(&response);
        after = after.max(next_after(&response));
    }
}

async fn events(
    client: &Client,
    follow: bool,
    service: Option<String>,
    since: Option<String>,
    limit: usize,
    json: bool,
) -> Result<(), ClientError> {
    let (service, since) = feed_filter(service.as_deref(), since.as_deref());
    let first = format!("limit={limit}{service}{since}");
    feed(
        client,
        FeedQuery { endpoint: "/api/v1/events", first, follow: follow.then_some(service), json },
        |response: &EventsResponse| &response.events[..],
        |response| response.next_after,
        output::event_line,
    )
    .await
}

async fn signals(
    client: &Client,
    follow: bool,
    active: bool,
    service: Option<String>,
    since: Option<String>,
    limit: usize,
    json: bool,
) -> Result<(), ClientError> {
    let (service, since) = feed_filter(service.as_deref(), since.as_deref());
    let first = format!("limit={limit}&active={active}{service}{since}");
    feed(
        client,
        FeedQuery { endpoint: "/api/v1/signals", first, follow: follow.then_some(service), json },
        |response: &SignalsResponse| &response.signals[..],
        |response| response.next_after,
        output::signal_line,
    )
    .await
}

async fn scale(
    client: &Client,
    name: &str,
    replicas: u32,
    wait: Option<&str>,
    reason: Option<&str>,
) -> Result<(), ClientError> {
    let mut query = Vec::new();
    if let Some(wait) = wait {
        query.push(format!("wait={}", encode_query_value(wait)));
    }
    if let Some(reason) = reason {
        query.push(format!("reason={}", encode_query_value(reason)));
    }
    let mut path = format!("/api/v1/services/{}/scale", encode_query_value(name));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let body = serde_json::json!({ "replicas": replicas });
    let service: ServiceDto = client.json_with_body(Method::POST, &path, Some(&body)).await?;
    let response = ServicesResponse { services: vec![service] };
    output::raw(output::status_table(&response, SystemClock.wall().as_millis()).as_bytes());
    Ok(())
}

async fn reload(client: &Client) -> Result<(), ClientError> {
    let answer: serde_json::Value = client.json_with_body(Method::POST, "/api/v1/reload", None).await?;
    output::line(answer["message"].as_str().unwrap_or("reloaded"));
    Ok(())
}

async fn deploy(
    client: &Client,
    name: &str,
    release: &str,
    steps: &[i64],
    interval: &str,
    replicas: u32,
) -> Result<(), ClientError> {
    let path = format!("/api/v1/services/{}/deploy", encode_query_value(name));
    let body = serde_json::json!({ "release": release, "steps": steps, "interval": interval, "replicas": replicas });
    let answer: mend_api::RolloutStatus = client.json_with_body(Method::POST, &path, Some(&body)).await?;
    print_rollout(name, &answer);
    Ok(())
}

async fn rollout(client: &Client, command: RolloutCommand) -> Result<(), ClientError> {
    let (name, verb) = match &command {
        RolloutCommand::Status { name, json, .. } => {
            let path = format!("/api/v1/services/{}/rollout", encode_query_value(name));
            if *json {
                let answer: serde_json::Value = client.json(Method::GET, &path).await?;
                output::line(&serde_json::to_string_pretty(&answer).unwrap_or_default());
            } else {
                let answer: mend_api::RolloutStatus = client.json(Method::GET, &path).await?;
                print_rollout(name, &answer);
            }
            return Ok(());
        }
        RolloutCommand::Pause { name, .. } => (name, "pause"),
        RolloutCommand::Resume { name, .. } => (name, "resume"),
        RolloutCommand::Abort { name, .. } => (name, "abort"),
        RolloutCommand::Promote { name, .. } => (name, "promote"),
    };
    let path = format!("/api/v1/services/{}/rollout/{verb}", encode_query_value(name));
    let answer: mend_api::RolloutStatus = client.json(Method::POST, &path).await?;
    output::line(&format!("{name}: {verb} asked"));
    print_rollout(name, &answer);
    Ok(())
}

fn print_rollout(name: &str, status: &mend_api::RolloutStatus) {
    let last_good = status.last_good.as_deref().unwrap_or("-");
    output::line(&format!(
        "{name}: stable {} (last good {last_good}), canary weight {}%",
        status.stable, status.weight
    ));
    if let Some(rollout) = &status.rollout {
        let steps: Vec<String> = rollout.steps.iter().map(|step| format!("{step}%")).collect();
        output::line(&format!(
            "rollout of {} over {}: {}{} at step {} of {} ({}), {}s per step",
            rollout.canary,
            rollout.stable,
            rollout.phase.as_str(),
            if rollout.paused { " (paused)" } else { "" },
            (rollout.step_idx + 1).min(rollout.steps.len()),
            rollout.steps.len(),
            steps.join(", "),
            rollout.interval_ms / 1000
        ));
        if !rollout.reason.is_empty() {
            output::line(&format!("  {}", rollout.reason));
        }
    }
    for entry in status.history.iter().take(5) {
        output::line(&format!("  {} {}: {}", entry.release, entry.change.as_str(), entry.reason));
    }
}

async fn canary(client: &Client, name: &str, weight: u8) -> Result<(), ClientError> {
    let path = format!("/api/v1/services/{}/canary", encode_query_value(name));
    let body = serde_json::json!({ "weight": weight });
    let answer: serde_json::Value = client.json_with_body(Method::POST, &path, Some(&body)).await?;
    output::line(&format!("{name}: the canary gets {}% of unpinned requests", answer["weight"]));
    Ok(())
}

async fn chaos(client: &Client, command: ChaosCommand) -> Result<(), ClientError> {
    match command {
        ChaosCommand::Proxy { name, latency, status, abort, percent, duration, .. } => {
            let body = serde_json::json!({
                "latency": latency,
                "status": status,
                "abort": abort,
                "percent": percent,
                "for": duration,
            });
            let path = format!("/api/v1/services/{}/chaos", encode_query_value(&name));
            let answer: serde_json::Value = client.json_with_body(Method::POST, &path, Some(&body)).await?;
            let mut what = Vec::new();
            if let Some(latency) = answer["latency_ms"].as_u64() {
                what.push(format!("+{latency}ms latency"));
            }
            if let Some(status) = answer["status"].as_u64() {
                what.push(format!("HTTP {status}"));
            }
            if answer["abort"] == true {
                what.push("aborted connections".to_owned());
            }
            output::line(&format!(
                "{name}: {} on {}% of requests until {}",
                what.join(", "),
                answer["percent"],
                answer["until"].as_str().unwrap_or("?")
            ));
        }
        ChaosCommand::Clear { name, .. } => {
            let path = format!("/api/v1/services/{}/chaos", encode_query_value(&name));
            let _: serde_json::Value = client.json(Method::DELETE, &path).await?;
            output::line(&format!("{name}: faults cleared"));
        }
        ChaosCommand::Status { .. } => {
            let status: mend_api::ChaosStatus = client.json(Method::GET, "/api/v1/chaos").await?;
            if status.active.is_empty() {
                output::line("no chaos active");
            }
            for fault in &status.active {
                output::line(&format!("#{} {} (by {}, until {})", fault.id, fault.description, fault.by, fault.until));
            }
            if let Some(monkey) = &status.monkey {
                let mode = if monkey.dry_run { "dry run" } else { "live" };
                let last = monkey.last.as_deref().unwrap_or("nothing yet");
                output::line(&format!("chaos monkey ({mode}): last decided {last}"));
            }
        }
        ChaosCommand::Kill(args) => process_fault(client, "kill", args).await?,
        ChaosCommand::Hang(args) => process_fault(client, "hang", args).await?,
        ChaosCommand::Cpu(args) => process_fault(client, "cpu", args).await?,
        ChaosCommand::Leak(args) => process_fault(client, "leak", args).await?,
        ChaosCommand::Slow(args) => process_fault(client, "slow", args).await?,
        ChaosCommand::Errors(args) => process_fault(client, "errors", args).await?,
        ChaosCommand::Partition(args) => process_fault(client, "partition", args).await?,
    }
    Ok(())
}

/// `POST /api/v1/services/{name}/chaos/{fault}` with the arguments given (the API checks them).
async fn process_fault(client: &Client, fault: &str, args: FaultArgs) -> Result<(), ClientError> {
    let mut body = serde_json::Map::new();
    let mut put = |key: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            body.insert(key.to_owned(), value);
        }
    };
    put("for", args.duration.map(Into::into));
    put("replica", args.replica.map(Into::into));
    put("caller", args.caller.map(Into::into));
    put("delay", args.delay.map(Into::into));
    put("percent", args.percent.map(Into::into));
    put("status", args.status.map(Into::into));
    put("mib_per_sec", args.mib_per_sec.map(Into::into));
    let path = format!("/api/v1/services/{}/chaos/{fault}", encode_query_value(&args.name));
    let body = serde_json::Value::Object(body);
    let injected: mend_api::ChaosDto = client.json_with_body(Method::POST, &path, Some(&body)).await?;
    if injected.fault == mend_types::ChaosFault::Kill {
        output::line(&format!("{}: {}", args.name, injected.description));
    } else {
        output::line(&format!("{}: {}; reverts by itself at {}", args.name, injected.description, injected.until));
    }
    Ok(())
}

async fn control(client: &Client, action: &str, args: &ControlArgs) -> Result<(), ClientError> {
    let mut query = Vec::new();
    if let Some(replica) = args.replica {
        query.push(format!("replica={replica}"));
    }
    if let Some(wait) = &args.wait {
        query.push(format!("wait={}", encode_query_value(wait)));
    }
    if let Some(reason) = &args.reason {
        query.push(format!("reason={}", encode_query_value(reason)));
    }
    let mut path = format!("/api/v1/services/{}/{action}", encode_query_value(&args.name));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let service: ServiceDto = client.json(Method::POST, &path).await?;
    let response = ServicesResponse { services: vec![service] };
    output::raw(output::status_table(&response, SystemClock.wall().as_millis()).as_bytes());
    Ok(())
}

async fn incidents(client: &Client, open: bool, limit: u16, json: bool) -> Result<(), ClientError> {
    let response: IncidentsResponse =
        client.json(Method::GET, &format!("/api/v1/incidents?limit={limit}&open={open}")).await?;
    if json {
        output::line(&serde_json::to_string_pretty(&response).map_err(|error| ClientError::Other(error.to_string()))?);
    } else {
        output::raw(output::incidents_table(&response.incidents).as_bytes());
    }
    Ok(())
}

async fn incident(client: &Client, id: u64, json: bool) -> Result<(), ClientError> {
    let incident: IncidentDto = client.json(Method::GET, &format!("/api/v1/incidents/{id}")).await?;
    if json {
        output::line(&serde_json::to_string_pretty(&incident).map_err(|error| ClientError::Other(error.to_string()))?);
    } else {
        output::raw(output::incident_timeline(&incident).as_bytes());
    }
    Ok(())
}

/// `mend report`: from the daemon (with charts), else from the store in `state_dir` (without).
async fn report(
    client: &Client,
    id: u64,
    format: ReportFormatArg,
    output_file: Option<&Path>,
    state_dir: &Path,
) -> Result<(), ClientError> {
    let (format, name) = match format {
        ReportFormatArg::Md => (mend_api::ReportFormat::Markdown, "md"),
        ReportFormatArg::Html => (mend_api::ReportFormat::Html, "html"),
    };
    let text = match client.text(&format!("/api/v1/incidents/{id}/report?format={name}")).await {
        Ok(text) => text,
        Err(ClientError::NotRunning(why)) => {
            let store_path = state_dir.join("mend.db");
            let report = tokio::task::spawn_blocking(move || crate::report::offline(&store_path, id, format, &why))
                .await
                .map_err(|error| ClientError::Other(format!("the report task failed: {error}")))?;
            report.map_err(ClientError::Other)?
        }
        Err(error) => return Err(error),
    };
    match output_file {
        Some(path) => std::fs::write(path, text.as_bytes())
            .map_err(|error| ClientError::Other(format!("cannot write {}: {error}", path.display())))?,
        None => output::raw(text.as_bytes()),
    }
    Ok(())
}

async fn actions(client: &Client, open: bool, limit: u16, json: bool) -> Result<(), ClientError> {
    let response: ActionsResponse =
        client.json(Method::GET, &format!("/api/v1/actions?limit={limit}&open={open}")).await?;
    if json {
        output::line(&serde_json::to_string_pretty(&response).map_err(|error| ClientError::Other(error.to_string()))?);
    } else {
        output::raw(output::actions_table(&response.actions).as_bytes());
    }
    Ok(())
}

async fn decide(client: &Client, id: u64, decision: &str) -> Result<(), ClientError> {
    let record: mend_types::ActionRecord =
        client.json_with_body(Method::POST, &format!("/api/v1/actions/{id}/{decision}"), None).await?;
    output::line(&output::action_line(&record));
    Ok(())
}

async fn learnt(client: &Client, json: bool) -> Result<(), ClientError> {
    let report: mend_api::LearnReport = client.json(Method::GET, "/api/v1/learn").await?;
    if json {
        output::line(&serde_json::to_string_pretty(&report).map_err(|error| ClientError::Other(error.to_string()))?);
    } else {
        output::raw(output::learn_report(&report).as_bytes());
    }
    Ok(())
}

async fn fleet(client: &Client, json: bool, incidents: bool) -> Result<(), ClientError> {
    let view: mend_fleet::FleetView = client.json(Method::GET, "/api/v1/fleet").await?;
    if json {
        output::line(&serde_json::to_string_pretty(&view).map_err(|error| ClientError::Other(error.to_string()))?);
    } else if incidents {
        output::raw(output::fleet_incidents(&view).as_bytes());
    } else {
        output::raw(output::fleet_status(&view).as_bytes());
    }
    Ok(())
}

async fn feedback(client: &Client, id: u64, verdict: FeedbackArg) -> Result<(), ClientError> {
    let verdict = match verdict {
        FeedbackArg::FalsePositive => "false_positive",
        FeedbackArg::Correct => "correct",
    };
    let body = serde_json::json!({ "verdict": verdict });
    let answer: mend_api::FeedbackAnswer =
        client.json_with_body(Method::POST, &format!("/api/v1/incidents/{id}/feedback"), Some(&body)).await?;
    output::raw(output::feedback_answer(&answer).as_bytes());
    Ok(())
}

async fn forget(client: &Client, service: Option<&str>) -> Result<(), ClientError> {
    let body = serde_json::json!({ "service": service });
    let answer: mend_api::ResetAnswer = client.json_with_body(Method::POST, "/api/v1/learn/reset", Some(&body)).await?;
    let scope = answer.service.as_ref().map(|s| format!(" about {s}")).unwrap_or_default();
    output::line(&format!("forgot{scope}: {}", answer.forgot.join(", ")));
    Ok(())
}

async fn healing(client: &Client, what: &str) -> Result<(), ClientError> {
    let status: HealingStatus = client.json_with_body(Method::POST, &format!("/api/v1/healing/{what}"), None).await?;
    let state = if status.paused { "paused: no automatic action" } else { "resumed: automatic action on" };
    output::line(&format!(
        "healing {state} (mode {}, {} open incidents, {} pending actions)",
        status.mode.as_str(),
        status.open_incidents,
        status.pending.len()
    ));
    Ok(())
}

async fn logs(
    client: &Client,
    name: &str,
    replica: Option<u32>,
    follow: bool,
    tail: usize,
    timestamps: bool,
) -> Result<(), ClientError> {
    let mut path = format!(
        "/api/v1/services/{}/logs?tail={tail}&follow={follow}&timestamps={timestamps}",
        encode_query_value(name)
    );
    if let Some(replica) = replica {
        path.push_str(&format!("&replica={replica}"));
    }
    client.stream(&path, output::raw).await
}

/// What `mend logs` asks of `GET /api/v1/logs`.
struct LogQuery<'a> {
    /// No names: every service.
    names: &'a [String],
    replica: Option<u32>,
    follow: bool,
    tail: usize,
    grep: Option<String>,
    level: Option<String>,
    since: Option<String>,
}

async fn aggregate_logs(client: &Client, query: LogQuery<'_>) -> Result<(), ClientError> {
    let mut path = format!("/api/v1/logs?tail={}&follow={}", query.tail, query.follow);
    if !query.names.is_empty() {
        path.push_str(&format!("&service={}", encode_query_value(&query.names.join(","))));
    }
    if let Some(replica) = query.replica {
        path.push_str(&format!("&replica={replica}"));
    }
    for (key, value) in [("grep", &query.grep), ("level", &query.level), ("since", &query.since)] {
        if let Some(value) = value {
            path.push_str(&format!("&{key}={}", encode_query_value(value)));
        }
    }
    client.stream(&path, output::raw).await
}

async fn log_patterns(client: &Client, name: &str, limit: usize) -> Result<(), ClientError> {
    let path = format!("/api/v1/services/{}/log-patterns?limit={limit}", encode_query_value(name));
    let response: mend_api::PatternsDto = client.json(Method::GET, &path).await?;
    output::raw(output::patterns_table(&response).as_bytes());
    Ok(())
}

/// Checks `--level` as the API will read it.
fn level_arg(text: &str) -> Result<String, String> {
    mend_logs::Level::parse_word(text)
        .map(|_| text.to_owned())
        .ok_or_else(|| format!("unknown level {text:?}: allowed trace, debug, info, warn, error, fatal"))
}

/// Checks `--since` as the API will read it (a usage error, exit 2, rather than the daemon's 400).
fn since_arg(text: &str) -> Result<String, String> {
    mend_config::parse_since(text, SystemClock.wall()).map(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_config_file_has_its_own_state_directory_beside_it() {
        let cases = [
            ("mend.toml", "./.mend/mend"),
            ("examples/observe.toml", "examples/.mend/observe"),
            ("/etc/mend/web.toml", "/etc/mend/.mend/web"),
            ("../shop", "../.mend/shop"),
        ];
        for (config, expected) in cases {
            assert_eq!(default_state_dir(Path::new(config)), PathBuf::from(expected), "{config}");
        }
        let args = |state_dir: Option<&str>| RunArgs {
            config: PathBuf::from("examples/traffic.toml"),
            state_dir: state_dir.map(PathBuf::from),
            log: "info".into(),
        };
        assert_eq!(args(None).state_dir(), PathBuf::from("examples/.mend/traffic"));
        assert_eq!(args(Some("/var/lib/mend")).state_dir(), PathBuf::from("/var/lib/mend"));
    }

    /// Each command has its own row in the README's Commands table, and each of its options is in that
    /// row; the options every client command shares (`-c`, `--api`, `--token`) are in the paragraph on
    /// client commands, which names each command that takes them.
    #[test]
    fn the_readme_lists_every_command_and_option() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("## Commands").expect("a Commands section");
        let section = &readme[start..start + readme[start..].find("\n## API").expect("the API section")];
        let rows: Vec<&str> = section.lines().filter(|line| line.starts_with("| `mend ")).collect();
        let client = section
            .split("\n\n")
            .find(|paragraph| paragraph.starts_with("Client commands ("))
            .expect("the paragraph on client commands");
        let client_commands: Vec<&str> =
            client["Client commands (".len()..client.find(')').expect("a list")].split(", ").collect();

        struct Readme<'a> {
            rows: Vec<&'a str>,
            client: &'a str,
            client_commands: Vec<&'a str>,
        }
        /// The rows whose first cell names `mend PATH` (`mend restart\|stop\|start` names three).
        fn rows_of<'a>(readme: &Readme<'a>, path: &[&str]) -> Vec<&'a str> {
            let (name, parents) = path.split_last().expect("a command");
            let parent = parents.iter().map(|parent| format!("{parent} ")).collect::<String>();
            let ends = [" ", "`", "\\|"];
            readme
                .rows
                .iter()
                .copied()
                .filter(|row| {
                    let cell = row.find("` | ").map_or(*row, |end| &row[..=end]);
                    ends.iter().any(|end| {
                        cell.starts_with(&format!("| `mend {parent}{name}{end}"))
                            || (cell.starts_with(&format!("| `mend {parent}"))
                                && cell.contains(&format!("\\|{name}{end}")))
                    })
                })
                .collect()
        }
        fn check(command: &clap::Command, path: &[&str], readme: &Readme<'_>) {
            for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
                let path = [path, &[sub.get_name()]].concat();
                let shown = format!("mend {}", path.join(" "));
                let rows = rows_of(readme, &path);
                assert!(!rows.is_empty(), "`{shown}` has no row in the README's Commands");
                for arg in sub.get_arguments().filter(|arg| !["help", "version"].contains(&arg.get_id().as_str())) {
                    if arg.is_positional() {
                        continue;
                    }
                    let long = arg.get_long().map(|long| format!("--{long}"));
                    let forms: Vec<String> = long
                        .iter()
                        .cloned()
                        .chain(
                            arg.get_short()
                                .into_iter()
                                .flat_map(|short| [" ", "]", "`"].map(|end| format!("-{short}{end}"))),
                        )
                        .collect();
                    let in_text = |text: &str| forms.iter().any(|form| text.contains(form.as_str()));
                    if arg.is_global_set() {
                        assert!(
                            in_text(readme.client),
                            "`{shown}`: {long:?} is not in the paragraph on client commands"
                        );
                        assert!(
                            readme.client_commands.contains(&path[0]),
                            "`{shown}` takes {long:?} but is not in the list of client commands"
                        );
                    } else {
                        assert!(
                            rows.iter().any(|row| in_text(row)),
                            "`{shown}`: {long:?} is not in its row of the README's Commands"
                        );
                    }
                }
                check(sub, &path, readme);
            }
        }
        check(&Cli::command(), &[], &Readme { rows, client, client_commands });
    }
}
