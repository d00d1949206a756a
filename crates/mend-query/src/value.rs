//! Query results: scalars, instant vectors of samples, and matrices of series.

use std::fmt;

use crate::labels::Labels;

/// The bit pattern of Prometheus' staleness marker (`value.StaleNaN`): the NaN a store appends when a
/// series disappears from its target, so that instant selectors stop returning the series at once
/// instead of for the whole lookback delta. Range selectors never see it.
pub const STALE_MARKER_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a value.
pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_MARKER_BITS)
}

/// True for the staleness marker (and for no other NaN).
pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_MARKER_BITS
}

/// A time series: its labels and its points `(milliseconds since the epoch, value)`, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The series' labels, including `__name__` where it has one.
    pub labels: Labels,
    /// The points, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's labels.
    pub labels: Labels,
    /// The sample's value.
    pub value: f64,
}

/// The result of an instant evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string literal.
    String(String),
    /// An instant vector: at most one sample per label set.
    Vector(Vec<Sample>),
    /// A range vector (`foo[5m]` evaluated on its own): the raw points in the window.
    Matrix(Vec<Series>),
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Scalar(_) => ValueType::Scalar,
            Value::String(_) => ValueType::String,
            Value::Vector(_) => ValueType::Vector,
            Value::Matrix(_) => ValueType::Matrix,
        }
    }
}

/// The type of a PromQL expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A number.
    Scalar,
    /// A string.
    String,
    /// An instant vector.
    Vector,
    /// A range vector.
    Matrix,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Scalar => "scalar",
            ValueType::String => "string",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
        })
    }
}
