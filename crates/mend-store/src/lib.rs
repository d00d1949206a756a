//! mend's event store: every lifecycle event in an embedded SQLite file.
//!
//! - One writer thread owns the write connection and commits queued events in batches; producers never
//!   block (a full queue drops the event and counts it).
//! - WAL mode with `synchronous = NORMAL`: a committed event survives `kill -9` of mend (the WAL is in the
//!   page cache, which outlives the process); readers never block the writer.
//! - The schema is versioned with `PRAGMA user_version` and migrated forward at open; a database from a
//!   newer mend is refused rather than damaged.
//! - Retention is bounded by age and row count.
//!
//! This is the only crate that speaks SQL.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use learn::Snapshot;

mod learn;

use mend_types::{
    ActionId, ActionOutcome, ActionRecord, ActionState, Event, EventKind, EventSink, Incident, IncidentId,
    IncidentState, ReleaseHistoryEntry, ServiceName, ServiceReleases, Severity, Signal, SignalKind, SignalSink,
    SignalState, TimelineEntry, Timestamp,
};
use rusqlite::{Connection, OptionalExtension, params};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the event store at {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
    /// The file was written by a newer mend.
    #[error("the event store at {path} has schema version {found}, newer than the {supported} this mend supports")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// A migration failed.
    #[error("cannot migrate the event store at {path} to schema version {version}")]
    Migrate {
        /// The file.
        path: PathBuf,
        /// The version being applied.
        version: i64,
        /// Cause.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("event store query failed")]
    Query(#[from] rusqlite::Error),
    /// The writer thread is gone.
    #[error("the event store writer has stopped")]
    WriterGone,
    /// The action journal could not be committed.
    #[error("cannot commit the action journal: {0}")]
    Journal(String),
}

/// Schema migrations, applied in order; `user_version` counts how many have been applied.
const MIGRATIONS: &[&str] = &[
    // 1: events.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        service TEXT,
        replica INTEGER,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_at ON events(at_ms);
    CREATE INDEX events_service_id ON events(service, id);",
    // 2: signals (firing and resolved transitions of rules, anomalies, forecasts and external alerts).
    "CREATE TABLE signals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        since_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        severity TEXT NOT NULL,
        service TEXT,
        replica INTEGER,
        value REAL,
        labels TEXT NOT NULL DEFAULT '{}',
        evidence TEXT NOT NULL DEFAULT '',
        fingerprint TEXT NOT NULL
    );
    CREATE INDEX signals_at ON signals(at_ms);
    CREATE INDEX signals_fingerprint_id ON signals(fingerprint, id);",
    // 3: the action journal: incidents and actions, each row the latest state of one (its JSON document),
    // written through the acknowledged path (`Store::journal`), never shed.
    "CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        opened_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX incidents_updated ON incidents(updated_ms);
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY,
        incident INTEGER,
        requested_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX actions_incident ON actions(incident, id);
    CREATE INDEX actions_state ON actions(state);",
    // 4: learning: each policy action's outcome (one row per action, its JSON document), and snapshots of
    // learnt state (detector state, sensitivities), each a versioned document under a key.
    "CREATE TABLE outcomes (
        action INTEGER PRIMARY KEY,
        incident INTEGER NOT NULL,
        decided_ms INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        service TEXT,
        kind TEXT NOT NULL,
        verdict TEXT NOT NULL,
        recover_ms INTEGER,
        body TEXT NOT NULL
    );
    CREATE INDEX outcomes_service ON outcomes(service);
    CREATE TABLE learnt (
        key TEXT PRIMARY KEY,
        service TEXT,
        version INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );",
    // 5: releases: each service's stable and last good release and its rollout (the latest state, one
    // JSON document), and the history of its releases. New tables only: existing rows are untouched.
    "CREATE TABLE service_releases (
        service TEXT PRIMARY KEY,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE release_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        service TEXT NOT NULL,
        release TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        change TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX release_history_service_id ON release_history(service, id);",
];

/// One entry of the action journal: the new state of an incident or an action.
#[derive(Debug, Clone, PartialEq)]
pub enum JournalEntry {
    /// An incident as it is now.
    Incident(Box<Incident>),
    /// An action as it is now.
    Action(Box<ActionRecord>),
    /// How a policy's action turned out.
    Outcome(Box<ActionOutcome>),
    /// A snapshot of learnt state, replacing the one under its key.
    Learnt(Box<Snapshot>),
    /// Forgets what was learnt (outcomes and snapshots) about a service, or everything.
    Forget(Option<ServiceName>),
    /// A service's releases (stable, last good, rollout) as they are now.
    Releases(Box<ServiceReleases>),
    /// A new row of a service's release history.
    ReleaseHistory(Box<ReleaseHistoryEntry>),
}

/// How long events are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events older than this are deleted.
    pub max_age: Duration,
    /// At most this many events are kept (the oldest go first).
    pub max_events: u64,
    /// At most this many transitions of external signals (Alertmanager's alerts, which any client of
    /// the webhook can send) are kept: resolved ones go first, the oldest first.
    pub max_external_signals: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(14 * 86_400), max_events: 1_000_000, max_external_signals: 100_000 }
    }
}

/// A stored event with its id (ids increase in commit order, so `after` pages through them).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Row id.
    pub id: i64,
    /// The event.
    pub event: Event,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this service's events.
    pub service: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events with an id greater than this (for following).
    pub after_id: Option<i64>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<EventKind>,
    /// At most this many: the newest ones, returned oldest first.
    pub limit: usize,
}

/// Completes a listing query: the service, since and after filters, then the page. Without `after`, the
/// newest `limit` rows, oldest first for reading; when following (`after`), the oldest `limit` rows after
/// it, so that a burst is paged through rather than skipped.
fn page(
    mut sql: String,
    values: &mut Vec<rusqlite::types::Value>,
    service: Option<&str>,
    since: Option<Timestamp>,
    after_id: Option<i64>,
    limit: usize,
) -> String {
    if let Some(service) = service {
        sql.push_str(" AND service = ?");
        values.push(service.to_owned().into());
    }
    if let Some(since) = since {
        sql.push_str(" AND at_ms >= ?");
        values.push(since.as_millis().into());
    }
    if let Some(after_id) = after_id {
        sql.push_str(" AND id > ?");
        values.push(after_id.into());
    }
    values.push((limit.min(i64::MAX as usize) as i64).into());
    if after_id.is_some() {
        format!("{sql} ORDER BY id ASC LIMIT ?")
    } else {
        format!("SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id ASC")
    }
}

/// One page of a listing, and where a reader that follows it goes on from.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows, oldest first.
    pub items: Vec<T>,
    /// Pass it as the next query's `after_id` to read only what comes next. Every row up to it that
    /// matched is in this page (or, when following, in an earlier one), so a follower that goes on from
    /// here neither repeats a row nor replays older history, even when nothing matched: the newest id of
    /// the table when the page was read (0 when empty), or, when a following page is full, its last
    /// row's id (the rest comes with the next page).
    pub next_after: i64,
}

/// Where a follower goes on from after a page (see [`Page::next_after`]): `n_rows` rows were read,
/// the last with id `last_row`, from a table whose newest id was `newest`.
fn next_after(following: bool, limit: usize, n_rows: usize, last_row: Option<i64>, newest: i64) -> i64 {
    match last_row {
        Some(last_row) if following && n_rows >= limit => last_row,
        _ => newest,
    }
}

/// A stored signal transition with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSignal {
    /// Row id (increasing).
    pub id: i64,
    /// The transition.
    pub signal: Signal,
}

/// Which signals to read.
#[derive(Debug, Clone, Default)]
pub struct SignalQuery {
    /// Only the latest transition of conditions that are firing now.
    pub active_only: bool,
    /// Only this service's.
    pub service: Option<String>,
    /// Only at or after this time.
    pub since: Option<Timestamp>,
    /// Only with an id greater than this.
    pub after_id: Option<i64>,
    /// At most this many (the newest), oldest first.
    pub limit: usize,
}

/// Where the writer says whether a journal write was committed.
type JournalAck = SyncSender<Result<(), String>>;

enum Message {
    /// Boxed, so that the queue's blocks stay small.
    Event(Box<Event>),
    Signal(Box<Signal>),
    Flush(SyncSender<()>),
    /// Journal entries, committed at once and acknowledged (never dropped).
    Journal(Vec<JournalEntry>, JournalAck),
    /// Commit what is queued and stop; sinks that outlive the store then count their events as dropped.
    Close(SyncSender<()>),
}

/// Bound of the writer's queue: far more than a busy mend emits while one batch commits. The channel
/// allocates as messages arrive (a bounded channel would allocate, and touch, every slot up front:
/// half a megabyte of an idle mend's memory), so the bound is counted here.
const QUEUE_CAPACITY: usize = 16_384;

/// The writer's queue: unbounded underneath, bounded by a count of queued events and signals.
#[derive(Clone)]
struct Queue {
    sender: Sender<Message>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// Queues an event or signal unless the queue is full or the writer gone; never blocks.
    fn offer(&self, message: Message) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= QUEUE_CAPACITY {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if self.sender.send(message).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues a control message (flush, close), which does not count against the bound.
    fn control(&self, message: Message) -> Result<(), StoreError> {
        self.sender.send(message).map_err(|_| StoreError::WriterGone)
    }
}

/// The event store.
pub struct Store {
    path: PathBuf,
    queue: Queue,
    reader: Mutex<Connection>,
    dropped: Arc<AtomicU64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Makes the database file 0600 whatever the umask, before SQLite opens it: a new one is created so
/// (exclusively: nothing planted is followed), and SQLite gives its `-wal` and `-shm` files the
/// database's mode. Files of an older mend (0644 under the usual umask) are tightened, if they are
/// regular files.
fn restrict_to_owner(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if std::fs::symlink_metadata(file).is_ok_and(|meta| meta.is_file()) {
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
        }
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let open = |source| StoreError::Open { path: path.to_path_buf(), source };
    // Never through a symlink planted in the state directory.
    let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let connection = Connection::open_with_flags(path, flags).map_err(open)?;
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .map_err(open)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|source| StoreError::Open { path: path.to_path_buf(), source })?;
    if found > supported {
        return Err(StoreError::TooNew { path: path.to_path_buf(), found, supported });
    }
    for (idx, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = idx as i64 + 1;
        let failed = |source| StoreError::Migrate { path: path.to_path_buf(), version, source };
        let transaction = connection.transaction().map_err(failed)?;
        transaction.execute_batch(migration).map_err(failed)?;
        transaction.pragma_update(None, "user_version", version).map_err(failed)?;
        transaction.commit().map_err(failed)?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating and migrating) the store at `path` and starts its writer thread.
    pub fn open(path: &Path, retention: Retention) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        restrict_to_owner(path);
        let mut writer_connection = connect(path)?;
        migrate(&mut writer_connection, path)?;
        let reader = connect(path)?;
        let (sender, inbox) = mpsc::channel();
        let queue = Queue { sender, queued: Arc::new(AtomicUsize::new(0)) };
        let writer_queued = queue.queued.clone();
        let dropped = Arc::new(AtomicU64::new(0));
        let writer_dropped = dropped.clone();
        let writer = std::thread::Builder::new()
            .name("mend-store".into())
            .spawn(move || write_loop(writer_connection, inbox, &writer_queued, retention, &writer_dropped))
            .map_err(|error| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(error)),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            queue,
            reader: Mutex::new(reader),
            dropped,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A non-blocking sink that queues events for the writer.
    pub fn sink(&self) -> Arc<dyn EventSink> {
        Arc::new(StoreSink { queue: self.queue.clone(), dropped: self.dropped.clone() })
    }

    /// A non-blocking sink that queues signals for the writer.
    pub fn signal_sink(&self) -> Arc<dyn SignalSink> {
        Arc::new(StoreSink { queue: self.queue.clone(), dropped: self.dropped.clone() })
    }

    /// Events and signals dropped because the writer's queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Commits `entries` to the action journal and returns once they are on disk (in the WAL: they
    /// survive `kill -9` of mend). Never dropped for load: the journal does not go through the event
    /// queue's bound. Blocking: call from a blocking context.
    pub fn journal(&self, entries: Vec<JournalEntry>) -> Result<(), StoreError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.queue.control(Message::Journal(entries, done))?;
        match wait.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::Journal(message)),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// The highest incident and action ids journalled so far (0 when none): ids go on from there.
    pub fn journal_ids(&self) -> Result<(u64, u64), StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let incident: i64 = connection.query_row("SELECT COALESCE(MAX(id), 0) FROM incidents", [], |row| row.get(0))?;
        let action: i64 = connection.query_row("SELECT COALESCE(MAX(id), 0) FROM actions", [], |row| row.get(0))?;
        Ok((incident.max(0) as u64, action.max(0) as u64))
    }

    /// What is stored about `service`'s releases (None before its first rollout or stable record).
    pub fn service_releases(&self, service: &str) -> Result<Option<ServiceReleases>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let body: Option<String> = connection
            .query_row("SELECT body FROM service_releases WHERE service = ?1", params![service], |row| row.get(0))
            .optional()?;
        // A row this mend cannot read (from a newer one) counts as none, not as an error.
        Ok(body.and_then(|body| serde_json::from_str(&body).ok()))
    }

    /// The release history of `service`, newest first, at most `limit` rows.
    pub fn release_history(&self, service: &str, limit: usize) -> Result<Vec<ReleaseHistoryEntry>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let mut statement = connection
            .prepare_cached("SELECT body FROM release_history WHERE service = ?1 ORDER BY id DESC LIMIT ?2")?;
        let rows = statement
            .query_map(params![service, limit.min(i64::MAX as usize) as i64], |row| row.get::<_, String>(0))?;
        let mut history = Vec::new();
        for body in rows {
            if let Ok(entry) = serde_json::from_str(&body?) {
                history.push(entry);
            }
        }
        Ok(history)
    }

    /// Incidents, newest first: at most `limit`, only those still open with `open_only`.
    pub fn incidents(&self, limit: usize, open_only: bool) -> Result<Vec<Incident>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let sql = if open_only {
            "SELECT body FROM incidents WHERE state NOT IN ('resolved', 'escalated') ORDER BY id DESC LIMIT ?1"
        } else {
            "SELECT body FROM incidents ORDER BY id DESC LIMIT ?1"
        };
        let mut statement = connection.prepare_cached(sql)?;
        let rows = statement.query_map(params![limit.min(i64::MAX as usize) as i64], |row| row.get::<_, String>(0))?;
        let mut incidents = Vec::new();
        for body in rows {
            // A row this mend cannot read (from a newer one) is skipped, not fatal.
            if let Ok(incident) = serde_json::from_str(&body?) {
                incidents.push(incident);
            }
        }
        Ok(incidents)
    }

    /// The incident `id`, with its actions in order.
    pub fn incident(&self, id: IncidentId) -> Result<Option<(Incident, Vec<ActionRecord>)>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let body: Option<String> = connection
            .query_row("SELECT body FROM incidents WHERE id = ?1", params![id.0 as i64], |row| row.get(0))
            .optional()?;
        let Some(incident) = body.and_then(|body| serde_json::from_str::<Incident>(&body).ok()) else {
            return Ok(None);
        };
        let mut statement = connection.prepare_cached("SELECT body FROM actions WHERE incident = ?1 ORDER BY id")?;
        let rows = statement.query_map(params![id.0 as i64], |row| row.get::<_, String>(0))?;
        let mut actions = Vec::new();
        for body in rows {
            if let Ok(action) = serde_json::from_str(&body?) {
                actions.push(action);
            }
        }
        Ok(Some((incident, actions)))
    }

    /// Actions, newest first (at most `limit`); only pending or running ones with `open_only`.
    pub fn actions(&self, limit: usize, open_only: bool) -> Result<Vec<ActionRecord>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let sql = if open_only {
            "SELECT body FROM actions WHERE state IN ('pending', 'running') ORDER BY id DESC LIMIT ?1"
        } else {
            "SELECT body FROM actions ORDER BY id DESC LIMIT ?1"
        };
        let mut statement = connection.prepare_cached(sql)?;
        let rows = statement.query_map(params![limit.min(i64::MAX as usize) as i64], |row| row.get::<_, String>(0))?;
        let mut actions = Vec::new();
        for body in rows {
            if let Ok(action) = serde_json::from_str(&body?) {
                actions.push(action);
            }
        }
        Ok(actions)
    }

    /// The action `id`.
    pub fn action(&self, id: ActionId) -> Result<Option<ActionRecord>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let body: Option<String> = connection
            .query_row("SELECT body FROM actions WHERE id = ?1", params![id.0 as i64], |row| row.get(0))
            .optional()?;
        Ok(body.and_then(|body| serde_json::from_str(&body).ok()))
    }

    /// At start-up: what the last run left open is closed, journalled and returned. Its incidents are
    /// escalated (their conditions are evaluated afresh: a fault that goes on opens a new incident) and
    /// its pending or running actions are `interrupted` (how a running one ended is not known).
    pub fn close_interrupted(&self, now: Timestamp) -> Result<(Vec<Incident>, Vec<ActionRecord>), StoreError> {
        let mut actions = self.actions(10_000, true)?;
        for action in &mut actions {
            action.state = ActionState::Interrupted;
            action.finished_at = Some(now);
            action.outcome = Some("mend stopped before it ended: how it ended is not known".to_owned());
        }
        let mut incidents = self.incidents(10_000, true)?;
        for incident in &mut incidents {
            incident.state = IncidentState::Escalated;
            incident.closed_at = Some(now);
            incident.updated_at = now;
            incident.timeline.push(TimelineEntry {
                at: now,
                state: IncidentState::Escalated,
                note: "escalated: mend restarted while it was open; its conditions are evaluated afresh".to_owned(),
            });
        }
        let entries = actions
            .iter()
            .map(|a| JournalEntry::Action(Box::new(a.clone())))
            .chain(incidents.iter().map(|i| JournalEntry::Incident(Box::new(i.clone()))))
            .collect::<Vec<_>>();
        if !entries.is_empty() {
            self.journal(entries)?;
        }
        Ok((incidents, actions))
    }

    /// Waits until every event queued so far is committed.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.queue.control(Message::Flush(done))?;
        wait.recv().map_err(|_| StoreError::WriterGone)
    }

    /// Reads events (blocking; call from a blocking context).
    pub fn events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.events_page(query).map(|page| page.items)
    }

    /// Reads events with where to follow on from (blocking). The page and its cursor come from one
    /// snapshot of the database.
    pub fn events_page(&self, query: &EventQuery) -> Result<Page<StoredEvent>, StoreError> {
        let mut connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let snapshot = connection.transaction()?;
        let newest: i64 = snapshot.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |row| row.get(0))?;
        let mut sql =
            String::from("SELECT id, at_ms, service, replica, kind, message, details FROM events WHERE 1 = 1");
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if !query.kinds.is_empty() {
            sql.push_str(" AND kind IN (");
            for (idx, kind) in query.kinds.iter().enumerate() {
                sql.push_str(if idx == 0 { "?" } else { ", ?" });
                values.push(kind.as_str().to_owned().into());
            }
            sql.push(')');
        }
        let sql = page(sql, &mut values, query.service.as_deref(), query.since, query.after_id, query.limit);
        let mut statement = snapshot.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
            let kind: String = row.get(4)?;
            let details: String = row.get(6)?;
            let service: Option<String> = row.get(2)?;
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                service,
                row.get::<_, Option<u32>>(3)?,
                kind,
                row.get::<_, String>(5)?,
                details,
            ))
        })?;
        let mut events = Vec::new();
        let (mut n_rows, mut last_row) = (0, None);
        for row in rows {
            let (id, at_ms, service, replica, kind, message, details) = row?;
            (n_rows, last_row) = (n_rows + 1, Some(id));
            // Rows this mend cannot interpret (a kind from a newer version) are skipped, not fatal.
            let Some(kind) = EventKind::parse(&kind) else { continue };
            let details = serde_json::from_str(&details).unwrap_or_default();
            let service = service.and_then(|name| ServiceName::new(&name).ok());
            let event = Event { at: Timestamp::from_millis(at_ms), service, replica, kind, message, details };
            events.push(StoredEvent { id, event });
        }
        let next_after = next_after(query.after_id.is_some(), query.limit, n_rows, last_row, newest);
        Ok(Page { items: events, next_after })
    }

    /// Reads signal transitions (blocking). With `active_only`, returns for each condition whose latest
    /// transition is `firing` that transition.
    pub fn signals(&self, query: &SignalQuery) -> Result<Vec<StoredSignal>, StoreError> {
        self.signals_page(query).map(|page| page.items)
    }

    /// Reads signal transitions with where to follow on from (blocking); one snapshot, as
    /// [`Store::events_page`].
    pub fn signals_page(&self, query: &SignalQuery) -> Result<Page<StoredSignal>, StoreError> {
        let mut connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let snapshot = connection.transaction()?;
        let newest: i64 = snapshot.query_row("SELECT COALESCE(MAX(id), 0) FROM signals", [], |row| row.get(0))?;
        let mut sql = String::from(
            "SELECT id, at_ms, since_ms, state, kind, name, severity, service, replica, value, labels, evidence FROM signals s WHERE 1 = 1",
        );
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if query.active_only {
            sql.push_str(
                " AND s.state = 'firing' AND s.id = (SELECT MAX(id) FROM signals t WHERE t.fingerprint = s.fingerprint)",
            );
        }
        let sql = page(sql, &mut values, query.service.as_deref(), query.since, query.after_id, query.limit);
        let mut statement = snapshot.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, String>(6)?,
                row.get::<_, Option<String>>(7)?,
                row.get::<_, Option<u32>>(8)?,
                row.get::<_, Option<f64>>(9)?,
                row.get::<_, String>(10)?,
                row.get::<_, String>(11)?,
            ))
        })?;
        let mut signals = Vec::new();
        let (mut n_rows, mut last_row) = (0, None);
        for row in rows {
            let (id, at_ms, since_ms, state, kind, name, severity, service, replica, value, labels, evidence) = row?;
            (n_rows, last_row) = (n_rows + 1, Some(id));
            let state = match state.as_str() {
                "firing" => SignalState::Firing,
                "resolved" => SignalState::Resolved,
                _ => continue,
            };
            let Some(kind) = SignalKind::parse(&kind) else { continue };
            let signal = Signal {
                at: Timestamp::from_millis(at_ms),
                since: Timestamp::from_millis(since_ms),
                state,
                kind,
                name,
                severity: Severity::parse(&severity).unwrap_or_default(),
                service: service.and_then(|name| ServiceName::new(&name).ok()),
                replica,
                value: value.unwrap_or(f64::NAN),
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                evidence,
            };
            signals.push(StoredSignal { id, signal });
        }
        let next_after = next_after(query.after_id.is_some(), query.limit, n_rows, last_row, newest);
        Ok(Page { items: signals, next_after })
    }

    /// The id of the newest event, if any.
    pub fn last_id(&self) -> Result<Option<i64>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        Ok(connection.query_row("SELECT MAX(id) FROM events", [], |row| row.get(0)).optional()?.flatten())
    }

    /// Commits everything queued and stops the writer thread; reads keep working. Closing twice is
    /// harmless.
    pub fn close(&self) -> Result<(), StoreError> {
        let Some(writer) = self.writer.lock().map_err(|_| StoreError::WriterGone)?.take() else { return Ok(()) };
        let (done, wait) = mpsc::sync_channel(1);
        self.queue.control(Message::Close(done))?;
        let closed = wait.recv().map_err(|_| StoreError::WriterGone);
        let _ = writer.join();
        closed
    }
}

struct StoreSink {
    queue: Queue,
    dropped: Arc<AtomicU64>,
}

impl SignalSink for StoreSink {
    fn signal(&self, signal: Signal) {
        if !self.queue.offer(Message::Signal(Box::new(signal))) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl EventSink for StoreSink {
    fn emit(&self, event: Event) {
        if !self.queue.offer(Message::Event(Box::new(event))) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Most events committed in one transaction.
const MAX_BATCH: usize = 1024;

fn write_loop(
    mut connection: Connection,
    inbox: Receiver<Message>,
    queued: &AtomicUsize,
    retention: Retention,
    dropped: &AtomicU64,
) {
    let mut batch: Vec<Event> = Vec::with_capacity(MAX_BATCH);
    let mut signals: Vec<Signal> = Vec::new();
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    let mut journals: Vec<(Vec<JournalEntry>, JournalAck)> = Vec::new();
    let mut close: Option<SyncSender<()>> = None;
    let mut since_cleanup = 0_usize;
    loop {
        // Wait for work; wake up once a minute anyway to apply retention.
        let first = match inbox.recv_timeout(Duration::from_secs(60)) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let idle = first.is_none();
        let mut next = first;
        while let Some(message) = next.take() {
            match message {
                Message::Event(event) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    batch.push(*event);
                }
                Message::Signal(signal) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    signals.push(*signal);
                }
                Message::Flush(done) => flushes.push(done),
                Message::Journal(entries, done) => journals.push((entries, done)),
                Message::Close(done) => close = Some(done),
            }
            if batch.len() + signals.len() < MAX_BATCH && close.is_none() {
                next = inbox.try_recv().ok();
            }
        }
        if !batch.is_empty() || !signals.is_empty() {
            if let Err(error) = insert(&mut connection, &batch, &signals) {
                // A full disk or an IO error: the batch is lost, and counted as such.
                dropped.fetch_add((batch.len() + signals.len()) as u64, Ordering::Relaxed);
                tracing::error!(error = %error, n_events = batch.len(), n_signals = signals.len(), "cannot store events");
            }
            since_cleanup += batch.len() + signals.len();
            batch.clear();
            signals.clear();
        }
        for (entries, done) in journals.drain(..) {
            let result = write_journal(&mut connection, &entries).map_err(|error| {
                tracing::error!(error = %error, n_entries = entries.len(), "cannot commit the action journal");
                error.to_string()
            });
            let _ = done.send(result);
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if let Some(done) = close.take() {
            let _ = done.send(());
            return;
        }
        // Retention runs every 10k events, and whenever the store has been idle for a minute, so that an
        // old database shrinks even without new events.
        if since_cleanup >= 10_000 || idle {
            if let Err(error) =
                apply_retention(&connection, retention, mend_types::Clock::wall(&mend_types::SystemClock))
            {
                tracing::warn!(error = %error, "cannot apply event retention");
            }
            since_cleanup = 0;
        }
    }
}

fn insert(connection: &mut Connection, events: &[Event], signals: &[Signal]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut statement = transaction.prepare_cached(
            "INSERT INTO signals (at_ms, since_ms, state, kind, name, severity, service, replica, value, labels, evidence, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for signal in signals {
            let labels = serde_json::to_string(&signal.labels).unwrap_or_else(|_| "{}".to_owned());
            statement.execute(params![
                signal.at.as_millis(),
                signal.since.as_millis(),
                signal.state.as_str(),
                signal.kind.as_str(),
                signal.name,
                signal.severity.as_str(),
                signal.service.as_ref().map(ServiceName::as_str),
                signal.replica,
                // SQLite stores NaN as NULL; the reader maps NULL back to NaN.
                signal.value,
                labels,
                signal.evidence,
                signal.fingerprint(),
            ])?;
        }
    }
    {
        let mut statement = transaction.prepare_cached(
            "INSERT INTO events (at_ms, service, replica, kind, message, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for event in events {
            let details = serde_json::Value::Object(event.details.clone()).to_string();
            statement.execute(params![
                event.at.as_millis(),
                event.service.as_ref().map(ServiceName::as_str),
                event.replica,
                event.kind.as_str(),
                event.message,
                details
            ])?;
        }
    }
    transaction.commit()
}

fn write_journal(connection: &mut Connection, entries: &[JournalEntry]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    for entry in entries {
        let to_sql = |error: serde_json::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(error));
        match entry {
            JournalEntry::Incident(incident) => {
                let body = serde_json::to_string(incident).map_err(to_sql)?;
                transaction.execute(
                    "INSERT INTO incidents (id, opened_ms, updated_ms, state, body) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(id) DO UPDATE SET updated_ms = excluded.updated_ms, state = excluded.state, body = excluded.body",
                    params![
                        incident.id.0 as i64,
                        incident.opened_at.as_millis(),
                        incident.updated_at.as_millis(),
                        incident.state.as_str(),
                        body
                    ],
                )?;
            }
            JournalEntry::Action(action) => {
                let body = serde_json::to_string(action).map_err(to_sql)?;
                transaction.execute(
                    "INSERT INTO actions (id, incident, requested_ms, state, body) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(id) DO UPDATE SET state = excluded.state, body = excluded.body",
                    params![
                        action.id.0 as i64,
                        action.incident.map(|i| i.0 as i64),
                        action.requested_at.as_millis(),
                        action.state.as_str(),
                        body
                    ],
                )?;
            }
            JournalEntry::Outcome(outcome) => learn::write_outcome(&transaction, outcome)?,
            JournalEntry::Learnt(snapshot) => learn::write_snapshot(&transaction, snapshot)?,
            JournalEntry::Forget(service) => learn::forget(&transaction, service.as_ref())?,
            JournalEntry::Releases(releases) => {
                let body = serde_json::to_string(releases).map_err(to_sql)?;
                let updated = releases.rollout.as_ref().map_or(0, |rollout| rollout.since.as_millis());
                transaction.execute(
                    "INSERT INTO service_releases (service, updated_ms, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT(service) DO UPDATE SET updated_ms = excluded.updated_ms, body = excluded.body",
                    params![releases.service.as_str(), updated, body],
                )?;
            }
            JournalEntry::ReleaseHistory(entry) => {
                let body = serde_json::to_string(entry).map_err(to_sql)?;
                transaction.execute(
                    "INSERT INTO release_history (service, release, at_ms, change, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        entry.service.as_str(),
                        entry.release.as_str(),
                        entry.at.as_millis(),
                        entry.change.as_str(),
                        body
                    ],
                )?;
            }
        }
    }
    transaction.commit()
}

fn apply_retention(connection: &Connection, retention: Retention, now: Timestamp) -> rusqlite::Result<()> {
    // Age is measured from now, not from the newest row: one row stamped in the future by a clock jump
    // must not make every real row look old.
    let oldest_kept = now.as_millis().saturating_sub(i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX));
    connection.execute("DELETE FROM events WHERE at_ms < ?1", params![oldest_kept])?;
    connection.execute("DELETE FROM signals WHERE at_ms < ?1", params![oldest_kept])?;
    connection.execute(
        "DELETE FROM incidents WHERE updated_ms < ?1 AND state IN ('resolved', 'escalated')",
        params![oldest_kept],
    )?;
    connection.execute(
        "DELETE FROM actions WHERE requested_ms < ?1 AND state NOT IN ('pending', 'running')",
        params![oldest_kept],
    )?;
    let max_events = i64::try_from(retention.max_events).unwrap_or(i64::MAX);
    connection.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1", params![max_events])?;
    connection.execute("DELETE FROM signals WHERE id <= (SELECT MAX(id) FROM signals) - ?1", params![max_events])?;
    learn::apply_retention(connection)?;
    let max_external = i64::try_from(retention.max_external_signals).unwrap_or(i64::MAX);
    let evicted = connection.execute(
        "DELETE FROM signals WHERE id IN (SELECT id FROM signals WHERE kind = 'external' \
         ORDER BY state = 'firing', id \
         LIMIT max(0, (SELECT COUNT(*) FROM signals WHERE kind = 'external') - ?1))",
        params![max_external],
    )?;
    if evicted > 0 {
        tracing::warn!(
            evicted,
            limit = max_external,
            "too many external signals stored: evicted the oldest, resolved ones first"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: i64, service: &str, kind: EventKind) -> Event {
        let service = ServiceName::new(service).expect("valid name");
        Event::new(Timestamp::from_millis(at_ms), kind, format!("{kind} at {at_ms}"))
            .service(&service)
            .detail("pid", 42)
    }

    fn all(store: &Store) -> Vec<StoredEvent> {
        store.events(&EventQuery { limit: 1000, ..Default::default() }).expect("query")
    }

    #[test]
    fn the_queue_is_bounded_without_allocating_its_bound() {
        let (sender, inbox) = mpsc::channel();
        let queue = Queue { sender, queued: Arc::new(AtomicUsize::new(0)) };
        let sink = StoreSink { queue: queue.clone(), dropped: Arc::new(AtomicU64::new(0)) };
        for at in 0..QUEUE_CAPACITY + 10 {
            sink.emit(event(at as i64, "web", EventKind::Started));
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 10, "the overflow is dropped and counted");
        // Control messages still pass when the queue is full.
        let (done, _wait) = mpsc::sync_channel(1);
        assert!(queue.control(Message::Flush(done)).is_ok());
        // Once the writer takes an event, there is room again; a gone writer drops.
        let _ = inbox.recv();
        queue.queued.fetch_sub(1, Ordering::AcqRel);
        sink.emit(event(0, "web", EventKind::Started));
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 10);
        drop(inbox);
        queue.queued.store(0, Ordering::Relaxed);
        sink.emit(event(0, "web", EventKind::Started));
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 11);
        assert_eq!(queue.queued.load(Ordering::Relaxed), 0, "a failed send gives its place back");
    }

    #[test]
    fn stores_and_filters_events() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("mend.db"), Retention::default()).expect("open");
        let sink = store.sink();
        sink.emit(event(1_000, "web", EventKind::Started));
        sink.emit(event(2_000, "db", EventKind::Started));
        sink.emit(event(3_000, "web", EventKind::Exited));
        store.flush().expect("flush");
        let events = all(&store);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event, event(1_000, "web", EventKind::Started));
        let web =
            store.events(&EventQuery { service: Some("web".into()), limit: 10, ..Default::default() }).expect("query");
        assert_eq!(web.iter().map(|e| e.event.kind).collect::<Vec<_>>(), [EventKind::Started, EventKind::Exited]);
        let recent = store
            .events(&EventQuery { since: Some(Timestamp::from_millis(2_000)), limit: 10, ..Default::default() })
            .expect("query");
        assert_eq!(recent.len(), 2);
        let newest = store.events(&EventQuery { limit: 1, ..Default::default() }).expect("query");
        assert_eq!(newest[0].event.at.as_millis(), 3_000);
        let after =
            store.events(&EventQuery { after_id: Some(events[1].id), limit: 10, ..Default::default() }).expect("query");
        assert_eq!(after.len(), 1);
        let exits = store
            .events(&EventQuery { kinds: vec![EventKind::Exited], limit: 10, ..Default::default() })
            .expect("query");
        assert_eq!(exits.len(), 1);
        assert_eq!(store.last_id().expect("query"), Some(events[2].id));
    }

    #[test]
    fn a_page_says_where_a_follower_goes_on_from() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("mend.db"), Retention::default()).expect("open");
        let empty = store.events_page(&EventQuery { limit: 10, ..Default::default() }).expect("query");
        assert_eq!((empty.items.len(), empty.next_after), (0, 0));
        let sink = store.sink();
        sink.emit(event(1_000, "web", EventKind::Started));
        sink.emit(event(2_000, "db", EventKind::Started));
        sink.emit(event(3_000, "web", EventKind::Exited));
        store.flush().expect("flush");
        let ids: Vec<i64> = all(&store).iter().map(|e| e.id).collect();
        let page = |query: EventQuery| {
            let page = store.events_page(&query).expect("query");
            (page.items.iter().map(|e| e.id).collect::<Vec<_>>(), page.next_after)
        };
        // Nothing matched (yet): a follower starts after the newest row, never from the beginning.
        let since_later = EventQuery { since: Some(Timestamp::from_millis(10_000)), limit: 10, ..Default::default() };
        assert_eq!(page(since_later), (vec![], ids[2]));
        // The newest matching rows: the rows after them did not match, so the follower skips them too.
        assert_eq!(
            page(EventQuery { service: Some("db".into()), limit: 10, ..Default::default() }),
            (vec![ids[1]], ids[2])
        );
        // Following: a full page goes on from its last row (the rest is the next page), a partial one
        // from the newest row.
        assert_eq!(page(EventQuery { after_id: Some(ids[0]), limit: 1, ..Default::default() }), (vec![ids[1]], ids[1]));
        let web_after =
            EventQuery { service: Some("web".into()), after_id: Some(ids[0]), limit: 10, ..Default::default() };
        assert_eq!(page(web_after), (vec![ids[2]], ids[2]));
        let db_after =
            EventQuery { service: Some("db".into()), after_id: Some(ids[1]), limit: 1, ..Default::default() };
        assert_eq!(page(db_after), (vec![], ids[2]));
    }

    #[test]
    fn events_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mend.db");
        let store = Store::open(&path, Retention::default()).expect("open");
        store.sink().emit(event(1, "web", EventKind::GaveUp));
        store.close().expect("close");
        let store = Store::open(&path, Retention::default()).expect("reopen");
        assert_eq!(all(&store).len(), 1);
    }

    fn signal(at_ms: i64, name: &str, state: SignalState) -> Signal {
        Signal {
            at: Timestamp::from_millis(at_ms),
            since: Timestamp::from_millis(0),
            state,
            kind: SignalKind::Rule,
            name: name.to_owned(),
            severity: Severity::Critical,
            service: ServiceName::new("web").ok(),
            replica: Some(1),
            value: 0.5,
            labels: [("service".to_owned(), "web".to_owned())].into(),
            evidence: "errors above 10 %".into(),
        }
    }

    /// Issue 20: any client of the Alertmanager webhook could store any number of distinct alerts
    /// (192 k: +102 MB of database). External signals are bounded: resolved ones go first, oldest first.
    #[test]
    fn issue_20_external_signals_are_bounded_resolved_ones_evicted_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let retention = Retention { max_external_signals: 4, ..Retention::default() };
        let store = Store::open(&dir.path().join("mend.db"), retention).expect("open");
        let sink = store.signal_sink();
        let external = |at_ms, name: &str, state| Signal { kind: SignalKind::External, ..signal(at_ms, name, state) };
        sink.signal(external(1, "old-firing", SignalState::Firing));
        sink.signal(external(2, "resolved-a", SignalState::Resolved));
        sink.signal(signal(3, "a-rule", SignalState::Firing));
        sink.signal(external(4, "resolved-b", SignalState::Resolved));
        sink.signal(external(5, "new-firing", SignalState::Firing));
        sink.signal(external(6, "resolved-c", SignalState::Resolved));
        sink.signal(external(7, "newest-firing", SignalState::Firing));
        store.flush().expect("flush");
        {
            let connection = store.reader.lock().expect("lock");
            apply_retention(&connection, retention, Timestamp::from_millis(10)).expect("retention");
        }
        let kept = store.signals(&SignalQuery { limit: 100, ..Default::default() }).expect("query");
        let names: Vec<&str> = kept.iter().map(|s| s.signal.name.as_str()).collect();
        // Six external transitions, four kept: the two oldest resolved ones went; firing ones and the
        // rule's signal stay.
        assert_eq!(names, ["old-firing", "a-rule", "new-firing", "resolved-c", "newest-firing"]);
    }

    #[test]
    fn stores_signals_and_lists_active_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("mend.db"), Retention::default()).expect("open");
        let sink = store.signal_sink();
        sink.signal(signal(1, "A", SignalState::Firing));
        sink.signal(signal(2, "B", SignalState::Firing));
        sink.signal(signal(3, "A", SignalState::Resolved));
        let mut nan = signal(4, "C", SignalState::Firing);
        nan.value = f64::NAN;
        sink.signal(nan);
        store.flush().expect("flush");
        let all = store.signals(&SignalQuery { limit: 10, ..Default::default() }).expect("query");
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].signal, signal(1, "A", SignalState::Firing));
        assert!(all[3].signal.value.is_nan());
        let active = store.signals(&SignalQuery { active_only: true, limit: 10, ..Default::default() }).expect("query");
        let names: Vec<&str> = active.iter().map(|s| s.signal.name.as_str()).collect();
        assert_eq!(names, ["B", "C"]);
        // Following active signals when none is firing starts after the newest transition.
        sink.signal(signal(5, "B", SignalState::Resolved));
        sink.signal(signal(6, "C", SignalState::Resolved));
        store.flush().expect("flush");
        let page =
            store.signals_page(&SignalQuery { active_only: true, limit: 10, ..Default::default() }).expect("query");
        assert!(page.items.is_empty());
        assert_eq!(
            Some(page.next_after),
            store.signals(&SignalQuery { limit: 1, ..Default::default() }).expect("query").first().map(|s| s.id)
        );
    }

    #[test]
    fn close_returns_while_sinks_are_still_alive() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("mend.db"), Retention::default()).expect("open");
        let sink = store.sink();
        sink.emit(event(1, "web", EventKind::Started));
        store.close().expect("close");
        // Emitting after close neither blocks nor panics.
        sink.emit(event(2, "web", EventKind::Started));
    }

    #[test]
    fn refuses_a_database_from_a_newer_mend() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mend.db");
        Store::open(&path, Retention::default()).expect("open").close().expect("close");
        let connection = Connection::open(&path).expect("open raw");
        connection.pragma_update(None, "user_version", 99).expect("set version");
        drop(connection);
        let error = Store::open(&path, Retention::default()).err().expect("newer schema refused");
        let expected = format!("schema version 99, newer than the {} this mend supports", MIGRATIONS.len());
        assert!(error.to_string().contains(&expected), "{error}");
    }

    #[test]
    fn releases_survive_a_restart_and_a_version_3_database_keeps_its_rows() {
        use mend_types::{ReleaseChange, ReleaseName, Rollout, RolloutPhase};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mend.db");
        // A database as mend wrote it before releases were stored: schema version 3, with an event.
        {
            let mut connection = Connection::open(&path).expect("open raw");
            let transaction = connection.transaction().expect("transaction");
            for migration in &MIGRATIONS[..3] {
                transaction.execute_batch(migration).expect("old migration");
            }
            transaction.pragma_update(None, "user_version", 3).expect("version");
            transaction
                .execute(
                    "INSERT INTO events (at_ms, service, kind, message) VALUES (1, 'web', 'started', 'old row')",
                    [],
                )
                .expect("old event");
            transaction.commit().expect("commit");
        }
        let store = Store::open(&path, Retention::default()).expect("migrated");
        let old = store.events(&EventQuery { limit: 10, ..Default::default() }).expect("events");
        assert!(old.iter().any(|event| event.event.message == "old row"), "{old:?}");
        let web = ServiceName::new("web").expect("name");
        let (v1, v2) = (ReleaseName::new("v1").expect("v1"), ReleaseName::new("v2").expect("v2"));
        let rollout = Rollout {
            service: web.clone(),
            canary: v2.clone(),
            stable: v1.clone(),
            canary_replicas: 1,
            steps: vec![10, 50, 100],
            step_idx: 1,
            interval_ms: 30_000,
            phase: RolloutPhase::Stepping,
            paused: false,
            started_at: Timestamp::from_millis(1_000),
            since: Timestamp::from_millis(31_000),
            inconclusive: 0,
            reason: "step 10% passed".into(),
        };
        let releases = ServiceReleases {
            service: web.clone(),
            stable: v1.clone(),
            last_good: Some(v1.clone()),
            rollout: Some(rollout),
        };
        let history = |release: &ReleaseName, change, at| ReleaseHistoryEntry {
            service: web.clone(),
            release: release.clone(),
            at: Timestamp::from_millis(at),
            change,
            reason: "test".into(),
        };
        store
            .journal(vec![
                JournalEntry::ReleaseHistory(Box::new(history(&v1, ReleaseChange::Stable, 500))),
                JournalEntry::ReleaseHistory(Box::new(history(&v2, ReleaseChange::Deployed, 1_000))),
                JournalEntry::Releases(Box::new(releases.clone())),
            ])
            .expect("journal");
        store.close().expect("close");
        drop(store);
        let store = Store::open(&path, Retention::default()).expect("reopen");
        assert_eq!(store.service_releases("web").expect("read"), Some(releases));
        assert_eq!(store.service_releases("api").expect("read"), None);
        let changes: Vec<ReleaseChange> =
            store.release_history("web", 10).expect("history").iter().map(|entry| entry.change).collect();
        assert_eq!(changes, [ReleaseChange::Deployed, ReleaseChange::Stable], "newest first");
        // A row this mend cannot read is none, not an error.
        let raw = Connection::open(&path).expect("raw");
        raw.execute("UPDATE service_releases SET body = '{\"from\": \"the future\"}'", []).expect("garble");
        assert_eq!(store.service_releases("web").expect("read"), None);
    }

    fn action(id: u64, state: ActionState) -> ActionRecord {
        ActionRecord {
            id: ActionId(id),
            incident: Some(IncidentId(1)),
            action: mend_types::ActionKind::Restart,
            service: ServiceName::new("web").ok(),
            replica: Some(0),
            actor: mend_types::Actor::Operator,
            reason: "test".into(),
            state,
            requested_at: Timestamp::from_millis(1),
            started_at: None,
            finished_at: None,
            outcome: None,
            output: String::new(),
        }
    }

    #[test]
    fn the_journal_commits_before_it_returns_and_the_next_run_closes_what_was_left_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mend.db");
        let store = Store::open(&path, Retention::default()).expect("open");
        let incident = Incident {
            id: IncidentId(1),
            state: IncidentState::Acting,
            opened_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(2),
            closed_at: None,
            services: Default::default(),
            replicas: Default::default(),
            signals: Vec::new(),
            diagnosis: Default::default(),
            diagnoses: Vec::new(),
            actions: vec![ActionId(1)],
            flaps: 0,
            timeline: Vec::new(),
        };
        store
            .journal(vec![
                JournalEntry::Incident(Box::new(incident.clone())),
                JournalEntry::Action(Box::new(action(1, ActionState::Succeeded))),
                JournalEntry::Action(Box::new(action(2, ActionState::Running))),
            ])
            .expect("journal");
        // Read through another connection at once, without a flush: the journal was committed.
        let (read, actions) = store.incident(IncidentId(1)).expect("query").expect("the incident");
        assert_eq!((read, actions.len()), (incident, 2));
        assert_eq!(store.journal_ids().expect("ids"), (1, 2));
        // The process dies here: nothing is closed cleanly.
        drop(store);
        let store = Store::open(&path, Retention::default()).expect("reopen");
        let (incidents, actions) = store.close_interrupted(Timestamp::from_millis(9)).expect("close");
        assert_eq!((incidents.len(), actions.len()), (1, 1));
        let (incident, actions) = store.incident(IncidentId(1)).expect("query").expect("the incident");
        assert_eq!(incident.state, IncidentState::Escalated);
        assert_eq!(
            actions.iter().map(|a| a.state).collect::<Vec<_>>(),
            [ActionState::Succeeded, ActionState::Interrupted]
        );
        assert!(store.actions(10, true).expect("query").is_empty());
    }

    #[test]
    fn retention_bounds_rows_by_count_and_age() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(
            &dir.path().join("mend.db"),
            Retention { max_age: Duration::from_secs(3600), max_events: 5, ..Retention::default() },
        )
        .expect("open");
        let sink = store.sink();
        for idx in 0..20 {
            sink.emit(event(idx * 1000, "web", EventKind::Started));
        }
        store.flush().expect("flush");
        {
            let connection = store.reader.lock().expect("lock");
            apply_retention(
                &connection,
                Retention { max_age: Duration::from_secs(3600), max_events: 5, ..Retention::default() },
                Timestamp::from_millis(19_000),
            )
            .expect("retention");
        }
        let kept: Vec<i64> = all(&store).iter().map(|e| e.event.at.as_millis()).collect();
        assert_eq!(kept, [15_000, 16_000, 17_000, 18_000, 19_000]);
        sink.emit(event(10_000_000, "web", EventKind::Started));
        store.flush().expect("flush");
        {
            let connection = store.reader.lock().expect("lock");
            apply_retention(
                &connection,
                Retention { max_age: Duration::from_secs(3600), max_events: 5, ..Retention::default() },
                Timestamp::from_millis(10_000_000),
            )
            .expect("retention");
        }
        assert_eq!(all(&store).len(), 1);
    }
}
