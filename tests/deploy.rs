//! What an installer runs at a school besides the daemon: `campusgw simulate`
//! against a real broker, `campusgw backup` of a running gateway's stores.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::feed::{fields, FieldType};
use common::{Mosquitto, MqttClientConfig, QoS, Subscriber};

const BIN: &str = env!("CARGO_BIN_EXE_campusgw");

/// Runs `campusgw` with `args` (blocking, off the runtime's threads).
async fn campusgw(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{BIN}: {e}"))
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// "published N messages, M acknowledged by the broker" → (N, M).
fn report(stdout: &str) -> (u64, u64) {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let n = |i: usize| -> u64 {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no count in {stdout:?}"))
    };
    assert_eq!(words.first(), Some(&"published"), "{stdout}");
    (n(1), n(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_publishes_the_reference_feed_of_n_devices_to_a_real_broker() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(&broker.url(), "campus/#").await;
    let out = campusgw(args(&[
        "simulate",
        "--broker",
        &broker.url(),
        "--devices",
        "10",
        "--rate",
        "200",
        "--duration",
        "3s",
        "--site",
        "yz",
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let (published, acked) = report(&stdout);
    assert_eq!(published, acked, "{stdout}");
    assert!(published >= 10, "at least one message per device: {stdout}");
    // Paced by the clock: never more than the rate allows (an upper bound only).
    assert!(published <= 200 * 4, "{stdout}");

    let messages = sub.collect(published as usize).await;
    let mut devices = BTreeSet::new();
    let decoder = campus_gateway::sources::decode::Decoder::new(
        &toml::from_str("").expect("the default topic layout"),
    )
    .expect("decoder");
    let limits = campus_gateway::sources::decode::Limits {
        max_payload_bytes: 65_536,
        max_past_ms: 3_600_000,
        max_future_ms: 3_600_000,
        max_fields: 64,
        max_string_bytes: 256,
    };
    for m in &messages {
        let levels: Vec<&str> = m.topic.split('/').collect();
        assert_eq!(levels.len(), 4, "{}", m.topic);
        assert_eq!(&levels[..2], ["campus", "yz"], "{}", m.topic);
        let kind = levels[2];
        assert!(
            levels[3].starts_with(&format!("sim-{kind}-")),
            "{}",
            m.topic
        );
        devices.insert(levels[3].to_owned());
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", m.topic, m.payload_str()));
        assert!(v["ts"].is_i64(), "{}", m.payload_str());
        for (name, ty) in fields(kind) {
            // A card id comes with an opening only (FEED.md).
            if *name == "card_id" && kind == "labcab" {
                continue;
            }
            let x = &v[*name];
            let ok = match ty {
                FieldType::F64 => x.is_number(),
                FieldType::I64 => x.is_i64(),
                FieldType::Bool => x.is_boolean(),
                FieldType::Str => x.is_string(),
            };
            assert!(ok, "{kind}.{name} in {}", m.payload_str());
        }
        // And the gateway's own decoder takes it whole.
        let now = chrono::Utc::now().timestamp_millis();
        let reading = decoder
            .decode(&m.topic, &m.payload, now, &limits)
            .expect("the default layout matches")
            .unwrap_or_else(|e| panic!("{}: {e:?}", m.payload_str()));
        assert_eq!(reading.device.as_ref(), levels[3]);
    }
    assert_eq!(devices.len(), 10, "{devices:?}");
    let kinds: BTreeSet<_> = devices.iter().filter_map(|d| d.split('-').nth(1)).collect();
    assert_eq!(kinds.len(), 5, "all five kinds by default: {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_signs_in_with_a_password_file_and_says_when_the_broker_refuses_it() {
    let broker = Mosquitto::builder()
        .user("reader", "reader-pw")
        .user("installer", "right-pw")
        .start();
    let dir = tempfile::tempdir().expect("tempdir");
    let right = dir.path().join("right");
    let wrong = dir.path().join("wrong");
    std::fs::write(&right, "right-pw\n").expect("write");
    std::fs::write(&wrong, "wrong-pw\n").expect("write");
    let mut sub = Subscriber::connect_with(
        MqttClientConfig::new(&broker.url()).credentials("reader", "reader-pw"),
        &["campus/#"],
        QoS::AtLeastOnce,
    )
    .await;
    let run = |file: &std::path::Path| {
        args(&[
            "simulate",
            "--broker",
            &broker.url(),
            "--devices",
            "2",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--kinds",
            "gate,bus",
            "--username",
            "installer",
            "--password-file",
            &file.display().to_string(),
        ])
    };
    let refused = campusgw(run(&wrong)).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        !stderr.contains("wrong-pw"),
        "the password is never shown: {stderr}"
    );

    let ok = campusgw(run(&right)).await;
    let stdout = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (published, acked) = report(&stdout);
    assert_eq!(published, acked);
    let messages = sub.collect(published as usize).await;
    assert!(
        messages
            .iter()
            .all(|m| m.topic.starts_with("campus/sim/gate/")
                || m.topic.starts_with("campus/sim/bus/"))
    );
}
