//! Aggregation operators (`sum`, `avg`, `topk`, ...) over one instant vector, with `by`/`without`.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::ast::{AggrOp, Grouping};
use crate::error::EvalError;
use crate::labels::{Labels, METRIC_NAME};
use crate::math;
use crate::value::Sample;

/// Aggregates `input`; `param` is the value of `topk`/`bottomk`'s k or `quantile`'s φ.
pub(crate) fn aggregate(
    op: AggrOp,
    param: Option<f64>,
    grouping: &Grouping,
    input: Vec<Sample>,
) -> Result<Vec<Sample>, EvalError> {
    let mut group_idx: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<(Labels, Vec<Sample>)> = Vec::new();
    for sample in input {
        let key = group_labels(&sample.labels, grouping);
        let idx = match group_idx.get(&key) {
            Some(&idx) => idx,
            None => {
                groups.push((key.clone(), Vec::new()));
                group_idx.insert(key, groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[idx].1.push(sample);
    }
    if matches!(op, AggrOp::Topk | AggrOp::Bottomk) {
        return select_k(op, param.unwrap_or(f64::NAN), groups);
    }
    let phi = param.unwrap_or(f64::NAN);
    Ok(groups
        .into_iter()
        .filter_map(|(labels, samples)| {
            let values = samples.iter().map(|s| s.value);
            let value = match op {
                AggrOp::Sum => Some(math::kahan_sum(values)),
                AggrOp::Avg => math::mean(values),
                AggrOp::Count => Some(samples.len() as f64),
                AggrOp::Min => values.reduce(|min, value| if min > value || min.is_nan() { value } else { min }),
                AggrOp::Max => values.reduce(|max, value| if max < value || max.is_nan() { value } else { max }),
                AggrOp::Stddev => math::stddev_aggregation(values),
                AggrOp::Quantile => Some(math::quantile(phi, &mut values.collect::<Vec<f64>>())),
                AggrOp::Topk | AggrOp::Bottomk => None,
            };
            value.map(|value| Sample { labels, value })
        })
        .collect())
}

/// The labels of the group a sample falls in.
fn group_labels(labels: &Labels, grouping: &Grouping) -> Labels {
    match grouping {
        Grouping::By(names) => labels.filtered(|name| names.iter().any(|n| n == name)),
        Grouping::Without(names) => labels.filtered(|name| name != METRIC_NAME && !names.iter().any(|n| n == name)),
    }
}

/// `topk`/`bottomk`: the k largest (smallest) samples of each group, with their own labels,
/// largest (smallest) first; NaN counts as the smallest for `topk` and the largest for `bottomk`.
fn select_k(op: AggrOp, k: f64, groups: Vec<(Labels, Vec<Sample>)>) -> Result<Vec<Sample>, EvalError> {
    // Go converts with int64(k) after checking the range; NaN is refused the same way.
    if k.is_nan() || k >= i64::MAX as f64 || k < i64::MIN as f64 {
        return Err(EvalError::InvalidParameter { aggregation: op.name(), value: k });
    }
    let k = k as i64;
    if k < 1 {
        return Ok(Vec::new());
    }
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for (_, mut samples) in groups {
        samples.sort_by(|a, b| match op {
            AggrOp::Topk => nan_last(b.value, a.value, true),
            _ => nan_last(a.value, b.value, false),
        });
        samples.truncate(k);
        out.extend(samples);
    }
    Ok(out)
}

/// Compares for a sort where NaN goes last whichever the direction; `reversed` says the arguments
/// were swapped to sort descending.
fn nan_last(a: f64, b: f64, reversed: bool) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) if reversed => Ordering::Less,
        (true, false) => Ordering::Greater,
        (false, true) if reversed => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}
