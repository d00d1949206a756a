//! Spawns, watches, stops and restarts the replicas of each service.

pub mod backoff;
pub mod intensity;
pub mod lifecycle;
