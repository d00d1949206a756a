//! The PromQL functions: range-vector functions over one series' window, and instant-vector
//! functions over a whole vector.

use std::collections::HashMap;

use crate::ast::RangeFn;
use crate::labels::{Labels, METRIC_NAME};
use crate::math::{self, Bucket};
use crate::value::Sample;

/// One series' points inside a range selector's window at one evaluation time.
pub(crate) struct Window<'a> {
    /// The points, oldest first; never empty.
    pub(crate) points: &'a [(i64, f64)],
    /// The window's (excluded) lower bound, in milliseconds.
    pub(crate) start_ms: i64,
    /// The window's (included) upper bound, in milliseconds.
    pub(crate) end_ms: i64,
    /// The selector's range, in milliseconds.
    pub(crate) range_ms: i64,
}

/// Applies a range function to one window; `None` when the function has no answer for it (for
/// example `rate` over fewer than two points).
pub(crate) fn range_fn(func: RangeFn, window: &Window<'_>, param: f64) -> Option<f64> {
    let points = window.points;
    let values = || points.iter().map(|&(_, value)| value);
    match func {
        RangeFn::Rate => extrapolated_rate(window, true, true),
        RangeFn::Increase => extrapolated_rate(window, true, false),
        RangeFn::Delta => extrapolated_rate(window, false, false),
        RangeFn::Irate => instant_value(points, true),
        RangeFn::Idelta => instant_value(points, false),
        RangeFn::Deriv => deriv(points),
        RangeFn::Resets => Some(points.windows(2).filter(|pair| pair[1].1 < pair[0].1).count() as f64),
        RangeFn::Changes => Some(
            points
                .windows(2)
                .filter(|pair| !(pair[1].1 == pair[0].1 || (pair[1].1.is_nan() && pair[0].1.is_nan())))
                .count() as f64,
        ),
        RangeFn::AvgOverTime => math::mean(values()),
        RangeFn::SumOverTime => Some(math::kahan_sum(values())),
        RangeFn::CountOverTime => Some(points.len() as f64),
        RangeFn::LastOverTime => points.last().map(|&(_, value)| value),
        RangeFn::MinOverTime => values().reduce(|min, value| if value < min || min.is_nan() { value } else { min }),
        RangeFn::MaxOverTime => values().reduce(|max, value| if value > max || max.is_nan() { value } else { max }),
        RangeFn::QuantileOverTime => Some(math::quantile(param, &mut values().collect::<Vec<f64>>())),
        RangeFn::StddevOverTime => Some(math::stddev_over_time(values())),
    }
}

/// `rate`, `increase` and `delta`, with Prometheus 3's extrapolation.
///
/// The change over the window (corrected for counter resets: a drop means the counter restarted
/// from zero, so the value before the drop is added back) is extrapolated from the span covered
/// by the first and last points toward the window's edges: all the way to an edge if the gap to
/// it is under 1.1 × the average interval between points, else by half an average interval
/// (the series is assumed to start or end there). A counter is never extrapolated below zero:
/// the start extrapolation stops where a straight line through the points would cross zero.
fn extrapolated_rate(window: &Window<'_>, is_counter: bool, is_rate: bool) -> Option<f64> {
    let points = window.points;
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut prev = first_v;
        for &(_, value) in &points[1..] {
            if value < prev {
                result += prev;
            }
            prev = value;
        }
    }
    let mut duration_to_start = (first_t - window.start_ms) as f64 / 1000.0;
    let mut duration_to_end = (window.end_ms - last_t) as f64 / 1000.0;
    let sampled_interval = (last_t - first_t) as f64 / 1000.0;
    let average_interval = sampled_interval / (points.len() - 1) as f64;
    let threshold = average_interval * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_interval / 2.0;
    }
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let duration_to_zero = sampled_interval * (first_v / result);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_interval / 2.0;
    }
    let mut factor = (sampled_interval + duration_to_start + duration_to_end) / sampled_interval;
    if is_rate {
        factor /= window.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two points only.
fn instant_value(points: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    let [.., (prev_t, prev_v), (last_t, last_v)] = points else {
        return None;
    };
    let mut result = if is_rate && last_v < prev_v { *last_v } else { last_v - prev_v };
    let interval_ms = last_t - prev_t;
    if interval_ms == 0 {
        return None;
    }
    if is_rate {
        result /= interval_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `deriv`: the slope of the least-squares line through the points, per second.
fn deriv(points: &[(i64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    // Times are taken relative to the first point to keep the sums small (Prometheus #2674).
    let intercept_time = points[0].0;
    let init_y = points[0].1;
    let mut const_y = true;
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0_f64, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    for (idx, &(t, y)) in points.iter().enumerate() {
        if const_y && idx > 0 && y != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = math::kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = math::kahan_inc(y, sum_y, c_y);
        (sum_xy, c_xy) = math::kahan_inc(x * y, sum_xy, c_xy);
        (sum_x2, c_x2) = math::kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        return Some(if init_y.is_infinite() { f64::NAN } else { 0.0 });
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    Some(cov_xy / var_x)
}

/// `histogram_quantile(φ, buckets)` over classic `_bucket` series: samples are grouped by their
/// labels without `le`; each group answers with its labels without `le` and `__name__`. Samples
/// without a parsable `le` are ignored.
pub(crate) fn histogram_quantile(phi: f64, input: Vec<Sample>) -> Vec<Sample> {
    let mut group_idx: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<(Labels, Vec<Bucket>)> = Vec::new();
    for sample in input {
        let Some(upper_bound) = sample.labels.get("le").and_then(parse_go_float) else {
            continue;
        };
        let key = sample.labels.filtered(|name| name != "le");
        let idx = *group_idx.entry(key).or_insert_with(|| {
            groups.push((sample.labels.filtered(|name| name != "le" && name != METRIC_NAME), Vec::new()));
            groups.len() - 1
        });
        groups[idx].1.push(Bucket { upper_bound, count: sample.value });
    }
    groups
        .into_iter()
        .map(|(labels, mut buckets)| Sample { labels, value: math::bucket_quantile(phi, &mut buckets) })
        .collect()
}

/// Parses a float as Go's `strconv.ParseFloat` does for `le` values (`+Inf`, `inf`, `1e3`, ...).
fn parse_go_float(text: &str) -> Option<f64> {
    // Rust's parser accepts the same decimal forms and, case-insensitively, `inf`, `infinity` and
    // `nan` with an optional sign; Go's hexadecimal and underscore forms never occur in `le`.
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_floats_parse_like_go() {
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_go_float("0.25"), Some(0.25));
        assert_eq!(parse_go_float("1e3"), Some(1000.0));
        assert_eq!(parse_go_float("abc"), None);
        assert_eq!(parse_go_float(""), None);
    }
}
