//! A pure, IO-free evaluator for a subset of PromQL over an abstract [`Storage`], with Prometheus's semantics.
#![doc = include_str!("../README.md")]

mod aggregate;
mod ast;
mod binary;
mod error;
mod eval;
mod functions;
mod labels;
mod math;
mod parse;
mod query;
mod storage;
mod value;

pub use ast::Selector;
pub use error::{EvalError, QueryError};
pub use labels::{LabelMatcher, Labels, METRIC_NAME, MatchOp, REGEX_DFA_SIZE_LIMIT, REGEX_SIZE_LIMIT};
pub use query::{Comparison, ComparisonOp, DEFAULT_LOOKBACK_DELTA_MS, DEFAULT_MAX_STEPS, EvalOptions, Query};
pub use storage::{MemoryStorage, Storage};
pub use value::{STALE_MARKER_BITS, Sample, Series, Value, ValueType, is_stale_marker, stale_marker};
