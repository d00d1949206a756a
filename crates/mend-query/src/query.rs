//! [`Query`]: a parsed, validated expression, and its instant and range evaluation.

use std::collections::HashMap;
use std::fmt;

use crate::ast::{AggrOp, BinOp, Expr, Selector};
use crate::error::{EvalError, QueryError};
use crate::eval::{Evaluator, StepValue};
use crate::labels::Labels;
use crate::parse;
use crate::storage::Storage;
use crate::value::{Series, Value, ValueType};

/// How far back an instant selector looks for a point, as Prometheus's default.
pub const DEFAULT_LOOKBACK_DELTA_MS: i64 = 5 * 60 * 1000;

/// The most points per series a range query may produce, as Prometheus's limit.
pub const DEFAULT_MAX_STEPS: u64 = 11_000;

/// Evaluation settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// How far back (exclusive) an instant selector looks for the latest point, in milliseconds;
    /// must be positive. A series that ended with a staleness marker (its target went away)
    /// disappears at once; one whose points merely stopped stays visible for this long.
    pub lookback_delta_ms: i64,
    /// The most steps a range query may have.
    pub max_steps: u64,
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions { lookback_delta_ms: DEFAULT_LOOKBACK_DELTA_MS, max_steps: DEFAULT_MAX_STEPS }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComparisonOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
}

/// The comparison at the top of a query, such as `> 0.05` in an alerting rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// The operator.
    pub op: ComparisonOp,
    /// Whether it has the `bool` modifier: then every sample is kept with value 0 or 1, so an
    /// alerting rule on it would fire whenever there is data.
    pub returns_bool: bool,
}

/// A PromQL query in the supported subset, parsed and validated once.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    text: String,
    expr: Expr,
    selectors: Vec<Selector>,
}

impl Query {
    /// Parses `text`; anything outside the supported subset is refused here, with an error that
    /// names the construct, so that a config loader can refuse a rule when it loads it.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let (expr, selectors) = parse::parse(text)?;
        Ok(Query { text: text.to_owned(), expr, selectors })
    }

    /// The query as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The vector selectors the query reads (each distinct one once), in order of appearance.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// The selector, when the whole query is a plain instant selector (`name{label="x"}`, no offset):
    /// then its raw points can be read directly instead of evaluating it at instants.
    pub fn plain_selector(&self) -> Option<&Selector> {
        match self.expr {
            Expr::Instant(idx) => self.selectors.get(idx).filter(|selector| selector.offset_ms() == 0),
            _ => None,
        }
    }

    /// The type of the query's result.
    pub fn value_type(&self) -> ValueType {
        self.expr.value_type()
    }

    /// The comparison at the top of the query, if there is one.
    pub fn comparison(&self) -> Option<Comparison> {
        let Expr::Binary { op, return_bool, .. } = &self.expr else { return None };
        let op = match op {
            BinOp::Eq => ComparisonOp::Eq,
            BinOp::Ne => ComparisonOp::Ne,
            BinOp::Gt => ComparisonOp::Gt,
            BinOp::Lt => ComparisonOp::Lt,
            BinOp::Ge => ComparisonOp::Ge,
            BinOp::Le => ComparisonOp::Le,
            _ => return None,
        };
        Some(Comparison { op, returns_bool: *return_bool })
    }

    /// Evaluates the query at `at_ms` (milliseconds since the epoch), as Prometheus's
    /// `/api/v1/query`.
    ///
    /// A vector result is sorted by labels, except under a top-level `topk`/`bottomk`, which
    /// keeps its ranking order; a range selector evaluated on its own gives a matrix.
    pub fn eval_instant<S: Storage + ?Sized>(
        &self,
        storage: &S,
        at_ms: i64,
        options: &EvalOptions,
    ) -> Result<Value, EvalError> {
        check_options(options)?;
        let data = self.fetch(storage, at_ms, at_ms, options);
        let evaluator = Evaluator { selectors: &self.selectors, data: &data, lookback_ms: options.lookback_delta_ms };
        if let Expr::Range(idx) = &self.expr {
            let mut matrix = evaluator.matrix(*idx, at_ms);
            matrix.sort_by(|a, b| a.labels.cmp(&b.labels));
            return Ok(Value::Matrix(matrix));
        }
        Ok(match evaluator.eval(&self.expr, at_ms)? {
            StepValue::Scalar(value) => Value::Scalar(value),
            StepValue::String(text) => Value::String(text),
            StepValue::Vector(mut samples) => {
                let ranked = matches!(self.expr, Expr::Aggregate { op: AggrOp::Topk | AggrOp::Bottomk, .. });
                if !ranked {
                    samples.sort_by(|a, b| a.labels.cmp(&b.labels));
                }
                Value::Vector(samples)
            }
        })
    }

    /// Evaluates the query at `start_ms`, `start_ms + step_ms`, ... up to `end_ms`, as
    /// Prometheus's `/api/v1/query_range`: one series per label set (a scalar query gives one
    /// series without labels), sorted by labels, each with a point at the steps where it had a
    /// value. Only scalar and instant-vector queries can be evaluated over a range.
    pub fn eval_range<S: Storage + ?Sized>(
        &self,
        storage: &S,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        options: &EvalOptions,
    ) -> Result<Vec<Series>, EvalError> {
        check_options(options)?;
        let invalid = |reason| EvalError::InvalidRange { start_ms, end_ms, step_ms, reason };
        if step_ms <= 0 {
            return Err(invalid("step must be positive"));
        }
        if end_ms < start_ms {
            return Err(invalid("end is before start"));
        }
        let n_steps = (end_ms.abs_diff(start_ms) / step_ms.unsigned_abs()).saturating_add(1);
        if n_steps > options.max_steps {
            return Err(EvalError::TooManySteps { n_steps, max_steps: options.max_steps });
        }
        let value_type = self.value_type();
        if !matches!(value_type, ValueType::Scalar | ValueType::Vector) {
            return Err(EvalError::RangeQueryType { actual: value_type });
        }
        let data = self.fetch(storage, start_ms, end_ms, options);
        let evaluator = Evaluator { selectors: &self.selectors, data: &data, lookback_ms: options.lookback_delta_ms };
        let mut series_idx: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<Series> = Vec::new();
        let mut t = start_ms;
        while t <= end_ms {
            let samples = match evaluator.eval(&self.expr, t)? {
                StepValue::Scalar(value) => vec![crate::value::Sample { labels: Labels::empty(), value }],
                StepValue::Vector(samples) => samples,
                StepValue::String(_) => return Err(EvalError::RangeQueryType { actual: ValueType::String }),
            };
            for sample in samples {
                let idx = *series_idx.entry(sample.labels.clone()).or_insert_with(|| {
                    out.push(Series { labels: sample.labels.clone(), points: Vec::new() });
                    out.len() - 1
                });
                let points = &mut out[idx].points;
                if points.last().is_some_and(|&(last_t, _)| last_t == t) {
                    return Err(EvalError::DuplicateLabelset { labels: sample.labels.to_string() });
                }
                points.push((t, sample.value));
            }
            match t.checked_add(step_ms) {
                Some(next) => t = next,
                None => break,
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Reads every selector once for evaluation times `first_ms..=last_ms`.
    fn fetch<S: Storage + ?Sized>(
        &self,
        storage: &S,
        first_ms: i64,
        last_ms: i64,
        options: &EvalOptions,
    ) -> Vec<Vec<Series>> {
        self.selectors
            .iter()
            .map(|selector| {
                let window_ms = selector.range_ms.unwrap_or(options.lookback_delta_ms);
                // Windows are left-open, `(t - window, t]`, as in Prometheus 3.
                let start_ms = first_ms.saturating_sub(selector.offset_ms).saturating_sub(window_ms).saturating_add(1);
                let end_ms = last_ms.saturating_sub(selector.offset_ms);
                let mut series = storage.select(&selector.matchers, start_ms, end_ms);
                for one in &mut series {
                    if !one.points.is_sorted_by_key(|&(t, _)| t) {
                        one.points.sort_by_key(|&(t, _)| t);
                    }
                    // Staleness markers only end instant selectors; ranges skip them.
                    if selector.range_ms.is_some() {
                        one.points.retain(|&(_, value)| !crate::value::is_stale_marker(value));
                    }
                }
                if selector.range_ms.is_some() {
                    series.retain(|one| !one.points.is_empty());
                }
                series
            })
            .collect()
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_options(options: &EvalOptions) -> Result<(), EvalError> {
    if options.lookback_delta_ms <= 0 {
        return Err(EvalError::InvalidOption { option: "lookback_delta_ms", reason: "must be positive" });
    }
    Ok(())
}
