//! W3C Trace Context (`traceparent`, <https://www.w3.org/TR/trace-context/>): ids, parsing with the
//! spec's validation, and formatting.
//!
//! Parsing follows §3.2 and §4.3: a version is two lowercase hex digits and never `ff`; version `00` is
//! exactly 55 characters; a later version is read as `00` when at least 55 characters long and, if
//! longer, followed by `-`; the trace id and the parent id are lowercase hex and not all zeros. Anything
//! else is invalid, and an invalid `traceparent` is treated as absent.

use std::fmt;

/// A 16-byte trace id (never all zeros once parsed or made).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id (never all zeros once parsed or made).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random, non-zero trace id.
    pub fn random() -> Self {
        loop {
            let id = fastrand::u128(..).to_be_bytes();
            if id != [0; 16] {
                return Self(id);
            }
        }
    }

    /// Parses 32 lowercase hex digits (not all zeros).
    pub fn parse_hex(text: &str) -> Option<Self> {
        let mut id = [0; 16];
        decode_hex(text.as_bytes(), &mut id)?;
        (id != [0; 16]).then_some(Self(id))
    }

    /// The low 8 bytes as an integer: the random part ratio sampling looks at.
    pub(crate) fn low_u64(self) -> u64 {
        let mut low = [0; 8];
        low.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(low)
    }
}

impl SpanId {
    /// A random, non-zero span id.
    pub fn random() -> Self {
        loop {
            let id = fastrand::u64(..).to_be_bytes();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }

    /// Parses 16 lowercase hex digits (not all zeros).
    pub fn parse_hex(text: &str) -> Option<Self> {
        let mut id = [0; 8];
        decode_hex(text.as_bytes(), &mut id)?;
        (id != [0; 8]).then_some(Self(id))
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

macro_rules! hex_serde {
    ($id:ty, $what:literal) => {
        impl serde::Serialize for $id {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $id {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse_hex(&text).ok_or_else(|| serde::de::Error::custom(concat!("invalid ", $what)))
            }
        }
    };
}

hex_serde!(TraceId, "trace id (32 lowercase hex digits, not all zeros)");
hex_serde!(SpanId, "span id (16 lowercase hex digits, not all zeros)");

/// A valid `traceparent`: whose trace this is, the caller's span, and whether the caller sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The span of the caller (this request's parent).
    pub parent_id: SpanId,
    /// The `sampled` flag (bit 0 of trace-flags).
    pub sampled: bool,
}

/// Length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        // Upper case is invalid (§3.2.2.1: "lowercase hex").
        _ => None,
    }
}

fn decode_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(())
}

impl TraceParent {
    /// Parses a `traceparent` header value; `None` when it is invalid (which the spec says to treat as
    /// absent).
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let mut version = [0u8; 1];
        decode_hex(&value[0..2], &mut version)?;
        match version[0] {
            0xff => return None,
            0x00 if value.len() != TRACEPARENT_LEN => return None,
            // A later version: its first four fields read as version 00's; what follows starts with '-'.
            _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
            _ => {}
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        decode_hex(&value[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        decode_hex(&value[36..52], &mut parent_id)?;
        let mut flags = [0u8; 1];
        decode_hex(&value[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id: TraceId(trace_id), parent_id: SpanId(parent_id), sampled: flags[0] & 1 == 1 })
    }

    /// The version-00 header value, written into a fixed buffer (no allocation).
    pub fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        for (idx, byte) in self.trace_id.0.iter().enumerate() {
            out[3 + idx * 2] = HEX[usize::from(byte >> 4)];
            out[4 + idx * 2] = HEX[usize::from(byte & 0xf)];
        }
        out[35] = b'-';
        for (idx, byte) in self.parent_id.0.iter().enumerate() {
            out[36 + idx * 2] = HEX[usize::from(byte >> 4)];
            out[37 + idx * 2] = HEX[usize::from(byte & 0xf)];
        }
        out[52] = b'-';
        out[53] = b'0';
        out[54] = if self.sampled { b'1' } else { b'0' };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn check(value: &str, expected: Option<(&str, &str, bool)>) {
        let parsed = TraceParent::parse(value.as_bytes())
            .map(|tp| (tp.trace_id.to_string(), tp.parent_id.to_string(), tp.sampled));
        let expected = expected.map(|(trace, parent, sampled)| (trace.to_owned(), parent.to_owned(), sampled));
        assert_eq!(parsed, expected, "{value:?}");
    }

    #[test]
    fn parses_the_specs_example() {
        check(VALID, Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true)));
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", false)),
        );
        // Only bit 0 is `sampled`; other flags are kept unknown.
        check(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true)),
        );
    }

    #[test]
    fn rejects_what_the_spec_calls_invalid() {
        for value in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // Upper-case hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff, and version 00 with more after it.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // Not hex, wrong separators.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            // A later version followed by something other than '-'.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            check(value, None);
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        check(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true)),
        );
    }

    #[test]
    fn encode_round_trips() {
        let parsed = TraceParent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(&parsed.encode()[..], VALID.as_bytes());
        let unsampled = TraceParent { sampled: false, ..parsed };
        assert_eq!(TraceParent::parse(&unsampled.encode()), Some(unsampled));
    }
}
