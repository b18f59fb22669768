//! The built-in broker's counters (`crate::broker`): connections, messages
//! in and out, what it refused or dropped and why, what it holds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Why the broker refused a connection, a packet or a message.
pub const REFUSED: [&str; 16] = [
    "bad_credentials",
    "anonymous",
    "protocol_version",
    "protocol",
    "connect_timeout",
    "client_id",
    "session_owner",
    "sessions_full",
    "will_denied",
    "publish_denied",
    "subscribe_denied",
    "subscriptions_full",
    "bad_topic",
    "payload_too_large",
    "connections_total",
    "connections_per_address",
];
/// Why the broker dropped a message it had accepted.
pub const DROPPED: [&str; 2] = ["queue_full", "retained_full"];

/// The broker's metrics.
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    /// Open client connections (after CONNACK), the gateway's own not counted.
    pub connections: Gauge,
    /// PUBLISH packets received from clients.
    pub messages_in: Counter,
    /// PUBLISH packets sent to subscribers.
    pub messages_out: Counter,
    refused: Family<Reason, Counter>,
    dropped: Family<Reason, Counter>,
    /// Times a connection's reading paused for its publish rate.
    pub throttled: Counter,
    /// Messages held for sessions (queued and in flight).
    pub queued: Gauge,
    /// Sessions (online and persistent offline).
    pub sessions: Gauge,
    /// Failed rounds of broker.db.
    pub store_errors: Counter,
}

impl BrokerMetrics {
    /// Registers every metric, with every reason pre-created.
    pub fn register(&self, r: &mut Registry) {
        for reason in REFUSED {
            drop(self.refused.get_or_create(&Reason { reason }));
        }
        for reason in DROPPED {
            drop(self.dropped.get_or_create(&Reason { reason }));
        }
        r.register(
            "broker_connections",
            "Open client connections to the built-in broker (the gateway's own not counted)",
            self.connections.clone(),
        );
        r.register(
            "broker_messages_in",
            "Messages published to the built-in broker",
            self.messages_in.clone(),
        );
        r.register(
            "broker_messages_out",
            "Messages the built-in broker sent to subscribers",
            self.messages_out.clone(),
        );
        r.register(
            "broker_refused",
            "Connections, subscriptions and messages the built-in broker refused, by reason",
            self.refused.clone(),
        );
        r.register(
            "broker_dropped",
            "Messages the built-in broker accepted and then dropped, by reason",
            self.dropped.clone(),
        );
        r.register(
            "broker_throttled",
            "Times a connection was paused for its publish rate",
            self.throttled.clone(),
        );
        r.register(
            "broker_queued_messages",
            "Messages the built-in broker holds for its sessions",
            self.queued.clone(),
        );
        r.register(
            "broker_sessions",
            "Sessions of the built-in broker",
            self.sessions.clone(),
        );
        r.register(
            "broker_store_errors",
            "Failed writes to broker.db",
            self.store_errors.clone(),
        );
    }

    /// Counts a refusal (`REFUSED`).
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    /// Refusals so far for `reason`.
    pub fn refusals(&self, reason: &'static str) -> u64 {
        self.refused.get_or_create(&Reason { reason }).get()
    }

    /// Sets a drop count (`DROPPED`) to the state's tally.
    pub fn set_dropped(&self, reason: &'static str, total: u64) {
        let c = self.dropped.get_or_create(&Reason { reason });
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }
}
