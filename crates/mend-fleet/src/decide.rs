//! The fleet's decisions, pure: what etcd holds (read at one revision) and the request in, a verdict
//! out. The edge ([`crate::FleetHandle`]) reads, asks these functions, and writes the answer back in a
//! transaction that fails if anything it read changed meanwhile; so two hosts asking at once cannot
//! both take the last permit.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::state::{FleetIncident, HostState};

/// What a host asks before an automatic, disruptive action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitRequest {
    /// The service acted on.
    pub service: String,
    /// The action (its label, e.g. `restart`).
    pub action: String,
    /// Whether it takes replicas out of service (and so counts against the fleet's `max_unavailable`).
    pub disrupts: bool,
}

/// The fleet's permits as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermitView {
    /// Actions counted in the current window of the fleet budget, by every host.
    pub n_window_actions: u32,
    /// Disruptive actions in flight on the service, across hosts.
    pub n_in_flight: u32,
    /// The open fleet incident on the service, if the leader declared one.
    pub incident: Option<FleetIncident>,
}

/// The fleet's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Actions per window across the fleet.
    pub max_actions_per_window: u32,
    /// The window.
    pub window: Duration,
    /// Disruptive actions in flight on one service across hosts.
    pub max_unavailable: u32,
}

/// Why the fleet refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetRefusal {
    /// The fleet's action budget for this window is spent.
    Budget {
        /// Actions allowed per window.
        max: u32,
        /// The window.
        window: Duration,
    },
    /// Too many hosts are acting on the service at once.
    Unavailable {
        /// In flight now.
        in_flight: u32,
        /// Allowed.
        max: u32,
    },
    /// The leader declared a fleet incident on the service: no host acts on it alone.
    FleetIncident {
        /// Hosts where it is unhealthy.
        n_unhealthy: usize,
        /// Hosts that run it.
        n_hosts: usize,
    },
    /// Other hosts kept writing permits between this host's read and write: nothing was confirmed.
    Contention {
        /// Transactions tried.
        attempts: usize,
    },
}

impl FleetRefusal {
    /// Whether the refusal is a budget's, which escalates the incident (as the local budget does).
    pub fn escalates(&self) -> bool {
        matches!(self, Self::Budget { .. } | Self::FleetIncident { .. })
    }
}

impl fmt::Display for FleetRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Budget { max, window } => {
                write!(f, "fleet action budget spent ({max} per {}s across hosts)", window.as_secs())
            }
            Self::Unavailable { in_flight, max } => {
                write!(f, "{in_flight} hosts are acting on this service now; fleet max_unavailable is {max}")
            }
            Self::Contention { attempts } => {
                write!(f, "no fleet permit confirmed after {attempts} transactions (other hosts writing at once)")
            }
            Self::FleetIncident { n_unhealthy, n_hosts } => write!(
                f,
                "fleet incident: unhealthy on {n_unhealthy} of {n_hosts} hosts at once; no host acts alone, escalated"
            ),
        }
    }
}

/// Whether the fleet grants `request`, given what etcd holds.
pub fn decide_permit(request: &PermitRequest, view: &PermitView, limits: &Limits) -> Result<(), FleetRefusal> {
    debug_assert!(!request.service.is_empty(), "a permit names its service");
    if let Some(incident) = &view.incident {
        return Err(FleetRefusal::FleetIncident { n_unhealthy: incident.unhealthy.len(), n_hosts: incident.n_hosts });
    }
    if view.n_window_actions >= limits.max_actions_per_window {
        return Err(FleetRefusal::Budget { max: limits.max_actions_per_window, window: limits.window });
    }
    if request.disrupts && view.n_in_flight >= limits.max_unavailable {
        return Err(FleetRefusal::Unavailable { in_flight: view.n_in_flight, max: limits.max_unavailable });
    }
    Ok(())
}

/// The index of the fixed window (since the Unix epoch) that `now_ms` falls in, and the milliseconds
/// left in it.
pub fn window_of(now_ms: i64, window: Duration) -> (i64, i64) {
    let length = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
    let index = now_ms.div_euclid(length);
    (index, (index + 1) * length - now_ms)
}

/// What a host that cannot reach etcd does before an action: heal within its local budgets (mend never
/// stops protecting its own host because the fleet is away), and say so.
pub const UNREACHABLE: &str = "fleet unreachable: local budget only";

/// The leader's decision: each service unhealthy on more than `ratio` of the hosts that run it, and on
/// at least two, is a fleet incident. Hosts whose state is older than `stale_ms` at `now_ms` do not count.
pub fn fleet_incidents(states: &[HostState], ratio: f64, now_ms: i64, stale_ms: i64) -> Vec<FleetIncident> {
    let mut by_service: BTreeMap<&str, (usize, Vec<String>)> = BTreeMap::new();
    for state in states.iter().filter(|state| now_ms - state.at_ms <= stale_ms) {
        for service in &state.services {
            let entry = by_service.entry(service.name.as_str()).or_default();
            entry.0 += 1;
            if !service.healthy {
                entry.1.push(state.host.clone());
            }
        }
    }
    by_service
        .into_iter()
        .filter(|(_, (n_hosts, unhealthy))| unhealthy.len() >= 2 && unhealthy.len() as f64 > ratio * *n_hosts as f64)
        .map(|(service, (n_hosts, unhealthy))| FleetIncident {
            service: service.to_owned(),
            n_hosts,
            unhealthy,
            since_ms: now_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ServiceHealth;

    fn limits() -> Limits {
        Limits { max_actions_per_window: 2, window: Duration::from_secs(600), max_unavailable: 1 }
    }

    fn check(view: PermitView, expected: Result<(), &str>) {
        let request = PermitRequest { service: "web".into(), action: "restart".into(), disrupts: true };
        let got = decide_permit(&request, &view, &limits()).map_err(|refusal| refusal.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "{view:?}");
    }

    #[test]
    fn permits_as_data() {
        check(PermitView::default(), Ok(()));
        check(PermitView { n_window_actions: 1, ..PermitView::default() }, Ok(()));
        // A rollback spends the budget and takes no capacity.
        let rollback = PermitRequest { service: "web".into(), action: "rollback".into(), disrupts: false };
        let busy = PermitView { n_in_flight: 1, ..PermitView::default() };
        assert_eq!(decide_permit(&rollback, &busy, &limits()), Ok(()));
        check(
            PermitView { n_window_actions: 2, ..PermitView::default() },
            Err("fleet action budget spent (2 per 600s across hosts)"),
        );
        check(
            PermitView { n_in_flight: 1, ..PermitView::default() },
            Err("1 hosts are acting on this service now; fleet max_unavailable is 1"),
        );
        let incident =
            FleetIncident { service: "web".into(), n_hosts: 3, unhealthy: vec!["a".into(), "b".into()], since_ms: 0 };
        check(
            PermitView { incident: Some(incident), ..PermitView::default() },
            Err("fleet incident: unhealthy on 2 of 3 hosts at once; no host acts alone, escalated"),
        );
    }

    #[test]
    fn windows_are_fixed_since_the_epoch() {
        assert_eq!(window_of(0, Duration::from_secs(10)), (0, 10_000));
        assert_eq!(window_of(9_999, Duration::from_secs(10)), (0, 1));
        assert_eq!(window_of(10_000, Duration::from_secs(10)), (1, 10_000));
    }

    fn host(name: &str, at_ms: i64, services: &[(&str, bool)]) -> HostState {
        HostState {
            host: name.into(),
            at_ms,
            services: services
                .iter()
                .map(|(service, healthy)| ServiceHealth {
                    name: (*service).into(),
                    replicas: 1,
                    ready: u32::from(*healthy),
                    healthy: *healthy,
                })
                .collect(),
            incidents: Vec::new(),
        }
    }

    #[test]
    fn a_service_unhealthy_on_most_hosts_is_a_fleet_incident() {
        let states = [
            host("a", 1_000, &[("web", false), ("db", false)]),
            host("b", 1_000, &[("web", false), ("db", true)]),
            host("c", 1_000, &[("web", true), ("db", true)]),
        ];
        let incidents = fleet_incidents(&states, 0.5, 1_000, 10_000);
        assert_eq!(
            incidents,
            vec![FleetIncident {
                service: "web".into(),
                n_hosts: 3,
                unhealthy: vec!["a".into(), "b".into()],
                since_ms: 1_000
            }]
        );
        // One host alone is a host's incident, never the fleet's; half is not most.
        assert_eq!(fleet_incidents(&states[..1], 0.5, 1_000, 10_000), Vec::new());
        let half = [
            host("a", 1_000, &[("web", false)]),
            host("b", 1_000, &[("web", false)]),
            host("c", 1_000, &[("web", true)]),
            host("d", 1_000, &[("web", true)]),
        ];
        assert_eq!(fleet_incidents(&half, 0.5, 1_000, 10_000), Vec::new());
        // A host whose state is stale does not count either way.
        let stale = [
            host("a", 0, &[("web", false)]),
            host("b", 20_000, &[("web", false)]),
            host("c", 20_000, &[("web", true)]),
        ];
        assert_eq!(fleet_incidents(&stale, 0.5, 20_000, 10_000), Vec::new());
    }
}
