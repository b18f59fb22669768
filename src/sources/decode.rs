//! Pure decoding: topic patterns and JSON payloads into `Reading`s.
//!
//! No I/O and no clock: the receive time is passed in. Every way a message can
//! be refused has a `Reject` reason, which is the label of the
//! `campusgw_messages_rejected_total` counter.
//!
//! A field the time series cannot carry is cut from a reading that is kept
//! (an alarm in the same message must still be raised): a name with a
//! control character, empty or longer than 64 bytes (`bad_field_name`), a
//! name that is a tag or InfluxDB's own (`reserved_field`), fields past
//! `gateway.max_fields` (`too_many_fields`); a string past
//! `gateway.max_string_bytes` is shortened on a character boundary
//! (`string_truncated`). Each is a [`Cut`], counted by the caller in
//! `campusgw_fields_cut_total`. These bounds are what keep a device's latest
//! values, held by the registry, small.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value as Json};

use crate::config::{FieldMapping, TopicConfig, TsUnit};
pub use crate::reading::Reject;
use crate::reading::{FieldType, Kind, Reading, Source, Value};

/// Why a field of an accepted reading was cut. The `as_str` names are metric
/// labels of `campusgw_fields_cut_total`: keep them stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The name is empty, over 64 bytes, or holds a control or invisible character.
    BadFieldName,
    /// The name is a tag (`site`, `device`, `building`, `floor`, `room`), `time`,
    /// or starts with `_` (InfluxDB's own): it would shadow or break the series.
    ReservedField,
    /// Past `gateway.max_fields` fields (the kind's own fields are always kept).
    TooManyFields,
    /// A string longer than `gateway.max_string_bytes`, shortened.
    StringTruncated,
}

impl Cut {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [Cut; 4] = [
        Cut::BadFieldName,
        Cut::ReservedField,
        Cut::TooManyFields,
        Cut::StringTruncated,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::BadFieldName => "bad_field_name",
            Cut::ReservedField => "reserved_field",
            Cut::TooManyFields => "too_many_fields",
            Cut::StringTruncated => "string_truncated",
        }
    }
}

/// How many fields of one reading were cut, per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cuts([u32; 4]);

impl Cuts {
    fn add(&mut self, cut: Cut, n: u32) {
        self.0[cut as usize] += n;
    }

    /// The reasons with a count, for the metrics.
    pub fn iter(&self) -> impl Iterator<Item = (Cut, u32)> + '_ {
        Cut::ALL.into_iter().zip(self.0).filter(|(_, n)| *n > 0)
    }

    /// How many fields were cut for `cut`.
    pub fn get(&self, cut: Cut) -> u32 {
        self.0[cut as usize]
    }
}

/// The longest field name kept.
pub const MAX_FIELD_NAME_BYTES: usize = 64;

/// Field names a device may not use: the tags of every point (a field of the
/// same name shadows the tag in InfluxQL, so a device could hide or pose as
/// another's series) and InfluxDB's `time`. Names starting with `_` are
/// InfluxDB's too.
const RESERVED_FIELDS: [&str; 6] = ["building", "device", "floor", "room", "site", "time"];

/// Why an unknown field's name cannot be kept, if it cannot.
fn field_name_cut(name: &str) -> Option<Cut> {
    if name.is_empty() || name.len() > MAX_FIELD_NAME_BYTES || name.chars().any(is_invisible) {
        Some(Cut::BadFieldName)
    } else if name.starts_with('_') || RESERVED_FIELDS.contains(&name) {
        Some(Cut::ReservedField)
    } else {
        None
    }
}

/// Control characters (line protocol cannot carry `\n` or `\r` in a name at
/// all), and the invisible ones that make a name look like another.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
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
    /// Most fields kept of one reading.
    pub max_fields: usize,
    /// Longest string value kept, in bytes.
    pub max_string_bytes: usize,
}

impl Limits {
    /// The limits of `[gateway]`.
    pub fn new(g: &crate::config::GatewayConfig) -> Self {
        Self {
            max_payload_bytes: g.max_payload_bytes,
            max_past_ms: g.max_ts_past.as_millis() as i64,
            max_future_ms: g.max_ts_future.as_millis() as i64,
            max_fields: g.max_fields,
            max_string_bytes: g.max_string_bytes,
        }
    }
}

/// How messages of one subscription become readings.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The parsed pattern.
    pub pattern: TopicPattern,
    site: Option<Arc<str>>,
    kind: Option<Kind>,
    ts_pointer: String,
    /// The top-level key of the timestamp when the payload can be read in one
    /// pass without a `Value` tree: no field mapping, unmapped fields kept,
    /// `ts_field` a plain top-level pointer. That is the reference layout, and
    /// the tree cost most of the decoding time.
    streaming_ts_key: Option<String>,
    ts_unit: TsUnit,
    keep_unmapped: bool,
    fields: Vec<(String, FieldMapping)>,
}

impl Decoder {
    /// Builds a decoder from a validated topic configuration.
    pub fn new(cfg: &TopicConfig) -> Result<Self, String> {
        let streaming_ts_key = cfg
            .ts_field
            .strip_prefix('/')
            .filter(|k| !k.is_empty() && !k.contains(['/', '~']))
            .filter(|_| cfg.keep_unmapped && cfg.fields.is_empty())
            .map(str::to_owned);
        Ok(Self {
            pattern: TopicPattern::parse(&cfg.pattern)?,
            site: cfg.site.as_deref().map(Arc::from),
            kind: cfg.kind,
            ts_pointer: cfg.ts_field.clone(),
            streaming_ts_key,
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
        self.decode_with_cuts(topic, payload, now_ms, limits, &mut Cuts::default())
    }

    /// [`Self::decode`], adding to `cuts` the fields cut from the reading.
    pub fn decode_with_cuts(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        limits: &Limits,
        cuts: &mut Cuts,
    ) -> Option<Result<Reading, Reject>> {
        let caps = self.pattern.matches(topic)?;
        Some(self.decode_matched(caps, payload, now_ms, limits, cuts))
    }

    fn decode_matched(
        &self,
        caps: Captures<'_>,
        payload: &[u8],
        now_ms: i64,
        limits: &Limits,
        cuts: &mut Cuts,
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

        let mut out = Out {
            fields: Vec::new(),
            kind,
            limits,
            cuts: Cuts::default(),
            unknown: 0,
        };
        let ts_ms = match &self.streaming_ts_key {
            Some(ts_key) => self.fields_streaming(ts_key, payload, now_ms, &mut out)?,
            None => self.fields_from_tree(payload, now_ms, &mut out)?,
        };
        let Out {
            mut fields,
            cuts: mut cut,
            ..
        } = out;
        keep_at_most(&mut fields, kind, limits.max_fields, &mut cut);
        // Counted only for a reading that is kept.
        for (c, n) in cut.iter() {
            cuts.add(c, n);
        }
        if fields.is_empty() {
            return Err(Reject::NoFields);
        }
        Ok(Reading::new(
            site,
            Arc::from(device),
            kind,
            ts_ms,
            fields,
            Source::Mqtt,
        ))
    }

    /// The reference layout, read in one pass with borrowed keys and strings.
    /// Same outcome as [`Self::fields_from_tree`] on every input (a property
    /// test holds the two together): duplicate keys keep the last value,
    /// fields come out sorted by name, the first bad field in that order
    /// names the rejection.
    fn fields_streaming(
        &self,
        ts_key: &str,
        payload: &[u8],
        now_ms: i64,
        out: &mut Out<'_>,
    ) -> Result<i64, Reject> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let top = TopLevel { ts_key }
            .deserialize(&mut de)
            .and_then(|top| de.end().map(|()| top))
            .map_err(|_| Reject::MalformedJson)?;
        let Some((ts, mut entries)) = top else {
            return Err(Reject::NotAnObject);
        };
        let ts_ms = self.checked_ts(ts.as_ref(), now_ms, out.limits)?;
        // Reversed, then a stable sort: the first of equal keys is the last in the document.
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| later.0 == kept.0);
        out.fields.reserve(entries.len().min(out.limits.max_fields));
        for (name, v) in &entries {
            out.push(name, v)?;
        }
        Ok(ts_ms)
    }

    /// Any layout: the payload as a `Value` tree, fields picked by JSON pointer.
    fn fields_from_tree(
        &self,
        payload: &[u8],
        now_ms: i64,
        out: &mut Out<'_>,
    ) -> Result<i64, Reject> {
        let json: Json = serde_json::from_slice(payload).map_err(|_| Reject::MalformedJson)?;
        let Json::Object(obj) = &json else {
            return Err(Reject::NotAnObject);
        };
        let ts = json.pointer(&self.ts_pointer).map(Scalar::of);
        let ts_ms = self.checked_ts(ts.as_ref(), now_ms, out.limits)?;

        out.fields.reserve(obj.len().min(out.limits.max_fields));
        for (name, m) in &self.fields {
            if let Some(v) = json.pointer(&m.pointer) {
                let v = scaled(Scalar::of(v), m)?;
                out.push(name, &v)?;
            }
        }
        if self.keep_unmapped {
            let ts_key = self.ts_pointer.strip_prefix('/').unwrap_or("");
            for (name, v) in obj {
                if name == ts_key || self.fields.iter().any(|(n, _)| n == name) {
                    continue;
                }
                out.push(name, &Scalar::of(v))?;
            }
        }
        Ok(ts_ms)
    }

    /// The reading's time: the payload's, or the receive time when it has none.
    fn checked_ts(
        &self,
        ts: Option<&Scalar<'_>>,
        now_ms: i64,
        limits: &Limits,
    ) -> Result<i64, Reject> {
        let ts_ms = match ts {
            None | Some(Scalar::Null) => now_ms,
            Some(v) => parse_ts(v, self.ts_unit)?,
        };
        if ts_ms < now_ms - limits.max_past_ms || ts_ms > now_ms + limits.max_future_ms {
            return Err(Reject::TsOutOfRange);
        }
        Ok(ts_ms)
    }
}

type Fields = Vec<(Cow<'static, str>, Value)>;

/// One JSON value of a payload as the decoder needs it, borrowed where it can be.
#[derive(Debug, Clone, PartialEq)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    /// An object or an array.
    Nested,
}

impl<'a> Scalar<'a> {
    fn of(v: &'a Json) -> Self {
        match v {
            Json::Null => Scalar::Null,
            Json::Bool(b) => Scalar::Bool(*b),
            Json::Number(n) => Scalar::Num(n.clone()),
            Json::String(s) => Scalar::Str(Cow::Borrowed(s)),
            Json::Array(_) | Json::Object(_) => Scalar::Nested,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(n.into()))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        // serde_json only yields finite floats; `Nested` would reject anything else.
        Ok(Number::from_f64(f).map_or(Scalar::Nested, Scalar::Num))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}

/// The payload's top level: `None` when it is valid JSON but not an object,
/// else the timestamp under `ts_key` and every other entry in document order.
struct TopLevel<'k> {
    ts_key: &'k str,
}

type Entries<'a> = Vec<(Cow<'a, str>, Scalar<'a>)>;

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Option<(Option<Scalar<'de>>, Entries<'de>)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Option<(Option<Scalar<'de>>, Entries<'de>)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ts = None;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let v: Scalar<'de> = map.next_value()?;
            if key == self.ts_key {
                ts = Some(v);
            } else {
                entries.push((key, v));
            }
        }
        Ok(Some((ts, entries)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| None)
    }
}

fn parse_ts(v: &Scalar<'_>, unit: TsUnit) -> Result<i64, Reject> {
    let ms = match v {
        Scalar::Num(n) => {
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
        Scalar::Str(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| Reject::BadTimestamp)?
            .timestamp_millis(),
        _ => return Err(Reject::BadTimestamp),
    };
    Ok(ms)
}

fn scaled<'a>(v: Scalar<'a>, m: &FieldMapping) -> Result<Scalar<'a>, Reject> {
    if m.scale == 1.0 && m.offset == 0.0 {
        return Ok(v);
    }
    let Scalar::Num(n) = v else {
        return Err(Reject::BadFieldType);
    };
    let x = n.as_f64().ok_or(Reject::BadFieldType)? * m.scale + m.offset;
    Number::from_f64(x)
        .map(Scalar::Num)
        .ok_or(Reject::NonFinite)
}

/// The fields of one reading as they are decoded, and what was cut from them.
struct Out<'l> {
    fields: Fields,
    kind: Kind,
    limits: &'l Limits,
    cuts: Cuts,
    /// Fields outside the kind's schema pushed so far.
    unknown: usize,
}

impl Out<'_> {
    /// Adds one field, checked against the kind's schema. Nulls are skipped:
    /// a device saying "no value" is not an error.
    fn push(&mut self, name: &str, v: &Scalar<'_>) -> Result<(), Reject> {
        if *v == Scalar::Null {
            return Ok(());
        }
        let (name, value): (Cow<'static, str>, Value) = match self.kind.field_type(name) {
            Some((known, ty)) => (Cow::Borrowed(known), self.typed(v, ty)?),
            None => {
                // Nested objects and arrays of unknown fields have no place in a time series.
                if *v == Scalar::Nested {
                    return Ok(());
                }
                if let Some(cut) = field_name_cut(name) {
                    self.cuts.add(cut, 1);
                    return Ok(());
                }
                // Never more are kept (`keep_at_most`): no need to hold them
                // meanwhile, whatever number a payload has.
                if self.unknown >= self.limits.max_fields {
                    self.cuts.add(Cut::TooManyFields, 1);
                    return Ok(());
                }
                self.unknown += 1;
                let value = match v {
                    Scalar::Bool(b) => Value::Bool(*b),
                    Scalar::Str(_) => self.typed(v, FieldType::Str)?,
                    _ => self.typed(v, FieldType::F64)?,
                };
                (Cow::Owned(name.to_owned()), value)
            }
        };
        if let Value::F64(f) = value {
            if !f.is_finite() {
                return Err(Reject::NonFinite);
            }
        }
        self.fields.push((name, value));
        Ok(())
    }

    /// [`typed`], a string shortened to `max_string_bytes`.
    fn typed(&mut self, v: &Scalar<'_>, ty: FieldType) -> Result<Value, Reject> {
        if let (FieldType::Str, Scalar::Str(s)) = (ty, v) {
            let kept = cut_to(s, self.limits.max_string_bytes);
            if kept.len() < s.len() {
                self.cuts.add(Cut::StringTruncated, 1);
            }
            return Ok(Value::Str(kept.into()));
        }
        typed(v, ty)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts unknown fields past `max` (the last ones in order), keeping every
/// field of the kind's schema: those are what the rules read.
fn keep_at_most(fields: &mut Fields, kind: Kind, max: usize, cuts: &mut Cuts) {
    if fields.len() <= max {
        return;
    }
    let known = fields
        .iter()
        .filter(|(n, _)| kind.field_type(n).is_some())
        .count();
    let mut unknown_room = max.saturating_sub(known);
    let before = fields.len();
    fields.retain(|(n, _)| {
        if kind.field_type(n).is_some() {
            return true;
        }
        if unknown_room > 0 {
            unknown_room -= 1;
            return true;
        }
        false
    });
    cuts.add(Cut::TooManyFields, (before - fields.len()) as u32);
}

fn typed(v: &Scalar<'_>, ty: FieldType) -> Result<Value, Reject> {
    match (ty, v) {
        (FieldType::F64, Scalar::Num(n)) => n.as_f64().map(Value::F64).ok_or(Reject::NonFinite),
        (FieldType::I64, Scalar::Num(n)) => match n.as_i64() {
            Some(i) => Ok(Value::I64(i)),
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::I64(f as i64)),
                _ => Err(Reject::BadFieldType),
            },
        },
        (FieldType::Bool, Scalar::Bool(b)) => Ok(Value::Bool(*b)),
        (FieldType::Str, Scalar::Str(s)) => Ok(Value::Str(s.as_ref().into())),
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
        max_fields: 64,
        max_string_bytes: 256,
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
            // Look-alikes of real ids: a Cyrillic е, a CJK site, a fullwidth digit.
            (
                "campus/s/gate/\u{435}ast-1",
                r#"{"door_open":true}"#,
                Reject::BadId,
            ),
            (
                "campus/雅中/gate/east-1",
                r#"{"door_open":true}"#,
                Reject::BadId,
            ),
            (
                "campus/s/gate/east-\u{ff11}",
                r#"{"door_open":true}"#,
                Reject::BadId,
            ),
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

    /// Decodes with the tests' limits, returning the reading and what was cut.
    fn check_cuts(topic: &str, payload: &str, limits: &Limits) -> (Reading, Cuts) {
        let mut cuts = Cuts::default();
        let r = decoder("")
            .decode_with_cuts(topic, payload.as_bytes(), NOW, limits, &mut cuts)
            .expect("topic matches")
            .unwrap_or_else(|e| panic!("{payload}: {e:?}"));
        (r, cuts)
    }

    fn names(r: &Reading) -> Vec<&str> {
        r.fields.iter().map(|(n, _)| &**n).collect()
    }

    #[test]
    fn field_names_line_protocol_cannot_carry_are_cut_and_the_alarm_kept() {
        let long = "n".repeat(65);
        let payload = format!(
            r#"{{"alarm":true,"bad\nname":1,"cr\r":2,"tab\tx":3,"":4,"{long}":5,"esc\u001b[31m":6,"zw\u200bx":7,"ok":8}}"#
        );
        for d in [
            decoder(""),
            Decoder {
                streaming_ts_key: None,
                ..decoder("")
            },
        ] {
            let mut cuts = Cuts::default();
            let r = d
                .decode_with_cuts(
                    "campus/s/smoke/d",
                    payload.as_bytes(),
                    NOW,
                    &LIMITS,
                    &mut cuts,
                )
                .expect("matches")
                .expect("the reading is kept");
            assert_eq!(names(&r), ["alarm", "ok"]);
            assert_eq!(cuts.get(Cut::BadFieldName), 7, "{cuts:?}");
        }
    }

    #[test]
    fn fields_named_like_tags_are_cut() {
        let (r, cuts) = check_cuts(
            "campus/s/gate/east-1",
            r#"{"event":"forced_open","device":"west-9","site":"other","building":"B","floor":"1","room":"2","time":5,"_measurement":"x","_field":"y","sitex":1}"#,
            &LIMITS,
        );
        assert_eq!(names(&r), ["event", "sitex"]);
        assert_eq!(cuts.get(Cut::ReservedField), 8, "{cuts:?}");
        assert_eq!(&*r.device, "east-1", "the topic names the device");
    }

    #[test]
    fn long_strings_are_shortened_on_a_character_boundary() {
        let limits = Limits {
            max_string_bytes: 16,
            ..LIMITS
        };
        // 3 bytes a character: 16 bytes fall inside the sixth.
        let (r, cuts) = check_cuts(
            "campus/s/gate/g",
            r#"{"door_open":true,"card_id":"东门东门东门东门","note":"short","memo":"0123456789abcdefXYZ"}"#,
            &limits,
        );
        assert_eq!(r.field("card_id"), Some(&Value::Str("东门东门东".into())));
        assert_eq!(r.field("note"), Some(&Value::Str("short".into())));
        assert_eq!(
            r.field("memo"),
            Some(&Value::Str("0123456789abcdef".into()))
        );
        assert_eq!(cuts.get(Cut::StringTruncated), 2);
    }

    #[test]
    fn fields_past_max_fields_are_cut_the_kinds_own_kept() {
        let limits = Limits {
            max_fields: 4,
            ..LIMITS
        };
        // Sorted by name the unknown `a…` come before `alarm` and `temp_c`.
        let extra: Vec<String> = (0..10).map(|i| format!(r#""a{i}":{i}"#)).collect();
        let payload = format!(r#"{{"temp_c":30,"alarm":true,{}}}"#, extra.join(","));
        let (r, cuts) = check_cuts("campus/s/smoke/d", &payload, &limits);
        assert_eq!(names(&r), ["a0", "a1", "alarm", "temp_c"]);
        assert_eq!(cuts.get(Cut::TooManyFields), 8);
        // Within the bound nothing is cut.
        let (r, cuts) = check_cuts("campus/s/smoke/d", r#"{"alarm":true,"x":1}"#, &limits);
        assert_eq!(r.fields.len(), 2);
        assert_eq!(cuts, Cuts::default());
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

    /// The one-pass reader and the `Value` tree agree on everything but the receive instant.
    fn both_ways(topic: &str, payload: &[u8]) -> [Result<(i64, Fields), Reject>; 2] {
        let streaming = decoder("");
        assert!(
            streaming.streaming_ts_key.is_some(),
            "the default layout streams"
        );
        let tree = Decoder {
            streaming_ts_key: None,
            ..streaming.clone()
        };
        [streaming, tree].map(|d| {
            d.decode(topic, payload, NOW, &LIMITS)
                .unwrap_or(Err(Reject::TopicMismatch))
                .map(|r| (r.ts_ms, r.fields))
        })
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            (-1e6f64..1e6).prop_map(|f| f.to_string()),
            Just("1.5e300".to_owned()),
            Just("1764380000123".to_owned()),
            Just("\"2025-11-29T01:33:20.5Z\"".to_owned()),
            "[a-z\\\\\"é]{0,6}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(inner, 0..3)
                    .prop_map(|v| format!("{{\"k\":{}}}", v.join(","))),
            ]
        })
    }

    /// A key and, mostly, a value of its type — so that whole payloads decode
    /// and duplicates and ordering matter — else any JSON.
    fn entry() -> impl Strategy<Value = (String, String)> {
        let keys = vec![
            "ts",
            "temp_c",
            "alarm",
            "passengers",
            "card_id",
            "route_id",
            "x",
            "",
            "a\\\"b",
            "long_name_long_name_long_name_long_name_long_name_long_name_long_",
        ];
        prop::sample::select(keys).prop_flat_map(|k| {
            let valid = match k {
                "ts" => Just("1764380000123".to_owned()).boxed(),
                "alarm" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
                "passengers" => (0i64..80).prop_map(|i| i.to_string()).boxed(),
                "card_id" | "route_id" => "[a-z]{0,6}".prop_map(|s| format!("\"{s}\"")).boxed(),
                _ => (-1e6f64..1e6).prop_map(|f| f.to_string()).boxed(),
            };
            (
                Just(k.to_owned()),
                prop_oneof![4 => valid, 1 => json_value()],
            )
        })
    }

    #[test]
    fn streaming_and_tree_agree_on_the_feed_and_its_bad_inputs() {
        for payload in [
            r#"{"ts":1764380000123,"temp_c":24.1,"alarm":false,"battery_pct":88}"#,
            r#"{"temp_c":1,"temp_c":"hot"}"#,
            r#"{"temp_c":"hot","temp_c":1}"#,
            r#"{"ts":"yesterday","ts":1764380000123,"temp_c":1}"#,
            r#"{"a\u0022b":1,"x":[1,{"y":2}],"z":null}"#,
            r#"{"temp_c":1} x"#,
            r#"[1,2]"#,
            r#""str""#,
            r#"null"#,
            r#"{"temp_c":1,"#,
        ] {
            let [a, b] = both_ways("campus/s/smoke/d", payload.as_bytes());
            assert_eq!(a, b, "{payload}");
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics(topic in "[a-z/+#{}]{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decoder("").decode(&topic, &payload, NOW, &LIMITS);
        }

        #[test]
        fn streaming_and_tree_agree(
            kind in prop::sample::select(vec!["smoke", "gate", "bus"]),
            entries in proptest::collection::vec(entry(), 0..8),
        ) {
            let body: Vec<String> = entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let payload = format!("{{{}}}", body.join(","));
            let [a, b] = both_ways(&format!("campus/s/{kind}/d"), payload.as_bytes());
            prop_assert_eq!(a, b, "{}", payload);
        }

        #[test]
        fn streaming_and_tree_agree_on_any_bytes(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let [a, b] = both_ways("campus/s/smoke/d", &payload);
            prop_assert_eq!(a, b);
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
