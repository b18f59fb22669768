//! One client connection of the built-in broker: CONNECT and its checks,
//! then packets in and out until it ends.
//!
//! Reading is paused, never dropped: while the connection is over its
//! publish rate, and (for everyone but the gateway) while the gateway's own
//! session holds the feed. A QoS 1 or 2 PUBLISH is acknowledged in arrival
//! order once the store has committed what routing it queued. A message
//! over the size limit is not buffered: its header is read for the packet
//! id, it is acknowledged (so the publisher does not send it again) and its
//! bytes are skipped as they come.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::acl::{self, Principal};
use super::state::{Message, Refusal};
use super::store::lock;
use super::{Listener, Shared};

/// How long a new connection has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The idle limit of a client that asked for no keep-alive.
const NO_KEEP_ALIVE_IDLE: Duration = Duration::from_secs(600);
/// The longest client id taken.
const CLIENT_ID_MAX: usize = 128;
/// Room for the topic and headers beyond the payload limit.
const HEADER_ROOM: usize = 65_536 + 16;
/// Sent before closing a refused CONNECT after a wrong password: slows guessing.
const REFUSE_DELAY: Duration = Duration::from_secs(1);
/// How often a publisher paused for the gateway's session looks again.
const HELD_RECHECK: Duration = Duration::from_millis(20);

/// Why a connection ended (a metric label and a log word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// DISCONNECT.
    Clean,
    /// The socket closed, or a read or write failed.
    Lost,
    /// Nothing for 1.5 × keep-alive.
    KeepAlive,
    /// A packet that breaks the protocol.
    Protocol,
    /// Another connection took the session.
    TakenOver,
    /// Its account was removed or changed by a reload of the users file.
    Revoked,
    /// The broker is stopping.
    Shutdown,
    /// CONNECT refused.
    Refused,
}

/// Serves one accepted connection to its end.
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, listener: Listener, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut c = Conn {
        stream,
        inbuf: BytesMut::with_capacity(4096),
        out: BytesMut::with_capacity(4096),
        shared,
        peer,
    };
    let end = c.run(listener).await;
    debug!(peer = %peer, end = ?end, "Broker connection ended.");
}

struct Conn<S> {
    stream: S,
    inbuf: BytesMut,
    out: BytesMut,
    shared: Arc<Shared>,
    peer: SocketAddr,
}

/// What the client said in CONNECT, once accepted.
struct Client {
    id: String,
    principal: Principal,
    conn: u64,
    keep_alive: Duration,
    will: Option<(Arc<Message>, bool)>,
    /// Woken when something is queued for this session.
    wake: Arc<tokio::sync::Notify>,
    /// Cancelled when another connection takes the session over.
    kick: tokio_util::sync::CancellationToken,
}

/// An oversized PUBLISH being skipped.
struct Skipping {
    left: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn run(&mut self, listener: Listener) -> End {
        let connect = match tokio::time::timeout(CONNECT_TIMEOUT, self.read_connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(end)) => return end,
            Err(_) => {
                self.shared.metrics.broker.refused("connect_timeout");
                return End::Lost;
            }
        };
        let client = match self.accept(connect, listener).await {
            Ok(c) => c,
            Err(end) => return end,
        };
        let end = self.session(&client).await;
        lock(&self.shared.state).disconnect(&client.id, client.conn);
        self.counted(&client.principal, -1);
        if end != End::Clean && end != End::TakenOver && end != End::Shutdown {
            if let Some((will, retain)) = &client.will {
                let seq = lock(&self.shared.state).publish(will.clone(), *retain);
                self.shared.stored(seq);
            }
        }
        if matches!(end, End::KeepAlive | End::Protocol) {
            info!(client = %client.id, user = client.principal.name(), peer = %self.peer, end = ?end, "Broker connection closed.");
        }
        end
    }

    /// Reads until one whole CONNECT is there.
    async fn read_connect(&mut self) -> Result<rumqttc::Connect, End> {
        loop {
            match Packet::read(&mut self.inbuf, HEADER_ROOM) {
                Ok(Packet::Connect(c)) => return Ok(c),
                Ok(_) => {
                    self.shared.metrics.broker.refused("protocol");
                    return Err(End::Protocol);
                }
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(rumqttc::Error::InvalidProtocolLevel(_)) => {
                    self.shared.metrics.broker.refused("protocol_version");
                    return Err(self.refuse(ConnectReturnCode::RefusedProtocolVersion).await);
                }
                Err(_) => {
                    self.shared.metrics.broker.refused("protocol");
                    return Err(End::Protocol);
                }
            }
            match self.stream.read_buf(&mut self.inbuf).await {
                Ok(0) | Err(_) => return Err(End::Lost),
                Ok(_) => {}
            }
        }
    }

    /// Who the CONNECT says it is, if its credentials hold on `listener`;
    /// else the CONNACK code and the metric's reason.
    async fn authenticate(
        &self,
        c: &rumqttc::Connect,
        listener: Listener,
    ) -> Result<Principal, (ConnectReturnCode, &'static str)> {
        use ConnectReturnCode as Code;
        if c.protocol != rumqttc::Protocol::V4 {
            return Err((Code::RefusedProtocolVersion, "protocol_version"));
        }
        match (&c.login, listener) {
            (Some(l), Listener::Internal) => {
                let secret = self.shared.internal_secret.as_bytes();
                if l.username == super::INTERNAL_USER && constant_eq(l.password.as_bytes(), secret)
                {
                    Ok(Principal::Internal)
                } else {
                    Err((Code::NotAuthorized, "bad_credentials"))
                }
            }
            (None, Listener::Internal) => Err((Code::NotAuthorized, "anonymous")),
            (None, _) if self.shared.allow_anonymous => Ok(Principal::Anonymous),
            (None, _) => Err((Code::NotAuthorized, "anonymous")),
            (Some(l), _) => {
                let accounts = self.shared.accounts();
                let (user, password) = (l.username.clone(), l.password.clone());
                // One argon2 at a time: a burst of wrong passwords costs one
                // core, and the alarm path keeps the other.
                let permit = self.shared.hashing.clone().acquire_owned().await;
                let grants = if accounts.knows(&user) && permit.is_ok() {
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        accounts.verify(&user, password.as_bytes())
                    })
                    .await
                    .ok()
                    .flatten()
                } else {
                    None
                };
                grants
                    .map(Principal::User)
                    .ok_or((Code::BadUserNamePassword, "bad_credentials"))
            }
        }
    }

    /// Authenticates and attaches the session; answers CONNACK either way.
    async fn accept(&mut self, c: rumqttc::Connect, listener: Listener) -> Result<Client, End> {
        let verdict = self.authenticate(&c, listener).await;
        let principal = match verdict {
            Ok(p) => p,
            Err((code, reason)) => {
                self.shared.metrics.broker.refused(reason);
                warn!(peer = %self.peer, user = c.login.as_ref().map_or("", |l| l.username.as_str()), reason, "Broker connection refused.");
                if reason == "bad_credentials" {
                    tokio::time::sleep(REFUSE_DELAY).await;
                }
                return Err(self.refuse(code).await);
            }
        };
        let mut id = c.client_id.clone();
        let bad_id = id.len() > CLIENT_ID_MAX
            || id.chars().any(char::is_control)
            || (id.is_empty() && !c.clean_session);
        if bad_id {
            self.shared.metrics.broker.refused("client_id");
            return Err(self.refuse(ConnectReturnCode::BadClientId).await);
        }
        if id.is_empty() {
            id = format!("auto-{}", self.shared.next_auto_id());
        }
        // The gateway's ids (its source's and its alarm publisher's): a
        // device squatting one would keep the gateway from its own feed.
        let gateways = id == self.shared.feed_client
            || id.strip_prefix(self.shared.feed_client.as_str())
                == Some(crate::alarms::publish::CLIENT_SUFFIX);
        if principal != Principal::Internal && gateways {
            self.shared.metrics.broker.refused("client_id");
            warn!(peer = %self.peer, client = %id, user = principal.name(), "Broker connection refused: the client id is the gateway's.");
            return Err(self.refuse(ConnectReturnCode::BadClientId).await);
        }
        let will = match &c.last_will {
            Some(w) if !acl::valid_topic(&w.topic) || !principal.may_publish(&w.topic) => {
                self.shared.metrics.broker.refused("will_denied");
                warn!(peer = %self.peer, user = principal.name(), topic = %w.topic, "Broker connection refused: its will names a topic it may not publish to.");
                return Err(self.refuse(ConnectReturnCode::NotAuthorized).await);
            }
            Some(w) => Some((
                Arc::new(Message {
                    topic: w.topic.clone(),
                    payload: w.message.clone(),
                    qos: if w.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    },
                }),
                w.retain,
            )),
            None => None,
        };
        let attached = lock(&self.shared.state).connect(&id, principal.name(), c.clean_session);
        let attached = match attached {
            Ok(a) => a,
            Err(r) => {
                let reason = match r {
                    Refusal::NotOwner => "session_owner",
                    Refusal::TooManySessions => "sessions_full",
                };
                self.shared.metrics.broker.refused(reason);
                warn!(peer = %self.peer, client = %id, user = principal.name(), reason, "Broker connection refused.");
                let code = match r {
                    Refusal::NotOwner => ConnectReturnCode::BadClientId,
                    Refusal::TooManySessions => ConnectReturnCode::ServiceUnavailable,
                };
                return Err(self.refuse(code).await);
            }
        };
        self.counted(&principal, 1);
        let keep_alive = match c.keep_alive {
            0 => NO_KEEP_ALIVE_IDLE,
            s => Duration::from_millis(u64::from(s) * 1500),
        };
        debug!(client = %id, user = principal.name(), peer = %self.peer, present = attached.present, "Broker client connected.");
        let client = Client {
            id,
            principal,
            conn: attached.conn,
            keep_alive,
            will,
            wake: attached.wake,
            kick: attached.kick,
        };
        if self
            .send_now(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                attached.present,
            )))
            .await
            .is_err()
        {
            lock(&self.shared.state).disconnect(&client.id, client.conn);
            self.counted(&client.principal, -1);
            return Err(End::Lost);
        }
        Ok(client)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The packets of an attached session until the connection ends.
    async fn session(&mut self, client: &Client) -> End {
        let (wake, kick) = (&client.wake, &client.kick);
        let shared = self.shared.clone();
        let mut committed = shared.committed.clone();
        let mut accounts = shared.accounts_changed.subscribe();
        // PUBACK/PUBREC to send once the store has committed `seq`, in order.
        let mut pending: VecDeque<(Packet, u64)> = VecDeque::new();
        // QoS 2 packet ids received and not yet released.
        let mut awaiting_rel: HashSet<u16> = HashSet::new();
        let mut skipping: Option<Skipping> = None;
        let mut deadline = Instant::now() + client.keep_alive;
        let rate = f64::from(shared.max_publish_rate.max(1));
        let mut tokens = rate;
        let mut refilled = Instant::now();
        let mut throttled_until: Option<Instant> = None;
        let mut outgoing = Vec::new();
        let limit = shared.max_payload_bytes + HEADER_ROOM;
        let is_gateway = client.principal == Principal::Internal;
        // Anything queued before we attached.
        wake.notify_one();
        loop {
            // Acknowledgements whose messages are durable, in arrival order.
            let done = *committed.borrow_and_update();
            while pending.front().is_some_and(|(_, seq)| *seq <= done) {
                if let Some((p, _)) = pending.pop_front() {
                    if p.write(&mut self.out, usize::MAX).is_err() {
                        return End::Protocol;
                    }
                }
            }
            if !self.out.is_empty() {
                match tokio::time::timeout(WRITE_TIMEOUT, self.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Lost,
                    Err(_) => {
                        info!(client = %client.id, "Broker client does not read; closing.");
                        return End::Lost;
                    }
                }
            }
            let held = !is_gateway && shared.held.load(std::sync::atomic::Ordering::Relaxed);
            let throttled = throttled_until.is_some_and(|t| t > Instant::now());
            let reading = !held && !throttled;
            if !reading {
                // Its silence is ours: not a dead client.
                deadline = Instant::now() + client.keep_alive;
            }
            // Only a connection with an acknowledgement to release listens to
            // the store's rounds (hundreds of idle devices need not wake).
            let waiting = !pending.is_empty();
            tokio::select! {
                biased;
                () = shared.cancel.cancelled() => return End::Shutdown,
                () = kick.cancelled() => return End::TakenOver,
                () = tokio::time::sleep_until(deadline) => return End::KeepAlive,
                r = accounts.changed() => {
                    if r.is_err() {
                        return End::Shutdown;
                    }
                    if let Principal::User(g) = &client.principal {
                        if !shared.accounts().still(g) {
                            info!(client = %client.id, user = %g.name, "Broker: the account was removed or changed; closing its connection.");
                            return End::Revoked;
                        }
                    }
                }
                r = committed.changed(), if waiting => {
                    if r.is_err() {
                        return End::Shutdown;
                    }
                }
                () = wake.notified() => {
                    outgoing.clear();
                    lock(&shared.state).outgoing(&client.id, client.conn, &mut outgoing);
                    for p in outgoing.drain(..) {
                        shared.metrics.broker.messages_out.inc();
                        if Packet::Publish(p).write(&mut self.out, usize::MAX).is_err() {
                            return End::Protocol;
                        }
                    }
                }
                // Re-checked now and then: the gateway's session catching up.
                () = tokio::time::sleep(HELD_RECHECK), if held => {}
                () = tokio::time::sleep_until(throttled_until.unwrap_or(deadline)), if throttled => {}
                r = self.stream.read_buf(&mut self.inbuf), if reading => {
                    match r {
                        Ok(0) | Err(_) => return End::Lost,
                        Ok(_) => {}
                    }
                    deadline = Instant::now() + client.keep_alive;
                    loop {
                        if let Some(s) = &mut skipping {
                            let n = s.left.min(self.inbuf.len());
                            self.inbuf.advance(n);
                            s.left -= n;
                            if s.left > 0 {
                                break;
                            }
                            skipping = None;
                        }
                        let packet = match Packet::read(&mut self.inbuf, limit) {
                            Ok(p) => p,
                            Err(rumqttc::Error::InsufficientBytes(_)) => break,
                            Err(rumqttc::Error::PayloadSizeLimitExceeded(_)) => {
                                match oversized(&self.inbuf) {
                                    Oversized::NeedMore => break,
                                    Oversized::Publish { pkid, qos, total } => {
                                        shared.metrics.broker.refused("payload_too_large");
                                        if let Some(held) = shared.log_limit.check("payload_too_large") {
                                            warn!(client = %client.id, bytes = total, held_back = held, "Broker: message over max_payload_bytes refused (acknowledged, not delivered).");
                                        }
                                        match qos {
                                            QoS::AtLeastOnce => pending.push_back((Packet::PubAck(PubAck::new(pkid)), 0)),
                                            QoS::ExactlyOnce => {
                                                awaiting_rel.insert(pkid);
                                                pending.push_back((Packet::PubRec(PubRec::new(pkid)), 0));
                                            }
                                            QoS::AtMostOnce => {}
                                        }
                                        let have = self.inbuf.len().min(total);
                                        self.inbuf.advance(have);
                                        skipping = Some(Skipping { left: total - have });
                                        continue;
                                    }
                                    Oversized::Other => {
                                        shared.metrics.broker.refused("protocol");
                                        return End::Protocol;
                                    }
                                }
                            }
                            Err(e) => {
                                shared.metrics.broker.refused("protocol");
                                debug!(client = %client.id, error = %e, "Broker: malformed packet.");
                                return End::Protocol;
                            }
                        };
                        match packet {
                            Packet::Publish(p) => {
                                // Token bucket: refill, spend one; empty pauses reading.
                                let now = Instant::now();
                                tokens = (tokens + now.duration_since(refilled).as_secs_f64() * rate).min(rate);
                                refilled = now;
                                tokens -= 1.0;
                                if tokens < 0.0 && !is_gateway {
                                    shared.metrics.broker.throttled.inc();
                                    throttled_until = Some(now + Duration::from_secs_f64(-tokens / rate));
                                }
                                if let Some(ack) = self.publish(client, p, &mut awaiting_rel) {
                                    pending.push_back(ack);
                                }
                            }
                            Packet::PubAck(a) => {
                                let mut state = lock(&shared.state);
                                state.acked(&client.id, client.conn, a.pkid);
                                if is_gateway {
                                    shared.set_held(&state);
                                }
                                drop(state);
                                wake.notify_one();
                            }
                            Packet::PubRel(r) => {
                                awaiting_rel.remove(&r.pkid);
                                pending.push_back((Packet::PubComp(PubComp::new(r.pkid)), 0));
                            }
                            Packet::Subscribe(s) => {
                                let mut allowed = Vec::new();
                                let mut codes = Vec::with_capacity(s.filters.len());
                                for f in &s.filters {
                                    if acl::valid_filter(&f.path) && client.principal.may_subscribe(&f.path) {
                                        allowed.push((f.path.clone(), f.qos));
                                        codes.push(None);
                                    } else {
                                        shared.metrics.broker.refused("subscribe_denied");
                                        warn!(client = %client.id, user = client.principal.name(), filter = %f.path, "Broker: subscription refused (not in the user's subscribe filters).");
                                        codes.push(Some(SubscribeReasonCode::Failure));
                                    }
                                }
                                let (granted, seq) = {
                                    let mut state = lock(&shared.state);
                                    (state.subscribe(&client.id, &allowed), state.last_op())
                                };
                                let mut granted = granted.into_iter();
                                let codes = codes
                                    .into_iter()
                                    .map(|c| {
                                        c.unwrap_or_else(|| match granted.next().flatten() {
                                            Some(q) => SubscribeReasonCode::Success(q),
                                            None => {
                                                shared.metrics.broker.refused("subscriptions_full");
                                                SubscribeReasonCode::Failure
                                            }
                                        })
                                    })
                                    .collect();
                                // After the session is saved: a SUBACK means it survives a restart.
                                shared.stored(seq);
                                pending.push_back((Packet::SubAck(SubAck::new(s.pkid, codes)), seq));
                                wake.notify_one();
                            }
                            Packet::Unsubscribe(u) => {
                                let seq = {
                                    let mut state = lock(&shared.state);
                                    state.unsubscribe(&client.id, &u.topics);
                                    state.last_op()
                                };
                                shared.stored(seq);
                                pending.push_back((Packet::UnsubAck(UnsubAck::new(u.pkid)), seq));
                            }
                            Packet::PingReq => {
                                pending.push_back((Packet::PingResp, 0));
                            }
                            Packet::Disconnect => {
                                // Acknowledge what can be, then go.
                                return End::Clean;
                            }
                            Packet::PubRec(_) | Packet::PubComp(_) | Packet::Connect(_)
                            | Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_)
                            | Packet::PingResp => {
                                // We never send QoS 2, and the rest are the server's.
                                shared.metrics.broker.refused("protocol");
                                return End::Protocol;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Routes one PUBLISH; returns its acknowledgement and the op sequence
    /// number it waits for.
    fn publish(
        &mut self,
        client: &Client,
        p: Publish,
        awaiting_rel: &mut HashSet<u16>,
    ) -> Option<(Packet, u64)> {
        let shared = &self.shared;
        shared.metrics.broker.messages_in.inc();
        let ack = |seq| match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some((Packet::PubAck(PubAck::new(p.pkid)), seq)),
            QoS::ExactlyOnce => Some((Packet::PubRec(PubRec::new(p.pkid)), seq)),
        };
        // A refused or repeated message has nothing of its own to wait for
        // (0): the FIFO of acknowledgements keeps it behind those before it.
        if p.qos == QoS::ExactlyOnce && !awaiting_rel.insert(p.pkid) {
            // The same QoS 2 message again before its release: routed already.
            return ack(0);
        }
        if !acl::valid_topic(&p.topic) {
            shared.metrics.broker.refused("bad_topic");
            return ack(0);
        }
        if p.payload.len() > shared.max_payload_bytes {
            shared.metrics.broker.refused("payload_too_large");
            return ack(0);
        }
        if !client.principal.may_publish(&p.topic) {
            shared.metrics.broker.refused("publish_denied");
            if let Some(held) = shared.log_limit.check("publish_denied") {
                warn!(client = %client.id, user = client.principal.name(), topic = %p.topic, held_back = held, "Broker: publish refused (not in the user's publish filters); acknowledged and dropped.");
            }
            return ack(0);
        }
        let qos = if p.qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let msg = Arc::new(Message {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos,
        });
        let seq = {
            let mut state = lock(&shared.state);
            let seq = state.publish(msg, p.retain);
            shared.set_held(&state);
            seq
        };
        shared.stored(seq);
        ack(seq)
    }

    /// Answers a refused CONNECT (the reason was counted and logged).
    async fn refuse(&mut self, code: ConnectReturnCode) -> End {
        let _ = self
            .send_now(Packet::ConnAck(ConnAck::new(code, false)))
            .await;
        End::Refused
    }

    /// The connection gauge counts clients, not the gateway's own two.
    fn counted(&self, principal: &Principal, by: i64) {
        if *principal != Principal::Internal {
            self.shared.metrics.broker.connections.inc_by(by);
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        self.stream.flush().await
    }

    /// Writes one packet at once (CONNACK).
    async fn send_now(&mut self, p: Packet) -> std::io::Result<()> {
        p.write(&mut self.out, usize::MAX)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tokio::time::timeout(WRITE_TIMEOUT, self.flush())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }
}

enum Oversized {
    NeedMore,
    Publish { pkid: u16, qos: QoS, total: usize },
    Other,
}

/// Reads what an oversized packet's first bytes say: for a PUBLISH, its
/// QoS, packet id and whole length, once enough of it is buffered.
fn oversized(buf: &[u8]) -> Oversized {
    let Some(&byte1) = buf.first() else {
        return Oversized::NeedMore;
    };
    if byte1 >> 4 != 3 {
        return Oversized::Other;
    }
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Oversized::NeedMore;
        };
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Oversized::Other;
        }
    }
    let qos = match (byte1 >> 1) & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return Oversized::Other,
    };
    let (Some(&h), Some(&l)) = (buf.get(i), buf.get(i + 1)) else {
        return Oversized::NeedMore;
    };
    let topic_len = usize::from(u16::from_be_bytes([h, l]));
    let pkid_at = i + 2 + topic_len;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        let (Some(&h), Some(&l)) = (buf.get(pkid_at), buf.get(pkid_at + 1)) else {
            return Oversized::NeedMore;
        };
        u16::from_be_bytes([h, l])
    };
    Oversized::Publish {
        pkid,
        qos,
        total: i + len,
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_publish_gives_its_packet_id_and_length() {
        let mut p = Publish::new("campus/y/smoke/a", QoS::AtLeastOnce, vec![b'x'; 300]);
        p.pkid = 7;
        let mut buf = BytesMut::new();
        Packet::Publish(p).write(&mut buf, usize::MAX).unwrap();
        let whole = buf.len();
        assert!(matches!(oversized(&buf[..3]), Oversized::NeedMore));
        match oversized(&buf[..30]) {
            Oversized::Publish {
                pkid, qos, total, ..
            } => {
                assert_eq!(pkid, 7);
                assert_eq!(qos, QoS::AtLeastOnce);
                assert_eq!(total, whole);
            }
            _ => panic!("a publish"),
        }
        assert!(matches!(oversized(&[0x82, 0x01]), Oversized::Other));
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_the_header_reader_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = oversized(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = Packet::read(&mut buf, 1024);
        }
    }
}
