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
    pub(crate) metrics: Option<RawMetrics>,
    pub(crate) max_memory_bytes: Option<IntOrString>,
    pub(crate) proxy: Option<RawProxy>,
    pub(crate) canary: Option<RawCanary>,
    pub(crate) release: Option<BTreeMap<String, RawRelease>>,
    pub(crate) stable_release: Option<String>,
    pub(crate) healing: Option<crate::heal::RawServiceHealing>,
    pub(crate) autoscale: Option<crate::autoscale::RawAutoscale>,
}

/// `[service.NAME.proxy]`: mend's reverse proxy in front of the ready replicas.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub(crate) listen: Option<String>,
    pub(crate) load_balancing: Option<String>,
    pub(crate) upstream_protocol: Option<String>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) attempt_timeout: Option<String>,
    pub(crate) request_timeout: Option<String>,
    pub(crate) read_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) header_timeout: Option<String>,
    pub(crate) max_header_bytes: Option<i64>,
    pub(crate) max_body_bytes: Option<i64>,
    pub(crate) retry_buffer_bytes: Option<i64>,
    pub(crate) max_attempts: Option<i64>,
    pub(crate) retry_budget: Option<f64>,
    pub(crate) retry_on: Option<Vec<String>>,
    pub(crate) retriable_status_codes: Option<Vec<i64>>,
    pub(crate) retry_methods: Option<Vec<String>>,
    pub(crate) ejection_failures: Option<i64>,
    pub(crate) base_ejection: Option<String>,
    pub(crate) max_ejection: Option<String>,
    pub(crate) max_ejection_percent: Option<i64>,
    pub(crate) slow_start: Option<String>,
    pub(crate) drain_timeout: Option<String>,
    pub(crate) trace_ratio: Option<f64>,
}

/// `[service.NAME.canary]`: a second release run beside the stable one, on a share of the traffic.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCanary {
    pub(crate) release: Option<String>,
    pub(crate) command: Option<StringOrList>,
    pub(crate) env: Option<BTreeMap<String, String>>,
    pub(crate) replicas: Option<i64>,
    pub(crate) weight: Option<i64>,
    pub(crate) pin_header: Option<String>,
    pub(crate) pin_cookie: Option<String>,
}

/// `[service.NAME.release.RELEASE]`: one named release (what its replicas run).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRelease {
    pub(crate) command: Option<StringOrList>,
    pub(crate) args: Option<Vec<String>>,
    pub(crate) env: Option<BTreeMap<String, String>>,
    pub(crate) working_dir: Option<String>,
}

/// `[service.NAME.metrics]`: scrape each replica's exposition.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) scrape: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) max_series: Option<i64>,
    pub(crate) sample_limit: Option<i64>,
}

/// `[[scrape]]`: a static target mend does not supervise.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScrape {
    pub(crate) name: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) labels: Option<BTreeMap<String, String>>,
    pub(crate) max_series: Option<i64>,
    pub(crate) sample_limit: Option<i64>,
}

/// `[[rule]]`: a PromQL alerting rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: Option<String>,
    pub(crate) expr: Option<String>,
    #[serde(rename = "for")]
    pub(crate) for_duration: Option<String>,
    pub(crate) keep_firing_for: Option<String>,
    pub(crate) severity: Option<String>,
    pub(crate) labels: Option<BTreeMap<String, String>>,
    pub(crate) summary: Option<String>,
}

/// `[[detect]]`: a streaming detector on the series a PromQL expression yields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDetect {
    pub(crate) name: Option<String>,
    pub(crate) series: Option<String>,
    pub(crate) detector: Option<String>,
    pub(crate) sensitivity: Option<f64>,
    pub(crate) severity: Option<String>,
}

/// `[[forecast]]`: time until a series reaches a limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForecast {
    pub(crate) name: Option<String>,
    pub(crate) series: Option<String>,
    pub(crate) limit: Option<FloatOrString>,
    pub(crate) horizon: Option<String>,
    pub(crate) severity: Option<String>,
}

/// `[storage]`: bounds of the in-memory series store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    pub(crate) retention: Option<String>,
    pub(crate) max_points_per_series: Option<i64>,
    pub(crate) max_series: Option<i64>,
}

/// A number, or a string with a size unit (`limit = 512e6` or `limit = "512MiB"`).
#[derive(Debug)]
pub(crate) enum FloatOrString {
    Float(f64),
    String(String),
}

impl<'de> Deserialize<'de> for FloatOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FloatOrStringVisitor;
        impl Visitor<'_> for FloatOrStringVisitor {
            type Value = FloatOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string such as \"512MiB\"")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(FloatOrString::Float(value as f64))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(FloatOrString::Float(value as f64))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
                Ok(FloatOrString::Float(value))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(FloatOrString::String(value.to_owned()))
            }
        }
        deserializer.deserialize_any(FloatOrStringVisitor)
    }
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
    pub(crate) max_file_bytes: Option<IntOrString>,
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
