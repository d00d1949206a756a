//! PromQL checks at config load: an expression mend cannot evaluate is refused before anything starts.

use mend_query::{Query, ValueType};

/// What an expression must evaluate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// An alerting rule: an instant vector (or a scalar).
    Rule,
    /// The series a detector or forecaster follows: an instant vector.
    Series,
}

/// Checks that `expr` parses, uses only what mend's query engine supports, and has the right type.
pub(crate) fn check(expr: &str, expect: Expect) -> Result<(), String> {
    let query = Query::parse(expr).map_err(|error| error.to_string())?;
    match (expect, query.value_type()) {
        (_, ValueType::Vector) | (Expect::Rule, ValueType::Scalar) => Ok(()),
        (Expect::Series, ValueType::Matrix) => {
            Err("a range vector cannot be followed point by point; wrap it in a function such as rate(...)".to_owned())
        }
        (_, other) => Err(format!("the expression yields a {other}, not an instant vector")),
    }
}
