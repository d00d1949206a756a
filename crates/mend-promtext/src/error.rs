//! The parse error: where the exposition went wrong (line and column) and why.

use std::fmt;

use crate::model::MetricKind;

/// Why and where an exposition was rejected. One error rejects the whole scrape.
///
/// `line` and `column` are 1-based; the column counts characters (not bytes) from the start of the line.
/// A missing `# EOF` is reported on the line after the last one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// A metadata line: `# HELP`, `# TYPE` or `# UNIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// `# HELP name text`.
    Help,
    /// `# TYPE name kind`.
    Type,
    /// `# UNIT name unit` (OpenMetrics).
    Unit,
}

impl fmt::Display for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Descriptor::Help => "HELP",
            Descriptor::Type => "TYPE",
            Descriptor::Unit => "UNIT",
        })
    }
}

/// What is wrong with the exposition. Quoted text from the input is cut to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The bytes are not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A line exceeds [`Limits::max_line_bytes`](crate::Limits::max_line_bytes).
    #[error("line longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A metric or label name exceeds [`Limits::max_name_bytes`](crate::Limits::max_name_bytes).
    #[error("name longer than the limit of {limit} bytes")]
    NameTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A label set has more labels than [`Limits::max_labels`](crate::Limits::max_labels).
    #[error("more than {limit} labels")]
    TooManyLabels {
        /// The limit in force.
        limit: usize,
    },
    /// A label value exceeds [`Limits::max_label_value_bytes`](crate::Limits::max_label_value_bytes).
    #[error("label value longer than the limit of {limit} bytes")]
    LabelValueTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// The exposition has more samples than [`Limits::max_samples`](crate::Limits::max_samples).
    #[error("more than {limit} samples")]
    TooManySamples {
        /// The limit in force.
        limit: usize,
    },
    /// The exposition has more families than [`Limits::max_families`](crate::Limits::max_families).
    #[error("more than {limit} metric families")]
    TooManyFamilies {
        /// The limit in force.
        limit: usize,
    },
    /// A metric name does not match `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error("invalid metric name {name:?}")]
    InvalidMetricName {
        /// The offending token.
        name: String,
    },
    /// A label name does not match `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[error("invalid label name {name:?}")]
    InvalidLabelName {
        /// The offending token.
        name: String,
    },
    /// `__name__` used as a label.
    #[error("label name {name:?} is reserved")]
    ReservedLabelName {
        /// The label name.
        name: String,
    },
    /// A quoted (UTF-8) metric or label name, which neither format version supported here allows.
    #[error("quoted metric and label names are not supported")]
    QuotedName,
    /// A syntax error: something else was expected here.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows here.
        expected: &'static str,
        /// What the input has (a quoted character, or `end of line`).
        found: String,
    },
    /// The line ends inside a label value.
    #[error("unterminated label value")]
    UnterminatedLabelValue,
    /// A backslash in a label value followed by something other than `\`, `"` or `n`.
    #[error("invalid escape sequence {sequence:?} in label value (allowed: \\\\, \\\" and \\n)")]
    InvalidEscape {
        /// The backslash and the character after it.
        sequence: String,
    },
    /// The same label name twice in one label set.
    #[error("duplicate label {name:?}")]
    DuplicateLabel {
        /// The repeated name.
        name: String,
    },
    /// A sample line without a value.
    #[error("missing sample value")]
    MissingValue,
    /// A value that is not a number, `NaN`, `+Inf` or `-Inf`.
    #[error("invalid value {value:?}")]
    InvalidValue {
        /// The offending token.
        value: String,
    },
    /// A timestamp that is not an integer (0.0.4) or a finite decimal number (OpenMetrics).
    #[error("invalid timestamp {timestamp:?}")]
    InvalidTimestamp {
        /// The offending token.
        timestamp: String,
    },
    /// A timestamp that does not fit in `i64` milliseconds.
    #[error("timestamp {timestamp:?} out of range")]
    TimestampOutOfRange {
        /// The offending token.
        timestamp: String,
    },
    /// Text left on a line after everything the grammar allows.
    #[error("unexpected text {text:?} at the end of the line")]
    TrailingText {
        /// The leftover text.
        text: String,
    },
    /// A `# TYPE` line naming a type the format does not have.
    #[error("unknown metric type {kind:?} (expected {expected})")]
    UnknownType {
        /// The offending token.
        kind: String,
        /// The types of the format.
        expected: &'static str,
    },
    /// A `# HELP`, `# TYPE` or `# UNIT` line without the text the grammar requires.
    #[error("incomplete {descriptor} line")]
    IncompleteDescriptor {
        /// Which descriptor.
        descriptor: Descriptor,
    },
    /// A descriptor for a family that already has samples.
    #[error("{descriptor} for {name:?} after its samples")]
    DescriptorAfterSamples {
        /// Which descriptor.
        descriptor: Descriptor,
        /// The family name.
        name: String,
    },
    /// The same descriptor twice for one family.
    #[error("second {descriptor} line for {name:?}")]
    DuplicateDescriptor {
        /// Which descriptor.
        descriptor: Descriptor,
        /// The family name.
        name: String,
    },
    /// A sample whose name the family's type does not allow.
    #[error("sample {sample:?} does not belong to {kind} family {family:?} (expected {expected})")]
    SampleNotInFamily {
        /// The sample name.
        sample: String,
        /// The family's type.
        kind: MetricKind,
        /// The family name.
        family: String,
        /// The sample names the type allows.
        expected: String,
    },
    /// A histogram bucket without `le`, a summary quantile without `quantile`, a stateset sample without the label
    /// named after its family.
    #[error("sample {sample:?} has no {label:?} label")]
    MissingLabel {
        /// The sample name.
        sample: String,
        /// The missing label.
        label: String,
    },
    /// An `le` or `quantile` label whose value is not a number (or out of range for `quantile`).
    #[error("invalid {label:?} label value {value:?}")]
    InvalidBound {
        /// `le` or `quantile`.
        label: &'static str,
        /// The offending value.
        value: String,
    },
    /// A sample value its type forbids (OpenMetrics).
    #[error("invalid value {value} for sample {sample:?}: {rule}")]
    ValueNotAllowed {
        /// The sample name.
        sample: String,
        /// The value, as written by the encoder.
        value: String,
        /// The rule broken.
        rule: &'static str,
    },
    /// An exemplar on a sample that is neither a histogram bucket nor a counter total (OpenMetrics).
    #[error("exemplar on sample {sample:?} (only histogram buckets and counter totals can have one)")]
    ExemplarNotAllowed {
        /// The sample name.
        sample: String,
    },
    /// Exemplar label names and values longer than 128 characters together (OpenMetrics).
    #[error("exemplar labels longer than 128 characters")]
    ExemplarTooLong,
    /// A family name used twice: families must be contiguous in OpenMetrics.
    #[error("metric family {name:?} appears twice (OpenMetrics families must be contiguous)")]
    FamilyAppearsTwice {
        /// The family name.
        name: String,
    },
    /// A family whose name, or one of whose sample names, is a sample name of another family (OpenMetrics).
    #[error("metric family {name:?} clashes with the sample {sample:?} of family {family:?}")]
    NameClash {
        /// The new family.
        name: String,
        /// The clashing sample name.
        sample: String,
        /// The earlier family.
        family: String,
    },
    /// A `# UNIT` that is not the suffix of the family name (OpenMetrics).
    #[error("unit {unit:?} is not the suffix of metric family {name:?}")]
    UnitMismatch {
        /// The unit.
        unit: String,
        /// The family name.
        name: String,
    },
    /// A `# UNIT` on an `info` or `stateset` family (OpenMetrics).
    #[error("{kind} family {name:?} cannot have a unit")]
    UnitNotAllowed {
        /// The family's type.
        kind: MetricKind,
        /// The family name.
        name: String,
    },
    /// An empty line (OpenMetrics).
    #[error("empty line (not allowed in OpenMetrics)")]
    EmptyLine,
    /// A comment other than the descriptors and `# EOF` (OpenMetrics).
    #[error("invalid comment {text:?} (OpenMetrics allows only # HELP, # TYPE, # UNIT and # EOF)")]
    InvalidComment {
        /// The line.
        text: String,
    },
    /// Text after `# EOF` (OpenMetrics).
    #[error("text after \"# EOF\"")]
    TextAfterEof,
    /// An OpenMetrics exposition that does not end with `# EOF`.
    #[error("missing \"# EOF\" at the end of the OpenMetrics exposition")]
    MissingEof,
    /// `# EOF` in the 0.0.4 text format.
    #[error("\"# EOF\" in the 0.0.4 text format (it ends OpenMetrics expositions only)")]
    EofInText,
}

/// Cuts quoted input to 64 characters so that an error stays small whatever the line.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}
