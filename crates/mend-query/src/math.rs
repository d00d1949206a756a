//! Numeric kernels shared by functions and aggregations, written to give Prometheus's results
//! bit for bit where it matters (Kahan sums, means, quantiles, histogram buckets).

use std::cmp::Ordering;

/// One step of Kahan–Neumaier summation, as Prometheus's `kahanSumInc`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A compensated sum (`sum`, `sum_over_time`).
pub(crate) fn kahan_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, c) = values.into_iter().fold((0.0, 0.0), |(sum, c), value| kahan_inc(value, sum, c));
    if sum.is_infinite() { sum } else { sum + c }
}

/// The mean as Prometheus 3 computes it for `avg` and `avg_over_time`: a compensated sum divided
/// at the end, switching to an incremental mean only if the sum would overflow. `None` when empty.
pub(crate) fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values = values.into_iter();
    let first = values.next()?;
    let (mut sum, mut count, mut c) = (first, 1.0_f64, 0.0);
    let mut incremental: Option<f64> = None;
    for value in values {
        count += 1.0;
        let mean_so_far = match incremental {
            Some(mean_so_far) => mean_so_far,
            None => {
                let (new_sum, new_c) = kahan_inc(value, sum, c);
                if !new_sum.is_infinite() {
                    (sum, c) = (new_sum, new_c);
                    continue;
                }
                c /= count - 1.0;
                sum / (count - 1.0)
            }
        };
        let q = (count - 1.0) / count;
        let (new_mean, new_c) = kahan_inc(value / count, q * mean_so_far, q * c);
        incremental = Some(new_mean);
        c = new_c;
    }
    Some(match incremental {
        Some(mean_so_far) => mean_so_far + c,
        None => sum / count + c / count,
    })
}

/// Population standard deviation (Welford), as the `stddev` aggregation. `None` when empty.
pub(crate) fn stddev_aggregation(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values = values.into_iter();
    let first = values.next()?;
    let (mut mean, mut m2, mut count) = (first, 0.0, 1.0_f64);
    for value in values {
        count += 1.0;
        let delta = value - mean;
        mean += delta / count;
        m2 += delta * (value - mean);
    }
    Some((m2 / count).sqrt())
}

/// Population standard deviation with compensated sums, as `stddev_over_time`.
pub(crate) fn stddev_over_time(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0_f64, 0.0, 0.0, 0.0, 0.0);
    for value in values {
        count += 1.0;
        let delta = value - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (value - (mean + c_mean)), aux, c_aux);
    }
    ((aux + c_aux) / count).sqrt()
}

/// Orders values as Prometheus's quantile sort does: NaN below everything.
pub(crate) fn nan_first(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The φ-quantile of `values` with linear interpolation between closest ranks (`quantile`,
/// `quantile_over_time`); -Inf below 0, +Inf above 1, NaN for NaN φ or no values.
pub(crate) fn quantile(phi: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| nan_first(*a, *b));
    let n = values.len() as f64;
    let rank = phi * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    // Both indices are within 0..n by construction.
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// One classic histogram bucket: its upper bound (`le`) and cumulative count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) upper_bound: f64,
    pub(crate) count: f64,
}

/// Relative tolerance under which two bucket counts are considered equal (Prometheus's
/// `smallDeltaTolerance`): such differences come from floating-point error in `rate`.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// The φ-quantile of a classic histogram, as Prometheus's `BucketQuantile`: buckets are sorted,
/// equal bounds merged, counts forced monotonic, and the quantile interpolated linearly inside
/// the bucket that holds its rank (the lowest bucket starts at 0 unless its bound is ≤ 0; a rank
/// in the +Inf bucket answers the highest finite bound). NaN without a +Inf bucket, with fewer
/// than two buckets, or with no observations.
pub(crate) fn bucket_quantile(phi: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.upper_bound.partial_cmp(&b.upper_bound).unwrap_or(Ordering::Equal));
    match buckets.last() {
        Some(last) if last.upper_bound == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    coalesce(buckets);
    ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = phi * observations;
    // The first bucket (the +Inf one excluded) whose count reaches the rank.
    let idx = buckets[..buckets.len() - 1].partition_point(|bucket| bucket.count < rank);
    if idx == buckets.len() - 1 {
        return buckets[buckets.len() - 2].upper_bound;
    }
    if idx == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let bucket_end = buckets[idx].upper_bound;
    let mut count = buckets[idx].count;
    let mut bucket_start = 0.0;
    if idx > 0 {
        bucket_start = buckets[idx - 1].upper_bound;
        count -= buckets[idx - 1].count;
        rank -= buckets[idx - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Merges buckets with the same upper bound (sorted input), adding their counts.
fn coalesce(buckets: &mut Vec<Bucket>) {
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for &bucket in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper_bound == bucket.upper_bound => last.count += bucket.count,
            _ => merged.push(bucket),
        }
    }
    *buckets = merged;
}

/// Removes decreases in cumulative counts and numerically insignificant differences.
fn ensure_monotonic(buckets: &mut [Bucket]) {
    let Some(first) = buckets.first() else { return };
    let mut prev = first.count;
    for bucket in buckets.iter_mut().skip(1) {
        let curr = bucket.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) || curr < prev {
            bucket.count = prev;
            continue;
        }
        prev = curr;
    }
}

/// Prometheus's `almost.Equal`: relative comparison, with absolute handling near zero.
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Go's `math.Max`: +Inf wins over NaN, NaN wins over everything else.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        return f64::INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b { a } else { b }
}

/// Go's `math.Min`: -Inf wins over NaN, NaN wins over everything else.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_bucket_quantile(phi: f64, buckets: &[(f64, f64)], expected: f64) {
        let mut buckets: Vec<Bucket> =
            buckets.iter().map(|&(upper_bound, count)| Bucket { upper_bound, count }).collect();
        let got = bucket_quantile(phi, &mut buckets);
        assert!(
            got == expected || (got.is_nan() && expected.is_nan()) || (got - expected).abs() < 1e-12,
            "φ={phi}: got {got}, expected {expected}"
        );
    }

    #[test]
    fn bucket_quantile_interpolates_and_handles_edges() {
        let inf = f64::INFINITY;
        // 10 observations ≤ 1, 20 ≤ 2 (10 inside (1, 2]), 20 in total.
        check_bucket_quantile(0.5, &[(1.0, 10.0), (2.0, 20.0), (inf, 20.0)], 1.0);
        check_bucket_quantile(0.75, &[(1.0, 10.0), (2.0, 20.0), (inf, 20.0)], 1.5);
        check_bucket_quantile(0.25, &[(1.0, 10.0), (2.0, 20.0), (inf, 20.0)], 0.5);
        // Rank in the +Inf bucket: the highest finite bound.
        check_bucket_quantile(0.99, &[(1.0, 10.0), (2.0, 20.0), (inf, 30.0)], 2.0);
        // Unsorted input, non-monotonic counts.
        check_bucket_quantile(0.5, &[(inf, 20.0), (2.0, 19.0), (1.0, 20.0)], 0.5);
        // No +Inf bucket, no observations, one bucket.
        check_bucket_quantile(0.5, &[(1.0, 10.0), (2.0, 20.0)], f64::NAN);
        check_bucket_quantile(0.5, &[(1.0, 0.0), (inf, 0.0)], f64::NAN);
        check_bucket_quantile(0.5, &[(inf, 5.0)], f64::NAN);
        // Lowest bound ≤ 0 is returned as is.
        check_bucket_quantile(0.1, &[(-1.0, 5.0), (1.0, 10.0), (inf, 10.0)], -1.0);
        check_bucket_quantile(-0.5, &[(1.0, 10.0), (inf, 10.0)], f64::NEG_INFINITY);
        check_bucket_quantile(1.5, &[(1.0, 10.0), (inf, 10.0)], f64::INFINITY);
    }

    #[test]
    fn mean_switches_to_incremental_on_overflow() {
        assert_eq!(mean([1.0, 2.0, 3.0, 4.0]), Some(2.5));
        assert!(mean([f64::MAX, f64::MAX, f64::MAX]).is_some_and(|m| (m / f64::MAX - 1.0).abs() < 1e-12));
        assert_eq!(mean([f64::INFINITY, 1.0]), Some(f64::INFINITY));
        assert!(mean([f64::INFINITY, f64::NEG_INFINITY]).is_some_and(f64::is_nan));
        assert_eq!(mean(std::iter::empty()), None);
    }

    #[test]
    fn go_max_and_min_follow_go() {
        assert!(go_max(f64::NAN, 1.0).is_nan());
        assert_eq!(go_max(f64::NAN, f64::INFINITY), f64::INFINITY);
        assert_eq!(go_min(f64::NAN, f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert_eq!(go_max(1.0, 2.0), 2.0);
        assert_eq!(go_min(1.0, 2.0), 1.0);
    }

    #[test]
    fn quantile_puts_nan_first() {
        assert_eq!(quantile(0.5, &mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(quantile(0.75, &mut [1.0, 2.0, 3.0, 4.0]), 3.25);
        assert!(quantile(0.0, &mut [3.0, f64::NAN]).is_nan());
        assert_eq!(quantile(1.0, &mut [3.0, f64::NAN]), 3.0);
    }
}
