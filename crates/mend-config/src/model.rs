//! Validated configuration: once built, nothing re-checks these values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use mend_types::{ReleaseName, ReleaseRole, ServiceName, Severity};

use crate::template::Template;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages), or a label such as `<example>`.
    pub source: PathBuf,
    /// The HTTP API.
    pub api: Api,
    /// Services in start order: every service comes after the services it depends on.
    pub services: Vec<Service>,
    /// Static scrape targets (`[[scrape]]`).
    pub scrapes: Vec<ScrapeTarget>,
    /// Alerting rules (`[[rule]]`).
    pub rules: Vec<Rule>,
    /// Detector attachments (`[[detect]]`).
    pub detects: Vec<Detect>,
    /// Forecasts (`[[forecast]]`).
    pub forecasts: Vec<Forecast>,
    /// Bounds of the in-memory series store (`[storage]`).
    pub storage: Storage,
    /// How mend heals (`[healing]`): mode, verify window, budgets, cooldown, `max_unavailable`.
    pub healing: crate::heal::Healing,
    /// Remediation policies (`[[heal]]`), in file order; the default policies are not listed here.
    pub heal: Vec<crate::heal::HealPolicy>,
    /// Hook commands (`[hook.NAME]`).
    pub hooks: Vec<crate::heal::Hook>,
    /// Notification targets (`[notify.NAME]`).
    pub notify: Vec<crate::heal::NotifyTarget>,
    /// `[chaos]`: the chaos monkey, if configured.
    pub chaos: crate::chaos::Chaos,
    /// How mend learns from outcomes and feedback (`[learn]`).
    pub learn: crate::learn::Learn,
    /// Distributed tracing (`[tracing]`); off without the table.
    pub tracing: crate::trace::Tracing,
    /// Prometheus remote write of the series store (`[remote_write]`); off without the table.
    pub remote_write: Option<crate::remote_write::RemoteWrite>,
    /// Coordination with other hosts through etcd (`[fleet]`); None without the table.
    pub fleet: Option<crate::fleet::Fleet>,
}

impl Config {
    /// The service called `name`, if configured.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.name.as_str() == name)
    }
}

/// `[api]`: where the HTTP API listens and the token mutating calls need.
#[derive(Debug, Clone, PartialEq)]
pub struct Api {
    /// Listen address; loopback by default.
    pub listen: SocketAddr,
    /// Bearer token required by mutating calls when set.
    pub token: Option<String>,
}

impl Api {
    /// The default listen address.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:7070";
}

/// What to do when a replica's process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit status.
    Always,
    /// Restart unless the process exited with code 0.
    OnFailure,
    /// Never restart; a liveness failure stops the replica for good.
    Never,
}

impl RestartPolicy {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

/// A signal by which a replica is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    /// Linux signal number.
    pub number: i32,
    /// Conventional name, e.g. `SIGTERM`.
    pub name: &'static str,
}

impl StopSignal {
    /// SIGTERM, the default.
    pub const TERM: Self = Self { number: 15, name: "SIGTERM" };

    /// The signals a service may choose to be stopped with.
    pub const ALLOWED: [Self; 7] = [
        Self { number: 1, name: "SIGHUP" },
        Self { number: 2, name: "SIGINT" },
        Self { number: 3, name: "SIGQUIT" },
        Self { number: 9, name: "SIGKILL" },
        Self { number: 10, name: "SIGUSR1" },
        Self { number: 12, name: "SIGUSR2" },
        Self::TERM,
    ];

    /// Parses `SIGTERM`, `TERM` or `term`.
    pub fn parse(text: &str) -> Option<Self> {
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALLOWED.into_iter().find(|signal| &signal.name[3..] == name)
    }
}

/// An inclusive range of TCP ports; replica `i` gets port `first + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// How many ports the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Always false: a valid range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The port of replica `index`, if the range is big enough.
    pub fn port_of(&self, index: u32) -> Option<u16> {
        (index < self.len()).then(|| self.first + index as u16)
    }

    /// True if the ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// True if `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

/// Restart back-off: the first restart after a stable run is immediate, then `initial`, doubling up to
/// `max`, each delay spread by ±`jitter`; a run longer than `reset_after` starts over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the second consecutive restart.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// A replica that ran this long is stable: its next crash restarts immediately again.
    pub reset_after: Duration,
    /// Relative spread of each delay, in 0..=1, so that replicas that failed together do not restart in
    /// lockstep.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
            jitter: 0.1,
        }
    }
}

/// Restart intensity: more than `max_restarts` restarts within `within` and the replica gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimit {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

impl Default for RestartLimit {
    fn default() -> Self {
        // With the default back-off, ten restarts take about a minute of crash-looping: patient with a
        // transient fault, yet a broken release escalates instead of looping forever.
        Self { max_restarts: 10, within: Duration::from_secs(300) }
    }
}

/// Where a probe looks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// HTTP GET; healthy when the status is in `status` and the body contains `body_contains`.
    Http {
        /// URL template, e.g. `http://127.0.0.1:{port}/health`.
        url: Template,
        /// Accepted status codes (inclusive).
        status: (u16, u16),
        /// Required body substring.
        body_contains: Option<String>,
    },
    /// TCP connect; healthy when the connection is accepted.
    Tcp {
        /// `host:port` template.
        address: Template,
    },
    /// Run a command (argv); healthy on exit code 0.
    Exec {
        /// argv templates.
        command: Vec<Template>,
    },
}

impl Check {
    /// `http`, `tcp` or `exec`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Tcp { .. } => "tcp",
            Self::Exec { .. } => "exec",
        }
    }
}

/// Which probe of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeRole {
    /// Failing → the replica is replaced.
    Liveness,
    /// Failing → the replica gets no traffic.
    Readiness,
    /// Holds liveness and readiness off until it first succeeds.
    Startup,
}

impl ProbeRole {
    /// `liveness`, `readiness` or `startup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
            Self::Startup => "startup",
        }
    }
}

/// A validated probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// What is checked.
    pub check: Check,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Wait before the first probe after the process starts.
    pub initial_delay: Duration,
    /// Consecutive failures that flip the probe to failing.
    pub failure_threshold: u32,
    /// Consecutive successes that flip it back to passing.
    pub success_threshold: u32,
    /// Liveness only: a replica that does not answer but keeps using CPU is busy, not hung; it is
    /// replaced only after being unresponsive for this long.
    pub busy_timeout: Duration,
}

impl Probe {
    /// Defaults of a probe in `role`, before the file's values apply.
    pub fn defaults(role: ProbeRole, check: Check) -> Self {
        match role {
            // Fast: a hung replica must be replaced within 1.5 s. Safe: a replica that is only slow keeps
            // advancing CPU time and is judged by `busy_timeout`, not by this timeout.
            ProbeRole::Liveness | ProbeRole::Readiness => Self {
                check,
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(400),
                initial_delay: Duration::ZERO,
                failure_threshold: 3,
                success_threshold: 1,
                busy_timeout: Duration::from_secs(30),
            },
            // Probed often so that readiness follows start-up closely; 300 failures at 100 ms give a slow
            // starter 30 s.
            ProbeRole::Startup => Self {
                check,
                interval: Duration::from_millis(100),
                timeout: Duration::from_secs(1),
                initial_delay: Duration::ZERO,
                failure_threshold: 300,
                success_threshold: 1,
                busy_timeout: Duration::from_secs(30),
            },
        }
    }
}

/// Per-replica log files: stdout and stderr go to one size-bounded file, rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logs {
    /// Size at which the current file is rotated.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep_files: u32,
}

impl Default for Logs {
    fn default() -> Self {
        Self { max_file_bytes: 10 * 1024 * 1024, keep_files: 3 }
    }
}

/// One validated `[service.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The service's name.
    pub name: ServiceName,
    /// argv templates; with `shell`, one string run by `/bin/sh -c`.
    pub command: Vec<Template>,
    /// Run the command through `/bin/sh -c`.
    pub shell: bool,
    /// Working directory of the processes (absolute).
    pub working_dir: PathBuf,
    /// Extra environment, templated per replica.
    pub env: Vec<(String, Template)>,
    /// Number of replicas.
    pub replicas: u32,
    /// Ports handed out to replicas by index.
    pub ports: Option<PortRange>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Signal that asks a replica to stop.
    pub stop_signal: StopSignal,
    /// Grace period after the stop signal before SIGKILL.
    pub stop_timeout: Duration,
    /// Services that must be ready before this one starts.
    pub depends_on: Vec<ServiceName>,
    /// Restart back-off.
    pub backoff: Backoff,
    /// Restart intensity.
    pub restart_limit: RestartLimit,
    /// Liveness probe.
    pub liveness: Option<Probe>,
    /// Readiness probe.
    pub readiness: Option<Probe>,
    /// Startup probe.
    pub startup: Option<Probe>,
    /// Log files.
    pub logs: Logs,
    /// Scraping of each replica's metrics.
    pub metrics: Option<Metrics>,
    /// Resident memory a replica may use; above it the replica is replaced, and mend forecasts when the
    /// limit will be reached.
    pub max_memory_bytes: Option<u64>,
    /// mend's reverse proxy in front of the ready replicas.
    pub proxy: Option<ProxySettings>,
    /// Its releases (at least the stable one), in file order.
    pub releases: Vec<ReleaseSpec>,
    /// The release that runs by default (`stable_release`; `stable` for a service without release tables).
    pub stable_release: ReleaseName,
    /// A canary release beside the stable one.
    pub canary: Option<Canary>,
    /// How mend heals this service (`[service.NAME.healing]`).
    pub healing: crate::heal::ServiceHealing,
    /// The replica count follows a metric (`[service.NAME.autoscale]`).
    pub autoscale: Option<crate::autoscale::Autoscale>,
}

/// One named release of a service (`[service.NAME.release.RELEASE]`, or the implicit `stable` release
/// that is the service's own command): what a replica runs. A replica carries its release; its index
/// says nothing about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseSpec {
    /// The release's name.
    pub name: ReleaseName,
    /// argv templates (the service's command unless the release gives its own).
    pub command: Vec<Template>,
    /// Extra environment, layered over the service's.
    pub env: Vec<(String, Template)>,
    /// Working directory (the service's unless the release gives its own).
    pub working_dir: Option<PathBuf>,
}

impl Service {
    /// Replicas of both releases as configured: the stable release's, then the canary's.
    pub fn total_replicas(&self) -> u32 {
        self.replicas + self.canary.as_ref().map_or(0, |canary| canary.replicas)
    }

    /// The release called `name`.
    pub fn release(&self, name: &ReleaseName) -> Option<&ReleaseSpec> {
        self.releases.iter().find(|release| release.name == *name)
    }

    /// The stable release (validation guarantees it exists).
    pub fn stable(&self) -> &ReleaseSpec {
        self.release(&self.stable_release).unwrap_or_else(|| &self.releases[0])
    }

    /// The part `release` plays under this config: canary if it is the configured canary's release.
    pub fn role_of(&self, release: &ReleaseName) -> ReleaseRole {
        match &self.canary {
            Some(canary) if canary.release == *release => ReleaseRole::Canary,
            _ => ReleaseRole::Stable,
        }
    }

    /// The extra environment of a replica of `release` (the release's env is layered over the service's).
    pub fn env_of(&self, release: &ReleaseSpec) -> Vec<(String, Template)> {
        let mut env = self.env.clone();
        for (key, value) in &release.env {
            env.retain(|(existing, _)| existing != key);
            env.push((key.clone(), value.clone()));
        }
        env
    }

    /// The working directory of a replica of `release`.
    pub fn working_dir_of<'a>(&'a self, release: &'a ReleaseSpec) -> &'a std::path::Path {
        release.working_dir.as_deref().unwrap_or(&self.working_dir)
    }
}

/// What the proxy speaks to the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    Http1,
    /// HTTP/2 over cleartext with prior knowledge, as gRPC servers speak.
    H2c,
}

/// Load balancing across a release's ready replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancing {
    /// Least outstanding requests, power of two random choices (the default).
    LeastRequest,
    /// Weighted round robin.
    RoundRobin,
}

/// `[service.NAME.proxy]`. Unset knobs keep the proxy's defaults (documented in `mend-proxy`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Load balancing.
    pub load_balancing: Option<LoadBalancing>,
    /// What the replicas speak (clients may speak HTTP/1.1 or h2c either way).
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// Bound on connecting to a replica.
    pub connect_timeout: Option<Duration>,
    /// Per-attempt bound on waiting for response headers while a retry is possible.
    pub attempt_timeout: Option<Duration>,
    /// Overall bound on waiting for response headers.
    pub request_timeout: Option<Duration>,
    /// Once a response has started, the longest a replica may send nothing before it is cut off.
    pub read_timeout: Option<Duration>,
    /// Idle client connections are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// Clients must send their headers within this long.
    pub header_timeout: Option<Duration>,
    /// Largest request head.
    pub max_header_bytes: Option<usize>,
    /// Largest request body.
    pub max_body_bytes: Option<u64>,
    /// Bodies up to this size are buffered for retries.
    pub retry_buffer_bytes: Option<usize>,
    /// Attempts per request, including the first.
    pub max_attempts: Option<u32>,
    /// Retries add at most this fraction of the request rate.
    pub retry_budget: Option<f64>,
    /// What a failed attempt must be to go on to another replica (`retry_on` with
    /// `retriable_status_codes`).
    pub retry_on: Option<crate::RetryOn>,
    /// Methods retried after an answer or a timeout (`retry_methods`, upper case).
    pub retry_methods: Option<Vec<String>>,
    /// Consecutive failures that eject a replica.
    pub ejection_failures: Option<u32>,
    /// First ejection's length (the n-th lasts n times as long).
    pub base_ejection: Option<Duration>,
    /// Longest ejection.
    pub max_ejection: Option<Duration>,
    /// Most replicas ejected at once, in percent (never the last one).
    pub max_ejection_percent: Option<u8>,
    /// Ramp-up window of a new or returning replica.
    pub slow_start: Option<Duration>,
    /// Bound on draining a replica before it is stopped.
    pub drain_timeout: Option<Duration>,
    /// This service's share of new traces sampled at their start, overriding `[tracing] ratio`.
    pub trace_ratio: Option<f64>,
}

/// `[service.NAME.canary]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// The release the canary runs (`release = "v2"`; `canary` for a legacy table with its own command).
    pub release: ReleaseName,
    /// Canary replicas.
    pub replicas: u32,
    /// Percentage of unpinned requests sent to the canary.
    pub weight_percent: u8,
    /// Requests with this header (name, value) always go to the canary (with another value, to stable).
    pub pin_header: Option<(String, String)>,
    /// Requests with this cookie (name, value) always go to the canary (with another value, to stable).
    pub pin_cookie: Option<(String, String)>,
}

/// `[service.NAME.metrics]`: each replica's exposition, scraped.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// URL template, e.g. `http://127.0.0.1:{port}/metrics`.
    pub url: Template,
    /// Time between scrapes.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
    /// Series one replica may create; more are dropped with an event.
    pub max_series: usize,
    /// Most samples one scrape may hold (Prometheus' `sample_limit`): a scrape with more fails whole,
    /// parsing stopped there, so that a huge exposition costs little.
    pub sample_limit: usize,
}

/// Scrape defaults shared by services and static targets.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// Series one target may create by default (a cardinality explosion stops here).
pub const DEFAULT_MAX_SERIES_PER_TARGET: usize = 10_000;
/// Samples one scrape may hold by default (`sample_limit`): node_exporter on a large host exposes a few
/// thousand; a 33 MB exposition (half a million samples) took 700 MB and starved mend (issue 20).
pub const DEFAULT_SAMPLE_LIMIT: usize = 50_000;

/// `[[scrape]]`: a target mend scrapes but does not supervise (node_exporter, say).
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeTarget {
    /// Name, used as the `job` label.
    pub name: String,
    /// The URL.
    pub url: HttpTarget,
    /// Time between scrapes.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
    /// Labels added to every sample.
    pub labels: BTreeMap<String, String>,
    /// Series the target may create.
    pub max_series: usize,
    /// Most samples one scrape may hold (see [`Metrics::sample_limit`]).
    pub sample_limit: usize,
}

/// `[[rule]]`: fires when its PromQL expression returns samples for `for_duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name (the signal's name, like Prometheus's `alert`).
    pub name: String,
    /// PromQL; every sample it returns is a pending or firing alert.
    pub expr: String,
    /// How long the condition must hold before firing.
    pub for_duration: Duration,
    /// How long a firing alert stays firing after the condition stops holding (recovery hysteresis).
    pub keep_firing_for: Duration,
    /// Severity of the signal.
    pub severity: Severity,
    /// Labels added to the signal.
    pub labels: BTreeMap<String, String>,
    /// One line for people; `{{ $value }}` and `{{ $labels.NAME }}` are filled in.
    pub summary: Option<String>,
}

/// `[[detect]]`: a streaming detector on each series an expression yields.
#[derive(Debug, Clone, PartialEq)]
pub struct Detect {
    /// Name of the attachment (the signal's name).
    pub name: String,
    /// PromQL selector or expression; one detector runs per resulting series.
    pub series: String,
    /// Registered detector name (`default`, `ewma`, `mad`, `seasonal`, `cusum`, `shift`).
    pub detector: String,
    /// Sensitivity in 0..=1 (unset: 0.2, `mend_detect::Sensitivity::ACTIONABLE`).
    pub sensitivity: f64,
    /// Severity of the signal.
    pub severity: Severity,
}

/// `[[forecast]]`: warns when a series' trend reaches `limit` within `horizon`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Name (the signal's name).
    pub name: String,
    /// PromQL selector or expression; one forecaster per resulting series.
    pub series: String,
    /// The limit the series must not reach.
    pub limit: f64,
    /// How far ahead to warn.
    pub horizon: Duration,
    /// Severity of the signal.
    pub severity: Severity,
}

/// `[storage]`: bounds of the in-memory series store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Storage {
    /// Points older than this are dropped.
    pub retention: Duration,
    /// Points kept per series.
    pub max_points_per_series: usize,
    /// Series kept in total; new series beyond it are dropped with an event.
    pub max_series: usize,
}

impl Default for Storage {
    fn default() -> Self {
        Self { retention: Duration::from_secs(3600), max_points_per_series: 1000, max_series: 100_000 }
    }
}

/// Parses a size: a plain number of bytes, or a number with a unit (`KiB`, `MiB`, `GiB`, `TiB`, `kB`,
/// `MB`, `GB`, `TB`, `B`).
pub fn parse_size(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'));
    let (number, unit) = text.split_at(split.unwrap_or(text.len()));
    let number: f64 = number.parse().map_err(|_| format!("invalid size {text:?} (e.g. \"512MiB\" or 536870912)"))?;
    let scale = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ));
        }
    };
    let size = number * scale;
    if size.is_finite() { Ok(size) } else { Err(format!("invalid size {text:?}")) }
}

impl Service {
    /// The probe in `role`, if configured.
    pub fn probe(&self, role: ProbeRole) -> Option<&Probe> {
        match role {
            ProbeRole::Liveness => self.liveness.as_ref(),
            ProbeRole::Readiness => self.readiness.as_ref(),
            ProbeRole::Startup => self.startup.as_ref(),
        }
    }

    /// The port of replica `index`, if the service has ports.
    pub fn port_of(&self, index: u32) -> Option<u16> {
        self.ports.and_then(|ports| ports.port_of(index))
    }

    /// Directory of per-replica log files under `state_dir`.
    pub fn log_dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join("logs").join(self.name.as_str())
    }
}

/// A parsed `http://host:port/path` target of an HTTP probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    /// `host[:port]` for the Host header.
    pub authority: String,
}

impl HttpTarget {
    /// Parses a rendered probe URL. Only plain `http://` is supported.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                format!("{url:?}: https probes are not supported; probe the plain HTTP port")
            } else {
                format!("{url:?}: expected an http:// URL")
            }
        })?;
        let (authority, path_and_query) = match rest.find(['/', '?']) {
            Some(idx) if rest.as_bytes()[idx] == b'/' => (&rest[..idx], rest[idx..].to_owned()),
            Some(idx) => (&rest[..idx], format!("/{}", &rest[idx..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = split_host_port(authority, 80).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(Self { host, port, path_and_query, authority: authority.to_owned() })
    }
}

/// Splits `host:port` (IPv6 in brackets); `default_port` when the port is omitted, if any.
pub fn split_host_port(address: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed '[' in IPv6 address")?;
        let port = rest[end + 1..].strip_prefix(':');
        (&rest[..end], port)
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    let port = match port {
        None if default_port != 0 => default_port,
        None => return Err("missing port".to_owned()),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("invalid port {port:?}")),
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_targets() {
        let target = HttpTarget::parse("http://127.0.0.1:9101/health?deep=1").expect("valid url");
        assert_eq!(
            target,
            HttpTarget {
                host: "127.0.0.1".into(),
                port: 9101,
                path_and_query: "/health?deep=1".into(),
                authority: "127.0.0.1:9101".into()
            }
        );
        let target = HttpTarget::parse("http://localhost").expect("valid url");
        assert_eq!((target.port, target.path_and_query.as_str()), (80, "/"));
        let target = HttpTarget::parse("http://[::1]:8080?x").expect("valid url");
        assert_eq!((target.host.as_str(), target.port, target.path_and_query.as_str()), ("::1", 8080, "/?x"));
        for bad in ["https://x/", "ftp://x", "http://:80/", "http://x:0/", "http://x:99999/"] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges_hand_out_ports_by_index() {
        let range = PortRange { first: 9101, last: 9110 };
        assert_eq!(range.len(), 10);
        assert_eq!(range.port_of(0), Some(9101));
        assert_eq!(range.port_of(9), Some(9110));
        assert_eq!(range.port_of(10), None);
        assert!(range.overlaps(&PortRange { first: 9110, last: 9200 }));
        assert!(!range.overlaps(&PortRange { first: 9111, last: 9200 }));
    }

    #[test]
    fn sizes_parse_with_iec_and_si_units() {
        assert_eq!(parse_size("512MiB"), Ok(536_870_912.0));
        assert_eq!(parse_size("1.5 GiB"), Ok(1_610_612_736.0));
        assert_eq!(parse_size("100MB"), Ok(1e8));
        assert_eq!(parse_size("4096"), Ok(4096.0));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn stop_signals_parse_with_or_without_prefix() {
        assert_eq!(StopSignal::parse("SIGTERM"), Some(StopSignal::TERM));
        assert_eq!(StopSignal::parse("quit").map(|s| s.number), Some(3));
        assert_eq!(StopSignal::parse("SIGSTOP"), None);
    }
}
