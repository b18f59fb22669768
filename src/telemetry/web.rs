//! The web server's counters: sign-ins checked and refused, connections
//! and event streams open and refused.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Why a sign-in was not checked.
pub const LOGIN_REFUSED: [&str; 2] = ["throttled", "busy"];
/// Why a connection was closed at once.
pub const CONNECTION_REFUSED: [&str; 2] = ["total", "per_address"];
/// Why an event stream was refused or ended early.
pub const STREAM_REFUSED: [&str; 2] = ["per_session", "per_address"];

/// The web server's metrics.
#[derive(Debug, Default)]
pub struct WebMetrics {
    /// Passwords checked (each an Argon2 hash).
    pub login_checks: Counter,
    /// Sign-ins with a wrong user name or password.
    pub login_failures: Counter,
    login_refused: Family<Reason, Counter>,
    /// Open HTTP connections.
    pub connections: Gauge,
    connections_refused: Family<Reason, Counter>,
    /// Open event streams.
    pub streams: Gauge,
    streams_refused: Family<Reason, Counter>,
    /// Event streams ended because their session or token ended.
    pub streams_revoked: Counter,
}

impl WebMetrics {
    /// Registers every metric, with every reason pre-created.
    pub fn register(&self, r: &mut Registry) {
        for reason in LOGIN_REFUSED {
            drop(self.login_refused.get_or_create(&Reason { reason }));
        }
        for reason in CONNECTION_REFUSED {
            drop(self.connections_refused.get_or_create(&Reason { reason }));
        }
        for reason in STREAM_REFUSED {
            drop(self.streams_refused.get_or_create(&Reason { reason }));
        }
        r.register(
            "login_checks",
            "Passwords checked (Argon2 hashes computed) at sign-in",
            self.login_checks.clone(),
        );
        r.register(
            "login_failures",
            "Sign-ins with a wrong user name or password",
            self.login_failures.clone(),
        );
        r.register(
            "login_refused",
            "Sign-ins refused before the password was checked, by reason",
            self.login_refused.clone(),
        );
        r.register(
            "http_connections",
            "Open HTTP connections",
            self.connections.clone(),
        );
        r.register(
            "http_connections_refused",
            "Connections closed at once because a cap was reached, by cap",
            self.connections_refused.clone(),
        );
        r.register("event_streams", "Open event streams", self.streams.clone());
        r.register(
            "event_streams_refused",
            "Event streams refused because a cap was reached, by cap",
            self.streams_refused.clone(),
        );
        r.register(
            "event_streams_revoked",
            "Event streams ended because their session or token ended",
            self.streams_revoked.clone(),
        );
    }

    /// Counts a sign-in refused unchecked (`LOGIN_REFUSED`).
    pub fn login_refused(&self, reason: &'static str) {
        self.login_refused.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a connection refused (`CONNECTION_REFUSED`).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// Counts an event stream refused (`STREAM_REFUSED`).
    pub fn stream_refused(&self, reason: &'static str) {
        self.streams_refused.get_or_create(&Reason { reason }).inc();
    }
}
