//! The crate's two error types: refusing a query at parse time, and failing an evaluation.

use crate::value::ValueType;

/// Why a query text was refused by [`Query::parse`](crate::Query::parse).
///
/// A config loader shows this next to the rule's file and line, so each message names the
/// construct at fault.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not valid PromQL (the message is promql-parser's).
    #[error("invalid PromQL: {message}")]
    Syntax {
        /// What the parser reported.
        message: String,
    },
    /// A PromQL function outside the supported subset.
    #[error("unsupported function \"{name}\"")]
    UnsupportedFunction {
        /// The function's name.
        name: String,
    },
    /// An aggregation operator outside the supported subset.
    #[error("unsupported aggregation \"{name}\"")]
    UnsupportedAggregation {
        /// The operator's name.
        name: String,
    },
    /// A binary operator outside the supported subset.
    #[error("unsupported operator \"{name}\"")]
    UnsupportedOperator {
        /// The operator.
        name: String,
    },
    /// Any other construct outside the supported subset (subqueries, `@`, ...).
    #[error("unsupported: {construct}")]
    Unsupported {
        /// What was found.
        construct: &'static str,
    },
    /// A regular expression in a label matcher that does not compile.
    #[error("invalid regular expression {pattern:?} for label {label:?}")]
    InvalidRegex {
        /// The label the matcher applies to.
        label: String,
        /// The pattern as written.
        pattern: String,
        /// The compiler's complaint.
        source: Box<regex::Error>,
    },
    /// A regular expression in a label matcher whose automaton would exceed the size limit.
    #[error(
        "regular expression {pattern:?} for label {label:?} is too large: it would compile to more than {limit} bytes \
         (simplify it, e.g. fewer or smaller bounded repetitions)"
    )]
    RegexTooLarge {
        /// The label the matcher applies to.
        label: String,
        /// The pattern as written (its start, when long).
        pattern: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// A duration (range or offset) too large to count in milliseconds.
    #[error("duration {what} is too large")]
    DurationTooLarge {
        /// Which duration, as written.
        what: String,
    },
    /// A range selector with a zero range.
    #[error("range selector {selector} must have a positive range")]
    EmptyRange {
        /// The selector, as written.
        selector: String,
    },
    /// An argument or operand of the wrong type (normally caught by the parser already).
    #[error("expected {expected} in {context}, got {actual}")]
    Type {
        /// What the position needs.
        expected: ValueType,
        /// What was given.
        actual: ValueType,
        /// Where.
        context: String,
    },
}

/// Why an evaluation failed. The same query can fail at one time and succeed at another, since
/// most of these depend on the data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A range query that would produce more points per series than allowed.
    #[error(
        "exceeded maximum resolution of {max_steps} points per timeseries (asked for {n_steps}); \
         decrease the query resolution (increase the step)"
    )]
    TooManySteps {
        /// Points the query asked for.
        n_steps: u64,
        /// The limit from [`EvalOptions`](crate::EvalOptions).
        max_steps: u64,
    },
    /// A range query whose bounds or step make no sense.
    #[error("invalid range query: start {start_ms} ms, end {end_ms} ms, step {step_ms} ms ({reason})")]
    InvalidRange {
        /// Start, in milliseconds since the epoch.
        start_ms: i64,
        /// End, in milliseconds since the epoch.
        end_ms: i64,
        /// Step, in milliseconds.
        step_ms: i64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An option that makes no sense.
    #[error("invalid evaluation option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A range query over an expression that is neither a scalar nor an instant vector.
    #[error("invalid expression type {actual} for range query, must be scalar or instant vector")]
    RangeQueryType {
        /// The query's type.
        actual: ValueType,
    },
    /// An operation produced two samples with the same labels (for example a function dropping
    /// the metric name of two series that differ only by it).
    #[error("vector cannot contain metrics with the same labelset: {labels}")]
    DuplicateLabelset {
        /// The labels that occur twice.
        labels: String,
    },
    /// One-to-one or many-to-one matching found several series on the "one" side.
    #[error(
        "found duplicate series for the match group {group} on the {side} hand-side of the operation: \
         [{first}, {second}];many-to-many matching not allowed: matching labels must be unique on one side"
    )]
    ManyToMany {
        /// The matching labels' values.
        group: String,
        /// `left` or `right`.
        side: &'static str,
        /// One of the clashing series.
        first: String,
        /// The other.
        second: String,
    },
    /// One-to-one matching found several series on the left for one on the right.
    #[error("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")]
    ImplicitManyToOne,
    /// Many-to-one matching whose result labels are not unique.
    #[error("multiple matches for labels: grouping labels must ensure unique matches")]
    GroupingNotUnique,
    /// A `topk`/`bottomk` parameter that is not a usable integer.
    #[error("scalar value {value} overflows int64 (parameter of {aggregation})")]
    InvalidParameter {
        /// The aggregation.
        aggregation: &'static str,
        /// The value given.
        value: f64,
    },
    /// A bug: the validated expression tree did not have the shape the evaluator expects.
    #[error("internal error: {reason}")]
    Internal {
        /// What went wrong.
        reason: String,
    },
}
