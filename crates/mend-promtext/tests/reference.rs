//! Parity with a reference parser: every exposition fixture parsed here and by the Prometheus Python client (golden
//! JSON written by `tests/data/reference.py`) must give the same families and samples, NaN-aware.

use std::path::{Path, PathBuf};

use mend_promtext::{Format, MetricFamily, parse};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Document {
    format: String,
    families: Vec<Family>,
}

/// One family in the reference's terms: strings and vectors only, so that both sides compare with `==`.
#[derive(Debug, PartialEq, Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    help: String,
    unit: String,
    samples: Vec<Sample>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    #[serde(deserialize_with = "value_repr")]
    value: String,
    timestamp_ms: Option<i64>,
    exemplar: Option<Exemplar>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Exemplar {
    labels: Vec<(String, String)>,
    #[serde(deserialize_with = "value_repr")]
    value: String,
    timestamp_ms: Option<i64>,
}

/// Values compare through one representation: `NaN` for every NaN, else Rust's exact shortest `Debug` form.
fn repr(value: f64) -> String {
    if value.is_nan() { "NaN".to_owned() } else { format!("{value:?}") }
}

fn value_repr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let value: f64 = text.parse().map_err(serde::de::Error::custom)?;
    Ok(repr(value))
}

fn labels(labels: &[mend_promtext::Label<'_>]) -> Vec<(String, String)> {
    labels.iter().map(|label| (label.name.to_string(), label.value.to_string())).collect()
}

fn ours(family: &MetricFamily<'_>) -> Family {
    Family {
        name: family.name.to_string(),
        kind: family.kind.as_str().to_owned(),
        help: family.help.as_deref().unwrap_or_default().to_owned(),
        unit: family.unit.as_deref().unwrap_or_default().to_owned(),
        samples: family
            .samples
            .iter()
            .map(|sample| Sample {
                name: sample.name.to_string(),
                labels: labels(&sample.labels),
                value: repr(sample.value),
                timestamp_ms: sample.timestamp_ms,
                exemplar: sample.exemplar.as_ref().map(|exemplar| Exemplar {
                    labels: labels(&exemplar.labels),
                    value: repr(exemplar.value),
                    timestamp_ms: exemplar.timestamp_ms,
                }),
            })
            .collect(),
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Parses the fixture `name` and compares it with its golden reference JSON; returns the number of samples.
fn check(name: &str) -> usize {
    let path = data_dir().join(name);
    let input = std::fs::read_to_string(&path).expect("fixture exists");
    let golden = std::fs::read_to_string(data_dir().join(format!("{name}.reference.json"))).expect("golden exists");
    let reference: Document = serde_json::from_str(&golden).expect("golden JSON is valid");
    let format = if name.ends_with(".om") { Format::OpenMetrics } else { Format::Text };
    assert_eq!(reference.format, if format == Format::OpenMetrics { "openmetrics" } else { "text" });
    let families = parse(&input, format).unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(families.len(), reference.families.len(), "{name}: number of families");
    for (family, expected) in families.iter().zip(&reference.families) {
        assert_eq!(&ours(family), expected, "{name}: family {}", expected.name);
    }
    families.iter().map(|family| family.samples.len()).sum()
}

#[test]
fn node_exporter_matches_the_reference() {
    assert_eq!(check("node_exporter.prom"), 507);
}

#[test]
fn prometheus_server_matches_the_reference() {
    assert_eq!(check("prometheus_server.prom"), 271);
}

#[test]
fn python_client_text_matches_the_reference() {
    assert_eq!(check("python_client.prom"), 54);
}

#[test]
fn python_client_openmetrics_matches_the_reference() {
    assert_eq!(check("python_client.om"), 54);
}

#[test]
fn mend_demo_openmetrics_matches_the_reference() {
    assert_eq!(check("mend_demo.om"), 19);
}

#[test]
fn every_fixture_has_a_reference() {
    let mut n_fixtures = 0;
    for entry in std::fs::read_dir(data_dir()).expect("data directory exists") {
        let path = entry.expect("directory entry").path();
        let extension = path.extension().and_then(|extension| extension.to_str());
        if matches!(extension, Some("prom" | "om")) {
            n_fixtures += 1;
            let golden = format!("{}.reference.json", path.display());
            assert!(Path::new(&golden).exists(), "{golden} is missing: run tests/data/reference.py");
        }
    }
    assert_eq!(n_fixtures, 5, "a new fixture needs its test above");
}

/// The samples of `families`, one line each (name, labels, NaN-aware value, timestamp), sorted.
fn sample_set(families: &[MetricFamily<'_>]) -> Vec<String> {
    let mut set: Vec<String> = mend_promtext::samples(families)
        .map(|(_, sample)| {
            let labels = labels(&sample.labels);
            format!("{}{labels:?} {} {:?}", sample.name, repr(sample.value), sample.timestamp_ms)
        })
        .collect();
    set.sort();
    set
}

#[test]
fn openmetrics_fixtures_convert_to_text_without_losing_samples() {
    for name in ["python_client.om", "mend_demo.om"] {
        let input = std::fs::read_to_string(data_dir().join(name)).expect("fixture exists");
        let families = parse(&input, Format::OpenMetrics).expect("fixture parses");
        let text = mend_promtext::encode(&families);
        let converted = parse(&text, Format::Text).unwrap_or_else(|error| panic!("{name}: {error}\n{text}"));
        assert_eq!(sample_set(&converted), sample_set(&families), "{name}");
    }
}
