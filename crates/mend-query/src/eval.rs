//! The evaluator: one expression at one instant, over series fetched beforehand.

use std::collections::HashSet;

use crate::aggregate;
use crate::ast::{Expr, InstantFn, Selector};
use crate::binary;
use crate::error::EvalError;
use crate::functions::{self, Window};
use crate::labels::Labels;
use crate::math;
use crate::value::{Sample, Series, ValueType};

/// What an expression evaluates to at one instant (range vectors only appear as function
/// arguments, which read their selector's window directly).
pub(crate) enum StepValue {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
}

/// Evaluates expressions at given instants over pre-fetched series.
pub(crate) struct Evaluator<'a> {
    pub(crate) selectors: &'a [Selector],
    /// Per selector, the series fetched for it, points oldest first.
    pub(crate) data: &'a [Vec<Series>],
    pub(crate) lookback_ms: i64,
}

/// The points of `points` in `(start_ms, end_ms]`.
pub(crate) fn window(points: &[(i64, f64)], start_ms: i64, end_ms: i64) -> &[(i64, f64)] {
    let lo = points.partition_point(|&(t, _)| t <= start_ms);
    let hi = points.partition_point(|&(t, _)| t <= end_ms);
    if lo < hi { &points[lo..hi] } else { &[] }
}

/// An expression tree whose types do not fit: a bug in the parser's conversion.
fn mismatch(expected: ValueType) -> EvalError {
    EvalError::Internal { reason: format!("expression tree broke its invariant: expected {expected}") }
}

impl Evaluator<'_> {
    pub(crate) fn eval(&self, expr: &Expr, t: i64) -> Result<StepValue, EvalError> {
        match expr.value_type() {
            ValueType::Scalar => Ok(StepValue::Scalar(self.scalar(expr, t)?)),
            ValueType::Vector => Ok(StepValue::Vector(self.vector(expr, t)?)),
            ValueType::String => match expr {
                Expr::String(text) => Ok(StepValue::String(text.clone())),
                _ => Err(mismatch(ValueType::String)),
            },
            ValueType::Matrix => Err(mismatch(ValueType::Vector)),
        }
    }

    pub(crate) fn scalar(&self, expr: &Expr, t: i64) -> Result<f64, EvalError> {
        match expr {
            Expr::Number(value) => Ok(*value),
            Expr::Time => Ok(t as f64 / 1000.0),
            Expr::Neg(inner) => Ok(-self.scalar(inner, t)?),
            Expr::Binary { op, lhs, rhs, .. } => {
                Ok(binary::scalar_scalar(*op, self.scalar(lhs, t)?, self.scalar(rhs, t)?))
            }
            Expr::InstantCall { func: InstantFn::Scalar, args } => {
                let [arg] = args.as_slice() else { return Err(mismatch(ValueType::Vector)) };
                let vector = self.vector(arg, t)?;
                Ok(match vector.as_slice() {
                    [only] => only.value,
                    _ => f64::NAN,
                })
            }
            _ => Err(mismatch(ValueType::Scalar)),
        }
    }

    pub(crate) fn vector(&self, expr: &Expr, t: i64) -> Result<Vec<Sample>, EvalError> {
        match expr {
            Expr::Instant(idx) => Ok(self.instant_selector(*idx, t)),
            Expr::RangeCall { func, param, selector } => {
                let param = match param {
                    Some(param) => self.scalar(param, t)?,
                    None => f64::NAN,
                };
                let mut out = Vec::new();
                let keep_name = *func == crate::ast::RangeFn::LastOverTime;
                self.for_each_window(*selector, t, |labels, window| {
                    if let Some(value) = functions::range_fn(*func, &window, param) {
                        let labels = if keep_name { labels.clone() } else { labels.without_name() };
                        out.push(Sample { labels, value });
                    }
                });
                check_unique(&out)?;
                Ok(out)
            }
            Expr::AbsentOverTime { selector, labels } => {
                let mut any = false;
                self.for_each_window(*selector, t, |_, _| any = true);
                Ok(absent_answer(any, labels))
            }
            Expr::Absent { expr, labels } => {
                let present = !self.vector(expr, t)?.is_empty();
                Ok(absent_answer(present, labels))
            }
            Expr::InstantCall { func, args } => self.instant_call(*func, args, t),
            Expr::Aggregate { op, param, grouping, expr } => {
                let param = match param {
                    Some(param) => Some(self.scalar(param, t)?),
                    None => None,
                };
                aggregate::aggregate(*op, param, grouping, self.vector(expr, t)?)
            }
            Expr::Neg(inner) => {
                let out: Vec<Sample> = self
                    .vector(inner, t)?
                    .into_iter()
                    .map(|sample| Sample { labels: sample.labels.without_name(), value: -sample.value })
                    .collect();
                check_unique(&out)?;
                Ok(out)
            }
            Expr::Binary { op, lhs, rhs, matching, return_bool } => {
                match (lhs.value_type(), rhs.value_type(), matching) {
                    (ValueType::Vector, ValueType::Vector, Some(matching)) => {
                        let (lhs, rhs) = (self.vector(lhs, t)?, self.vector(rhs, t)?);
                        if op.is_set() {
                            Ok(binary::set_operation(*op, lhs, rhs, matching))
                        } else {
                            binary::vector_vector(*op, lhs, rhs, matching, *return_bool)
                        }
                    }
                    (ValueType::Vector, ValueType::Scalar, _) => {
                        let out =
                            binary::vector_scalar(*op, self.vector(lhs, t)?, self.scalar(rhs, t)?, false, *return_bool);
                        check_unique(&out)?;
                        Ok(out)
                    }
                    (ValueType::Scalar, ValueType::Vector, _) => {
                        let out =
                            binary::vector_scalar(*op, self.vector(rhs, t)?, self.scalar(lhs, t)?, true, *return_bool);
                        check_unique(&out)?;
                        Ok(out)
                    }
                    _ => Err(mismatch(ValueType::Vector)),
                }
            }
            _ => Err(mismatch(ValueType::Vector)),
        }
    }

    fn instant_call(&self, func: InstantFn, args: &[Expr], t: i64) -> Result<Vec<Sample>, EvalError> {
        let out = match (func, args) {
            (InstantFn::Abs, [arg]) => self
                .vector(arg, t)?
                .into_iter()
                .map(|sample| Sample { labels: sample.labels.without_name(), value: sample.value.abs() })
                .collect(),
            (InstantFn::ClampMin | InstantFn::ClampMax, [arg, bound]) => {
                let bound = self.scalar(bound, t)?;
                let clamp = if func == InstantFn::ClampMin { math::go_max } else { math::go_min };
                self.vector(arg, t)?
                    .into_iter()
                    .map(|sample| Sample { labels: sample.labels.without_name(), value: clamp(bound, sample.value) })
                    .collect()
            }
            (InstantFn::HistogramQuantile, [phi, buckets]) => {
                let phi = self.scalar(phi, t)?;
                functions::histogram_quantile(phi, self.vector(buckets, t)?)
            }
            (InstantFn::Vector, [arg]) => vec![Sample { labels: Labels::empty(), value: self.scalar(arg, t)? }],
            _ => return Err(mismatch(ValueType::Vector)),
        };
        check_unique(&out)?;
        Ok(out)
    }

    /// The latest point of each series within the lookback window before `t` (minus the offset).
    fn instant_selector(&self, idx: usize, t: i64) -> Vec<Sample> {
        let (Some(selector), Some(series)) = (self.selectors.get(idx), self.data.get(idx)) else {
            return Vec::new();
        };
        let end_ms = t.saturating_sub(selector.offset_ms);
        let start_ms = end_ms.saturating_sub(self.lookback_ms);
        series
            .iter()
            .filter_map(|series| {
                // A series whose latest point is a staleness marker has gone away.
                window(&series.points, start_ms, end_ms)
                    .last()
                    .filter(|&&(_, value)| !crate::value::is_stale_marker(value))
                    .map(|&(_, value)| Sample { labels: series.labels.clone(), value })
            })
            .collect()
    }

    /// Calls `f` with each series' non-empty window of a range selector at `t`.
    fn for_each_window<'s>(&'s self, idx: usize, t: i64, mut f: impl FnMut(&'s Labels, Window<'s>)) {
        let (Some(selector), Some(series)) = (self.selectors.get(idx), self.data.get(idx)) else {
            return;
        };
        let range_ms = selector.range_ms.unwrap_or(self.lookback_ms);
        let end_ms = t.saturating_sub(selector.offset_ms);
        let start_ms = end_ms.saturating_sub(range_ms);
        for series in series {
            let points = window(&series.points, start_ms, end_ms);
            if !points.is_empty() {
                f(&series.labels, Window { points, start_ms, end_ms, range_ms });
            }
        }
    }

    /// The raw points of a range selector at `t` (a range vector evaluated on its own).
    pub(crate) fn matrix(&self, idx: usize, t: i64) -> Vec<Series> {
        let mut out = Vec::new();
        self.for_each_window(idx, t, |labels, window| {
            out.push(Series { labels: labels.clone(), points: window.points.to_vec() });
        });
        out
    }
}

/// `absent`'s answer: nothing when something is present, else one sample of value 1.
fn absent_answer(present: bool, labels: &Labels) -> Vec<Sample> {
    if present { Vec::new() } else { vec![Sample { labels: labels.clone(), value: 1.0 }] }
}

/// Fails when two samples have the same labels (after an operation dropped the metric name).
fn check_unique(samples: &[Sample]) -> Result<(), EvalError> {
    if samples.len() < 2 {
        return Ok(());
    }
    let mut seen: HashSet<&Labels> = HashSet::with_capacity(samples.len());
    for sample in samples {
        if !seen.insert(&sample.labels) {
            return Err(EvalError::DuplicateLabelset { labels: sample.labels.to_string() });
        }
    }
    Ok(())
}
