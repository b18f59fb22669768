//! Pure decoding: topic patterns and JSON payloads into `Reading`s.
//!
//! No I/O and no clock: the receive time is passed in. Every way a message can
//! be refused has a `Reject` reason, which is the label of the
//! `campusgw_messages_rejected_total` counter.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::config::{FieldMapping, TopicConfig, TsUnit};
use crate::reading::{FieldType, Kind, Reading, Source, Value};

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
    /// The site or device id has characters other than letters, digits, `-`, `_`.
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
}

impl Reject {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [Reject; 14] = [
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
    Any,
    Rest,
}

/// A topic pattern such as `campus/{site}/{kind}/{device}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    segments: Vec<Segment>,
}

/// The named segments of a matched topic.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Captures<'t> {
    /// `{site}`.
    pub site: Option<&'t str>,
    /// `{kind}`.
    pub kind: Option<&'t str>,
    /// `{device}`.
    pub device: Option<&'t str>,
}

impl TopicPattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("is empty".into());
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let seg = match *p {
                "+" | "{_}" => Segment::Any,
                "#" if i + 1 == parts.len() => Segment::Rest,
                "#" => return Err("`#` may only be the last level".into()),
                s if s.starts_with('{') && s.ends_with('}') => {
                    let name = &s[1..s.len() - 1];
                    if !matches!(name, "site" | "kind" | "device") {
                        return Err(format!(
                            "`{{{name}}}` is not a known segment (site, kind, device, _)"
                        ));
                    }
                    if segments.contains(&Segment::Capture(name.to_owned())) {
                        return Err(format!("`{{{name}}}` appears twice"));
                    }
                    Segment::Capture(name.to_owned())
                }
                s if s.contains(['+', '#', '{', '}']) => {
                    return Err(format!("level `{s}` mixes wildcards and text"))
                }
                s => Segment::Literal(s.to_owned()),
            };
            segments.push(seg);
        }
        if !segments.contains(&Segment::Capture("device".into())) {
            return Err("needs a `{device}` level".into());
        }
        Ok(Self { segments })
    }

    /// Whether the pattern captures `name`.
    pub fn has(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Capture(n) if n == name))
    }

    /// The MQTT subscription filter: captures become `+`.
    pub fn filter(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::Capture(_) | Segment::Any => "+",
                Segment::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Matches a topic, returning its named segments.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        let mut caps = Captures::default();
        let mut levels = topic.split('/');
        for seg in &self.segments {
            if *seg == Segment::Rest {
                return Some(caps);
            }
            let level = levels.next()?;
            match seg {
                Segment::Literal(l) if l != level => return None,
                Segment::Capture(name) => {
                    let slot = match name.as_str() {
                        "site" => &mut caps.site,
                        "kind" => &mut caps.kind,
                        _ => &mut caps.device,
                    };
                    *slot = Some(level);
                }
                _ => {}
            }
        }
        levels.next().is_none().then_some(caps)
    }
}

/// Limits that depend on the gateway's configuration and clock.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted payload.
    pub max_payload_bytes: usize,
    /// Oldest accepted timestamp, relative to now, ms.
    pub max_past_ms: i64,
    /// Furthest future timestamp, relative to now, ms.
    pub max_future_ms: i64,
}

/// How messages of one subscription become readings.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The parsed pattern.
    pub pattern: TopicPattern,
    site: Option<Arc<str>>,
    kind: Option<Kind>,
    ts_pointer: String,
    ts_unit: TsUnit,
    keep_unmapped: bool,
    fields: Vec<(String, FieldMapping)>,
}

impl Decoder {
    /// Builds a decoder from a validated topic configuration.
    pub fn new(cfg: &TopicConfig) -> Result<Self, String> {
        Ok(Self {
            pattern: TopicPattern::parse(&cfg.pattern)?,
            site: cfg.site.as_deref().map(Arc::from),
            kind: cfg.kind,
            ts_pointer: cfg.ts_field.clone(),
            ts_unit: cfg.ts_unit,
            keep_unmapped: cfg.keep_unmapped,
            fields: cfg
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Decodes one message received at `now_ms`. `None` when the topic is not
    /// this decoder's (another subscription may take it).
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        limits: &Limits,
    ) -> Option<Result<Reading, Reject>> {
        let caps = self.pattern.matches(topic)?;
        Some(self.decode_matched(caps, payload, now_ms, limits))
    }

    fn decode_matched(
        &self,
        caps: Captures<'_>,
        payload: &[u8],
        now_ms: i64,
        limits: &Limits,
    ) -> Result<Reading, Reject> {
        if payload.len() > limits.max_payload_bytes {
            return Err(Reject::PayloadTooLarge);
        }
        let kind = match (self.kind, caps.kind) {
            (Some(k), _) => k,
            (None, Some(k)) => k.parse().map_err(|_| Reject::UnknownKind)?,
            (None, None) => return Err(Reject::UnknownKind),
        };
        let site: Arc<str> = match (&self.site, caps.site) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) if crate::config::is_valid_id(s) => Arc::from(s),
            _ => return Err(Reject::BadId),
        };
        let device = caps
            .device
            .filter(|d| crate::config::is_valid_id(d))
            .ok_or(Reject::BadId)?;

        let json: Json = serde_json::from_slice(payload).map_err(|_| Reject::MalformedJson)?;
        let Json::Object(obj) = &json else {
            return Err(Reject::NotAnObject);
        };

        let ts_ms = match json.pointer(&self.ts_pointer) {
            None | Some(Json::Null) => now_ms,
            Some(v) => parse_ts(v, self.ts_unit)?,
        };
        if ts_ms < now_ms - limits.max_past_ms || ts_ms > now_ms + limits.max_future_ms {
            return Err(Reject::TsOutOfRange);
        }

        let mut fields = Vec::with_capacity(obj.len());
        for (name, m) in &self.fields {
            if let Some(v) = json.pointer(&m.pointer) {
                let v = scaled(v, m)?;
                push_field(&mut fields, kind, name, &v)?;
            }
        }
        if self.keep_unmapped {
            let ts_key = self.ts_pointer.strip_prefix('/').unwrap_or("");
            for (name, v) in obj {
                if name == ts_key || self.fields.iter().any(|(n, _)| n == name) {
                    continue;
                }
                push_field(&mut fields, kind, name, v)?;
            }
        }
        if fields.is_empty() {
            return Err(Reject::NoFields);
        }
        Ok(Reading {
            site,
            device: Arc::from(device),
            kind,
            ts_ms,
            fields,
            source: Source::Mqtt,
            location: None,
            ack: None,
            received: std::time::Instant::now(),
        })
    }
}

fn parse_ts(v: &Json, unit: TsUnit) -> Result<i64, Reject> {
    let ms = match v {
        Json::Number(n) => {
            let f = n.as_f64().ok_or(Reject::BadTimestamp)?;
            let ms = match unit {
                TsUnit::Ms => f,
                TsUnit::S => f * 1000.0,
            };
            // Beyond ±2^53 ms (year ~287,000) the float is not exact; such a ts is garbage anyway.
            if !ms.is_finite() || ms.abs() > 9.0e15 {
                return Err(Reject::BadTimestamp);
            }
            ms.round() as i64
        }
        Json::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| Reject::BadTimestamp)?
            .timestamp_millis(),
        _ => return Err(Reject::BadTimestamp),
    };
    Ok(ms)
}

fn scaled(v: &Json, m: &FieldMapping) -> Result<Json, Reject> {
    if m.scale == 1.0 && m.offset == 0.0 {
        return Ok(v.clone());
    }
    let Some(n) = v.as_f64() else {
        return Err(Reject::BadFieldType);
    };
    let x = n * m.scale + m.offset;
    serde_json::Number::from_f64(x)
        .map(Json::Number)
        .ok_or(Reject::NonFinite)
}

/// Adds one field, checked against the kind's schema. Nulls are skipped:
/// a device saying "no value" is not an error.
fn push_field(
    out: &mut Vec<(Cow<'static, str>, Value)>,
    kind: Kind,
    name: &str,
    v: &Json,
) -> Result<(), Reject> {
    if v.is_null() {
        return Ok(());
    }
    let (name, value): (Cow<'static, str>, Value) = match kind.field_type(name) {
        Some((known, ty)) => (Cow::Borrowed(known), typed(v, ty)?),
        None => {
            if name.is_empty() || name.len() > 64 {
                return Err(Reject::BadFieldType);
            }
            let value = match v {
                Json::Bool(b) => Value::Bool(*b),
                Json::Number(_) => typed(v, FieldType::F64)?,
                Json::String(s) => Value::Str(s.as_str().into()),
                // Nested objects and arrays of unknown fields have no place in a time series.
                _ => return Ok(()),
            };
            (Cow::Owned(name.to_owned()), value)
        }
    };
    if let Value::F64(f) = value {
        if !f.is_finite() {
            return Err(Reject::NonFinite);
        }
    }
    out.push((name, value));
    Ok(())
}

fn typed(v: &Json, ty: FieldType) -> Result<Value, Reject> {
    match (ty, v) {
        (FieldType::F64, Json::Number(n)) => n.as_f64().map(Value::F64).ok_or(Reject::NonFinite),
        (FieldType::I64, Json::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Value::I64(i)),
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::I64(f as i64)),
                _ => Err(Reject::BadFieldType),
            },
        },
        (FieldType::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
        (FieldType::Str, Json::String(s)) => Ok(Value::Str(s.as_str().into())),
        _ => Err(Reject::BadFieldType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_764_380_000_000;
    const LIMITS: Limits = Limits {
        max_payload_bytes: 65_536,
        max_past_ms: 30 * 86_400_000,
        max_future_ms: 300_000,
    };

    fn decoder(toml_topic: &str) -> Decoder {
        let cfg: TopicConfig = toml::from_str(toml_topic).expect("topic config");
        Decoder::new(&cfg).expect("decoder")
    }

    fn check(topic: &str, payload: &str) -> Result<Reading, Reject> {
        decoder("")
            .decode(topic, payload.as_bytes(), NOW, &LIMITS)
            .unwrap_or(Err(Reject::TopicMismatch))
    }

    #[test]
    fn pattern_filter_and_matches() {
        let p = TopicPattern::parse("campus/{site}/{kind}/{device}").expect("pattern");
        assert_eq!(p.filter(), "campus/+/+/+");
        let c = p.matches("campus/yz/smoke/a3-301").expect("match");
        assert_eq!(
            (c.site, c.kind, c.device),
            (Some("yz"), Some("smoke"), Some("a3-301"))
        );
        assert!(p.matches("campus/yz/smoke").is_none());
        assert!(p.matches("campus/yz/smoke/a/b").is_none());
        assert!(p.matches("other/yz/smoke/a").is_none());
        let r = TopicPattern::parse("school/{device}/#").expect("pattern");
        assert_eq!(r.filter(), "school/+/#");
        assert!(r.matches("school/d1/x/y").is_some());
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(TopicPattern::parse("a/{site}")
            .unwrap_err()
            .contains("{device}"));
        assert!(TopicPattern::parse("a/#/{device}")
            .unwrap_err()
            .contains("last"));
        assert!(TopicPattern::parse("a/{room}/{device}")
            .unwrap_err()
            .contains("room"));
        assert!(TopicPattern::parse("a/x+/{device}")
            .unwrap_err()
            .contains("mixes"));
    }

    #[test]
    fn reference_feed_examples_decode() {
        let r = check(
            "campus/yazhong/smoke/a3-301",
            r#"{"ts":1764380000123,"obscuration_pct_m":0.4,"temp_c":24.1,"alarm":false,"fault":false,"battery_pct":88,"tamper":false}"#,
        )
        .expect("smoke");
        assert_eq!(r.ts_ms, 1_764_380_000_123);
        assert_eq!(r.kind, Kind::Smoke);
        assert_eq!(
            r.field("battery_pct"),
            Some(&Value::F64(88.0)),
            "integers widen to float"
        );
        assert_eq!(r.fields.len(), 6);
        let b = check(
            "campus/yazhong/bus/bus-07",
            r#"{"ts":1764380001200,"lat":29.9812,"lon":103.0011,"speed_kmh":37.5,"heading_deg":92,"passengers":31,"door_open":false,"route_id":"R1"}"#,
        )
        .expect("bus");
        assert_eq!(b.field("passengers"), Some(&Value::I64(31)));
        assert_eq!(b.field("route_id"), Some(&Value::Str("R1".into())));
    }

    #[test]
    fn timestamps() {
        let r = check("campus/s/gate/g", r#"{"door_open":true}"#).expect("no ts");
        assert_eq!(r.ts_ms, NOW, "missing ts takes the receive time");
        let r = check(
            "campus/s/gate/g",
            r#"{"ts":"2025-11-29T01:33:20.5Z","door_open":true}"#,
        )
        .expect("rfc3339");
        assert_eq!(r.ts_ms, 1_764_380_000_500);
        assert_eq!(
            check(
                "campus/s/gate/g",
                r#"{"ts":1448844000000,"door_open":true}"#
            ),
            Err(Reject::TsOutOfRange),
            "ten years off"
        );
        assert_eq!(
            check("campus/s/gate/g", r#"{"ts":"yesterday","door_open":true}"#),
            Err(Reject::BadTimestamp)
        );
    }

    #[test]
    fn every_bad_input_of_the_feed_has_a_reason() {
        let cases: &[(&str, &str, Reject)] = &[
            (
                "campus/s/smoke/d",
                r#"{"temp_c":24.1,"alar"#,
                Reject::MalformedJson,
            ),
            (
                "campus/s/smoke/d",
                r#"{"temp_c":"hot"}"#,
                Reject::BadFieldType,
            ),
            (
                "campus/s/smoke/d",
                r#"{"temp_c":NaN}"#,
                Reject::MalformedJson,
            ),
            ("campus/s/smoke/d", r#"[1,2]"#, Reject::NotAnObject),
            ("campus/s/lift/d", r#"{"x":1}"#, Reject::UnknownKind),
            ("campus/s/smoke/d!", r#"{"temp_c":1}"#, Reject::BadId),
            ("campus/s/smoke/d", r#"{}"#, Reject::NoFields),
            (
                "campus/s/bus/b",
                r#"{"passengers":3.5}"#,
                Reject::BadFieldType,
            ),
            (
                "campus/s/smoke/d",
                r#"{"temp_c":1e400}"#,
                Reject::MalformedJson,
            ),
        ];
        for (topic, payload, want) in cases {
            assert_eq!(
                check(topic, payload).map(|_| ()),
                Err(*want),
                "{topic} {payload}"
            );
        }
        assert_eq!(check("campus/s/smoke", "{}"), Err(Reject::TopicMismatch));
        let big = format!(r#"{{"temp_c":1,"pad":"{}"}}"#, "x".repeat(5 * 1024 * 1024));
        assert_eq!(
            check("campus/s/smoke/d", &big),
            Err(Reject::PayloadTooLarge)
        );
    }

    #[test]
    fn mapping_renames_picks_and_scales() {
        let d = decoder(
            r#"
            pattern = "school/{device}/up"
            site = "north"
            kind = "kitchen"
            ts_field = "/time"
            ts_unit = "s"
            keep_unmapped = false
            [fields.duct_temp_c]
            pointer = "/data/t"
            scale = 0.1
            [fields.fan_on]
            pointer = "/data/fan"
        "#,
        );
        let r = d
            .decode(
                "school/hood-9/up",
                br#"{"time":1764380000,"data":{"t":615,"fan":true},"noise":1}"#,
                NOW,
                &LIMITS,
            )
            .expect("matches")
            .expect("decodes");
        assert_eq!(&*r.site, "north");
        assert_eq!(r.kind, Kind::Kitchen);
        assert_eq!(r.ts_ms, 1_764_380_000_000);
        assert_eq!(r.field("duct_temp_c"), Some(&Value::F64(61.5)));
        assert_eq!(r.field("fan_on"), Some(&Value::Bool(true)));
        assert_eq!(r.field("noise"), None);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(topic in "[a-z/+#{}]{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decoder("").decode(&topic, &payload, NOW, &LIMITS);
        }

        #[test]
        fn decoded_floats_are_finite(v in proptest::num::f64::ANY) {
            let payload = format!(r#"{{"temp_c":{v}}}"#);
            if let Ok(r) = check("campus/s/smoke/d", &payload) {
                prop_assert!(r.fields.iter().all(|(_, v)| v.as_f64().is_none_or(f64::is_finite)));
            }
        }
    }
}
