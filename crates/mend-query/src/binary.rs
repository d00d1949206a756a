//! Binary operators: arithmetic, comparisons (filtering or `bool`) and set operators, between
//! scalars and vectors, with Prometheus's vector matching (`on`, `ignoring`, `group_left/right`).

use std::collections::{HashMap, HashSet};

use crate::ast::{BinOp, Cardinality, Matching};
use crate::error::EvalError;
use crate::labels::{Labels, METRIC_NAME};
use crate::value::Sample;

/// Applies an arithmetic or comparison operator to two numbers: the value, and whether a
/// comparison holds (always true for arithmetic). A comparison's value is its left operand.
pub(crate) fn apply(op: BinOp, lhs: f64, rhs: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (lhs + rhs, true),
        BinOp::Sub => (lhs - rhs, true),
        BinOp::Mul => (lhs * rhs, true),
        BinOp::Div => (lhs / rhs, true),
        // Rust's `%` on floats is C's fmod, as Go's math.Mod.
        BinOp::Mod => (lhs % rhs, true),
        BinOp::Pow => (lhs.powf(rhs), true),
        BinOp::Eq => (lhs, lhs == rhs),
        BinOp::Ne => (lhs, lhs != rhs),
        BinOp::Gt => (lhs, lhs > rhs),
        BinOp::Lt => (lhs, lhs < rhs),
        BinOp::Ge => (lhs, lhs >= rhs),
        BinOp::Le => (lhs, lhs <= rhs),
        // Set operators never reach number arithmetic (the parser refuses them on scalars).
        BinOp::And | BinOp::Or | BinOp::Unless => (f64::NAN, false),
    }
}

/// scalar `op` scalar; comparisons between scalars always carry `bool`.
pub(crate) fn scalar_scalar(op: BinOp, lhs: f64, rhs: f64) -> f64 {
    let (value, holds) = apply(op, lhs, rhs);
    if op.is_comparison() { f64::from(u8::from(holds)) } else { value }
}

/// vector `op` scalar, or scalar `op` vector when `scalar_on_left`.
///
/// Arithmetic and `bool` drop the metric name; a filtering comparison keeps the sample as it
/// is, with the vector's value even when the scalar is on the left.
pub(crate) fn vector_scalar(
    op: BinOp,
    vector: Vec<Sample>,
    scalar: f64,
    scalar_on_left: bool,
    return_bool: bool,
) -> Vec<Sample> {
    let mut out = Vec::with_capacity(vector.len());
    for sample in vector {
        let (lhs, rhs) = if scalar_on_left { (scalar, sample.value) } else { (sample.value, scalar) };
        let (mut value, mut keep) = apply(op, lhs, rhs);
        if op.is_comparison() && scalar_on_left {
            value = rhs;
        }
        if return_bool {
            value = f64::from(u8::from(keep));
            keep = true;
        }
        if !keep {
            continue;
        }
        let labels = if !op.is_comparison() || return_bool { sample.labels.without_name() } else { sample.labels };
        out.push(Sample { labels, value });
    }
    out
}

/// The key two samples must share to match: the `on` labels, or all labels but the `ignoring`
/// ones and the metric name.
fn signature(labels: &Labels, on: bool, names: &[String]) -> String {
    let mut key = String::new();
    for (name, value) in labels.iter() {
        let listed = names.iter().any(|n| n == name);
        let included = if on { listed } else { !listed && name != METRIC_NAME };
        if included {
            key.push_str(name);
            key.push('\u{ff}');
            key.push_str(value);
            key.push('\u{ff}');
        }
    }
    key
}

/// The labels a signature is made of, for error messages.
fn matched_labels(labels: &Labels, matching: &Matching) -> Labels {
    let names = &matching.labels;
    labels.filtered(|name| {
        let listed = names.iter().any(|n| n == name);
        if matching.on { listed } else { !listed && name != METRIC_NAME }
    })
}

/// `and`, `or`, `unless`: samples keep their labels and values.
pub(crate) fn set_operation(op: BinOp, lhs: Vec<Sample>, rhs: Vec<Sample>, matching: &Matching) -> Vec<Sample> {
    let sig = |sample: &Sample| signature(&sample.labels, matching.on, &matching.labels);
    match op {
        BinOp::And => {
            if lhs.is_empty() || rhs.is_empty() {
                return Vec::new();
            }
            let right: HashSet<String> = rhs.iter().map(sig).collect();
            lhs.into_iter().filter(|sample| right.contains(&sig(sample))).collect()
        }
        BinOp::Or => {
            if lhs.is_empty() || rhs.is_empty() {
                let mut out = lhs;
                out.extend(rhs);
                return out;
            }
            let left: HashSet<String> = lhs.iter().map(sig).collect();
            let mut out = lhs;
            out.extend(rhs.into_iter().filter(|sample| !left.contains(&sig(sample))));
            out
        }
        BinOp::Unless => {
            if lhs.is_empty() || rhs.is_empty() {
                return lhs;
            }
            let right: HashSet<String> = rhs.iter().map(sig).collect();
            lhs.into_iter().filter(|sample| !right.contains(&sig(sample))).collect()
        }
        _ => Vec::new(),
    }
}

/// vector `op` vector for arithmetic and comparisons: one-to-one, many-to-one (`group_left`) or
/// one-to-many (`group_right`).
pub(crate) fn vector_vector(
    op: BinOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    matching: &Matching,
    return_bool: bool,
) -> Result<Vec<Sample>, EvalError> {
    if lhs.is_empty() || rhs.is_empty() {
        return Ok(Vec::new());
    }
    // The control flow handles one-to-one and many-to-one; one-to-many swaps the sides and swaps
    // the operands back when computing values.
    let swapped = matches!(matching.card, Cardinality::OneToMany(_));
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let include: &[String] = match &matching.card {
        Cardinality::ManyToOne(include) | Cardinality::OneToMany(include) => include,
        Cardinality::OneToOne | Cardinality::ManyToMany => &[],
    };

    let mut one_by_sig: HashMap<String, &Sample> = HashMap::with_capacity(one.len());
    for sample in &one {
        let sig = signature(&sample.labels, matching.on, &matching.labels);
        if let Some(previous) = one_by_sig.insert(sig, sample) {
            return Err(EvalError::ManyToMany {
                group: matched_labels(&sample.labels, matching).to_string(),
                side: if swapped { "left" } else { "right" },
                first: sample.labels.to_string(),
                second: previous.labels.to_string(),
            });
        }
    }

    // Per signature: nothing yet for one-to-one, the result label sets for many-to-one.
    let mut matched: HashMap<String, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for sample in &many {
        let sig = signature(&sample.labels, matching.on, &matching.labels);
        let Some(other) = one_by_sig.get(&sig) else { continue };
        let (lhs_value, rhs_value) = if swapped { (other.value, sample.value) } else { (sample.value, other.value) };
        let (mut value, keep) = apply(op, lhs_value, rhs_value);
        if return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let labels = result_labels(&sample.labels, &other.labels, op, matching, include, return_bool);
        match matched.get_mut(&sig) {
            Some(_) if matching.card == Cardinality::OneToOne => return Err(EvalError::ImplicitManyToOne),
            Some(inserted) => {
                if !inserted.insert(labels.clone()) {
                    return Err(EvalError::GroupingNotUnique);
                }
            }
            None => {
                let mut inserted = HashSet::new();
                if matching.card != Cardinality::OneToOne {
                    inserted.insert(labels.clone());
                }
                matched.insert(sig, inserted);
            }
        }
        out.push(Sample { labels, value });
    }
    Ok(out)
}

/// The labels of a vector/vector result, from the "many" side's sample.
fn result_labels(
    many: &Labels,
    one: &Labels,
    op: BinOp,
    matching: &Matching,
    include: &[String],
    return_bool: bool,
) -> Labels {
    let drop_name = !op.is_comparison() || return_bool;
    let names = &matching.labels;
    let mut labels = many.filtered(|name| {
        if drop_name && name == METRIC_NAME {
            return false;
        }
        if matching.card == Cardinality::OneToOne {
            let listed = names.iter().any(|n| n == name);
            return if matching.on { listed } else { !listed };
        }
        true
    });
    for name in include {
        labels = labels.with(name, one.get(name).unwrap_or(""));
    }
    labels
}
