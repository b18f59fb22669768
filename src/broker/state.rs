//! The broker's sessions, subscriptions and retained messages, and the
//! routing of a message to them. No I/O: connections call in under one
//! lock, and every change that must outlive a restart is queued as an
//! [`Op`] for the store thread, which writes them in one transaction each
//! round (see `store`).
//!
//! # Durability
//!
//! A QoS 1 message routed to a persistent session (`clean_session = false`,
//! the gateway's own among them) is an `Op::Insert`; the publisher's PUBACK
//! waits until the store has committed up to that op's sequence number. An
//! acknowledgement from the subscriber is an `Op::Delete`; when both fall in
//! the same round the store writes neither, so a subscriber that persists
//! faster than the store's round costs no disk write at all.
//!
//! # Bounds
//!
//! A session queues at most `max_queued` messages; past it the oldest is
//! dropped and counted, except for a session that holds the feed (the
//! gateway's: its subscriber persists everything it is given), for which
//! publishers are paused instead (see [`State::feed_held`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::{Publish, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::acl;

/// A message as published.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// The topic name.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with (at most 1 is kept: 2 is delivered as 1).
    pub qos: QoS,
}

/// A persistent session as the store keeps it.
#[derive(Debug)]
pub struct StoredSession {
    /// Client id.
    pub client: String,
    /// Owner (principal name).
    pub owner: String,
    /// Filters with granted QoS.
    pub subs: Vec<(String, QoS)>,
    /// Queued messages, oldest first.
    pub queue: Vec<(u64, Arc<Message>)>,
}

/// A message waiting for (or in flight to) one session.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The broker-wide message id (the store's key).
    pub id: u64,
    /// The message.
    pub msg: Arc<Message>,
    /// The QoS of this delivery: the lower of the publish's and the subscription's.
    pub qos: QoS,
    /// Sent with the retain flag (a retained message on subscribe).
    pub retain: bool,
    /// Sent before, on a connection that ended unacknowledged.
    pub dup: bool,
    /// In the store: its acknowledgement deletes it there.
    pub stored: bool,
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// Who owns it: only the same principal may take it over.
    pub owner: String,
    /// Kept across disconnects and restarts.
    pub persistent: bool,
    /// Filters with their granted QoS.
    pub subs: Vec<(String, QoS)>,
    queue: VecDeque<Queued>,
    inflight: VecDeque<(u16, Queued)>,
    next_pkid: u16,
    /// The connection that has it, if any.
    online: Option<u64>,
    /// Wakes its connection when something is queued.
    pub wake: Arc<Notify>,
    /// Cancelled to end its connection (a takeover).
    kick: CancellationToken,
    /// The gateway's own session: publishers wait for it instead of it dropping.
    holds_feed: bool,
}

impl Session {
    fn new(owner: &str, persistent: bool) -> Self {
        Self {
            owner: owner.to_owned(),
            persistent,
            subs: Vec::new(),
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            next_pkid: 0,
            online: None,
            wake: Arc::new(Notify::new()),
            kick: CancellationToken::new(),
            holds_feed: false,
        }
    }

    /// Messages waiting or in flight.
    pub fn backlog(&self) -> usize {
        self.queue.len() + self.inflight.len()
    }

    /// What was in flight goes back to the front, marked as sent before.
    fn requeue_inflight(&mut self) {
        while let Some((_, mut q)) = self.inflight.pop_back() {
            q.dup = true;
            self.queue.push_front(q);
        }
    }

    fn pkid(&mut self) -> u16 {
        // Skips ids still in flight (a window is far below 65,535).
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let id = self.next_pkid;
            if !self.inflight.iter().any(|(p, _)| *p == id) {
                return id;
            }
        }
    }
}

/// A change the store writes.
#[derive(Debug, Clone)]
pub enum Op {
    /// A persistent session, created or with new subscriptions.
    Session {
        /// Client id.
        client: String,
        /// Owner (principal name).
        owner: String,
        /// Filters and granted QoS (0 or 1).
        subs: Vec<(String, u8)>,
    },
    /// A persistent session ended (a clean connect under its id), with its queue.
    DropSession {
        /// Client id.
        client: String,
    },
    /// A QoS 1 message for a persistent session.
    Insert {
        /// Client id.
        client: String,
        /// Message id.
        id: u64,
        /// The message.
        msg: Arc<Message>,
    },
    /// Acknowledged (or dropped): gone from the store.
    Delete {
        /// Client id.
        client: String,
        /// Message id.
        id: u64,
    },
    /// A retained message set (`Some`) or cleared.
    Retain {
        /// Topic.
        topic: String,
        /// The message, or `None` to clear.
        msg: Option<Arc<Message>>,
    },
}

/// Limits of the state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages a session may hold (queued and in flight).
    pub max_queued: usize,
    /// Messages in flight to one connection.
    pub max_inflight: usize,
    /// Persistent sessions kept.
    pub max_sessions: usize,
    /// Retained topics kept.
    pub max_retained: usize,
    /// Bytes of retained topics and payloads kept.
    pub max_retained_bytes: usize,
}

/// Subscriptions one session may hold.
pub const MAX_SUBSCRIPTIONS: usize = 128;

/// Counts the state keeps for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Dropped because a session's queue was full.
    pub dropped_queue_full: u64,
    /// Retained messages refused because the store of them was full.
    pub dropped_retained_full: u64,
}

/// Why a CONNECT was refused by the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client id is another principal's session.
    NotOwner,
    /// `max_sessions` persistent sessions exist already.
    TooManySessions,
}

/// Every session, subscription and retained message.
#[derive(Debug)]
pub struct State {
    sessions: HashMap<String, Session>,
    /// Sessions with at least one subscription: what routing looks at.
    subscribed: HashSet<String>,
    retained: BTreeMap<String, Arc<Message>>,
    /// Topic and payload bytes of `retained`.
    retained_bytes: usize,
    next_id: u64,
    next_conn: u64,
    ops: Vec<Op>,
    /// Sequence number of the last op queued.
    op_seq: u64,
    limits: Limits,
    /// Counts for the metrics.
    pub tally: Tally,
    /// The gateway's own client id: its session holds the feed.
    feed_client: Option<String>,
}

/// What a connect gets.
#[derive(Debug)]
pub struct Attached {
    /// This connection's number (its claim on the session).
    pub conn: u64,
    /// The session was there already (MQTT's session present flag).
    pub present: bool,
    /// Wakes the connection when a message is queued for it.
    pub wake: Arc<Notify>,
    /// Cancelled when another connection takes the session over.
    pub kick: CancellationToken,
}

impl State {
    /// An empty state; `feed_client` is the gateway's own client id.
    pub fn new(limits: Limits, feed_client: Option<String>) -> Self {
        Self {
            sessions: HashMap::new(),
            subscribed: HashSet::new(),
            retained: BTreeMap::new(),
            retained_bytes: 0,
            next_id: 1,
            next_conn: 1,
            ops: Vec::new(),
            op_seq: 0,
            limits,
            tally: Tally::default(),
            feed_client,
        }
    }

    /// Restores what the store kept: persistent sessions with their queues
    /// (oldest first) and retained messages.
    pub fn restore(&mut self, sessions: Vec<StoredSession>, retained: Vec<(String, Arc<Message>)>) {
        for s in sessions {
            let mut session = Session::new(&s.owner, true);
            session.holds_feed = self.feed_client.as_deref() == Some(s.client.as_str());
            session.subs = s.subs;
            for (id, msg) in s.queue {
                self.next_id = self.next_id.max(id + 1);
                session.queue.push_back(Queued {
                    id,
                    msg,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    dup: false,
                    stored: true,
                });
            }
            if !session.subs.is_empty() {
                self.subscribed.insert(s.client.clone());
            }
            self.sessions.insert(s.client, session);
        }
        self.retained_bytes = retained.iter().map(|(_, m)| retained_size(m)).sum();
        self.retained = retained.into_iter().collect();
    }

    /// Makes sure the gateway's own session exists, owned by `owner` and
    /// subscribed to `filters`, before any device can publish: on a first
    /// start nothing published before the gateway's connection subscribes
    /// is lost, and no device can take its client id first.
    pub fn reserve_feed(&mut self, owner: &str, filters: &[(String, QoS)]) {
        let Some(client) = self.feed_client.clone() else {
            return;
        };
        // The configuration is what the gateway subscribes to: a topic
        // removed from it is not delivered any more.
        let s = self
            .sessions
            .entry(client.clone())
            .or_insert_with(|| Session::new(owner, true));
        s.holds_feed = true;
        s.owner = owner.to_owned();
        s.subs = filters.to_vec();
        if filters.is_empty() {
            self.subscribed.remove(&client);
        } else {
            self.subscribed.insert(client.clone());
        }
        self.save_session(&client);
    }

    /// Attaches a connection to `client`'s session, creating or cleaning it.
    /// A connection that had it is kicked.
    pub fn connect(&mut self, client: &str, owner: &str, clean: bool) -> Result<Attached, Refusal> {
        let persistent_count = || self.sessions.values().filter(|s| s.persistent).count();
        match self.sessions.get(client) {
            Some(s) if s.owner != owner => return Err(Refusal::NotOwner),
            None if !clean && persistent_count() >= self.limits.max_sessions => {
                return Err(Refusal::TooManySessions)
            }
            _ => {}
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let mut present = false;
        if let Some(old) = self.sessions.get_mut(client) {
            old.kick.cancel();
            old.online = None;
            if clean || !old.persistent {
                let was_persistent = old.persistent;
                self.sessions.remove(client);
                self.subscribed.remove(client);
                if was_persistent {
                    self.push_op(Op::DropSession {
                        client: client.to_owned(),
                    });
                }
            } else {
                present = true;
            }
        }
        if !present {
            let mut s = Session::new(owner, !clean);
            s.holds_feed = self.feed_client.as_deref() == Some(client);
            self.sessions.insert(client.to_owned(), s);
            if !clean {
                self.push_op(Op::Session {
                    client: client.to_owned(),
                    owner: owner.to_owned(),
                    subs: Vec::new(),
                });
            }
        }
        let Some(s) = self.sessions.get_mut(client) else {
            unreachable!("inserted above")
        };
        s.requeue_inflight();
        s.kick = CancellationToken::new();
        s.online = Some(conn);
        Ok(Attached {
            conn,
            present,
            wake: s.wake.clone(),
            kick: s.kick.clone(),
        })
    }

    /// The connection `conn` ended: a clean session goes, a persistent one
    /// keeps what was in flight for next time.
    pub fn disconnect(&mut self, client: &str, conn: u64) {
        let Some(s) = self.sessions.get_mut(client) else {
            return;
        };
        if s.online != Some(conn) {
            return; // taken over already
        }
        s.online = None;
        if s.persistent {
            s.requeue_inflight();
        } else {
            self.sessions.remove(client);
            self.subscribed.remove(client);
        }
    }

    /// Adds subscriptions (already allowed by the ACL) and queues the
    /// retained messages they match. Returns the granted QoS of each, `None`
    /// for one past [`MAX_SUBSCRIPTIONS`].
    pub fn subscribe(&mut self, client: &str, filters: &[(String, QoS)]) -> Vec<Option<QoS>> {
        let Some(s) = self.sessions.get_mut(client) else {
            return vec![None; filters.len()];
        };
        let mut granted = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for (filter, want) in filters {
            let qos = min_qos(*want, QoS::AtLeastOnce);
            let full = s.subs.len() >= MAX_SUBSCRIPTIONS;
            match s.subs.iter_mut().find(|(f, _)| f == filter) {
                Some(existing) => existing.1 = qos,
                None if !full => s.subs.push((filter.clone(), qos)),
                None => {
                    granted.push(None);
                    continue;
                }
            }
            granted.push(Some(qos));
            for (topic, msg) in &self.retained {
                if acl::matches(topic, filter) {
                    retained.push((msg.clone(), min_qos(msg.qos, qos)));
                }
            }
        }
        self.subscribed.insert(client.to_owned());
        let persistent = s.persistent;
        for (msg, qos) in retained {
            let id = self.next_id;
            self.next_id += 1;
            // Retained copies are sent again on the next subscribe anyway: not stored.
            self.enqueue(
                client,
                Queued {
                    id,
                    msg,
                    qos,
                    retain: true,
                    dup: false,
                    stored: false,
                },
            );
        }
        if persistent {
            self.save_session(client);
        }
        granted
    }

    /// Removes subscriptions.
    pub fn unsubscribe(&mut self, client: &str, filters: &[String]) {
        let Some(s) = self.sessions.get_mut(client) else {
            return;
        };
        s.subs.retain(|(f, _)| !filters.contains(f));
        if s.subs.is_empty() {
            self.subscribed.remove(client);
        }
        if s.persistent {
            self.save_session(client);
        }
    }

    fn save_session(&mut self, client: &str) {
        if let Some(s) = self.sessions.get(client) {
            let op = Op::Session {
                client: client.to_owned(),
                owner: s.owner.clone(),
                subs: s.subs.iter().map(|(f, q)| (f.clone(), *q as u8)).collect(),
            };
            self.push_op(op);
        }
    }

    /// Routes a published message to every matching session and keeps it
    /// when retained. Returns the op sequence number the publisher's
    /// acknowledgement must wait for (0: nothing to wait for).
    pub fn publish(&mut self, msg: Arc<Message>, retain: bool) -> u64 {
        let before = self.op_seq;
        if retain {
            self.retain(&msg);
        }
        let mut targets: Vec<(String, QoS)> = Vec::new();
        for client in &self.subscribed {
            let Some(s) = self.sessions.get(client) else {
                continue;
            };
            if s.online.is_none() && !s.persistent {
                continue;
            }
            // Overlapping subscriptions deliver once, at the highest QoS.
            let best = s
                .subs
                .iter()
                .filter(|(f, _)| acl::matches(&msg.topic, f))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8);
            if let Some(q) = best {
                targets.push((client.clone(), min_qos(msg.qos, q)));
            }
        }
        if !targets.is_empty() {
            let id = self.next_id;
            self.next_id += 1;
            for (client, qos) in targets {
                let stored = qos == QoS::AtLeastOnce
                    && self.sessions.get(&client).is_some_and(|s| s.persistent);
                if stored {
                    self.push_op(Op::Insert {
                        client: client.clone(),
                        id,
                        msg: msg.clone(),
                    });
                }
                self.enqueue(
                    &client,
                    Queued {
                        id,
                        msg: msg.clone(),
                        qos,
                        retain: false,
                        dup: false,
                        stored,
                    },
                );
            }
        }
        if self.op_seq == before {
            0
        } else {
            self.op_seq
        }
    }

    /// Keeps (or with an empty payload removes) the retained copy of a
    /// topic, within the bounds; the gateway's own alarms always fit.
    fn retain(&mut self, msg: &Arc<Message>) {
        let old = self.retained.remove(&msg.topic);
        self.retained_bytes -= old.as_ref().map_or(0, retained_size);
        if msg.payload.is_empty() {
            if old.is_some() {
                self.push_op(Op::Retain {
                    topic: msg.topic.clone(),
                    msg: None,
                });
            }
            return;
        }
        let fits = self.retained.len() < self.limits.max_retained
            && self.retained_bytes + retained_size(msg) <= self.limits.max_retained_bytes;
        if fits || msg.topic.starts_with(acl::RESERVED_PREFIX) {
            self.retained_bytes += retained_size(msg);
            self.retained.insert(msg.topic.clone(), msg.clone());
            self.push_op(Op::Retain {
                topic: msg.topic.clone(),
                msg: Some(msg.clone()),
            });
        } else {
            // The old copy is gone too: a stale value is worse than none.
            if old.is_some() {
                self.push_op(Op::Retain {
                    topic: msg.topic.clone(),
                    msg: None,
                });
            }
            self.tally.dropped_retained_full += 1;
        }
    }

    fn enqueue(&mut self, client: &str, q: Queued) {
        let Some(s) = self.sessions.get_mut(client) else {
            return;
        };
        s.queue.push_back(q);
        let mut dropped = Vec::new();
        if !s.holds_feed {
            while s.backlog() > self.limits.max_queued {
                match s.queue.pop_front() {
                    Some(old) => dropped.push(old),
                    None => break,
                }
            }
        }
        if s.online.is_some() {
            s.wake.notify_one();
        }
        for old in dropped {
            self.tally.dropped_queue_full += 1;
            if old.stored {
                self.push_op(Op::Delete {
                    client: client.to_owned(),
                    id: old.id,
                });
            }
        }
    }

    /// Takes what `client`'s connection `conn` may send now: up to the
    /// in-flight window of QoS 1 messages, with packet ids, and any QoS 0.
    pub fn outgoing(&mut self, client: &str, conn: u64, out: &mut Vec<Publish>) {
        let max_inflight = self.limits.max_inflight;
        let Some(s) = self.sessions.get_mut(client) else {
            return;
        };
        if s.online != Some(conn) {
            return;
        }
        while s.inflight.len() < max_inflight {
            let Some(q) = s.queue.pop_front() else { break };
            let mut p = Publish {
                dup: q.dup,
                qos: q.qos,
                retain: q.retain,
                topic: q.msg.topic.clone(),
                pkid: 0,
                payload: q.msg.payload.clone(),
            };
            if q.qos != QoS::AtMostOnce {
                p.pkid = s.pkid();
                s.inflight.push_back((p.pkid, q));
            }
            out.push(p);
        }
    }

    /// The subscriber acknowledged `pkid`.
    pub fn acked(&mut self, client: &str, conn: u64, pkid: u16) {
        let Some(s) = self.sessions.get_mut(client) else {
            return;
        };
        if s.online != Some(conn) {
            return;
        }
        let Some(at) = s.inflight.iter().position(|(p, _)| *p == pkid) else {
            return;
        };
        let Some((_, q)) = s.inflight.remove(at) else {
            return;
        };
        if q.stored {
            self.push_op(Op::Delete {
                client: client.to_owned(),
                id: q.id,
            });
        }
    }

    /// Whether the gateway's own session is so far behind that publishers
    /// should wait (its backlog at `max_queued` or more).
    pub fn feed_held(&self) -> bool {
        self.feed_client
            .as_ref()
            .and_then(|c| self.sessions.get(c))
            .is_some_and(|s| s.backlog() >= self.limits.max_queued)
    }

    /// Messages held for every session, and the number of sessions (all, online).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let queued = self.sessions.values().map(Session::backlog).sum();
        let online = self
            .sessions
            .values()
            .filter(|s| s.online.is_some())
            .count();
        (queued, self.sessions.len(), online)
    }

    fn push_op(&mut self, op: Op) {
        self.ops.push(op);
        self.op_seq += 1;
    }

    /// The ops queued since the last call, and the sequence number of the last.
    pub fn take_ops(&mut self) -> (Vec<Op>, u64) {
        (std::mem::take(&mut self.ops), self.op_seq)
    }

    /// The sequence number of the last op queued (0: none ever).
    pub fn last_op(&self) -> u64 {
        self.op_seq
    }

    /// Ops waiting for the store.
    pub fn ops_pending(&self) -> usize {
        self.ops.len()
    }
}

fn retained_size(m: &Arc<Message>) -> usize {
    m.topic.len() + m.payload.len()
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_queued: 3,
            max_inflight: 2,
            max_sessions: 10,
            max_retained: 10,
            max_retained_bytes: 1000,
        }
    }

    fn msg(topic: &str, qos: QoS) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"{}"),
            qos,
        })
    }

    fn sub(s: &mut State, client: &str, filter: &str) {
        s.subscribe(client, &[(filter.to_owned(), QoS::AtLeastOnce)]);
    }

    #[test]
    fn a_persistent_subscriber_gets_a_stored_copy_and_its_ack_deletes_it() {
        let mut s = State::new(limits(), None);
        let a = s.connect("gw", "gw", false).unwrap();
        sub(&mut s, "gw", "campus/#");
        s.take_ops();
        let seq = s.publish(msg("campus/y/smoke/a", QoS::AtLeastOnce), false);
        assert!(seq > 0, "the publisher waits for the store");
        let mut out = Vec::new();
        s.outgoing("gw", a.conn, &mut out);
        assert_eq!(out.len(), 1);
        s.acked("gw", a.conn, out[0].pkid);
        let (ops, _) = s.take_ops();
        assert!(matches!(ops[0], Op::Insert { .. }));
        assert!(matches!(ops[1], Op::Delete { .. }));
    }

    #[test]
    fn a_clean_subscriber_costs_the_store_nothing_and_qos_0_is_not_stored() {
        let mut s = State::new(limits(), None);
        s.connect("display", "d", true).unwrap();
        sub(&mut s, "display", "campusgw/#");
        s.take_ops();
        assert_eq!(
            s.publish(msg("campusgw/alarms", QoS::AtLeastOnce), false),
            0
        );
        s.connect("gw", "gw", false).unwrap();
        sub(&mut s, "gw", "campus/#");
        s.take_ops();
        assert_eq!(s.publish(msg("campus/a", QoS::AtMostOnce), false), 0);
    }

    #[test]
    fn what_was_in_flight_is_sent_again_marked_dup_after_a_reconnect() {
        let mut s = State::new(limits(), None);
        let a = s.connect("gw", "gw", false).unwrap();
        sub(&mut s, "gw", "#");
        for i in 0..3 {
            s.publish(msg(&format!("t/{i}"), QoS::AtLeastOnce), false);
        }
        let mut out = Vec::new();
        s.outgoing("gw", a.conn, &mut out);
        assert_eq!(out.len(), 2, "the in-flight window");
        s.disconnect("gw", a.conn);
        let b = s.connect("gw", "gw", false).unwrap();
        assert!(b.present);
        out.clear();
        s.outgoing("gw", b.conn, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].dup && out[0].topic == "t/0");
        assert!(out[1].dup && out[1].topic == "t/1");
    }

    #[test]
    fn another_principal_cannot_take_a_session_over() {
        let mut s = State::new(limits(), Some("campusgw".into()));
        s.connect("campusgw", "(gateway)", false).unwrap();
        assert_eq!(
            s.connect("campusgw", "yazhong", false).err(),
            Some(Refusal::NotOwner)
        );
        assert_eq!(
            s.connect("campusgw", "yazhong", true).err(),
            Some(Refusal::NotOwner)
        );
    }

    #[test]
    fn a_full_queue_drops_its_oldest_but_the_gateway_holds_the_feed() {
        let mut s = State::new(limits(), Some("gw".into()));
        s.connect("other", "o", false).unwrap();
        sub(&mut s, "other", "#");
        s.connect("gw", "gw", false).unwrap();
        sub(&mut s, "gw", "#");
        for i in 0..5 {
            s.publish(msg(&format!("t/{i}"), QoS::AtLeastOnce), false);
        }
        assert_eq!(s.tally.dropped_queue_full, 2);
        assert!(s.feed_held(), "the gateway keeps all 5, publishers wait");
    }

    #[test]
    fn retained_messages_go_to_new_subscribers_and_an_empty_one_clears() {
        let mut s = State::new(limits(), None);
        s.publish(msg("campusgw/status", QoS::AtLeastOnce), true);
        let a = s.connect("d", "d", true).unwrap();
        sub(&mut s, "d", "campusgw/#");
        let mut out = Vec::new();
        s.outgoing("d", a.conn, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].retain);
        s.publish(
            Arc::new(Message {
                topic: "campusgw/status".into(),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
            }),
            true,
        );
        let b = s.connect("e", "e", true).unwrap();
        sub(&mut s, "e", "campusgw/#");
        out.clear();
        s.outgoing("e", b.conn, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn the_gateway_session_is_there_before_it_connects() {
        let mut s = State::new(limits(), Some("campusgw".into()));
        s.reserve_feed("(gateway)", &[("campus/#".into(), QoS::AtLeastOnce)]);
        assert!(s.publish(msg("campus/y/smoke/a", QoS::AtLeastOnce), false) > 0);
        let a = s.connect("campusgw", "(gateway)", false).unwrap();
        assert!(a.present);
        let mut out = Vec::new();
        s.outgoing("campusgw", a.conn, &mut out);
        assert_eq!(out.len(), 1, "published before the gateway connected");
    }

    #[test]
    fn retained_copies_are_bounded_but_the_gateways_alarms_always_fit() {
        let mut s = State::new(limits(), None);
        let big = |topic: &str| {
            Arc::new(Message {
                topic: topic.into(),
                payload: Bytes::from(vec![b'x'; 400]),
                qos: QoS::AtLeastOnce,
            })
        };
        s.publish(big("campus/a"), true);
        s.publish(big("campus/b"), true);
        s.publish(big("campus/c"), true);
        assert_eq!(s.tally.dropped_retained_full, 1, "1,000 bytes at most");
        // Replacing a copy frees its bytes first.
        s.publish(big("campus/a"), true);
        assert_eq!(s.tally.dropped_retained_full, 1);
        s.publish(big("campusgw/alarm/1"), true);
        assert_eq!(
            s.tally.dropped_retained_full, 1,
            "over the budget, and kept"
        );
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_subscriptions() {
        let mut s = State::new(limits(), None);
        s.connect("d", "d", true).unwrap();
        let many: Vec<_> = (0..MAX_SUBSCRIPTIONS + 2)
            .map(|i| (format!("t/{i}"), QoS::AtLeastOnce))
            .collect();
        let granted = s.subscribe("d", &many);
        assert_eq!(granted.iter().filter(|g| g.is_none()).count(), 2);
    }

    #[test]
    fn a_takeover_kicks_the_old_connection() {
        let mut s = State::new(limits(), None);
        let a = s.connect("dev", "dev", true).unwrap();
        let b = s.connect("dev", "dev", true).unwrap();
        assert!(a.kick.is_cancelled());
        assert!(!b.kick.is_cancelled());
        s.disconnect("dev", a.conn);
        assert_eq!(
            s.sizes().1,
            1,
            "the old connection's end leaves the new session"
        );
    }
}
