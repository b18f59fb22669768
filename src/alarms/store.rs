//! The durable alarm store and ledger (台账): SQLite under `data_dir`.
//!
//! Every change is written with its ledger entry in one transaction before
//! anyone hears of it. Durability comes in two steps so that an alarm is
//! announced within milliseconds even while the reading spool keeps the
//! disk busy with its own fsyncs:
//! - the commit (WAL mode, `synchronous = NORMAL`) survives a crash of the
//!   gateway at once: the change is in the WAL, in the kernel's page cache;
//! - [`WalSync::sync`] (an fdatasync of the WAL, grouped, off the alarm
//!   path) makes it survive a power cut; only then are the MQTT messages
//!   behind the change acknowledged, so the broker resends them after a
//!   power cut that came in between.
//!
//! WAL mode also lets the page and the reports read while the engine writes.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::change::{Change, Event, Suppression};
use super::lifecycle::{Alarm, Severity, State, Text};
use crate::reading::Location;

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no (disk full, corrupt file…).
    #[error("alarm store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
}

/// The store's disk work that stays off the alarm path, on its own
/// connection: syncing commits to disk and moving the WAL into the database.
pub struct WalSync {
    conn: Connection,
    wal: std::path::PathBuf,
    path: String,
}

impl std::fmt::Debug for WalSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalSync").field("wal", &self.wal).finish()
    }
}

/// The WAL is moved into the database once it is this long (SQLite's own
/// auto-checkpoint would do it at 1,000 pages, inside a commit).
const CHECKPOINT_BYTES: u64 = 4 << 20;

impl WalSync {
    /// Makes every commit so far survive a power cut: fdatasync of the WAL,
    /// which is what SQLite itself does at a `synchronous = FULL` commit.
    /// With `NORMAL` SQLite syncs the WAL before a checkpoint and the
    /// database after it, so frames that left the WAL are already on disk.
    /// Blocking.
    pub fn sync(&mut self) -> std::io::Result<()> {
        match std::fs::File::open(&self.wal) {
            Ok(f) => f.sync_data(),
            // No WAL: everything was checkpointed into the synced database.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves the WAL into the database when it has grown past a few MiB, so
    /// it stays short without a checkpoint inside an alarm's commit; true
    /// when it checkpointed. The file's length says how much the log holds
    /// because `journal_size_limit` (see `open`) cuts it back when SQLite
    /// starts the log over. Blocking.
    pub fn checkpoint_if_long(&mut self) -> Result<bool, StoreError> {
        let long = std::fs::metadata(&self.wal).is_ok_and(|m| m.len() > CHECKPOINT_BYTES);
        if long {
            // PASSIVE: never waits for the writer; what it cannot move now it moves next time.
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(|source| StoreError::Sqlite {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(long)
    }
}

/// Which alarms a query wants.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only those not closed.
    pub open_only: bool,
    /// Raised at or after (epoch ms).
    pub since: Option<i64>,
    /// Raised before (epoch ms).
    pub until: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A connection to the store.
#[derive(Debug)]
pub struct AlarmStore {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, site TEXT NOT NULL,
    building TEXT, floor TEXT, room TEXT, place TEXT,
    severity TEXT NOT NULL, state TEXT NOT NULL, active INTEGER NOT NULL,
    raised_at INTEGER NOT NULL, cleared_at INTEGER, acked_by TEXT, acked_at INTEGER,
    value REAL, peak REAL, count INTEGER NOT NULL, message TEXT NOT NULL,
    shelved_until INTEGER, shelve_reason TEXT, suppressed TEXT,
    group_id INTEGER, is_group INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms(state) WHERE state != 'cleared';
CREATE INDEX IF NOT EXISTS alarms_raised ON alarms(raised_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    alarm_id INTEGER NOT NULL, at INTEGER NOT NULL, action TEXT NOT NULL,
    from_state TEXT, to_state TEXT NOT NULL, user TEXT, comment TEXT, value REAL
);
CREATE INDEX IF NOT EXISTS events_alarm ON events(alarm_id);
CREATE TABLE IF NOT EXISTS suppressions (
    building TEXT NOT NULL, floor TEXT, until INTEGER NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL
);
"#;

/// Columns added since the first schema, with their type: a store written by
/// an older gateway gets them on opening (older rows read as declared, named
/// by their rule, in one language).
const ADDED: [(&str, &str, &str); 7] = [
    ("alarms", "last_at", "INTEGER"),
    ("alarms", "name", "TEXT"),
    ("alarms", "name_en", "TEXT"),
    ("alarms", "message_en", "TEXT"),
    ("alarms", "inhibited_by", "INTEGER"),
    ("alarms", "declared", "INTEGER NOT NULL DEFAULT 1"),
    ("events", "detail", "TEXT"),
];

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, ty) in ADDED {
        let exists = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
        }
    }
    Ok(())
}

impl AlarmStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // NORMAL: a commit does not wait for the disk; `WalSync` does, later,
        // and checkpoints too (never inside a commit). SQLite reuses a WAL
        // file from its start after a checkpoint without shortening it, so
        // once the log had been long the file stayed long and
        // `checkpoint_if_long` checkpointed after every alarm (6 % of the
        // gateway's CPU at 100 alarm changes/s); the limit cuts the file
        // back to CHECKPOINT_BYTES when the log starts over.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {CHECKPOINT_BYTES};",
        ))
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate(&conn).map_err(err)?;
        Ok(Self { conn, path: p })
    }

    /// A second connection for the disk work that stays off the alarm path.
    pub fn wal_sync(&self) -> Result<WalSync, StoreError> {
        Ok(WalSync {
            conn: Self::open(Path::new(&self.path))?.conn,
            wal: format!("{}-wal", self.path).into(),
            path: self.path.clone(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes changes and their ledger entries in one transaction.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO alarms (id, rule, device, kind, site, building, floor, room, place, \
                     severity, state, active, raised_at, cleared_at, acked_by, acked_at, value, peak, count, \
                     message, shelved_until, shelve_reason, suppressed, group_id, is_group, updated_at, \
                     last_at, name, name_en, message_en, inhibited_by, declared) \
                     VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28,?29,?30,?31,?32)",
                )
                .map_err(err)?;
            let mut event = tx
                .prepare_cached(
                    "INSERT INTO events (alarm_id, at, action, from_state, to_state, user, comment, value, detail) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                )
                .map_err(err)?;
            for c in changes {
                let a = &c.alarm;
                let l = a.location.as_ref();
                upsert
                    .execute(params![
                        a.id,
                        a.rule,
                        a.device,
                        a.kind,
                        a.site,
                        l.and_then(|l| l.building.as_deref()),
                        l.and_then(|l| l.floor.as_deref()),
                        l.and_then(|l| l.room.as_deref()),
                        l.and_then(|l| l.name.as_deref()),
                        a.severity.as_str(),
                        a.state.as_str(),
                        a.active,
                        a.raised_at,
                        a.cleared_at,
                        a.acked_by,
                        a.acked_at,
                        a.value,
                        a.peak,
                        a.count,
                        a.message.zh,
                        a.shelved_until,
                        a.shelve_reason,
                        a.suppressed,
                        a.group,
                        a.is_group,
                        a.updated_at,
                        a.last_at,
                        a.name.zh,
                        a.name.en,
                        a.message.en,
                        a.inhibited_by,
                        a.declared,
                    ])
                    .map_err(err)?;
                let e = &c.event;
                event
                    .execute(params![
                        e.alarm_id,
                        e.at,
                        e.action,
                        e.from.map(State::as_str),
                        e.to.as_str(),
                        e.user,
                        e.comment,
                        e.value,
                        detail_json(&e.detail),
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Every alarm not yet closed.
    pub fn load_open(&self) -> Result<Vec<Alarm>, StoreError> {
        self.query(&Query {
            open_only: true,
            limit: usize::MAX,
            ..Query::default()
        })
    }

    /// The next free alarm id.
    pub fn next_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM alarms", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))
    }

    /// Alarms by query, newest first.
    pub fn query(&self, q: &Query) -> Result<Vec<Alarm>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT * FROM alarms WHERE (?1 = 0 OR state != 'cleared') AND raised_at >= ?2 AND raised_at < ?3 ORDER BY raised_at DESC, id DESC LIMIT ?4",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![
                    q.open_only,
                    q.since.unwrap_or(i64::MIN),
                    q.until.unwrap_or(i64::MAX),
                    limit
                ],
                alarm_from_row,
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// One alarm by id.
    pub fn get(&self, id: i64) -> Result<Option<Alarm>, StoreError> {
        self.conn
            .query_row("SELECT * FROM alarms WHERE id = ?1", [id], alarm_from_row)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The ledger entries of an alarm, oldest first.
    pub fn events(&self, alarm_id: i64) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM events WHERE alarm_id = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([alarm_id], event_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Ledger entries after `after` (their row id, the durable cursor of the
    /// duty notifier), oldest first, at most `limit`.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, Event)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok((r.get("id")?, event_from_row(r)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// The newest ledger entry's row id (0 when empty).
    pub fn last_event_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Replaces the stored zone suppressions.
    pub fn save_suppressions(&mut self, list: &[Suppression]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM suppressions", []).map_err(err)?;
        for s in list {
            tx.execute(
                "INSERT INTO suppressions VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s.building, s.floor, s.until, s.reason, s.by],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The stored zone suppressions.
    pub fn load_suppressions(&self) -> Result<Vec<Suppression>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT building, floor, until, reason, by FROM suppressions")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Suppression {
                    building: r.get(0)?,
                    floor: r.get(1)?,
                    until: r.get(2)?,
                    reason: r.get(3)?,
                    by: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

/// A text from its stored columns; a missing language takes the other.
fn texts(fallback: String, zh: Option<String>, en: Option<String>) -> Text {
    let zh = zh.unwrap_or(fallback);
    Text {
        en: en.unwrap_or_else(|| zh.clone()),
        zh,
    }
}

fn detail_json(detail: &[(String, String)]) -> Option<String> {
    (!detail.is_empty()).then(|| {
        serde_json::Value::Object(
            detail
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
        .to_string()
    })
}

/// The stored detail; anything unreadable reads as none.
fn detail_from_json(text: Option<&str>) -> Vec<(String, String)> {
    let Some(Ok(serde_json::Value::Object(map))) = text.map(serde_json::from_str) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        alarm_id: r.get("alarm_id")?,
        at: r.get("at")?,
        action: r.get("action")?,
        from: r
            .get::<_, Option<String>>("from_state")?
            .as_deref()
            .and_then(State::parse),
        to: State::parse(&r.get::<_, String>("to_state")?).unwrap_or(State::Cleared),
        user: r.get("user")?,
        comment: r.get("comment")?,
        value: r.get("value")?,
        detail: detail_from_json(r.get::<_, Option<String>>("detail")?.as_deref()),
    })
}

fn alarm_from_row(r: &Row<'_>) -> rusqlite::Result<Alarm> {
    let building: Option<String> = r.get("building")?;
    let floor: Option<String> = r.get("floor")?;
    let room: Option<String> = r.get("room")?;
    let name: Option<String> = r.get("place")?;
    let location = (building.is_some() || floor.is_some() || room.is_some() || name.is_some())
        .then_some(Location {
            building,
            floor,
            room,
            name,
        });
    let severity = match r.get::<_, String>("severity")?.as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => Severity::Low,
    };
    let rule: String = r.get("rule")?;
    let raised_at: i64 = r.get("raised_at")?;
    let message: String = r.get("message")?;
    Ok(Alarm {
        id: r.get("id")?,
        rule: rule.clone(),
        device: r.get("device")?,
        kind: r.get("kind")?,
        site: r.get("site")?,
        location,
        severity,
        state: State::parse(&r.get::<_, String>("state")?).unwrap_or(State::Unacked),
        active: r.get("active")?,
        raised_at,
        cleared_at: r.get("cleared_at")?,
        acked_by: r.get("acked_by")?,
        acked_at: r.get("acked_at")?,
        value: r.get("value")?,
        peak: r.get("peak")?,
        count: r.get("count")?,
        last_at: r.get::<_, Option<i64>>("last_at")?.unwrap_or(raised_at),
        name: texts(rule.clone(), r.get("name")?, r.get("name_en")?),
        message: texts(message.clone(), Some(message), r.get("message_en")?),
        shelved_until: r.get("shelved_until")?,
        shelve_reason: r.get("shelve_reason")?,
        suppressed: r.get("suppressed")?,
        group: r.get("group_id")?,
        is_group: r.get("is_group")?,
        inhibited_by: r.get("inhibited_by")?,
        declared: r.get("declared")?,
        updated_at: r.get("updated_at")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alarms::lifecycle::tests::raised;

    pub(crate) fn change(a: &Alarm, action: &str) -> Change {
        Change {
            alarm: a.clone(),
            event: Event {
                alarm_id: a.id,
                at: a.updated_at,
                action: action.into(),
                from: None,
                to: a.state,
                user: Some("张老师".into()),
                comment: Some("checked, a, \"quoted\"".into()),
                value: a.value,
                detail: vec![("card_id".into(), "T1001".into())],
            },
        }
    }

    /// Once the WAL had been long, its file stayed long after the checkpoint
    /// (SQLite reuses it from the start), and every sync checkpointed again.
    #[test]
    fn the_wal_is_checkpointed_once_it_is_long_not_after_every_sync_since() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("alarms.db");
        let mut s = AlarmStore::open(&path).expect("open");
        let mut wal = s.wal_sync().expect("wal");
        let mut a = raised(1_764_380_000_000);
        a.message = Text::one("x".repeat(2_000));
        let mut id = 0;
        let mut write = |s: &mut AlarmStore, n: usize| {
            for _ in 0..n {
                id += 1;
                a.id = id;
                s.apply(&[change(&a, "raise")]).expect("apply");
            }
        };
        let mut rounds = 0;
        while !wal.checkpoint_if_long().expect("checkpoint") {
            write(&mut s, 50);
            rounds += 1;
            assert!(rounds < 1_000, "the WAL never got long");
        }
        // The next commit starts the log over; a few more do not make it long.
        write(&mut s, 5);
        assert!(
            !wal.checkpoint_if_long().expect("checkpoint"),
            "a short log was checkpointed again ({} bytes of WAL file)",
            std::fs::metadata(dir.path().join("alarms.db-wal")).map_or(0, |m| m.len())
        );
        // And it still checkpoints once the log is long again.
        let mut rounds = 0;
        while !wal.checkpoint_if_long().expect("checkpoint") {
            write(&mut s, 50);
            rounds += 1;
            assert!(rounds < 1_000, "the WAL never got long again");
        }
    }

    #[test]
    fn changes_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("alarms.db");
        let mut a = raised(1_764_380_000_000);
        a.location = Some(Location {
            building: Some("A3".into()),
            floor: Some("3".into()),
            room: None,
            name: Some("三楼走廊".into()),
        });
        {
            let mut s = AlarmStore::open(&path).expect("open");
            s.apply(&[change(&a, "raise")]).expect("apply");
            let mut closed = a.clone();
            closed.id = 2;
            closed.state = State::Cleared;
            closed.active = false;
            s.apply(&[change(&closed, "ack")]).expect("apply");
        }
        let s = AlarmStore::open(&path).expect("reopen");
        assert_eq!(s.load_open().expect("open alarms"), vec![a.clone()]);
        assert_eq!(s.next_id().expect("next id"), 3);
        let events = s.events(1).expect("events");
        assert_eq!(events[0].user.as_deref(), Some("张老师"));
        assert_eq!(events[0].detail, vec![("card_id".into(), "T1001".into())]);
    }

    #[test]
    fn a_store_of_an_older_gateway_opens_and_keeps_its_alarms() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("alarms.db");
        {
            // The first schema, without the columns added since.
            let conn = Connection::open(&path).expect("create");
            conn.execute_batch(SCHEMA).expect("old schema");
            conn.execute_batch(
                "INSERT INTO alarms (id, rule, device, kind, site, severity, state, active, raised_at, count, message, is_group, updated_at) \
                 VALUES (7, 'smoke-alarm', 's1', 'smoke', 'yz', 'critical', 'unacked', 1, 1000, 1, '烟感报警', 0, 1000)",
            )
            .expect("old row");
        }
        let s = AlarmStore::open(&path).expect("migrated");
        let open = s.load_open().expect("open alarms");
        assert_eq!(open.len(), 1);
        let a = &open[0];
        assert_eq!((a.id, a.last_at, a.declared), (7, 1000, true));
        assert_eq!(a.message, Text::one("烟感报警"));
        assert_eq!(a.name, Text::one("smoke-alarm"));
        AlarmStore::open(&path).expect("opening twice adds nothing twice");
    }
}
