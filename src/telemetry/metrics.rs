//! Prometheus metrics, one registry per gateway (tests run several in one process).
//!
//! Hot-path counters are resolved once into plain handles so counting a
//! message is one atomic add.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::reading::Reject;
use crate::reading::{Kind, Source};
use crate::sources::decode::Cut;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabel {
    action: String,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModbusLabel {
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabel {
    channel: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AckLinkLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModbusFailureLabel {
    device: String,
    reason: &'static str,
}

/// Why a Modbus poll failed; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModbusFailure {
    /// No answer (or no connection) within the timeout.
    Timeout,
    /// The device answered with an exception code (e.g. 2, illegal data address).
    Exception,
    /// Connection refused or lost, serial port unusable.
    Transport,
    /// An answer that is not a valid Modbus frame for the request, or values that cannot be decoded.
    Decode,
}

impl ModbusFailure {
    /// Every reason, in label order.
    pub const ALL: [ModbusFailure; 4] = [
        ModbusFailure::Timeout,
        ModbusFailure::Exception,
        ModbusFailure::Transport,
        ModbusFailure::Decode,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ModbusFailure::Timeout => "timeout",
            ModbusFailure::Exception => "exception",
            ModbusFailure::Transport => "transport",
            ModbusFailure::Decode => "decode",
        }
    }
}

/// The metric handles of one Modbus device, resolved once.
#[derive(Debug, Clone)]
pub struct ModbusDeviceMetrics {
    /// Successful polls.
    pub polls: Counter,
    /// Failed polls, indexed like [`ModbusFailure::ALL`].
    pub failures: [Counter; 4],
    /// 1 while the device answers, 0 once it is offline.
    pub online: Gauge,
}

impl ModbusDeviceMetrics {
    /// Counts a failed poll.
    pub fn fail(&self, reason: ModbusFailure) {
        self.failures[reason as usize].inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    kind: &'static str,
    state: &'static str,
}

/// Why a write to InfluxDB failed; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// Connection refused, timeout, reset.
    Network,
    /// 5xx or 429: the database is there but cannot take it now.
    Server,
    /// 401/403/404: credentials, org, bucket or database are wrong.
    Config,
    /// 400/413/422: the database refuses the data itself.
    Rejected,
}

impl WriteErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            WriteErrorKind::Network => "network",
            WriteErrorKind::Server => "server",
            WriteErrorKind::Config => "config",
            WriteErrorKind::Rejected => "rejected",
        }
    }
}

/// All of the gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages_in: Family<SourceLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    fields_cut: Family<ReasonLabel, Counter>,
    readings: Family<KindLabel, Counter>,
    write_errors: Family<ReasonLabel, Counter>,
    points_dropped: Family<ReasonLabel, Counter>,
    queue_depth: Family<QueueLabel, Gauge>,
    devices: Family<DeviceLabel, Gauge>,
    /// When `devices` was last counted (epoch ms): see [`Metrics::devices_due`].
    devices_counted_ms: AtomicI64,
    alarm_transitions: Family<TransitionLabel, Counter>,
    alarms: Family<StateLabel, Gauge>,
    /// Rule expressions that could not be evaluated.
    pub rule_errors: Counter,
    /// Failed writes to the alarm store.
    pub alarm_store_errors: Counter,
    /// From a reading's arrival to the alarm change it caused being stored and announced.
    pub alarm_latency_seconds: Histogram,
    modbus_polls: Family<ModbusLabel, Counter>,
    modbus_failures: Family<ModbusFailureLabel, Counter>,
    modbus_online: Family<ModbusLabel, Gauge>,
    /// Duration of successful Modbus polls (every request of one device).
    pub modbus_poll_seconds: Histogram,
    /// Points InfluxDB acknowledged.
    pub points_written: Counter,
    /// Write requests InfluxDB acknowledged.
    pub batches_written: Counter,
    /// Duration of successful write requests.
    pub write_seconds: Histogram,
    /// Bytes in the disk spool.
    pub spool_bytes: Gauge,
    /// Points in the disk spool not yet in InfluxDB: the backlog.
    pub spool_points: Gauge,
    /// Torn or corrupt spool records found (their segment's rest is skipped).
    pub spool_corrupt_records: Counter,
    /// Duration of the spool's grouped fdatasync.
    pub spool_sync_seconds: Histogram,
    /// 1 while connected to the MQTT broker.
    pub mqtt_connected: Gauge,
    /// Connection attempts that failed or connections that dropped.
    pub mqtt_connection_errors: Counter,
    /// Subscriptions the broker refused.
    pub mqtt_subscribe_failures: Counter,
    notifications: Family<NotificationLabel, Counter>,
    /// Notifications waiting in the outbox (pending or being retried).
    pub outbox_depth: Gauge,
    ack_links: Family<AckLinkLabel, Counter>,
    /// The web server's (`telemetry::web`).
    pub web: super::web::WebMetrics,
    /// The built-in broker's (`telemetry::broker`).
    pub broker: super::broker::BrokerMetrics,
    /// Bus fixes dropped as impossible, by reason (`bus::check::DropReason`).
    bus_fixes_dropped: Family<ReasonLabel, Counter>,
    /// Fixes of buses not in `[[buses.vehicles]]` (shown, not checked).
    pub bus_unchecked: Counter,
    /// Failed writes to the bus store.
    pub bus_store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric, with every known label pre-created so dashboards see zeros.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("campusgw");
        let m = Self {
            messages_in: Family::default(),
            rejected: Family::default(),
            fields_cut: Family::default(),
            readings: Family::default(),
            write_errors: Family::default(),
            points_dropped: Family::default(),
            queue_depth: Family::default(),
            devices: Family::default(),
            devices_counted_ms: AtomicI64::new(i64::MIN),
            alarm_transitions: Family::default(),
            alarms: Family::default(),
            rule_errors: Counter::default(),
            alarm_store_errors: Counter::default(),
            // 0.1 ms to ~2 s in steps of 1.5: fine enough to read a p99 of a few ms.
            alarm_latency_seconds: Histogram::new(exponential_buckets(0.0001, 1.5, 25)),
            modbus_polls: Family::default(),
            modbus_failures: Family::default(),
            modbus_online: Family::default(),
            modbus_poll_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            points_written: Counter::default(),
            batches_written: Counter::default(),
            write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            spool_bytes: Gauge::default(),
            spool_points: Gauge::default(),
            spool_corrupt_records: Counter::default(),
            spool_sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            mqtt_connected: Gauge::default(),
            mqtt_connection_errors: Counter::default(),
            mqtt_subscribe_failures: Counter::default(),
            notifications: Family::default(),
            outbox_depth: Gauge::default(),
            ack_links: Family::default(),
            web: super::web::WebMetrics::default(),
            broker: super::broker::BrokerMetrics::default(),
            bus_fixes_dropped: Family::default(),
            bus_unchecked: Counter::default(),
            bus_store_errors: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "bus_fixes_dropped",
            "Bus position fixes dropped as impossible, by reason",
            m.bus_fixes_dropped.clone(),
        );
        r.register(
            "bus_fixes_unchecked",
            "Fixes of buses not in [[buses.vehicles]]",
            m.bus_unchecked.clone(),
        );
        r.register(
            "bus_store_errors",
            "Failed writes to the bus store",
            m.bus_store_errors.clone(),
        );
        for d in crate::bus::check::DropReason::ALL {
            let _ = m
                .bus_fixes_dropped
                .get_or_create(&ReasonLabel { reason: d.as_str() });
        }
        m.web.register(r);
        m.broker.register(r);
        r.register(
            "messages_received",
            "Messages received, by source",
            m.messages_in.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages refused, by reason",
            m.rejected.clone(),
        );
        r.register(
            "fields_cut",
            "Fields cut from accepted readings (or strings shortened), by reason",
            m.fields_cut.clone(),
        );
        r.register("readings", "Readings accepted, by kind", m.readings.clone());
        r.register(
            "points_written",
            "Points InfluxDB acknowledged",
            m.points_written.clone(),
        );
        r.register(
            "write_batches",
            "Write requests InfluxDB acknowledged",
            m.batches_written.clone(),
        );
        r.register(
            "write_errors",
            "Failed write requests, by cause",
            m.write_errors.clone(),
        );
        r.register(
            "points_dropped",
            "Points given up on, by reason",
            m.points_dropped.clone(),
        );
        r.register(
            "write_duration_seconds",
            "Duration of successful writes",
            m.write_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Items waiting in each internal queue",
            m.queue_depth.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes waiting in the disk spool",
            m.spool_bytes.clone(),
        );
        r.register(
            "spool_points",
            "Points in the disk spool not yet in InfluxDB (the backlog)",
            m.spool_points.clone(),
        );
        r.register(
            "spool_corrupt_records",
            "Torn or corrupt spool records found; the rest of their segment was skipped",
            m.spool_corrupt_records.clone(),
        );
        r.register(
            "spool_sync_duration_seconds",
            "Duration of the spool's grouped fdatasync",
            m.spool_sync_seconds.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the broker",
            m.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_connection_errors",
            "Failed or dropped broker connections",
            m.mqtt_connection_errors.clone(),
        );
        r.register(
            "mqtt_subscribe_failures",
            "Subscriptions the broker refused",
            m.mqtt_subscribe_failures.clone(),
        );
        r.register(
            "devices",
            "Known devices, by kind and state",
            m.devices.clone(),
        );
        r.register(
            "alarm_transitions",
            "Alarm changes, by action and severity",
            m.alarm_transitions.clone(),
        );
        r.register("alarms", "Open alarms, by state", m.alarms.clone());
        r.register(
            "rule_errors",
            "Rule expressions that could not be evaluated",
            m.rule_errors.clone(),
        );
        r.register(
            "alarm_store_errors",
            "Failed writes to the alarm store",
            m.alarm_store_errors.clone(),
        );
        r.register(
            "alarm_latency_seconds",
            "From the arrival of a reading to the alarm change it caused being stored and announced",
            m.alarm_latency_seconds.clone(),
        );
        r.register(
            "notifications",
            "Duty notifications by channel and result (sent, retried, failed, skipped)",
            m.notifications.clone(),
        );
        r.register(
            "notify_outbox_depth",
            "Notifications waiting in the outbox",
            m.outbox_depth.clone(),
        );
        r.register(
            "ack_links",
            "Requests to /ack/{token} by result (shown, acknowledged, used, expired, unknown, refused, throttled)",
            m.ack_links.clone(),
        );
        r.register(
            "modbus_polls",
            "Successful Modbus polls, by device",
            m.modbus_polls.clone(),
        );
        r.register(
            "modbus_poll_failures",
            "Failed Modbus polls, by device and reason (timeout, exception, transport, decode)",
            m.modbus_failures.clone(),
        );
        r.register(
            "modbus_device_online",
            "1 while a Modbus device answers, 0 once it is marked offline",
            m.modbus_online.clone(),
        );
        r.register(
            "modbus_poll_duration_seconds",
            "Duration of successful Modbus polls",
            m.modbus_poll_seconds.clone(),
        );
        for s in [Source::Mqtt, Source::Modbus] {
            let _ = m
                .messages_in
                .get_or_create(&SourceLabel { source: s.as_str() });
        }
        for reason in Reject::ALL {
            let _ = m.rejected.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for cut in Cut::ALL {
            let _ = m.fields_cut.get_or_create(&ReasonLabel {
                reason: cut.as_str(),
            });
        }
        for reason in ["spool_full", "spool_corrupt", "rejected"] {
            let _ = m.points_dropped.get_or_create(&ReasonLabel { reason });
        }
        for k in Kind::ALL {
            let _ = m.readings.get_or_create(&KindLabel { kind: k.as_str() });
        }
        for e in [
            WriteErrorKind::Network,
            WriteErrorKind::Server,
            WriteErrorKind::Config,
            WriteErrorKind::Rejected,
        ] {
            let _ = m
                .write_errors
                .get_or_create(&ReasonLabel { reason: e.as_str() });
        }
        Self { registry, ..m }
    }

    /// Counts a bus fix dropped as impossible.
    pub fn bus_fix_dropped(&self, reason: crate::bus::check::DropReason) {
        self.bus_fixes_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// How many bus fixes were dropped for `reason`.
    pub fn bus_fixes_dropped(&self, reason: crate::bus::check::DropReason) -> u64 {
        self.bus_fixes_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    /// The counter of messages from one source.
    pub fn messages_in(&self, source: Source) -> Counter {
        self.messages_in
            .get_or_create(&SourceLabel {
                source: source.as_str(),
            })
            .clone()
    }

    /// Counts a refused message.
    pub fn reject(&self, reason: Reject) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// How many messages were refused for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Counts `n` fields cut from an accepted reading.
    pub fn cut(&self, cut: Cut, n: u32) {
        self.fields_cut
            .get_or_create(&ReasonLabel {
                reason: cut.as_str(),
            })
            .inc_by(u64::from(n));
    }

    /// How many fields were cut for `cut`.
    pub fn cuts(&self, cut: Cut) -> u64 {
        self.fields_cut
            .get_or_create(&ReasonLabel {
                reason: cut.as_str(),
            })
            .get()
    }

    /// The counter of accepted readings of one kind.
    pub fn readings(&self, kind: Kind) -> Counter {
        self.readings
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .clone()
    }

    /// Counts a failed write request.
    pub fn write_error(&self, kind: WriteErrorKind) {
        self.write_errors
            .get_or_create(&ReasonLabel {
                reason: kind.as_str(),
            })
            .inc();
    }

    /// Counts points given up on.
    pub fn drop_points(&self, reason: &'static str, n: u64) {
        self.points_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    /// How many points were given up on for `reason`.
    pub fn dropped(&self, reason: &'static str) -> u64 {
        self.points_dropped
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// The gauge of one internal queue's depth.
    pub fn queue_depth(&self, queue: &'static str) -> Gauge {
        self.queue_depth
            .get_or_create(&QueueLabel { queue })
            .clone()
    }

    /// Whether the device gauges are due a recount, claiming it if so: at
    /// most once a second. Counting scans every device under the registry's
    /// read lock, which the alarm thread's admission of each reading waits
    /// on; a scraper polling every 100 ms must not make that happen each time.
    pub fn devices_due(&self, now_ms: i64) -> bool {
        let last = self.devices_counted_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= 1_000
            && self
                .devices_counted_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Sets the number of devices of a kind in a state (`online`, `offline`).
    pub fn set_devices(&self, kind: Kind, state: &'static str, n: i64) {
        self.devices
            .get_or_create(&DeviceLabel {
                kind: kind.as_str(),
                state,
            })
            .set(n);
    }

    /// Counts one notification's result on a channel.
    pub fn notification(&self, channel: &str, result: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabel {
                channel: channel.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts one request to an ack link.
    pub fn ack_link(&self, result: &'static str) {
        self.ack_links.get_or_create(&AckLinkLabel { result }).inc();
    }

    /// The count of ack link requests with `result`.
    pub fn ack_links(&self, result: &'static str) -> u64 {
        self.ack_links.get_or_create(&AckLinkLabel { result }).get()
    }

    /// The count of a channel's results.
    pub fn notifications(&self, channel: &str, result: &'static str) -> u64 {
        self.notifications
            .get_or_create(&NotificationLabel {
                channel: channel.to_owned(),
                result,
            })
            .get()
    }

    /// The metric handles of a Modbus device; creates its series (at zero) on first use.
    pub fn modbus_device(&self, device: &str) -> ModbusDeviceMetrics {
        let label = ModbusLabel {
            device: device.to_owned(),
        };
        let failure = |reason: ModbusFailure| {
            self.modbus_failures
                .get_or_create(&ModbusFailureLabel {
                    device: device.to_owned(),
                    reason: reason.as_str(),
                })
                .clone()
        };
        ModbusDeviceMetrics {
            polls: self.modbus_polls.get_or_create(&label).clone(),
            failures: ModbusFailure::ALL.map(failure),
            online: self.modbus_online.get_or_create(&label).clone(),
        }
    }

    /// Counts an alarm change.
    pub fn alarm_transition(&self, action: &str, severity: &'static str) {
        self.alarm_transitions
            .get_or_create(&TransitionLabel {
                action: action.to_owned(),
                severity,
            })
            .inc();
    }

    /// Sets the number of open alarms in a state.
    pub fn set_alarms(&self, state: &'static str, n: i64) {
        self.alarms.get_or_create(&StateLabel { state }).set(n);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_and_pre_registered() {
        let m = Metrics::new();
        m.reject(Reject::MalformedJson);
        m.messages_in(Source::Mqtt).inc_by(3);
        let text = m.render();
        assert!(
            text.contains("campusgw_messages_rejected_total{reason=\"malformed_json\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("campusgw_messages_rejected_total{reason=\"bad_id\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("campusgw_messages_received_total{source=\"mqtt\"} 3"),
            "{text}"
        );
        assert_eq!(m.rejected(Reject::MalformedJson), 1);
    }

    #[test]
    fn devices_are_recounted_at_most_once_a_second() {
        let m = Metrics::new();
        assert!(m.devices_due(5_000), "the first scrape counts");
        assert!(!m.devices_due(5_000));
        assert!(!m.devices_due(5_999));
        assert!(m.devices_due(6_000));
        assert!(!m.devices_due(6_500));
    }
}
