//! The route table mend publishes: ready backends, their release and the canary split.

use std::fmt;
use std::net::SocketAddr;

/// Which release a backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Release {
    /// The current release.
    Stable,
    /// The release being tried on a fraction of the traffic.
    Canary,
}

impl Release {
    /// `stable` or `canary`, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Canary => "canary",
        }
    }

    pub(crate) fn idx(self) -> usize {
        match self {
            Self::Stable => 0,
            Self::Canary => 1,
        }
    }
}

/// One process of one replica. A restarted replica is a new generation and therefore a new backend: it
/// starts with clean health state and ramps up through slow start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    /// The release the process runs.
    pub release: Release,
    /// Replica index within the service.
    pub index: u32,
    /// Process generation of that replica (a new process is a new generation).
    pub generation: u64,
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.release.as_str(), self.index, self.generation)
    }
}

/// A ready backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Identity of the process.
    pub id: BackendId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Relative share of traffic within its release (0 = none). Usually 1.
    pub weight: u32,
}

/// How traffic is split between the stable and the canary release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySplit {
    /// Percentage (0..=100, larger values count as 100) of unpinned requests sent to the canary release.
    pub weight_percent: u8,
    /// A request with this header set to this value goes to the canary; with another value, to stable.
    /// The name is matched case-insensitively, the value exactly.
    pub pin_header: Option<(String, String)>,
    /// A request carrying this cookie with this value goes to the canary; with another value, to stable.
    pub pin_cookie: Option<(String, String)>,
}

/// The backends that may receive traffic, published by mend through a `watch` channel.
///
/// Only ready backends belong here. Without a `canary` split every backend, whatever its release, is in
/// one pool; with one, each release is a pool and requests pick a pool first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTable {
    /// Ready backends.
    pub backends: Vec<Backend>,
    /// The canary split, if a canary is running.
    pub canary: Option<CanarySplit>,
}
