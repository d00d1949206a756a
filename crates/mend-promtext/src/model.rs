//! The parsed exposition: formats, metric kinds, families, samples, labels and exemplars.

use std::borrow::Cow;
use std::fmt;

/// The two text formats a `/metrics` endpoint can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
    /// OpenMetrics 1.0 text format (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The `Accept` header a scraper should send: OpenMetrics preferred, 0.0.4 text accepted, anything else as a
    /// last resort (the answer's `Content-Type` then decides through [`Format::from_content_type`]).
    pub const ACCEPT: &'static str = "application/openmetrics-text;version=1.0.0;q=0.5,\
                                      text/plain;version=0.0.4;q=0.4,*/*;q=0.1";

    /// Chooses the parser from a scrape's `Content-Type` header value.
    ///
    /// `application/openmetrics-text` (any version, any parameters, any case) selects OpenMetrics; everything else,
    /// including a missing or empty header, selects the 0.0.4 text format, as Prometheus itself falls back to it.
    pub fn from_content_type(header_value: &str) -> Format {
        let media_type = header_value.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") { Format::OpenMetrics } else { Format::Text }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The type of a metric family, as declared by its `# TYPE` line (`Unknown` when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `counter`: samples `<name>` in 0.0.4; `<name>_total` and `<name>_created` in OpenMetrics.
    Counter,
    /// `gauge`: samples `<name>`.
    Gauge,
    /// `histogram`: samples `<name>_bucket` (with an `le` label), `<name>_sum`, `<name>_count` and, in
    /// OpenMetrics, `<name>_created`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics only): samples `<name>_bucket`, `<name>_gsum`, `<name>_gcount`.
    GaugeHistogram,
    /// `summary`: samples `<name>` (with a `quantile` label), `<name>_sum`, `<name>_count` and, in OpenMetrics,
    /// `<name>_created`.
    Summary,
    /// `stateset` (OpenMetrics only): samples `<name>` with a label named after the family, valued 0 or 1.
    StateSet,
    /// `info` (OpenMetrics only): samples `<name>_info` valued 1.
    Info,
    /// `untyped` in 0.0.4, `unknown` in OpenMetrics, and every family without a `# TYPE` line.
    Unknown,
}

impl MetricKind {
    /// The OpenMetrics name of the kind (`unknown` for 0.0.4's `untyped`).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::GaugeHistogram => "gaugehistogram",
            MetricKind::Summary => "summary",
            MetricKind::StateSet => "stateset",
            MetricKind::Info => "info",
            MetricKind::Unknown => "unknown",
        }
    }

    /// The suffixes that, appended to the family name, give the names of its samples.
    pub(crate) fn sample_suffixes(self, format: Format) -> &'static [Suffix] {
        use Suffix::{Bare, Bucket, Count, Created, GCount, GSum, Info, Sum, Total};
        match (self, format) {
            (MetricKind::Counter, Format::Text) => &[Bare],
            (MetricKind::Counter, Format::OpenMetrics) => &[Total, Created],
            (MetricKind::Histogram, Format::Text) => &[Bucket, Sum, Count],
            (MetricKind::Histogram, Format::OpenMetrics) => &[Bucket, Sum, Count, Created],
            (MetricKind::GaugeHistogram, _) => &[Bucket, GSum, GCount],
            (MetricKind::Summary, Format::Text) => &[Bare, Sum, Count],
            (MetricKind::Summary, Format::OpenMetrics) => &[Bare, Sum, Count, Created],
            (MetricKind::Info, _) => &[Info],
            (MetricKind::Gauge | MetricKind::StateSet | MetricKind::Unknown, _) => &[Bare],
        }
    }

    /// The suffix of `sample_name` within a family `family_name` of this kind, if the sample belongs to it.
    pub(crate) fn suffix_of(self, format: Format, family_name: &str, sample_name: &str) -> Option<Suffix> {
        let rest = sample_name.strip_prefix(family_name)?;
        let suffix = Suffix::classify(rest.as_bytes())?;
        self.sample_suffixes(format).contains(&suffix).then_some(suffix)
    }
}

/// What a sample name adds to its family name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suffix {
    Bare,
    Total,
    Created,
    Bucket,
    Sum,
    Count,
    GSum,
    GCount,
    Info,
}

impl Suffix {
    /// Every suffix but the bare name.
    pub(crate) const SUFFIXED: [Suffix; 8] = [
        Suffix::Total,
        Suffix::Created,
        Suffix::Bucket,
        Suffix::Sum,
        Suffix::Count,
        Suffix::GSum,
        Suffix::GCount,
        Suffix::Info,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Suffix::Bare => "",
            Suffix::Total => "_total",
            Suffix::Created => "_created",
            Suffix::Bucket => "_bucket",
            Suffix::Sum => "_sum",
            Suffix::Count => "_count",
            Suffix::GSum => "_gsum",
            Suffix::GCount => "_gcount",
            Suffix::Info => "_info",
        }
    }

    /// Recognises a suffix. Byte patterns compile to a length switch and word compares: this runs for every sample,
    /// and string comparisons against a table of suffixes showed up as a third of the parse time.
    fn classify(rest: &[u8]) -> Option<Suffix> {
        Some(match rest {
            [] => Suffix::Bare,
            [b'_', b't', b'o', b't', b'a', b'l'] => Suffix::Total,
            [b'_', b'c', b'r', b'e', b'a', b't', b'e', b'd'] => Suffix::Created,
            [b'_', b'b', b'u', b'c', b'k', b'e', b't'] => Suffix::Bucket,
            [b'_', b's', b'u', b'm'] => Suffix::Sum,
            [b'_', b'c', b'o', b'u', b'n', b't'] => Suffix::Count,
            [b'_', b'g', b's', b'u', b'm'] => Suffix::GSum,
            [b'_', b'g', b'c', b'o', b'u', b'n', b't'] => Suffix::GCount,
            [b'_', b'i', b'n', b'f', b'o'] => Suffix::Info,
            _ => return None,
        })
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric family: its descriptors and its samples, in input order.
///
/// The name is the one of the `# TYPE`/`# HELP` lines (or of the first sample when there are none). In 0.0.4 a
/// counter family is usually named like its samples (`http_requests_total`); in OpenMetrics it is the base name
/// (`http_requests`) and its samples carry the `_total` and `_created` suffixes.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily<'a> {
    /// The family name.
    pub name: Cow<'a, str>,
    /// The unescaped `# HELP` text, if the family has one.
    pub help: Option<Cow<'a, str>>,
    /// The `# UNIT` (OpenMetrics only; `# UNIT` lines are plain comments in 0.0.4).
    pub unit: Option<Cow<'a, str>>,
    /// The declared type.
    pub kind: MetricKind,
    /// The samples, in input order.
    pub samples: Vec<Sample<'a>>,
}

impl MetricFamily<'_> {
    /// Copies every borrowed string so that the family outlives the input text.
    pub fn into_owned(self) -> MetricFamily<'static> {
        MetricFamily {
            name: Cow::Owned(self.name.into_owned()),
            help: self.help.map(|help| Cow::Owned(help.into_owned())),
            unit: self.unit.map(|unit| Cow::Owned(unit.into_owned())),
            kind: self.kind,
            samples: self.samples.into_iter().map(Sample::into_owned).collect(),
        }
    }
}

/// One sample line: a series (name and labels) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The full sample name, suffix included (`http_request_duration_seconds_bucket`).
    pub name: Cow<'a, str>,
    /// The labels in input order, values unescaped. Names are unique within a sample.
    pub labels: Vec<Label<'a>>,
    /// The value; `NaN`, `+Inf` and `-Inf` included.
    pub value: f64,
    /// Milliseconds since the Unix epoch. 0.0.4 timestamps are integer milliseconds already; OpenMetrics ones are
    /// seconds and are truncated toward zero to whole milliseconds (as Prometheus stores them).
    pub timestamp_ms: Option<i64>,
    /// The OpenMetrics exemplar of the sample, if it has one (never present in 0.0.4).
    pub exemplar: Option<Box<Exemplar<'a>>>,
}

impl Sample<'_> {
    /// The value of the label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|label| label.name == name).map(|label| label.value.as_ref())
    }

    /// Copies every borrowed string so that the sample outlives the input text.
    pub fn into_owned(self) -> Sample<'static> {
        Sample {
            name: Cow::Owned(self.name.into_owned()),
            labels: self.labels.into_iter().map(Label::into_owned).collect(),
            value: self.value,
            timestamp_ms: self.timestamp_ms,
            exemplar: self.exemplar.map(|exemplar| Box::new(exemplar.into_owned())),
        }
    }
}

/// A label: a name and its unescaped value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label<'a> {
    /// The label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    pub name: Cow<'a, str>,
    /// The unescaped value; borrowed from the input unless it contained escapes.
    pub value: Cow<'a, str>,
}

impl<'a> Label<'a> {
    /// A label borrowing its name and value.
    pub fn new(name: &'a str, value: &'a str) -> Label<'a> {
        Label { name: Cow::Borrowed(name), value: Cow::Borrowed(value) }
    }

    /// Copies the borrowed strings so that the label outlives the input text.
    pub fn into_owned(self) -> Label<'static> {
        Label { name: Cow::Owned(self.name.into_owned()), value: Cow::Owned(self.value.into_owned()) }
    }
}

/// An OpenMetrics exemplar (`# {trace_id="abc"} 0.42 1700000000.5`) attached to a bucket or counter sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar<'a> {
    /// The exemplar's labels, in input order.
    pub labels: Vec<Label<'a>>,
    /// The exemplar's value.
    pub value: f64,
    /// Milliseconds since the Unix epoch, truncated toward zero, if given.
    pub timestamp_ms: Option<i64>,
}

impl Exemplar<'_> {
    /// Copies the borrowed strings so that the exemplar outlives the input text.
    pub fn into_owned(self) -> Exemplar<'static> {
        Exemplar {
            labels: self.labels.into_iter().map(Label::into_owned).collect(),
            value: self.value,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_selects_the_format() {
        let cases = [
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", Format::OpenMetrics),
            ("application/openmetrics-text;version=0.0.1", Format::OpenMetrics),
            ("Application/OpenMetrics-Text", Format::OpenMetrics),
            ("text/plain; version=0.0.4; charset=utf-8", Format::Text),
            ("text/plain", Format::Text),
            ("", Format::Text),
            ("application/json", Format::Text),
        ];
        for (header, expected) in cases {
            assert_eq!(Format::from_content_type(header), expected, "{header}");
        }
        assert_eq!(Format::from_content_type(Format::OpenMetrics.content_type()), Format::OpenMetrics);
        assert_eq!(Format::from_content_type(Format::Text.content_type()), Format::Text);
    }

    #[test]
    fn sample_suffixes_follow_the_format() {
        assert_eq!(MetricKind::Counter.suffix_of(Format::Text, "x_total", "x_total"), Some(Suffix::Bare));
        assert_eq!(MetricKind::Counter.suffix_of(Format::OpenMetrics, "x", "x_total"), Some(Suffix::Total));
        assert_eq!(MetricKind::Counter.suffix_of(Format::OpenMetrics, "x", "x"), None);
        assert_eq!(MetricKind::Histogram.suffix_of(Format::Text, "x", "x_created"), None);
        assert_eq!(MetricKind::Summary.suffix_of(Format::Text, "x", "x"), Some(Suffix::Bare));
        assert_eq!(MetricKind::Info.suffix_of(Format::OpenMetrics, "x", "x_info"), Some(Suffix::Info));
        assert_eq!(MetricKind::Info.suffix_of(Format::OpenMetrics, "x", "x_infos"), None);
        for suffix in Suffix::SUFFIXED {
            assert_eq!(Suffix::classify(suffix.as_str().as_bytes()), Some(suffix));
        }
    }
}
