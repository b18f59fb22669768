//! Bad input as a real campus sends it (FEED.md): each kind is refused,
//! counted under its reason in `/metrics`, and the gateway keeps serving and
//! storing the good messages around it.

mod common;

use common::gateway::{self, metric};
use common::{eventually, feed, Influx1, Mosquitto, Publisher, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_counted_and_the_gateway_goes_on() {
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = gateway::config(&format!(
        r#"
[gateway]
data_dir = "{}"
undeclared_devices = "ignore"

[mqtt]
url = "{}"
[[mqtt.topics]]
pattern = "campus/{{site}}/{{kind}}/{{device}}"
subscribe = "campus/#"

[influx]
url = "{}"
api = "v1"
database = "campus"
flush_interval = "100ms"

[web]
listen = "127.0.0.1:0"

[[devices]]
id = "a3-301"
kind = "smoke"
site = "yazhong"
"#,
        dir.path().display(),
        broker.url(),
        influx.url()
    ));
    let gw = gateway::start(cfg).await;
    gateway::wait_subscribed(&gw).await;

    let now = common::now_ms();
    let good =
        |seq: u64| feed::message("smoke", "yazhong", "a3-301", now - 10_000 + seq as i64, seq);
    let ten_years_ago = now - 10 * 365 * 86_400_000;
    let smoke = "campus/yazhong/smoke/a3-301";
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "malformed_json",
            smoke.into(),
            br#"{"ts":1764380000123,"temp_c":24."#.to_vec(),
        ),
        (
            "bad_field_type",
            smoke.into(),
            br#"{"temp_c":"warm"}"#.to_vec(),
        ),
        (
            "malformed_json",
            smoke.into(),
            br#"{"temp_c":NaN}"#.to_vec(),
        ),
        (
            "topic_mismatch",
            "campus/yazhong/smoke".into(),
            br#"{"temp_c":20}"#.to_vec(),
        ),
        ("payload_too_large", smoke.into(), {
            let mut big = br#"{"temp_c":20,"pad":""#.to_vec();
            big.resize(5 * 1024 * 1024, b'x');
            big.extend_from_slice(b"\"}");
            big
        }),
        (
            "ts_out_of_range",
            smoke.into(),
            format!(r#"{{"ts":{ten_years_ago},"temp_c":20}}"#).into_bytes(),
        ),
        (
            "unknown_kind",
            "campus/yazhong/elevator/e1".into(),
            br#"{"temp_c":20}"#.to_vec(),
        ),
        (
            "unknown_device",
            "campus/yazhong/smoke/z9-999".into(),
            br#"{"temp_c":20}"#.to_vec(),
        ),
        ("not_an_object", smoke.into(), b"[1,2,3]".to_vec()),
        (
            "bad_id",
            "campus/yazhong/smoke/bad$id".into(),
            br#"{"temp_c":20}"#.to_vec(),
        ),
        ("malformed_json", smoke.into(), vec![0xff, 0xfe, 0x00]),
    ];

    let publisher = Publisher::connect(&broker.url()).await;
    let mut seq = 0;
    for (_, topic, payload) in &cases {
        // A good message between every bad one: what was accepted must survive.
        let (t, p) = good(seq);
        seq += 1;
        publisher.publish(&t, p, QoS::AtLeastOnce).await;
        publisher
            .publish(topic, payload.clone(), QoS::AtLeastOnce)
            .await;
    }
    let (t, p) = good(seq);
    seq += 1;
    publisher.publish(&t, p, QoS::AtLeastOnce).await;
    publisher.flush().await;

    eventually("all good messages in InfluxDB", || async {
        influx.count("campus", "smoke").await == seq
    })
    .await;

    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for (reason, _, _) in &cases {
        *expected.entry(reason).or_default() += 1.0;
    }
    for (reason, n) in expected {
        let series = format!("campusgw_messages_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&gw, &series).await, n, "{series}");
    }
    let received = metric(&gw, "campusgw_messages_received_total{source=\"mqtt\"}").await;
    assert_eq!(received, (cases.len() as u64 + seq) as f64);

    // The declared detector reported: the device gauge (recounted at most
    // once a second) says so.
    eventually("the detector counted online", || async {
        metric(&gw, "campusgw_devices{kind=\"smoke\",state=\"online\"}").await == 1.0
    })
    .await;

    let (status, body) = gateway::get(&gw, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

/// A QoS 1 message over the MQTT client's old packet limit (16 MiB) broke the
/// connection before it could be acknowledged; the persistent session sent
/// it again on every reconnect, and no alarm behind it was ever raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_message_is_refused_and_acknowledged_and_the_alarms_behind_it_are_raised() {
    use campus_gateway::reading::Kind;
    use rumqttc::{AsyncClient, Event, Packet};

    // mosquitto's default: no message size limit.
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"gw-poison-{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n{}",
        dir.path().display(),
        broker.url(),
        std::process::id(),
        gateway::smoke_rule("Smoke at {device}"),
    );
    for d in ["d1", "d2", "d3"] {
        text.push_str(&format!(
            "[[devices]]\nid = \"{d}\"\nkind = \"smoke\"\nsite = \"yazhong\"\n"
        ));
    }
    let gw = gateway::start(gateway::config(&text)).await;
    gateway::wait_subscribed(&gw).await;

    // 17 MB, published by a client that may send it; wait for the broker's
    // PUBACK so that it is queued for the gateway before the alarms.
    let mut options = common::MqttClientConfig::new(&broker.url())
        .client_id("poison-publisher")
        .mqtt_options();
    options.set_max_packet_size(64 * 1024, 32 * 1024 * 1024);
    let (client, mut events) = AsyncClient::new(options, 4);
    let mut huge = br#"{"alarm":true,"pad":""#.to_vec();
    huge.resize(17 * 1000 * 1000, b'x');
    huge.extend_from_slice(b"\"}");
    client
        .publish(
            feed::topic("yazhong", "smoke", "d1"),
            QoS::AtLeastOnce,
            false,
            huge,
        )
        .await
        .expect("queued");
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publishing the huge message: {e}"),
            }
        }
    })
    .await
    .expect("the broker took the huge message");

    let publisher = Publisher::connect(&broker.url()).await;
    for (seq, d) in ["d1", "d2", "d3"].into_iter().enumerate() {
        let mut p = feed::payload("smoke", common::now_ms(), seq as u64);
        p["alarm"] = serde_json::json!(true);
        publisher
            .publish(
                &feed::topic("yazhong", "smoke", d),
                p.to_string(),
                QoS::AtLeastOnce,
            )
            .await;
    }
    publisher.flush().await;

    eventually(
        "three smoke alarms raised behind the huge message",
        || async {
            gw.rules
                .open
                .read()
                .expect("snapshot")
                .iter()
                .filter(|a| a.rule == "smoke-alarm")
                .count()
                == 3
        },
    )
    .await;
    assert_eq!(
        metric(
            &gw,
            "campusgw_messages_rejected_total{reason=\"payload_too_large\"}"
        )
        .await,
        1.0,
        "refused once: acknowledged, not sent again"
    );
    assert_eq!(
        metric(
            &gw,
            &format!(
                "campusgw_readings_total{{kind=\"{}\"}}",
                Kind::Smoke.as_str()
            )
        )
        .await,
        3.0
    );
    gw.stop().await;
}

/// 400 devices each sending a 60 KB string took the gateway from 25 to
/// 103 MB and `/api/devices` to 24 MB: every string was kept whole as the
/// device's latest value. Strings are now cut at `max_string_bytes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_device_strings_are_cut_and_the_device_list_stays_small() {
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"gw-strings-{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display(),
        broker.url(),
        std::process::id(),
    ));
    let gw = gateway::start(cfg).await;
    gateway::wait_subscribed(&gw).await;

    const DEVICES: usize = 400;
    let publisher = Publisher::connect(&broker.url()).await;
    let long = "注".repeat(20_000); // 60 KB of 3-byte characters
    for i in 0..DEVICES {
        let payload = format!(r#"{{"door_open":false,"note":"{long}"}}"#);
        publisher
            .publish(
                &feed::topic("yazhong", "gate", &format!("g-{i}")),
                payload,
                QoS::AtLeastOnce,
            )
            .await;
    }
    publisher.flush().await;
    eventually("every device seen", || async {
        gw.registry.len() == DEVICES
    })
    .await;
    eventually("every string counted as cut", || async {
        metric(
            &gw,
            "campusgw_fields_cut_total{reason=\"string_truncated\"}",
        )
        .await
            == DEVICES as f64
    })
    .await;

    let devices = gw.registry.devices(common::now_ms());
    for d in &devices {
        let note = d.fields["note"].as_str().expect("the note, cut");
        assert_eq!(note.len(), 255, "256 bytes fall inside a character");
        assert!(long.starts_with(note));
    }
    // What /api/devices serialises: ~0.2 MB instead of 24 MB.
    let json = serde_json::to_vec(&devices).expect("json");
    assert!(json.len() < 400 * 1024, "{} bytes", json.len());
    gw.stop().await;
}
