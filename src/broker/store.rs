//! `broker.db`: the built-in broker's persistent sessions, their queued QoS 1
//! messages and the retained messages, so that a restart (or a crash) of
//! the gateway loses nothing a publisher was told was accepted.
//!
//! One thread owns the connection. Each round it takes every [`Op`] the
//! state queued since the last, writes them in one transaction (an insert
//! and the delete of the same message in one round cancel out: nothing is
//! written), commits with `synchronous = FULL`, and publishes the last op's
//! sequence number, which releases the publishers' acknowledgements.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;
use rusqlite::{params, Connection};
use tokio::sync::watch;
use tracing::{error, info};

use super::state::{Message, Op, State, StoredSession};
use crate::telemetry::{Health, Status};

/// The health component of the broker.
pub const COMPONENT: &str = "broker";

/// How long a round waits for more ops after the first: the window in which
/// a subscriber's acknowledgement cancels the write of what it acknowledged.
/// A little longer than the gateway's own group commit (the spool's), so its
/// acknowledgement of nearly every message comes within the round: with
/// 5 ms every message was written and deleted again, and the broker cost the
/// gateway 25 µs a message at 1,000 msg/s; with this, ~1 µs (README,
/// "The built-in broker beside mosquitto"). A publisher's PUBACK waits for
/// the round: about 60 ms plus an fsync.
const ROUND: Duration = crate::sink::HAND_OVER_AFTER.saturating_add(Duration::from_millis(10));

/// What the store holds at start.
pub type Restored = (Vec<StoredSession>, Vec<(String, Arc<Message>)>);

/// Opens (or creates) the store.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 16777216;
         CREATE TABLE IF NOT EXISTS sessions (client TEXT PRIMARY KEY, owner TEXT NOT NULL, subs TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS queue (client TEXT NOT NULL, id INTEGER NOT NULL, topic TEXT NOT NULL,
             payload BLOB NOT NULL, PRIMARY KEY (client, id)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL);",
    )?;
    Ok(conn)
}

/// Reads every session, queue and retained message.
pub fn load(conn: &Connection) -> rusqlite::Result<Restored> {
    let mut sessions = Vec::new();
    let mut stmt = conn.prepare("SELECT client, owner, subs FROM sessions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut index = HashMap::new();
    for row in rows {
        let (client, owner, subs) = row?;
        // Written by us as JSON; a damaged row loses its subscriptions, not the broker.
        let subs: Vec<(String, u8)> = serde_json::from_str(&subs).unwrap_or_default();
        let subs = subs
            .into_iter()
            .map(|(f, q)| (f, crate::sources::mqtt::qos(q)))
            .collect();
        index.insert(client.clone(), sessions.len());
        sessions.push(StoredSession {
            client,
            owner,
            subs,
            queue: Vec::new(),
        });
    }
    let mut stmt = conn.prepare("SELECT client, id, topic, payload FROM queue ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    for row in rows {
        let (client, id, topic, payload) = row?;
        if let Some(&i) = index.get(&client) {
            sessions[i].queue.push((
                id as u64,
                Arc::new(Message {
                    topic,
                    payload: Bytes::from(payload),
                    qos: QoS::AtLeastOnce,
                }),
            ));
        }
    }
    let mut stmt = conn.prepare("SELECT topic, payload, qos FROM retained")?;
    let retained = stmt
        .query_map([], |r| {
            let topic: String = r.get(0)?;
            let qos = crate::sources::mqtt::qos(r.get(2)?);
            Ok((
                topic.clone(),
                Arc::new(Message {
                    topic,
                    payload: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                    qos,
                }),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((sessions, retained))
}

/// Writes one round's ops in one transaction.
fn write(conn: &mut Connection, ops: &[Op]) -> rusqlite::Result<()> {
    // An insert acknowledged in the same round is written by neither op.
    let inserted: HashSet<(&str, u64)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Insert { client, id, .. } => Some((client.as_str(), *id)),
            _ => None,
        })
        .collect();
    let cancelled: HashSet<(&str, u64)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Delete { client, id } if inserted.contains(&(client.as_str(), *id)) => {
                Some((client.as_str(), *id))
            }
            _ => None,
        })
        .collect();
    let writes = ops.iter().any(|op| match op {
        Op::Insert { client, id, .. } | Op::Delete { client, id } => {
            !cancelled.contains(&(client.as_str(), *id))
        }
        _ => true,
    });
    if !writes {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for op in ops {
        match op {
            Op::Session {
                client,
                owner,
                subs,
            } => {
                let subs = serde_json::to_string(subs).unwrap_or_else(|_| "[]".into());
                tx.prepare_cached(
                    "INSERT INTO sessions (client, owner, subs) VALUES (?1, ?2, ?3)
                     ON CONFLICT(client) DO UPDATE SET owner = ?2, subs = ?3",
                )?
                .execute(params![client, owner, subs])?;
            }
            Op::DropSession { client } => {
                tx.prepare_cached("DELETE FROM sessions WHERE client = ?1")?
                    .execute(params![client])?;
                tx.prepare_cached("DELETE FROM queue WHERE client = ?1")?
                    .execute(params![client])?;
            }
            Op::Insert { client, id, msg } => {
                if !cancelled.contains(&(client.as_str(), *id)) {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO queue (client, id, topic, payload) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![client, *id as i64, msg.topic, &msg.payload[..]])?;
                }
            }
            Op::Delete { client, id } => {
                if !cancelled.contains(&(client.as_str(), *id)) {
                    tx.prepare_cached("DELETE FROM queue WHERE client = ?1 AND id = ?2")?
                        .execute(params![client, *id as i64])?;
                }
            }
            Op::Retain { topic, msg } => match msg {
                Some(m) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO retained (topic, payload, qos) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![topic, &m.payload[..], m.qos as u8])?;
                }
                None => {
                    tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
                        .execute(params![topic])?;
                }
            },
        }
    }
    tx.commit()
}

/// The store thread's ends.
pub struct StoreThread {
    /// The last op sequence number that is durable.
    pub committed: watch::Receiver<u64>,
    /// Unparked when ops are queued.
    pub thread: std::thread::Thread,
    /// Ends with the thread.
    pub join: std::thread::JoinHandle<()>,
}

/// Starts the store thread. It runs until `stop` is set and no op is left.
pub fn spawn(
    mut conn: Connection,
    state: Arc<Mutex<State>>,
    health: Arc<Health>,
    errors: prometheus_client::metrics::counter::Counter,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<StoreThread> {
    use std::sync::atomic::Ordering;
    let (tx, committed) = watch::channel(0u64);
    let join = std::thread::Builder::new()
        .name("campusgw-broker-store".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                let pending = lock(&state).ops_pending();
                if pending == 0 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    // Unparked by whoever queues an op, and by `stop`.
                    std::thread::park();
                    continue;
                }
                // Let acknowledgements of what was just routed arrive.
                std::thread::sleep(ROUND);
                let (ops, seq) = lock(&state).take_ops();
                // A failed round is retried with the same ops: nothing is
                // acknowledged to a publisher until it is written.
                let mut backoff = Duration::from_millis(100);
                loop {
                    match write(&mut conn, &ops) {
                        Ok(()) => {
                            if failing {
                                failing = false;
                                info!("The broker's store is writable again.");
                                health.set(COMPONENT, Status::Ok, None);
                            }
                            break;
                        }
                        Err(e) => {
                            errors.inc();
                            if !failing {
                                failing = true;
                                error!(error = %e, "Cannot write broker.db; publishers are not acknowledged until it works again.");
                                health.set(
                                    COMPONENT,
                                    Status::Degraded,
                                    Some(format!("broker.db: {e}")),
                                );
                            }
                            if stop.load(Ordering::Acquire) && backoff > Duration::from_secs(2) {
                                return;
                            }
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                tx.send_replace(seq);
            }
        })?;
    Ok(StoreThread {
        committed,
        thread: join.thread().clone(),
        join,
    })
}

/// The state's lock; a panic elsewhere does not make it unusable.
pub fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::state::Limits;

    #[test]
    fn sessions_queues_and_retained_messages_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.db");
        let limits = Limits {
            max_queued: 100,
            max_inflight: 10,
            max_sessions: 10,
            max_retained: 10,
            max_retained_bytes: 1 << 20,
        };
        let mut conn = open(&path).unwrap();
        let mut s = State::new(limits, Some("gw".into()));
        s.connect("gw", "(gateway)", false).unwrap();
        s.subscribe("gw", &[("campus/#".into(), QoS::AtLeastOnce)]);
        let m = |t: &str| {
            Arc::new(Message {
                topic: t.into(),
                payload: Bytes::from_static(b"{\"x\":1}"),
                qos: QoS::AtLeastOnce,
            })
        };
        s.publish(m("campus/a"), false);
        s.publish(m("campus/b"), true);
        let (ops, _) = s.take_ops();
        write(&mut conn, &ops).unwrap();
        drop(conn);

        let conn = open(&path).unwrap();
        let (sessions, retained) = load(&conn).unwrap();
        let mut back = State::new(limits, Some("gw".into()));
        back.restore(sessions, retained);
        let a = back.connect("gw", "(gateway)", false).unwrap();
        assert!(a.present);
        let mut out = Vec::new();
        back.outgoing("gw", a.conn, &mut out);
        let topics: Vec<_> = out.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, ["campus/a", "campus/b"]);
        // The retained one is there for a new subscriber too.
        let d = back.connect("d", "d", true).unwrap();
        back.subscribe("d", &[("campus/b".into(), QoS::AtMostOnce)]);
        out.clear();
        back.outgoing("d", d.conn, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn an_insert_acknowledged_in_the_same_round_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("broker.db")).unwrap();
        let msg = Arc::new(Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
        });
        let ops = vec![
            Op::Insert {
                client: "gw".into(),
                id: 1,
                msg: msg.clone(),
            },
            Op::Insert {
                client: "gw".into(),
                id: 2,
                msg,
            },
            Op::Delete {
                client: "gw".into(),
                id: 1,
            },
        ];
        write(&mut conn, &ops).unwrap();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM queue")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [2]);
    }
}
