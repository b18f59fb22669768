//! The "campus" traffic shape of issue 17, shared by the pipeline and alarm
//! benchmarks: a school's own devices (~500) over ONE QoS 1 publisher
//! connection, a fraction of the messages alarm-worthy, five threshold rules.
//!
//! An alarm-worthy message is a reading over its rule's limit (smoke
//! obscuration, a kitchen hood over 90 °C, a gate forced open, a lab cabinet's
//! VOC, a bus speeding); the device's next message is back in range, so every
//! alarm-worthy message is one alarm raised and, half a second later at
//! 1,000 msg/s, cleared. The ordinary messages of the reference feed never
//! cross a limit (the feed's own `forced_open` gate events are turned into
//! `closed`).

use super::feed;

/// The five rules, one per kind, none with a `for` (a single reading raises
/// or clears), none folded into a flood group (each alarm is its own row).
pub const RULES: &str = r#"
[[rules]]
id = "smoke-obscuration"
severity = "critical"
flood = false
kinds = ["smoke"]
message = "Smoke obscuration {value} %/m at {location}"
condition = { type = "above", field = "obscuration_pct_m", value = 4.5, clear = 4.0 }

[[rules]]
id = "duct-overheat"
severity = "critical"
flood = false
kinds = ["kitchen"]
message = "Exhaust duct at {value} °C at {location}"
condition = { type = "above", field = "duct_temp_c", value = 90.0, clear = 85.0 }

[[rules]]
id = "gate-forced"
severity = "high"
flood = false
kinds = ["gate"]
message = "Gate forced open at {location}"
condition = { type = "equals", field = "event", value = "forced_open" }

[[rules]]
id = "labcab-voc"
severity = "high"
flood = false
kinds = ["labcab"]
message = "VOC {value} ppm at {location}"
condition = { type = "above", field = "voc_ppm", value = 10.0, clear = 5.0 }

[[rules]]
id = "bus-speeding"
severity = "medium"
flood = false
kinds = ["bus"]
message = "Bus at {value} km/h"
condition = { type = "above", field = "speed_kmh", value = 80.0, clear = 70.0 }
"#;

/// The first `n` (0–5) of the five rules, as configuration text.
pub fn rules(n: usize) -> String {
    RULES
        .split("\n[[rules]]")
        .filter(|s| !s.trim().is_empty())
        .take(n)
        .map(|r| format!("\n[[rules]]{r}"))
        .collect()
}

/// Whether message `seq` is alarm-worthy when one in `period` is (0: none):
/// one in each block of `period` messages, at an offset that moves by 37 a
/// block. With devices taken in turn (`seq % devices`, kind `seq % 5`) that
/// spreads the alarms over many devices — each alarm-worthy device's next
/// message is normal, so its alarm clears — and, for a `period` that is a
/// multiple of 5, through the five kinds in turn (37 ≡ 2 mod 5).
pub fn alarm_worthy(seq: u64, period: u64) -> bool {
    period >= 5 && seq % period == (seq / period * 37) % period
}

/// One in how many messages is alarm-worthy for a fraction (0.01 → 100; 0 → none).
pub fn period(fraction: f64) -> u64 {
    if fraction > 0.0 {
        ((1.0 / fraction).round() as u64).max(5)
    } else {
        0
    }
}

/// The payload of message `seq` of a `kind` device: the reference feed's,
/// over its rule's limit when `alarm`, never over it otherwise.
pub fn payload(kind: &str, ts_ms: i64, seq: u64, alarm: bool) -> String {
    let mut p = feed::payload(kind, ts_ms, seq);
    let obj = p.as_object_mut().expect("feed payload is an object");
    // The feed's own alarm flag (every 50th smoke message) stays off: no
    // rule of this shape reads it, and the alarm benchmark's probes do.
    if kind == "smoke" {
        obj.insert("alarm".into(), false.into());
    }
    if kind == "gate" && obj.get("event").and_then(|e| e.as_str()) == Some("forced_open") {
        obj.insert("event".into(), "closed".into());
    }
    if alarm {
        let (field, value): (&str, serde_json::Value) = match kind {
            "smoke" => ("obscuration_pct_m", 6.5.into()),
            "kitchen" => ("duct_temp_c", 95.5.into()),
            "gate" => ("event", "forced_open".into()),
            "labcab" => ("voc_ppm", 25.5.into()),
            _ => ("speed_kmh", 92.5.into()),
        };
        obj.insert(field.into(), value);
    }
    p.to_string()
}

/// A probe smoke alarm's payload (over the obscuration limit, and the
/// detector's own `alarm` flag on for a rule that reads it).
pub fn probe_payload(ts_ms: i64, seq: u64) -> String {
    let mut p = feed::payload("smoke", ts_ms, seq);
    p["alarm"] = true.into();
    p["obscuration_pct_m"] = 6.5.into();
    p.to_string()
}
