//! From promql-parser's syntax tree to mend's validated [`Expr`], refusing everything outside the
//! supported subset with an error that names the construct.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use promql_parser::label::{MatchOp as ParserMatchOp, Matcher as ParserMatcher};
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_AVG, T_BOTTOMK, T_COUNT, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS,
    T_MAX, T_MIN, T_MOD, T_MUL, T_NEQ, T_POW, T_QUANTILE, T_STDDEV, T_SUB, T_SUM, T_TOPK,
};
use promql_parser::parser::{self, LabelModifier, Offset, VectorMatchCardinality, VectorSelector};

use crate::ast::{AggrOp, BinOp, Cardinality, Expr, Grouping, InstantFn, Matching, RangeFn, Selector};
use crate::error::QueryError;
use crate::labels::{LabelMatcher, Labels, METRIC_NAME, MatchOp};
use crate::value::ValueType;

/// Parses `text` and converts it; returns the expression and the selectors it reads.
pub(crate) fn parse(text: &str) -> Result<(Expr, Vec<Selector>), QueryError> {
    check_size(text)?;
    check_regexes(text)?;
    let parsed = parser::parse(text).map_err(|message| QueryError::Syntax { message })?;
    let mut converter = Converter { selectors: Vec::new() };
    let expr = converter.convert(&parsed)?;
    Ok((expr, converter.selectors))
}

/// Most operators (and label matchers, which are counted alike) in one expression.
pub(crate) const MAX_OPERATORS: usize = 250;
/// Most levels of brackets in one expression.
pub(crate) const MAX_NESTING: usize = 64;

/// Refuses expressions too large to handle safely, before they are parsed. The parser, the conversion
/// and the evaluation recurse once per level of the expression tree: `up+up+...` with 4000 terms (a
/// 12 KB query string, from any client of the query API) overflowed a worker thread's stack and took
/// mend down. Real expressions stay far below these limits.
fn check_size(text: &str) -> Result<(), QueryError> {
    let mut operators = 0usize;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut word = String::new();
    let mut chars = text.chars();
    fn end_word(word: &mut String, operators: &mut usize) {
        if ["and", "or", "unless"].iter().any(|keyword| word.eq_ignore_ascii_case(keyword)) {
            *operators += 1;
        }
        word.clear();
    }
    while let Some(c) = chars.next() {
        if let Some(open) = quote {
            if c == '\\' && open != '`' {
                chars.next();
            } else if c == open {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        end_word(&mut word, &mut operators);
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '{' | '[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(QueryError::Unsupported { construct: "expressions nested more than 64 levels deep" });
                }
            }
            ')' | '}' | ']' => depth = depth.saturating_sub(1),
            '+' | '-' | '*' | '/' | '%' | '^' | '=' | '!' | '<' | '>' => operators += 1,
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return Err(QueryError::Unsupported { construct: "expressions with more than 250 operators" });
        }
    }
    end_word(&mut word, &mut operators);
    if operators > MAX_OPERATORS {
        return Err(QueryError::Unsupported { construct: "expressions with more than 250 operators" });
    }
    Ok(())
}

/// Refuses, before promql-parser sees them, the regular expressions that it would compile without a
/// size limit: one 1.7 KB query with 40 matchers like `l=~"\p{L}{200}"` took 855 MB for 7 s. The
/// query is lexed with promql-parser's own lexer, and each string that follows `=~` or `!~` is unquoted
/// as its grammar does and compiled within the limits in the exact forms promql-parser will compile
/// (`^(?:...)$`, then with literal braces escaped when that does not parse).
fn check_regexes(text: &str) -> Result<(), QueryError> {
    use lrpar::{Lexeme, Lexer, NonStreamingLexer};
    use promql_parser::parser::lexer;
    use promql_parser::parser::token::{T_EQL_REGEX, T_NEQ_REGEX, T_STRING};

    // A text the lexer refuses is refused by the parser as well, with the parser's message.
    let Ok(lexemes) = lexer(text) else { return Ok(()) };
    // The label's name (the lexeme before the operator) once a regex operator was just seen.
    let mut label: Option<&str> = None;
    let mut previous: &str = "";
    for lexeme in lexemes.iter().flatten() {
        let token = lexeme.tok_id();
        let lexeme_text = lexemes.span_str(lexeme.span());
        if token == T_STRING
            && let Some(label) = label.take()
        {
            let Ok(pattern) = promql_parser::util::unquote_string(lexeme_text) else { continue };
            let anchored = format!("^(?:{pattern})$");
            let checked = crate::labels::limited_regex(&anchored).map(drop).or_else(|first| match first {
                regex::Error::Syntax(_) => {
                    crate::labels::limited_regex(&crate::labels::escape_literal_braces(&anchored)).map(drop)
                }
                other => Err(other),
            });
            match checked {
                // An invalid pattern is the parser's to report.
                Ok(()) | Err(regex::Error::Syntax(_)) => {}
                Err(error) => return Err(crate::labels::regex_error(label, &pattern, error)),
            }
            continue;
        }
        label = (token == T_EQL_REGEX || token == T_NEQ_REGEX).then_some(previous);
        previous = lexeme_text;
    }
    Ok(())
}

struct Converter {
    selectors: Vec<Selector>,
}

impl Converter {
    fn convert(&mut self, expr: &parser::Expr) -> Result<Expr, QueryError> {
        match expr {
            parser::Expr::NumberLiteral(number) => Ok(Expr::Number(number.val)),
            parser::Expr::StringLiteral(string) => Ok(Expr::String(string.val.clone())),
            parser::Expr::Paren(paren) => self.convert(&paren.expr),
            parser::Expr::Subquery(_) => Err(QueryError::Unsupported { construct: "subqueries" }),
            parser::Expr::Extension(_) => Err(QueryError::Unsupported { construct: "extension expressions" }),
            parser::Expr::VectorSelector(vs) => Ok(Expr::Instant(self.selector(vs, None)?)),
            parser::Expr::MatrixSelector(ms) => Ok(Expr::Range(self.selector(&ms.vs, Some(ms.range))?)),
            parser::Expr::Unary(unary) => {
                let inner = self.convert(&unary.expr)?;
                expect_one_of(&inner, &[ValueType::Scalar, ValueType::Vector], "unary expression")?;
                Ok(Expr::Neg(Box::new(inner)))
            }
            parser::Expr::Aggregate(aggregate) => self.aggregate(aggregate),
            parser::Expr::Binary(binary) => self.binary(binary),
            parser::Expr::Call(call) => self.call(call),
        }
    }

    fn aggregate(&mut self, aggregate: &parser::AggregateExpr) -> Result<Expr, QueryError> {
        let op = match aggregate.op.id() {
            T_SUM => AggrOp::Sum,
            T_AVG => AggrOp::Avg,
            T_MIN => AggrOp::Min,
            T_MAX => AggrOp::Max,
            T_COUNT => AggrOp::Count,
            T_STDDEV => AggrOp::Stddev,
            T_TOPK => AggrOp::Topk,
            T_BOTTOMK => AggrOp::Bottomk,
            T_QUANTILE => AggrOp::Quantile,
            _ => return Err(QueryError::UnsupportedAggregation { name: aggregate.op.to_string() }),
        };
        let context = format!("aggregation {}", op.name());
        let param = match &aggregate.param {
            Some(param) => {
                let param = self.convert(param)?;
                expect(&param, ValueType::Scalar, &context)?;
                Some(Box::new(param))
            }
            None => None,
        };
        let inner = self.convert(&aggregate.expr)?;
        expect(&inner, ValueType::Vector, &context)?;
        let grouping = match &aggregate.modifier {
            None => Grouping::By(Vec::new()),
            Some(LabelModifier::Include(labels)) => Grouping::By(labels.labels.clone()),
            Some(LabelModifier::Exclude(labels)) => Grouping::Without(labels.labels.clone()),
        };
        Ok(Expr::Aggregate { op, param, grouping, expr: Box::new(inner) })
    }

    fn binary(&mut self, binary: &parser::BinaryExpr) -> Result<Expr, QueryError> {
        let op = match binary.op.id() {
            T_ADD => BinOp::Add,
            T_SUB => BinOp::Sub,
            T_MUL => BinOp::Mul,
            T_DIV => BinOp::Div,
            T_MOD => BinOp::Mod,
            T_POW => BinOp::Pow,
            T_EQLC => BinOp::Eq,
            T_NEQ => BinOp::Ne,
            T_GTR => BinOp::Gt,
            T_LSS => BinOp::Lt,
            T_GTE => BinOp::Ge,
            T_LTE => BinOp::Le,
            T_LAND => BinOp::And,
            T_LOR => BinOp::Or,
            T_LUNLESS => BinOp::Unless,
            T_ATAN2 => return Err(QueryError::UnsupportedOperator { name: "atan2".to_owned() }),
            _ => return Err(QueryError::UnsupportedOperator { name: binary.op.to_string() }),
        };
        if let Some(modifier) = &binary.modifier
            && (modifier.fill_values.lhs.is_some() || modifier.fill_values.rhs.is_some())
        {
            return Err(QueryError::Unsupported { construct: "fill modifiers" });
        }
        let lhs = self.convert(&binary.lhs)?;
        let rhs = self.convert(&binary.rhs)?;
        let context = format!("binary operator \"{}\"", binary.op);
        expect_one_of(&lhs, &[ValueType::Scalar, ValueType::Vector], &context)?;
        expect_one_of(&rhs, &[ValueType::Scalar, ValueType::Vector], &context)?;
        let both_vectors = lhs.value_type() == ValueType::Vector && rhs.value_type() == ValueType::Vector;
        if op.is_set() && !both_vectors {
            // promql-parser refuses this already; kept so that the tree's invariant does not depend on it.
            let actual = if lhs.value_type() == ValueType::Scalar { lhs.value_type() } else { rhs.value_type() };
            return Err(QueryError::Type { expected: ValueType::Vector, actual, context });
        }
        let return_bool = binary.modifier.as_ref().is_some_and(|m| m.return_bool);
        let matching = both_vectors.then(|| {
            let (on, labels) = match binary.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(labels)) => (true, labels.labels.clone()),
                Some(LabelModifier::Exclude(labels)) => (false, labels.labels.clone()),
                None => (false, Vec::new()),
            };
            let card = if op.is_set() {
                Cardinality::ManyToMany
            } else {
                match binary.modifier.as_ref().map(|m| &m.card) {
                    Some(VectorMatchCardinality::ManyToOne(include)) => Cardinality::ManyToOne(include.labels.clone()),
                    Some(VectorMatchCardinality::OneToMany(include)) => Cardinality::OneToMany(include.labels.clone()),
                    _ => Cardinality::OneToOne,
                }
            };
            Matching { on, labels, card }
        });
        Ok(Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs), matching, return_bool })
    }

    fn call(&mut self, call: &parser::Call) -> Result<Expr, QueryError> {
        let name = call.func.name;
        let args: Vec<&parser::Expr> = call.args.args.iter().map(|arg| unwrap_parens(arg)).collect();
        let range_fn = match name {
            "rate" => Some(RangeFn::Rate),
            "irate" => Some(RangeFn::Irate),
            "increase" => Some(RangeFn::Increase),
            "delta" => Some(RangeFn::Delta),
            "idelta" => Some(RangeFn::Idelta),
            "deriv" => Some(RangeFn::Deriv),
            "resets" => Some(RangeFn::Resets),
            "changes" => Some(RangeFn::Changes),
            "avg_over_time" => Some(RangeFn::AvgOverTime),
            "min_over_time" => Some(RangeFn::MinOverTime),
            "max_over_time" => Some(RangeFn::MaxOverTime),
            "sum_over_time" => Some(RangeFn::SumOverTime),
            "count_over_time" => Some(RangeFn::CountOverTime),
            "last_over_time" => Some(RangeFn::LastOverTime),
            "quantile_over_time" => Some(RangeFn::QuantileOverTime),
            "stddev_over_time" => Some(RangeFn::StddevOverTime),
            _ => None,
        };
        if let Some(func) = range_fn {
            let (param, range_arg) = match (func, args.as_slice()) {
                (RangeFn::QuantileOverTime, [param, range_arg]) => {
                    let param = self.convert(param)?;
                    expect(&param, ValueType::Scalar, "call to function \"quantile_over_time\"")?;
                    (Some(Box::new(param)), *range_arg)
                }
                (_, [range_arg]) => (None, *range_arg),
                _ => return Err(arity(name, &args)),
            };
            let selector = self.range_argument(name, range_arg)?;
            return Ok(Expr::RangeCall { func, param, selector });
        }
        let instant_fn = match name {
            "abs" => InstantFn::Abs,
            "clamp_min" => InstantFn::ClampMin,
            "clamp_max" => InstantFn::ClampMax,
            "histogram_quantile" => InstantFn::HistogramQuantile,
            "vector" => InstantFn::Vector,
            "scalar" => InstantFn::Scalar,
            "time" => {
                if !args.is_empty() {
                    return Err(arity(name, &args));
                }
                return Ok(Expr::Time);
            }
            "absent" => {
                let [arg] = args.as_slice() else { return Err(arity(name, &args)) };
                let labels = match arg {
                    parser::Expr::VectorSelector(vs) => absent_labels(vs),
                    _ => Labels::empty(),
                };
                let inner = self.convert(arg)?;
                expect(&inner, ValueType::Vector, "call to function \"absent\"")?;
                return Ok(Expr::Absent { expr: Box::new(inner), labels });
            }
            "absent_over_time" => {
                let [arg] = args.as_slice() else { return Err(arity(name, &args)) };
                let labels = match arg {
                    parser::Expr::MatrixSelector(ms) => absent_labels(&ms.vs),
                    _ => Labels::empty(),
                };
                let selector = self.range_argument(name, arg)?;
                return Ok(Expr::AbsentOverTime { selector, labels });
            }
            _ => return Err(QueryError::UnsupportedFunction { name: name.to_owned() }),
        };
        let expected: &[ValueType] = match instant_fn {
            InstantFn::Abs | InstantFn::Scalar => &[ValueType::Vector],
            InstantFn::ClampMin | InstantFn::ClampMax => &[ValueType::Vector, ValueType::Scalar],
            InstantFn::HistogramQuantile => &[ValueType::Scalar, ValueType::Vector],
            InstantFn::Vector => &[ValueType::Scalar],
        };
        if args.len() != expected.len() {
            return Err(arity(name, &args));
        }
        let context = format!("call to function \"{name}\"");
        let mut converted = Vec::with_capacity(args.len());
        for (arg, &expected_type) in args.iter().zip(expected) {
            let arg = self.convert(arg)?;
            expect(&arg, expected_type, &context)?;
            converted.push(arg);
        }
        Ok(Expr::InstantCall { func: instant_fn, args: converted })
    }

    /// The selector of a function's range-vector argument.
    fn range_argument(&mut self, name: &str, arg: &parser::Expr) -> Result<usize, QueryError> {
        match self.convert(arg)? {
            Expr::Range(selector) => Ok(selector),
            other => Err(QueryError::Type {
                expected: ValueType::Matrix,
                actual: other.value_type(),
                context: format!("call to function \"{name}\""),
            }),
        }
    }

    /// Registers a selector (reusing an identical one) and returns its index.
    fn selector(&mut self, vs: &VectorSelector, range: Option<Duration>) -> Result<usize, QueryError> {
        if vs.at.is_some() {
            return Err(QueryError::Unsupported { construct: "@ modifier" });
        }
        if !vs.matchers.or_matchers.is_empty() {
            return Err(QueryError::Unsupported { construct: "\"or\" in label matchers" });
        }
        let mut matchers = Vec::with_capacity(vs.matchers.matchers.len() + 1);
        if let Some(name) = &vs.name {
            matchers.push(LabelMatcher::equal(METRIC_NAME, name.clone()));
        }
        for matcher in &vs.matchers.matchers {
            matchers.push(convert_matcher(matcher)?);
        }
        if matchers.iter().all(LabelMatcher::matches_empty) {
            return Err(QueryError::Syntax {
                message: "vector selector must contain at least one non-empty matcher".to_owned(),
            });
        }
        let offset_ms = match &vs.offset {
            None => 0,
            Some(Offset::Pos(duration)) => millis(duration, &format!("offset {duration:?}"))?,
            Some(Offset::Neg(duration)) => -millis(duration, &format!("offset -{duration:?}"))?,
        };
        let range_ms = match range {
            None => None,
            Some(range) => {
                let range_ms = millis(&range, &format!("range {range:?}"))?;
                if range_ms <= 0 {
                    return Err(QueryError::EmptyRange { selector: format!("{vs}[{range:?}]") });
                }
                Some(range_ms)
            }
        };
        let selector = Selector { matchers, offset_ms, range_ms };
        if let Some(idx) = self.selectors.iter().position(|existing| *existing == selector) {
            return Ok(idx);
        }
        self.selectors.push(selector);
        Ok(self.selectors.len() - 1)
    }
}

fn convert_matcher(matcher: &ParserMatcher) -> Result<LabelMatcher, QueryError> {
    let op = match matcher.op {
        ParserMatchOp::Equal => MatchOp::Equal,
        ParserMatchOp::NotEqual => MatchOp::NotEqual,
        ParserMatchOp::Re(_) => MatchOp::RegexMatch,
        ParserMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
    };
    LabelMatcher::new(op, matcher.name.clone(), matcher.value.clone())
}

/// The labels `absent` answers with: those of equality matchers, except the metric name and any
/// label that also has another matcher (Prometheus's historic rule).
fn absent_labels(vs: &VectorSelector) -> Labels {
    let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for matcher in &vs.matchers.matchers {
        let name = matcher.name.as_str();
        if name == METRIC_NAME {
            continue;
        }
        if matcher.op == ParserMatchOp::Equal && !seen.contains(name) {
            labels.insert(name, matcher.value.as_str());
            seen.insert(name);
        } else {
            labels.remove(name);
        }
    }
    Labels::new(labels)
}

fn unwrap_parens(mut expr: &parser::Expr) -> &parser::Expr {
    while let parser::Expr::Paren(paren) = expr {
        expr = &paren.expr;
    }
    expr
}

fn millis(duration: &Duration, what: &str) -> Result<i64, QueryError> {
    i64::try_from(duration.as_millis()).map_err(|_| QueryError::DurationTooLarge { what: what.to_owned() })
}

fn expect(expr: &Expr, expected: ValueType, context: &str) -> Result<(), QueryError> {
    expect_one_of(expr, &[expected], context)
}

fn expect_one_of(expr: &Expr, allowed: &[ValueType], context: &str) -> Result<(), QueryError> {
    let actual = expr.value_type();
    if allowed.contains(&actual) {
        return Ok(());
    }
    Err(QueryError::Type { expected: allowed[0], actual, context: context.to_owned() })
}

fn arity(name: &str, args: &[&parser::Expr]) -> QueryError {
    QueryError::Syntax { message: format!("wrong number of arguments ({}) in call to function \"{name}\"", args.len()) }
}
