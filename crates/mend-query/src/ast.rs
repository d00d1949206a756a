//! mend's own expression tree: only what the evaluator supports, already type-checked.

use crate::labels::{LabelMatcher, Labels, METRIC_NAME};
use crate::value::ValueType;

/// A vector selector the query reads, as the storage will be asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    pub(crate) matchers: Vec<LabelMatcher>,
    pub(crate) offset_ms: i64,
    pub(crate) range_ms: Option<i64>,
}

impl Selector {
    /// The label matchers; the metric name, if given, is a `__name__` equality matcher.
    pub fn matchers(&self) -> &[LabelMatcher] {
        &self.matchers
    }

    /// The metric name, when the selector names one with an equality matcher.
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name() == METRIC_NAME && m.op() == crate::labels::MatchOp::Equal)
            .map(LabelMatcher::value)
    }

    /// The `offset`, in milliseconds (negative offsets look ahead).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// The range of a range selector (`foo[5m]`), in milliseconds; `None` for an instant selector.
    pub fn range_ms(&self) -> Option<i64> {
        self.range_ms
    }
}

/// The functions whose argument is a range vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeFn {
    Rate,
    Irate,
    Increase,
    Delta,
    Idelta,
    Deriv,
    Resets,
    Changes,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    QuantileOverTime,
    StddevOverTime,
}

/// Functions of instant vectors and scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InstantFn {
    Abs,
    ClampMin,
    ClampMax,
    HistogramQuantile,
    Vector,
    Scalar,
}

/// Aggregation operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AggrOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Stddev,
    Topk,
    Bottomk,
    Quantile,
}

impl AggrOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            AggrOp::Sum => "sum",
            AggrOp::Avg => "avg",
            AggrOp::Min => "min",
            AggrOp::Max => "max",
            AggrOp::Count => "count",
            AggrOp::Stddev => "stddev",
            AggrOp::Topk => "topk",
            AggrOp::Bottomk => "bottomk",
            AggrOp::Quantile => "quantile",
        }
    }
}

/// Which labels an aggregation keeps.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Grouping {
    /// `by (...)`, and no clause at all (an empty list).
    By(Vec<String>),
    /// `without (...)`; the metric name is always dropped too.
    Without(Vec<String>),
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub(crate) fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le)
    }

    pub(crate) fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// How a vector/vector operation pairs samples.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Matching {
    /// `on (...)` when true, `ignoring (...)` (or no clause, with an empty list) when false.
    pub(crate) on: bool,
    pub(crate) labels: Vec<String>,
    pub(crate) card: Cardinality,
}

/// Vector matching cardinality; the lists are `group_left`/`group_right`'s extra labels.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cardinality {
    OneToOne,
    ManyToOne(Vec<String>),
    OneToMany(Vec<String>),
    /// Set operators.
    ManyToMany,
}

/// A validated expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Number(f64),
    String(String),
    /// An instant vector selector: index into the query's selectors.
    Instant(usize),
    /// A range vector selector (only at the top level; functions name their selector directly).
    Range(usize),
    RangeCall {
        func: RangeFn,
        /// `quantile_over_time`'s φ.
        param: Option<Box<Expr>>,
        selector: usize,
    },
    InstantCall {
        func: InstantFn,
        args: Vec<Expr>,
    },
    /// `absent(v)`, with the labels of its answer worked out at parse time.
    Absent {
        expr: Box<Expr>,
        labels: Labels,
    },
    /// `absent_over_time(v[range])`.
    AbsentOverTime {
        selector: usize,
        labels: Labels,
    },
    Time,
    Aggregate {
        op: AggrOp,
        param: Option<Box<Expr>>,
        grouping: Grouping,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        /// Only for vector/vector operations.
        matching: Option<Matching>,
        return_bool: bool,
    },
    Neg(Box<Expr>),
}

impl Expr {
    pub(crate) fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) | Expr::Time => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::Range(_) => ValueType::Matrix,
            Expr::InstantCall { func: InstantFn::Scalar, .. } => ValueType::Scalar,
            Expr::Instant(_)
            | Expr::RangeCall { .. }
            | Expr::InstantCall { .. }
            | Expr::Absent { .. }
            | Expr::AbsentOverTime { .. }
            | Expr::Aggregate { .. } => ValueType::Vector,
            Expr::Binary { lhs, rhs, .. } => {
                if lhs.value_type() == ValueType::Scalar && rhs.value_type() == ValueType::Scalar {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Neg(expr) => expr.value_type(),
        }
    }
}
