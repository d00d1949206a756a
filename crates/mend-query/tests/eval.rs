//! Hand-computed evaluations as data: a small fixture storage and `check(expr, at, expected)` for
//! every function, aggregation and operator, with the arithmetic in the comments.

use mend_query::{EvalOptions, Labels, MemoryStorage, Query, Series, Value};

/// Seconds to milliseconds.
fn s(seconds: i64) -> i64 {
    seconds * 1000
}

fn series(labels: &[(&str, &str)], points: &[(i64, f64)]) -> Series {
    Series { labels: Labels::new(labels.iter().copied()), points: points.iter().map(|&(t, v)| (s(t), v)).collect() }
}

/// Points every 10 s from 0 to 100 s with the given values.
fn every_10s(values: [f64; 11]) -> Vec<(i64, f64)> {
    values.iter().enumerate().map(|(idx, &v)| (idx as i64 * 10, v)).collect()
}

/// The fixture (times in seconds):
/// - `requests_total{job="api",instance="a"}`: 0, 10, ..., 50 at t = 0..50, reset to 5 at t = 60,
///   then 15, 25, 35, 45 up to t = 100;
/// - `requests_total{job="api",instance="b"}`: 100, 102, ..., 120 at t = 0..100;
/// - `requests_total{job="web",instance="c"}`: 1, 6, 11 at t = 35, 45, 55 (starts and ends inside
///   most windows);
/// - `late_total{job="web"}`: 3, 6, 9 at t = 35, 45, 55;
/// - `temp{room="kitchen"}`: 20 21 19 22 22 18 23 20 21 21 24; `temp{room="cellar"}`: 10 with a
///   NaN at t = 50;
/// - `up` for a (1), b (0), c (1); `service_info` for a (team red) and b (team blue);
/// - `errors_total` with codes 500, 5000 and 404 at t = 100;
/// - `latency_seconds_bucket{job="api"}` at t = 100: le 0.1 → 10, 0.5 → 30, 1 → 35, +Inf → 40;
///   `empty_seconds_bucket` with no observations;
/// - `cpu_seconds_total` and `mem_bytes`, both `{job="api",instance="a"}`: same labels but the name.
fn storage() -> MemoryStorage {
    let nan = f64::NAN;
    MemoryStorage::new(vec![
        series(
            &[("__name__", "requests_total"), ("job", "api"), ("instance", "a")],
            &every_10s([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 5.0, 15.0, 25.0, 35.0, 45.0]),
        ),
        series(
            &[("__name__", "requests_total"), ("job", "api"), ("instance", "b")],
            &every_10s([100.0, 102.0, 104.0, 106.0, 108.0, 110.0, 112.0, 114.0, 116.0, 118.0, 120.0]),
        ),
        series(
            &[("__name__", "requests_total"), ("job", "web"), ("instance", "c")],
            &[(35, 1.0), (45, 6.0), (55, 11.0)],
        ),
        series(&[("__name__", "late_total"), ("job", "web")], &[(35, 3.0), (45, 6.0), (55, 9.0)]),
        series(
            &[("__name__", "temp"), ("room", "kitchen")],
            &every_10s([20.0, 21.0, 19.0, 22.0, 22.0, 18.0, 23.0, 20.0, 21.0, 21.0, 24.0]),
        ),
        series(
            &[("__name__", "temp"), ("room", "cellar")],
            &every_10s([10.0, 10.0, 10.0, 10.0, 10.0, nan, 10.0, 10.0, 10.0, 10.0, 10.0]),
        ),
        series(&[("__name__", "up"), ("job", "api"), ("instance", "a")], &every_10s([1.0; 11])),
        series(&[("__name__", "up"), ("job", "api"), ("instance", "b")], &every_10s([0.0; 11])),
        series(&[("__name__", "up"), ("job", "web"), ("instance", "c")], &every_10s([1.0; 11])),
        series(&[("__name__", "service_info"), ("instance", "a"), ("team", "red")], &every_10s([1.0; 11])),
        series(&[("__name__", "service_info"), ("instance", "b"), ("team", "blue")], &every_10s([1.0; 11])),
        series(&[("__name__", "errors_total"), ("code", "500")], &[(100, 1.0)]),
        series(&[("__name__", "errors_total"), ("code", "5000")], &[(100, 2.0)]),
        series(&[("__name__", "errors_total"), ("code", "404")], &[(100, 3.0)]),
        series(&[("__name__", "latency_seconds_bucket"), ("job", "api"), ("le", "0.1")], &[(100, 10.0)]),
        series(&[("__name__", "latency_seconds_bucket"), ("job", "api"), ("le", "0.5")], &[(100, 30.0)]),
        series(&[("__name__", "latency_seconds_bucket"), ("job", "api"), ("le", "1")], &[(100, 35.0)]),
        series(&[("__name__", "latency_seconds_bucket"), ("job", "api"), ("le", "+Inf")], &[(100, 40.0)]),
        series(&[("__name__", "empty_seconds_bucket"), ("le", "1")], &[(100, 0.0)]),
        series(&[("__name__", "empty_seconds_bucket"), ("le", "+Inf")], &[(100, 0.0)]),
        series(&[("__name__", "cpu_seconds_total"), ("job", "api"), ("instance", "a")], &every_10s([1.0; 11])),
        series(&[("__name__", "mem_bytes"), ("job", "api"), ("instance", "a")], &every_10s([2.0; 11])),
    ])
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn eval(expr: &str, at_s: i64) -> Value {
    let query = Query::parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
    query.eval_instant(&storage(), s(at_s), &EvalOptions::default()).unwrap_or_else(|err| panic!("{expr}: {err}"))
}

/// Checks an instant vector: `expected` lists `(labels as displayed, value)` in result order.
fn check(expr: &str, at_s: i64, expected: &[(&str, f64)]) {
    let Value::Vector(samples) = eval(expr, at_s) else { panic!("{expr}: not a vector") };
    let got: Vec<(String, f64)> = samples.iter().map(|s| (s.labels.to_string(), s.value)).collect();
    let same = got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| g.0 == e.0 && close(g.1, e.1));
    assert!(same, "{expr} @ {at_s}s\n got:      {got:?}\n expected: {expected:?}");
}

fn check_scalar(expr: &str, at_s: i64, expected: f64) {
    match eval(expr, at_s) {
        Value::Scalar(value) => assert!(close(value, expected), "{expr}: got {value}, expected {expected}"),
        other => panic!("{expr}: not a scalar: {other:?}"),
    }
}

fn check_err(expr: &str, at_s: i64, expected: &str) {
    let query = Query::parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
    match query.eval_instant(&storage(), s(at_s), &EvalOptions::default()) {
        Err(err) => assert_eq!(err.to_string(), expected, "{expr}"),
        Ok(value) => panic!("{expr}: expected an error, got {value:?}"),
    }
}

const A: &str = r#"{instance="a", job="api"}"#;
const B: &str = r#"{instance="b", job="api"}"#;
const C: &str = r#"{instance="c", job="web"}"#;

#[test]
fn selectors_and_matchers() {
    check(
        "requests_total",
        100,
        &[
            (r#"{__name__="requests_total", instance="a", job="api"}"#, 45.0),
            (r#"{__name__="requests_total", instance="b", job="api"}"#, 120.0),
            // Last point at 55 s, still within the 5 m lookback.
            (r#"{__name__="requests_total", instance="c", job="web"}"#, 11.0),
        ],
    );
    // Regexes are anchored: 5.. is 500 only, not 5000.
    check(r#"errors_total{code=~"5.."}"#, 100, &[(r#"{__name__="errors_total", code="500"}"#, 1.0)]);
    check(
        r#"errors_total{code=~"5.*"}"#,
        100,
        &[(r#"{__name__="errors_total", code="500"}"#, 1.0), (r#"{__name__="errors_total", code="5000"}"#, 2.0)],
    );
    check(
        r#"errors_total{code!~"5.."}"#,
        100,
        &[(r#"{__name__="errors_total", code="404"}"#, 3.0), (r#"{__name__="errors_total", code="5000"}"#, 2.0)],
    );
    check(r#"errors_total{code=~"4"}"#, 100, &[]);
    check(r#"{__name__=~"errors_.*", code="404"}"#, 100, &[(r#"{__name__="errors_total", code="404"}"#, 3.0)]);
    check(r#"errors_total{code!="500", code!="5000"}"#, 100, &[(r#"{__name__="errors_total", code="404"}"#, 3.0)]);
    // A missing label matches the empty string.
    check(r#"service_info{team=""}"#, 100, &[]);
    check(
        r#"up{team="", job="api"}"#,
        100,
        &[(r#"{__name__="up", instance="a", job="api"}"#, 1.0), (r#"{__name__="up", instance="b", job="api"}"#, 0.0)],
    );
}

#[test]
fn lookback_is_left_open_and_offset_shifts_time() {
    // The last point is at 100 s; at 400 s it is exactly 5 m old and out of the window (t - 5m, t].
    check("up", 400, &[]);
    let query = Query::parse(r#"up{instance="a"}"#).expect("valid");
    let value = query.eval_instant(&storage(), s(400) - 1, &EvalOptions::default()).expect("evaluates");
    assert_eq!(value, Value::Vector(vec![mend_query::Sample { labels: labels_of_up_a(), value: 1.0 }]));
    // A shorter lookback hides the series that ended at 55 s.
    let short = EvalOptions { lookback_delta_ms: 10_000, ..EvalOptions::default() };
    let Value::Vector(samples) =
        Query::parse("requests_total").expect("valid").eval_instant(&storage(), s(100), &short).expect("evaluates")
    else {
        panic!("not a vector")
    };
    assert_eq!(samples.len(), 2);
    // At 50 s: a = 50, b = 110, and c's latest point at or before 50 s is 6 (at 45 s).
    check(
        "requests_total offset 50s",
        100,
        &[
            (r#"{__name__="requests_total", instance="a", job="api"}"#, 50.0),
            (r#"{__name__="requests_total", instance="b", job="api"}"#, 110.0),
            (r#"{__name__="requests_total", instance="c", job="web"}"#, 6.0),
        ],
    );
    check(
        r#"requests_total{instance="a"} offset -10s"#,
        90,
        &[(r#"{__name__="requests_total", instance="a", job="api"}"#, 45.0)],
    );
}

fn labels_of_up_a() -> Labels {
    Labels::new([("__name__", "up"), ("instance", "a"), ("job", "api")])
}

#[test]
fn range_selector_alone_gives_raw_points_in_a_left_open_window() {
    let value = eval(r#"up{instance="a"}[30s]"#, 100);
    let expected = vec![Series { labels: labels_of_up_a(), points: vec![(s(80), 1.0), (s(90), 1.0), (s(100), 1.0)] }];
    assert_eq!(value, Value::Matrix(expected));
    // (50 s, 100 s] holds 5 points, not 6.
    check(r#"count_over_time(up{instance="a"}[50s])"#, 100, &[(A, 5.0)]);
}

#[test]
fn rate_increase_and_extrapolation() {
    // Window (40 s, 100 s]. a: 50 5 15 25 35 45 → 45 - 50 + 50 (reset) = 45 over 50 s; the first
    // point is 10 s from the start (< 1.1 × 10 s): extrapolate to both edges, × 60/50 → 54.
    // b: 110 → 120 = 10 → 12. c: 6 at 45 s, 11 at 55 s: 5 over 10 s; 5 s to the start
    // (extrapolated), 45 s to the end (too far: half an interval, 5 s) → × 20/10 → 10.
    check("increase(requests_total[1m])", 100, &[(A, 54.0), (B, 12.0), (C, 10.0)]);
    check("rate(requests_total[1m])", 100, &[(A, 54.0 / 60.0), (B, 12.0 / 60.0), (C, 10.0 / 60.0)]);
    // Window (0 s, 60 s]. c: 1 6 11 at 35 45 55: 10 over 20 s. 35 s to the start is too far, so
    // half an interval (5 s)... but a counter cannot go below zero: it would reach 0 after
    // 20 × 1/10 = 2 s before the first point, so only 2 s; the end is 5 s away (extrapolated):
    // 10 × (20 + 2 + 5) / 20 = 13.5.
    check(r#"increase(requests_total{instance="c"}[1m])"#, 60, &[(C, 13.5)]);
    // Prometheus 3 order: the half-interval rule first, then the zero point. late_total: 3 6 9,
    // zero point 20 × 3/6 = 10 s away, later than half an interval (5 s): 6 × (20 + 5 + 5) / 20
    // = 9 (Prometheus 2.x took the 10 s: 10.5).
    check("increase(late_total[1m])", 60, &[(r#"{job="web"}"#, 9.0)]);
    // With offset: window (0 s, 60 s]: a: 10 20 30 40 50 5 → 45 → 54; b: 102 → 112 → 12.
    check("rate(requests_total[1m] offset 40s)", 100, &[(A, 54.0 / 60.0), (B, 12.0 / 60.0), (C, 13.5 / 60.0)]);
    // A single point has no rate.
    check("rate(errors_total[1m])", 100, &[]);
    // delta does not correct resets: a: 45 - 50 = -5 → -6.
    check(r#"delta(requests_total{job="api"}[1m])"#, 100, &[(A, -6.0), (B, 12.0)]);
    // kitchen: 24 - 18 = 6 → 7.2; cellar's window starts with NaN.
    check("delta(temp[1m])", 100, &[(r#"{room="cellar"}"#, f64::NAN), (r#"{room="kitchen"}"#, 7.2)]);
}

#[test]
fn instant_rates_and_deltas() {
    // Last two points: a 35 → 45 over 10 s; at 60 s a reset (50 → 5) counts 5.
    check(r#"irate(requests_total{job="api"}[1m])"#, 100, &[(A, 1.0), (B, 0.2)]);
    check(r#"irate(requests_total{instance="a"}[1m])"#, 60, &[(A, 0.5)]);
    check("idelta(temp[1m])", 100, &[(r#"{room="cellar"}"#, 0.0), (r#"{room="kitchen"}"#, 3.0)]);
    // Least squares through (0, 18) (10, 23) (20, 20) (30, 21) (40, 21) (50, 24): 125 / 1750.
    check(r#"deriv(temp{room="kitchen"}[1m])"#, 100, &[(r#"{room="kitchen"}"#, 125.0 / 1750.0)]);
    check(r#"deriv(up{instance="a"}[1m])"#, 100, &[(A, 0.0)]);
}

#[test]
fn resets_and_changes() {
    check("resets(requests_total[2m])", 100, &[(A, 1.0), (B, 0.0), (C, 0.0)]);
    // kitchen changes 8 times; NaN → 10 and 10 → NaN both count as changes.
    check("changes(temp[2m])", 100, &[(r#"{room="cellar"}"#, 2.0), (r#"{room="kitchen"}"#, 8.0)]);
}

#[test]
fn over_time_functions() {
    // kitchen in (40 s, 100 s]: 18 23 20 21 21 24; cellar: NaN then 10 × 5.
    let cellar = r#"{room="cellar"}"#;
    let kitchen = r#"{room="kitchen"}"#;
    check("avg_over_time(temp[1m])", 100, &[(cellar, f64::NAN), (kitchen, 127.0 / 6.0)]);
    check("min_over_time(temp[1m])", 100, &[(cellar, 10.0), (kitchen, 18.0)]);
    check("max_over_time(temp[1m])", 100, &[(cellar, 10.0), (kitchen, 24.0)]);
    check("sum_over_time(temp[1m])", 100, &[(cellar, f64::NAN), (kitchen, 127.0)]);
    check("count_over_time(temp[1m])", 100, &[(cellar, 6.0), (kitchen, 6.0)]);
    // Sorted 18 20 21 21 23 24: rank 0.5 × 5 = 2.5 → 21; rank 4.5 → 23.5.
    check(r#"quantile_over_time(0.5, temp{room="kitchen"}[1m])"#, 100, &[(kitchen, 21.0)]);
    check(r#"quantile_over_time(0.9, temp{room="kitchen"}[1m])"#, 100, &[(kitchen, 23.5)]);
    check(r#"quantile_over_time(2, temp{room="kitchen"}[1m])"#, 100, &[(kitchen, f64::INFINITY)]);
    let variance = (2711.0 - 127.0 * 127.0 / 6.0) / 6.0;
    check(r#"stddev_over_time(temp{room="kitchen"}[1m])"#, 100, &[(kitchen, f64::sqrt(variance))]);
    // last_over_time keeps the metric name.
    check(r#"last_over_time(temp{room="kitchen"}[1m])"#, 100, &[(r#"{__name__="temp", room="kitchen"}"#, 24.0)]);
    check("last_over_time(late_total[1m])", 200, &[]);
}

#[test]
fn histogram_quantile_on_classic_buckets() {
    let api = r#"{job="api"}"#;
    // Counts 10 ≤ 0.1 < 30 ≤ 0.5 < 35 ≤ 1 < 40. φ = 0.5: rank 20 falls in (0.1, 0.5], 10 of its 20.
    check("histogram_quantile(0.5, latency_seconds_bucket)", 100, &[(api, 0.1 + 0.4 * 10.0 / 20.0)]);
    // Rank 4 in the first bucket, which starts at 0.
    check("histogram_quantile(0.1, latency_seconds_bucket)", 100, &[(api, 0.04)]);
    // Rank 35 is exactly the top of (0.5, 1].
    check("histogram_quantile(0.875, latency_seconds_bucket)", 100, &[(api, 1.0)]);
    // Rank 38 is in the +Inf bucket: the highest finite bound.
    check("histogram_quantile(0.95, latency_seconds_bucket)", 100, &[(api, 1.0)]);
    check("histogram_quantile(-1, latency_seconds_bucket)", 100, &[(api, f64::NEG_INFINITY)]);
    check("histogram_quantile(1.5, latency_seconds_bucket)", 100, &[(api, f64::INFINITY)]);
    // No +Inf bucket, or no observations: NaN.
    check(r#"histogram_quantile(0.5, latency_seconds_bucket{le!="+Inf"})"#, 100, &[(api, f64::NAN)]);
    check("histogram_quantile(0.5, empty_seconds_bucket)", 100, &[("{}", f64::NAN)]);
    // After an aggregation by le, as usual in dashboards.
    check("histogram_quantile(0.5, sum by (le) (latency_seconds_bucket))", 100, &[("{}", 0.3)]);
    // Series without a le label are ignored.
    check("histogram_quantile(0.5, up)", 100, &[]);
}

#[test]
fn instant_vector_functions() {
    let cellar = r#"{room="cellar"}"#;
    let kitchen = r#"{room="kitchen"}"#;
    check("abs(temp - 22)", 100, &[(cellar, 12.0), (kitchen, 2.0)]);
    check("clamp_min(temp, 15)", 100, &[(cellar, 15.0), (kitchen, 24.0)]);
    check("clamp_max(temp, 15)", 100, &[(cellar, 10.0), (kitchen, 15.0)]);
    check("clamp_min(temp, 15)", 50, &[(cellar, f64::NAN), (kitchen, 18.0)]);
    check_scalar("time()", 100, 100.0);
    check("vector(3)", 100, &[("{}", 3.0)]);
    check("vector(time() * 2)", 100, &[("{}", 200.0)]);
    check_scalar(r#"scalar(up{instance="a"})"#, 100, 1.0);
    check_scalar("scalar(up)", 100, f64::NAN);
    check_scalar("scalar(nothing)", 100, f64::NAN);
}

#[test]
fn absent_for_alerting() {
    // Labels come from the equality matchers, not the name, and not from labels matched twice.
    check(r#"absent(nothing{job="x", instance=~"a"})"#, 100, &[(r#"{job="x"}"#, 1.0)]);
    check(r#"absent(nothing{job="x", job="y"})"#, 100, &[("{}", 1.0)]);
    check(r#"absent((nothing{job="x"}))"#, 100, &[(r#"{job="x"}"#, 1.0)]);
    check("absent(sum(nothing))", 100, &[("{}", 1.0)]);
    check("absent(up)", 100, &[]);
    check("absent(up)", 400, &[("{}", 1.0)]);
    check(r#"absent_over_time(nothing{job="x"}[1m])"#, 100, &[(r#"{job="x"}"#, 1.0)]);
    check("absent_over_time(late_total[1m])", 100, &[]);
    check("absent_over_time(late_total[1m])", 200, &[("{}", 1.0)]);
}

#[test]
fn aggregations() {
    // requests_total at 100 s: a 45, b 120, c 11.
    check("sum(requests_total)", 100, &[("{}", 176.0)]);
    check("sum by (job) (requests_total)", 100, &[(r#"{job="api"}"#, 165.0), (r#"{job="web"}"#, 11.0)]);
    check("sum without (instance) (requests_total)", 100, &[(r#"{job="api"}"#, 165.0), (r#"{job="web"}"#, 11.0)]);
    check("sum by (__name__) (up)", 100, &[(r#"{__name__="up"}"#, 2.0)]);
    check("avg by (job) (requests_total)", 100, &[(r#"{job="api"}"#, 82.5), (r#"{job="web"}"#, 11.0)]);
    check("min(requests_total)", 100, &[("{}", 11.0)]);
    check("max(requests_total)", 100, &[("{}", 120.0)]);
    check("count by (job) (up)", 100, &[(r#"{job="api"}"#, 2.0), (r#"{job="web"}"#, 1.0)]);
    let mean = 176.0 / 3.0;
    let variance = (45.0_f64 * 45.0 + 120.0 * 120.0 + 11.0 * 11.0) / 3.0 - mean * mean;
    check("stddev(requests_total)", 100, &[("{}", variance.sqrt())]);
    // topk keeps the labels (with the name) and ranks largest first.
    check(
        "topk(2, requests_total)",
        100,
        &[
            (r#"{__name__="requests_total", instance="b", job="api"}"#, 120.0),
            (r#"{__name__="requests_total", instance="a", job="api"}"#, 45.0),
        ],
    );
    check("bottomk(1, requests_total)", 100, &[(r#"{__name__="requests_total", instance="c", job="web"}"#, 11.0)]);
    check("topk(0, requests_total)", 100, &[]);
    check("quantile(0.5, requests_total)", 100, &[("{}", 45.0)]);
    check("quantile by (job) (0.5, requests_total)", 100, &[(r#"{job="api"}"#, 82.5), (r#"{job="web"}"#, 11.0)]);
    // Over nothing: no groups, no result.
    check("sum(nothing)", 100, &[]);
    // At 50 s the cellar is NaN: min/max skip it, sum does not, topk and bottomk rank it last.
    check("min(temp)", 50, &[("{}", 18.0)]);
    check("max(temp)", 50, &[("{}", 18.0)]);
    check("sum(temp)", 50, &[("{}", f64::NAN)]);
    check("topk(1, temp)", 50, &[(r#"{__name__="temp", room="kitchen"}"#, 18.0)]);
    check("bottomk(1, temp)", 50, &[(r#"{__name__="temp", room="kitchen"}"#, 18.0)]);
}

#[test]
fn partition_sums_add_up() {
    let Value::Vector(parts) = eval("sum by (job) (requests_total)", 100) else { panic!("not a vector") };
    let Value::Vector(total) = eval("sum(requests_total)", 100) else { panic!("not a vector") };
    assert!(close(parts.iter().map(|s| s.value).sum::<f64>(), total[0].value));
}

#[test]
fn scalar_arithmetic() {
    check_scalar("1 + 2 * 3", 0, 7.0);
    check_scalar("2 ^ 3 ^ 2", 0, 512.0);
    check_scalar("2 ^ -1", 0, 0.5);
    check_scalar("7 % -3", 0, 1.0);
    check_scalar("-7 % 3", 0, -1.0);
    check_scalar("1 / 0", 0, f64::INFINITY);
    check_scalar("-1 / 0", 0, f64::NEG_INFINITY);
    check_scalar("0 / 0", 0, f64::NAN);
    check_scalar("-(1 + 2)", 0, -3.0);
    check_scalar("(1 + 2) * 3 == bool 9", 0, 1.0);
    check_scalar("NaN == bool NaN", 0, 0.0);
    check_scalar("NaN != bool NaN", 0, 1.0);
    check_scalar("time() - 40", 100, 60.0);
    assert_eq!(eval(r#""hello""#, 0), Value::String("hello".to_owned()));
}

#[test]
fn vector_scalar_operators() {
    // Arithmetic drops the name.
    check("requests_total * 2", 100, &[(A, 90.0), (B, 240.0), (C, 22.0)]);
    check("2 - requests_total", 100, &[(A, -43.0), (B, -118.0), (C, -9.0)]);
    check("-requests_total", 100, &[(A, -45.0), (B, -120.0), (C, -11.0)]);
    // A filtering comparison keeps the sample as it is.
    let up_a = r#"{__name__="up", instance="a", job="api"}"#;
    let up_c = r#"{__name__="up", instance="c", job="web"}"#;
    check("up == 1", 100, &[(up_a, 1.0), (up_c, 1.0)]);
    check("0 < up", 100, &[(up_a, 1.0), (up_c, 1.0)]);
    // With bool: 0 or 1 for every sample, without the name.
    check("up == bool 1", 100, &[(A, 1.0), (B, 0.0), (C, 1.0)]);
    check("1 > bool up", 100, &[(A, 0.0), (B, 1.0), (C, 0.0)]);
    // NaN compares false, except !=.
    check("temp > 20", 50, &[]);
    check("temp == temp", 50, &[(r#"{__name__="temp", room="kitchen"}"#, 18.0)]);
    check("temp != temp", 50, &[(r#"{__name__="temp", room="cellar"}"#, f64::NAN)]);
    check("temp > bool 20", 50, &[(r#"{room="cellar"}"#, 0.0), (r#"{room="kitchen"}"#, 0.0)]);
}

#[test]
fn vector_matching() {
    // Default: all labels but the name must match.
    check("requests_total - up", 100, &[(A, 44.0), (B, 120.0), (C, 10.0)]);
    check(
        "requests_total / ignoring(job) up",
        100,
        &[(r#"{instance="a"}"#, 45.0), (r#"{instance="b"}"#, f64::INFINITY), (r#"{instance="c"}"#, 11.0)],
    );
    check(
        r#"requests_total{job="api"} / on(instance) up"#,
        100,
        &[(r#"{instance="a"}"#, 45.0), (r#"{instance="b"}"#, f64::INFINITY)],
    );
    // Filtering comparison keeps the left side's labels and value; bool drops the name.
    check(
        "requests_total > up",
        100,
        &[
            (r#"{__name__="requests_total", instance="a", job="api"}"#, 45.0),
            (r#"{__name__="requests_total", instance="b", job="api"}"#, 120.0),
            (r#"{__name__="requests_total", instance="c", job="web"}"#, 11.0),
        ],
    );
    check("up >= requests_total", 100, &[]);
    check("up >= bool requests_total", 100, &[(A, 0.0), (B, 0.0), (C, 0.0)]);
    // Many-to-one: each request count over its job's total.
    check(
        "requests_total / on(job) group_left sum by (job) (requests_total)",
        100,
        &[(A, 45.0 / 165.0), (B, 120.0 / 165.0), (C, 1.0)],
    );
    // group_left(team) copies the team from the "one" side; group_right mirrors it.
    check(
        "up * on(instance) group_left(team) service_info",
        100,
        &[(r#"{instance="a", job="api", team="red"}"#, 1.0), (r#"{instance="b", job="api", team="blue"}"#, 0.0)],
    );
    check(
        "service_info * on(instance) group_right(team) up",
        100,
        &[(r#"{instance="a", job="api", team="red"}"#, 1.0), (r#"{instance="b", job="api", team="blue"}"#, 0.0)],
    );
}

#[test]
fn set_operators() {
    let up_a = r#"{__name__="up", instance="a", job="api"}"#;
    let up_b = r#"{__name__="up", instance="b", job="api"}"#;
    let up_c = r#"{__name__="up", instance="c", job="web"}"#;
    check(r#"up and on(instance) requests_total{job="api"}"#, 100, &[(up_a, 1.0), (up_b, 0.0)]);
    check(r#"up unless on(instance) requests_total{job="api"}"#, 100, &[(up_c, 1.0)]);
    check("up and up == 0", 100, &[(up_b, 0.0)]);
    check("up unless up == 0", 100, &[(up_a, 1.0), (up_c, 1.0)]);
    check("up or vector(5)", 100, &[("{}", 5.0), (up_a, 1.0), (up_b, 0.0), (up_c, 1.0)]);
    check("nothing or vector(5)", 100, &[("{}", 5.0)]);
    check("up and nothing", 100, &[]);
}

#[test]
fn matching_and_labelset_errors() {
    check_err(
        "requests_total + on(job) up",
        100,
        r#"found duplicate series for the match group {job="api"} on the right hand-side of the operation: [{__name__="up", instance="b", job="api"}, {__name__="up", instance="a", job="api"}];many-to-many matching not allowed: matching labels must be unique on one side"#,
    );
    check_err(
        r#"requests_total + ignoring(instance) up{instance="a"}"#,
        100,
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
    );
    check_err(
        r#"{__name__=~"cpu_seconds_total|mem_bytes"} * on(job) group_left up{instance="a"}"#,
        100,
        "multiple matches for labels: grouping labels must ensure unique matches",
    );
    // Dropping the name leaves two samples with the same labels.
    check_err(
        r#"rate({__name__=~"cpu_seconds_total|mem_bytes"}[1m])"#,
        100,
        r#"vector cannot contain metrics with the same labelset: {instance="a", job="api"}"#,
    );
    check_err(
        r#"{__name__=~"cpu_seconds_total|mem_bytes"} * 2"#,
        100,
        r#"vector cannot contain metrics with the same labelset: {instance="a", job="api"}"#,
    );
    // A filtering comparison keeps the names: no clash.
    check(
        r#"{__name__=~"cpu_seconds_total|mem_bytes"} > 0"#,
        100,
        &[
            (r#"{__name__="cpu_seconds_total", instance="a", job="api"}"#, 1.0),
            (r#"{__name__="mem_bytes", instance="a", job="api"}"#, 2.0),
        ],
    );
    check_err("topk(NaN, up)", 100, "scalar value NaN overflows int64 (parameter of topk)");
}

#[test]
fn range_queries() {
    let storage = storage();
    let options = EvalOptions::default();
    let query = Query::parse("up == 0 or up{instance=\"a\"}").expect("valid");
    let result = query.eval_range(&storage, s(0), s(100), s(50), &options).expect("evaluates");
    let expected = vec![
        Series { labels: labels_of_up_a(), points: vec![(0, 1.0), (s(50), 1.0), (s(100), 1.0)] },
        Series {
            labels: Labels::new([("__name__", "up"), ("instance", "b"), ("job", "api")]),
            points: vec![(0, 0.0), (s(50), 0.0), (s(100), 0.0)],
        },
    ];
    assert_eq!(result, expected);
    // A series appears only at the steps where it has a value: c's rate needs two points in the
    // window, which it has at 50, 60 and 70 s only.
    let query = Query::parse(r#"rate(requests_total{instance="c"}[30s])"#).expect("valid");
    let result = query.eval_range(&storage, s(40), s(80), s(10), &options).expect("evaluates");
    let points: Vec<i64> = result[0].points.iter().map(|&(t, _)| t / 1000).collect();
    assert_eq!(points, vec![50, 60, 70]);
    // A scalar gives one series without labels.
    let result = Query::parse("time()").expect("valid").eval_range(&storage, 0, s(20), s(10), &options).expect("ok");
    assert_eq!(result, vec![Series { labels: Labels::empty(), points: vec![(0, 0.0), (s(10), 10.0), (s(20), 20.0)] }]);
}

#[test]
fn range_query_limits() {
    let storage = storage();
    let options = EvalOptions::default();
    let query = Query::parse("up").expect("valid");
    let cases: [(i64, i64, i64, &str); 3] = [
        (
            0,
            s(11_000),
            s(1),
            "exceeded maximum resolution of 11000 points per timeseries (asked for 11001); decrease the query resolution (increase the step)",
        ),
        (0, s(10), 0, "invalid range query: start 0 ms, end 10000 ms, step 0 ms (step must be positive)"),
        (s(10), 0, s(1), "invalid range query: start 10000 ms, end 0 ms, step 1000 ms (end is before start)"),
    ];
    for (start, end, step, expected) in cases {
        let err = query.eval_range(&storage, start, end, step, &options).expect_err("refused");
        assert_eq!(err.to_string(), expected);
    }
    assert!(query.eval_range(&storage, 0, s(10_999), s(1), &options).is_ok(), "11,000 steps are allowed");
    let err =
        Query::parse("up[1m]").expect("valid").eval_range(&storage, 0, s(10), s(1), &options).expect_err("matrix");
    assert_eq!(
        err.to_string(),
        "invalid expression type range vector for range query, must be scalar or instant vector"
    );
    let bad = EvalOptions { lookback_delta_ms: 0, ..EvalOptions::default() };
    let err = query.eval_instant(&storage, 0, &bad).expect_err("refused");
    assert_eq!(err.to_string(), "invalid evaluation option lookback_delta_ms: must be positive");
}

#[test]
fn query_and_results_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Query>();
    assert_send_sync::<Value>();
    assert_send_sync::<mend_query::QueryError>();
    assert_send_sync::<mend_query::EvalError>();
    assert_send_sync::<MemoryStorage>();
}

#[test]
fn the_largest_accepted_expressions_evaluate_on_a_worker_sized_stack() {
    // At the limits of what parsing accepts (250 operators, 64 levels of brackets), parsing, evaluation
    // and dropping fit in the 2 MiB stack of a tokio worker, even unoptimised.
    let wide = vec!["up"; 250].join(" + ");
    let deep = format!("{}up{}", "abs(".repeat(63), ")".repeat(63));
    let negated = format!("{}up", "-".repeat(250));
    let run = move || {
        check_scalar("scalar(sum(up))", 100, 2.0);
        for expr in [&wide, &deep, &negated] {
            let Value::Vector(samples) = eval(expr, 100) else { panic!("not a vector") };
            assert_eq!(samples.len(), 3);
        }
    };
    std::thread::Builder::new().stack_size(2 * 1024 * 1024).spawn(run).expect("thread").join().expect("no overflow");
}

/// A staleness marker ends a series for instant selectors at once (instead of after the lookback
/// delta) and is invisible to range selectors, as in Prometheus.
#[test]
fn staleness_markers_end_instant_selectors_and_are_skipped_by_ranges() {
    let stale = mend_query::stale_marker();
    assert!(mend_query::is_stale_marker(stale) && !mend_query::is_stale_marker(f64::NAN));
    let storage = MemoryStorage::new(vec![
        // A target that went away at t = 30 and came back at t = 60.
        series(
            &[("__name__", "gone_total"), ("job", "a")],
            &[(0, 0.0), (10, 10.0), (20, 20.0), (30, stale), (60, 60.0), (70, 70.0)],
        ),
        // A plain NaN is a value, not a marker.
        series(&[("__name__", "nan_gauge")], &[(0, 1.0), (10, f64::NAN)]),
    ]);
    let instant = |expr: &str, at: i64| -> Vec<f64> {
        let query = Query::parse(expr).expect("valid");
        match query.eval_instant(&storage, s(at), &EvalOptions::default()).expect("evaluates") {
            Value::Vector(samples) => samples.iter().map(|sample| sample.value).collect(),
            other => panic!("a vector: {other:?}"),
        }
    };
    assert_eq!(instant("gone_total", 25), [20.0]);
    assert!(instant("gone_total", 30).is_empty(), "stale at once");
    assert!(instant("gone_total", 59).is_empty(), "stays stale until a new point");
    assert_eq!(instant("gone_total", 60), [60.0]);
    // Ranges skip the marker: 0..20 and 60..70 are the points in (t - 80s, t].
    assert_eq!(instant("count_over_time(gone_total[80s])", 70), [5.0]);
    assert_eq!(instant("count_over_time(gone_total[25s])", 40), [1.0]);
    assert!(instant("count_over_time(gone_total[5s])", 32).is_empty(), "a window holding only the marker is empty");
    assert!(instant("nan_gauge", 15)[0].is_nan());
    // A range vector on its own never returns the marker.
    let query = Query::parse("gone_total[100s]").expect("valid");
    let Value::Matrix(matrix) = query.eval_instant(&storage, s(70), &EvalOptions::default()).expect("evaluates") else {
        panic!("a matrix")
    };
    assert_eq!(matrix[0].points.len(), 5);
}
