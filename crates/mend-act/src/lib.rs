//! The act stage's decision core: remediation policies (`[[heal]]`), the [`Guard`] that grants every
//! action a [`Permit`], and the [`Healer`] that drives incidents through open → acting → verifying →
//! resolved | escalated.
//!
//! Pure: signals, events, operator commands, the services' state ([`World`]) and the time come in;
//! [`Decision`]s come out (records to journal, permits to execute, signals to publish). No IO, no clock.
//! The executor at the edge (the binary's `heal` module) journals each action before it runs and again
//! with its outcome, and acts through the supervisor and the proxies.
//!
//! Invariants (checked by the deterministic simulation in `tests/simulation.rs`):
//! - an action runs only with a [`Permit`], and only [`Guard`] makes permits;
//! - budgets (token buckets, global and per service), cooldowns and `max_unavailable` are never exceeded
//!   by policy actions; a service that is only a victim of an incident rooted elsewhere is never acted on;
//! - dry-run decides and records but never yields a permit to change anything;
//! - every incident ends resolved or escalated; a crash loop escalates instead of restarting for ever.

mod autoscale;
mod guard;
mod healer;
mod learner;
mod mann_whitney;
mod policy;
pub mod precursor;
pub mod rollout;
mod world;

pub use autoscale::{Autoscaler, Hold, Observation, Recommendation, averaged, cpu_query};
pub use guard::{Guard, Permit, Refusal};
pub use healer::{Decision, Healer, Settings};
pub use learner::{Learner, Order, Tally, TallyKey};
pub use mann_whitney::{MannWhitney, mann_whitney_greater};
pub use policy::{Policies, Target, default_policies, settling};
pub use precursor::{Cue, PrecursorDecision, PrecursorSettings, Precursors};
pub use world::{ReplicaView, ServiceView, World};
