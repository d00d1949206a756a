//! Wall-clock timestamps and the `Clock` through which all code reads time.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A wall-clock instant in milliseconds since the Unix epoch (UTC).
///
/// Events and samples carry `Timestamp`s; timers and durations use the monotonic [`Instant`] from the
/// [`Clock`] so that a clock step never fires or starves a timer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Seconds since the Unix epoch, with a fraction.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// This timestamp moved back by `duration` (saturating).
    pub fn saturating_sub(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(millis))
    }

    /// This timestamp moved forward by `duration` (saturating).
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// Parses RFC 3339 (`2026-11-22T10:00:00Z`, `2026-11-22T10:00:00.250+01:00`) or an integer number
    /// of milliseconds since the epoch.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(millis) = text.parse::<i64>() {
            return Some(Self(millis));
        }
        parse_rfc3339(text).map(Self)
    }
}

impl fmt::Display for Timestamp {
    /// Formats as RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T10:00:00.250Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1000);
        let millis = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let secs_of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Proleptic Gregorian (year, month, day) to days since 1970-01-01; inverse of [`civil_from_days`].
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut pos = 19;
    let mut millis = 0;
    if bytes.get(pos) == Some(&b'.') {
        let start = pos + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        // Keep millisecond precision: pad or cut the fraction to three digits.
        let fraction = &text[start..end.min(start + 3)];
        millis = fraction.parse::<i64>().ok()? * 10_i64.pow(3 - fraction.len() as u32);
        pos = end;
    }
    let offset_secs = match &text[pos..] {
        "Z" | "z" => 0,
        offset if offset.len() == 6 && (offset.starts_with('+') || offset.starts_with('-')) => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            if offset.as_bytes()[3] != b':' {
                return None;
            }
            sign * (digits(pos + 1..pos + 3)? * 3600 + digits(pos + 4..pos + 6)? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// The only way code reads time.
///
/// Pure decision code takes `now` as an argument; the IO edges read it from a `Clock`, so tests can drive
/// time deterministically.
pub trait Clock: Send + Sync {
    /// Monotonic time, for timers, durations and ordering.
    fn now(&self) -> Instant;
    /// Wall-clock time, for timestamps shown to people and stored.
    fn wall(&self) -> Timestamp;
}

/// The real clock of the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // This is the clock module: the one place allowed to read time.
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // This is the clock module: the one place allowed to read time.
    fn wall(&self) -> Timestamp {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Serde for a [`Timestamp`] as RFC 3339 text (`2026-11-22T10:00:00.250Z`), as the API shows times;
/// reads milliseconds since the epoch too. For `#[serde(with = "...")]`.
pub(crate) mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Timestamp;

    /// Writes `at` as RFC 3339.
    pub(crate) fn serialize<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(at)
    }

    /// Reads RFC 3339 or milliseconds.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Millis(i64),
            Text(String),
        }
        match Either::deserialize(deserializer)? {
            Either::Millis(millis) => Ok(Timestamp::from_millis(millis)),
            Either::Text(text) => Timestamp::parse(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid time {text:?} (RFC 3339 expected)"))),
        }
    }

    /// The same for an optional time (`null` when absent).
    pub(crate) mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::super::Timestamp;

        /// Writes `at` as RFC 3339, or null.
        pub(crate) fn serialize<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => serializer.collect_str(at),
                None => serializer.serialize_none(),
            }
        }

        /// Reads RFC 3339, milliseconds or null.
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Timestamp);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(at)| at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc_with_millis() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_000_000_123, "2026-11-18T11:06:40.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ];
        for (millis, expected) in cases {
            assert_eq!(Timestamp::from_millis(millis).to_string(), expected);
        }
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for millis in [0, 1_795_000_000_123, 951_782_400_000, 4_102_444_800_000] {
            let ts = Timestamp::from_millis(millis);
            assert_eq!(Timestamp::parse(&ts.to_string()), Some(ts));
        }
        let cases = [
            ("2026-11-22T10:00:00Z", Some(1_795_341_600_000)),
            ("2026-11-22T11:00:00+01:00", Some(1_795_341_600_000)),
            ("2026-11-22T10:00:00.5Z", Some(1_795_341_600_500)),
            ("1795341600000", Some(1_795_341_600_000)),
            ("2026-13-22T10:00:00Z", None),
            ("2026-11-22T10:00:00", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Timestamp::parse(text).map(Timestamp::as_millis), expected, "{text:?}");
        }
    }
}
