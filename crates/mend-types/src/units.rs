//! Numbers for people: values formatted by their unit (`29.7 MiB`, `+2.0 MiB/s`, `250 ms`, `5.3%`), the
//! unit read from a Prometheus metric name's suffix (`_bytes`, `_seconds`, `_ratio`, `_percent`).
//!
//! Every message mend writes for people (signal evidence, event messages, `mend status`) formats its
//! numbers here, so that one value reads the same everywhere. Machines get the raw numbers in the
//! structured fields next to the message.

use std::fmt::Write as _;
use std::time::Duration;

/// What a number measures, which decides how it is written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unit {
    /// Bytes: binary multiples, `512 B`, `29.7 MiB`.
    Bytes,
    /// Seconds: `850 µs`, `250 ms`, `1.50 s`, `2m30s`.
    Seconds,
    /// A ratio in 0..1, written as a percentage: `0.053` is `5.3%`.
    Ratio,
    /// Already a percentage: `45.2%`.
    Percent,
    /// No known unit: three significant digits, `k`/`M`/`G`/`T` beyond a million.
    Plain,
}

/// Suffixes that say how a value was derived rather than what it measures (Prometheus naming).
const DERIVED_SUFFIXES: [&str; 5] = ["_total", "_bucket", "_sum", "_count", "_created"];

impl Unit {
    /// The unit of a metric from its name, as Prometheus's naming conventions put it in the suffix:
    /// `process_resident_memory_bytes` and `node_network_receive_bytes_total` are bytes,
    /// `request_duration_seconds_bucket` seconds, `cache_hit_ratio` a ratio. Anything else is plain.
    pub fn of_metric(name: &str) -> Unit {
        let mut base = name;
        for suffix in DERIVED_SUFFIXES {
            if let Some(stripped) = base.strip_suffix(suffix) {
                base = stripped;
                break;
            }
        }
        if base.ends_with("_bytes") {
            Unit::Bytes
        } else if base.ends_with("_seconds") {
            Unit::Seconds
        } else if base.ends_with("_ratio") {
            Unit::Ratio
        } else if base.ends_with("_percent") {
            Unit::Percent
        } else {
            Unit::Plain
        }
    }

    /// `value` written in this unit. Not-a-number and infinities are written as such (`NaN`, `+Inf`).
    pub fn format(self, value: f64) -> String {
        if !value.is_finite() {
            return non_finite(value).to_owned();
        }
        match self {
            Unit::Bytes => bytes(value),
            Unit::Seconds => seconds(value),
            Unit::Ratio => format!("{}%", significant(value * 100.0)),
            Unit::Percent => format!("{}%", significant(value)),
            Unit::Plain => plain(value),
        }
    }

    /// A change per second in this unit, with its sign: `+2.0 MiB/s`, `-3.5/s`, `+0.5 s/s`.
    pub fn format_rate(self, per_second: f64) -> String {
        if !per_second.is_finite() {
            return format!("{}/s", non_finite(per_second));
        }
        let sign = if per_second < 0.0 { "-" } else { "+" };
        format!("{sign}{}/s", self.format(per_second.abs()))
    }
}

/// A duration for people, as [`Unit::Seconds`] writes it: `200 ms`, `30 s`, `1m30s`.
pub fn format_duration(duration: Duration) -> String {
    Unit::Seconds.format(duration.as_secs_f64())
}

/// A share in percent for people: `10%`, `12.5%`, `0.1%`.
pub fn format_percent(percent: f64) -> String {
    Unit::Percent.format(percent)
}

fn non_finite(value: f64) -> &'static str {
    if value.is_nan() {
        "NaN"
    } else if value > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// Three significant digits, without trailing zeros after the point: `0.0526`, `21.5`, `3`, `999`.
/// Integers up to a million are written whole (`123456`): a count is exact.
fn significant(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        return "0".to_owned();
    }
    if value.fract() == 0.0 && magnitude < 1e6 {
        return format!("{value:.0}");
    }
    if magnitude < 1e-3 {
        return trim_exponent(&format!("{value:.2e}"));
    }
    let digits_before_point = magnitude.log10().floor() as i32 + 1;
    let decimals = (3 - digits_before_point).max(0) as usize;
    trim_zeros(format!("{value:.decimals$}"))
}

/// `1.20e-5` → `1.2e-5`.
fn trim_exponent(text: &str) -> String {
    match text.split_once('e') {
        Some((mantissa, exponent)) => format!("{}e{exponent}", trim_zeros(mantissa.to_owned())),
        None => text.to_owned(),
    }
}

fn trim_zeros(mut text: String) -> String {
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.pop();
        }
    }
    text
}

fn plain(value: f64) -> String {
    const PREFIXES: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        for (scale, prefix) in PREFIXES {
            if magnitude >= scale {
                return format!("{}{prefix}", significant(value / scale));
            }
        }
    }
    significant(value)
}

fn bytes(value: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let magnitude = value.abs();
    if magnitude < 1024.0 {
        return format!("{} B", significant(value.round()));
    }
    let mut scaled = value / 1024.0;
    let mut unit = 0;
    while scaled.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    format!("{scaled:.1} {}", UNITS[unit])
}

fn seconds(value: f64) -> String {
    let magnitude = value.abs();
    let sign = if value < 0.0 { "-" } else { "" };
    if magnitude == 0.0 {
        return "0 s".to_owned();
    }
    if magnitude < 1e-3 {
        return format!("{sign}{} µs", significant(magnitude * 1e6));
    }
    if magnitude < 1.0 {
        return format!("{sign}{} ms", significant(magnitude * 1e3));
    }
    if magnitude < 60.0 {
        return format!("{sign}{} s", significant(magnitude));
    }
    let whole = magnitude.round() as u64;
    let mut text = String::from(sign);
    let _ = match whole {
        s if s < 3600 => write!(text, "{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => write!(text, "{}h{:02}m", s / 3600, s / 60 % 60),
        s => write!(text, "{}d{:02}h", s / 86_400, s / 3600 % 24),
    };
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unit: Unit, cases: &[(f64, &str)]) {
        for &(value, expected) in cases {
            assert_eq!(unit.format(value), expected, "{unit:?} {value}");
        }
    }

    #[test]
    fn units_come_from_metric_name_suffixes() {
        let cases = [
            ("mend_replica_resident_memory_bytes", Unit::Bytes),
            ("node_network_receive_bytes_total", Unit::Bytes),
            ("mend_replica_cpu_seconds_total", Unit::Seconds),
            ("http_request_duration_seconds_bucket", Unit::Seconds),
            ("http_request_duration_seconds_sum", Unit::Seconds),
            ("cache_hit_ratio", Unit::Ratio),
            ("mend_replica_cpu_percent", Unit::Percent),
            ("mend_replica_threads", Unit::Plain),
            ("http_requests_total", Unit::Plain),
            ("bytes", Unit::Plain),
        ];
        for (name, unit) in cases {
            assert_eq!(Unit::of_metric(name), unit, "{name}");
        }
    }

    #[test]
    fn bytes_use_binary_multiples() {
        check(
            Unit::Bytes,
            &[
                (0.0, "0 B"),
                (512.0, "512 B"),
                (5.0 * 1024.0 * 1024.0 + 100.0 * 1024.0, "5.1 MiB"),
                (3.114e7, "29.7 MiB"),
                (2.0 * 1024.0 * 1024.0 * 1024.0, "2.0 GiB"),
                (-3.0 * 1024.0 * 1024.0, "-3.0 MiB"),
            ],
        );
        assert_eq!(Unit::Bytes.format_rate(2.134e6), "+2.0 MiB/s");
        assert_eq!(Unit::Bytes.format_rate(-1536.0), "-1.5 KiB/s");
    }

    #[test]
    fn seconds_go_from_microseconds_to_days() {
        check(
            Unit::Seconds,
            &[
                (0.0, "0 s"),
                (0.000_85, "850 µs"),
                (0.2, "200 ms"),
                (0.0125, "12.5 ms"),
                (1.5, "1.5 s"),
                (30.0, "30 s"),
                (90.0, "1m30s"),
                (7500.0, "2h05m"),
                (3.0 * 86_400.0 + 4.0 * 3600.0, "3d04h"),
                (-0.25, "-250 ms"),
            ],
        );
        assert_eq!(format_duration(Duration::from_millis(200)), "200 ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30 s");
    }

    #[test]
    fn ratios_and_percentages_are_percentages() {
        check(Unit::Ratio, &[(0.0526, "5.26%"), (1.0, "100%"), (0.0, "0%")]);
        check(Unit::Percent, &[(45.23, "45.2%"), (10.0, "10%"), (12.5, "12.5%"), (0.1, "0.1%")]);
        assert_eq!(format_percent(10.0), "10%");
    }

    #[test]
    fn plain_numbers_keep_three_significant_digits() {
        check(
            Unit::Plain,
            &[
                (0.0, "0"),
                (3.0, "3"),
                (123_456.0, "123456"),
                (0.052_631_578_947_368_42, "0.0526"),
                (21.5, "21.5"),
                (1.23456, "1.23"),
                (999.9, "1000"),
                (-2.5, "-2.5"),
                (3.114e7, "31.1M"),
                (2.5e9, "2.5G"),
                (0.000_012_3, "1.23e-5"),
                (f64::NAN, "NaN"),
                (f64::INFINITY, "+Inf"),
            ],
        );
        assert_eq!(Unit::Plain.format_rate(3.2), "+3.2/s");
        assert_eq!(Unit::Plain.format_rate(f64::NAN), "NaN/s");
    }
}
