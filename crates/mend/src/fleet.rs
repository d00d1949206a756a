//! The fleet at the binary's edge: starts `mend-fleet` when the config has `[fleet]`, telling it this
//! host's services' health (from the supervisor) and open incidents (from the heal stage).

use std::sync::{Arc, Mutex, PoisonError};

use mend_config::Config;
use mend_fleet::{FleetHandle, FleetSetup, IncidentSummary, ServiceHealth};
use mend_supervisor::Supervisor;
use mend_types::Clock;

/// The open incidents, as the heal stage last left them (it writes, the fleet reads).
pub(crate) type OpenIncidents = Arc<Mutex<Vec<IncidentSummary>>>;

/// The fleet's setup, if `config` has `[fleet]`: its host name and TLS files read before anything starts,
/// so that an unreadable certificate stops mend before any replica runs.
pub(crate) fn prepare(config: &Config) -> anyhow::Result<Option<FleetSetup>> {
    Ok(config.fleet.clone().map(FleetSetup::new).transpose()?)
}

/// Starts taking part in the fleet, if it was set up; never waits for etcd.
pub(crate) fn start(
    setup: Option<FleetSetup>,
    supervisor: &Arc<Supervisor>,
    open_incidents: &OpenIncidents,
    clock: Arc<dyn Clock>,
) -> Option<(FleetHandle, tokio::task::JoinHandle<()>)> {
    let setup = setup?;
    let supervisor = Arc::downgrade(supervisor);
    let incidents = open_incidents.clone();
    let local = Box::new(move || {
        let incidents = incidents.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let services = supervisor.upgrade().map(|supervisor| health(&supervisor, &incidents)).unwrap_or_default();
        (services, incidents)
    });
    let (handle, task) = FleetHandle::start_with(setup, clock, local);
    tracing::info!(host = %handle.host(), "taking part in the fleet");
    Some((handle, task))
}

/// Each service's health: healthy when every replica is ready, or still starting for the first time (never
/// ready, not restarted, not failed: a fleet that starts at once is not a fleet incident), and no open
/// incident involves it.
fn health(supervisor: &Supervisor, incidents: &[IncidentSummary]) -> Vec<ServiceHealth> {
    supervisor
        .services()
        .iter()
        .map(|service| {
            let statuses = service.statuses();
            let name = service.config().name.to_string();
            let replicas = statuses.len() as u32;
            let ready = statuses.iter().filter(|status| status.ready).count() as u32;
            let in_incident = incidents.iter().any(|incident| incident.services.contains(&name));
            let starting = |status: &mend_supervisor::ReplicaStatus| {
                !status.ever_ready && status.restarts == 0 && !status.failed()
            };
            let all_well = statuses.iter().all(|status| status.ready || starting(status));
            ServiceHealth { healthy: all_well && !in_incident, name, replicas, ready }
        })
        .collect()
}
