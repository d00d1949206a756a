//! Raw file → validated [`Config`], gathering every problem with its location.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mend_types::{ReleaseName, ServiceName, Severity};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::duration::parse_duration;
use crate::error::{ConfigError, ConfigErrors, LineIndex};
use crate::model::{
    Api, Backoff, Canary, Check, Config, DEFAULT_MAX_SERIES_PER_TARGET, DEFAULT_SAMPLE_LIMIT, DEFAULT_SCRAPE_INTERVAL,
    Detect, Forecast, HttpTarget, LoadBalancing, Logs, Metrics, PortRange, Probe, ProbeRole, ProxySettings,
    ReleaseSpec, RestartLimit, RestartPolicy, Rule, ScrapeTarget, Service, StopSignal, Storage, UpstreamProtocol,
    parse_size, split_host_port,
};
use crate::raw::{
    FloatOrString, IntOrString, RawApi, RawCanary, RawDetect, RawForecast, RawProbe, RawProxy, RawRelease, RawRule,
    RawScrape, RawService, RawStorage, StringOrList,
};
use crate::template::{Placeholder, Template, TemplateVars};

/// Top-level keys a config file may have.
const TOP_LEVEL_KEYS: [&str; 16] = [
    "api",
    "service",
    "scrape",
    "rule",
    "detect",
    "forecast",
    "storage",
    "healing",
    "heal",
    "hook",
    "notify",
    "chaos",
    "learn",
    "tracing",
    "remote_write",
    "fleet",
];

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A key path such as `service.web.command[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Segment>);

impl KeyPath {
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// Appends the path serde_path_to_error reports inside a value deserialized at `self`.
    fn join_serde(&self, inner: &serde_path_to_error::Path) -> Self {
        let mut path = self.clone();
        for segment in inner.iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path = path.index(*index),
                serde_path_to_error::Segment::Map { key } => path = path.key(key),
                serde_path_to_error::Segment::Enum { variant } => path = path.key(variant),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        path
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (idx, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if idx > 0 {
                        f.write_char('.')?;
                    }
                    let bare =
                        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare { f.write_str(key)? } else { write!(f, "{key:?}")? }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Collects problems, locating each key path in the source.
pub(crate) struct Problems<'a> {
    file: &'a str,
    text: &'a str,
    lines: LineIndex,
    root: Option<&'a Spanned<DeTable<'a>>>,
    errors: Vec<(usize, ConfigError)>,
    /// Key paths whose values were unreadable and taken out: later problems at or under them (a missing
    /// `command`, say) would repeat the one already reported.
    dropped: Vec<String>,
}

impl<'a> Problems<'a> {
    /// Problems of `text` (read from `file`, parsed into `root`).
    pub(crate) fn new(file: &'a str, text: &'a str, lines: LineIndex, root: &'a Spanned<DeTable<'a>>) -> Self {
        Self { file, text, lines, root: Some(root), errors: Vec::new(), dropped: Vec::new() }
    }

    fn add_at(&mut self, span: Range<usize>, key: String, message: String) {
        let (line, column) = self.lines.locate(self.text, span.start);
        let error = ConfigError { file: self.file.to_owned(), line, column, key, message };
        self.errors.push((span.start, error));
    }

    /// How many problems so far (a section that added some stops there).
    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn add(&mut self, path: &KeyPath, message: impl Into<String>) {
        if self.was_dropped(path) {
            return;
        }
        let span = self.span_of(path);
        self.add_at(span, path.to_string(), message.into());
    }

    /// Whether `path` is, or is under, a key whose value was unreadable and taken out.
    fn was_dropped(&self, path: &KeyPath) -> bool {
        let key = path.to_string();
        self.dropped.iter().any(|dropped| {
            key.strip_prefix(dropped.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    /// Span of the value at `path`, or of the deepest key of the path that exists.
    fn span_of(&self, path: &KeyPath) -> Range<usize> {
        let Some(root) = self.root else { return 0..0 };
        let mut best = 0..0;
        let mut current: Option<&Spanned<DeValue<'_>>> = None;
        for segment in &path.0 {
            let next = match (segment, current) {
                (Segment::Key(key), None) => root.get_ref().get_key_value(key.as_str()),
                (Segment::Key(key), Some(value)) => {
                    value.get_ref().as_table().and_then(|table| table.get_key_value(key.as_str()))
                }
                (Segment::Index(index), Some(value)) => {
                    match value.get_ref().as_array().and_then(|array| array.get(*index)) {
                        Some(item) => {
                            best = item.span();
                            current = Some(item);
                            continue;
                        }
                        None => None,
                    }
                }
                (Segment::Index(_), None) => None,
            };
            match next {
                Some((key, value)) => {
                    best = key.span();
                    current = Some(value);
                }
                None => return best,
            }
        }
        // Point at the value itself, unless it is a table (whose span may be the whole section).
        match current {
            Some(value) if !value.get_ref().is_table() => value.span(),
            _ => best,
        }
    }

    pub(crate) fn finish(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|(offset, _)| *offset);
        ConfigErrors(self.errors.into_iter().map(|(_, error)| error).collect())
    }
}

/// Most type errors reported in one section before the rest of it is given up.
const MAX_TYPE_ERRORS_PER_SECTION: usize = 32;

/// Deserializes one raw section, reporting a type or unknown-key error at its exact location.
///
/// serde stops at the first error; so that one bad value does not hide the section's other problems, the
/// key it sits under is taken out and the section read again, until it reads. What is left is validated
/// as usual (problems at keys taken out are not reported twice: see [`Problems::add`]).
pub(crate) fn raw_section<T: DeserializeOwned>(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    value: &Spanned<DeValue<'_>>,
) -> Option<T> {
    let mut value = value.clone();
    for _ in 0..MAX_TYPE_ERRORS_PER_SECTION {
        let deserializer = ValueDeserializer::from(value.clone());
        let error = match serde_path_to_error::deserialize::<_, T>(deserializer) {
            Ok(raw) => return Some(raw),
            Err(error) => error,
        };
        let full_path = path.join_serde(error.path());
        let span = error.inner().span().unwrap_or_else(|| problems.span_of(&full_path));
        let message = error.inner().message().trim().replace('\n', " ");
        problems.add_at(span, full_path.to_string(), message);
        // The first key of the error's path within this section: the whole value under it goes.
        let first: Option<String> = error.path().iter().find_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let removed = match (first, value.get_mut()) {
            (Some(key), DeValue::Table(table)) => table.remove(key.as_str()).map(|_| key),
            _ => None,
        };
        match removed {
            Some(key) => problems.dropped.push(path.key(&key).to_string()),
            None => return None,
        }
    }
    None
}

/// Parses `text` as TOML, or says where it is not.
pub(crate) fn parse_toml<'a>(
    file: &str,
    text: &'a str,
    lines: &LineIndex,
) -> Result<Spanned<DeTable<'a>>, ConfigErrors> {
    DeTable::parse(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let (line, column) = lines.locate(text, offset);
        let mut message = format!("invalid TOML: {}", error.message().trim());
        // The parser does not say which key is repeated; its span does.
        if message.ends_with("duplicate key")
            && let Some(key) = error.span().and_then(|span| text.get(span)).map(str::trim).filter(|key| !key.is_empty())
        {
            message.push_str(&format!(" `{key}`"));
        }
        ConfigErrors(vec![ConfigError { file: file.to_owned(), line, column, key: String::new(), message }])
    })
}

/// Parses and validates the `[api]` table of `text` alone (what client commands need): problems
/// elsewhere in the file do not matter, only TOML syntax errors do.
pub(crate) fn parse_api(file: &str, text: &str) -> Result<Api, ConfigErrors> {
    let lines = LineIndex::new(text);
    let root = parse_toml(file, text, &lines)?;
    let mut problems = Problems { file, text, lines, root: Some(&root), errors: Vec::new(), dropped: Vec::new() };
    let raw_api = match root.get_ref().get("api") {
        Some(value) => raw_section(&mut problems, &KeyPath::default().key("api"), value).unwrap_or_default(),
        None => RawApi::default(),
    };
    let api = validate_api(&mut problems, &raw_api);
    let errors = problems.finish();
    match api {
        Some(api) if errors.0.is_empty() => Ok(api),
        _ => Err(errors),
    }
}

/// Parses and validates `text`, read from `file`; relative paths resolve against `base_dir`.
pub(crate) fn parse_config(file: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let lines = LineIndex::new(text);
    let root = parse_toml(file, text, &lines)?;
    let mut problems = Problems { file, text, lines, root: Some(&root), errors: Vec::new(), dropped: Vec::new() };
    let config = validate(&mut problems, &root, file, base_dir);
    let errors = problems.finish();
    match config {
        Some(config) if errors.0.is_empty() => Ok(config),
        _ => Err(errors),
    }
}

/// 1-based line and column of the value at `keys` (a path of table keys, `["service", "web", "command"]`)
/// in config `text`, or of the deepest of those keys that is there; None when `text` is not TOML.
pub(crate) fn locate(text: &str, keys: &[&str]) -> Option<(usize, usize)> {
    let root = DeTable::parse(text).ok()?;
    let path = KeyPath(keys.iter().map(|key| Segment::Key((*key).to_owned())).collect());
    let problems = Problems {
        file: "",
        text,
        lines: LineIndex::new(text),
        root: Some(&root),
        errors: Vec::new(),
        dropped: Vec::new(),
    };
    let span = problems.span_of(&path);
    Some(problems.lines.locate(text, span.start))
}

fn validate(problems: &mut Problems<'_>, root: &Spanned<DeTable<'_>>, file: &str, base_dir: &Path) -> Option<Config> {
    let mut raw_api = RawApi::default();
    let mut raw_storage = RawStorage::default();
    let mut raw_services: Vec<(String, Option<RawService>)> = Vec::new();
    let mut scrapes = Vec::new();
    let mut rules = Vec::new();
    let mut detects = Vec::new();
    let mut forecasts = Vec::new();
    let mut raw_healing = crate::heal::RawSections::default();
    let mut raw_chaos = crate::chaos::RawChaos::default();
    let mut raw_learn: Option<crate::learn::RawLearn> = None;
    let mut raw_tracing: Option<crate::trace::RawTracing> = None;
    let mut raw_remote_write: Option<crate::remote_write::RawRemoteWrite> = None;
    let mut raw_fleet: Option<crate::fleet::RawFleet> = None;
    for (key, value) in root.get_ref() {
        let key = key.get_ref().as_ref();
        let path = KeyPath::default().key(key);
        match key {
            "api" => raw_api = raw_section(problems, &path, value).unwrap_or_default(),
            "storage" => raw_storage = raw_section(problems, &path, value).unwrap_or_default(),
            "chaos" => raw_chaos = raw_section(problems, &path, value).unwrap_or_default(),
            "healing" | "heal" | "hook" | "notify" => raw_healing.read(problems, key, &path, value),
            "learn" => raw_learn = raw_section(problems, &path, value),
            "tracing" => raw_tracing = raw_section(problems, &path, value),
            "remote_write" => raw_remote_write = raw_section(problems, &path, value),
            "fleet" => raw_fleet = raw_section(problems, &path, value),
            "scrape" | "rule" | "detect" | "forecast" => {
                let Some(items) = value.get_ref().as_array() else {
                    problems.add(&path, format!("expected an array of tables: write [[{key}]]"));
                    continue;
                };
                for (idx, item) in items.iter().enumerate() {
                    let item_path = path.index(idx);
                    match key {
                        "scrape" => {
                            if let Some(raw) = raw_section::<RawScrape>(problems, &item_path, item) {
                                scrapes.extend(validate_scrape(problems, &item_path, &raw));
                            }
                        }
                        "rule" => {
                            if let Some(raw) = raw_section::<RawRule>(problems, &item_path, item) {
                                rules.extend(validate_rule(problems, &item_path, &raw));
                            }
                        }
                        "detect" => {
                            if let Some(raw) = raw_section::<RawDetect>(problems, &item_path, item) {
                                detects.extend(validate_detect(problems, &item_path, &raw));
                            }
                        }
                        _ => {
                            if let Some(raw) = raw_section::<RawForecast>(problems, &item_path, item) {
                                forecasts.extend(validate_forecast(problems, &item_path, &raw));
                            }
                        }
                    }
                }
            }
            "service" => match value.get_ref().as_table() {
                Some(table) => {
                    for (name, service) in table {
                        let name = name.get_ref().to_string();
                        let raw = raw_section::<RawService>(problems, &path.key(&name), service);
                        raw_services.push((name, raw));
                    }
                }
                None => problems.add(&path, "expected tables like [service.NAME]"),
            },
            other => {
                problems.add(&path, format!("unknown key {other:?} (expected one of: {})", TOP_LEVEL_KEYS.join(", ")))
            }
        }
    }

    let api = validate_api(problems, &raw_api);
    let mut services = Vec::new();
    for (name, raw) in &raw_services {
        let path = KeyPath::default().key("service").key(name);
        let service_name = match ServiceName::new(name) {
            Ok(service_name) => Some(service_name),
            Err(error) => {
                problems.add(&path, format!("{error}"));
                None
            }
        };
        if let (Some(service_name), Some(raw)) = (service_name, raw)
            && let Some(service) = validate_service(problems, &path, service_name, raw, base_dir)
        {
            services.push(service);
        }
    }
    check_dependencies(problems, &raw_services, &services);
    check_ports(problems, &api, &services);
    // Among the services that are valid so far: a cycle is reported even when another service is broken.
    let services = start_order(problems, services);
    unique_names(problems, "scrape", scrapes.iter().map(|s| s.name.as_str()));
    unique_names(problems, "rule", rules.iter().map(|r| r.name.as_str()));
    unique_names(problems, "detect", detects.iter().map(|d| d.name.as_str()));
    unique_names(problems, "forecast", forecasts.iter().map(|f| f.name.as_str()));
    let storage = validate_storage(problems, &raw_storage);
    let names = crate::heal::Names {
        // The built-in rule is a rule to policies, as a `[[rule]]` is.
        rules: rules
            .iter()
            .map(|r: &Rule| r.name.clone())
            .chain(std::iter::once(mend_types::SERVICE_ERRORS_RULE.to_owned()))
            .collect(),
        detects: detects.iter().map(|d: &Detect| d.name.clone()).collect(),
        forecasts: forecasts.iter().map(|f: &Forecast| f.name.clone()).collect(),
        services: raw_services.iter().map(|(name, _)| name.clone()).collect(),
    };
    let healing = crate::heal::validate(problems, &raw_healing, &names);
    let chaos = crate::chaos::validate(problems, &raw_chaos, &names.services);
    let learn = crate::learn::validate(problems, raw_learn.as_ref());
    let tracing = crate::trace::validate(problems, raw_tracing.as_ref());
    let remote_write = crate::remote_write::validate(problems, raw_remote_write.as_ref(), base_dir);
    let fleet = crate::fleet::validate(problems, raw_fleet.as_ref(), base_dir);
    Some(Config {
        source: PathBuf::from(file),
        api: api?,
        services: services?,
        scrapes,
        rules,
        detects,
        forecasts,
        storage: storage?,
        healing: healing.healing,
        heal: healing.policies,
        hooks: healing.hooks,
        notify: healing.notify,
        chaos,
        learn,
        tracing,
        remote_write,
        fleet,
    })
}

fn validate_api(problems: &mut Problems<'_>, raw: &RawApi) -> Option<Api> {
    let path = KeyPath::default().key("api");
    let listen_text = raw.listen.as_deref().unwrap_or(Api::DEFAULT_LISTEN);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(listen) => Some(listen),
        Err(_) => {
            problems.add(
                &path.key("listen"),
                format!("invalid address {listen_text:?} (expected IP:PORT, e.g. \"127.0.0.1:7070\")"),
            );
            None
        }
    };
    let token = raw.token.clone();
    if let Some(token) = &token
        && (token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()))
    {
        problems.add(
            &path.key("token"),
            "the token must be non-empty visible ASCII (letters, digits, punctuation; no spaces or other characters): clients send it in an HTTP header",
        );
    }
    if let Some(listen) = listen
        && listen.port() == 0
    {
        problems.add(
            &path.key("listen"),
            format!(
                "port 0 would pick a random port that the CLI cannot find: give a port (e.g. \"{}:7070\")",
                listen.ip()
            ),
        );
    }
    if let Some(listen) = listen
        && !listen.ip().is_loopback()
        && token.is_none()
    {
        problems.add(
                &path.key("listen"),
                format!("refusing to serve the API on non-loopback address {listen} without api.token: set a token or listen on 127.0.0.1"),
            );
    }
    Some(Api { listen: listen?, token })
}

/// Reads a duration value at `path`, or `default` when absent.
pub(crate) fn duration(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    value: Option<&String>,
    default: Duration,
) -> Option<Duration> {
    match value {
        None => Some(default),
        Some(text) => match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                problems.add(path, message);
                None
            }
        },
    }
}

/// Reads an integer in `range` at `path`, or `default` when absent.
pub(crate) fn integer(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    value: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
) -> Option<i64> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Some(value)
    } else {
        problems.add(path, format!("{value} is out of range (allowed: {} to {})", range.start(), range.end()));
        None
    }
}

fn template(problems: &mut Problems<'_>, path: &KeyPath, source: &str) -> Option<Template> {
    match Template::parse(source) {
        Ok(template) => Some(template),
        Err(message) => {
            problems.add(path, message);
            None
        }
    }
}

fn validate_service(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    name: ServiceName,
    raw: &RawService,
    base_dir: &Path,
) -> Option<Service> {
    let errors_before = problems.errors.len();
    let shell = raw.shell.unwrap_or(false);
    let command_path = path.key("command");
    // With release tables that each give a command, the service's own command may be left out.
    let releases_bring_commands = raw
        .release
        .as_ref()
        .is_some_and(|releases| !releases.is_empty() && releases.values().all(|r| r.command.is_some()));
    let mut command = if raw.command.is_none() && releases_bring_commands {
        Vec::new()
    } else {
        command(problems, path, raw.command.as_ref(), shell)
    };
    let working_dir = match &raw.working_dir {
        None => base_dir.to_path_buf(),
        Some(dir) if dir.is_empty() => {
            problems.add(&path.key("working_dir"), "the working directory is empty");
            base_dir.to_path_buf()
        }
        Some(dir) => {
            spawnable(problems, &path.key("working_dir"), dir);
            base_dir.join(dir)
        }
    };

    let env = env(problems, path, raw.env.as_ref());
    spawn_size(problems, path, raw.command.as_ref(), raw.env.as_ref());

    let replicas = integer(problems, &path.key("replicas"), raw.replicas, 0..=1024, 1).map(|n| n as u32);
    let ports = raw.ports.as_ref().and_then(|ports| port_range(problems, &path.key("ports"), ports));
    let proxy = raw.proxy.as_ref().and_then(|proxy| validate_proxy(problems, &path.key("proxy"), proxy));
    let (releases, stable_release, canary) = validate_releases(problems, path, raw, &command, shell, base_dir);
    if command.is_empty()
        && let Some(stable) = releases.iter().find(|release| Some(&release.name) == stable_release.as_ref())
    {
        command = stable.command.clone();
    }
    if raw.canary.is_some() && raw.proxy.is_none() {
        problems.add(&path.key("canary"), "a canary needs [service.NAME.proxy]: the proxy is what splits the traffic");
    }
    let canary_replicas = canary.as_ref().map_or(0, |c| c.replicas);
    if let (Some(stable), Some(ports)) = (replicas, ports)
        && stable + canary_replicas > ports.len()
    {
        let total = stable + canary_replicas;
        let who = if canary_replicas > 0 {
            format!("{stable} stable and {canary_replicas} canary replicas need {total} ports")
        } else {
            format!("{total} replicas need {total} ports")
        };
        problems.add(&path.key("replicas"), format!("{who} but ports = \"{ports}\" holds only {}", ports.len()));
    }

    let restart = match raw.restart.as_deref() {
        None | Some("always") => Some(RestartPolicy::Always),
        Some("on-failure") => Some(RestartPolicy::OnFailure),
        Some("never") => Some(RestartPolicy::Never),
        Some(other) => {
            problems.add(
                &path.key("restart"),
                format!("unknown restart policy {other:?} (allowed: \"always\", \"on-failure\", \"never\")"),
            );
            None
        }
    };
    let stop_signal = match raw.stop_signal.as_deref() {
        None => Some(StopSignal::TERM),
        Some(text) => {
            let signal = StopSignal::parse(text);
            if signal.is_none() {
                let allowed: Vec<&str> = StopSignal::ALLOWED.iter().map(|s| s.name).collect();
                problems.add(
                    &path.key("stop_signal"),
                    format!("unknown stop signal {text:?} (allowed: {})", allowed.join(", ")),
                );
            }
            signal
        }
    };
    let stop_timeout =
        duration(problems, &path.key("stop_timeout"), raw.stop_timeout.as_ref(), Duration::from_secs(10));

    let mut depends_on = Vec::new();
    for (idx, dependency) in raw.depends_on.iter().flatten().enumerate() {
        match ServiceName::new(dependency) {
            Ok(dependency) if dependency == name => {
                problems.add(&path.key("depends_on").index(idx), "a service cannot depend on itself");
            }
            Ok(dependency) => depends_on.push(dependency),
            Err(error) => problems.add(&path.key("depends_on").index(idx), error.to_string()),
        }
    }

    let backoff = validate_backoff(problems, path, raw);
    let restart_limit = validate_restart_limit(problems, path, raw);
    let liveness =
        raw.liveness.as_ref().and_then(|p| validate_probe(problems, &path.key("liveness"), ProbeRole::Liveness, p));
    let readiness =
        raw.readiness.as_ref().and_then(|p| validate_probe(problems, &path.key("readiness"), ProbeRole::Readiness, p));
    let startup =
        raw.startup.as_ref().and_then(|p| validate_probe(problems, &path.key("startup"), ProbeRole::Startup, p));
    let logs = validate_logs(problems, path, raw);
    let metrics = raw.metrics.as_ref().and_then(|metrics| {
        let metrics_path = path.key("metrics");
        let Some(url) = &metrics.scrape else {
            problems.add(&metrics_path, "missing key \"scrape\" (e.g. scrape = \"http://127.0.0.1:{port}/metrics\")");
            return None;
        };
        let url = template(problems, &metrics_path.key("scrape"), url)?;
        let sample_vars = TemplateVars { port: Some(1), replica: 0, service: "service" };
        if let Err(message) = HttpTarget::parse(&url.render(&sample_vars)) {
            problems.add(&metrics_path.key("scrape"), message);
        }
        let (interval, timeout) =
            scrape_timing(problems, &metrics_path, metrics.interval.as_ref(), metrics.timeout.as_ref())?;
        let max_series = max_series(problems, &metrics_path, metrics.max_series);
        let sample_limit = sample_limit(problems, &metrics_path, metrics.sample_limit);
        Some(Metrics { url, interval, timeout, max_series: max_series?, sample_limit: sample_limit? })
    });
    let mut healing =
        crate::heal::validate_service(problems, &path.key("healing"), raw.healing.as_ref(), replicas, ports);
    let autoscale = raw
        .autoscale
        .as_ref()
        .and_then(|autoscale| crate::autoscale::validate(problems, &path.key("autoscale"), autoscale, replicas, ports));
    if let (Some(healing), Some(autoscale)) = (&mut healing, &autoscale) {
        // `scale ±N` in a policy stays within the autoscaler's bounds.
        healing.min_replicas = healing.min_replicas.max(autoscale.min);
        healing.max_replicas = healing.max_replicas.min(autoscale.max);
    }
    let max_memory_bytes = match &raw.max_memory_bytes {
        None => None,
        Some(value) => {
            let parsed = match value {
                IntOrString::Int(bytes) => Ok(*bytes as f64),
                IntOrString::String(text) => parse_size(text),
            };
            match parsed {
                Ok(bytes) if bytes >= 1_048_576.0 => Some(bytes as u64),
                Ok(_) => {
                    problems.add(&path.key("max_memory_bytes"), "the limit must be at least 1MiB");
                    None
                }
                Err(message) => {
                    problems.add(&path.key("max_memory_bytes"), message);
                    None
                }
            }
        }
    };

    // {port} needs ports; check every template of the service, command and probes alike.
    if ports.is_none() && raw.ports.is_none() {
        let mut uses_port: Vec<KeyPath> = Vec::new();
        for (idx, arg) in command.iter().enumerate() {
            if arg.uses(Placeholder::Port) {
                uses_port.push(if raw.command.as_ref().is_some_and(|c| matches!(c, StringOrList::List(_))) {
                    command_path.index(idx)
                } else {
                    command_path.clone()
                });
            }
        }
        for (key, value) in &env {
            if value.uses(Placeholder::Port) {
                uses_port.push(path.key("env").key(key));
            }
        }
        for (role, probe) in
            [(ProbeRole::Liveness, &liveness), (ProbeRole::Readiness, &readiness), (ProbeRole::Startup, &startup)]
        {
            if probe.as_ref().is_some_and(|p| check_templates(&p.check).iter().any(|t| t.uses(Placeholder::Port))) {
                let kind = probe.as_ref().map_or("", |p| p.check.kind_name());
                uses_port.push(path.key(role.as_str()).key(kind));
            }
        }
        for used_at in uses_port {
            problems.add(&used_at, "uses {port} but the service has no ports (add e.g. ports = \"9101-9110\")");
        }
    }

    if problems.errors.len() > errors_before {
        return None;
    }
    Some(Service {
        name,
        command,
        shell,
        working_dir,
        env,
        replicas: replicas?,
        ports,
        restart: restart?,
        stop_signal: stop_signal?,
        stop_timeout: stop_timeout?,
        depends_on,
        backoff: backoff?,
        restart_limit: restart_limit?,
        liveness,
        readiness,
        startup,
        logs: logs?,
        metrics,
        max_memory_bytes,
        proxy,
        releases,
        stable_release: stable_release?,
        canary,
        healing: healing?,
        autoscale,
    })
}

/// The releases of a service, which one is stable, and its canary.
///
/// Without `[service.NAME.release.*]` tables the service has one release, `stable`, its own command. A
/// legacy `[service.NAME.canary]` with its own `command`/`env` (no `release` key) is kept working as a
/// release named `canary`: existing files need no change, and the release is a release like any other
/// once validated.
fn validate_releases(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    raw: &RawService,
    service_command: &[Template],
    shell: bool,
    base_dir: &Path,
) -> (Vec<ReleaseSpec>, Option<ReleaseName>, Option<Canary>) {
    let mut releases = Vec::new();
    let tables = raw.release.as_ref().filter(|tables| !tables.is_empty());
    for (name, raw_release) in tables.into_iter().flatten() {
        let release_path = path.key("release").key(name);
        let name = match ReleaseName::new(name) {
            Ok(name) => name,
            Err(invalid) => {
                problems.add(&release_path, format!("invalid release name {:?}: {}", invalid.name, invalid.reason));
                continue;
            }
        };
        if let Some(release) =
            validate_release(problems, &release_path, name, raw_release, service_command, shell, base_dir)
        {
            releases.push(release);
        }
    }
    let stable = match (&raw.stable_release, tables) {
        (None, None) => {
            releases.push(ReleaseSpec {
                name: ReleaseName::implicit_stable(),
                command: service_command.to_vec(),
                env: Vec::new(),
                working_dir: None,
            });
            Some(ReleaseName::implicit_stable())
        }
        (Some(_), None) => {
            problems.add(
                &path.key("stable_release"),
                "names a release but the service has none: add [service.NAME.release.RELEASE] tables",
            );
            None
        }
        (None, Some(tables)) if tables.len() == 1 => releases.first().map(|release| release.name.clone()),
        (None, Some(tables)) => {
            let names: Vec<&str> = tables.keys().map(String::as_str).collect();
            problems.add(
                path,
                format!(
                    "the service has {} releases ({}): say which one runs by default with stable_release = {:?}",
                    names.len(),
                    names.join(", "),
                    releases.first().map_or(names[0], |release| release.name.as_str())
                ),
            );
            None
        }
        (Some(name), Some(tables)) => {
            if tables.contains_key(name) {
                ReleaseName::new(name).ok()
            } else {
                let names: Vec<&str> = tables.keys().map(String::as_str).collect();
                problems.add(
                    &path.key("stable_release"),
                    format!("no release {name:?}: the service has {}", names.join(", ")),
                );
                None
            }
        }
    };
    let canary = raw.canary.as_ref().and_then(|raw_canary| {
        let canary_path = path.key("canary");
        let release = match &raw_canary.release {
            Some(name) => {
                if raw_canary.command.is_some() || raw_canary.env.is_some() {
                    problems.add(
                        &canary_path,
                        format!(
                            "a canary that names its release takes the release's command and env: move them to [service.NAME.release.{name}]"
                        ),
                    );
                }
                if !tables.is_some_and(|tables| tables.contains_key(name)) {
                    problems.add(
                        &canary_path.key("release"),
                        format!("no release {name:?}: add [service.NAME.release.{name}] with its command"),
                    );
                    return None;
                }
                let name = ReleaseName::new(name).ok()?;
                if Some(&name) == stable.as_ref() {
                    problems.add(
                        &canary_path.key("release"),
                        format!("{name:?} is the stable release: a canary runs another release"),
                    );
                    return None;
                }
                name
            }
            None => {
                // Legacy form: the canary brings its own command and env, as a release named `canary`.
                let name = ReleaseName::new("canary").ok()?;
                if tables.is_some_and(|tables| tables.contains_key("canary")) {
                    problems.add(
                        &canary_path,
                        "a release is already called \"canary\": name the canary's release with release = \"canary\" and move its command there",
                    );
                    return None;
                }
                let command = match &raw_canary.command {
                    None => service_command.to_vec(),
                    Some(raw_command) => command(problems, &canary_path, Some(raw_command), shell),
                };
                let env = env(problems, &canary_path, raw_canary.env.as_ref());
                releases.push(ReleaseSpec { name: name.clone(), command, env, working_dir: None });
                name
            }
        };
        validate_canary(problems, &canary_path, raw_canary, release)
    });
    (releases, stable, canary)
}

fn validate_release(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    name: ReleaseName,
    raw: &RawRelease,
    service_command: &[Template],
    shell: bool,
    base_dir: &Path,
) -> Option<ReleaseSpec> {
    let errors_before = problems.errors.len();
    let command = match (&raw.command, &raw.args) {
        (Some(_), Some(_)) => {
            problems.add(
                &path.key("args"),
                "give either command (the whole argv) or args (appended to the service's command), not both",
            );
            Vec::new()
        }
        (Some(raw_command), None) => command(problems, path, Some(raw_command), shell),
        (None, Some(args)) => {
            if shell {
                problems
                    .add(&path.key("args"), "with shell = true, give the release's whole command string as command");
            }
            let mut argv = service_command.to_vec();
            for (idx, arg) in args.iter().enumerate() {
                let arg_path = path.key("args").index(idx);
                spawnable(problems, &arg_path, arg);
                argv.extend(template(problems, &arg_path, arg));
            }
            argv
        }
        (None, None) => service_command.to_vec(),
    };
    let env = env(problems, path, raw.env.as_ref());
    spawn_size(problems, path, raw.command.as_ref(), raw.env.as_ref());
    let working_dir = match &raw.working_dir {
        None => None,
        Some(dir) if dir.is_empty() => {
            problems.add(&path.key("working_dir"), "the working directory is empty");
            None
        }
        Some(dir) => {
            spawnable(problems, &path.key("working_dir"), dir);
            Some(base_dir.join(dir))
        }
    };
    if problems.errors.len() > errors_before {
        return None;
    }
    Some(ReleaseSpec { name, command, env, working_dir })
}

/// Interval and timeout of a scrape: the timeout defaults to the interval, at most 10 s, and may not
/// exceed it (a scrape must end before the next one starts).
fn scrape_timing(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    interval: Option<&String>,
    timeout: Option<&String>,
) -> Option<(Duration, Duration)> {
    let interval = duration(problems, &path.key("interval"), interval, DEFAULT_SCRAPE_INTERVAL)?;
    if interval < Duration::from_millis(100) {
        problems.add(&path.key("interval"), "the interval must be at least 100ms");
        return None;
    }
    let timeout = duration(problems, &path.key("timeout"), timeout, interval.min(Duration::from_secs(10)))?;
    if timeout.is_zero() || timeout > interval {
        problems.add(&path.key("timeout"), "the timeout must be longer than 0s and at most the interval");
        return None;
    }
    Some((interval, timeout))
}

fn sample_limit(problems: &mut Problems<'_>, path: &KeyPath, value: Option<i64>) -> Option<usize> {
    integer(problems, &path.key("sample_limit"), value, 1..=1_000_000, DEFAULT_SAMPLE_LIMIT as i64).map(|n| n as usize)
}

fn max_series(problems: &mut Problems<'_>, path: &KeyPath, value: Option<i64>) -> Option<usize> {
    integer(problems, &path.key("max_series"), value, 1..=10_000_000, DEFAULT_MAX_SERIES_PER_TARGET as i64)
        .map(|n| n as usize)
}

fn required<'a>(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    key: &str,
    value: Option<&'a String>,
    example: &str,
) -> Option<&'a str> {
    match value.map(|v| v.trim()) {
        Some(value) if !value.is_empty() => Some(value),
        Some(_) => {
            problems.add(&path.key(key), format!("{key} is empty"));
            None
        }
        None => {
            problems.add(path, format!("missing key {key:?} (e.g. {key} = {example})"));
            None
        }
    }
}

fn valid_label_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn labels(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    raw: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (name, value) in raw.into_iter().flatten() {
        if !valid_label_name(name) || name.starts_with("__") {
            problems.add(
                &path.key("labels").key(name),
                format!("invalid label name {name:?} (letters, digits and '_', not starting with a digit or \"__\")"),
            );
        } else {
            labels.insert(name.clone(), value.clone());
        }
    }
    labels
}

fn severity(problems: &mut Problems<'_>, path: &KeyPath, raw: Option<&String>) -> Option<Severity> {
    match raw {
        None => Some(Severity::Warning),
        Some(text) => {
            let severity = Severity::parse(text);
            if severity.is_none() {
                problems.add(
                    &path.key("severity"),
                    format!("unknown severity {text:?} (allowed: \"info\", \"warning\", \"critical\")"),
                );
            }
            severity
        }
    }
}

fn name(problems: &mut Problems<'_>, path: &KeyPath, raw: Option<&String>) -> Option<String> {
    let name = required(problems, path, "name", raw, "\"HighErrorRate\"")?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
        problems.add(&path.key("name"), format!("invalid name {name:?} (letters, digits, '_', '-', '.' and ':')"));
        return None;
    }
    Some(name.to_owned())
}

fn promql(problems: &mut Problems<'_>, path: &KeyPath, key: &str, expr: &str, expect: crate::promql::Expect) -> bool {
    match crate::promql::check(expr, expect) {
        Ok(()) => true,
        Err(message) => {
            problems.add(&path.key(key), message);
            false
        }
    }
}

fn validate_scrape(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawScrape) -> Option<ScrapeTarget> {
    let name = name(problems, path, raw.name.as_ref());
    let url = required(problems, path, "url", raw.url.as_ref(), "\"http://127.0.0.1:9100/metrics\"").and_then(|url| {
        if url.contains('{') {
            problems.add(&path.key("url"), "static targets take no placeholders ({port} is for service metrics)");
            return None;
        }
        HttpTarget::parse(url).map_err(|message| problems.add(&path.key("url"), message)).ok()
    });
    let timing = scrape_timing(problems, path, raw.interval.as_ref(), raw.timeout.as_ref());
    let labels = labels(problems, path, raw.labels.as_ref());
    let max_series = max_series(problems, path, raw.max_series);
    let sample_limit = sample_limit(problems, path, raw.sample_limit);
    let (interval, timeout) = timing?;
    Some(ScrapeTarget {
        name: name?,
        url: url?,
        interval,
        timeout,
        labels,
        max_series: max_series?,
        sample_limit: sample_limit?,
    })
}

fn validate_rule(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawRule) -> Option<Rule> {
    let name = name(problems, path, raw.name.as_ref());
    let expr = required(problems, path, "expr", raw.expr.as_ref(), "'rate(errors_total[1m]) > 0.1'");
    let valid_expr = expr.is_some_and(|expr| promql(problems, path, "expr", expr, crate::promql::Expect::Rule));
    let for_duration = duration(problems, &path.key("for"), raw.for_duration.as_ref(), Duration::ZERO);
    let keep_firing_for =
        duration(problems, &path.key("keep_firing_for"), raw.keep_firing_for.as_ref(), Duration::ZERO);
    let severity = severity(problems, path, raw.severity.as_ref());
    let labels = labels(problems, path, raw.labels.as_ref());
    if !valid_expr {
        return None;
    }
    Some(Rule {
        name: name?,
        expr: expr?.to_owned(),
        for_duration: for_duration?,
        keep_firing_for: keep_firing_for?,
        severity: severity?,
        labels,
        summary: raw.summary.clone(),
    })
}

fn validate_detect(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawDetect) -> Option<Detect> {
    let name = name(problems, path, raw.name.as_ref());
    let series = required(
        problems,
        path,
        "series",
        raw.series.as_ref(),
        "'mend_replica_resident_memory_bytes{service=\"web\"}'",
    );
    let valid_series =
        series.is_some_and(|series| promql(problems, path, "series", series, crate::promql::Expect::Series));
    let detector = raw.detector.clone().unwrap_or_else(|| "default".to_owned());
    if !mend_detect::registry::NAMES.contains(&detector.as_str()) {
        problems.add(
            &path.key("detector"),
            format!("unknown detector {detector:?} (allowed: {})", mend_detect::registry::NAMES.join(", ")),
        );
    }
    // Unset: alarms worth acting on (few false ones on healthy services), not the NAB-tuned midpoint.
    let sensitivity = raw.sensitivity.unwrap_or(mend_detect::Sensitivity::ACTIONABLE.value());
    if !(0.0..=1.0).contains(&sensitivity) {
        problems.add(
            &path.key("sensitivity"),
            format!("{sensitivity} is out of range (allowed: 0.0 to 1.0; higher flags more)"),
        );
    }
    let severity = severity(problems, path, raw.severity.as_ref());
    if !valid_series
        || !mend_detect::registry::NAMES.contains(&detector.as_str())
        || !(0.0..=1.0).contains(&sensitivity)
    {
        return None;
    }
    Some(Detect { name: name?, series: series?.to_owned(), detector, sensitivity, severity: severity? })
}

fn validate_forecast(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawForecast) -> Option<Forecast> {
    let name = name(problems, path, raw.name.as_ref());
    let series = required(problems, path, "series", raw.series.as_ref(), "'node_filesystem_avail_bytes'");
    let valid_series =
        series.is_some_and(|series| promql(problems, path, "series", series, crate::promql::Expect::Series));
    let limit = match &raw.limit {
        None => {
            problems.add(path, "missing key \"limit\" (the value the series must not reach, e.g. limit = \"512MiB\")");
            None
        }
        Some(FloatOrString::Float(limit)) if limit.is_finite() => Some(*limit),
        Some(FloatOrString::Float(_)) => {
            problems.add(&path.key("limit"), "the limit must be a finite number");
            None
        }
        Some(FloatOrString::String(text)) => {
            parse_size(text).map_err(|message| problems.add(&path.key("limit"), message)).ok()
        }
    };
    let horizon = duration(problems, &path.key("horizon"), raw.horizon.as_ref(), Duration::from_secs(600));
    if horizon == Some(Duration::ZERO) {
        problems.add(&path.key("horizon"), "the horizon must be longer than 0s");
    }
    let severity = severity(problems, path, raw.severity.as_ref());
    if !valid_series {
        return None;
    }
    Some(Forecast { name: name?, series: series?.to_owned(), limit: limit?, horizon: horizon?, severity: severity? })
}

fn validate_storage(problems: &mut Problems<'_>, raw: &RawStorage) -> Option<Storage> {
    let defaults = Storage::default();
    let path = KeyPath::default().key("storage");
    let retention = duration(problems, &path.key("retention"), raw.retention.as_ref(), defaults.retention);
    if retention.is_some_and(|r| r < Duration::from_secs(60)) {
        problems.add(&path.key("retention"), "the retention must be at least 1m");
    }
    let points = integer(
        problems,
        &path.key("max_points_per_series"),
        raw.max_points_per_series,
        10..=1_000_000,
        defaults.max_points_per_series as i64,
    );
    let series =
        integer(problems, &path.key("max_series"), raw.max_series, 1..=100_000_000, defaults.max_series as i64);
    Some(Storage { retention: retention?, max_points_per_series: points? as usize, max_series: series? as usize })
}

fn unique_names<'a>(problems: &mut Problems<'_>, kind: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen: Vec<&str> = Vec::new();
    for (idx, name) in names.enumerate() {
        let path = KeyPath::default().key(kind).index(idx).key("name");
        if seen.contains(&name) {
            problems.add(&path, format!("duplicate {kind} name {name:?}"));
        }
        // Policies name signals by name: the built-in rule's would be ambiguous.
        if name == mend_types::SERVICE_ERRORS_RULE {
            problems.add(&path, format!("{name:?} is the name of mend's built-in rule; choose another"));
        }
        seen.push(name);
    }
}

/// Parses a command: an argv array, or one string run by `/bin/sh -c` when `shell` is set.
fn command(problems: &mut Problems<'_>, path: &KeyPath, raw: Option<&StringOrList>, shell: bool) -> Vec<Template> {
    let command_path = path.key("command");
    match raw {
        // Present but unreadable: already reported.
        None if problems.was_dropped(&command_path) => Vec::new(),
        None => {
            problems.add(
                path,
                "missing required key \"command\" (an argv array, e.g. [\"my-server\", \"--port\", \"{port}\"])",
            );
            Vec::new()
        }
        Some(StringOrList::String(_)) if !shell => {
            problems.add(&command_path, "a command string needs shell = true; otherwise write it as an argv array, e.g. [\"my-server\", \"--port\", \"{port}\"]");
            Vec::new()
        }
        Some(StringOrList::String(text)) if text.trim().is_empty() => {
            problems.add(&command_path, "the command is empty");
            Vec::new()
        }
        Some(StringOrList::String(text)) => {
            spawnable(problems, &command_path, text);
            template(problems, &command_path, text).into_iter().collect()
        }
        Some(StringOrList::List(argv)) => {
            if argv.is_empty() || argv[0].trim().is_empty() {
                problems.add(&command_path, "the command is empty: the first element must name the program to run");
            }
            if shell && argv.len() > 1 {
                problems
                    .add(&command_path, "with shell = true, write the command as one string (it is run by /bin/sh -c)");
            }
            for (idx, arg) in argv.iter().enumerate() {
                spawnable(problems, &command_path.index(idx), arg);
            }
            argv.iter().enumerate().filter_map(|(idx, arg)| template(problems, &command_path.index(idx), arg)).collect()
        }
    }
}

fn env(problems: &mut Problems<'_>, path: &KeyPath, raw: Option<&BTreeMap<String, String>>) -> Vec<(String, Template)> {
    let mut env = Vec::new();
    for (key, value) in raw.into_iter().flatten() {
        let env_path = path.key("env").key(key);
        let valid_name = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            problems.add(
                &env_path,
                format!(
                    "invalid environment variable name {key:?} (letters, digits and '_', not starting with a digit)"
                ),
            );
        }
        spawnable(problems, &env_path, &format!("{key}={value}"));
        if let Some(value) = template(problems, &env_path, value) {
            env.push((key.clone(), value));
        }
    }
    env
}

/// Longest argument or `KEY=value` the kernel passes to a program (`MAX_ARG_STRLEN`, 32 pages, with
/// its NUL).
const MAX_ARG_BYTES: usize = 128 * 1024 - 1;
/// Most bytes of command and environment a service's config may give: Linux takes about 2 MiB for
/// arguments and environment together (a quarter of the stack limit), mend's own environment included.
const MAX_SPAWN_BYTES: usize = 1024 * 1024;

/// Refuses what no program can be given (checked as written, before templates are filled): a NUL byte
/// ends a C string, and an argument or variable longer than [`MAX_ARG_BYTES`] fails the spawn with
/// "Argument list too long".
fn spawnable(problems: &mut Problems<'_>, path: &KeyPath, text: &str) {
    if text.contains('\0') {
        problems.add(path, "contains a NUL byte (\\0), which no program can be given: remove it");
    } else if text.len() > MAX_ARG_BYTES {
        problems.add(
            path,
            format!(
                "is {} bytes: the kernel passes at most {MAX_ARG_BYTES} bytes per argument or variable (the spawn would fail with \"Argument list too long\")",
                text.len()
            ),
        );
    }
}

/// Refuses a command and environment that together exceed [`MAX_SPAWN_BYTES`].
fn spawn_size(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    command: Option<&StringOrList>,
    env: Option<&BTreeMap<String, String>>,
) {
    let command_bytes: usize = match command {
        Some(StringOrList::String(text)) => text.len() + 1,
        Some(StringOrList::List(argv)) => argv.iter().map(|arg| arg.len() + 1).sum(),
        None => 0,
    };
    let env_bytes: usize = env.into_iter().flatten().map(|(key, value)| key.len() + value.len() + 2).sum();
    if command_bytes + env_bytes > MAX_SPAWN_BYTES {
        problems.add(
            &path.key("env"),
            format!(
                "the command and environment take {} bytes: at most {MAX_SPAWN_BYTES} (Linux passes about 2 MiB of arguments and environment in all, mend's own included)",
                command_bytes + env_bytes
            ),
        );
    }
}

fn validate_proxy(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawProxy) -> Option<ProxySettings> {
    let errors_before = problems.errors.len();
    let listen = match raw.listen.as_deref() {
        None => {
            problems.add(path, "missing key \"listen\" (e.g. listen = \"127.0.0.1:8080\")");
            None
        }
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(listen) if listen.port() != 0 => Some(listen),
            _ => {
                problems.add(
                    &path.key("listen"),
                    format!("invalid address {text:?} (expected IP:PORT, e.g. \"127.0.0.1:8080\")"),
                );
                None
            }
        },
    };
    let load_balancing = match raw.load_balancing.as_deref() {
        None => None,
        Some("least_request") => Some(LoadBalancing::LeastRequest),
        Some("round_robin") => Some(LoadBalancing::RoundRobin),
        Some(other) => {
            problems.add(
                &path.key("load_balancing"),
                format!("unknown load balancing {other:?} (allowed: \"least_request\", \"round_robin\")"),
            );
            None
        }
    };
    let upstream_protocol = match raw.upstream_protocol.as_deref() {
        None => None,
        Some("http1") => Some(UpstreamProtocol::Http1),
        Some("h2c") => Some(UpstreamProtocol::H2c),
        Some(other) => {
            problems.add(
                &path.key("upstream_protocol"),
                format!("unknown upstream protocol {other:?} (allowed: \"http1\", \"h2c\")"),
            );
            None
        }
    };
    let mut optional_duration = |key: &str, value: &Option<String>| -> Option<Duration> {
        let parsed = duration(problems, &path.key(key), value.as_ref(), Duration::ZERO)?;
        value.as_ref().map(|_| parsed)
    };
    let connect_timeout = optional_duration("connect_timeout", &raw.connect_timeout);
    let attempt_timeout = optional_duration("attempt_timeout", &raw.attempt_timeout);
    let request_timeout = optional_duration("request_timeout", &raw.request_timeout);
    let read_timeout = optional_duration("read_timeout", &raw.read_timeout);
    let idle_timeout = optional_duration("idle_timeout", &raw.idle_timeout);
    let header_timeout = optional_duration("header_timeout", &raw.header_timeout);
    let base_ejection = optional_duration("base_ejection", &raw.base_ejection);
    let max_ejection = optional_duration("max_ejection", &raw.max_ejection);
    let slow_start = optional_duration("slow_start", &raw.slow_start);
    let drain_timeout = optional_duration("drain_timeout", &raw.drain_timeout);
    for (key, value) in [
        ("connect_timeout", connect_timeout),
        ("attempt_timeout", attempt_timeout),
        ("request_timeout", request_timeout),
        ("read_timeout", read_timeout),
        ("idle_timeout", idle_timeout),
        ("header_timeout", header_timeout),
        ("base_ejection", base_ejection),
        ("max_ejection", max_ejection),
    ] {
        if value == Some(Duration::ZERO) {
            problems.add(&path.key(key), format!("{key} must be longer than 0s"));
        }
    }
    let mut optional_integer = |key: &str, value: Option<i64>, range: std::ops::RangeInclusive<i64>| -> Option<i64> {
        value.and_then(|value| integer(problems, &path.key(key), Some(value), range, 0))
    };
    let max_header_bytes =
        optional_integer("max_header_bytes", raw.max_header_bytes, 8192..=16 * 1024 * 1024).map(|n| n as usize);
    let max_body_bytes = optional_integer("max_body_bytes", raw.max_body_bytes, 0..=i64::MAX).map(|n| n as u64);
    let retry_buffer_bytes =
        optional_integer("retry_buffer_bytes", raw.retry_buffer_bytes, 0..=64 * 1024 * 1024).map(|n| n as usize);
    let max_attempts = optional_integer("max_attempts", raw.max_attempts, 1..=8).map(|n| n as u32);
    let ejection_failures = optional_integer("ejection_failures", raw.ejection_failures, 1..=1000).map(|n| n as u32);
    let max_ejection_percent =
        optional_integer("max_ejection_percent", raw.max_ejection_percent, 0..=100).map(|n| n as u8);
    if let Some(budget) = raw.retry_budget
        && !(0.0..=1.0).contains(&budget)
    {
        problems.add(
            &path.key("retry_budget"),
            format!("{budget} is out of range (allowed: 0.0 to 1.0, a fraction of the request rate)"),
        );
    }
    let retry_on =
        crate::retry::retry_on(problems, path, raw.retry_on.as_deref(), raw.retriable_status_codes.as_deref());
    let retry_methods = crate::retry::retry_methods(problems, path, raw.retry_methods.as_deref());
    if let Some(ratio) = raw.trace_ratio
        && !(0.0..=1.0).contains(&ratio)
    {
        problems.add(&path.key("trace_ratio"), format!("{ratio} is out of range (allowed: 0 to 1)"));
    }
    if problems.errors.len() > errors_before {
        return None;
    }
    Some(ProxySettings {
        listen: listen?,
        load_balancing,
        upstream_protocol,
        connect_timeout,
        attempt_timeout,
        request_timeout,
        read_timeout,
        idle_timeout,
        header_timeout,
        max_header_bytes,
        max_body_bytes,
        retry_buffer_bytes,
        max_attempts,
        retry_budget: raw.retry_budget,
        retry_on,
        retry_methods,
        ejection_failures,
        base_ejection,
        max_ejection,
        max_ejection_percent,
        slow_start,
        drain_timeout,
        trace_ratio: raw.trace_ratio,
    })
}

/// Parses `name: value` (a header) or `name=value` (a cookie).
fn pin(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    text: &str,
    separator: char,
    example: &str,
) -> Option<(String, String)> {
    match text.split_once(separator) {
        Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
            Some((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => {
            problems.add(path, format!("invalid pin {text:?} (expected {example})"));
            None
        }
    }
}

fn validate_canary(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    raw: &RawCanary,
    release: ReleaseName,
) -> Option<Canary> {
    let errors_before = problems.errors.len();
    let replicas = integer(problems, &path.key("replicas"), raw.replicas, 0..=1024, 1);
    let weight = integer(problems, &path.key("weight"), raw.weight, 0..=100, 10);
    let pin_header =
        raw.pin_header.as_deref().and_then(|text| pin(problems, &path.key("pin_header"), text, ':', "\"x-canary: 1\""));
    let pin_cookie =
        raw.pin_cookie.as_deref().and_then(|text| pin(problems, &path.key("pin_cookie"), text, '=', "\"canary=1\""));
    if problems.errors.len() > errors_before {
        return None;
    }
    Some(Canary { release, replicas: replicas? as u32, weight_percent: weight? as u8, pin_header, pin_cookie })
}

fn check_templates(check: &Check) -> Vec<&Template> {
    match check {
        Check::Http { url, .. } => vec![url],
        Check::Tcp { address } => vec![address],
        Check::Exec { command } => command.iter().collect(),
    }
}

fn port_range(problems: &mut Problems<'_>, path: &KeyPath, raw: &IntOrString) -> Option<PortRange> {
    let parse_port = |text: &str| text.trim().parse::<u32>().ok().filter(|port| (1..=65535).contains(port));
    let range = match raw {
        IntOrString::Int(port) => u16::try_from(*port).ok().filter(|p| *p != 0).map(|p| (u32::from(p), u32::from(p))),
        IntOrString::String(text) => match text.split_once('-') {
            Some((first, last)) => parse_port(first).zip(parse_port(last)),
            None => parse_port(text).map(|port| (port, port)),
        },
    };
    let text = match raw {
        IntOrString::Int(port) => port.to_string(),
        IntOrString::String(text) => text.clone(),
    };
    match range {
        Some((first, last)) if first <= last => Some(PortRange { first: first as u16, last: last as u16 }),
        Some(_) => {
            problems.add(path, format!("invalid port range {text:?}: the first port is greater than the last"));
            None
        }
        None => {
            problems
                .add(path, format!("invalid ports {text:?} (expected a port 1-65535 or a range like \"9101-9110\")"));
            None
        }
    }
}

fn validate_backoff(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawService) -> Option<Backoff> {
    let defaults = Backoff::default();
    let empty = Default::default();
    let raw = raw.backoff.as_ref().unwrap_or(&empty);
    let path = path.key("backoff");
    let initial = duration(problems, &path.key("initial"), raw.initial.as_ref(), defaults.initial);
    let max = duration(problems, &path.key("max"), raw.max.as_ref(), defaults.max);
    let reset_after = duration(problems, &path.key("reset_after"), raw.reset_after.as_ref(), defaults.reset_after);
    let jitter = raw.jitter.unwrap_or(defaults.jitter);
    if !(0.0..=1.0).contains(&jitter) {
        problems.add(
            &path.key("jitter"),
            format!("{jitter} is out of range (allowed: 0.0 to 1.0, a fraction of each delay)"),
        );
    }
    if let (Some(initial), Some(max)) = (initial, max)
        && initial > max
    {
        problems.add(&path.key("initial"), "the initial delay is longer than backoff.max");
    }
    Some(Backoff { initial: initial?, max: max?, reset_after: reset_after?, jitter })
}

fn validate_restart_limit(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawService) -> Option<RestartLimit> {
    let defaults = RestartLimit::default();
    let empty = Default::default();
    let raw = raw.restart_limit.as_ref().unwrap_or(&empty);
    let path = path.key("restart_limit");
    let max_restarts = match raw.max_restarts {
        Some(0) => {
            problems.add(&path.key("max_restarts"), "0 restarts allowed: use restart = \"never\" instead");
            None
        }
        other => integer(problems, &path.key("max_restarts"), other, 1..=100_000, i64::from(defaults.max_restarts)),
    };
    let within = duration(problems, &path.key("within"), raw.within.as_ref(), defaults.within);
    if within == Some(Duration::ZERO) {
        problems.add(&path.key("within"), "the window must be longer than 0s");
    }
    Some(RestartLimit { max_restarts: max_restarts? as u32, within: within? })
}

fn validate_logs(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawService) -> Option<Logs> {
    let defaults = Logs::default();
    let empty = Default::default();
    let raw = raw.logs.as_ref().unwrap_or(&empty);
    let path = path.key("logs");
    // Bytes, or a size like max_memory_bytes takes ("10MiB").
    let size = match &raw.max_file_bytes {
        Some(IntOrString::String(text)) => match parse_size(text) {
            Ok(bytes) => Some(bytes.min(i64::MAX as f64) as i64),
            Err(message) => {
                problems.add(&path.key("max_file_bytes"), message);
                return None;
            }
        },
        Some(IntOrString::Int(bytes)) => Some(*bytes),
        None => None,
    };
    let max_file_bytes =
        integer(problems, &path.key("max_file_bytes"), size, 4096..=i64::MAX, defaults.max_file_bytes as i64);
    let keep_files =
        integer(problems, &path.key("keep_files"), raw.keep_files, 1..=100, i64::from(defaults.keep_files));
    Some(Logs { max_file_bytes: max_file_bytes? as u64, keep_files: keep_files? as u32 })
}

fn validate_probe(problems: &mut Problems<'_>, path: &KeyPath, role: ProbeRole, raw: &RawProbe) -> Option<Probe> {
    let errors_before = problems.errors.len();
    let sample_vars = TemplateVars { port: Some(1), replica: 0, service: "service" };
    let n_kinds = usize::from(raw.http.is_some()) + usize::from(raw.tcp.is_some()) + usize::from(raw.exec.is_some());
    if n_kinds != 1 {
        problems.add(path, "a probe needs exactly one of http = \"URL\", tcp = \"HOST:PORT\" or exec = [argv]");
        return None;
    }
    let check = if let Some(url) = &raw.http {
        let url_template = template(problems, &path.key("http"), url)?;
        if let Err(message) = HttpTarget::parse(&url_template.render(&sample_vars)) {
            problems.add(&path.key("http"), message);
        }
        let status = match &raw.status {
            None => (200, 399),
            Some(status) => status_range(problems, &path.key("status"), status)?,
        };
        if let Some(body) = &raw.body_contains
            && body.is_empty()
        {
            problems.add(&path.key("body_contains"), "empty body_contains matches everything; remove it");
        }
        Check::Http { url: url_template, status, body_contains: raw.body_contains.clone() }
    } else if let Some(address) = &raw.tcp {
        let address_template = template(problems, &path.key("tcp"), address)?;
        if let Err(message) = split_host_port(&address_template.render(&sample_vars), 0) {
            problems.add(&path.key("tcp"), format!("invalid address {address:?}: {message} (expected HOST:PORT)"));
        }
        Check::Tcp { address: address_template }
    } else {
        let argv = raw.exec.as_deref().unwrap_or_default();
        if argv.first().is_none_or(|program| program.trim().is_empty()) {
            problems.add(&path.key("exec"), "the command is empty: the first element must name the program to run");
        }
        for (idx, arg) in argv.iter().enumerate() {
            spawnable(problems, &path.key("exec").index(idx), arg);
        }
        let command = argv
            .iter()
            .enumerate()
            .filter_map(|(idx, arg)| template(problems, &path.key("exec").index(idx), arg))
            .collect();
        Check::Exec { command }
    };
    if raw.http.is_none() {
        for (key, set) in [("status", raw.status.is_some()), ("body_contains", raw.body_contains.is_some())] {
            if set {
                problems.add(&path.key(key), format!("{key} applies to http probes only"));
            }
        }
    }
    if role != ProbeRole::Liveness && raw.busy_timeout.is_some() {
        problems.add(&path.key("busy_timeout"), "busy_timeout applies to liveness probes only");
    }

    let defaults = Probe::defaults(role, check);
    let interval = duration(problems, &path.key("interval"), raw.interval.as_ref(), defaults.interval);
    if interval.is_some_and(|i| i < Duration::from_millis(10)) {
        problems.add(&path.key("interval"), "the interval must be at least 10ms");
    }
    let timeout_default = interval.map_or(defaults.timeout, |interval| defaults.timeout.min(interval));
    let timeout = duration(problems, &path.key("timeout"), raw.timeout.as_ref(), timeout_default);
    if timeout.is_some_and(|t| t < Duration::from_millis(1)) {
        problems.add(&path.key("timeout"), "the timeout must be at least 1ms");
    }
    let initial_delay =
        duration(problems, &path.key("initial_delay"), raw.initial_delay.as_ref(), defaults.initial_delay);
    let failure_threshold = integer(
        problems,
        &path.key("failure_threshold"),
        raw.failure_threshold,
        1..=100_000,
        i64::from(defaults.failure_threshold),
    );
    let success_threshold = integer(
        problems,
        &path.key("success_threshold"),
        raw.success_threshold,
        1..=100_000,
        i64::from(defaults.success_threshold),
    );
    if role != ProbeRole::Readiness && success_threshold.is_some_and(|n| n != 1) {
        problems.add(
            &path.key("success_threshold"),
            format!("a {} probe passes on its first success: success_threshold must be 1", role.as_str()),
        );
    }
    let busy_timeout = duration(problems, &path.key("busy_timeout"), raw.busy_timeout.as_ref(), defaults.busy_timeout);
    if problems.errors.len() > errors_before {
        return None;
    }
    Some(Probe {
        check: defaults.check,
        interval: interval?,
        timeout: timeout?,
        initial_delay: initial_delay?,
        failure_threshold: failure_threshold? as u32,
        success_threshold: success_threshold? as u32,
        busy_timeout: busy_timeout?,
    })
}

fn status_range(problems: &mut Problems<'_>, path: &KeyPath, raw: &IntOrString) -> Option<(u16, u16)> {
    let parse = |text: &str| text.trim().parse::<u16>().ok().filter(|code| (100..=599).contains(code));
    let range = match raw {
        IntOrString::Int(code) => u16::try_from(*code).ok().filter(|code| (100..=599).contains(code)).map(|c| (c, c)),
        IntOrString::String(text) if text.len() == 3 && text.ends_with("xx") => {
            text[..1].parse::<u16>().ok().filter(|d| (1..=5).contains(d)).map(|d| (d * 100, d * 100 + 99))
        }
        IntOrString::String(text) => match text.split_once('-') {
            Some((first, last)) => parse(first).zip(parse(last)).filter(|(first, last)| first <= last),
            None => parse(text).map(|code| (code, code)),
        },
    };
    if range.is_none() {
        problems
            .add(path, "invalid status (expected a code like 200, a range like \"200-399\" or a class like \"2xx\")");
    }
    range
}

fn check_dependencies(
    problems: &mut Problems<'_>,
    raw_services: &[(String, Option<RawService>)],
    services: &[Service],
) {
    let known: Vec<&str> = raw_services.iter().map(|(name, _)| name.as_str()).collect();
    for service in services {
        for (idx, dependency) in service.depends_on.iter().enumerate() {
            if !known.contains(&dependency.as_str()) {
                let path = KeyPath::default().key("service").key(service.name.as_str()).key("depends_on").index(idx);
                problems.add(
                    &path,
                    format!("unknown service {:?} (configured: {})", dependency.as_str(), known.join(", ")),
                );
            }
        }
    }
}

/// Orders services so that each comes after its dependencies; a cycle is an error naming it.
fn start_order(problems: &mut Problems<'_>, services: Vec<Service>) -> Option<Vec<Service>> {
    let index: HashMap<&str, usize> = services.iter().enumerate().map(|(idx, s)| (s.name.as_str(), idx)).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        idx: usize,
        services: &[Service],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match marks[idx] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let start = stack.iter().position(|&i| i == idx).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(idx);
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks[idx] = Mark::Visiting;
        stack.push(idx);
        for dependency in &services[idx].depends_on {
            if let Some(&dep_idx) = index.get(dependency.as_str()) {
                visit(dep_idx, services, index, marks, stack, order)?;
            }
        }
        stack.pop();
        marks[idx] = Mark::Done;
        order.push(idx);
        Ok(())
    }
    let mut marks = vec![Mark::New; services.len()];
    let mut order = Vec::with_capacity(services.len());
    for idx in 0..services.len() {
        let mut stack = Vec::new();
        if let Err(cycle) = visit(idx, &services, &index, &mut marks, &mut stack, &mut order) {
            let names: Vec<&str> = cycle.iter().map(|&i| services[i].name.as_str()).collect();
            let path = KeyPath::default().key("service").key(names[0]).key("depends_on");
            problems.add(&path, format!("dependency cycle: {}", names.join(" -> ")));
            return None;
        }
    }
    let mut slots: Vec<Option<Service>> = services.into_iter().map(Some).collect();
    Some(order.into_iter().filter_map(|idx| slots[idx].take()).collect())
}

fn check_ports(problems: &mut Problems<'_>, api: &Option<Api>, services: &[Service]) {
    let mut claimed: BTreeMap<&str, PortRange> = BTreeMap::new();
    for service in services {
        let Some(ports) = service.ports else { continue };
        let path = KeyPath::default().key("service").key(service.name.as_str()).key("ports");
        for (other, other_ports) in &claimed {
            if ports.overlaps(other_ports) {
                problems.add(&path, format!("ports {ports} overlap ports {other_ports} of service {other:?}"));
            }
        }
        if let Some(api) = api
            && ports.contains(api.listen.port())
        {
            problems.add(&path, format!("ports {ports} include the API's port {} (api.listen)", api.listen.port()));
        }
        claimed.insert(service.name.as_str(), ports);
    }
    // Proxy listeners may not take the API's port, a service's port, or another proxy's.
    let mut listeners: Vec<(&str, u16)> = Vec::new();
    for service in services {
        let Some(proxy) = &service.proxy else { continue };
        let port = proxy.listen.port();
        let path = KeyPath::default().key("service").key(service.name.as_str()).key("proxy").key("listen");
        if api.as_ref().is_some_and(|api| api.listen.port() == port) {
            problems.add(&path, format!("port {port} is the API's port (api.listen)"));
        }
        for (other, range) in &claimed {
            if range.contains(port) {
                problems.add(&path, format!("port {port} is in the ports {range} of service {other:?}"));
            }
        }
        for (other, other_port) in &listeners {
            if *other_port == port {
                problems.add(&path, format!("port {port} is already the proxy port of service {other:?}"));
            }
        }
        listeners.push((service.name.as_str(), port));
    }
}
