//! Property tests: evaluation never panics on any sample values (finite, NaN, ±Inf, extremes),
//! and `sum by`/`count by` over a partition add up to the total.

use mend_query::{EvalOptions, Labels, MemoryStorage, Query, Series, Value};
use proptest::prelude::*;

/// Every supported function, aggregation and operator, over the metric `m`.
const QUERIES: &[&str] = &[
    "m",
    "m offset 30s",
    "-m",
    "rate(m[1m])",
    "irate(m[1m])",
    "increase(m[2m])",
    "delta(m[1m])",
    "idelta(m[1m])",
    "deriv(m[1m])",
    "resets(m[5m])",
    "changes(m[5m])",
    "avg_over_time(m[1m])",
    "min_over_time(m[1m])",
    "max_over_time(m[1m])",
    "sum_over_time(m[1m])",
    "count_over_time(m[1m])",
    "last_over_time(m[1m])",
    "quantile_over_time(0.9, m[1m])",
    "quantile_over_time(scalar(m), m[1m])",
    "stddev_over_time(m[1m])",
    "absent_over_time(m[1m])",
    "histogram_quantile(0.9, m)",
    "histogram_quantile(scalar(m), rate(m[1m]))",
    "abs(m)",
    "clamp_min(m, 0)",
    "clamp_max(m, scalar(m))",
    "absent(m)",
    "vector(scalar(m))",
    "time() - scalar(m)",
    "sum by (group) (m)",
    "avg without (le) (m)",
    "min(m)",
    "max by (le) (m)",
    "count(m)",
    "stddev(m)",
    "topk(2, m)",
    "bottomk(scalar(m), m)",
    "quantile(0.5, m)",
    "quantile by (group) (scalar(m), m)",
    "m + m",
    "m - on(group) group_left m",
    "m * ignoring(le) group_left sum without (le) (m)",
    "m / m",
    "m % 3",
    "m ^ m",
    "m == m",
    "m != bool m",
    "m > on(group, le) m",
    "m < bool 0",
    "2 >= m",
    "m <= bool m",
    "m and m > 0",
    "m or vector(1)",
    "m unless m < 0",
];

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN_POSITIVE),
        1 => proptest::num::f64::ANY,
    ]
}

/// Up to 6 series of `m` with labels `group` and `le`, up to 30 points each, 1 ms to 40 s apart.
fn storage() -> impl Strategy<Value = MemoryStorage> {
    let le = prop_oneof![Just("0.1"), Just("1"), Just("+Inf"), Just("x"), Just("")];
    let group = prop_oneof![Just("a"), Just("b"), Just("c")];
    prop::collection::vec((group, le, prop::collection::vec((1i64..40_000, value()), 0..30)), 0..6).prop_map(|series| {
        let mut seen = std::collections::HashSet::new();
        let series = series
            .into_iter()
            .filter(|(group, le, _)| seen.insert((*group, *le)))
            .map(|(group, le, gaps)| {
                let mut t = 0;
                let points = gaps
                    .into_iter()
                    .map(|(gap, v)| {
                        t += gap;
                        (t, v)
                    })
                    .collect();
                Series { labels: Labels::new([("__name__", "m"), ("group", group), ("le", le)]), points }
            })
            .collect();
        MemoryStorage::new(series)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn evaluation_never_panics(storage in storage(), at_ms in 0i64..1_300_000, step_ms in 1i64..100_000) {
        for text in QUERIES {
            let query = Query::parse(text).expect("supported query");
            // Errors (duplicate label sets, many-to-many matches, bad topk parameters) are fine;
            // panics are not, and evaluation is deterministic.
            let first = query.eval_instant(&storage, at_ms, &EvalOptions::default());
            let second = query.eval_instant(&storage, at_ms, &EvalOptions::default());
            prop_assert_eq!(format!("{first:?}"), format!("{second:?}"));
            let _ = query.eval_range(&storage, at_ms, at_ms + 20 * step_ms, step_ms, &EvalOptions::default());
        }
    }

    #[test]
    fn sum_by_of_a_partition_equals_the_total(
        values in prop::collection::vec((0usize..3, 0usize..4, -1e9f64..1e9), 1..40),
    ) {
        // Series m{group, instance}; keep one value per label set.
        let mut seen = std::collections::HashSet::new();
        let series: Vec<Series> = values
            .into_iter()
            .filter(|(group, instance, _)| seen.insert((*group, *instance)))
            .map(|(group, instance, v)| Series {
                labels: Labels::new([
                    ("__name__", "m".to_owned()),
                    ("group", group.to_string()),
                    ("instance", instance.to_string()),
                ]),
                points: vec![(1_000, v)],
            })
            .collect();
        let magnitude: f64 = series.iter().map(|s| s.points[0].1.abs()).sum();
        let n_series = series.len();
        let storage = MemoryStorage::new(series);
        let eval = |text: &str| match Query::parse(text).expect("valid").eval_instant(&storage, 1_000, &EvalOptions::default()) {
            Ok(Value::Vector(samples)) => samples.iter().map(|s| s.value).collect::<Vec<f64>>(),
            other => panic!("{text}: {other:?}"),
        };
        let total = eval("sum(m)");
        let parts = eval("sum by (group) (m)");
        let parts_without = eval("sum without (group) (m)");
        prop_assert_eq!(total.len(), 1);
        let tolerance = 1e-9 * magnitude.max(1.0);
        prop_assert!((parts.iter().sum::<f64>() - total[0]).abs() <= tolerance);
        prop_assert!((parts_without.iter().sum::<f64>() - total[0]).abs() <= tolerance);
        prop_assert_eq!(eval("count by (group) (m)").iter().sum::<f64>(), n_series as f64);
    }
}
