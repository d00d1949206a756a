//! The parser as data: each case is an exposition and either what it parses to, rendered, or its exact error.

use mend_promtext::{Format, Limits, MetricFamily, parse_bytes, parse_with_limits};

/// Renders families one line per family (`family NAME KIND [help=…] [unit=…]`) and per sample
/// (`  NAME{labels} VALUE [@TIMESTAMP_MS] [# {labels} VALUE [@TIMESTAMP_MS]]`), strings in Rust debug quoting.
fn render(families: &[MetricFamily<'_>]) -> String {
    let labels = |labels: &[mend_promtext::Label<'_>]| {
        let pairs: Vec<String> = labels.iter().map(|label| format!("{}={:?}", label.name, label.value)).collect();
        format!("{{{}}}", pairs.join(","))
    };
    let timestamp = |timestamp_ms: Option<i64>| timestamp_ms.map(|ms| format!(" @{ms}")).unwrap_or_default();
    let mut out = String::new();
    for family in families {
        out.push_str(&format!("family {} {}", family.name, family.kind));
        if let Some(help) = &family.help {
            out.push_str(&format!(" help={help:?}"));
        }
        if let Some(unit) = &family.unit {
            out.push_str(&format!(" unit={unit:?}"));
        }
        out.push('\n');
        for sample in &family.samples {
            out.push_str(&format!(
                "  {}{} {:?}{}",
                sample.name,
                if sample.labels.is_empty() { String::new() } else { labels(&sample.labels) },
                sample.value,
                timestamp(sample.timestamp_ms)
            ));
            if let Some(exemplar) = &sample.exemplar {
                out.push_str(&format!(
                    " # {} {:?}{}",
                    labels(&exemplar.labels),
                    exemplar.value,
                    timestamp(exemplar.timestamp_ms)
                ));
            }
            out.push('\n');
        }
    }
    out
}

/// Parses `input` in `format` within `limits`; compares the rendering, or the error text, with `expected`.
fn check_limited(format: Format, limits: &Limits, input: &str, expected: &str) {
    let actual = match parse_with_limits(input, format, limits) {
        Ok(families) => render(&families),
        Err(error) => error.to_string(),
    };
    assert_eq!(actual.trim_end(), expected.trim_end(), "input ({format:?}):\n{input}");
}

fn check(format: Format, input: &str, expected: &str) {
    check_limited(format, &Limits::DEFAULT, input, expected);
}

const TEXT: Format = Format::Text;
const OM: Format = Format::OpenMetrics;

#[test]
fn text_accepts_what_go_accepts() {
    // Blanks and tabs between tokens, leading blanks, comments, blank lines, a trailing comma, an empty label set.
    check(
        TEXT,
        "# A comment.\n\n  #  HELP  http_requests_total  Requests\\nserved \\\\ \\\"quoted\\\".\n\
         # TYPE http_requests_total COUNTER\n\
         \thttp_requests_total { code = \"200\" , path=\"/a\\\"b\\\\c\\nd\", }  1027  1700000000123 \n\
         http_requests_total{} 3\n",
        r#"family http_requests_total counter help="Requests\nserved \\ \\\"quoted\\\"."
  http_requests_total{code="200",path="/a\"b\\c\nd"} 1027.0 @1700000000123
  http_requests_total 3.0"#,
    );
    // Special values and exponents.
    check(
        TEXT,
        "v NaN\nv +Inf\nv -Inf\nv Inf\nv 1.445793e+06\nv -2.5E-3\nv .5\nv -0\n",
        "family v unknown\n  v NaN\n  v inf\n  v -inf\n  v inf\n  v 1445793.0\n  v -0.0025\n  v 0.5\n  v -0.0",
    );
    // CRLF line endings, and a last line without one.
    check(TEXT, "# TYPE g gauge\r\ng{a=\"b\"} 1\r\ng 2", "family g gauge\n  g{a=\"b\"} 1.0\n  g 2.0");
    // `# HELP` or `# TYPE` with nothing after it is a comment; `# HELP name` alone is an empty help.
    check(TEXT, "# HELP\n# TYPE\n# HELP x\nx 1\n", "family x unknown help=\"\"\n  x 1.0");
    // An empty exposition has no families.
    check(TEXT, "", "");
    check(TEXT, "\n\n# just comments\n", "");
}

#[test]
fn text_groups_samples_into_families_like_go() {
    // Suffixed samples join their summary or histogram; others start untyped families.
    check(
        TEXT,
        "# TYPE rpc summary\nrpc{quantile=\"0.5\"} 1\nrpc_sum 3\nrpc_count 2\n\
         # TYPE lat histogram\nlat_bucket{le=\"1\"} 1\nlat_bucket{le=\"+Inf\"} 2\nlat_sum 3\nlat_count 2\n\
         lat_total 5\nrpc_created 1\n",
        r#"family rpc summary
  rpc{quantile="0.5"} 1.0
  rpc_sum 3.0
  rpc_count 2.0
family lat histogram
  lat_bucket{le="1"} 1.0
  lat_bucket{le="+Inf"} 2.0
  lat_sum 3.0
  lat_count 2.0
family lat_total unknown
  lat_total 5.0
family rpc_created unknown
  rpc_created 1.0"#,
    );
    // A family that comes back after another is merged, as Go's parser does; HELP may follow samples.
    check(
        TEXT,
        "a 1\nb 2\na{x=\"y\"} 3\n# HELP a Late help.\n",
        "family a unknown help=\"Late help.\"\n  a 1.0\n  a{x=\"y\"} 3.0\nfamily b unknown\n  b 2.0",
    );
    // A family of the exact name wins over a summary the suffix points to.
    check(
        TEXT,
        "# TYPE s_count gauge\n# TYPE s summary\ns_count 1\ns_sum 2\n",
        "family s_count gauge\n  s_count 1.0\nfamily s summary\n  s_sum 2.0",
    );
}

#[test]
fn text_errors_say_where_and_why() {
    let cases = [
        ("1abc 2\n", r#"line 1, column 1: invalid metric name "1abc""#),
        ("a-b 2\n", r#"line 1, column 1: invalid metric name "a-b""#),
        ("ok 1\n  {__name__=\"a\"} 1\n", r#"line 2, column 3: expected a metric name, found "{""#),
        ("a{b=\"c 1\n", "line 1, column 5: unterminated label value"),
        ("a{b=\"c\"\n", r#"line 1, column 8: expected ',' or '}' after the label value, found end of line"#),
        ("a{b=\"c\" d=\"e\"} 1\n", r#"line 1, column 9: expected ',' or '}' after the label value, found "d""#),
        ("a{b=c} 1\n", r#"line 1, column 5: expected '"' to open the label value, found "c""#),
        ("a{b} 1\n", r#"line 1, column 4: expected '=' after the label name, found "}""#),
        ("a{,} 1\n", r#"line 1, column 3: expected a label name, found ",""#),
        ("a{1b=\"c\"} 1\n", r#"line 1, column 3: invalid label name "1b""#),
        ("a{b-c=\"d\"} 1\n", r#"line 1, column 3: invalid label name "b-c""#),
        ("a{__name__=\"b\"} 1\n", r#"line 1, column 3: label name "__name__" is reserved"#),
        ("a{\"b\"=\"c\"} 1\n", "line 1, column 3: quoted metric and label names are not supported"),
        (
            "a{b=\"\\x\"} 1\n",
            r#"line 1, column 6: invalid escape sequence "\\x" in label value (allowed: \\, \" and \n)"#,
        ),
        ("a{b=\"1\",c=\"2\",b=\"3\"} 1\n", r#"line 1, column 15: duplicate label "b""#),
        ("a\n", "line 1, column 2: missing sample value"),
        ("a{b=\"c\"}\n", "line 1, column 9: missing sample value"),
        ("a x\n", r#"line 1, column 3: invalid value "x""#),
        ("a 1_000\n", r#"line 1, column 3: invalid value "1_000""#),
        ("a 0x10\n", r#"line 1, column 3: invalid value "0x10""#),
        ("a 1 1.5\n", r#"line 1, column 5: invalid timestamp "1.5""#),
        ("a 1 99999999999999999999\n", r#"line 1, column 5: timestamp "99999999999999999999" out of range"#),
        ("a 1 2 3\n", r#"line 1, column 7: unexpected text "3" at the end of the line"#),
        ("a 1\n# TYPE a gauge\n", r#"line 2, column 8: TYPE for "a" after its samples"#),
        ("# TYPE a gauge\n# TYPE a counter\n", r#"line 2, column 8: second TYPE line for "a""#),
        ("# HELP a x\n# HELP a y\n", r#"line 2, column 8: second HELP line for "a""#),
        (
            "# TYPE a countr\n",
            r#"line 1, column 10: unknown metric type "countr" (expected counter, gauge, histogram, summary or untyped)"#,
        ),
        (
            "# TYPE a stateset\n",
            r#"line 1, column 10: unknown metric type "stateset" (expected counter, gauge, histogram, summary or untyped)"#,
        ),
        ("# TYPE a\n", "line 1, column 9: incomplete TYPE line"),
        ("# TYPE a gauge extra\n", r#"line 1, column 16: unexpected text "extra" at the end of the line"#),
        ("# TYPE 1a gauge\n", r#"line 1, column 8: invalid metric name "1a""#),
        ("# TYPE x histogram\nx_bucket 1\n", r#"line 2, column 1: sample "x_bucket" has no "le" label"#),
        ("# TYPE x histogram\nx_bucket{le=\"big\"} 1\n", r#"line 2, column 10: invalid "le" label value "big""#),
        (
            "# TYPE x histogram\nx 1\n",
            r#"line 2, column 1: sample "x" does not belong to histogram family "x" (expected x_bucket, x_sum or x_count)"#,
        ),
        ("# TYPE x summary\nx 1\n", r#"line 2, column 1: sample "x" has no "quantile" label"#),
        (
            "a 1\n# EOF\n",
            r##"line 2, column 1: "# EOF" in the 0.0.4 text format (it ends OpenMetrics expositions only)"##,
        ),
        // Found by fuzzing: `#EOF` without a blank used to underflow the error column.
        ("#EOF\n", r##"line 1, column 1: "# EOF" in the 0.0.4 text format (it ends OpenMetrics expositions only)"##),
    ];
    for (input, expected) in cases {
        check(TEXT, input, expected);
    }
}

#[test]
fn openmetrics_accepts_every_type_exemplars_and_created() {
    check(
        OM,
        "# TYPE req counter\n# UNIT req_seconds seconds\n# HELP req Requests \\\"quoted\\\".\n",
        r#"line 3, column 8: metric family "req" appears twice (OpenMetrics families must be contiguous)"#,
    );
    check(
        OM,
        "# TYPE req counter\n# HELP req Requests \\\"quoted\\\"\\n.\n\
         req_total{code=\"200\"} 1027 1700000000.5 # {trace_id=\"4bf9\"} 1 1700000000.123\n\
         req_created{code=\"200\"} 1.7e9\nreq_total{} 3 # {} 0.5\n\
         # TYPE lat_seconds histogram\n# UNIT lat_seconds seconds\n\
         lat_seconds_bucket{le=\"0.5\"} 1 # {span=\"a\"} 0.25\nlat_seconds_bucket{le=\"+Inf\"} 2\n\
         lat_seconds_sum 3.5\nlat_seconds_count 2\nlat_seconds_created 1.7e9\n\
         # TYPE q gaugehistogram\nq_bucket{le=\"+Inf\"} 4\nq_gsum -2\nq_gcount 4\n\
         # TYPE rpc summary\nrpc{quantile=\"0.99\"} NaN\nrpc_sum 0\nrpc_count 0\n\
         # TYPE state stateset\nstate{state=\"up\"} 1\nstate{state=\"down\"} 0\n\
         # TYPE build info\nbuild_info{version=\"1.2\"} 1\n\
         # TYPE temp gauge\ntemp -Inf\n# TYPE other unknown\nother 1 -1.5\nuntyped_sample 2\n# EOF",
        r#"family req counter help="Requests \"quoted\"\n."
  req_total{code="200"} 1027.0 @1700000000500 # {trace_id="4bf9"} 1.0 @1700000000123
  req_created{code="200"} 1700000000.0
  req_total 3.0 # {} 0.5
family lat_seconds histogram unit="seconds"
  lat_seconds_bucket{le="0.5"} 1.0 # {span="a"} 0.25
  lat_seconds_bucket{le="+Inf"} 2.0
  lat_seconds_sum 3.5
  lat_seconds_count 2.0
  lat_seconds_created 1700000000.0
family q gaugehistogram
  q_bucket{le="+Inf"} 4.0
  q_gsum -2.0
  q_gcount 4.0
family rpc summary
  rpc{quantile="0.99"} NaN
  rpc_sum 0.0
  rpc_count 0.0
family state stateset
  state{state="up"} 1.0
  state{state="down"} 0.0
family build info
  build_info{version="1.2"} 1.0
family temp gauge
  temp -inf
family other unknown
  other 1.0 @-1500
family untyped_sample unknown
  untyped_sample 2.0"#,
    );
    // CRLF line endings, a final newline after `# EOF`, descriptors without samples.
    check(OM, "# HELP a Nothing yet.\r\n# TYPE a gauge\r\n# EOF\r\n", "family a gauge help=\"Nothing yet.\"");
    check(OM, "# EOF", "");
}

#[test]
fn openmetrics_errors_say_where_and_why() {
    let cases = [
        ("", r##"line 1, column 1: missing "# EOF" at the end of the OpenMetrics exposition"##),
        ("a 1\n", r##"line 2, column 1: missing "# EOF" at the end of the OpenMetrics exposition"##),
        ("a 1\n# EOF\na 2\n", r##"line 3, column 1: text after "# EOF""##),
        ("# EOF\n\n", r##"line 2, column 1: text after "# EOF""##),
        ("a 1\n\n# EOF\n", "line 2, column 1: empty line (not allowed in OpenMetrics)"),
        (
            "# hello\n# EOF\n",
            r##"line 1, column 1: invalid comment "# hello" (OpenMetrics allows only # HELP, # TYPE, # UNIT and # EOF)"##,
        ),
        (" a 1\n# EOF\n", r#"line 1, column 1: expected a metric name, found " ""#),
        ("a  1\n# EOF\n", "line 1, column 3: missing sample value"),
        ("a\t1\n# EOF\n", r#"line 1, column 2: expected a space before the value, found "\t""#),
        ("a 1 \n# EOF\n", "line 1, column 5: expected a timestamp or an exemplar, found end of line"),
        ("a{b=\"c\",} 1\n# EOF\n", r#"line 1, column 9: expected a label name, found "}""#),
        ("a{b=\"c\", d=\"e\"} 1\n# EOF\n", r#"line 1, column 9: expected a label name, found " ""#),
        ("a 1 NaN\n# EOF\n", r#"line 1, column 5: invalid timestamp "NaN""#),
        ("a 1 2 3\n# EOF\n", r##"line 1, column 7: expected "# " to start an exemplar, found "3""##),
        (
            "# TYPE a untyped\n# EOF\n",
            r#"line 1, column 10: unknown metric type "untyped" (expected counter, gauge, histogram, gaugehistogram, summary, stateset, info or unknown)"#,
        ),
        ("# TYPE a\n# EOF\n", r#"line 1, column 9: expected a space after the metric name, found end of line"#),
        (
            "# TYPE a counter\na 1\n# EOF\n",
            r#"line 2, column 1: sample "a" does not belong to counter family "a" (expected a_total or a_created)"#,
        ),
        (
            "a 1\nb 1\na 2\n# EOF\n",
            r#"line 3, column 1: metric family "a" appears twice (OpenMetrics families must be contiguous)"#,
        ),
        (
            "# TYPE a gauge\nb 1\n# HELP a x\n# EOF\n",
            r#"line 3, column 8: metric family "a" appears twice (OpenMetrics families must be contiguous)"#,
        ),
        (
            "# TYPE a counter\na_total 1\n# TYPE a_created gauge\n# EOF\n",
            r#"line 3, column 8: metric family "a_created" clashes with the sample "a_created" of family "a""#,
        ),
        (
            "a_total 1\n# TYPE a counter\n# EOF\n",
            r#"line 2, column 8: metric family "a" clashes with the sample "a_total" of family "a_total""#,
        ),
        ("a 1\n# HELP a x\n# EOF\n", r#"line 2, column 8: HELP for "a" after its samples"#),
        ("# UNIT a x\n# UNIT a x\n# EOF\n", r#"line 1, column 10: unit "x" is not the suffix of metric family "a""#),
        ("# UNIT a_x x\n# UNIT a_x x\n# EOF\n", r#"line 2, column 8: second UNIT line for "a_x""#),
        (
            "# UNIT a_bytes bytes\n# TYPE a_bytes info\n# EOF\n",
            r#"line 2, column 16: info family "a_bytes" cannot have a unit"#,
        ),
        (
            "# TYPE a counter\na_total -1\n# EOF\n",
            r#"line 2, column 9: invalid value -1 for sample "a_total": counts and totals cannot be negative or NaN"#,
        ),
        (
            "# TYPE a histogram\na_count NaN\n# EOF\n",
            r#"line 2, column 9: invalid value NaN for sample "a_count": counts and totals cannot be negative or NaN"#,
        ),
        (
            "# TYPE a histogram\na_sum NaN\n# EOF\n",
            r#"line 2, column 7: invalid value NaN for sample "a_sum": sums cannot be NaN"#,
        ),
        ("# TYPE a histogram\na_bucket{le=\"NaN\"} 1\n# EOF\n", r#"line 2, column 10: invalid "le" label value "NaN""#),
        (
            "# TYPE a summary\na{quantile=\"1.5\"} 1\n# EOF\n",
            r#"line 2, column 3: invalid "quantile" label value "1.5""#,
        ),
        (
            "# TYPE a summary\na{quantile=\"0.5\"} -1\n# EOF\n",
            r#"line 2, column 19: invalid value -1 for sample "a": quantile values cannot be negative"#,
        ),
        ("# TYPE s stateset\ns{x=\"a\"} 1\n# EOF\n", r#"line 2, column 1: sample "s" has no "s" label"#),
        (
            "# TYPE s stateset\ns{s=\"a\"} 2\n# EOF\n",
            r#"line 2, column 10: invalid value 2 for sample "s": stateset values must be 0 or 1"#,
        ),
        (
            "# TYPE i info\ni_info 2\n# EOF\n",
            r#"line 2, column 8: invalid value 2 for sample "i_info": info values must be 1"#,
        ),
        (
            "a 1 # {t=\"x\"} 1\n# EOF\n",
            r#"line 1, column 5: exemplar on sample "a" (only histogram buckets and counter totals can have one)"#,
        ),
        (
            "# TYPE c counter\nc_total 1 # {t=\"x\"}\n# EOF\n",
            "line 2, column 20: expected a space before the exemplar value, found end of line",
        ),
        ("a 1 # x\n# EOF\n", r#"line 1, column 7: expected '{' to open the exemplar labels, found "x""#),
        ("a 1_000\n# EOF\n", r#"line 1, column 3: invalid value "1_000""#),
    ];
    for (input, expected) in cases {
        check(OM, input, expected);
    }
    let long_trace_id = "x".repeat(121);
    check(
        OM,
        &format!("# TYPE c counter\nc_total 1 # {{trace_id=\"{long_trace_id}\"}} 1\n# EOF\n"),
        "line 2, column 11: exemplar labels longer than 128 characters",
    );
}

#[test]
fn limits_bound_every_dimension() {
    let limits = Limits {
        max_line_bytes: 40,
        max_name_bytes: 8,
        max_labels: 2,
        max_label_value_bytes: 4,
        max_samples: 3,
        max_families: 2,
    };
    let cases = [
        (
            "a 1\nb{c=\"0123456789012345678901234567890123\"} 1\n",
            "line 2, column 41: line longer than the limit of 40 bytes",
        ),
        ("abcdefghi 1\n", "line 1, column 1: name longer than the limit of 8 bytes"),
        ("a{abcdefghi=\"x\"} 1\n", "line 1, column 3: name longer than the limit of 8 bytes"),
        ("a{b=\"1\",c=\"2\",d=\"3\"} 1\n", "line 1, column 15: more than 2 labels"),
        ("a{b=\"12345\"} 1\n", "line 1, column 6: label value longer than the limit of 4 bytes"),
        ("a 1\na 2\na 3\na 4\n", "line 4, column 1: more than 3 samples"),
        ("a 1\nb 2\nc 3\n", "line 3, column 1: more than 2 metric families"),
        ("# TYPE a gauge\n# TYPE b gauge\n# TYPE c gauge\n", "line 3, column 8: more than 2 metric families"),
    ];
    for (input, expected) in cases {
        check_limited(TEXT, &limits, input, expected);
    }
    // A line exactly at the limit passes; so do the limits' own maxima.
    check_limited(
        TEXT,
        &limits,
        &format!("a{{b=\"1234\",c=\"x\"}} {}\n", "1".repeat(22)),
        "family a unknown\n  a{b=\"1234\",c=\"x\"} 1.1111111111111111e21",
    );
}

#[test]
fn bytes_must_be_utf8_and_errors_point_at_the_bad_byte() {
    let error = parse_bytes(b"a 1\nb{c=\"\xc3\xa9\xff\"} 1\n", TEXT, &Limits::DEFAULT).expect_err("invalid UTF-8");
    assert_eq!(error.to_string(), "line 2, column 7: invalid UTF-8");
    let families = parse_bytes("a{b=\"é\"} 1\n".as_bytes(), TEXT, &Limits::DEFAULT).expect("valid UTF-8");
    assert_eq!(families[0].samples[0].label("b"), Some("é"));
}

#[test]
fn columns_count_characters_not_bytes() {
    check(TEXT, "a{b=\"ééé\" x} 1\n", r#"line 1, column 11: expected ',' or '}' after the label value, found "x""#);
}

#[test]
fn label_values_borrow_from_the_input_unless_escaped() {
    let input = "a{plain=\"x\",escaped=\"y\\nz\"} 1\n";
    let families = mend_promtext::parse(input, TEXT).expect("valid");
    let labels = &families[0].samples[0].labels;
    assert!(matches!(labels[0].value, std::borrow::Cow::Borrowed("x")));
    assert!(matches!(&labels[1].value, std::borrow::Cow::Owned(value) if value == "y\nz"));
    assert!(matches!(families[0].samples[0].name, std::borrow::Cow::Borrowed("a")));
}

#[test]
fn the_flat_view_walks_every_sample_with_its_family() {
    let families = mend_promtext::parse("# TYPE a gauge\na 1\na 2\nb 3\n", TEXT).expect("valid");
    let flat: Vec<(String, f64)> =
        mend_promtext::samples(&families).map(|(family, sample)| (family.name.to_string(), sample.value)).collect();
    assert_eq!(flat, [("a".to_owned(), 1.0), ("a".to_owned(), 2.0), ("b".to_owned(), 3.0)]);
}
