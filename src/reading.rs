//! The one normalized type every source produces and every consumer reads,
//! and the acknowledgement token ([`Ack`]) it may carry.
//!
//! No I/O here: a `Reading` is plain data. Sources build it, the router admits
//! it through the registry (which fills `location`), the sink and the rules read it.
//!
//! # Acknowledge after persist
//!
//! A reading that came from a QoS 1 MQTT message carries `ack: Some(Ack)`.
//! The broker is told the message was received (PUBACK) only when **every**
//! clone of that `Ack` has been dropped, i.e. when every consumer that holds
//! one has made the reading durable in its own store. Until then the broker
//! keeps the message for our persistent session and sends it again after a
//! crash; a rewrite is harmless because a point's identity (measurement,
//! tags, time) makes it idempotent in InfluxDB.
//!
//! Rules for consumers:
//! - Dropping the last clone **confirms**. Drop it right after your commit
//!   (fsync, database answer), never before.
//! - A consumer that gives up without persisting (a shutdown out of time, a
//!   channel that closed) calls [`Ack::abandon`] before dropping: the message
//!   is then never acknowledged and the broker redelivers it. A token dropped
//!   while the thread panics is treated as abandoned too.
//! - A second consumer (the alarm engine) keeps its own clone:
//!   `let hold = reading.ack.clone();` when it takes the reading, and
//!   `drop(hold)` after its alarm store commit (or `hold.abandon()` if the
//!   commit failed). The MQTT acknowledgement waits for both it and the sink.
//! - Readings with `ack: None` (QoS 0, Modbus polls) need nothing.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The five kinds of device of the reference campus feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Smoke detector.
    Smoke,
    /// Access gate or fire-exit door.
    Gate,
    /// Canteen exhaust hood.
    Kitchen,
    /// Hazardous-chemical cabinet.
    Labcab,
    /// School-bus GPS terminal.
    Bus,
}

/// The type a field of a known kind must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A float; JSON integers are widened so InfluxDB never sees a type conflict.
    F64,
    /// An integer; a JSON float is accepted only when it is integral.
    I64,
    /// A boolean.
    Bool,
    /// A string.
    Str,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 5] = [
        Kind::Smoke,
        Kind::Gate,
        Kind::Kitchen,
        Kind::Labcab,
        Kind::Bus,
    ];

    /// The name used in topics, measurements and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Smoke => "smoke",
            Kind::Gate => "gate",
            Kind::Kitchen => "kitchen",
            Kind::Labcab => "labcab",
            Kind::Bus => "bus",
        }
    }

    /// The fields of FEED.md with their types. Fields not listed are still
    /// accepted (numbers as floats), so a newer device firmware loses nothing.
    pub fn schema(self) -> &'static [(&'static str, FieldType)] {
        use FieldType::*;
        match self {
            Kind::Smoke => &[
                ("obscuration_pct_m", F64),
                ("temp_c", F64),
                ("alarm", Bool),
                ("fault", Bool),
                ("battery_pct", F64),
                ("tamper", Bool),
            ],
            Kind::Gate => &[
                ("door_open", Bool),
                ("event", Str),
                ("card_id", Str),
                ("person_count", I64),
            ],
            Kind::Kitchen => &[
                ("duct_temp_c", F64),
                ("fan_on", Bool),
                ("fan_current_a", F64),
                ("grease_mg_m3", F64),
                ("co_ppm", F64),
                ("gas_lel_pct", F64),
            ],
            Kind::Labcab => &[
                ("voc_ppm", F64),
                ("temp_c", F64),
                ("humidity_pct", F64),
                ("door_open", Bool),
                ("locked", Bool),
                ("exhaust_fan_on", Bool),
                ("card_id", Str),
            ],
            Kind::Bus => &[
                ("lat", F64),
                ("lon", F64),
                ("speed_kmh", F64),
                ("heading_deg", F64),
                ("passengers", I64),
                ("door_open", Bool),
                ("route_id", Str),
            ],
        }
    }

    /// The type of a known field, if the kind defines it.
    pub fn field_type(self, name: &str) -> Option<(&'static str, FieldType)> {
        self.schema().iter().find(|(n, _)| *n == name).copied()
    }

    /// How often FEED.md says a device of this kind reports at the least.
    pub fn nominal_interval_secs(self) -> u64 {
        match self {
            Kind::Smoke => 30,
            Kind::Bus => 5,
            _ => 60,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownKind)
    }
}

/// A kind name that is not one of the five.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown device kind (expected smoke, gate, kitchen, labcab or bus)")]
pub struct UnknownKind;

/// Where a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An MQTT message.
    Mqtt,
    /// A Modbus poll.
    Modbus,
}

impl Source {
    /// The label used in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Modbus => "modbus",
        }
    }
}

/// A field value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A finite float.
    F64(f64),
    /// An integer.
    I64(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(Box<str>),
}

impl Value {
    /// The value as a float, when it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The value as a boolean, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A field name: the known ones are static, so the hot path allocates none.
pub type FieldName = Cow<'static, str>;

/// Where a declared device is; its parts become InfluxDB tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Building, e.g. `A3` or `教学楼`.
    pub building: Option<String>,
    /// Floor, e.g. `3`.
    pub floor: Option<String>,
    /// Room, e.g. `301`.
    pub room: Option<String>,
    /// A human name for the place, e.g. `三楼走廊东`.
    pub name: Option<String>,
}

impl Location {
    /// The place in words: the name if given, else building / floor / room.
    pub fn describe(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        [
            self.building.as_deref(),
            self.floor.as_deref(),
            self.room.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ")
    }
}

/// Where an acknowledgement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    /// Some consumer still holds a clone of the token.
    Pending,
    /// Every consumer is done: the message may be acknowledged.
    Confirmed,
    /// A consumer gave up without persisting: never acknowledge it.
    Abandoned,
}

const PENDING: u8 = 0;
const CONFIRMED: u8 = 1;
const ABANDONED: u8 = 2;

/// The state one message's tokens share with the source's watch.
#[derive(Debug)]
struct AckSlot {
    state: AtomicU8,
    /// Woken on every completion; the source that made the token waits on it.
    wake: Arc<tokio::sync::Notify>,
}

#[derive(Debug)]
struct AckInner {
    slot: Arc<AckSlot>,
    abandoned: AtomicBool,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        // A panic unwinding through a consumer is not a commit.
        let state = if self.abandoned.load(Ordering::Acquire) || std::thread::panicking() {
            ABANDONED
        } else {
            CONFIRMED
        };
        self.slot.state.store(state, Ordering::Release);
        self.slot.wake.notify_one();
    }
}

/// The acknowledgement token of the message a reading came from: a cheap
/// clone (`Arc`) whose last drop confirms the message; see the module doc.
#[derive(Debug, Clone)]
pub struct Ack(Arc<AckInner>);

impl Ack {
    /// A new token and the watch its source keeps; `wake` is notified
    /// whenever the token completes (confirmed or abandoned).
    pub fn new(wake: &Arc<tokio::sync::Notify>) -> (Ack, AckWatch) {
        let slot = Arc::new(AckSlot {
            state: AtomicU8::new(PENDING),
            wake: wake.clone(),
        });
        let ack = Ack(Arc::new(AckInner {
            slot: slot.clone(),
            abandoned: AtomicBool::new(false),
        }));
        (ack, AckWatch(slot))
    }

    /// Marks the message as not persisted, for every clone: when the last
    /// clone drops, the message is not acknowledged and the broker sends it again.
    pub fn abandon(&self) {
        self.0.abandoned.store(true, Ordering::Release);
    }
}

impl PartialEq for Ack {
    /// The same message's token.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What the source of a message keeps to learn when its tokens are done.
#[derive(Debug)]
pub struct AckWatch(Arc<AckSlot>);

impl AckWatch {
    /// The token's state now.
    pub fn state(&self) -> AckState {
        match self.0.state.load(Ordering::Acquire) {
            PENDING => AckState::Pending,
            CONFIRMED => AckState::Confirmed,
            _ => AckState::Abandoned,
        }
    }
}

/// One normalized reading of one device at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// School or campus code.
    pub site: Arc<str>,
    /// Device id, unique within its site.
    pub device: Arc<str>,
    /// What the device is.
    pub kind: Kind,
    /// The reading's own time, epoch milliseconds.
    pub ts_ms: i64,
    /// The measured fields, never empty.
    pub fields: Vec<(FieldName, Value)>,
    /// Where it came from.
    pub source: Source,
    /// Filled by the registry when the device is declared with a location.
    pub location: Option<Arc<Location>>,
    /// The acknowledgement of the message it came from (QoS 1 MQTT only).
    /// A clone of a reading shares it: see the module doc.
    pub ack: Option<Ack>,
    /// When the gateway received it: the start of the alarm latency it measures.
    pub received: std::time::Instant,
}

impl Reading {
    /// A reading as its source makes it, received now: no location yet (the
    /// registry fills it) and nothing to acknowledge (an MQTT source attaches
    /// the message's token).
    pub fn new(
        site: Arc<str>,
        device: Arc<str>,
        kind: Kind,
        ts_ms: i64,
        fields: Vec<(FieldName, Value)>,
        source: Source,
    ) -> Self {
        Self {
            site,
            device,
            kind,
            ts_ms,
            fields,
            source,
            location: None,
            ack: None,
            received: std::time::Instant::now(),
        }
    }

    /// The value of a field, if present.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Why a message was refused. The `as_str` names are metric labels: keep them stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// The payload is larger than `gateway.max_payload_bytes`.
    PayloadTooLarge,
    /// Not JSON (truncated, `NaN`, not UTF-8…).
    MalformedJson,
    /// JSON, but not an object.
    NotAnObject,
    /// The topic does not match the subscription's pattern (e.g. too few levels).
    TopicMismatch,
    /// The kind is not one of the five.
    UnknownKind,
    /// The site or device id has characters other than ASCII letters, digits, `-`, `_`
    /// (a look-alike such as a Cyrillic `е` included).
    BadId,
    /// A field has the wrong type, e.g. a string where a number belongs.
    BadFieldType,
    /// A number that is not finite after scaling.
    NonFinite,
    /// The timestamp is neither epoch milliseconds nor RFC 3339.
    BadTimestamp,
    /// The timestamp is too far in the past or the future.
    TsOutOfRange,
    /// No usable field.
    NoFields,
    /// The device is not declared and undeclared devices are ignored.
    UnknownDevice,
    /// The device is declared with another kind.
    KindMismatch,
    /// The registry is at `gateway.max_devices`.
    RegistryFull,
    /// An MQTT message under the id of a device declared as polled (`[[modbus.devices]]`).
    SourceMismatch,
}

impl Reject {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [Reject; 15] = [
        Reject::PayloadTooLarge,
        Reject::MalformedJson,
        Reject::NotAnObject,
        Reject::TopicMismatch,
        Reject::UnknownKind,
        Reject::BadId,
        Reject::BadFieldType,
        Reject::NonFinite,
        Reject::BadTimestamp,
        Reject::TsOutOfRange,
        Reject::NoFields,
        Reject::UnknownDevice,
        Reject::KindMismatch,
        Reject::RegistryFull,
        Reject::SourceMismatch,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::PayloadTooLarge => "payload_too_large",
            Reject::MalformedJson => "malformed_json",
            Reject::NotAnObject => "not_an_object",
            Reject::TopicMismatch => "topic_mismatch",
            Reject::UnknownKind => "unknown_kind",
            Reject::BadId => "bad_id",
            Reject::BadFieldType => "bad_field_type",
            Reject::NonFinite => "non_finite",
            Reject::BadTimestamp => "bad_timestamp",
            Reject::TsOutOfRange => "ts_out_of_range",
            Reject::NoFields => "no_fields",
            Reject::UnknownDevice => "unknown_device",
            Reject::KindMismatch => "kind_mismatch",
            Reject::RegistryFull => "registry_full",
            Reject::SourceMismatch => "source_mismatch",
        }
    }
}

/// Now, epoch ms: the gateway's clock for receive times and alarm times.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        assert_eq!("lift".parse::<Kind>(), Err(UnknownKind));
    }

    #[test]
    fn ack_confirms_when_the_last_clone_drops() {
        let wake = Arc::new(tokio::sync::Notify::new());
        let (ack, watch) = Ack::new(&wake);
        let second = ack.clone();
        assert_eq!(watch.state(), AckState::Pending);
        drop(ack);
        assert_eq!(
            watch.state(),
            AckState::Pending,
            "a consumer still holds it"
        );
        drop(second);
        assert_eq!(watch.state(), AckState::Confirmed);
    }

    #[test]
    fn an_abandoned_ack_is_never_confirmed() {
        let wake = Arc::new(tokio::sync::Notify::new());
        let (ack, watch) = Ack::new(&wake);
        let other = ack.clone();
        other.abandon();
        drop(other);
        assert_eq!(watch.state(), AckState::Pending);
        drop(ack);
        assert_eq!(watch.state(), AckState::Abandoned);
    }

    #[test]
    fn schema_has_feed_fields() {
        assert_eq!(
            Kind::Bus.field_type("passengers"),
            Some(("passengers", FieldType::I64))
        );
        assert_eq!(Kind::Smoke.field_type("passengers"), None);
    }
}
