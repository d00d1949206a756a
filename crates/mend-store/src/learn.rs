//! What learning keeps: outcomes of policies' actions, and snapshots of learnt state.
//!
//! Both are written through the acknowledged journal path. A snapshot is an opaque, versioned body
//! under a key (its owner encodes and checks it: the store never interprets it); a body this mend cannot
//! read is the owner's to refuse.

use mend_types::{ActionOutcome, ServiceName, Timestamp};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::{Store, StoreError};

/// Outcomes kept at most (the oldest go first): far more than a learner needs to rank actions.
const MAX_OUTCOMES: i64 = 100_000;

/// A snapshot of learnt state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// What it is (`detect`, `sensitivity:rule:HighErrors`...).
    pub key: String,
    /// The service it concerns, if one (`mend learn reset --service` forgets it).
    pub service: Option<ServiceName>,
    /// The format version of `body`.
    pub version: u32,
    /// When it was taken.
    pub at: Timestamp,
    /// The encoded state.
    pub body: Vec<u8>,
}

pub(crate) fn write_outcome(transaction: &Transaction<'_>, outcome: &ActionOutcome) -> rusqlite::Result<()> {
    let body =
        serde_json::to_string(outcome).map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))?;
    transaction.execute(
        "INSERT INTO outcomes (action, incident, decided_ms, trigger, service, kind, verdict, recover_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(action) DO UPDATE SET decided_ms = excluded.decided_ms, verdict = excluded.verdict,
             recover_ms = excluded.recover_ms, body = excluded.body",
        params![
            outcome.action.0 as i64,
            outcome.incident.0 as i64,
            outcome.decided_at.as_millis(),
            outcome.trigger,
            outcome.service.as_ref().map(ServiceName::as_str),
            outcome.kind.describe(),
            outcome.verdict.as_str(),
            outcome.recover_ms.map(|ms| ms.min(i64::MAX as u64) as i64),
            body
        ],
    )?;
    Ok(())
}

pub(crate) fn write_snapshot(transaction: &Transaction<'_>, snapshot: &Snapshot) -> rusqlite::Result<()> {
    transaction.execute(
        "INSERT INTO learnt (key, service, version, updated_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(key) DO UPDATE SET service = excluded.service, version = excluded.version,
             updated_ms = excluded.updated_ms, body = excluded.body",
        params![
            snapshot.key,
            snapshot.service.as_ref().map(ServiceName::as_str),
            i64::from(snapshot.version),
            snapshot.at.as_millis(),
            snapshot.body
        ],
    )?;
    Ok(())
}

pub(crate) fn forget(transaction: &Transaction<'_>, service: Option<&ServiceName>) -> rusqlite::Result<()> {
    match service {
        Some(service) => {
            transaction.execute("DELETE FROM outcomes WHERE service = ?1", params![service.as_str()])?;
            transaction.execute("DELETE FROM learnt WHERE service = ?1", params![service.as_str()])?;
        }
        None => {
            transaction.execute("DELETE FROM outcomes", [])?;
            transaction.execute("DELETE FROM learnt", [])?;
        }
    }
    Ok(())
}

pub(crate) fn apply_retention(connection: &rusqlite::Connection) -> rusqlite::Result<()> {
    connection.execute(
        "DELETE FROM outcomes WHERE action <= (SELECT MAX(action) FROM outcomes) - ?1
           AND action NOT IN (SELECT action FROM outcomes ORDER BY action DESC LIMIT ?1)",
        params![MAX_OUTCOMES],
    )?;
    Ok(())
}

impl Store {
    /// Outcomes recorded, oldest first (at most the newest `limit`). A row this mend cannot read (from
    /// a newer one) is skipped.
    pub fn outcomes(&self, limit: usize) -> Result<Vec<ActionOutcome>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let mut statement = connection.prepare_cached(
            "SELECT body FROM (SELECT action, body FROM outcomes ORDER BY action DESC LIMIT ?1) ORDER BY action",
        )?;
        let rows = statement.query_map(params![limit.min(i64::MAX as usize) as i64], |row| row.get::<_, String>(0))?;
        let mut outcomes = Vec::new();
        for body in rows {
            if let Ok(outcome) = serde_json::from_str(&body?) {
                outcomes.push(outcome);
            }
        }
        Ok(outcomes)
    }

    /// The outcomes recorded for incident `id`'s actions, in action order (a row this mend cannot read
    /// is skipped, as in [`Store::outcomes`]).
    pub fn incident_outcomes(&self, id: mend_types::IncidentId) -> Result<Vec<ActionOutcome>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let mut statement =
            connection.prepare_cached("SELECT body FROM outcomes WHERE incident = ?1 ORDER BY action LIMIT 10000")?;
        let rows = statement.query_map(params![id.0.min(i64::MAX as u64) as i64], |row| row.get::<_, String>(0))?;
        let mut outcomes = Vec::new();
        for body in rows {
            if let Ok(outcome) = serde_json::from_str(&body?) {
                outcomes.push(outcome);
            }
        }
        Ok(outcomes)
    }

    /// The snapshot under `key`, if one was taken.
    pub fn snapshot(&self, key: &str) -> Result<Option<Snapshot>, StoreError> {
        let connection = self.reader.lock().map_err(|_| StoreError::WriterGone)?;
        let row = connection
            .query_row(
                "SELECT key, service, version, updated_ms, body FROM learnt WHERE key = ?1",
                params![key],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, Vec<u8>>(4)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(key, service, version, at_ms, body)| Snapshot {
            key,
            service: service.and_then(|s| ServiceName::new(&s).ok()),
            // A version that does not fit is one this mend cannot read: the owner refuses it.
            version: u32::try_from(version).unwrap_or(u32::MAX),
            at: Timestamp::from_millis(at_ms),
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use mend_types::{ActionId, ActionKind, IncidentId, Verdict};

    use super::*;
    use crate::JournalEntry;

    fn outcome(action: u64, service: &str, verdict: Verdict) -> ActionOutcome {
        ActionOutcome {
            action: ActionId(action),
            incident: IncidentId(1),
            trigger: "hung".to_owned(),
            diagnosis: "hung".to_owned(),
            service: Some(ServiceName::new(service).expect("valid name")),
            kind: ActionKind::Restart,
            verdict,
            started_at: Timestamp::from_millis(1_000),
            decided_at: Timestamp::from_millis(4_000),
            verify_ms: 30_000,
            recover_ms: (verdict == Verdict::Resolved).then_some(3_000),
        }
    }

    fn snapshot(key: &str, service: Option<&str>) -> Snapshot {
        Snapshot {
            key: key.to_owned(),
            service: service.map(|s| ServiceName::new(s).expect("valid name")),
            version: 1,
            at: Timestamp::from_millis(5_000),
            body: vec![1, 2, 3],
        }
    }

    #[test]
    fn outcomes_and_snapshots_survive_a_reopen_and_are_forgotten_per_service() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mend.db");
        {
            let store = Store::open(&path, crate::Retention::default()).expect("opens");
            store
                .journal(vec![
                    JournalEntry::Outcome(Box::new(outcome(1, "web", Verdict::Resolved))),
                    JournalEntry::Outcome(Box::new(outcome(2, "web", Verdict::NotResolved))),
                    JournalEntry::Outcome(Box::new(outcome(3, "db", Verdict::Failed))),
                    JournalEntry::Learnt(Box::new(snapshot("sensitivity:web", Some("web")))),
                    JournalEntry::Learnt(Box::new(snapshot("detect", None))),
                ])
                .expect("journalled");
            store.close().expect("closes");
        }
        let store = Store::open(&path, crate::Retention::default()).expect("reopens");
        let outcomes = store.outcomes(100).expect("reads");
        assert_eq!(
            outcomes,
            vec![
                outcome(1, "web", Verdict::Resolved),
                outcome(2, "web", Verdict::NotResolved),
                outcome(3, "db", Verdict::Failed)
            ]
        );
        assert_eq!(store.incident_outcomes(IncidentId(1)).expect("reads"), outcomes, "an incident's outcomes");
        assert!(store.incident_outcomes(IncidentId(2)).expect("reads").is_empty(), "another incident has none");
        assert_eq!(store.snapshot("detect").expect("reads"), Some(snapshot("detect", None)));
        store.journal(vec![JournalEntry::Forget(Some(ServiceName::new("web").expect("valid")))]).expect("forgets");
        let left: Vec<u64> = store.outcomes(100).expect("reads").iter().map(|o| o.action.0).collect();
        assert_eq!(left, vec![3]);
        assert_eq!(store.snapshot("sensitivity:web").expect("reads"), None);
        assert!(store.snapshot("detect").expect("reads").is_some(), "another service's state stays");
        store.journal(vec![JournalEntry::Forget(None)]).expect("forgets");
        assert!(store.outcomes(100).expect("reads").is_empty());
        assert_eq!(store.snapshot("detect").expect("reads"), None);
    }

    #[test]
    fn the_learning_migration_keeps_a_journal_written_before_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mend.db");
        {
            let connection = rusqlite::Connection::open(&path).expect("open raw");
            for migration in &crate::MIGRATIONS[..3] {
                connection.execute_batch(migration).expect("older schema");
            }
            connection.pragma_update(None, "user_version", 3).expect("set version");
            connection
                .execute(
                    "INSERT INTO incidents (id, opened_ms, updated_ms, state, body) VALUES (7, 1, 2, 'resolved', '{}')",
                    [],
                )
                .expect("an incident of the older mend");
        }
        let store = Store::open(&path, crate::Retention::default()).expect("migrates");
        assert_eq!(store.journal_ids().expect("reads").0, 7, "the older journal is kept");
        store.journal(vec![JournalEntry::Outcome(Box::new(outcome(1, "web", Verdict::Resolved)))]).expect("journalled");
        assert_eq!(store.outcomes(10).expect("reads").len(), 1);
    }
}
