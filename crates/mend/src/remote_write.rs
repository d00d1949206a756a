//! `[remote_write]` at the daemon: credentials read from their files, the remote writer started on the
//! series store, and its counters handed to `/metrics`.

use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use base64::Engine as _;
use mend_config::{RemoteWrite, RemoteWriteAuth};
use mend_observe::series::SeriesStore;
use mend_remote_write::{Endpoint, RemoteWriter, Settings};

/// The `Authorization` header's value for `auth`, reading its file (trimmed, as Prometheus does).
fn authorization(auth: &RemoteWriteAuth) -> anyhow::Result<Option<String>> {
    let read = |path: &std::path::Path, key: &str| -> anyhow::Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {} (remote_write.{key})", path.display()))?;
        let secret = text.trim().to_owned();
        anyhow::ensure!(!secret.is_empty(), "{} is empty (remote_write.{key})", path.display());
        Ok(secret)
    };
    Ok(match auth {
        RemoteWriteAuth::None => None,
        RemoteWriteAuth::BearerTokenFile(path) => Some(format!("Bearer {}", read(path, "bearer_token_file")?)),
        RemoteWriteAuth::Basic { username, password_file } => {
            let password = read(password_file, "basic_auth.password_file")?;
            let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            Some(format!("Basic {credentials}"))
        }
    })
}

/// The settings for `config`, with the credentials read.
pub(crate) fn settings(config: &RemoteWrite) -> anyhow::Result<Settings> {
    let endpoint = Endpoint::parse(&config.url)
        .with_context(|| format!("remote_write.url {:?} is not an http:// URL", config.url))?;
    Ok(Settings {
        endpoint,
        interval: config.interval,
        max_samples_per_request: config.max_samples_per_request,
        queue_requests: config.queue_requests,
        timeout: config.timeout,
        authorization: authorization(&config.auth)?,
        labels: config.labels.clone(),
        send_after: None,
    })
}

/// The running remote writer, as `/metrics` sees it.
pub(crate) struct RemoteWriteMetrics(pub(crate) RemoteWriter);

impl mend_api::MetricsSource for RemoteWriteMetrics {
    fn openmetrics(&self) -> String {
        self.0.openmetrics()
    }
}

/// Starts remote write when configured; its credentials are read now, so that a missing file stops the
/// start rather than failing every request. Points up to `sent_before_start` (the history restored from
/// before a restart) are not sent again.
pub(crate) fn start(
    config: Option<&RemoteWrite>,
    series: Arc<RwLock<SeriesStore>>,
    sent_before_start: Option<mend_types::Timestamp>,
) -> anyhow::Result<Option<Arc<RemoteWriteMetrics>>> {
    let Some(config) = config else { return Ok(None) };
    let settings = Settings { send_after: sent_before_start, ..settings(config)? };
    tracing::info!(url = %config.url, interval = ?config.interval, "remote write to prometheus");
    Ok(Some(Arc::new(RemoteWriteMetrics(RemoteWriter::start(settings, series)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_their_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        assert_eq!(
            authorization(&RemoteWriteAuth::BearerTokenFile(token.clone())).expect("readable").as_deref(),
            Some("Bearer s3cret")
        );
        let basic = RemoteWriteAuth::Basic { username: "mend".into(), password_file: token };
        // base64("mend:s3cret")
        assert_eq!(authorization(&basic).expect("readable").as_deref(), Some("Basic bWVuZDpzM2NyZXQ="));
        let missing = RemoteWriteAuth::BearerTokenFile(dir.path().join("absent"));
        let error = format!("{:#}", authorization(&missing).expect_err("no file"));
        assert!(error.contains("remote_write.bearer_token_file"), "{error}");
        assert_eq!(authorization(&RemoteWriteAuth::None).expect("nothing to read"), None);
    }
}
