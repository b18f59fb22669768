//! The notifier's durable state, SQLite `notify.db` beside the alarm store:
//! its cursor in the alarm ledger, each alarm's escalation (policy, next
//! step, when), and the outbox — every notification is a row before it is
//! sent, with its attempts, next try and the peer's last answer. A restart
//! takes up exactly where it stopped: nothing pending is lost, a step that
//! fired is not fired again, and a message carries the same idempotency key
//! on every attempt.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

/// Where the notifier keeps its store in `data_dir` (the API and the ack
/// pages read it too).
pub fn path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("notify.db")
}

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
#[error("notification store {path}: {source}")]
pub struct OutboxError {
    path: String,
    source: rusqlite::Error,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 1), last_event INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS escalations (
    alarm_id INTEGER PRIMARY KEY, policy TEXT NOT NULL, step INTEGER NOT NULL,
    next_at INTEGER NOT NULL, raised_at INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS escalations_due ON escalations(next_at) WHERE done = 0;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, alarm_id INTEGER NOT NULL, step INTEGER NOT NULL,
    channel TEXT NOT NULL, people TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, created_at INTEGER NOT NULL,
    sent_at INTEGER, answer TEXT, key TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_alarm ON outbox(alarm_id);
"#;

/// An alarm's escalation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// The alarm.
    pub alarm_id: i64,
    /// Its policy.
    pub policy: String,
    /// The next step's number (past the last: a repeat).
    pub step: usize,
    /// When it is due, epoch ms.
    pub next_at: i64,
    /// When the alarm was raised, epoch ms.
    pub raised_at: i64,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notification {
    /// Row id.
    pub id: i64,
    /// The alarm.
    pub alarm_id: i64,
    /// The policy step that made it.
    pub step: usize,
    /// Channel id.
    pub channel: String,
    /// People ids, comma-separated.
    pub people: String,
    /// `alarm`, `clear`, or `skipped` (recorded, not sent: a drill, a shelf,
    /// nobody on duty).
    pub kind: String,
    /// `pending`, `sent`, `failed`, `skipped`.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Next try, epoch ms.
    pub next_at: i64,
    /// Made, epoch ms.
    pub created_at: i64,
    /// Delivered, epoch ms.
    pub sent_at: Option<i64>,
    /// The peer's last answer, or why it was skipped.
    pub answer: Option<String>,
    /// The same on every attempt.
    pub key: String,
}

/// The notifier's connection.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    path: String,
}

fn notification(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: r.get("id")?,
        alarm_id: r.get("alarm_id")?,
        step: usize::try_from(r.get::<_, i64>("step")?).unwrap_or(0),
        channel: r.get("channel")?,
        people: r.get("people")?,
        kind: r.get("kind")?,
        state: r.get("state")?,
        attempts: r.get("attempts")?,
        next_at: r.get("next_at")?,
        created_at: r.get("created_at")?,
        sent_at: r.get("sent_at")?,
        answer: r.get("answer")?,
        key: r.get("key")?,
    })
}

impl Outbox {
    /// Opens (creating) `notify.db` at `path`.
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let p = path.display().to_string();
        let err = |source| OutboxError {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // FULL: a notification recorded as sent must stay recorded across a
        // power cut, or it would be sent twice.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError {
            path: self.path.clone(),
            source,
        }
    }

    /// The ledger entry last taken in, or `None` on a fresh store.
    pub fn cursor(&self) -> Result<Option<i64>, OutboxError> {
        self.conn
            .query_row("SELECT last_event FROM cursor WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Runs `f` in one transaction (the cursor moves with what it decided).
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, OutboxError> {
        let path = self.path.clone();
        let err = |source| OutboxError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let out = f(&Tx(&tx)).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Escalations due at `now`.
    pub fn due_escalations(&self, now: i64) -> Result<Vec<Escalation>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT alarm_id, policy, step, next_at, raised_at FROM escalations WHERE done = 0 AND next_at <= ?1 ORDER BY next_at LIMIT 500")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([now], |r| {
                Ok(Escalation {
                    alarm_id: r.get(0)?,
                    policy: r.get(1)?,
                    step: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    next_at: r.get(3)?,
                    raised_at: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Pending notifications due at `now`, oldest first.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Notification>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM outbox WHERE state = 'pending' AND next_at <= ?1 ORDER BY id LIMIT ?2")
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![now, limit], notification)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// An alarm's notifications, oldest first.
    pub fn of_alarm(&self, alarm_id: i64) -> Result<Vec<Notification>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM outbox WHERE alarm_id = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([alarm_id], notification)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The policy of an alarm's escalation, done or not.
    pub fn policy_of(&self, alarm_id: i64) -> Result<Option<String>, OutboxError> {
        self.conn
            .query_row(
                "SELECT policy FROM escalations WHERE alarm_id = ?1",
                [alarm_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Notifications not yet delivered or given up.
    pub fn pending_count(&self) -> Result<i64, OutboxError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Records an attempt's result.
    pub fn record(
        &self,
        id: i64,
        state: &str,
        next_at: i64,
        sent_at: Option<i64>,
        answer: &str,
    ) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached("UPDATE outbox SET state = ?2, attempts = attempts + 1, next_at = ?3, sent_at = ?4, answer = ?5 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, state, next_at, sent_at, answer]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// The writes of one transaction.
pub struct Tx<'a>(&'a rusqlite::Transaction<'a>);

impl Tx<'_> {
    /// Moves the cursor.
    pub fn set_cursor(&self, event: i64) -> rusqlite::Result<()> {
        self.0
            .execute(
                "INSERT INTO cursor (id, last_event) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET last_event = ?1",
                [event],
            )
            .map(|_| ())
    }

    /// Starts an alarm's escalation (once).
    pub fn start(&self, e: &Escalation) -> rusqlite::Result<()> {
        self.0
            .execute(
                "INSERT OR IGNORE INTO escalations (alarm_id, policy, step, next_at, raised_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.alarm_id, e.policy, e.step as i64, e.next_at, e.raised_at],
            )
            .map(|_| ())
    }

    /// Moves an escalation to its next step, or ends it (`None`).
    pub fn advance(&self, alarm_id: i64, next: Option<(usize, i64)>) -> rusqlite::Result<()> {
        match next {
            Some((step, at)) => self.0.execute(
                "UPDATE escalations SET step = ?2, next_at = ?3 WHERE alarm_id = ?1",
                params![alarm_id, step as i64, at],
            ),
            None => self.0.execute(
                "UPDATE escalations SET done = 1 WHERE alarm_id = ?1",
                [alarm_id],
            ),
        }
        .map(|_| ())
    }

    /// The escalation of an alarm, done or not.
    pub fn escalation(&self, alarm_id: i64) -> rusqlite::Result<Option<String>> {
        self.0
            .query_row(
                "SELECT policy FROM escalations WHERE alarm_id = ?1",
                [alarm_id],
                |r| r.get(0),
            )
            .optional()
    }

    /// Adds a notification (once per key).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &self,
        alarm_id: i64,
        step: usize,
        channel: &str,
        people: &str,
        kind: &str,
        state: &str,
        now: i64,
        answer: Option<&str>,
        key: &str,
    ) -> rusqlite::Result<()> {
        self.0
            .execute(
                "INSERT OR IGNORE INTO outbox (alarm_id, step, channel, people, kind, state, next_at, created_at, answer, key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)",
                params![alarm_id, step as i64, channel, people, kind, state, now, answer, key],
            )
            .map(|_| ())
    }

    /// Records a step (or an alarm) that sends nothing, and why: a drill, a
    /// shelf, nobody on duty — shown in the alarm's notifications.
    pub fn skip(
        &self,
        alarm_id: i64,
        step: usize,
        now: i64,
        why: &str,
        key: &str,
    ) -> rusqlite::Result<()> {
        self.add(
            alarm_id,
            step,
            "-",
            "",
            "skipped",
            "skipped",
            now,
            Some(why),
            key,
        )
    }

    /// The (channel, people) an alarm's messages were delivered to.
    pub fn delivered(&self, alarm_id: i64) -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT DISTINCT channel, people FROM outbox WHERE alarm_id = ?1 AND kind = 'alarm' AND state = 'sent'",
        )?;
        let rows = stmt.query_map([alarm_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }
}
