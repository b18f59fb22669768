//! Reference-feed messages per `shared/docs/FEED.md`.
//!
//! Topic `campus/<site>/<kind>/<device>`, payload one JSON object with `ts`
//! (epoch ms) and EVERY field of the kind. Values are deterministic
//! functions of `seq` (same inputs → same bytes), vary with it, and stay in
//! plausible ranges. Every f64 value is an integer divided by 10, 100 or
//! 10 000, so it prints as a short decimal (`21.5`, not `21.499999`);
//! whole f64 values print with `.0` (`88.0`). Alarm-ish states occur on a
//! fixed rhythm, e.g. smoke `alarm` on every seq ≡ 49 (mod 50).

use serde_json::{json, Value};

/// The five kinds of the reference feed.
pub const KINDS: [&str; 5] = ["smoke", "gate", "kitchen", "labcab", "bus"];

/// JSON type of a feed field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    F64,
    I64,
    Bool,
    Str,
}

/// The fields of `kind` (without `ts`), in FEED.md order. Panics on an
/// unknown kind.
pub fn fields(kind: &str) -> &'static [(&'static str, FieldType)] {
    use FieldType::*;
    match kind {
        "smoke" => &[
            ("obscuration_pct_m", F64),
            ("temp_c", F64),
            ("alarm", Bool),
            ("fault", Bool),
            ("battery_pct", F64),
            ("tamper", Bool),
        ],
        "gate" => &[
            ("door_open", Bool),
            ("event", Str),
            ("card_id", Str),
            ("person_count", I64),
        ],
        "kitchen" => &[
            ("duct_temp_c", F64),
            ("fan_on", Bool),
            ("fan_current_a", F64),
            ("grease_mg_m3", F64),
            ("co_ppm", F64),
            ("gas_lel_pct", F64),
        ],
        "labcab" => &[
            ("voc_ppm", F64),
            ("temp_c", F64),
            ("humidity_pct", F64),
            ("door_open", Bool),
            ("locked", Bool),
            ("exhaust_fan_on", Bool),
            ("card_id", Str),
        ],
        "bus" => &[
            ("lat", F64),
            ("lon", F64),
            ("speed_kmh", F64),
            ("heading_deg", F64),
            ("passengers", I64),
            ("door_open", Bool),
            ("route_id", Str),
        ],
        other => panic!("unknown feed kind {other:?}; known: {KINDS:?}"),
    }
}

/// `campus/<site>/<kind>/<device>`.
pub fn topic(site: &str, kind: &str, device: &str) -> String {
    format!("campus/{site}/{kind}/{device}")
}

/// (topic, JSON payload) of message number `seq` from `device`.
pub fn message(kind: &str, site: &str, device: &str, ts_ms: i64, seq: u64) -> (String, String) {
    (
        topic(site, kind, device),
        payload(kind, ts_ms, seq).to_string(),
    )
}

/// The payload as a JSON value (e.g. to remove `ts` or break a field).
pub fn payload(kind: &str, ts_ms: i64, seq: u64) -> Value {
    let mut value = payload_without_ts(kind, seq);
    value
        .as_object_mut()
        .expect("feed payload is an object")
        .insert("ts".to_string(), json!(ts_ms));
    value
}

/// The payload without `ts` (the gateway then uses its receive time).
pub fn payload_without_ts(kind: &str, seq: u64) -> Value {
    let s = seq;
    let tenth = |n: u64| n as f64 / 10.0;
    let hundredth = |n: u64| n as f64 / 100.0;
    let card = |salt: u64| format!("C{:06}", (s.wrapping_mul(7919) + salt) % 1_000_000);
    match kind {
        "smoke" => json!({
            "obscuration_pct_m": tenth(s % 40),
            "temp_c": tenth(200 + s % 100),
            "alarm": s % 50 == 49,
            "fault": s % 97 == 96,
            "battery_pct": tenth(1000 - s % 1000),
            "tamper": s % 113 == 112,
        }),
        "gate" => {
            const EVENTS: [&str; 6] = [
                "access_granted",
                "closed",
                "access_denied",
                "closed",
                "forced_open",
                "held_open",
            ];
            let event = EVENTS[(s % 6) as usize];
            let door_open = matches!(event, "access_granted" | "forced_open" | "held_open");
            json!({
                "door_open": door_open,
                "event": event,
                "card_id": card(1),
                "person_count": if door_open { (s % 3 + 1) as i64 } else { 0 },
            })
        }
        "kitchen" => {
            let fan_on = s % 10 != 9;
            json!({
                "duct_temp_c": tenth(400 + s % 400),
                "fan_on": fan_on,
                "fan_current_a": if fan_on { hundredth(250 + s % 100) } else { 0.0 },
                "grease_mg_m3": tenth(s % 50),
                "co_ppm": (s % 30) as f64,
                "gas_lel_pct": tenth(s % 20),
            })
        }
        "labcab" => {
            let door_open = s % 8 == 7;
            json!({
                "voc_ppm": tenth(s % 25),
                "temp_c": tenth(180 + s % 60),
                "humidity_pct": tenth(350 + s % 200),
                "door_open": door_open,
                "locked": !door_open,
                "exhaust_fan_on": s % 20 != 19,
                "card_id": card(2),
            })
        }
        "bus" => {
            let speed = tenth(s % 600);
            json!({
                "lat": (299_800 + s % 200) as f64 / 10_000.0,
                "lon": (1_030_000 + (s * 3) % 400) as f64 / 10_000.0,
                "speed_kmh": speed,
                "heading_deg": ((s * 7) % 360) as f64,
                "passengers": (s % 45) as i64,
                "door_open": speed == 0.0,
                "route_id": format!("R{}", s % 3 + 1),
            })
        }
        other => panic!("unknown feed kind {other:?}; known: {KINDS:?}"),
    }
}
