//! The MQTT source: one rumqttc connection, several subscriptions.
//!
//! The event loop is polled continuously (it also sends pings and
//! reconnects); on an error we back off with a capped, doubling delay, since
//! rumqttc reconnects on the next poll with no delay of its own. Every
//! `ConnAck` resubscribes: a broker that lost our session (or a changed
//! configuration) would otherwise leave us deaf.
//!
//! # Acknowledge after persist
//!
//! Acknowledgements are manual (`set_manual_acks(true)`). Each QoS 1 message
//! gets an [`Ack`] token that travels with its reading; the source keeps the
//! message's packet id and the token's [`AckWatch`] in `unacked`, in arrival
//! order, and sends PUBACKs for the completed prefix only (MQTT 3.1.1 wants
//! them in the order the PUBLISHes came). A message that cannot become a
//! reading is confirmed at once. Completions wake this loop through a
//! `Notify`, polled in the same `select!` as the event loop, so nothing ever
//! blocks the event loop on the pipeline.
//!
//! The PUBACKs are written to the connection by this loop itself, all that
//! are ready in one write, not queued through rumqttc's request channel: its
//! event loop takes one request per turn but reads up to ten packets, so under
//! a steady inflow the acknowledgements fell ever further behind
//! (rumqtt issue #1025) and the broker's window was all that bounded us.
//!
//! Flow control: the broker sends at most `max_inflight_messages`
//! unacknowledged messages, but we do not rely on it (mosquitto 2.0.11 was
//! seen passing 300,000 at 40,000 msg/s). Polling pauses while `UNACKED_MAX`
//! messages wait for their acknowledgement or `BACKLOG_MAX` readings wait for
//! room in the pipeline; acknowledgements keep flowing meanwhile, since they
//! do not need the event loop to be polled.
//!
//! # No message stops the feed
//!
//! rumqttc drops the connection on a packet over its incoming limit, before
//! reading it, so it cannot be acknowledged: with a persistent session the
//! broker sends it again on every reconnect and nothing behind it ever
//! arrives. So the limit is the protocol's own maximum ([`MAX_PACKET_BYTES`]):
//! every message can be read, and one over `gateway.max_payload_bytes` is
//! refused (`payload_too_large`) and acknowledged like any refused message.
//! (rumqttc reports an oversize without the packet id, so refusing it
//! unread is not possible.) The cost is transient memory: the packet is
//! buffered whole before it is refused, up to 256 MiB in the worst case, and
//! the read buffer keeps that capacity until the connection ends. The
//! broker-side `message_size_limit` matched to `max_payload_bytes`
//! (`deploy/mosquitto-gateway.conf`) keeps such messages from being
//! delivered at all; this is the defence for a broker that is not set so.
//!
//! Shutdown: on cancel the source stops taking messages (those that arrive
//! later are left unacknowledged for the broker to send again), drops its
//! sender so the pipeline drains into the spool, and keeps the connection
//! up until every taken message's token has completed and its PUBACK was
//! sent, or `gateway.shutdown_timeout` passed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Packet, PubAck,
    QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{GatewayConfig, MqttConfig};
use crate::reading::Reject;
use crate::reading::{Ack, AckState, AckWatch, Reading, Source};
use crate::sources::decode::{Cuts, Decoder, Limits};
use crate::telemetry::{redact_urls, Health, LogLimiter, Metrics, Status};

/// The health component name of this source.
pub const COMPONENT: &str = "mqtt";

/// Readings held while the pipeline is full before polling pauses.
const BACKLOG_MAX: usize = 4096;

/// Messages taken but not yet acknowledged before polling pauses: the bound
/// on what the gateway holds for the broker, whatever the broker's window.
pub const UNACKED_MAX: usize = 8192;

/// Capacity of rumqttc's request channel: subscriptions and the final
/// DISCONNECT only (PUBACKs are written directly, see the module doc).
const REQUEST_CAPACITY: usize = 16;

/// The largest packet MQTT 3.1.1 can express (its remaining length, 2^28 - 1
/// bytes): the incoming limit, so no message is too large to be read and
/// acknowledged (see the module doc).
pub const MAX_PACKET_BYTES: usize = 268_435_455;

/// How long a PUBACK flush may wait for a broker that does not read.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// A QoS 1 message taken but not yet acknowledged to the broker.
struct Unacked {
    pkid: u16,
    watch: AckWatch,
}

/// Why the MQTT source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URL is not usable.
    #[error("mqtt.url: {0}")]
    Url(String),
    /// A TLS file could not be read.
    #[error("mqtt.tls: cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The password could not be read.
    #[error("mqtt.password: {0}")]
    Secret(String),
    /// A topic pattern is invalid.
    #[error("mqtt.topics: {0}")]
    Topic(String),
}

/// Host, port and whether TLS is used, from `mqtt://host:port` or `mqtts://host:port`.
pub fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    let (scheme, rest) = url.split_once("://").ok_or("missing scheme")?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        _ => return Err(format!("unknown scheme `{scheme}`")),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| format!("bad port `{p}`"))?)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains('@') {
        return Err(
            "credentials do not belong in the URL: set mqtt.username and mqtt.password".into(),
        );
    }
    if host.is_empty() || host.contains('/') {
        return Err("missing host".into());
    }
    Ok((host.to_owned(), port, tls))
}

/// Builds client options from the configuration; `id_suffix` tells the
/// gateway's other connections (alarm publication) apart from the source's.
pub fn options(cfg: &MqttConfig, id_suffix: &str) -> Result<MqttOptions, SourceError> {
    let (host, port, tls) = parse_url(&cfg.url).map_err(SourceError::Url)?;
    let mut o = MqttOptions::new(format!("{}{id_suffix}", cfg.client_id), host, port);
    o.set_clean_session(cfg.clean_session)
        .set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)))
        // Any packet at all: an oversized payload reaches our own limit and
        // is refused and acknowledged, instead of failing the connection in a
        // redelivery loop (see the module doc).
        .set_max_packet_size(MAX_PACKET_BYTES, 64 * 1024)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_manual_acks(true);
    if let Some(user) = &cfg.username {
        let password = match &cfg.password {
            Some(s) => s.resolve().map_err(SourceError::Secret)?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| SourceError::TlsFile {
                path: path.to_owned(),
                source,
            })
        };
        let (ca, client_auth) = match &cfg.tls {
            Some(t) => {
                let auth = match (&t.client_cert_file, &t.client_key_file) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    _ => None,
                };
                (read(&t.ca_file)?, auth)
            }
            None => {
                return Err(SourceError::Url(
                    "mqtts:// needs [mqtt.tls] ca_file".to_owned(),
                ))
            }
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// What a topic's subscription asks for: its `subscribe`, else its pattern with `+` for names.
fn filter(t: &crate::config::TopicConfig, d: &Decoder) -> String {
    t.subscribe.clone().unwrap_or_else(|| d.pattern.filter())
}

/// The source's subscriptions with their QoS (the built-in broker makes
/// the gateway's session with them before any device can publish).
pub fn filters(cfg: &MqttConfig) -> Result<Vec<(String, QoS)>, SourceError> {
    cfg.topics
        .iter()
        .map(|t| {
            let d = Decoder::new(t).map_err(SourceError::Topic)?;
            Ok((filter(t, &d), qos(t.qos)))
        })
        .collect()
}

/// Everything the source needs besides its connection.
pub struct MqttSource {
    cfg: MqttConfig,
    decoders: Vec<Decoder>,
    limits: Limits,
    /// Held by the router on its other end.
    tx: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    log_limit: LogLimiter,
    shutdown_timeout: Duration,
}

impl MqttSource {
    /// Prepares the source; `tx` is held by the router on its other end.
    pub fn new(
        cfg: MqttConfig,
        gateway: &GatewayConfig,
        tx: mpsc::Sender<Reading>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, SourceError> {
        let decoders = cfg
            .topics
            .iter()
            .map(Decoder::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(SourceError::Topic)?;
        Ok(Self {
            cfg,
            decoders,
            limits: Limits::new(gateway),
            tx,
            metrics,
            health,
            log_limit: LogLimiter::new(Duration::from_secs(10)),
            shutdown_timeout: gateway.shutdown_timeout,
        })
    }

    /// Runs until `cancel`, or until the pipeline is gone.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), SourceError> {
        let opts = options(&self.cfg, "")?;
        let (client, mut events) = AsyncClient::new(opts, REQUEST_CAPACITY);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(10);
        events.set_network_options(net);
        self.health.set(
            COMPONENT,
            Status::Starting,
            Some(format!("connecting to {}", redact_urls(&self.cfg.url))),
        );
        let filters: Vec<SubscribeFilter> = self
            .cfg
            .topics
            .iter()
            .zip(&self.decoders)
            .map(|(t, d)| SubscribeFilter::new(filter(t, d), qos(t.qos)))
            .collect();

        let received = self.metrics.messages_in(Source::Mqtt);
        let unacked_depth = self.metrics.queue_depth("mqtt_unacked");
        let backlog_depth = self.metrics.queue_depth("mqtt_backlog");
        // Woken by every token that completes.
        let wake = Arc::new(Notify::new());
        let mut unacked: VecDeque<Unacked> = VecDeque::new();
        let mut backlog: VecDeque<Reading> = VecDeque::new();
        // Taken out of `self` so that shutdown can drop it while the loop goes on.
        let (closed_tx, _) = mpsc::channel(1);
        let mut tx = Some(std::mem::replace(&mut self.tx, closed_tx));
        let mut stopping: Option<Instant> = None;
        let mut backoff = self.cfg.reconnect_min;
        loop {
            if stopping.is_some() && tx.is_some() {
                // Not in the pipeline yet: leave them to the broker.
                for r in backlog.drain(..) {
                    if let Some(ack) = &r.ack {
                        ack.abandon();
                    }
                }
                // The router, then the sink, see their inputs close and flush.
                tx = None;
            }
            write_acks(&mut events, &mut unacked).await;
            unacked_depth.set(unacked.len() as i64);
            backlog_depth.set(backlog.len() as i64);
            if let Some(deadline) = stopping {
                let settled = unacked
                    .front()
                    .is_none_or(|u| u.watch.state() != AckState::Confirmed)
                    && unacked.iter().all(|u| u.watch.state() != AckState::Pending);
                if settled {
                    break;
                }
                if Instant::now() >= deadline {
                    warn!(unacked = unacked.len(), "Shutdown: some messages were not persisted in time; the broker will send them again.");
                    break;
                }
            }
            let deadline = stopping;
            let event = tokio::select! {
                () = cancel.cancelled(), if stopping.is_none() => {
                    stopping = Some(Instant::now() + self.shutdown_timeout);
                    continue;
                }
                () = sleep_until(deadline) => continue,
                () = wake.notified() => continue,
                permit = reserve(&tx), if !backlog.is_empty() => {
                    if let (Some(permit), Some(r)) = (permit, backlog.pop_front()) {
                        permit.send(r);
                    }
                    continue;
                }
                e = events.poll(), if backlog.len() < BACKLOG_MAX && unacked.len() < UNACKED_MAX => e,
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    received.inc();
                    if stopping.is_some() {
                        // Not taken: no PUBACK, so the broker sends it again.
                        continue;
                    }
                    let ack = (p.qos != QoS::AtMostOnce).then(|| {
                        let (ack, watch) = Ack::new(&wake);
                        unacked.push_back(Unacked {
                            pkid: p.pkid,
                            watch,
                        });
                        ack
                    });
                    // A refused message drops its token here: confirmed at once.
                    let Some(mut r) = self.decode(&p.topic, &p.payload) else {
                        continue;
                    };
                    r.ack = ack;
                    if !backlog.is_empty() {
                        backlog.push_back(r);
                        continue;
                    }
                    let Some(sender) = &tx else { continue };
                    match sender.try_send(r) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(r)) => backlog.push_back(r),
                        Err(mpsc::error::TrySendError::Closed(r)) => {
                            if let Some(ack) = &r.ack {
                                ack.abandon();
                            }
                            warn!("The pipeline is gone; the MQTT source stops.");
                            break;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = self.cfg.reconnect_min;
                    // Packet ids of the old connection mean nothing on this one:
                    // the broker sends those messages again and we take them anew
                    // (a rewrite of the same point is harmless).
                    unacked.clear();
                    self.metrics.mqtt_connected.set(1);
                    info!(url = %redact_urls(&self.cfg.url), session_present = ack.session_present, "Connected to the MQTT broker.");
                    self.health.set(
                        COMPONENT,
                        Status::Starting,
                        Some(format!(
                            "connected to {}, subscribing",
                            redact_urls(&self.cfg.url)
                        )),
                    );
                    // try_: the request channel is drained by this very loop, so awaiting could deadlock.
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        warn!(error = %e, "Could not queue the subscriptions.");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure));
                    if !refused {
                        self.health.set(
                            COMPONENT,
                            Status::Ok,
                            Some(format!("connected to {}", redact_urls(&self.cfg.url))),
                        );
                    }
                    for (code, f) in ack.return_codes.iter().zip(&filters) {
                        if matches!(code, SubscribeReasonCode::Failure) {
                            self.metrics.mqtt_subscribe_failures.inc();
                            warn!(filter = %f.path, "The broker refused a subscription (check its ACL).");
                            self.health.set(
                                COMPONENT,
                                Status::Degraded,
                                Some(format!("subscription to {} refused", f.path)),
                            );
                        } else {
                            debug!(filter = %f.path, "Subscribed.");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.metrics.mqtt_connected.set(0);
                    self.metrics.mqtt_connection_errors.inc();
                    let detail = describe(&e);
                    if self
                        .health
                        .set(COMPONENT, Status::Down, Some(detail.clone()))
                    {
                        warn!(url = %redact_urls(&self.cfg.url), error = %detail, "MQTT connection lost; reconnecting with backoff.");
                    } else {
                        debug!(error = %detail, "MQTT reconnect failed.");
                    }
                    if stopping.is_some() {
                        break;
                    }
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.reconnect_max);
                }
            }
        }
        drop(tx);
        for r in backlog.drain(..) {
            if let Some(ack) = &r.ack {
                ack.abandon();
            }
        }
        self.metrics.mqtt_connected.set(0);
        // A clean DISCONNECT tells the broker to keep our session without a
        // will; every PUBACK was written before it.
        if client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Ok(e) = events.poll().await {
                    if matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(())
    }

    /// Decodes one message; `None` when it is refused (counted and logged here).
    fn decode(&self, topic: &str, payload: &[u8]) -> Option<Reading> {
        let now = crate::reading::now_ms();
        let mut cuts = Cuts::default();
        // Too large is too large whatever the topic.
        let result = if payload.len() > self.limits.max_payload_bytes {
            Err(Reject::PayloadTooLarge)
        } else {
            self.decoders
                .iter()
                .find_map(|d| d.decode_with_cuts(topic, payload, now, &self.limits, &mut cuts))
                .unwrap_or(Err(Reject::TopicMismatch))
        };
        match result {
            Ok(r) => {
                for (cut, n) in cuts.iter() {
                    self.metrics.cut(cut, n);
                    if let Some(held) = self.log_limit.check(cut.as_str()) {
                        warn!(
                            topic = %truncate(topic, 120),
                            reason = cut.as_str(),
                            fields = n,
                            held_back = held,
                            "Fields cut from a reading; the rest is kept."
                        );
                    }
                }
                Some(r)
            }
            Err(reason) => {
                self.metrics.reject(reason);
                if let Some(held) = self.log_limit.check(reason.as_str()) {
                    warn!(
                        topic = %truncate(topic, 120),
                        reason = reason.as_str(),
                        bytes = payload.len(),
                        held_back = held,
                        "Message rejected."
                    );
                }
                None
            }
        }
    }
}

/// Writes PUBACKs for the completed prefix of `unacked`, in arrival order,
/// straight to the connection and in one flush. With no connection there is
/// nothing to acknowledge: the next `ConnAck` clears the list.
async fn write_acks(events: &mut EventLoop, unacked: &mut VecDeque<Unacked>) {
    let Some(net) = events.network.as_mut() else {
        return;
    };
    let ready = confirmed_prefix(unacked);
    if ready.is_empty() {
        return;
    }
    for pkid in ready {
        // Buffered; it only reaches the socket when the buffer is full.
        if let Err(e) = net.write(Packet::PubAck(PubAck::new(pkid))).await {
            // The connection is broken: the next poll reports it and
            // reconnects, and the broker sends these messages again.
            debug!(error = %e, "Could not write a PUBACK.");
            return;
        }
    }
    // rumqttc flushes after each of its own turns too, so a flush cut short
    // here (a broker that stopped reading) loses nothing.
    match tokio::time::timeout(FLUSH_TIMEOUT, net.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "Could not flush PUBACKs."),
        Err(_) => debug!("Flushing PUBACKs timed out; the event loop will retry."),
    }
}

/// Removes the completed prefix of `unacked` and returns its packet ids. An
/// abandoned message stops the prefix: it is never acknowledged, and the
/// broker sends it (and those after it) again on the next connection.
fn confirmed_prefix(unacked: &mut VecDeque<Unacked>) -> Vec<u16> {
    let mut ready = Vec::new();
    while let Some(front) = unacked.front() {
        if front.watch.state() != AckState::Confirmed {
            break;
        }
        ready.push(front.pkid);
        unacked.pop_front();
    }
    ready
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn reserve(tx: &Option<mpsc::Sender<Reading>>) -> Option<mpsc::Permit<'_, Reading>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

/// QoS 0 for 0, else 1 (what the gateway takes and grants; 2 is delivered as 1).
pub(crate) fn qos(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A short, operator-readable cause.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?} (check mqtt.username/password)")
        }
        ConnectionError::Io(io) => format!("network: {io}"),
        ConnectionError::Tls(t) => format!("TLS: {t}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unacked(
        wake: &Arc<Notify>,
        pkids: std::ops::RangeInclusive<u16>,
    ) -> (VecDeque<Unacked>, Vec<Option<Ack>>) {
        pkids
            .map(|pkid| {
                let (ack, watch) = Ack::new(wake);
                (Unacked { pkid, watch }, Some(ack))
            })
            .unzip()
    }

    #[test]
    fn pubacks_go_out_in_arrival_order_for_the_completed_prefix_only() {
        let wake = Arc::new(Notify::new());
        let (mut unacked, mut acks) = unacked(&wake, 1..=4);
        // 2 and 3 are persisted, 1 is not: nothing may go out yet.
        acks[1] = None;
        acks[2] = None;
        assert!(confirmed_prefix(&mut unacked).is_empty());
        acks[0] = None;
        assert_eq!(confirmed_prefix(&mut unacked), [1, 2, 3]);
        assert_eq!(unacked.len(), 1);
        acks[3] = None;
        assert_eq!(confirmed_prefix(&mut unacked), [4]);
        assert!(unacked.is_empty());
    }

    #[test]
    fn an_abandoned_message_holds_back_the_acks_after_it() {
        let wake = Arc::new(Notify::new());
        let (mut unacked, mut acks) = unacked(&wake, 1..=2);
        if let Some(first) = &acks[0] {
            first.abandon();
        }
        acks.clear();
        assert!(
            confirmed_prefix(&mut unacked).is_empty(),
            "the broker sends both again"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://10.0.0.5:1883"),
            Ok(("10.0.0.5".into(), 1883, false))
        );
        assert_eq!(
            parse_url("mqtts://broker.school"),
            Ok(("broker.school".into(), 8883, true))
        );
        assert_eq!(
            parse_url("tcp://localhost"),
            Ok(("localhost".into(), 1883, false))
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884"),
            Ok(("::1".into(), 1884, false))
        );
        assert!(parse_url("http://x:1").is_err());
        assert!(parse_url("mqtt://x:notaport").is_err());
        assert!(parse_url("mqtt://").is_err());
    }
}
