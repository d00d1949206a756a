//! Label sets and label matchers: the vocabulary shared by queries, storage and results.

use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};

use crate::error::QueryError;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A set of labels, sorted by name, with unique names and no empty values.
///
/// Prometheus treats a label with an empty value as absent, so [`Labels::new`] drops such pairs.
/// Cloning is cheap (the pairs and the strings are shared), which matters because every sample of
/// every step carries its labels and dropping the metric name makes a new set.
/// Ordering is Prometheus's: pair by pair, name before value, then length.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pairs: Arc<[(Arc<str>, Arc<str>)]>,
}

impl Labels {
    /// Builds a label set from `(name, value)` pairs in any order; a later duplicate name wins and
    /// pairs with an empty value are dropped.
    pub fn new<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Labels
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut pairs: Vec<(String, String)> = pairs.into_iter().map(|(n, v)| (n.into(), v.into())).collect();
        // A stable sort keeps duplicates in input order, so keeping the last of each run makes the
        // later pair win.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let pair: (Arc<str>, Arc<str>) = (name.into(), value.into());
            match unique.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => unique.push(pair),
            }
        }
        unique.retain(|(_, value)| !value.is_empty());
        Labels { pairs: unique.into() }
    }

    /// The empty label set.
    pub fn empty() -> Labels {
        Labels::default()
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|idx| &*self.pairs[idx].1)
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// The `(name, value)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (&**n, &**v))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The same labels without `__name__`.
    pub(crate) fn without_name(&self) -> Labels {
        if self.get(METRIC_NAME).is_none() {
            return self.clone();
        }
        self.filtered(|name| name != METRIC_NAME)
    }

    /// Only the labels whose name satisfies `keep`.
    pub(crate) fn filtered(&self, keep: impl Fn(&str) -> bool) -> Labels {
        let pairs: Vec<(Arc<str>, Arc<str>)> = self.pairs.iter().filter(|(n, _)| keep(n)).cloned().collect();
        Labels { pairs: pairs.into() }
    }

    /// The same labels with `name` set to `value` (removed when `value` is empty).
    pub(crate) fn with(&self, name: &str, value: &str) -> Labels {
        let mut pairs: Vec<(Arc<str>, Arc<str>)> = self.pairs.iter().filter(|(n, _)| &**n != name).cloned().collect();
        if !value.is_empty() {
            let idx = pairs.partition_point(|(n, _)| &**n < name);
            pairs.insert(idx, (name.into(), value.into()));
        }
        Labels { pairs: pairs.into() }
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Labels {
        Labels::new(iter)
    }
}

/// Formats as Prometheus does in messages: `{__name__="up", job="api"}`.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (idx, (name, value)) in self.iter().enumerate() {
            if idx > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a [`LabelMatcher`] compares a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`: the value equals the string.
    Equal,
    /// `!=`: the value differs from the string.
    NotEqual,
    /// `=~`: the whole value matches the regular expression.
    RegexMatch,
    /// `!~`: the whole value does not match the regular expression.
    RegexNoMatch,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        })
    }
}

/// One label matcher of a selector, such as `code=~"5.."`.
///
/// As in Prometheus, a label missing from a series matches as the empty string (so `foo=""`
/// selects series without `foo`), and regular expressions are fully anchored (`5..` matches
/// `500`, not `1500`) with `.` matching any character including a newline (Prometheus 3).
#[derive(Clone, Debug)]
pub struct LabelMatcher {
    name: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

impl LabelMatcher {
    /// Builds a matcher; fails when a regular expression does not compile.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<LabelMatcher, QueryError> {
        let name = name.into();
        let value = value.into();
        let regex = match op {
            MatchOp::Equal | MatchOp::NotEqual => None,
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                Some(anchored_regex(&value).map_err(|source| regex_error(&name, &value, source))?)
            }
        };
        Ok(LabelMatcher { name, op, value, regex })
    }

    /// `name="value"`, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> LabelMatcher {
        LabelMatcher { name: name.into(), op: MatchOp::Equal, value: value.into(), regex: None }
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The comparison.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The string or the regular expression, as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a label value (the empty string for a missing label) satisfies the matcher.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => self.value == value,
            (MatchOp::NotEqual, _) => self.value != value,
            (MatchOp::RegexMatch, Some(regex)) => regex.is_match(value),
            (MatchOp::RegexNoMatch, Some(regex)) => !regex.is_match(value),
            // The constructors always compile a regex for the regex operators.
            (MatchOp::RegexMatch | MatchOp::RegexNoMatch, None) => false,
        }
    }

    /// Whether a series with these labels satisfies the matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }

    /// Whether the matcher accepts a missing label (used to refuse selectors that select everything).
    pub(crate) fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

impl PartialEq for LabelMatcher {
    fn eq(&self, other: &LabelMatcher) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}

/// Compiles a PromQL regular expression: anchored at both ends, `.` matching newlines.
///
/// Go's RE2 accepts a literal `{` that does not start a repetition (`a{b}`) while the `regex`
/// crate does not, so on failure the pattern is retried with such braces escaped, as
/// promql-parser does.
fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    limited_regex(&format!("(?s)^(?:{pattern})$")).or_else(|first| match first {
        regex::Error::Syntax(_) => {
            limited_regex(&format!("(?s)^(?:{})$", escape_literal_braces(pattern))).map_err(|_| first)
        }
        _ => Err(first),
    })
}

/// Most memory one compiled regular expression may take for its automaton (the regex crate's
/// `size_limit`; its default is 10 MiB). Real PromQL matchers (`5..`, `GET|POST`, `.*-canary`, even
/// `\p{L}+`) take a few KiB; `\p{L}{200}` would take tens of MiB, and a query may hold dozens.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Most memory one regular expression's lazy DFA cache may take (the regex crate's `dfa_size_limit`).
pub const REGEX_DFA_SIZE_LIMIT: usize = 256 * 1024;

/// Compiles `pattern` within [`REGEX_SIZE_LIMIT`] and [`REGEX_DFA_SIZE_LIMIT`]: the work and memory of
/// compiling a pattern from a query (any client of the query API may send one) stay bounded.
pub(crate) fn limited_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_DFA_SIZE_LIMIT).build()
}

/// The error for a pattern that does not compile: too large, or invalid.
pub(crate) fn regex_error(label: &str, pattern: &str, source: regex::Error) -> QueryError {
    match source {
        regex::Error::CompiledTooBig(limit) => {
            QueryError::RegexTooLarge { label: label.to_owned(), pattern: abbreviate(pattern), limit }
        }
        source => {
            QueryError::InvalidRegex { label: label.to_owned(), pattern: abbreviate(pattern), source: Box::new(source) }
        }
    }
}

/// A pattern as an error message quotes it: its first 64 characters (a refused pattern may be huge).
fn abbreviate(pattern: &str) -> String {
    match pattern.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &pattern[..end]),
        None => pattern.to_owned(),
    }
}

/// Escapes every `{` that does not open a valid `{n}`, `{n,}` or `{n,m}` repetition.
pub(crate) fn escape_literal_braces(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut idx = 0;
    while idx < chars.len() {
        let c = chars[idx];
        if c == '\\' {
            out.push(c);
            if let Some(&next) = chars.get(idx + 1) {
                out.push(next);
            }
            idx += 2;
            continue;
        }
        if c == '{' && !is_repetition(&chars[idx + 1..]) {
            out.push('\\');
        }
        out.push(c);
        idx += 1;
    }
    out
}

/// Whether `rest` (what follows a `{`) is `n}`, `n,}` or `n,m}`.
fn is_repetition(rest: &[char]) -> bool {
    let Some(close) = rest.iter().position(|&c| c == '}') else {
        return false;
    };
    let body: String = rest[..close].iter().collect();
    let mut parts = body.splitn(2, ',');
    let first = parts.next().unwrap_or("");
    let second = parts.next();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    digits(first) && second.is_none_or(|s| s.is_empty() || digits(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(op: MatchOp, pattern: &str, value: &str, expected: bool) {
        let matcher = LabelMatcher::new(op, "l", pattern).expect("valid pattern");
        assert_eq!(matcher.matches_value(value), expected, "{matcher} on {value:?}");
    }

    #[test]
    fn regexes_are_anchored_and_dot_matches_newline() {
        check(MatchOp::RegexMatch, "5..", "500", true);
        check(MatchOp::RegexMatch, "5..", "1500", false);
        check(MatchOp::RegexMatch, "5..", "5000", false);
        check(MatchOp::RegexMatch, "a|b", "a", true);
        check(MatchOp::RegexMatch, "a|b", "ab", false);
        check(MatchOp::RegexMatch, "a.b", "a\nb", true);
        check(MatchOp::RegexNoMatch, "a|b", "c", true);
        check(MatchOp::RegexMatch, "x{y}", "x{y}", true);
        check(MatchOp::RegexMatch, "x{2}", "xx", true);
        check(MatchOp::RegexMatch, "", "", true);
    }

    #[test]
    fn labels_sort_drop_empty_and_keep_last_duplicate() {
        let labels = Labels::new([("b", "1"), ("a", "x"), ("c", ""), ("b", "2")]);
        assert_eq!(labels.to_string(), r#"{a="x", b="2"}"#);
        assert_eq!(labels.with("c", "3").with("a", "").to_string(), r#"{b="2", c="3"}"#);
    }

    #[test]
    fn missing_label_matches_as_empty() {
        let labels = Labels::new([("job", "api")]);
        assert!(LabelMatcher::equal("env", "").matches(&labels));
        assert!(!LabelMatcher::new(MatchOp::NotEqual, "env", "").expect("plain").matches(&labels));
    }
}
