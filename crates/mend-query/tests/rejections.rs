//! Rejections at parse time as data: unsupported constructs and invalid queries with their exact error text.

use mend_query::{Comparison, ComparisonOp, MatchOp, Query, ValueType};

fn check(text: &str, expected: &str) {
    match Query::parse(text) {
        Err(err) => assert_eq!(err.to_string(), expected, "{text}"),
        Ok(query) => panic!("{text}: accepted as {query:?}"),
    }
}

#[test]
fn unsupported_constructs_name_the_construct() {
    let cases = [
        ("predict_linear(disk_free_bytes[1h], 3600) < 0", r#"unsupported function "predict_linear""#),
        (r#"label_replace(up, "a", "$1", "b", "(.*)")"#, r#"unsupported function "label_replace""#),
        (r#"label_join(up, "a", ",", "b", "c")"#, r#"unsupported function "label_join""#),
        ("sort(up)", r#"unsupported function "sort""#),
        ("sort_desc(up)", r#"unsupported function "sort_desc""#),
        ("round(up)", r#"unsupported function "round""#),
        ("ceil(up)", r#"unsupported function "ceil""#),
        ("ln(up)", r#"unsupported function "ln""#),
        ("exp(up)", r#"unsupported function "exp""#),
        ("sqrt(up)", r#"unsupported function "sqrt""#),
        ("clamp(up, 0, 1)", r#"unsupported function "clamp""#),
        ("timestamp(up)", r#"unsupported function "timestamp""#),
        ("day_of_week()", r#"unsupported function "day_of_week""#),
        ("present_over_time(up[5m])", r#"unsupported function "present_over_time""#),
        ("stdvar_over_time(up[5m])", r#"unsupported function "stdvar_over_time""#),
        ("double_exponential_smoothing(up[5m], 0.5, 0.5)", r#"unsupported function "double_exponential_smoothing""#),
        ("histogram_count(rate(h[5m]))", r#"unsupported function "histogram_count""#),
        ("count_values(\"v\", up)", r#"unsupported aggregation "count_values""#),
        ("stdvar(up)", r#"unsupported aggregation "stdvar""#),
        ("group by (job) (up)", r#"unsupported aggregation "group""#),
        ("limitk(2, up)", r#"unsupported aggregation "limitk""#),
        ("limit_ratio(0.5, up)", r#"unsupported aggregation "limit_ratio""#),
        ("up atan2 up", r#"unsupported operator "atan2""#),
        ("rate(up[5m:1m])", "unsupported: subqueries"),
        ("max_over_time(rate(http_requests_total[1m])[10m:])", "unsupported: subqueries"),
        ("up[5m:]", "unsupported: subqueries"),
        ("up @ 1609746000", "unsupported: @ modifier"),
        ("up @ start()", "unsupported: @ modifier"),
        ("rate(up[5m] @ end())", "unsupported: @ modifier"),
        (r#"{job="a" or job="b"}"#, r#"unsupported: "or" in label matchers"#),
        ("up + fill(0) up", "unsupported: fill modifiers"),
        ("up + on(job) fill_left(1) up", "unsupported: fill modifiers"),
        // Unsupported parts are found wherever they are nested.
        ("sum by (job) (rate(up[5m])) / on(job) group_left sort(up)", r#"unsupported function "sort""#),
        ("absent(up @ 100)", "unsupported: @ modifier"),
    ];
    for (text, expected) in cases {
        check(text, expected);
    }
}

#[test]
fn invalid_queries_carry_the_parser_message() {
    let cases = [
        ("rate(up[5m]", "invalid PromQL: unclosed left parenthesis"),
        ("rate(up)", "invalid PromQL: expected type matrix in call to function 'rate', got vector"),
        ("sum(up[5m])", "invalid PromQL: expected type vector in aggregation expression, got matrix"),
        ("{}", "invalid PromQL: vector selector must contain at least one non-empty matcher"),
        (r#"{job=~".*"}"#, "invalid PromQL: vector selector must contain at least one non-empty matcher"),
        (r#"up{job=~"("}"#, "invalid PromQL: illegal regex for ("),
        ("up[0s]", "invalid PromQL: duration must be greater than 0"),
        ("holt_winters(up[5m], 0.5, 0.5)", "invalid PromQL: unknown function with name 'holt_winters'"),
        ("1 == 1", "invalid PromQL: comparisons between scalars must use BOOL modifier"),
        ("abs(up, up)", "invalid PromQL: expected 1 argument(s) in call to 'abs', got 2"),
        ("up offset 1m offset 2m", "invalid PromQL: offset may not be set multiple times"),
        ("up[5m] + 1", "invalid PromQL: binary expression must contain only scalar and instant vector types"),
        ("1 and up", "invalid PromQL: set operator 'and' not allowed in binary scalar expression"),
    ];
    for (text, expected) in cases {
        check(text, expected);
    }
}

#[test]
fn selectors_list_what_the_query_reads() {
    let query = Query::parse(
        r#"sum by (service) (rate(http_requests_total{code=~"5.."}[5m] offset 1m))
             / sum by (service) (rate(http_requests_total{code=~"5.."}[5m] offset 1m)) > on() group_left up"#,
    )
    .expect("supported");
    // The identical selector appears once.
    let selectors = query.selectors();
    assert_eq!(selectors.len(), 2);
    assert_eq!(selectors[0].metric_name(), Some("http_requests_total"));
    assert_eq!(selectors[0].range_ms(), Some(300_000));
    assert_eq!(selectors[0].offset_ms(), 60_000);
    let matchers: Vec<String> = selectors[0].matchers().iter().map(ToString::to_string).collect();
    assert_eq!(matchers, vec![r#"__name__="http_requests_total""#, r#"code=~"5..""#]);
    assert_eq!(selectors[0].matchers()[1].op(), MatchOp::RegexMatch);
    assert_eq!(selectors[1].metric_name(), Some("up"));
    assert_eq!(selectors[1].range_ms(), None);
    assert_eq!(Query::parse(r#"{__name__=~"a|b"} offset -5s"#).expect("valid").selectors()[0].offset_ms(), -5_000);
}

#[test]
fn type_and_top_level_comparison() {
    let cases = [
        ("up == 0", ValueType::Vector, Some(Comparison { op: ComparisonOp::Eq, returns_bool: false })),
        ("rate(x[1m]) > bool 5", ValueType::Vector, Some(Comparison { op: ComparisonOp::Gt, returns_bool: true })),
        ("(up < 1)", ValueType::Vector, Some(Comparison { op: ComparisonOp::Lt, returns_bool: false })),
        ("1 <= bool 2", ValueType::Scalar, Some(Comparison { op: ComparisonOp::Le, returns_bool: true })),
        ("up", ValueType::Vector, None),
        ("up == 0 and up", ValueType::Vector, None),
        ("1 + 1", ValueType::Scalar, None),
        ("up[5m]", ValueType::Matrix, None),
        (r#""text""#, ValueType::String, None),
        ("scalar(up)", ValueType::Scalar, None),
    ];
    for (text, value_type, comparison) in cases {
        let query = Query::parse(text).expect("valid");
        assert_eq!((query.value_type(), query.comparison()), (value_type, comparison), "{text}");
    }
}

#[test]
fn expressions_too_large_to_handle_safely_are_refused_before_parsing() {
    let many = "unsupported: expressions with more than 250 operators";
    check(&vec!["up"; 4000].join("+"), many);
    check(&format!("{}up", "-".repeat(20_000)), many);
    check(&vec!["up"; 300].join(" or "), many);
    check(&vec!["up"; 300].join(" AND "), many);
    let deep = "unsupported: expressions nested more than 64 levels deep";
    check(&format!("{}up{}", "(".repeat(100), ")".repeat(100)), deep);
    check(&format!("{}up{}", "abs(".repeat(1000), ")".repeat(1000)), deep);
    // Operators and brackets inside strings do not count.
    let quoted = format!("up{{job=\"{}\"}}", "+(".repeat(2000));
    assert!(Query::parse(&quoted).is_ok(), "{quoted}");
    assert!(Query::parse(&vec!["up"; 250].join(" + ")).is_ok());
}

/// Issue 20: one 1.7 KB query with 40 matchers like `l=~"\p{L}{200}"` took mend from 17 MB to 855 MB for
/// 7 s, because promql-parser compiled each regular expression without a size limit. Such a matcher is
/// refused before the parser sees it, quickly, naming the label and the limit.
#[test]
fn issue_20_oversized_regular_expressions_are_refused_before_they_are_compiled() {
    let matchers: Vec<String> = (0..40).map(|idx| format!(r#"l{idx}=~"\\p{{L}}{{200}}""#)).collect();
    let hostile = format!("up{{{}}}", matchers.join(","));
    assert!(hostile.len() < 2000, "the query of the report is small: {} bytes", hostile.len());
    let refused = Query::parse(&hostile).expect_err("an oversized regex");
    let message = refused.to_string();
    assert!(
        message.starts_with(r#"regular expression "\\p{L}{200}" for label "l0" is too large: it would compile to more than 262144 bytes"#),
        "{message}"
    );
    // Each form is checked: `!~`, single quotes, a name given as a string, braces that do not repeat
    // (retried escaped, as promql-parser does), a selector without a metric name, inside functions.
    for text in [
        r#"up{l!~"\\p{L}{200}"}"#,
        r#"up{l=~'\\p{L}{200}'}"#,
        r#"{"up", l=~"\\p{L}{200}"}"#,
        r#"{l=~"\\w{300}x{y}"}"#,
        r#"sum by (l) (rate(up{l=~"\\p{L}{200}"}[5m]))"#,
    ] {
        let refused = Query::parse(text).expect_err(text).to_string();
        assert!(refused.contains("is too large"), "{text}: {refused}");
    }
    // The same text as a plain string or an equality matcher compiles nothing and is fine.
    Query::parse(r#"up{l="\\p{L}{200}"}"#).expect("an equality matcher");
    Query::parse(r#"label_value == "\\p{L}{200}" or up"#).ok();
}

/// What real rules and dashboards use stays well within the limits.
#[test]
fn common_regular_expressions_fit_the_limits() {
    for pattern in [
        "5..",
        "GET|POST|PUT|DELETE|PATCH",
        ".*-canary",
        ".*foo.*bar.*",
        r"\\p{L}+",
        r"[a-z0-9_-]{1,64}",
        r"(?i)error|warn(ing)?",
        r"\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}(:\\d+)?",
        "web|api|worker|db|cache|queue|mail|search|auth|billing|admin|static|proxy|cron|batch",
    ] {
        let text = format!(r#"up{{job=~"{pattern}"}}"#);
        Query::parse(&text).unwrap_or_else(|error| panic!("{text}: {error}"));
    }
}
