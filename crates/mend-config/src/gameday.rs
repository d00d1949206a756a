//! Game-day scenario files (`mend gameday FILE`): raw TOML → validated [`Scenario`], every problem with
//! file, line, column and key path, as for mend's config.
//!
//! ```toml
//! name = "crash"
//! duration = "20s"                       # the whole run, load included (at most 10m)
//! [topology]
//! config = "crash.mend.toml"             # a mend config to start (relative to this file), or
//! # api = "127.0.0.1:7070"              # a running mend's API (loopback)
//! [load]
//! url = "http://127.0.0.1:18080/"        # loopback only
//! rate = 100                             # requests per second (at most 5000)
//! concurrency = 8                        # at most 256
//! # command = ["hey", "-z", "20s", "http://127.0.0.1:18080/"]   # or an external load generator
//! [[fault]]
//! at = "5s"
//! service = "web"
//! kind = "kill"                          # a chaos fault, or "knob" (POST path to a replica), "run" (argv)
//! replica = 0
//! expect_diagnosis = "crashed"
//! [slo]
//! detect = "2s"                          # time to detect, at most
//! recover = "2s"                         # time to recover (healthy and serving), at most
//! failed_requests = 0                    # failed requests during a fault, at most
//! right_diagnosis = true                 # the expected diagnosis must be named
//! ```
//!
//! `reset = ["rm", "-f", "/tmp/flag"]` (optional) runs before the topology starts and after it stops. A
//! fault's `expect` is "recover" (the default), "escalate" (a crash loop) or "scale_out" (an overload).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mend_types::ChaosFault;
use serde::Deserialize;

use crate::error::{ConfigErrors, LineIndex};
use crate::validate::{KeyPath, Problems, duration, raw_section};

/// Longest a game day may run.
pub const MAX_GAMEDAY: Duration = Duration::from_secs(600);
/// Highest request rate of the built-in load generator.
pub const MAX_RATE: u32 = 5000;
/// Most connections of the built-in load generator.
pub const MAX_CONCURRENCY: u32 = 256;

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name (the file stem by default).
    pub name: String,
    /// The whole run.
    pub duration: Duration,
    /// What runs.
    pub topology: Topology,
    /// The traffic during the run.
    pub load: Option<Load>,
    /// Faults, in time order.
    pub faults: Vec<ScheduledFault>,
    /// Pass/fail bounds.
    pub slo: Slo,
    /// A command (argv) run before the topology starts and after it stops, to leave nothing behind
    /// (a flag file a fault wrote, say); bounded to 10 s.
    pub reset: Option<Vec<String>>,
}

/// What the scenario runs against.
#[derive(Debug, Clone, PartialEq)]
pub enum Topology {
    /// Start `mend run` on this config (absolute path), in a state directory of its own.
    Config(PathBuf),
    /// A mend already running, at this API address (loopback).
    Api(SocketAddr),
}

/// The traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// The built-in generator: GET `url` at `rate` per second over `concurrency` connections.
    Builtin {
        /// Loopback host, port and path.
        url: LoopbackUrl,
        /// Requests per second.
        rate: u32,
        /// Connections.
        concurrency: u32,
        /// A request slower than this counts as failed.
        timeout: Duration,
    },
    /// An external command (argv), run for the game day and stopped at its end.
    Command(Vec<String>),
}

/// `http://127.0.0.1:PORT/PATH` split into its address and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackUrl {
    /// Loopback address and port.
    pub address: SocketAddr,
    /// Path and query (`/` at least).
    pub path: String,
}

impl LoopbackUrl {
    /// Parses `http://HOST:PORT/PATH` whose host is a loopback address (`127.x`, `::1`, `localhost`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("{text:?}: only http:// URLs on loopback (e.g. \"http://127.0.0.1:8080/\")"))?;
        let (authority, path) = match rest.find('/') {
            Some(idx) => (&rest[..idx], &rest[idx..]),
            None => (rest, "/"),
        };
        let authority = authority.replacen("localhost", "127.0.0.1", 1);
        let address: SocketAddr = authority
            .parse()
            .map_err(|_| format!("{text:?}: the host must be a loopback IP with a port (e.g. 127.0.0.1:8080)"))?;
        if !address.ip().is_loopback() {
            return Err(format!("{text:?}: game days send traffic to loopback only"));
        }
        Ok(Self { address, path: path.to_owned() })
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// A chaos fault through mend's API.
    Chaos(ChaosFault),
    /// `POST path` to the replica's port (a fault endpoint such as mend-demo's `/fault/errors`).
    Knob(String),
    /// Run this argv (bounded to 10 s).
    Run(Vec<String>),
}

/// What the fault must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The service healthy and serving again.
    Recover,
    /// mend escalates the incident (a crash loop must not loop).
    Escalate,
    /// The service scales out (an overload): more replicas desired than at the injection, all ready.
    ScaleOut,
}

/// A fault at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    /// After the start.
    pub at: Duration,
    /// The service.
    pub service: String,
    /// What.
    pub action: FaultAction,
    /// The replica (per-replica faults and knobs).
    pub replica: Option<u32>,
    /// How long (chaos faults that last; default 10s).
    pub duration: Duration,
    /// partition: the caller cut off.
    pub caller: Option<String>,
    /// The diagnosis mend should name.
    pub expect_diagnosis: Option<String>,
    /// What mend should achieve.
    pub expect: Expect,
    /// Services that must see no action (a dependency failure's victims).
    pub untouched: Vec<String>,
    /// leak: MiB per second.
    pub mib_per_sec: Option<f64>,
}

/// Pass/fail bounds; None: not checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slo {
    /// Time to detect, at most.
    pub detect: Option<Duration>,
    /// Time to recover (or escalate), at most.
    pub recover: Option<Duration>,
    /// Failed requests during a fault, at most.
    pub failed_requests: Option<u64>,
    /// The expected diagnosis must be named.
    pub right_diagnosis: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    duration: Option<String>,
    topology: Option<RawTopology>,
    load: Option<RawLoad>,
    #[serde(default)]
    fault: Vec<RawFault>,
    slo: Option<RawSlo>,
    reset: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    config: Option<String>,
    api: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    url: Option<String>,
    rate: Option<i64>,
    concurrency: Option<i64>,
    timeout: Option<String>,
    command: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: Option<String>,
    service: Option<String>,
    kind: Option<String>,
    replica: Option<i64>,
    #[serde(rename = "for")]
    duration: Option<String>,
    caller: Option<String>,
    path: Option<String>,
    command: Option<Vec<String>>,
    expect_diagnosis: Option<String>,
    expect: Option<String>,
    #[serde(default)]
    untouched: Vec<String>,
    mib_per_sec: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    detect: Option<String>,
    recover: Option<String>,
    failed_requests: Option<i64>,
    right_diagnosis: Option<bool>,
}

/// Parses and validates scenario `text` read from `file`; relative paths resolve against `base_dir`.
pub fn parse_scenario(file: &str, text: &str, base_dir: &Path) -> Result<Scenario, ConfigErrors> {
    let lines = LineIndex::new(text);
    let root = crate::validate::parse_toml(file, text, &lines)?;
    let mut problems = Problems::new(file, text, lines, &root);
    let whole = toml::Spanned::new(0..text.len(), toml::de::DeValue::Table(root.get_ref().clone()));
    let raw: Option<RawScenario> = raw_section(&mut problems, &KeyPath::default(), &whole);
    let scenario = raw.and_then(|raw| validate(&mut problems, &raw, file, base_dir));
    let errors = problems.finish();
    match scenario {
        Some(scenario) if errors.0.is_empty() => Ok(scenario),
        _ => Err(errors),
    }
}

/// Reads and validates the scenario at `path`.
pub fn load_scenario(path: &Path) -> Result<Scenario, crate::LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| crate::LoadError::Read { path: path.to_path_buf(), source })?;
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    parse_scenario(&path.display().to_string(), &text, &base_dir).map_err(crate::LoadError::Invalid)
}

fn validate(problems: &mut Problems<'_>, raw: &RawScenario, file: &str, base_dir: &Path) -> Option<Scenario> {
    let root = KeyPath::default();
    let name = raw.name.clone().unwrap_or_else(|| {
        Path::new(file).file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default()
    });
    let total = match &raw.duration {
        None => {
            problems.add(&root, "missing required key \"duration\" (the whole run, e.g. \"30s\")");
            None
        }
        some => duration(problems, &root.key("duration"), some.as_ref(), Duration::ZERO),
    };
    if total.is_some_and(|total| total.is_zero() || total > MAX_GAMEDAY) {
        problems.add(&root.key("duration"), "between 1s and 10m");
    }
    let topology = match &raw.topology {
        None => {
            problems
                .add(&root, "missing required table [topology] (config = \"mend.toml\" or api = \"127.0.0.1:7070\")");
            None
        }
        Some(RawTopology { config: Some(config), api: None }) => Some(Topology::Config(base_dir.join(config))),
        Some(RawTopology { config: None, api: Some(api) }) => match api.parse::<SocketAddr>() {
            Ok(address) if address.ip().is_loopback() => Some(Topology::Api(address)),
            _ => {
                problems.add(
                    &root.key("topology").key("api"),
                    format!("{api:?}: a loopback IP:PORT (e.g. \"127.0.0.1:7070\")"),
                );
                None
            }
        },
        Some(_) => {
            problems.add(&root.key("topology"), "give exactly one of config (a mend config to start) or api");
            None
        }
    };
    let load = raw.load.as_ref().and_then(|raw| validate_load(problems, &root.key("load"), raw));
    let mut faults = Vec::new();
    for (idx, raw_fault) in raw.fault.iter().enumerate() {
        let path = root.key("fault").index(idx);
        if let Some(fault) = validate_fault(problems, &path, raw_fault) {
            if total.is_some_and(|total| fault.at >= total) {
                problems.add(&path.key("at"), "after the end of the run (duration)");
            }
            faults.push(fault);
        }
    }
    faults.sort_by_key(|fault| fault.at);
    let slo = raw.slo.as_ref().map_or_else(Slo::default, |raw| {
        let path = root.key("slo");
        let bound = |problems: &mut Problems<'_>, key: &str, value: &Option<String>| {
            value.as_ref().and_then(|_| duration(problems, &path.key(key), value.as_ref(), Duration::ZERO))
        };
        let failed = raw.failed_requests.and_then(|n| match u64::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                problems.add(&path.key("failed_requests"), "a count, 0 or more");
                None
            }
        });
        Slo {
            detect: bound(problems, "detect", &raw.detect),
            recover: bound(problems, "recover", &raw.recover),
            failed_requests: failed,
            right_diagnosis: raw.right_diagnosis.unwrap_or(false),
        }
    });
    // Only the built-in load's requests are seen one by one: with an external command, or none, the count
    // is always 0 and the bound could never fail.
    let builtin_load = raw.load.as_ref().is_some_and(|load| load.url.is_some());
    if slo.failed_requests.is_some() && !builtin_load {
        problems.add(
            &root.key("slo").key("failed_requests"),
            "counts the built-in load's requests: give [load] url (an external load command's are not seen)",
        );
    }
    if raw.reset.as_ref().is_some_and(|argv| argv.first().is_none_or(|program| program.trim().is_empty())) {
        problems.add(&root.key("reset"), "the command is empty: the first element names the program");
    }
    Some(Scenario { name, duration: total?, topology: topology?, load, faults, slo, reset: raw.reset.clone() })
}

fn validate_load(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawLoad) -> Option<Load> {
    if let Some(command) = &raw.command {
        if raw.url.is_some() || raw.rate.is_some() || raw.concurrency.is_some() {
            problems.add(path, "give either command (an external load generator) or url, rate and concurrency");
            return None;
        }
        if command.first().is_none_or(|program| program.trim().is_empty()) {
            problems.add(&path.key("command"), "the command is empty: the first element names the program");
            return None;
        }
        return Some(Load::Command(command.clone()));
    }
    let url = match &raw.url {
        None => {
            problems.add(path, "missing required key \"url\" (e.g. \"http://127.0.0.1:8080/\"), or give command");
            None
        }
        Some(url) => LoopbackUrl::parse(url).map_err(|message| problems.add(&path.key("url"), message)).ok(),
    };
    let rate = raw.rate.unwrap_or(50);
    if !(1..=i64::from(MAX_RATE)).contains(&rate) {
        problems.add(&path.key("rate"), format!("{rate}: between 1 and {MAX_RATE} requests per second"));
    }
    let concurrency = raw.concurrency.unwrap_or(4);
    if !(1..=i64::from(MAX_CONCURRENCY)).contains(&concurrency) {
        problems.add(&path.key("concurrency"), format!("{concurrency}: between 1 and {MAX_CONCURRENCY}"));
    }
    let timeout = duration(problems, &path.key("timeout"), raw.timeout.as_ref(), Duration::from_secs(2));
    Some(Load::Builtin {
        url: url?,
        rate: rate.clamp(1, i64::from(MAX_RATE)) as u32,
        concurrency: concurrency.clamp(1, i64::from(MAX_CONCURRENCY)) as u32,
        timeout: timeout?,
    })
}

fn validate_fault(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawFault) -> Option<ScheduledFault> {
    let at = match &raw.at {
        None => {
            problems.add(path, "missing required key \"at\" (after the start, e.g. \"5s\")");
            None
        }
        some => duration(problems, &path.key("at"), some.as_ref(), Duration::ZERO),
    };
    let service = raw.service.clone();
    if service.is_none() {
        problems.add(path, "missing required key \"service\"");
    }
    let action = match raw.kind.as_deref() {
        None => {
            problems
                .add(path, "missing required key \"kind\" (kill, hang, cpu, leak, slow, errors, partition, knob, run)");
            None
        }
        Some("knob") => match &raw.path {
            Some(knob) if knob.starts_with('/') => Some(FaultAction::Knob(knob.clone())),
            _ => {
                problems
                    .add(&path.key("path"), "a knob needs path, the endpoint to POST (e.g. \"/fault/errors?rate=1\")");
                None
            }
        },
        Some("run") => match &raw.command {
            Some(command) if command.first().is_some_and(|program| !program.trim().is_empty()) => {
                Some(FaultAction::Run(command.clone()))
            }
            _ => {
                problems.add(&path.key("command"), "run needs command, an argv array (e.g. [\"touch\", \"/tmp/x\"])");
                None
            }
        },
        Some(kind) => match kind.parse::<ChaosFault>() {
            Ok(fault) => Some(FaultAction::Chaos(fault)),
            Err(error) => {
                problems.add(&path.key("kind"), format!("{error}, knob, run"));
                None
            }
        },
    };
    let replica = raw.replica.and_then(|replica| match u32::try_from(replica) {
        Ok(replica) => Some(replica),
        Err(_) => {
            problems.add(&path.key("replica"), "a replica index, 0 or more");
            None
        }
    });
    let fault_duration = duration(problems, &path.key("for"), raw.duration.as_ref(), Duration::from_secs(10));
    if fault_duration.is_some_and(|d| d > Duration::from_secs(600)) {
        problems.add(&path.key("for"), "at most 10m");
    }
    if matches!(action, Some(FaultAction::Chaos(ChaosFault::Partition))) && raw.caller.is_none() {
        problems.add(path, "a partition needs caller, the calling service cut off");
    }
    let expect = match raw.expect.as_deref() {
        None | Some("recover") => Some(Expect::Recover),
        Some("escalate") => Some(Expect::Escalate),
        Some("scale_out") => Some(Expect::ScaleOut),
        Some(other) => {
            problems
                .add(&path.key("expect"), format!("{other:?} (expected \"recover\", \"escalate\" or \"scale_out\")"));
            None
        }
    };
    Some(ScheduledFault {
        at: at?,
        service: service?,
        action: action?,
        replica,
        duration: fault_duration?,
        caller: raw.caller.clone(),
        expect_diagnosis: raw.expect_diagnosis.clone(),
        expect: expect?,
        untouched: raw.untouched.clone(),
        mib_per_sec: raw.mib_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Scenario, String> {
        parse_scenario("day.toml", text, Path::new("/games")).map_err(|errors| errors.to_string())
    }

    const GOOD: &str = r#"
duration = "20s"
[topology]
config = "crash.mend.toml"
[load]
url = "http://localhost:18080/"
rate = 100
[[fault]]
at = "5s"
service = "web"
kind = "kill"
expect_diagnosis = "crashed"
[slo]
recover = "2s"
failed_requests = 0
"#;

    #[test]
    fn a_scenario_reads_into_types() {
        let scenario = check(GOOD).expect("valid");
        assert_eq!(scenario.name, "day");
        assert_eq!(scenario.topology, Topology::Config(PathBuf::from("/games/crash.mend.toml")));
        let Some(Load::Builtin { url, rate, concurrency, .. }) = &scenario.load else { panic!("builtin load") };
        assert_eq!(
            (url.address.to_string(), url.path.as_str(), *rate, *concurrency),
            ("127.0.0.1:18080".to_owned(), "/", 100, 4)
        );
        assert_eq!(scenario.faults[0].action, FaultAction::Chaos(ChaosFault::Kill));
        assert_eq!(scenario.slo.recover, Some(Duration::from_secs(2)));
        assert_eq!(scenario.slo.detect, None);
    }

    #[test]
    fn a_bound_on_failed_requests_needs_the_built_in_load() {
        let external = "duration = \"10s\"\n[topology]\napi = \"127.0.0.1:7070\"\n[load]\ncommand = [\"hey\", \"http://127.0.0.1:8080/\"]\n[slo]\nfailed_requests = 0\n";
        let expected = "day.toml:7:19: slo.failed_requests: counts the built-in load's requests: give [load] url (an external load command's are not seen)";
        assert_eq!(check(external).map(|_| ()), Err(expected.to_owned()));
        let none = "duration = \"10s\"\n[topology]\napi = \"127.0.0.1:7070\"\n[slo]\nfailed_requests = 0\n";
        assert!(check(none).is_err(), "no load: nothing could fail");
        assert!(check(GOOD).is_ok());
    }

    #[test]
    fn every_problem_names_file_line_and_key() {
        let text = r#"
duration = "1h"
[topology]
api = "10.0.0.1:7070"
[load]
url = "http://example.com/"
rate = 0
[[fault]]
at = "5s"
service = "web"
kind = "melt"
[[fault]]
service = "web"
kind = "knob"
expect = "pray"
[slo]
failed_requests = -1
colour = "red"
"#;
        assert_eq!(
            check(text),
            Err([
                "day.toml:2:12: duration: between 1s and 10m",
                "day.toml:4:7: topology.api: \"10.0.0.1:7070\": a loopback IP:PORT (e.g. \"127.0.0.1:7070\")",
                "day.toml:6:7: load.url: \"http://example.com/\": the host must be a loopback IP with a port (e.g. 127.0.0.1:8080)",
                "day.toml:7:8: load.rate: 0: between 1 and 5000 requests per second",
                "day.toml:11:8: fault[0].kind: unknown fault \"melt\" (expected one of: kill, hang, cpu, leak, slow, errors, partition), knob, run",
                "day.toml:12:1: fault[1]: missing required key \"at\" (after the start, e.g. \"5s\")",
                "day.toml:12:1: fault[1].path: a knob needs path, the endpoint to POST (e.g. \"/fault/errors?rate=1\")",
                "day.toml:15:10: fault[1].expect: \"pray\" (expected \"recover\", \"escalate\" or \"scale_out\")",
                "day.toml:18:1: slo.colour: unknown field `colour`, expected one of `detect`, `recover`, `failed_requests`, `right_diagnosis`",
            ]
            .join("\n"))
        );
    }
}
