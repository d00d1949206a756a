//! The 0.0.4 text encoder: families back to `# HELP`, `# TYPE` and sample lines.

use std::fmt::Write as _;

use crate::model::{Label, MetricFamily, MetricKind, Sample};
use crate::number::write_value;

/// Encodes `families` in the Prometheus text format 0.0.4.
///
/// Families that [`parse`](crate::parse) read from 0.0.4 text encode back to text that parses to equal families
/// (NaN values compare as NaN). Families read from OpenMetrics are converted as the Prometheus Python client
/// converts them: a counter is written under its `_total` sample name; `info` becomes a gauge named `<name>_info`,
/// `stateset` a gauge, `gaugehistogram` a histogram, `unknown` untyped; the `_created`, `_gsum` and `_gcount` samples
/// move to gauge families of their own after their family. Units and exemplars have no 0.0.4 form and are dropped.
pub fn encode(families: &[MetricFamily<'_>]) -> String {
    let mut out = String::with_capacity(families.iter().map(|family| 64 + 48 * family.samples.len()).sum());
    encode_into(&mut out, families);
    out
}

/// Appends the 0.0.4 encoding of `families` to `out` (see [`encode`]).
pub fn encode_into(out: &mut String, families: &[MetricFamily<'_>]) {
    for family in families {
        encode_family(out, family);
    }
}

/// The suffixes of OpenMetrics samples that 0.0.4 has no place for within their family.
const MOVED_SUFFIXES: [&str; 3] = ["_created", "_gcount", "_gsum"];

fn encode_family(out: &mut String, family: &MetricFamily<'_>) {
    let name = family.name.as_ref();
    let has_total_samples = || {
        !name.ends_with("_total")
            && family.samples.iter().any(|sample| sample.name.strip_prefix(name) == Some("_total"))
    };
    let (text_name, text_kind) = match family.kind {
        MetricKind::Counter if has_total_samples() => (format!("{name}_total"), "counter"),
        MetricKind::Counter => (name.to_owned(), "counter"),
        MetricKind::Gauge => (name.to_owned(), "gauge"),
        MetricKind::Histogram => (name.to_owned(), "histogram"),
        MetricKind::GaugeHistogram => (name.to_owned(), "histogram"),
        MetricKind::Summary => (name.to_owned(), "summary"),
        MetricKind::StateSet => (name.to_owned(), "gauge"),
        MetricKind::Info => (format!("{name}_info"), "gauge"),
        MetricKind::Unknown => (name.to_owned(), "untyped"),
    };
    let moves_samples = matches!(
        family.kind,
        MetricKind::Counter | MetricKind::Histogram | MetricKind::Summary | MetricKind::GaugeHistogram
    );
    let moved_suffix = |sample: &Sample<'_>| {
        let suffix = sample.name.strip_prefix(name)?;
        MOVED_SUFFIXES.iter().find(|moved| **moved == suffix).copied().filter(|_| moves_samples)
    };
    write_descriptors(out, &text_name, family.help.as_deref(), text_kind);
    for sample in family.samples.iter().filter(|sample| moved_suffix(sample).is_none()) {
        write_sample(out, sample);
    }
    for suffix in MOVED_SUFFIXES {
        let mut moved = family.samples.iter().filter(|sample| moved_suffix(sample) == Some(suffix)).peekable();
        if moved.peek().is_none() {
            continue;
        }
        write_descriptors(out, &format!("{name}{suffix}"), family.help.as_deref(), "gauge");
        for sample in moved {
            write_sample(out, sample);
        }
    }
}

fn write_descriptors(out: &mut String, name: &str, help: Option<&str>, kind: &str) {
    if let Some(help) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        write_escaped(out, help, false);
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

fn write_sample(out: &mut String, sample: &Sample<'_>) {
    out.push_str(&sample.name);
    write_labels(out, &sample.labels);
    out.push(' ');
    // Writing into a String cannot fail.
    let _ = write_value(out, sample.value);
    if let Some(timestamp_ms) = sample.timestamp_ms {
        let _ = write!(out, " {timestamp_ms}");
    }
    out.push('\n');
}

fn write_labels(out: &mut String, labels: &[Label<'_>]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (index, label) in labels.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&label.name);
        out.push_str("=\"");
        write_escaped(out, &label.value, true);
        out.push('"');
    }
    out.push('}');
}

/// Escapes `\` and line feeds, and `"` in label values.
fn write_escaped(out: &mut String, text: &str, quote: bool) {
    let special = |c: char| c == '\\' || c == '\n' || (quote && c == '"');
    if !text.contains(special) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Format, parse};

    use super::encode;

    /// Parses `input` in `format`, encodes it, and compares the 0.0.4 text with `expected`.
    fn check(input: &str, format: Format, expected: &str) {
        let families = parse(input, format).expect("test input parses");
        assert_eq!(encode(&families), expected, "input:\n{input}");
    }

    #[test]
    fn text_encodes_as_written_in_canonical_spacing() {
        check(
            "# HELP a_total Requests\\nserved, with \\\\ escapes.\n# TYPE a_total counter\n\
             a_total{code=\"200\" , path=\"/a\\\"b\\\\c\\nd\",} 1.5e+06 1700000000000\n\
             b   -0.0000001\nc{} NaN\n",
            Format::Text,
            "# HELP a_total Requests\\nserved, with \\\\ escapes.\n# TYPE a_total counter\n\
             a_total{code=\"200\",path=\"/a\\\"b\\\\c\\nd\"} 1500000 1700000000000\n\
             # TYPE b untyped\nb -1e-7\n# TYPE c untyped\nc NaN\n",
        );
    }

    #[test]
    fn openmetrics_types_convert_like_the_python_client() {
        check(
            "# TYPE req counter\n# HELP req Requests.\nreq_total 3 # {trace_id=\"x\"} 1\nreq_created 1.7e9\n\
             # TYPE build info\nbuild_info{version=\"1\"} 1\n\
             # TYPE state stateset\nstate{state=\"up\"} 1\n\
             # TYPE queue gaugehistogram\nqueue_bucket{le=\"+Inf\"} 4\nqueue_gcount 4\nqueue_gsum 9\n\
             # UNIT t_seconds seconds\n# TYPE t_seconds unknown\nt_seconds 1.5\n# EOF\n",
            Format::OpenMetrics,
            "# HELP req_total Requests.\n# TYPE req_total counter\nreq_total 3\n\
             # HELP req_created Requests.\n# TYPE req_created gauge\nreq_created 1700000000\n\
             # TYPE build_info gauge\nbuild_info{version=\"1\"} 1\n\
             # TYPE state gauge\nstate{state=\"up\"} 1\n\
             # TYPE queue histogram\nqueue_bucket{le=\"+Inf\"} 4\n\
             # TYPE queue_gcount gauge\nqueue_gcount 4\n# TYPE queue_gsum gauge\nqueue_gsum 9\n\
             # TYPE t_seconds untyped\nt_seconds 1.5\n",
        );
    }
}
