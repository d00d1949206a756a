//! Log analysis, pure: variables masked ([`mask`]), levels found in common formats ([`level`]), JSON
//! lines read as level and message ([`structured`]), messages mined online into templates by Drain
//! ([`drain`]), one bounded miner per service with counts and examples per template ([`miner`]).
//! No IO, no clock: lines and their times come in.
//!
//! ```
//! use mend_logs::{DrainConfig, Level, LogMiner};
//! use mend_types::Timestamp;
//!
//! let mut miner = LogMiner::new(DrainConfig::default());
//! let at = Timestamp::from_millis(0);
//! miner.observe("ERROR connection refused to 10.0.0.7:5432", at);
//! let seen = miner.observe("ERROR connection refused to 10.0.0.9:5432", at);
//! assert!(!seen.new_template);
//! assert_eq!(seen.level, Level::Error);
//! assert_eq!(miner.patterns()[0].template, "connection refused to <*>:<*>");
//! ```

pub mod drain;
pub mod level;
pub mod mask;
pub mod miner;
pub mod structured;

pub use drain::{Drain, DrainConfig, Mined, TemplateId};
pub use level::Level;
pub use miner::{LogMiner, Observation, Pattern};
