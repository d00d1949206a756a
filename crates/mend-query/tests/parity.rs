//! Parity with a real Prometheus: the answers of Prometheus 2.42 (Debian's package) to ~100 instant
//! queries at 6 times and 8 range queries over the samples in `tests/data/samples.om`, recorded by
//! `tests/data/golden.py` in `tests/data/prometheus_golden.json`, must match this crate's within
//! 1e-9 relative (errors: the same message).

use std::collections::BTreeMap;

use mend_query::{EvalOptions, Labels, MemoryStorage, Query, Series, Value};
use serde_json::Value as Json;

const SAMPLES: &str = include_str!("data/samples.om");
const GOLDEN: &str = include_str!("data/prometheus_golden.json");

/// Parses the OpenMetrics lines `name{k="v",...} value seconds` written by golden.py.
fn storage() -> MemoryStorage {
    let mut by_labels: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for line in SAMPLES.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
        let (name, rest) = line.split_once('{').expect("a label set");
        let (label_text, rest) = rest.split_once('}').expect("closing brace");
        let mut pairs = vec![("__name__".to_owned(), name.to_owned())];
        for pair in label_text.split(',') {
            let (label, value) = pair.split_once('=').expect("label=value");
            pairs.push((label.to_owned(), value.trim_matches('"').to_owned()));
        }
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().expect("a value"));
        let seconds: i64 = fields.next().expect("a timestamp").parse().expect("whole seconds");
        by_labels.entry(Labels::new(pairs)).or_default().push((seconds * 1000, value));
    }
    MemoryStorage::new(by_labels.into_iter().map(|(labels, points)| Series { labels, points }).collect())
}

fn parse_value(text: &str) -> f64 {
    match text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text.parse().expect("a number"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn json_labels(metric: &Json) -> Labels {
    let object = metric.as_object().expect("metric object");
    Labels::new(object.iter().map(|(k, v)| (k.clone(), v.as_str().expect("string label").to_owned())))
}

fn json_point(point: &Json) -> (i64, f64) {
    let t = point[0].as_f64().expect("timestamp");
    ((t * 1000.0).round() as i64, parse_value(point[1].as_str().expect("value string")))
}

/// Compares one case; returns a description of the difference.
fn compare(expected: &Json, got: &Value) -> Result<(), String> {
    let data = &expected["data"];
    let result = &data["result"];
    match (data["resultType"].as_str(), got) {
        (Some("scalar"), Value::Scalar(value)) => {
            let (_, want) = json_point(result);
            if close(want, *value) { Ok(()) } else { Err(format!("scalar {value}, want {want}")) }
        }
        (Some("string"), Value::String(text)) => {
            let want = result[1].as_str().unwrap_or_default();
            if want == text { Ok(()) } else { Err(format!("string {text:?}, want {want:?}")) }
        }
        (Some("vector"), Value::Vector(samples)) => {
            let mut want: Vec<(Labels, f64)> = result
                .as_array()
                .expect("vector array")
                .iter()
                .map(|sample| (json_labels(&sample["metric"]), json_point(&sample["value"]).1))
                .collect();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let mut have: Vec<(Labels, f64)> = samples.iter().map(|s| (s.labels.clone(), s.value)).collect();
            have.sort_by(|a, b| a.0.cmp(&b.0));
            let same = want.len() == have.len() && want.iter().zip(&have).all(|(w, h)| w.0 == h.0 && close(w.1, h.1));
            if same { Ok(()) } else { Err(format!("vector {have:?}, want {want:?}")) }
        }
        (Some("matrix"), Value::Matrix(series)) => {
            let mut want: Vec<(Labels, Vec<(i64, f64)>)> = result
                .as_array()
                .expect("matrix array")
                .iter()
                .map(|s| {
                    let points = s["values"].as_array().expect("values").iter().map(json_point).collect();
                    (json_labels(&s["metric"]), points)
                })
                .collect();
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let same = want.len() == series.len()
                && want.iter().zip(series).all(|(w, h)| {
                    w.0 == h.labels
                        && w.1.len() == h.points.len()
                        && w.1.iter().zip(&h.points).all(|(a, b)| a.0 == b.0 && close(a.1, b.1))
                });
            if same { Ok(()) } else { Err(format!("matrix {series:?}, want {want:?}")) }
        }
        (kind, got) => Err(format!("got {got:?}, want a {kind:?}")),
    }
}

#[test]
fn answers_match_prometheus() {
    let storage = storage();
    let golden: Json = serde_json::from_str(GOLDEN).expect("golden JSON");
    let cases = golden["cases"].as_array().expect("cases");
    assert!(cases.len() > 500, "the golden file holds every query at every time");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["query"].as_str().expect("query");
        let at_ms = case["time"].as_i64().expect("time") * 1000;
        let query = match Query::parse(text) {
            Ok(query) => query,
            Err(err) => {
                failures.push(format!("{text}: refused: {err}"));
                continue;
            }
        };
        let got = query.eval_instant(&storage, at_ms, &EvalOptions::default());
        match (case["status"].as_str(), got) {
            (Some("success"), Ok(value)) => {
                if let Err(diff) = compare(case, &value) {
                    failures.push(format!("{text} @ {at_ms}: {diff}"));
                }
            }
            (Some("error"), Err(err)) => {
                let want = case["error"].as_str().unwrap_or_default();
                if err.to_string() != want {
                    failures.push(format!("{text} @ {at_ms}: error {err}, want {want}"));
                }
            }
            (status, got) => failures.push(format!("{text} @ {at_ms}: status {status:?}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn range_answers_match_prometheus() {
    let storage = storage();
    let golden: Json = serde_json::from_str(GOLDEN).expect("golden JSON");
    let cases = golden["range_cases"].as_array().expect("range cases");
    assert!(cases.len() >= 8, "the golden file holds the range queries");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["query"].as_str().expect("query");
        let [start_ms, end_ms, step_ms] =
            ["start", "end", "step"].map(|key| case[key].as_i64().expect("whole seconds") * 1000);
        let query = Query::parse(text).expect("supported");
        let got = query.eval_range(&storage, start_ms, end_ms, step_ms, &EvalOptions::default()).expect("evaluates");
        if let Err(diff) = compare(case, &Value::Matrix(got)) {
            failures.push(format!("{text}: {diff}"));
        }
    }
    assert!(failures.is_empty(), "{} range cases differ:\n{}", failures.len(), failures.join("\n"));
}
