//! Raw file types: exactly what the TOML file may contain, before validation.
//!
//! Unknown keys are rejected (`deny_unknown_fields`). Values that need checking beyond their TOML type
//! (durations, ports, names, signals) stay strings here so that `validate` can report every problem at
//! once, each with its key path.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// The `[api]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub(crate) listen: Option<String>,
    pub(crate) token: Option<String>,
}

/// One `[service.NAME]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) command: Option<StringOrList>,
    pub(crate) shell: Option<bool>,
    pub(crate) working_dir: Option<String>,
    pub(crate) env: Option<BTreeMap<String, String>>,
    pub(crate) replicas: Option<i64>,
    pub(crate) ports: Option<IntOrString>,
    pub(crate) restart: Option<String>,
    pub(crate) stop_signal: Option<String>,
    pub(crate) stop_timeout: Option<String>,
    pub(crate) depends_on: Option<Vec<String>>,
    pub(crate) backoff: Option<RawBackoff>,
    pub(crate) restart_limit: Option<RawRestartLimit>,
    pub(crate) liveness: Option<RawProbe>,
    pub(crate) readiness: Option<RawProbe>,
    pub(crate) startup: Option<RawProbe>,
    pub(crate) logs: Option<RawLogs>,
}

/// `[service.NAME.backoff]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackoff {
    pub(crate) initial: Option<String>,
    pub(crate) max: Option<String>,
    pub(crate) reset_after: Option<String>,
    pub(crate) jitter: Option<f64>,
}

/// `[service.NAME.restart_limit]`: restart intensity in the Erlang/OTP sense.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRestartLimit {
    pub(crate) max_restarts: Option<i64>,
    pub(crate) within: Option<String>,
}

/// `[service.NAME.liveness|readiness|startup]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub(crate) http: Option<String>,
    pub(crate) tcp: Option<String>,
    pub(crate) exec: Option<Vec<String>>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) initial_delay: Option<String>,
    pub(crate) failure_threshold: Option<i64>,
    pub(crate) success_threshold: Option<i64>,
    pub(crate) status: Option<IntOrString>,
    pub(crate) body_contains: Option<String>,
    pub(crate) busy_timeout: Option<String>,
}

/// `[service.NAME.logs]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogs {
    pub(crate) max_file_bytes: Option<i64>,
    pub(crate) keep_files: Option<i64>,
}

/// A value written either as a string or as an array of strings (`command`).
#[derive(Debug)]
pub(crate) enum StringOrList {
    String(String),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringOrListVisitor;
        impl<'de> Visitor<'de> for StringOrListVisitor {
            type Value = StringOrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings (argv), or a string with shell = true")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(StringOrList::String(value.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringOrList::List(items))
            }
        }
        deserializer.deserialize_any(StringOrListVisitor)
    }
}

/// A value written either as an integer or as a string (`ports = 9101` or `ports = "9101-9110"`).
#[derive(Debug)]
pub(crate) enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntOrStringVisitor;
        impl Visitor<'_> for IntOrStringVisitor {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(IntOrString::Int(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(IntOrString::Int(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(IntOrString::String(value.to_owned()))
            }
        }
        deserializer.deserialize_any(IntOrStringVisitor)
    }
}
