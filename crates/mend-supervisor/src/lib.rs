//! Spawns, watches, stops and restarts the replicas of each service.
//!
//! The decisions live in pure modules ([`lifecycle`], [`backoff`], [`intensity`]); the IO lives in
//! [`runner`] (one task per replica), [`spawn`] (process creation on a dedicated thread), [`logs`],
//! [`pidfile`], [`orphans`] and [`supervisor`] (all services, dependency order, shutdown).

pub mod backoff;
pub mod detached;
pub mod intensity;
pub mod lifecycle;
pub mod logs;
pub mod orphans;
pub mod pidfile;
pub mod runner;
pub mod spawn;
pub mod statedir;
pub mod supervisor;

pub use lifecycle::{ReplicaState, Request, Unready};
pub use runner::{Control, ProcessStats, ReplicaHandle, ReplicaStatus, RunnerContext, TrafficControl, TrafficHook};
pub use spawn::{SHIM_SUBCOMMAND, Spawner, exec_shim, resolve_program};
pub use supervisor::{ControlError, ServiceHandle, Supervisor};
