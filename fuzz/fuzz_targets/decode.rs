//! The payload decoder on arbitrary topics and payloads, with the decoders of
//! the example configuration (the reference layout and a mapped legacy one).
//! Input: `topic \0 payload`. Invariants: never panics; a reading has at
//! least one field and only finite floats.
#![no_main]

use std::sync::OnceLock;

use campus_gateway::config::Config;
use campus_gateway::reading::Value;
use campus_gateway::sources::decode::{Decoder, Limits};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_764_380_000_000;

fn decoders() -> &'static [Decoder] {
    static D: OnceLock<Vec<Decoder>> = OnceLock::new();
    D.get_or_init(|| {
        // The example names its bus route file by a relative path: written
        // beside the text for the load, which reads and checks it.
        let dir = std::env::temp_dir().join(format!("campusgw-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let text = campus_gateway::demo::example_with_routes(&dir)
            .unwrap_or_else(|e| panic!("the example routes: {e}"));
        let cfg = Config::from_toml(&text, Vec::new())
            .map(|l| l.config)
            .unwrap_or_else(|e| panic!("the example configuration: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        cfg.mqtt
            .topics
            .iter()
            .map(|t| Decoder::new(t).unwrap_or_else(|e| panic!("decoder: {e}")))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let (topic, payload) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"campus/yazhong/smoke/a3-301"[..], data),
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let limits = Limits {
        max_payload_bytes: 64 * 1024,
        max_past_ms: 30 * 86_400_000,
        max_future_ms: 300_000,
        max_fields: 64,
        max_string_bytes: 256,
    };
    for d in decoders() {
        if let Some(Ok(r)) = d.decode(topic, payload, NOW, &limits) {
            assert!(!r.fields.is_empty());
            assert!(r.fields.len() <= limits.max_fields.max(8));
            for (_, v) in &r.fields {
                if let Value::F64(f) = v {
                    assert!(f.is_finite());
                }
            }
        }
    }
});
