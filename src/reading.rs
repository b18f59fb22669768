//! The one normalized type every source produces and every consumer reads.
//!
//! No I/O here: a `Reading` is plain data. Sources build it, the router admits
//! it through the registry (which fills `location`), the sink and the rules read it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
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
}

impl Reading {
    /// The value of a field, if present.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
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
    fn schema_has_feed_fields() {
        assert_eq!(
            Kind::Bus.field_type("passengers"),
            Some(("passengers", FieldType::I64))
        );
        assert_eq!(Kind::Smoke.field_type("passengers"), None);
    }
}
