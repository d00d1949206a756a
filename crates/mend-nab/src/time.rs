//! Hand-written parsing of NAB's `YYYY-MM-DD HH:MM:SS[.ffffff]` timestamps into seconds since the Unix epoch.

/// A NAB timestamp: whole seconds since 1970-01-01 00:00:00 (no time zone) plus microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since the Unix epoch (negative before 1970).
    pub secs: i64,
    /// Fraction of the second, in microseconds (`0..1_000_000`).
    pub micros: u32,
}

impl Timestamp {
    /// The timestamp as fractional seconds since the epoch.
    pub fn as_secs_f64(self) -> f64 {
        self.secs as f64 + f64::from(self.micros) * 1e-6
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        _ => 28,
    }
}

fn digits(text: &[u8]) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u32, |acc, &byte| byte.is_ascii_digit().then(|| acc * 10 + u32::from(byte - b'0')))
}

/// Parses `YYYY-MM-DD HH:MM:SS` with an optional `.` and 1 to 9 fractional digits (kept to microseconds).
///
/// Returns `None` for anything else, including impossible dates such as `2014-02-30`.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let bytes = text.trim().as_bytes();
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || (bytes[10] != b' ' && bytes[10] != b'T')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let year = i64::from(digits(&bytes[0..4])?);
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    let hour = i64::from(digits(&bytes[11..13])?);
    let minute = i64::from(digits(&bytes[14..16])?);
    let second = i64::from(digits(&bytes[17..19])?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let micros = match &bytes[19..] {
        [] => 0,
        [b'.', fraction @ ..] if !fraction.is_empty() && fraction.len() <= 9 => {
            let value = digits(fraction)?;
            let scale = 10u32.pow(9 - fraction.len() as u32);
            (value * scale) / 1000
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp { secs, micros })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<(i64, u32)>) {
        let got = parse_timestamp(input).map(|ts| (ts.secs, ts.micros));
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn parses_known_instants() {
        check("1970-01-01 00:00:00", Some((0, 0)));
        check("2014-04-10 16:15:00", Some((1_397_146_500, 0)));
        check("2014-04-10 16:15:00.000000", Some((1_397_146_500, 0)));
        check("2000-02-29 23:59:59.5", Some((951_868_799, 500_000)));
        check("2015-02-26 21:42:53", Some((1_424_986_973, 0)));
        check("1969-12-31 23:59:59", Some((-1, 0)));
        check("2100-03-01 00:00:00", Some((4_107_542_400, 0)));
    }

    #[test]
    fn rejects_malformed_or_impossible_dates() {
        check("2014-02-29 00:00:00", None);
        check("2014-13-01 00:00:00", None);
        check("2014-04-10", None);
        check("2014/04/10 16:15:00", None);
        check("2014-04-10 24:00:00", None);
        check("2014-04-10 16:15:00.", None);
        check("2014-04-10 16:15:00x", None);
        check("", None);
    }

    #[test]
    fn consecutive_days_are_86400_seconds_apart() {
        let mut previous = parse_timestamp("1999-12-25 00:00:00").map(|ts| ts.secs);
        for day in 26..=31 {
            let text = format!("1999-12-{day} 00:00:00");
            let current = parse_timestamp(&text).map(|ts| ts.secs);
            assert_eq!(current.zip(previous).map(|(c, p)| c - p), Some(86_400));
            previous = current;
        }
    }
}
