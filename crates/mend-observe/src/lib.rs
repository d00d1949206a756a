//! mend's observe stage: what is true about each replica right now.
//!
//! - [`probe`]: liveness/readiness/startup checks (http, tcp, exec) with the process evidence that tells a
//!   hang from overload;
//! - [`lag`]: how late mend's own event loop runs, so that a probe timeout during mend's own slowness is
//!   not blamed on the replica;
//! - [`process`]: per-process facts from /proc (state, CPU, memory, threads, fds, process groups);
//! - [`scrape`]: Prometheus/OpenMetrics scraping of service replicas and static targets;
//! - [`series`]: the in-memory series store with a bounded ring per series, compressed by [`chunk`];
//!   [`history`]: its recent points kept across a restart.
//!
//! Later stages (detect, diagnose) read samples from the series store; nothing here decides anything.

pub mod chunk;
pub mod history;
pub mod lag;
pub mod probe;
pub mod process;
pub mod scrape;
pub mod series;
pub mod sockets;
