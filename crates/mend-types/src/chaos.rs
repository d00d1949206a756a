//! The faults mend's chaos injects on purpose (`mend chaos`, the chaos monkey, game days), by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A fault that chaos injects into a service, for a bounded time, reverting by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChaosFault {
    /// SIGKILL one replica (the supervisor restarts it).
    Kill,
    /// SIGSTOP one replica for the duration, SIGCONT after unless mend replaced it.
    Hang,
    /// Burn CPU in one replica (its `/fault/cpu` knob).
    Cpu,
    /// Leak memory in one replica (its `/fault/leak` knob).
    Leak,
    /// Slow replies (the replica's `/fault/slow` knob, or the proxy's injected latency).
    Slow,
    /// Error replies (the replica's `/fault/errors` knob, or the proxy's injected status).
    Errors,
    /// The proxy refuses one caller's requests to the service: a cut caller → callee edge.
    Partition,
}

impl ChaosFault {
    /// Every fault, in the order the docs list them.
    pub const ALL: [ChaosFault; 7] = [
        ChaosFault::Kill,
        ChaosFault::Hang,
        ChaosFault::Cpu,
        ChaosFault::Leak,
        ChaosFault::Slow,
        ChaosFault::Errors,
        ChaosFault::Partition,
    ];

    /// The stable snake_case name (`kill`, `hang`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Hang => "hang",
            Self::Cpu => "cpu",
            Self::Leak => "leak",
            Self::Slow => "slow",
            Self::Errors => "errors",
            Self::Partition => "partition",
        }
    }

    /// Whether the fault hits one replica (kill, hang, cpu, leak) rather than the whole service.
    pub fn per_replica(self) -> bool {
        matches!(self, Self::Kill | Self::Hang | Self::Cpu | Self::Leak)
    }
}

impl fmt::Display for ChaosFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`ChaosFault`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFault(pub String);

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = ChaosFault::ALL.iter().map(|fault| fault.as_str()).collect();
        write!(f, "unknown fault {:?} (expected one of: {})", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownFault {}

impl FromStr for ChaosFault {
    type Err = UnknownFault;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|fault| fault.as_str() == text).ok_or_else(|| UnknownFault(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_explained() {
        for fault in ChaosFault::ALL {
            assert_eq!(fault.as_str().parse::<ChaosFault>(), Ok(fault));
            assert_eq!(serde_json::to_string(&fault).expect("json"), format!("\"{fault}\""));
        }
        assert_eq!(
            "stop".parse::<ChaosFault>().map_err(|e| e.to_string()),
            Err("unknown fault \"stop\" (expected one of: kill, hang, cpu, leak, slow, errors, partition)".to_owned())
        );
    }
}
