//! Evidence: the facts that decided a diagnosis, as data, written in words a person can check.

use std::fmt;
use std::time::Duration;

use mend_types::{LastExit, ProcessEvidence, StopReason, Timestamp, Unit, format_duration};

use crate::rank::Finding;
use crate::{Component, Propagation};

/// A resource that runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Resident memory against `max_memory_bytes` (or a container limit).
    Memory,
    /// Open file descriptors against the process's limit.
    FileDescriptors,
    /// Disk space used against the file system's size.
    Disk,
}

impl Resource {
    fn unit(self) -> Unit {
        match self {
            Self::Memory | Self::Disk => Unit::Bytes,
            Self::FileDescriptors => Unit::Plain,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::FileDescriptors => "open file descriptors",
            Self::Disk => "disk use",
        }
    }
}

/// A series' move, as evidence: which series, from what to what, when.
#[derive(Clone, Debug, PartialEq)]
pub struct Shift {
    /// The component.
    pub component: Component,
    /// The metric.
    pub metric: String,
    /// The instance (replica, pod), when the series is per instance.
    pub instance: Option<String>,
    /// The unit of its values.
    pub unit: Unit,
    /// Its baseline median.
    pub from: f64,
    /// The level it held.
    pub to: f64,
    /// When it began.
    pub at: Timestamp,
    /// Its sustained robust z-score.
    pub z: f64,
}

impl From<&Finding> for Shift {
    fn from(finding: &Finding) -> Self {
        Self {
            component: finding.component.clone(),
            metric: finding.metric.clone(),
            instance: finding.instance.clone(),
            unit: finding.unit,
            from: finding.baseline.median,
            to: finding.level,
            at: finding.onset.unwrap_or(finding.at),
            z: finding.z,
        }
    }
}

impl Shift {
    /// `latency_p99_seconds of web` or `cpu_usage_cores of carts (carts-5ff6-fzj9z)`.
    pub fn series(&self) -> String {
        match &self.instance {
            Some(instance) => format!("{} of {} ({instance})", self.metric, self.component),
            None => format!("{} of {}", self.metric, self.component),
        }
    }

    fn verb(&self) -> &'static str {
        if self.to >= self.from { "rose" } else { "fell" }
    }
}

impl fmt::Display for Shift {
    /// `latency_p99_seconds of web rose from 40 ms to 900 ms at 12:00:05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} from {} to {} at {}",
            self.series(),
            self.verb(),
            self.unit.format(self.from),
            self.unit.format(self.to),
            clock(self.at)
        )
    }
}

/// One fact behind a diagnosis.
#[derive(Clone, Debug, PartialEq)]
pub enum Evidence {
    /// A replica's process ended (not by mend's own planned stop).
    Exited {
        /// The replica.
        replica: u32,
        /// When.
        at: Timestamp,
        /// How.
        exit: LastExit,
    },
    /// A replica's process ended this often within the window.
    Exits {
        /// The replica.
        replica: u32,
        /// How many times.
        count: usize,
        /// Within how long.
        within: Duration,
        /// The last one.
        last: LastExit,
    },
    /// mend gave up restarting a replica.
    GaveUp {
        /// The replica.
        replica: u32,
        /// When.
        at: Timestamp,
    },
    /// mend replaced a live process, and why.
    Replaced {
        /// The replica.
        replica: u32,
        /// When.
        at: Timestamp,
        /// Why.
        reason: StopReason,
    },
    /// A probe got no answer in time, with what the process did meanwhile.
    ProbeTimeout {
        /// The replica.
        replica: u32,
        /// When.
        at: Timestamp,
        /// What /proc showed during the wait.
        process: Option<ProcessEvidence>,
    },
    /// Probes failed this often.
    ProbeFailures {
        /// The replica.
        replica: u32,
        /// How many.
        count: usize,
        /// The last reason.
        last_reason: String,
    },
    /// A replica is not ready.
    Unready {
        /// The replica.
        replica: u32,
        /// Since when.
        at: Timestamp,
    },
    /// The proxy took a replica out of rotation.
    Ejected {
        /// The replica.
        replica: u32,
        /// When.
        at: Timestamp,
        /// Why, and what its siblings answered meanwhile.
        ejection: crate::EjectionFacts,
    },
    /// A resource is close to its limit.
    NearLimit {
        /// The replica, when per replica.
        replica: Option<u32>,
        /// Which resource.
        resource: Resource,
        /// How much is used.
        used: f64,
        /// The limit.
        limit: f64,
    },
    /// A resource's trend reaches its limit soon.
    Forecast {
        /// The replica, when per replica.
        replica: Option<u32>,
        /// Which resource.
        resource: Resource,
        /// How much is used.
        used: f64,
        /// The limit.
        limit: f64,
        /// Seconds until the trend reaches it.
        seconds: f64,
    },
    /// A series moved away from its baseline.
    Shift(Shift),
    /// A series moved after a dependency's did, along the calls.
    FollowsDependency {
        /// The victim's move.
        victim: Shift,
        /// The cause's move.
        cause: Shift,
        /// From the victim to the cause along the calls (the victim excluded), or from the caller to
        /// the victim for load.
        path: Vec<Component>,
        /// Which way it travelled.
        propagation: Propagation,
    },
    /// The calls from one service to another along an incident's path, as the proxy counted them or the
    /// kept spans showed them.
    Calls {
        /// Who calls.
        caller: Component,
        /// Who is called.
        callee: Component,
        /// Share of the calls that failed, 0..1, when known.
        error_ratio: Option<f64>,
        /// 99th percentile latency of the calls, seconds, when known.
        p99_seconds: Option<f64>,
    },
    /// One instance moved while its siblings did not.
    Outlier {
        /// The instance's move.
        shift: Shift,
        /// How many sibling instances stayed within their baseline.
        siblings_normal: usize,
    },
    /// A service's logs changed (a new error template, a template's unusual rate), and when, against
    /// the first move of its own series.
    Logged {
        /// The log signal's evidence line (`orders started logging `connection refused <*>` (error)`).
        text: String,
        /// Since when.
        since: Timestamp,
        /// The service's first anomalous move in the incident, when it had one.
        first_move: Option<Shift>,
    },
    /// A firing signal, in its own words.
    Signal {
        /// Its name.
        name: String,
        /// Its evidence line.
        text: String,
    },
}

/// `orders'`, `web's`.
fn possessive(name: &str) -> String {
    if name.ends_with('s') { format!("{name}'") } else { format!("{name}'s") }
}

/// `HH:MM:SS` (UTC) of a timestamp.
pub(crate) fn clock(at: Timestamp) -> String {
    let text = at.to_string();
    text.get(11..19).map_or(text.clone(), str::to_owned)
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited { replica, at, exit } => write!(f, "replica {replica} ended at {}: {exit}", clock(*at)),
            Self::Exits { replica, count, within, last } => {
                write!(f, "replica {replica} ended {count} times within {} (last: {last})", format_duration(*within))
            }
            Self::GaveUp { replica, at } => {
                write!(f, "mend gave up restarting replica {replica} at {} (restart limit reached)", clock(*at))
            }
            Self::Replaced { replica, at, reason } => {
                write!(f, "mend replaced replica {replica} at {}: {}", clock(*at), reason.describe())
            }
            Self::ProbeTimeout { replica, at, process } => {
                write!(f, "replica {replica} did not answer its probe in time at {}", clock(*at))?;
                match process {
                    Some(process) if process.is_stopped() => f.write_str(" (the process was stopped, state T)"),
                    Some(process) => write!(
                        f,
                        " (state {}, {} of CPU in {})",
                        process.state,
                        Unit::Seconds.format(process.cpu_seconds),
                        Unit::Seconds.format(process.window_seconds)
                    ),
                    None => Ok(()),
                }
            }
            Self::ProbeFailures { replica, count, last_reason } => {
                write!(f, "replica {replica} failed {count} probes (last: {last_reason})")
            }
            Self::Unready { replica, at } => write!(f, "replica {replica} not ready since {}", clock(*at)),
            Self::Ejected { replica, at, ejection } => f.write_str(&ejection.describe(*replica, *at)),
            Self::NearLimit { replica, resource, used, limit } => {
                let unit = resource.unit();
                write!(
                    f,
                    "{}{} at {} of its limit {} ({:.0}%)",
                    replica.map(|r| format!("replica {r}: ")).unwrap_or_default(),
                    resource.noun(),
                    unit.format(*used),
                    unit.format(*limit),
                    100.0 * used / limit
                )
            }
            Self::Forecast { replica, resource, used, limit, seconds } => {
                let unit = resource.unit();
                write!(
                    f,
                    "{}{} at {} reaches its limit {} in {} at the current trend",
                    replica.map(|r| format!("replica {r}: ")).unwrap_or_default(),
                    resource.noun(),
                    unit.format(*used),
                    unit.format(*limit),
                    Unit::Seconds.format(*seconds)
                )
            }
            Self::Shift(shift) => write!(f, "{shift}"),
            Self::FollowsDependency { victim, cause, path, propagation } => {
                let lag = victim.at.as_millis().saturating_sub(cause.at.as_millis()).max(0);
                let when = if lag == 0 {
                    "at the same time as".to_owned()
                } else {
                    format!("{} after", Unit::Seconds.format(lag as f64 / 1000.0))
                };
                let instance = cause.instance.as_ref().map(|i| format!(" ({i})")).unwrap_or_default();
                let cause_text = format!(
                    "{} {}{instance} {} from {} to {}",
                    possessive(cause.component.as_str()),
                    cause.metric,
                    cause.verb(),
                    cause.unit.format(cause.from),
                    cause.unit.format(cause.to)
                );
                let calls = match propagation {
                    Propagation::FromDependency => match path.split_last() {
                        Some((_, [])) | None => format!("{} is called by {}", cause.component, victim.component),
                        Some((_, between)) => {
                            let between: Vec<String> = between.iter().map(ToString::to_string).collect();
                            format!("{} calls {} through {}", victim.component, cause.component, between.join(" → "))
                        }
                    },
                    Propagation::FromCaller => {
                        format!("{} calls {}", cause.component, victim.component)
                    }
                };
                write!(f, "{victim}, {when} {cause_text}; {calls}")
            }
            Self::Calls { caller, callee, error_ratio, p99_seconds } => {
                write!(f, "calls from {caller} to {callee}:")?;
                if let Some(ratio) = error_ratio {
                    write!(f, " {:.0}% failed", 100.0 * ratio)?;
                }
                if let Some(p99) = p99_seconds {
                    let comma = if error_ratio.is_some() { "," } else { "" };
                    write!(f, "{comma} p99 {}", Unit::Seconds.format(*p99))?;
                }
                Ok(())
            }
            Self::Outlier { shift, siblings_normal } => {
                let siblings = if *siblings_normal == 1 { "its sibling" } else { "its siblings" };
                write!(f, "{shift} while {siblings} ({siblings_normal}) stayed at their baseline")
            }
            Self::Logged { text, since, first_move } => {
                write!(f, "{text} since {}", clock(*since))?;
                let Some(shift) = first_move else { return Ok(()) };
                // In floating point: replayed or scraped timestamps can be anywhere in i64.
                let lag = shift.at.as_millis() as f64 - since.as_millis() as f64;
                let when = if lag == 0.0 {
                    "at the same time as".to_owned()
                } else if lag > 0.0 {
                    format!("{} before", Unit::Seconds.format(lag / 1000.0))
                } else {
                    format!("{} after", Unit::Seconds.format(-lag / 1000.0))
                };
                let instance = shift.instance.as_ref().map(|i| format!(" ({i})")).unwrap_or_default();
                write!(
                    f,
                    ", {when} its {}{instance} {} from {} to {}",
                    shift.metric,
                    shift.verb(),
                    shift.unit.format(shift.from),
                    shift.unit.format(shift.to)
                )
            }
            Self::Signal { name, text } => write!(f, "signal {name}: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_placed_against_the_first_move_says_before_or_after_even_at_extreme_times() {
        let shift = |at: i64| Shift {
            component: Component::new("orders"),
            metric: "cpu".to_owned(),
            instance: None,
            unit: Unit::Ratio,
            from: 0.1,
            to: 0.9,
            at: Timestamp::from_millis(at),
            z: 9.0,
        };
        let logged = |since: i64, at: i64| {
            Evidence::Logged {
                text: "orders started logging `pool exhausted <*>` (error)".to_owned(),
                since: Timestamp::from_millis(since),
                first_move: Some(shift(at)),
            }
            .to_string()
        };
        assert!(logged(1_000_000, 1_030_000).contains("30 s before its cpu rose"), "{}", logged(1_000_000, 1_030_000));
        assert!(logged(1_030_000, 1_000_000).contains("after its cpu"), "{}", logged(1_030_000, 1_000_000));
        assert!(logged(1_000_000, 1_000_000).contains("at the same time as its cpu"));
        // Replayed data can carry any timestamp: no overflow, still a sentence.
        assert!(logged(i64::MIN, i64::MAX).contains("before its cpu"));
        assert!(logged(i64::MAX, i64::MIN).contains("after its cpu"));
    }
}
