//! Human duration strings: `"500ms"`, `"10s"`, `"5m"`, `"1h30m"`.

use std::time::Duration;

use mend_types::Timestamp;

/// Parses a duration written as one or more `<number><unit>` parts (`"1m30s"`), with units `ms`, `s`,
/// `m`, `h` and `d`; numbers may have a fraction (`"1.5s"`). A bare number is refused: the unit is part of
/// the value.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration (write it like \"500ms\", \"10s\" or \"5m\")".to_owned());
    }
    let mut total_ms = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("invalid duration {text:?}: expected a number at {rest:?}"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: {:?} is not a number", &rest[..number_len]))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let unit_ms = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "" => return Err(format!("invalid duration {text:?}: missing unit (use ms, s, m, h or d, e.g. \"10s\")")),
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)")),
        };
        total_ms += number * unit_ms;
        rest = &rest[unit_len..];
    }
    // Ten years is far beyond any sensible timeout and keeps every later addition from overflowing.
    if !total_ms.is_finite() || total_ms > 10.0 * 365.0 * 86_400_000.0 {
        return Err(format!("invalid duration {text:?}: too long"));
    }
    Ok(Duration::from_micros((total_ms * 1000.0).round() as u64))
}

/// Parses a lower time bound (`mend events --since`, `GET /api/v1/events?since=`): an RFC 3339 time, or
/// a duration back from `now` (`"10m"`). A bare number is refused rather than read as milliseconds
/// after the epoch: `--since 5` means five somethings ago, and the unit says which.
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let text = text.trim();
    if text.parse::<f64>().is_ok() {
        return Err(format!(
            "a number needs a unit: \"{text}s\" (or ms, m, h, d) for that long ago, or an RFC 3339 time such as \
             2026-01-02T03:04:05Z"
        ));
    }
    if let Some(at) = Timestamp::parse(text) {
        return Ok(at);
    }
    match parse_duration(text) {
        Ok(ago) => Ok(now.saturating_sub(ago)),
        Err(_) => {
            Err("expected an RFC 3339 time (2026-01-02T03:04:05Z) or a duration back from now (\"10m\")".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_fractions_and_compounds() {
        let cases = [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("1.5s", 1_500),
            ("1500ms", 1_500),
            ("1m30s", 90_000),
            ("0s", 0),
            (" 2s ", 2_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(millis)), "{text:?}");
        }
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            ("", "empty duration (write it like \"500ms\", \"10s\" or \"5m\")"),
            ("10", "invalid duration \"10\": missing unit (use ms, s, m, h or d, e.g. \"10s\")"),
            ("5x", "invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h or d)"),
            ("10 s", "invalid duration \"10 s\": unknown unit \" s\" (use ms, s, m, h or d)"),
            ("-1s", "invalid duration \"-1s\": expected a number at \"-1s\""),
            ("1..2s", "invalid duration \"1..2s\": \"1..2\" is not a number"),
            ("s", "invalid duration \"s\": expected a number at \"s\""),
            ("99999999d", "invalid duration \"99999999d\": too long"),
        ];
        for (text, message) in cases {
            assert_eq!(parse_duration(text), Err(message.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn since_is_a_time_or_a_duration_back_and_a_bare_number_needs_a_unit() {
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(parse_since("5m", now), Ok(Timestamp::from_millis(700_000)));
        assert_eq!(parse_since("5ms", now), Ok(Timestamp::from_millis(999_995)));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(Timestamp::from_millis(1000)));
        let bare = "a number needs a unit: \"5s\" (or ms, m, h, d) for that long ago, or an RFC 3339 time such as \
                    2026-01-02T03:04:05Z";
        assert_eq!(parse_since("5", now), Err(bare.to_owned()));
        assert!(parse_since("1795341600000", now).is_err_and(|e| e.starts_with("a number needs a unit")));
        assert!(parse_since("-5", now).is_err_and(|e| e.starts_with("a number needs a unit")));
        assert_eq!(
            parse_since("yesterday", now),
            Err("expected an RFC 3339 time (2026-01-02T03:04:05Z) or a duration back from now (\"10m\")".to_owned())
        );
    }
}
