//! Healing configuration: `[healing]`, `[[heal]]` policies, `[hook.NAME]`, `[notify.NAME]` and
//! `[service.NAME.healing]`, from raw tables to validated types.
//!
//! Triggers and actions are parsed here once (`Trigger`, `mend_types::ActionKind`): nothing downstream
//! re-reads a string. An unknown trigger or action, or a hook or target that is not defined, is an error
//! with file, line and key.

use std::time::Duration;

use mend_types::{ActionKind, BuiltinDiagnosis, HealMode, ServiceName, Signal, SignalKind};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use crate::model::{HttpTarget, PortRange};
use crate::validate::{KeyPath, Problems, duration, integer, raw_section};

/// `[healing]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealing {
    mode: Option<String>,
    verify: Option<String>,
    max_actions_per_hour: Option<i64>,
    service_max_actions_per_hour: Option<i64>,
    cooldown: Option<String>,
    max_unavailable: Option<i64>,
    pending_expiry: Option<String>,
    window: Option<String>,
    escalate_after: Option<String>,
    settle: Option<String>,
}

/// `[service.NAME.healing]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServiceHealing {
    mode: Option<String>,
    max_unavailable: Option<i64>,
    max_actions_per_hour: Option<i64>,
    min_replicas: Option<i64>,
    max_replicas: Option<i64>,
}

/// `[[heal]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeal {
    when: Option<String>,
    service: Option<String>,
    actions: Option<Vec<String>>,
    verify: Option<String>,
}

/// `[hook.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHook {
    command: Option<Vec<String>>,
    timeout: Option<String>,
}

/// `[notify.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    url: Option<String>,
    timeout: Option<String>,
    attempts: Option<i64>,
}

/// The healing sections of a file, read but not validated.
#[derive(Default)]
pub(crate) struct RawSections {
    healing: Option<RawHealing>,
    heal: Vec<(usize, RawHeal)>,
    hooks: Vec<(String, RawHook)>,
    notify: Vec<(String, RawNotify)>,
}

impl RawSections {
    /// Reads the top-level section `key` (`healing`, `heal`, `hook` or `notify`).
    pub(crate) fn read(
        &mut self,
        problems: &mut Problems<'_>,
        key: &str,
        path: &KeyPath,
        value: &Spanned<DeValue<'_>>,
    ) {
        match key {
            "healing" => self.healing = raw_section(problems, path, value),
            "heal" => {
                let Some(items) = value.get_ref().as_array() else {
                    problems.add(path, "expected an array of tables: write [[heal]]");
                    return;
                };
                for (idx, item) in items.iter().enumerate() {
                    if let Some(raw) = raw_section::<RawHeal>(problems, &path.index(idx), item) {
                        self.heal.push((idx, raw));
                    }
                }
            }
            _ => {
                let Some(table) = value.get_ref().as_table() else {
                    problems.add(path, format!("expected tables like [{key}.NAME]"));
                    return;
                };
                for (name, item) in table {
                    let name = name.get_ref().to_string();
                    let item_path = path.key(&name);
                    if !valid_name(&name) {
                        problems.add(&item_path, format!("invalid name {name:?} (letters, digits, '_' and '-')"));
                        continue;
                    }
                    if key == "hook" {
                        if let Some(raw) = raw_section::<RawHook>(problems, &item_path, item) {
                            self.hooks.push((name, raw));
                        }
                    } else if let Some(raw) = raw_section::<RawNotify>(problems, &item_path, item) {
                        self.notify.push((name, raw));
                    }
                }
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `[healing]`: how mend acts, for every service unless a service says otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Healing {
    /// `auto`, `approve` or `dry-run`.
    pub mode: HealMode,
    /// How long after an action its incident's signals have to resolve before the next action runs.
    pub verify: Duration,
    /// Actions mend may take per hour across all services (a token bucket; operators' commands count).
    pub max_actions_per_hour: u32,
    /// Actions mend may take per hour on one service (unless the service sets its own).
    pub service_max_actions_per_hour: u32,
    /// Least time between two actions of one kind on one target.
    pub cooldown: Duration,
    /// Most replicas of a service that may be down or draining at once because of actions (never the last
    /// ready one).
    pub max_unavailable: u32,
    /// How long an action waits for approval (approve mode) before it expires.
    pub pending_expiry: Duration,
    /// Signals this close in time (on one service, or along a dependency) join one incident, and a
    /// trigger that fires again this soon after resolving reopens its incident (flapping).
    pub window: Duration,
    /// An incident still open after this long is escalated.
    pub escalate_after: Duration,
    /// A policy keyed on a trigger (rule, detector, forecast, alert) that fired on a service which calls
    /// others waits this long after its incident opened, unless the diagnosis names the root before:
    /// the trouble of what it calls shows on the caller in the same second, and the ranking needs their
    /// signals to name the root (0s: no wait).
    pub settle: Duration,
}

impl Default for Healing {
    fn default() -> Self {
        Self {
            mode: HealMode::Auto,
            verify: Duration::from_secs(30),
            max_actions_per_hour: 30,
            service_max_actions_per_hour: 10,
            cooldown: Duration::from_secs(60),
            max_unavailable: 1,
            pending_expiry: Duration::from_secs(600),
            window: Duration::from_secs(300),
            escalate_after: Duration::from_secs(1800),
            settle: Duration::from_secs(3),
        }
    }
}

/// `[service.NAME.healing]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceHealing {
    /// Overrides `[healing] mode`.
    pub mode: Option<HealMode>,
    /// Overrides `[healing] max_unavailable`.
    pub max_unavailable: Option<u32>,
    /// Overrides `[healing] service_max_actions_per_hour`.
    pub max_actions_per_hour: Option<u32>,
    /// `scale -N` never goes below this.
    pub min_replicas: u32,
    /// `scale +N` never goes above this (by default: as many as the port range holds, else the configured
    /// replicas).
    pub max_replicas: u32,
}

/// What a policy reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A `[[rule]]`.
    Rule(String),
    /// A `[[detect]]`.
    Detect(String),
    /// A `[[forecast]]`.
    Forecast(String),
    /// An alert from Alertmanager (`when = "alert:NAME"`).
    Alert(String),
    /// A built-in diagnosis.
    Builtin(BuiltinDiagnosis),
    /// An early warning from a learnt precursor (`when = "precursor"`; the policy's `service` narrows it).
    Precursor,
}

impl Trigger {
    /// As written in `when`.
    pub fn name(&self) -> String {
        match self {
            Self::Rule(name) | Self::Detect(name) | Self::Forecast(name) => name.clone(),
            Self::Alert(name) => format!("alert:{name}"),
            Self::Builtin(diagnosis) => diagnosis.as_str().to_owned(),
            Self::Precursor => PRECURSOR_TRIGGER.to_owned(),
        }
    }

    /// Whether `signal` is this trigger.
    pub fn matches(&self, signal: &Signal) -> bool {
        match self {
            Self::Rule(name) => signal.kind == SignalKind::Rule && signal.name == *name,
            Self::Detect(name) => signal.kind == SignalKind::Anomaly && signal.name == *name,
            Self::Forecast(name) => signal.kind == SignalKind::Predictive && signal.name == *name,
            Self::Alert(name) => signal.kind == SignalKind::External && signal.name == *name,
            // The implicit memory forecast is called `memory_exhaustion` too.
            Self::Builtin(diagnosis) => {
                (signal.kind == SignalKind::Diagnosis
                    || (*diagnosis == BuiltinDiagnosis::MemoryExhaustion && signal.kind == SignalKind::Predictive))
                    && signal.name == diagnosis.as_str()
            }
            Self::Precursor => signal.kind == SignalKind::Precursor,
        }
    }
}

/// What `when` says for an early warning of a learnt precursor (also the warning signal's name).
pub const PRECURSOR_TRIGGER: &str = "precursor";

/// A `[[heal]]` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct HealPolicy {
    /// What it reacts to.
    pub when: Trigger,
    /// Only this service's incidents.
    pub service: Option<ServiceName>,
    /// What to do, in order: the next action runs when the previous did not resolve the incident.
    pub actions: Vec<ActionKind>,
    /// Overrides `[healing] verify`.
    pub verify: Option<Duration>,
}

/// `[hook.NAME]`: a command run by `hook NAME`, bounded in time, with the incident in its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// Its name.
    pub name: String,
    /// argv.
    pub command: Vec<String>,
    /// Killed (with its process group) after this long.
    pub timeout: Duration,
}

/// `[notify.NAME]`: a webhook that receives the incident as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyTarget {
    /// Its name.
    pub name: String,
    /// Where to POST (plain `http://`; https targets go through a hook running curl).
    pub url: HttpTarget,
    /// Bound of one attempt.
    pub timeout: Duration,
    /// Attempts (with back-off) before giving up.
    pub attempts: u32,
}

/// The names a trigger may refer to.
pub(crate) struct Names {
    pub(crate) rules: Vec<String>,
    pub(crate) detects: Vec<String>,
    pub(crate) forecasts: Vec<String>,
    pub(crate) services: Vec<String>,
}

/// The validated healing sections.
pub(crate) struct Validated {
    pub(crate) healing: Healing,
    pub(crate) policies: Vec<HealPolicy>,
    pub(crate) hooks: Vec<Hook>,
    pub(crate) notify: Vec<NotifyTarget>,
}

fn mode(problems: &mut Problems<'_>, path: &KeyPath, raw: Option<&String>) -> Option<HealMode> {
    let text = raw?;
    let mode = HealMode::parse(text);
    if mode.is_none() {
        problems.add(path, format!("unknown mode {text:?} (allowed: \"auto\", \"approve\", \"dry-run\")"));
    }
    mode
}

/// Validates `[healing]`, `[[heal]]`, `[hook.*]` and `[notify.*]`. Problems are reported; what is
/// valid is kept.
pub(crate) fn validate(problems: &mut Problems<'_>, raw: &RawSections, names: &Names) -> Validated {
    let defaults = Healing::default();
    let root = KeyPath::default().key("healing");
    let empty = RawHealing::default();
    let healing_raw = raw.healing.as_ref().unwrap_or(&empty);
    let hour = |problems: &mut Problems<'_>, key: &str, value: Option<i64>, default: u32| {
        integer(problems, &root.key(key), value, 0..=100_000, i64::from(default)).map_or(default, |n| n as u32)
    };
    let time = |problems: &mut Problems<'_>, key: &str, value: Option<&String>, default: Duration| {
        duration(problems, &root.key(key), value, default).unwrap_or(default)
    };
    let healing = Healing {
        mode: mode(problems, &root.key("mode"), healing_raw.mode.as_ref()).unwrap_or(defaults.mode),
        verify: time(problems, "verify", healing_raw.verify.as_ref(), defaults.verify),
        max_actions_per_hour: hour(
            problems,
            "max_actions_per_hour",
            healing_raw.max_actions_per_hour,
            defaults.max_actions_per_hour,
        ),
        service_max_actions_per_hour: hour(
            problems,
            "service_max_actions_per_hour",
            healing_raw.service_max_actions_per_hour,
            defaults.service_max_actions_per_hour,
        ),
        cooldown: time(problems, "cooldown", healing_raw.cooldown.as_ref(), defaults.cooldown),
        max_unavailable: integer(
            problems,
            &root.key("max_unavailable"),
            healing_raw.max_unavailable,
            1..=1024,
            i64::from(defaults.max_unavailable),
        )
        .map_or(defaults.max_unavailable, |n| n as u32),
        pending_expiry: time(problems, "pending_expiry", healing_raw.pending_expiry.as_ref(), defaults.pending_expiry),
        window: time(problems, "window", healing_raw.window.as_ref(), defaults.window),
        escalate_after: time(problems, "escalate_after", healing_raw.escalate_after.as_ref(), defaults.escalate_after),
        settle: time(problems, "settle", healing_raw.settle.as_ref(), defaults.settle),
    };
    if healing.verify.is_zero() {
        problems.add(&root.key("verify"), "the verify window must be longer than 0s");
    }
    if healing.window.is_zero() {
        problems.add(&root.key("window"), "the incident window must be longer than 0s");
    }

    let mut hooks = Vec::new();
    for (name, hook) in &raw.hooks {
        let path = KeyPath::default().key("hook").key(name);
        let command = match &hook.command {
            None => {
                problems.add(&path, "missing key \"command\" (an argv array, e.g. [\"/usr/local/bin/page\", \"ops\"])");
                None
            }
            Some(command) if command.first().is_none_or(|program| program.trim().is_empty()) => {
                problems.add(&path.key("command"), "the command is empty: the first element must name the program");
                None
            }
            Some(command) => Some(command.clone()),
        };
        let timeout = duration(problems, &path.key("timeout"), hook.timeout.as_ref(), Duration::from_secs(30));
        if timeout.is_some_and(|t| t.is_zero() || t > Duration::from_secs(3600)) {
            problems.add(&path.key("timeout"), "the timeout must be longer than 0s and at most 1h");
        }
        if let (Some(command), Some(timeout)) = (command, timeout) {
            hooks.push(Hook { name: name.clone(), command, timeout });
        }
    }
    let mut notify = Vec::new();
    for (name, target) in &raw.notify {
        let path = KeyPath::default().key("notify").key(name);
        let url = match &target.url {
            None => {
                problems.add(&path, "missing key \"url\" (e.g. url = \"http://127.0.0.1:9095/hooks/mend\")");
                None
            }
            Some(url) if url.starts_with("https://") => {
                problems.add(
                    &path.key("url"),
                    format!(
                        "{url:?}: https is not supported by mend's client; POST through a [hook.NAME] running curl"
                    ),
                );
                None
            }
            Some(url) => HttpTarget::parse(url).map_err(|message| problems.add(&path.key("url"), message)).ok(),
        };
        let timeout = duration(problems, &path.key("timeout"), target.timeout.as_ref(), Duration::from_secs(5));
        if timeout.is_some_and(|t| t.is_zero() || t > Duration::from_secs(60)) {
            problems.add(&path.key("timeout"), "the timeout must be longer than 0s and at most 1m");
        }
        let attempts = integer(problems, &path.key("attempts"), target.attempts, 1..=10, 3);
        if let (Some(url), Some(timeout), Some(attempts)) = (url, timeout, attempts) {
            notify.push(NotifyTarget { name: name.clone(), url, timeout, attempts: attempts as u32 });
        }
    }

    let mut policies = Vec::new();
    for (idx, heal) in &raw.heal {
        let path = KeyPath::default().key("heal").index(*idx);
        let when = match heal.when.as_deref().map(str::trim) {
            None => {
                problems.add(
                    &path,
                    "missing key \"when\" (a rule, detector, forecast, alert:NAME, precursor or built-in diagnosis)",
                );
                None
            }
            Some(when) => trigger(problems, &path.key("when"), when, names),
        };
        let service = match heal.service.as_deref() {
            None => None,
            Some(name) if names.services.iter().any(|known| known == name) => ServiceName::new(name).ok(),
            Some(name) => {
                problems.add(&path.key("service"), format!("unknown service {name:?}"));
                None
            }
        };
        let mut actions = Vec::new();
        let mut valid_actions = true;
        match &heal.actions {
            None => {
                problems
                    .add(&path, "missing key \"actions\" (e.g. actions = [\"restart\", \"notify ops\", \"escalate\"])");
                valid_actions = false;
            }
            Some(list) if list.is_empty() => {
                problems.add(&path.key("actions"), "the list is empty: name at least one action");
                valid_actions = false;
            }
            Some(list) => {
                for (action_idx, text) in list.iter().enumerate() {
                    let action_path = path.key("actions").index(action_idx);
                    if actions.last() == Some(&ActionKind::Escalate) {
                        problems.add(&action_path, "nothing runs after \"escalate\": it stops acting on the incident");
                        valid_actions = false;
                        break;
                    }
                    match action(text, &hooks, &notify, &raw.hooks, &raw.notify) {
                        Ok(action) => actions.push(action),
                        Err(message) => {
                            problems.add(&action_path, message);
                            valid_actions = false;
                        }
                    }
                }
            }
        }
        let verify = match &heal.verify {
            None => None,
            Some(text) => duration(problems, &path.key("verify"), Some(text), healing.verify),
        };
        if verify.is_some_and(|v| v.is_zero()) {
            problems.add(&path.key("verify"), "the verify window must be longer than 0s");
        }
        if let (Some(when), true) = (when, valid_actions) {
            policies.push(HealPolicy { when, service, actions, verify });
        }
    }
    Validated { healing, policies, hooks, notify }
}

/// Parses a `when`.
fn trigger(problems: &mut Problems<'_>, path: &KeyPath, when: &str, names: &Names) -> Option<Trigger> {
    if let Some(alert) = when.strip_prefix("alert:") {
        if alert.is_empty() {
            problems.add(path, "alert: needs the alert's name, e.g. \"alert:DiskFull\"");
            return None;
        }
        return Some(Trigger::Alert(alert.to_owned()));
    }
    let known = |list: &[String]| list.iter().any(|name| name == when);
    if when == PRECURSOR_TRIGGER {
        return Some(Trigger::Precursor);
    }
    if known(&names.rules) {
        return Some(Trigger::Rule(when.to_owned()));
    }
    if known(&names.detects) {
        return Some(Trigger::Detect(when.to_owned()));
    }
    if known(&names.forecasts) {
        return Some(Trigger::Forecast(when.to_owned()));
    }
    if let Some(diagnosis) = BuiltinDiagnosis::parse(when) {
        return Some(Trigger::Builtin(diagnosis));
    }
    let mut offered: Vec<String> = BuiltinDiagnosis::ALL.iter().map(|d| d.as_str().to_owned()).collect();
    offered.extend(names.rules.iter().chain(&names.detects).chain(&names.forecasts).cloned());
    problems.add(
        path,
        format!(
            "unknown trigger {when:?}: not a [[rule]], [[detect]] or [[forecast]] name nor a built-in diagnosis \
             (known: {}; an Alertmanager alert is written \"alert:NAME\", a learnt precursor's early warning \"precursor\")",
            offered.join(", ")
        ),
    );
    None
}

/// Parses one action of a policy's list.
fn action(
    text: &str,
    hooks: &[Hook],
    notify: &[NotifyTarget],
    raw_hooks: &[(String, RawHook)],
    raw_notify: &[(String, RawNotify)],
) -> Result<ActionKind, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let allowed = "allowed: restart, rolling-restart, scale +N, scale -N, eject [DURATION], rollback, hook NAME, notify NAME, \
         escalate";
    match words.as_slice() {
        ["restart"] => Ok(ActionKind::Restart),
        ["rolling-restart"] => Ok(ActionKind::RollingRestart),
        ["scale", delta] => {
            let parsed = delta.strip_prefix('+').unwrap_or(delta).parse::<i32>().ok();
            match parsed {
                Some(n) if (delta.starts_with('+') || delta.starts_with('-')) && n != 0 && n.abs() <= 100 => {
                    Ok(ActionKind::Scale { delta: n })
                }
                _ => Err(format!("invalid scale {delta:?}: write \"scale +N\" or \"scale -N\" with N from 1 to 100")),
            }
        }
        ["eject"] => Ok(ActionKind::Eject { for_ms: 60_000 }),
        ["eject", time] => match crate::duration::parse_duration(time) {
            Ok(time) if !time.is_zero() && time <= Duration::from_secs(3600) => {
                Ok(ActionKind::Eject { for_ms: time.as_millis() as u64 })
            }
            Ok(_) => Err("an ejection lasts longer than 0s and at most 1h".to_owned()),
            Err(message) => Err(message),
        },
        ["rollback"] => Ok(ActionKind::Rollback),
        ["rollback", ..] => {
            Err("\"rollback\" takes no argument: it returns to the service's last good release".to_owned())
        }
        ["hook", name] => {
            if hooks.iter().any(|hook| hook.name == *name) {
                Ok(ActionKind::Hook { name: (*name).to_owned() })
            } else if raw_hooks.iter().any(|(hook, _)| hook == name) {
                Err(format!("hook {name:?} is invalid (see its own error)"))
            } else {
                Err(format!("unknown hook {name:?}: define it in a [hook.{name}] table"))
            }
        }
        ["notify", name] => {
            if notify.iter().any(|target| target.name == *name) {
                Ok(ActionKind::Notify { name: (*name).to_owned() })
            } else if raw_notify.iter().any(|(target, _)| target == name) {
                Err(format!("notification target {name:?} is invalid (see its own error)"))
            } else {
                Err(format!("unknown notification target {name:?}: define it in a [notify.{name}] table"))
            }
        }
        ["escalate"] => Ok(ActionKind::Escalate),
        _ => Err(format!("unknown action {text:?} ({allowed})")),
    }
}

/// Validates `[service.NAME.healing]`.
pub(crate) fn validate_service(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    raw: Option<&RawServiceHealing>,
    replicas: Option<u32>,
    ports: Option<PortRange>,
) -> Option<ServiceHealing> {
    let empty = RawServiceHealing::default();
    let raw = raw.unwrap_or(&empty);
    let mode = mode(problems, &path.key("mode"), raw.mode.as_ref());
    let max_unavailable =
        raw.max_unavailable.and_then(|n| integer(problems, &path.key("max_unavailable"), Some(n), 1..=1024, 1));
    let per_hour = raw
        .max_actions_per_hour
        .and_then(|n| integer(problems, &path.key("max_actions_per_hour"), Some(n), 0..=100_000, 0));
    let min_replicas = integer(problems, &path.key("min_replicas"), raw.min_replicas, 0..=1024, 1)?;
    let default_max = ports.map_or(i64::from(replicas.unwrap_or(1)), |ports| i64::from(ports.len()));
    let max_replicas = integer(problems, &path.key("max_replicas"), raw.max_replicas, 0..=1024, default_max)?;
    if min_replicas > max_replicas {
        problems.add(
            &path.key("min_replicas"),
            format!("min_replicas {min_replicas} is above max_replicas {max_replicas}"),
        );
        return None;
    }
    if let Some(ports) = ports
        && max_replicas > i64::from(ports.len())
    {
        problems.add(
            &path.key("max_replicas"),
            format!("max_replicas {max_replicas} needs more ports than ports = \"{ports}\" holds ({})", ports.len()),
        );
        return None;
    }
    Some(ServiceHealing {
        mode,
        max_unavailable: max_unavailable.map(|n| n as u32),
        max_actions_per_hour: per_hour.map(|n| n as u32),
        min_replicas: min_replicas as u32,
        max_replicas: max_replicas as u32,
    })
}
