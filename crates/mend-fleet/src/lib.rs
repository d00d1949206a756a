//! mend's fleet edge: many mends (one per host) coordinating through etcd, never through a consensus of
//! their own. Each host registers under `PREFIX/hosts/HOST` with a lease kept alive while it runs,
//! publishes its services' health and open incidents under `PREFIX/state/HOST`, reads the others', takes
//! a lease-backed permit before an automatic disruptive action (a fleet budget per window and
//! `max_unavailable` per service across hosts, in etcd transactions), and campaigns for leadership under
//! `PREFIX/leader`; the leader declares fleet incidents under `PREFIX/incidents/SERVICE`.
//!
//! Invariants:
//! - the fleet never blocks local protection: nothing here is awaited by the supervisor, and a permit
//!   that etcd does not confirm within `permit_timeout` is [`PermitAnswer::Unreachable`], on which the
//!   heal stage acts within its local budgets alone ([`UNREACHABLE`]);
//! - a permit is granted only by a transaction that fails if any permit of the same window or service
//!   was written after the one read it was decided on ([`decide_permit`] is the decision, pure);
//! - everything a host writes lives on a lease: its registration, state and in-flight permits on its
//!   own (gone `lease_ttl` after it stops renewing it), its budget entries on a lease that ends with
//!   their window; a host cut off is seen by the others as gone when its lease expires, not before.

mod decide;
mod edge;
mod etcd;
mod state;
mod tls;

pub use decide::{
    FleetRefusal, Limits, PermitRequest, PermitView, UNREACHABLE, decide_permit, fleet_incidents, window_of,
};
pub use edge::{FleetError, FleetHandle, FleetPermit, FleetSetup, LocalState, PermitAnswer};
pub use etcd::EtcdError;
pub use state::{
    FleetIncident, FleetView, HostState, HostView, IncidentSummary, MAX_INCIDENTS, MAX_SERVICES, ServiceHealth,
};
pub use tls::TlsFileError;
