//! Prometheus remote write configuration: `[remote_write]`, from the raw table to the validated
//! [`RemoteWrite`]. Without the table nothing is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::validate::{KeyPath, Problems, duration, integer};

/// `[remote_write]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteWrite {
    url: Option<String>,
    interval: Option<String>,
    max_samples_per_request: Option<i64>,
    queue_requests: Option<i64>,
    timeout: Option<String>,
    bearer_token_file: Option<String>,
    basic_auth: Option<RawBasicAuth>,
    labels: Option<BTreeMap<String, String>>,
}

/// `[remote_write.basic_auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBasicAuth {
    username: Option<String>,
    password_file: Option<String>,
}

/// `[remote_write]`: the series store sent to a Prometheus remote write receiver (protocol 1.0).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWrite {
    /// `http://HOST:PORT/api/v1/write`.
    pub url: String,
    /// How often the series store is read for new samples.
    pub interval: Duration,
    /// Samples in one request at most.
    pub max_samples_per_request: usize,
    /// Requests waiting to be sent; when full the oldest is dropped (and counted).
    pub queue_requests: usize,
    /// Bound on one request, retries apart.
    pub timeout: Duration,
    /// How the receiver is told who sends.
    pub auth: RemoteWriteAuth,
    /// Labels added to every series sent (a series' own label of the same name wins), e.g. `host`.
    pub labels: BTreeMap<String, String>,
}

/// Credentials for the receiver, read from files at start so that they are not in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteWriteAuth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <file's content, trimmed>`.
    BearerTokenFile(PathBuf),
    /// `Authorization: Basic`, the password from the file (trimmed).
    Basic {
        /// The user name.
        username: String,
        /// Where the password is.
        password_file: PathBuf,
    },
}

fn file_path(base_dir: &Path, text: &str) -> PathBuf {
    let path = Path::new(text);
    if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) }
}

/// Validates `[remote_write]` (absent: nothing sent), collecting every problem.
pub(crate) fn validate(
    problems: &mut Problems<'_>,
    raw: Option<&RawRemoteWrite>,
    base_dir: &Path,
) -> Option<RemoteWrite> {
    let raw = raw?;
    let root = KeyPath::default().key("remote_write");
    let url = match raw.url.as_deref() {
        None => {
            problems.add(&root, "missing key \"url\" (e.g. url = \"http://127.0.0.1:9090/api/v1/write\")");
            None
        }
        Some(url) if crate::trace::endpoint_ok(url) => Some(url.to_owned()),
        Some(url) => {
            problems.add(
                &root.key("url"),
                format!("invalid url {url:?} (expected http://HOST:PORT/api/v1/write; there is no TLS client)"),
            );
            None
        }
    };
    let interval = duration(problems, &root.key("interval"), raw.interval.as_ref(), Duration::from_secs(10));
    let timeout = duration(problems, &root.key("timeout"), raw.timeout.as_ref(), Duration::from_secs(10));
    if interval.is_some_and(|value| value < Duration::from_millis(100)) {
        problems.add(&root.key("interval"), "must be at least 100ms");
    }
    if timeout.is_some_and(|value| value < Duration::from_millis(10)) {
        problems.add(&root.key("timeout"), "must be at least 10ms");
    }
    let max_samples_per_request =
        integer(problems, &root.key("max_samples_per_request"), raw.max_samples_per_request, 1..=100_000, 2_000);
    let queue_requests = integer(problems, &root.key("queue_requests"), raw.queue_requests, 1..=1_000, 64);
    let auth = match (&raw.bearer_token_file, &raw.basic_auth) {
        (Some(_), Some(_)) => {
            problems.add(&root.key("basic_auth"), "give either bearer_token_file or basic_auth, not both");
            None
        }
        (Some(file), None) if file.is_empty() => {
            problems.add(&root.key("bearer_token_file"), "must name a file");
            None
        }
        (Some(file), None) => Some(RemoteWriteAuth::BearerTokenFile(file_path(base_dir, file))),
        (None, Some(basic)) => {
            let path = root.key("basic_auth");
            match (&basic.username, &basic.password_file) {
                (Some(username), Some(password_file)) if !username.is_empty() && !password_file.is_empty() => {
                    Some(RemoteWriteAuth::Basic {
                        username: username.clone(),
                        password_file: file_path(base_dir, password_file),
                    })
                }
                _ => {
                    problems.add(&path, "basic_auth needs a non-empty username and password_file");
                    None
                }
            }
        }
        (None, None) => Some(RemoteWriteAuth::None),
    };
    let n_before = problems.count();
    let labels = crate::validate::labels(problems, &root, raw.labels.as_ref());
    for (name, value) in &labels {
        if value.is_empty() {
            problems.add(&root.key("labels").key(name), "a label value must not be empty (Prometheus drops it)");
        }
    }
    let labels_ok = problems.count() == n_before;
    Some(RemoteWrite {
        url: url?,
        interval: interval?,
        max_samples_per_request: max_samples_per_request? as usize,
        queue_requests: queue_requests? as usize,
        timeout: timeout?,
        auth: auth?,
        labels: if labels_ok { labels } else { return None },
    })
}
