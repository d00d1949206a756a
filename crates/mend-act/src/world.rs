//! The services' state as the decision core sees it: a snapshot the edge builds from the supervisor.

use std::collections::BTreeMap;

use mend_types::ServiceName;

/// One replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView {
    /// Its index.
    pub index: u32,
    /// In the ready set.
    pub ready: bool,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceView {
    /// Its replicas (stable and canary).
    pub replicas: Vec<ReplicaView>,
}

impl ServiceView {
    /// Replicas in the ready set.
    pub fn n_ready(&self) -> usize {
        self.replicas.iter().filter(|r| r.ready).count()
    }

    /// Whether replica `index` is ready.
    pub fn is_ready(&self, index: u32) -> bool {
        self.replicas.iter().any(|r| r.index == index && r.ready)
    }
}

/// Every service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct World {
    /// By name.
    pub services: BTreeMap<ServiceName, ServiceView>,
}
