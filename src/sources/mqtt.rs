//! The MQTT source: one rumqttc connection, several subscriptions.
//!
//! The event loop is polled continuously (it also sends pings and
//! reconnects); on an error we back off with a capped, doubling delay, since
//! rumqttc reconnects on the next poll with no delay of its own. Every
//! `ConnAck` resubscribes: a broker that lost our session (or a changed
//! configuration) would otherwise leave us deaf. Received messages are
//! decoded here and sent on; when the pipeline is full, sending waits, which
//! holds the event loop and lets TCP push back on the broker, which queues for
//! our persistent session — nothing already received is dropped.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, NetworkOptions, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{GatewayConfig, MqttConfig};
use crate::reading::{Reading, Source};
use crate::sources::decode::{Decoder, Limits, Reject};
use crate::telemetry::{Health, LogLimiter, Metrics, Status};

/// The health component name of this source.
pub const COMPONENT: &str = "mqtt";

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
        // Large enough that an oversized payload reaches our own limit and is
        // counted, instead of failing the connection in a redelivery loop.
        .set_max_packet_size(16 * 1024 * 1024, 64 * 1024)
        .set_request_channel_capacity(64);
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

/// Everything the source needs besides its connection.
pub struct MqttSource {
    cfg: MqttConfig,
    decoders: Vec<Decoder>,
    limits: Limits,
    tx: mpsc::Sender<Reading>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    log_limit: LogLimiter,
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
            limits: Limits {
                max_payload_bytes: gateway.max_payload_bytes,
                max_past_ms: gateway.max_ts_past.as_millis() as i64,
                max_future_ms: gateway.max_ts_future.as_millis() as i64,
            },
            tx,
            metrics,
            health,
            log_limit: LogLimiter::new(Duration::from_secs(10)),
        })
    }

    /// Runs until `cancel`, or until the pipeline is gone.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let opts = options(&self.cfg, "")?;
        let (client, mut events) = AsyncClient::new(opts, 64);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(10);
        events.set_network_options(net);
        self.health.set(
            COMPONENT,
            Status::Starting,
            Some(format!("connecting to {}", self.cfg.url)),
        );
        let filters: Vec<SubscribeFilter> = self
            .cfg
            .topics
            .iter()
            .zip(&self.decoders)
            .map(|(t, d)| {
                let filter = t.subscribe.clone().unwrap_or_else(|| d.pattern.filter());
                SubscribeFilter::new(filter, qos(t.qos))
            })
            .collect();

        let received = self.metrics.messages_in(Source::Mqtt);
        let mut backoff = self.cfg.reconnect_min;
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    received.inc();
                    if !self.handle(&p.topic, &p.payload).await {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = self.cfg.reconnect_min;
                    self.metrics.mqtt_connected.set(1);
                    info!(url = %self.cfg.url, session_present = ack.session_present, "Connected to the MQTT broker.");
                    self.health.set(
                        COMPONENT,
                        Status::Starting,
                        Some(format!("connected to {}, subscribing", self.cfg.url)),
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
                            Some(format!("connected to {}", self.cfg.url)),
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
                        warn!(url = %self.cfg.url, error = %detail, "MQTT connection lost; reconnecting with backoff.");
                    } else {
                        debug!(error = %detail, "MQTT reconnect failed.");
                    }
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.reconnect_max);
                }
            }
        }
        self.metrics.mqtt_connected.set(0);
        // A clean DISCONNECT tells the broker to keep our session without a will.
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

    /// Decodes and forwards one message; false when the pipeline is closed.
    async fn handle(&self, topic: &str, payload: &[u8]) -> bool {
        let now = super::now_ms();
        let result = self
            .decoders
            .iter()
            .find_map(|d| d.decode(topic, payload, now, &self.limits))
            .unwrap_or(Err(Reject::TopicMismatch));
        match result {
            Ok(r) => self.tx.send(r).await.is_ok(),
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
                true
            }
        }
    }
}

fn qos(q: u8) -> QoS {
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
