//! What hosts publish to etcd and read from it (JSON values): a host's services and open incidents,
//! the leader's fleet incidents, the fleet as one host sees it. Bounded: a state lists at most
//! [`MAX_SERVICES`] services and [`MAX_INCIDENTS`] incidents, so a value stays far below etcd's limits.

use serde::{Deserialize, Serialize};

/// Services listed in a host's published state, at most.
pub const MAX_SERVICES: usize = 256;
/// Open incidents listed in a host's published state, at most (the newest).
pub const MAX_INCIDENTS: usize = 32;

/// One service's health on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The service.
    pub name: String,
    /// Replicas configured.
    pub replicas: u32,
    /// Replicas ready.
    pub ready: u32,
    /// Every replica ready and no open incident rooted here.
    pub healthy: bool,
}

/// One open incident on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSummary {
    /// Its id on that host.
    pub id: u64,
    /// Its state (`open`, `acting`, ...).
    pub state: String,
    /// Its diagnosis.
    pub name: String,
    /// Its services.
    pub services: Vec<String>,
}

/// What one host publishes under `PREFIX/state/HOST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The host.
    pub host: String,
    /// When it was published (Unix milliseconds).
    pub at_ms: i64,
    /// Its services.
    pub services: Vec<ServiceHealth>,
    /// Its open incidents.
    pub incidents: Vec<IncidentSummary>,
}

impl HostState {
    /// Within the bounds: services and incidents beyond them are left out.
    pub fn bounded(mut self) -> Self {
        self.services.truncate(MAX_SERVICES);
        if self.incidents.len() > MAX_INCIDENTS {
            self.incidents.drain(..self.incidents.len() - MAX_INCIDENTS);
        }
        self
    }

    /// The same services and incidents (what changed is worth publishing at once).
    pub fn same_content(&self, other: &Self) -> bool {
        self.services == other.services && self.incidents == other.incidents
    }
}

/// A fleet incident, written by the leader under `PREFIX/incidents/SERVICE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetIncident {
    /// The service.
    pub service: String,
    /// Hosts that run it.
    pub n_hosts: usize,
    /// Hosts where it is unhealthy.
    pub unhealthy: Vec<String>,
    /// When the leader saw it (Unix milliseconds).
    pub since_ms: i64,
}

/// One host as another sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    /// Its name.
    pub host: String,
    /// Registered (its lease alive).
    pub registered: bool,
    /// What it published last, if anything.
    pub state: Option<HostState>,
}

/// The fleet as this host sees it (`GET /api/v1/fleet`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    /// This host.
    pub host: String,
    /// Whether etcd answered the last time this host asked.
    pub reachable: bool,
    /// Why not, if it did not.
    pub error: Option<String>,
    /// When etcd last answered (Unix milliseconds).
    pub last_contact_ms: Option<i64>,
    /// The elected leader, if known.
    pub leader: Option<String>,
    /// Every host, this one included, by name.
    pub hosts: Vec<HostView>,
    /// The leader's fleet incidents.
    pub incidents: Vec<FleetIncident>,
}
