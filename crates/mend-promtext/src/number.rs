//! Sample values and timestamps: parsing both formats' number syntax and writing values back.

use std::fmt;

/// Parses a sample value: decimal or exponent notation, `NaN`, `+Inf`, `-Inf`, `Inf` (any case, `Infinity` too).
///
/// Hexadecimal floats, which Go's parser also takes, are refused: no client library writes them.
pub(crate) fn parse_value(token: &str) -> Option<f64> {
    // Most values in real expositions are small integers (counts, bytes, states): convert them exactly without
    // the general float parser.
    let (negative, digits) = match token.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        bytes => (false, bytes),
    };
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let magnitude = digits.iter().fold(0u64, |acc, digit| acc * 10 + u64::from(digit - b'0'));
        // Below 10^15 every integer is exactly representable, so the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let magnitude = magnitude as f64;
        return Some(if negative { -magnitude } else { magnitude });
    }
    token.parse::<f64>().ok()
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestampError {
    /// Not a number in the format's timestamp syntax.
    Invalid,
    /// A number beyond `i64` milliseconds.
    OutOfRange,
}

/// Parses a 0.0.4 timestamp: integer milliseconds (`-?[0-9]+`, a leading `+` accepted as Go does).
pub(crate) fn parse_text_timestamp(token: &str) -> Result<i64, TimestampError> {
    let digits = token.strip_prefix(['+', '-']).unwrap_or(token);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(TimestampError::Invalid);
    }
    token.parse::<i64>().map_err(|_| TimestampError::OutOfRange)
}

/// Parses an OpenMetrics timestamp (seconds, a finite decimal number) into milliseconds truncated toward zero.
///
/// Plain decimals are converted exactly (`1520879607.789` is `1520879607789`, which `f64` arithmetic would make
/// `…788`); exponent notation goes through `f64`.
pub(crate) fn parse_openmetrics_timestamp(token: &str) -> Result<i64, TimestampError> {
    let (negative, unsigned) = match token.as_bytes() {
        [b'-', ..] => (true, &token[1..]),
        [b'+', ..] => (false, &token[1..]),
        _ => (false, token),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    if all_digits(whole) && all_digits(fraction) {
        if whole.is_empty() && fraction.is_empty() {
            return Err(TimestampError::Invalid);
        }
        let mut millis: i64 = 0;
        for digit in whole.bytes().chain(fraction.bytes().chain(std::iter::repeat(b'0')).take(3)) {
            millis = millis
                .checked_mul(10)
                .and_then(|value| value.checked_add(i64::from(digit - b'0')))
                .ok_or(TimestampError::OutOfRange)?;
        }
        return Ok(if negative { -millis } else { millis });
    }
    let exponent_form =
        unsigned.bytes().all(|byte| byte.is_ascii_digit() || matches!(byte, b'.' | b'e' | b'E' | b'+' | b'-'));
    let seconds = match token.parse::<f64>() {
        Ok(seconds) if exponent_form && seconds.is_finite() => seconds,
        _ => return Err(TimestampError::Invalid),
    };
    let millis = (seconds * 1000.0).trunc();
    // `i64::MAX as f64` rounds up to 2^63, which does not fit: the bound is exclusive.
    #[allow(clippy::cast_precision_loss)]
    let bound = i64::MAX as f64;
    if millis >= bound || millis < -bound {
        return Err(TimestampError::OutOfRange);
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(millis as i64)
}

/// Writes a value so that [`parse_value`] reads back the same `f64` (every NaN reads back as the canonical NaN):
/// integers plainly (`42`), other numbers in the shortest form that round-trips, `NaN`, `+Inf` and `-Inf`.
pub(crate) fn write_value(out: &mut impl fmt::Write, value: f64) -> fmt::Result {
    if value.is_nan() {
        out.write_str("NaN")
    } else if value.is_infinite() {
        out.write_str(if value > 0.0 { "+Inf" } else { "-Inf" })
    } else if value == 0.0 || (1e-4..1e15).contains(&value.abs()) {
        write!(out, "{value}")
    } else {
        write!(out, "{value:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_in_every_notation() {
        let cases: &[(&str, Option<f64>)] = &[
            ("0", Some(0.0)),
            ("-0", Some(-0.0)),
            ("42", Some(42.0)),
            ("-17", Some(-17.0)),
            ("1.5", Some(1.5)),
            ("1.445793e+06", Some(1_445_793.0)),
            ("2.5E-3", Some(0.0025)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("+3", Some(3.0)),
            ("+Inf", Some(f64::INFINITY)),
            ("-Inf", Some(f64::NEG_INFINITY)),
            ("Inf", Some(f64::INFINITY)),
            ("infinity", Some(f64::INFINITY)),
            ("123456789012345678901234567890", Some(1.2345678901234568e29)),
            ("", None),
            ("-", None),
            ("1_000", None),
            ("0x1p-2", None),
            ("abc", None),
            ("1e", None),
        ];
        for (token, expected) in cases {
            assert_eq!(parse_value(token), *expected, "{token:?}");
        }
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert!(parse_value("nan").is_some_and(f64::is_nan));
        assert!(parse_value("-0").is_some_and(f64::is_sign_negative));
    }

    #[test]
    fn text_timestamps_are_integer_milliseconds() {
        assert_eq!(parse_text_timestamp("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_text_timestamp("-5"), Ok(-5));
        assert_eq!(parse_text_timestamp("+5"), Ok(5));
        assert_eq!(parse_text_timestamp("1.5"), Err(TimestampError::Invalid));
        assert_eq!(parse_text_timestamp("-"), Err(TimestampError::Invalid));
        assert_eq!(parse_text_timestamp("99999999999999999999"), Err(TimestampError::OutOfRange));
    }

    #[test]
    fn openmetrics_timestamps_are_seconds_truncated_to_milliseconds() {
        let cases: &[(&str, Result<i64, TimestampError>)] = &[
            ("1520879607.789", Ok(1_520_879_607_789)),
            ("1520879607.7899999", Ok(1_520_879_607_789)),
            ("1520879607", Ok(1_520_879_607_000)),
            ("-1.5", Ok(-1500)),
            ("-0.0009", Ok(0)),
            (".5", Ok(500)),
            ("5.", Ok(5000)),
            ("1.5e3", Ok(1_500_000)),
            ("1e-4", Ok(0)),
            ("", Err(TimestampError::Invalid)),
            (".", Err(TimestampError::Invalid)),
            ("NaN", Err(TimestampError::Invalid)),
            ("+Inf", Err(TimestampError::Invalid)),
            ("1e400", Err(TimestampError::Invalid)),
            ("0x10", Err(TimestampError::Invalid)),
            ("9223372036854775.807", Ok(i64::MAX)),
            ("9223372036854775.808", Err(TimestampError::OutOfRange)),
            ("1e17", Err(TimestampError::OutOfRange)),
        ];
        for (token, expected) in cases {
            assert_eq!(parse_openmetrics_timestamp(token), *expected, "{token:?}");
        }
    }

    #[test]
    fn written_values_read_back_identically() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1e-4,
            9.999e-5,
            123_456_789.0,
            1e15,
            1e21,
            -2.5e-300,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for value in values {
            let mut text = String::new();
            write_value(&mut text, value).expect("writing to a String cannot fail");
            let back = parse_value(&text).expect("written values parse");
            assert_eq!(back.to_bits(), value.to_bits(), "{value:?} written as {text:?}");
        }
        let mut text = String::new();
        write_value(&mut text, 3.0).expect("writing to a String cannot fail");
        assert_eq!(text, "3");
    }
}
