//! Log answers across services and replicas (`GET /api/v1/logs`): lines interleaved by time, each with
//! its time and `service/replica`, filtered by time, level and a regular expression, and followed live;
//! and a service's mined templates (`GET /api/v1/services/{name}/log-patterns`).
//!
//! Bounded like the single-service answer (issue 20): files are read from their end within
//! [`MAX_LOG_ANSWER_BYTES`] shared by the replicas, off the async workers, at most
//! [`MAX_CONCURRENT_LOG_ANSWERS`] answers at once; a follower reads at most 1 MiB per replica per poll.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use mend_logs::Level;
use mend_logs::miner::split_line;
use mend_supervisor::ControlError;
use mend_supervisor::logs::{self, LogCursor, parse_record};
use mend_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::routes::{ApiError, ApiState, bad_request, query_error};

/// Most bytes of log lines read for one answer (before following), shared by its replicas.
pub(crate) const MAX_LOG_ANSWER_BYTES: usize = 4 << 20;
/// Most log answers read and sent at once (each holds up to [`MAX_LOG_ANSWER_BYTES`] until its client
/// has it); more wait up to 10 s, then get 503.
pub(crate) const MAX_CONCURRENT_LOG_ANSWERS: usize = 4;
pub(crate) static LOG_ANSWERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_LOG_ANSWERS);
/// Largest compiled `grep` expression.
const MAX_GREP_REGEX_BYTES: usize = 1 << 20;

/// Where the mined templates come from (the log stage), by service name.
pub type PatternSource = std::sync::Arc<dyn Fn(&str) -> Option<Vec<mend_logs::Pattern>> + Send + Sync>;

/// Waits for a log-answer slot.
pub(crate) async fn answer_slot() -> Result<tokio::sync::SemaphorePermit<'static>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(10), LOG_ANSWERS.acquire()).await {
        Ok(Ok(slot)) => Ok(slot),
        _ => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_CONCURRENT_LOG_ANSWERS} log answers are being sent: try again later"),
        )),
    }
}

/// Complete lines out of appended bytes: a follower may read a line half written.
#[derive(Default)]
pub(crate) struct Lines {
    carry: Vec<u8>,
}

impl Lines {
    /// Appends `bytes` and calls `each` on every complete line (with its newline).
    pub(crate) fn push(&mut self, bytes: &[u8], mut each: impl FnMut(&[u8])) {
        self.carry.extend_from_slice(bytes);
        let Some(last_newline) = self.carry.iter().rposition(|&b| b == b'\n') else {
            // A line longer than any mend writes is passed on rather than held without bound.
            if self.carry.len() > 2 * logs::MAX_LINE_BYTES {
                each(&std::mem::take(&mut self.carry));
            }
            return;
        };
        for line in self.carry[..=last_newline].split_inclusive(|&b| b == b'\n') {
            each(line);
        }
        self.carry.drain(..=last_newline);
    }
}

/// Which lines an answer keeps.
struct LineFilter {
    since: Option<Timestamp>,
    level: Option<Level>,
    grep: Option<regex::bytes::Regex>,
}

impl LineFilter {
    fn is_empty(&self) -> bool {
        self.since.is_none() && self.level.is_none() && self.grep.is_none()
    }

    fn keeps(&self, at: Option<Timestamp>, body: &[u8]) -> bool {
        if let Some(since) = self.since
            && at.is_none_or(|at| at < since)
        {
            return false;
        }
        if let Some(level) = self.level
            && split_line(&String::from_utf8_lossy(body)).0 < level
        {
            return false;
        }
        self.grep.as_ref().is_none_or(|grep| grep.is_match(body))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AggregateParams {
    /// Services, comma-separated; none: every service.
    service: Option<String>,
    replica: Option<u32>,
    tail: Option<usize>,
    follow: Option<bool>,
    grep: Option<String>,
    level: Option<String>,
    since: Option<String>,
}

/// One replica's log.
#[derive(Clone)]
struct Source {
    label: String,
    dir: PathBuf,
    index: u32,
}

/// A kept line: its time, the source's position and the line's order within its source.
struct Kept {
    at: Option<Timestamp>,
    source_idx: usize,
    seq: usize,
    body: Vec<u8>,
}

fn format_line(out: &mut Vec<u8>, at: Option<Timestamp>, label: &str, body: &[u8]) {
    match at {
        Some(at) => out.extend_from_slice(at.to_string().as_bytes()),
        // A line stored before mend kept times: as wide as a time, so columns stay aligned.
        None => out.extend_from_slice(b"-                       "),
    }
    out.push(b' ');
    out.extend_from_slice(label.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out.push(b'\n');
}

/// `GET /api/v1/logs`.
pub(crate) async fn aggregate(
    State(state): State<ApiState>,
    query: Result<Query<AggregateParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    let names: Vec<String> = match &params.service {
        Some(list) => list.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect(),
        None => state.supervisor.services().iter().map(|service| service.config().name.as_str().to_owned()).collect(),
    };
    let mut sources = Vec::new();
    for name in &names {
        let service = state.supervisor.service(name).ok_or_else(|| ControlError::UnknownService(name.clone()))?;
        let total = service.config().total_replicas();
        let dir = service.config().log_dir(&state.state_dir);
        let indexes: Vec<u32> = match params.replica {
            Some(index) if index < total => vec![index],
            Some(index) => return Err(ControlError::UnknownReplica { service: name.clone(), index }.into()),
            None => (0..total).collect(),
        };
        sources.extend(indexes.into_iter().map(|index| Source {
            label: format!("{name}/{index}"),
            dir: dir.clone(),
            index,
        }));
    }
    let filter = LineFilter {
        since: params.since.as_deref().map(|text| crate::routes::parse_since(text, state.clock.wall())).transpose()?,
        level: params
            .level
            .as_deref()
            .map(|word| {
                Level::parse_word(word).ok_or_else(|| {
                    bad_request(format!("invalid level {word:?}: allowed trace, debug, info, warn, error, fatal"))
                })
            })
            .transpose()?,
        grep: params
            .grep
            .as_deref()
            .map(|pattern| {
                regex::bytes::RegexBuilder::new(pattern)
                    .size_limit(MAX_GREP_REGEX_BYTES)
                    .build()
                    .map_err(|error| bad_request(format!("invalid grep {pattern:?}: {error}")))
            })
            .transpose()?,
    };
    let tail = params.tail.unwrap_or(100).min(100_000);
    let cursors: Vec<LogCursor> = sources.iter().map(|source| LogCursor::at_end(&source.dir, source.index)).collect();
    let slot = answer_slot().await?;
    let filter = std::sync::Arc::new(filter);
    let read = {
        let (sources, filter) = (sources.clone(), filter.clone());
        tokio::task::spawn_blocking(move || read_tails(&sources, &filter, tail))
    };
    let first = read.await.unwrap_or_else(|_| b"[mend: cannot read the logs]\n".to_vec());
    drop(slot);
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))];
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(first)) });
    if !params.follow.unwrap_or(false) {
        return Ok((content_type, Body::from_stream(first)).into_response());
    }
    let follow = follow(sources, cursors, filter, state.closing.clone());
    Ok((content_type, Body::from_stream(first.chain(follow))).into_response())
}

/// The last `tail` kept lines of every source, in time order, within the byte budget.
fn read_tails(sources: &[Source], filter: &LineFilter, tail: usize) -> Vec<u8> {
    let per_source = (MAX_LOG_ANSWER_BYTES / sources.len().max(1)) as u64;
    // Without a filter, the last `tail` lines of each source are enough; with one, read the whole budget.
    let n_lines = if filter.is_empty() { tail } else { usize::MAX };
    let mut kept: Vec<Kept> = Vec::new();
    let mut notes = Vec::new();
    for (source_idx, source) in sources.iter().enumerate() {
        match logs::tail_bytes(&source.dir, source.index, n_lines, per_source) {
            Ok((bytes, cut_short)) => {
                if cut_short && !filter.is_empty() {
                    notes.push(format!(
                        "[mend: {}: only the last {per_source} bytes of its log were searched]\n",
                        source.label
                    ));
                }
                for (seq, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
                    let record = parse_record(line);
                    if filter.keeps(record.at, record.body) {
                        kept.push(Kept { at: record.at, source_idx, seq, body: record.body.to_vec() });
                    }
                }
            }
            Err(error) => notes.push(format!("[mend: cannot read the logs of {}: {error}]\n", source.label)),
        }
    }
    kept.sort_by(|a, b| a.at.cmp(&b.at).then(a.source_idx.cmp(&b.source_idx)).then(a.seq.cmp(&b.seq)));
    let skip = kept.len().saturating_sub(tail);
    let mut out: Vec<u8> = notes.concat().into_bytes();
    for line in &kept[skip..] {
        format_line(&mut out, line.at, &sources[line.source_idx].label, &line.body);
    }
    out
}

fn follow(
    sources: Vec<Source>,
    cursors: Vec<LogCursor>,
    filter: std::sync::Arc<LineFilter>,
    closing: tokio::sync::watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let lines: Vec<Lines> = sources.iter().map(|_| Lines::default()).collect();
    futures_util::stream::unfold((cursors, lines, closing), move |(mut cursors, mut lines, mut closing)| {
        let sources = sources.clone();
        let filter = filter.clone();
        async move {
            loop {
                // Read once more after the API begins to close, then end.
                let last_round = *closing.borrow();
                let mut batch: Vec<Kept> = Vec::new();
                for (source_idx, source) in sources.iter().enumerate() {
                    let Ok((bytes, next)) = logs::read_from(&source.dir, source.index, cursors[source_idx]) else {
                        continue;
                    };
                    cursors[source_idx] = next;
                    let mut seq = 0;
                    lines[source_idx].push(&bytes, |line| {
                        let record = parse_record(line);
                        if filter.keeps(record.at, record.body) {
                            batch.push(Kept { at: record.at, source_idx, seq, body: record.body.to_vec() });
                        }
                        seq += 1;
                    });
                }
                if !batch.is_empty() {
                    batch.sort_by(|a, b| a.at.cmp(&b.at).then(a.source_idx.cmp(&b.source_idx)).then(a.seq.cmp(&b.seq)));
                    let mut out = Vec::new();
                    for line in &batch {
                        format_line(&mut out, line.at, &sources[line.source_idx].label, &line.body);
                    }
                    return Some((Ok(bytes::Bytes::from(out)), (cursors, lines, closing)));
                }
                if last_round {
                    return None;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = closing.wait_for(|closing| *closing) => {}
                }
            }
        }
    })
}

/// One mined template on the wire.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct PatternDto {
    /// Its id within the service (the `template_id` label of `mend_log_template_total`).
    pub id: u32,
    /// Its text, `<*>` for variables.
    pub template: String,
    /// The most severe level it was seen at.
    pub level: String,
    /// Lines that matched it.
    pub count: u64,
    /// Lines per level.
    pub counts: HashMap<String, u64>,
    /// The first line that made it.
    pub example: String,
    /// When it was first seen.
    pub first_seen: Timestamp,
    /// When it was last seen.
    pub last_seen: Timestamp,
}

/// `GET /api/v1/services/{name}/log-patterns`.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct PatternsDto {
    /// The service.
    pub service: String,
    /// Its templates, most frequent first.
    pub patterns: Vec<PatternDto>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PatternParams {
    limit: Option<usize>,
}

pub(crate) async fn patterns(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<PatternParams>, QueryRejection>,
) -> Result<Json<PatternsDto>, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    state.supervisor.service(&name).ok_or_else(|| ControlError::UnknownService(name.clone()))?;
    let limit = params.limit.unwrap_or(1000).min(10_000);
    let found = (state.log_patterns)(&name).unwrap_or_default();
    let patterns = found
        .into_iter()
        .take(limit)
        .map(|pattern| PatternDto {
            id: pattern.id.0,
            template: pattern.template,
            level: pattern.level.as_str().to_owned(),
            count: pattern.count,
            counts: pattern.counts.iter().map(|(level, count)| (level.as_str().to_owned(), *count)).collect(),
            example: pattern.example,
            first_seen: pattern.first_seen,
            last_seen: pattern.last_seen,
        })
        .collect();
    Ok(Json(PatternsDto { service: name, patterns }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_passed_on_only_once_complete() {
        let mut lines = Lines::default();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        lines.push(b"2026-01-01T00:00:00.000Z std", |line| seen.push(line.to_vec()));
        assert!(seen.is_empty());
        lines.push(b"out F one\ntwo\nthr", |line| seen.push(line.to_vec()));
        assert_eq!(seen, vec![b"2026-01-01T00:00:00.000Z stdout F one\n".to_vec(), b"two\n".to_vec()]);
    }

    #[test]
    fn filters_by_time_level_and_expression() {
        let filter = LineFilter {
            since: Timestamp::parse("2026-01-01T00:00:10Z"),
            level: Some(Level::Warn),
            grep: Some(regex::bytes::Regex::new("refused").expect("valid")),
        };
        let at = Timestamp::parse("2026-01-01T00:00:11Z");
        assert!(filter.keeps(at, b"ERROR connection refused"));
        assert!(!filter.keeps(at, b"INFO connection refused"), "below the level");
        assert!(!filter.keeps(at, b"ERROR timeout"), "no match");
        assert!(!filter.keeps(Timestamp::parse("2026-01-01T00:00:09Z"), b"ERROR connection refused"), "too early");
        assert!(!filter.keeps(None, b"ERROR connection refused"), "no time: not known to be recent");
    }
}
