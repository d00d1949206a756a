//! Incidents: signals grouped by service and time window and along the dependency graph, with a
//! lifecycle (open → acting → verifying → resolved | escalated) and a diagnosis.
//!
//! Pure: signals, events, the graph and the time come in; incidents and their changes come out. No IO,
//! no clock (time arrives with the input). The acting half of the lifecycle (acting, verifying) is driven
//! by `mend-act`, which owns the policies.
//!
//! - [`builtin`] turns lifecycle events into built-in diagnosis signals (`crashed`, `crash_loop`, `hung`,
//!   `memory_exhaustion`, `unhealthy`) and resolves them when the replica is ready again.
//! - [`graph`] is the dependency graph: declared `depends_on` plus the caller → callee edges the proxies
//!   observed.
//! - [`diagnose`] is the seam for diagnosis: a [`Diagnoser`] names the incident and ranks its services
//!   into a root and victims. [`BuiltinDiagnoser`] is the built-in rule set.
//! - [`ranked`] plugs `mend-diagnose` in: [`RankingDiagnoser`] asks the edge for the services' series and
//!   lifecycle facts and ranks the root cause across services, with a named diagnosis per service.
//! - [`book`] groups signals into incidents.

pub mod book;
pub mod builtin;
pub mod diagnose;
pub mod graph;
pub mod ranked;

pub use book::{IncidentBook, Observed};
pub use builtin::Builtins;
pub use diagnose::{BuiltinDiagnoser, Diagnoser, ObservationRequest, Observations};
pub use graph::DependencyGraph;
pub use ranked::RankingDiagnoser;
