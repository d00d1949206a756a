//! `[service.NAME.proxy]`'s retry policy: `retry_on` (Envoy's conditions), `retriable_status_codes` and
//! `retry_methods`, validated into [`RetryOn`] and a method list.

use crate::validate::{KeyPath, Problems};

/// When a failed attempt goes on to another replica (`retry_on`, Envoy's names). Unset, the proxy's
/// default holds: `["5xx", "reset", "connect-failure"]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// `5xx`: any 5xx answer.
    pub server_errors: bool,
    /// `gateway-error`: 502, 503 and 504 answers.
    pub gateway_errors: bool,
    /// `reset`: the connection closed or reset before response headers.
    pub reset: bool,
    /// `connect-failure`: no connection could be made.
    pub connect_failure: bool,
    /// `retriable-status-codes`: answers with these statuses (`retriable_status_codes`).
    pub statuses: Vec<u16>,
}

/// The conditions `retry_on` accepts.
const CONDITIONS: [&str; 5] = ["5xx", "gateway-error", "reset", "connect-failure", "retriable-status-codes"];

/// The methods `retry_methods` accepts.
const METHODS: [&str; 8] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH"];

fn quoted(names: &[&str]) -> String {
    names.iter().map(|name| format!("{name:?}")).collect::<Vec<_>>().join(", ")
}

/// Validates `retry_on` with `retriable_status_codes`; None when unset or wrong (the problems say why).
pub(crate) fn retry_on(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    conditions: Option<&[String]>,
    codes: Option<&[i64]>,
) -> Option<RetryOn> {
    let mut policy = RetryOn::default();
    let mut wants_codes = false;
    let mut valid = true;
    for (idx, condition) in conditions.unwrap_or_default().iter().enumerate() {
        match condition.as_str() {
            "5xx" => policy.server_errors = true,
            "gateway-error" => policy.gateway_errors = true,
            "reset" => policy.reset = true,
            "connect-failure" => policy.connect_failure = true,
            "retriable-status-codes" => wants_codes = true,
            other => {
                valid = false;
                problems.add(
                    &path.key("retry_on").index(idx),
                    format!("unknown retry condition {other:?} (allowed: {})", quoted(&CONDITIONS)),
                );
            }
        }
    }
    for (idx, code) in codes.unwrap_or_default().iter().enumerate() {
        match u16::try_from(*code) {
            Ok(status @ 500..=599) => policy.statuses.push(status),
            _ => {
                valid = false;
                problems.add(
                    &path.key("retriable_status_codes").index(idx),
                    format!(
                        "{code} is not a server error (allowed: 500 to 599; a 4xx is the client's and is never retried)"
                    ),
                );
            }
        }
    }
    match (wants_codes, codes) {
        (true, None) => {
            valid = false;
            problems.add(
                &path.key("retry_on"),
                "\"retriable-status-codes\" needs retriable_status_codes (e.g. retriable_status_codes = [500, 503])",
            );
        }
        (false, Some(_)) if conditions.is_some() => {
            valid = false;
            problems.add(
                &path.key("retriable_status_codes"),
                "is used only with \"retriable-status-codes\" in retry_on: add it there",
            );
        }
        _ => {}
    }
    // `retriable_status_codes` alone (no `retry_on`): the default conditions plus these codes.
    if conditions.is_none() && codes.is_some() && valid {
        policy = RetryOn { server_errors: true, gateway_errors: true, reset: true, connect_failure: true, ..policy };
    }
    (valid && (conditions.is_some() || codes.is_some())).then_some(policy)
}

/// Validates `retry_methods`: upper-case method names, each once.
pub(crate) fn retry_methods(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    methods: Option<&[String]>,
) -> Option<Vec<String>> {
    let methods = methods?;
    let mut valid = true;
    for (idx, method) in methods.iter().enumerate() {
        if !METHODS.contains(&method.as_str()) {
            valid = false;
            problems.add(
                &path.key("retry_methods").index(idx),
                format!("unknown method {method:?} (allowed: {})", quoted(&METHODS)),
            );
        }
    }
    valid.then(|| methods.to_vec())
}
