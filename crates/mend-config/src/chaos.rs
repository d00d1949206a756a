//! `[chaos.monkey]`: the chaos monkey, off unless configured, dry-run until told otherwise.
//!
//! ```toml
//! [chaos.monkey]
//! every = "10m"                 # one fault at most this often
//! services = ["web", "api"]     # only these services, never any other
//! faults = ["kill", "hang"]     # kill, hang, cpu, leak, slow, errors (partition needs a caller: not here)
//! duration = "30s"              # how long each fault lasts (1s to 10m); it always reverts by itself
//! window = "09:00-17:00"        # optional: only between these times of day (UTC)
//! dry_run = true                # the default: decide and record, inject nothing
//! ```

use std::time::Duration;

use mend_types::{ChaosFault, ServiceName, Timestamp};
use serde::Deserialize;

use crate::validate::{KeyPath, Problems, duration};

/// `[chaos]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chaos {
    /// `[chaos.monkey]`, if configured.
    pub monkey: Option<Monkey>,
}

/// `[chaos.monkey]`: inject one fault at a time into listed services, at most every `every`.
#[derive(Debug, Clone, PartialEq)]
pub struct Monkey {
    /// Least time between the starts of two faults.
    pub every: Duration,
    /// The only services the monkey may touch.
    pub services: Vec<ServiceName>,
    /// The faults it may pick from (never `partition`).
    pub faults: Vec<ChaosFault>,
    /// How long each fault lasts.
    pub duration: Duration,
    /// Only inside this time of day (UTC), if set.
    pub window: Option<DailyWindow>,
    /// Decide and record, inject nothing (the default).
    pub dry_run: bool,
    /// Seed of the monkey's choices (random when absent), for reproducible runs.
    pub seed: Option<u64>,
}

impl Monkey {
    /// Least `every`: the monkey is a background hazard, not a load generator.
    pub const MIN_EVERY: Duration = Duration::from_secs(10);
    /// Longest fault the monkey may inject.
    pub const MAX_DURATION: Duration = Duration::from_secs(600);
}

/// A time-of-day window in UTC, `start..end` in minutes after midnight; it wraps past midnight when
/// `end < start` (`"22:00-06:00"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    /// Minutes after midnight UTC when it opens.
    pub start_minute: u16,
    /// Minutes after midnight UTC when it closes.
    pub end_minute: u16,
}

impl DailyWindow {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let explain = || format!("invalid window {text:?} (expected \"HH:MM-HH:MM\" in UTC, e.g. \"09:00-17:00\")");
        let (start, end) = text.split_once('-').ok_or_else(explain)?;
        let minute = |part: &str| -> Option<u16> {
            let (hours, minutes) = part.trim().split_once(':')?;
            let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
            (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
        };
        let (start_minute, end_minute) = (minute(start).ok_or_else(explain)?, minute(end).ok_or_else(explain)?);
        if start_minute == end_minute {
            return Err(format!("window {text:?} is empty: its start and end are the same time"));
        }
        Ok(Self { start_minute, end_minute })
    }

    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: Timestamp) -> bool {
        let minute = (at.as_millis().div_euclid(60_000).rem_euclid(24 * 60)) as u16;
        if self.start_minute < self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

/// `[chaos]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChaos {
    monkey: Option<RawMonkey>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonkey {
    every: Option<String>,
    services: Option<Vec<String>>,
    faults: Option<Vec<String>>,
    duration: Option<String>,
    window: Option<String>,
    dry_run: Option<bool>,
    seed: Option<i64>,
}

/// Validates `[chaos]`; `services` are the configured services' names.
pub(crate) fn validate(problems: &mut Problems<'_>, raw: &RawChaos, services: &[String]) -> Chaos {
    let Some(raw) = &raw.monkey else { return Chaos::default() };
    let path = KeyPath::default().key("chaos").key("monkey");
    let every = match &raw.every {
        None => {
            problems.add(&path, "missing required key \"every\" (how often at most, e.g. \"10m\")");
            None
        }
        Some(_) => duration(problems, &path.key("every"), raw.every.as_ref(), Duration::ZERO),
    };
    if every.is_some_and(|every| every < Monkey::MIN_EVERY) {
        problems.add(&path.key("every"), "at least 10s between faults");
    }
    let mut names = Vec::new();
    match &raw.services {
        None => problems.add(&path, "missing required key \"services\" (the only services the monkey may touch)"),
        Some(list) if list.is_empty() => problems.add(&path.key("services"), "name at least one service"),
        Some(list) => {
            for (idx, name) in list.iter().enumerate() {
                if !services.contains(name) {
                    problems.add(&path.key("services").index(idx), format!("unknown service {name:?}"));
                } else if let Ok(name) = ServiceName::new(name) {
                    names.push(name);
                }
            }
        }
    }
    let mut faults = Vec::new();
    match &raw.faults {
        None => problems.add(&path, "missing required key \"faults\" (e.g. [\"kill\", \"hang\"])"),
        Some(list) if list.is_empty() => problems.add(&path.key("faults"), "name at least one fault"),
        Some(list) => {
            for (idx, name) in list.iter().enumerate() {
                match name.parse::<ChaosFault>() {
                    Ok(ChaosFault::Partition) => problems.add(
                        &path.key("faults").index(idx),
                        "the monkey does not cut edges (partition needs a caller): use `mend chaos partition`",
                    ),
                    Ok(fault) if !faults.contains(&fault) => faults.push(fault),
                    Ok(_) => {}
                    Err(error) => problems.add(&path.key("faults").index(idx), error.to_string()),
                }
            }
        }
    }
    let fault_duration = duration(problems, &path.key("duration"), raw.duration.as_ref(), Duration::from_secs(30));
    if fault_duration.is_some_and(|d| d < Duration::from_secs(1) || d > Monkey::MAX_DURATION) {
        problems.add(&path.key("duration"), "between 1s and 10m (a fault always reverts by itself)");
    }
    let window = raw.window.as_deref().map(DailyWindow::parse).transpose();
    let window = window.unwrap_or_else(|message| {
        problems.add(&path.key("window"), message);
        None
    });
    let seed = raw.seed.map(|seed| seed as u64);
    match (every, fault_duration) {
        (Some(every), Some(duration)) if !names.is_empty() && !faults.is_empty() => Chaos {
            monkey: Some(Monkey {
                every,
                services: names,
                faults,
                duration,
                window,
                dry_run: raw.dry_run.unwrap_or(true),
                seed,
            }),
        },
        _ => Chaos::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SERVICE: &str = "[service.web]\ncommand = [\"web\"]\n\n";

    fn check(text: &str) -> Result<Option<Monkey>, String> {
        crate::parse("mend.toml", &format!("{SERVICE}{text}"), Path::new("/"))
            .map(|config| config.chaos.monkey)
            .map_err(|errors| errors.to_string())
    }

    #[test]
    fn the_monkey_is_dry_run_by_default_and_bounded() {
        let monkey = check("[chaos.monkey]\nevery = \"10m\"\nservices = [\"web\"]\nfaults = [\"kill\", \"hang\"]\n")
            .expect("valid")
            .expect("configured");
        assert!(monkey.dry_run);
        assert_eq!(monkey.duration, Duration::from_secs(30));
        assert_eq!(monkey.faults, [ChaosFault::Kill, ChaosFault::Hang]);
        assert_eq!(check(""), Ok(None));
    }

    #[test]
    fn every_problem_is_named_with_line_and_key() {
        let text = "[chaos.monkey]\nevery = \"1s\"\nservices = [\"web\", \"db\"]\nfaults = [\"kill\", \"partition\", \"melt\"]\nduration = \"1h\"\nwindow = \"9-17\"\n";
        assert_eq!(
            check(text),
            Err([
                "mend.toml:5:9: chaos.monkey.every: at least 10s between faults",
                "mend.toml:6:20: chaos.monkey.services[1]: unknown service \"db\"",
                "mend.toml:7:19: chaos.monkey.faults[1]: the monkey does not cut edges (partition needs a caller): use `mend chaos partition`",
                "mend.toml:7:32: chaos.monkey.faults[2]: unknown fault \"melt\" (expected one of: kill, hang, cpu, leak, slow, errors, partition)",
                "mend.toml:8:12: chaos.monkey.duration: between 1s and 10m (a fault always reverts by itself)",
                "mend.toml:9:10: chaos.monkey.window: invalid window \"9-17\" (expected \"HH:MM-HH:MM\" in UTC, e.g. \"09:00-17:00\")",
            ]
            .join("\n"))
        );
        assert_eq!(
            check("[chaos.monkey]\nservices = [\"web\"]\nfaults = [\"kill\"]\nrate = 1\n").map_err(|e| e
                .lines()
                .map(|line| line.split(": ").nth(1).unwrap_or("").to_owned())
                .collect::<Vec<_>>()),
            Err(vec!["chaos.monkey.rate".to_owned()])
        );
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let at = |hh: i64, mm: i64| Timestamp::from_millis(((hh * 60 + mm) * 60_000) + 3 * 86_400_000);
        let office = DailyWindow::parse("09:00-17:00").expect("valid");
        assert!(office.contains(at(9, 0)) && office.contains(at(16, 59)));
        assert!(!office.contains(at(17, 0)) && !office.contains(at(8, 59)));
        let night = DailyWindow::parse("22:00-06:00").expect("valid");
        assert!(night.contains(at(23, 0)) && night.contains(at(5, 59)) && !night.contains(at(12, 0)));
        assert!(DailyWindow::parse("10:00-10:00").is_err());
        assert!(DailyWindow::parse("24:00-10:00").is_err());
    }
}
