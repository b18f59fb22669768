//! Proves the helpers in `tests/common` work against the real servers.

mod common;

use std::time::Duration;

use common::feed;
use common::mqtt::MqttClientConfig;
use common::tls::TestPki;
use common::{
    eventually, free_port, now_ms, wait_until, Influx1, Mosquitto, Publisher, QoS, Subscriber,
    Victoria,
};

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("free_port() gave a bindable port");
}

#[tokio::test]
async fn wait_until_polls_and_times_out() {
    let started = std::time::Instant::now();
    let mut calls = 0;
    let ok = wait_until(Duration::from_secs(5), || {
        calls += 1;
        let done = calls >= 3;
        async move { done }
    })
    .await;
    assert!(ok);
    assert_eq!(calls, 3);
    assert!(!wait_until(Duration::from_millis(250), || async { false }).await);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn mosquitto_plain_round_trip() {
    let broker = Mosquitto::start();
    assert!(broker.url().starts_with("mqtt://127.0.0.1:"));
    let mut sub = Subscriber::connect(&broker.url(), "campus/#").await;
    let publisher = Publisher::connect(&broker.url()).await;

    let ts = now_ms();
    for (seq, kind) in feed::KINDS.iter().enumerate() {
        let (topic, payload) = feed::message(kind, "yazhong", "dev-1", ts, seq as u64);
        publisher.publish(&topic, payload, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;
    assert_eq!(publisher.acked(), 5);

    let received = sub.collect(5).await;
    for (message, kind) in received.iter().zip(feed::KINDS) {
        assert_eq!(message.topic, format!("campus/yazhong/{kind}/dev-1"));
        let json = message.json();
        assert_eq!(json["ts"], ts);
        for (field, _) in feed::fields(kind) {
            assert!(json.get(field).is_some(), "{kind} payload lacks {field}");
        }
    }
    assert!(broker.log().contains("running"), "{}", broker.log());
}

#[tokio::test]
async fn mosquitto_password_auth() {
    let broker = Mosquitto::builder()
        .user("gateway", "s3cret")
        .user("other", "pw2")
        .start();

    let wrong = Publisher::try_connect(broker.client_config().credentials("gateway", "nope")).await;
    let error = wrong.err().expect("a wrong password must be refused");
    assert!(
        error.contains("BadUserNamePassword") || error.contains("NotAuthorized"),
        "unexpected error: {error}"
    );

    let anonymous = Publisher::try_connect(broker.client_config().no_credentials()).await;
    assert!(anonymous.is_err(), "anonymous must be refused");

    let mut sub = Subscriber::connect_with(
        broker.client_config().credentials("other", "pw2"),
        &["t/#", "u/#"],
        QoS::AtLeastOnce,
    )
    .await;
    let publisher = Publisher::connect_with(broker.client_config()).await;
    publisher.publish("t/1", "hello", QoS::AtLeastOnce).await;
    publisher.publish("u/1", "world", QoS::AtLeastOnce).await;
    publisher.flush().await;
    assert_eq!(sub.recv().await.payload_str(), "hello");
    assert_eq!(sub.recv().await.payload_str(), "world");
}

#[tokio::test]
async fn mosquitto_tls_round_trip() {
    let broker = Mosquitto::builder().tls().start();
    assert!(broker.url().starts_with("mqtts://localhost:"));
    assert!(broker.ca_pem_path().is_file());
    assert!(broker.client_cert_path().is_file());
    assert!(broker.client_key_path().is_file());

    let mut sub =
        Subscriber::connect_with(broker.client_config(), &["t/#"], QoS::AtLeastOnce).await;
    let publisher = Publisher::connect_with(broker.client_config()).await;
    publisher
        .publish("t/tls", "over tls", QoS::AtLeastOnce)
        .await;
    publisher.flush().await;
    assert_eq!(sub.recv().await.payload_str(), "over tls");

    // The CA is really checked: an unrelated CA is refused.
    let rogue = TestPki::generate();
    let wrong_ca = broker.client_config().ca_pem(rogue.ca_cert_pem.as_bytes());
    let error = Publisher::try_connect(wrong_ca)
        .await
        .err()
        .expect("a server cert from another CA must be refused");
    assert!(
        error.contains("TLS") || error.contains("certificate"),
        "{error}"
    );

    // 127.0.0.1 is in the SAN too.
    let by_ip = broker
        .client_config()
        .with_url(&format!("mqtts://127.0.0.1:{}", broker.port()));
    Publisher::connect_with(by_ip).await;
}

#[tokio::test]
async fn mosquitto_tls_requires_client_cert() {
    let broker = Mosquitto::builder().require_client_cert().start();
    let with_cert = Publisher::connect_with(broker.client_config()).await;
    with_cert.publish("t/x", "x", QoS::AtLeastOnce).await;
    with_cert.flush().await;

    let without = Publisher::try_connect(broker.client_config().no_client_auth()).await;
    assert!(without.is_err(), "a client without certificate must fail");
}

#[tokio::test]
async fn mosquitto_restart_same_port() {
    let mut broker = Mosquitto::start();
    let port = broker.port();
    let publisher = Publisher::connect(&broker.url()).await;
    publisher.publish("t/a", "1", QoS::AtLeastOnce).await;
    publisher.flush().await;

    broker.restart();
    assert_eq!(broker.port(), port);
    assert!(broker.is_running());

    // The same publisher reconnects by itself and gets acks again.
    eventually("publisher reconnects after broker restart", || async {
        publisher.connections() >= 2 && publisher.is_connected()
    })
    .await;
    let mut sub = Subscriber::connect(&broker.url(), "t/#").await;
    publisher.publish("t/b", "2", QoS::AtLeastOnce).await;
    publisher.flush().await;
    assert_eq!(sub.recv().await.payload_str(), "2");
}

#[tokio::test]
async fn mosquitto_persistence_keeps_queued_messages_over_restart() {
    let mut broker = Mosquitto::builder()
        .persistence()
        .max_queued_messages(1_000_000)
        .start();
    let session = MqttClientConfig::new(&broker.url())
        .client_id("persistent-sub")
        .clean_session(false);
    // Create the persistent session, then go away.
    Subscriber::connect_with(session.clone(), &["q/#"], QoS::AtLeastOnce)
        .await
        .disconnect()
        .await;

    let publisher = Publisher::connect(&broker.url()).await;
    for i in 0..50 {
        publisher
            .publish(&format!("q/{i}"), i.to_string(), QoS::AtLeastOnce)
            .await;
    }
    publisher.flush().await;
    publisher.disconnect().await;

    broker.restart();

    let mut sub = Subscriber::connect_with(session, &["q/#"], QoS::AtLeastOnce).await;
    let received = sub.collect(50).await;
    let mut payloads: Vec<u64> = received
        .iter()
        .map(|m| m.payload_str().parse().expect("numeric payload"))
        .collect();
    payloads.sort_unstable();
    payloads.dedup();
    assert_eq!(payloads, (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn influx1_write_and_count() {
    let mut influx = Influx1::start();
    influx.create_database("campus").await;
    let ts = now_ms();
    let (status, body) = influx
        .write_lines(
            "campus",
            &format!("smoke,site=yazhong,device=a3-301 temp_c=24.1,alarm=false {ts}"),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(influx.count("campus", "smoke").await, 1);
    assert_eq!(influx.count_field("campus", "smoke", "temp_c").await, 1);
    let rows = influx.rows("campus", "SELECT * FROM smoke").await;
    assert_eq!(rows[0]["time"], ts);
    assert_eq!(rows[0]["device"], "a3-301");
    assert_eq!(influx.count("campus", "no_such_measurement").await, 0);
    assert_eq!(influx.count("no_such_db", "smoke").await, 0);

    // Count semantics: a rewrite of the same point merges; count(*) is per field.
    let lines = format!(
        "smoke,site=yazhong,device=a3-301 temp_c=24.1,alarm=false {ts}\n\
         smoke,site=yazhong,device=a3-302 temp_c=22.0 {ts}\n\
         smoke,site=yazhong,device=a3-301 battery_pct=50 {}",
        ts + 1
    );
    assert_eq!(influx.write_lines("campus", &lines).await.0, 204);
    assert_eq!(influx.count("campus", "smoke").await, 3);
    let per_field = influx.count_per_field("campus", "smoke").await;
    assert_eq!(per_field["temp_c"], 2);
    assert_eq!(per_field["alarm"], 1);
    assert_eq!(per_field["battery_pct"], 1);

    // A write to a missing database is 404.
    assert_eq!(influx.write_lines("missing", &lines).await.0, 404);

    influx.restart();
    assert_eq!(
        influx.count("campus", "smoke").await,
        3,
        "data survives restart"
    );
}

#[tokio::test]
async fn influx1_with_auth() {
    let influx = Influx1::start_with_auth("admin", "adm'in pw");
    influx.create_database("campus").await;
    let ts = now_ms();
    let (status, body) = influx
        .write_lines(
            "campus",
            &format!("gate,site=s,device=d door_open=true {ts}"),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(influx.count("campus", "gate").await, 1);

    let client = reqwest::Client::new();
    let url = format!("{}/write?db=campus&precision=ms", influx.url());
    let line = format!("gate,site=s,device=d door_open=false {}", ts + 1);
    let anonymous = client
        .post(&url)
        .body(line.clone())
        .send()
        .await
        .expect("anonymous write request");
    assert_eq!(anonymous.status(), 401);
    let wrong = client
        .post(&url)
        .basic_auth("admin", Some("wrong"))
        .body(line.clone())
        .send()
        .await
        .expect("wrong-password write request");
    assert_eq!(wrong.status(), 401);
    // InfluxDB 1.6 does not understand the v2 Token header.
    let token = client
        .post(&url)
        .header("Authorization", "Token admin:adm'in pw")
        .body(line)
        .send()
        .await
        .expect("token write request");
    assert_eq!(token.status(), 401);
}

#[tokio::test]
async fn victoria_v2_write_and_export() {
    let mut vm = Victoria::start();
    let ts = now_ms();
    let (status, body) = vm
        .write_v2(
            &format!("smoke,site=yazhong,device=a3-301 temp_c=24.1,alarm=true,fault=false {ts}"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    eventually("the smoke_temp_c sample is exported", || async {
        vm.count_samples(r#"{__name__="smoke_temp_c"}"#).await == 1
    })
    .await;
    let series = vm.export(r#"{__name__="smoke_temp_c"}"#).await;
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["metric"]["device"], "a3-301");
    assert_eq!(series[0]["metric"]["site"], "yazhong");
    assert_eq!(series[0]["values"][0], 24.1);
    assert_eq!(series[0]["timestamps"][0], ts);
    eventually("bools are exported as 1/0", || async {
        vm.count_samples(r#"{__name__=~"smoke_(alarm|fault)"}"#)
            .await
            == 2
    })
    .await;

    // Without -httpAuth any Authorization header is ignored.
    assert_eq!(
        vm.write_v2(&format!("t,a=1 f=1 {ts}"), Some("Token whatever"))
            .await
            .0,
        204
    );

    // A duplicate point is a second sample (no dedup by default).
    let line = format!("dup,a=1 f=1 {ts}");
    assert_eq!(vm.write_v2(&line, None).await.0, 204);
    assert_eq!(vm.write_v2(&line, None).await.0, 204);
    eventually("both duplicate samples are exported", || async {
        vm.count_samples(r#"{__name__="dup_f"}"#).await == 2
    })
    .await;
    assert_eq!(vm.count_distinct_samples(r#"{__name__="dup_f"}"#).await, 1);

    vm.restart();
    eventually("data survives a restart", || async {
        vm.count_samples(r#"{__name__="smoke_temp_c"}"#).await == 1
    })
    .await;
}

#[tokio::test]
async fn victoria_basic_auth_rejects_tokens() {
    let vm = Victoria::start_with_auth("gw", "pw");
    let line = format!("smoke,site=s,device=d temp_c=1 {}", now_ms());
    // What the influxdb2 crate sends: `Authorization: Token <token>`.
    assert_eq!(vm.write_v2(&line, Some("Token xyz")).await.0, 401);
    assert_eq!(vm.write_v2(&line, Some("Token gw:pw")).await.0, 401);
    let basic = format!("Basic {}", common::base64(b"gw:wrong"));
    assert_eq!(vm.write_v2(&line, Some(&basic)).await.0, 401);
    // The helpers' own Basic auth is accepted.
    assert_eq!(vm.write_v2(&line, None).await.0, 204);
    eventually("the authorised write is exported", || async {
        vm.count_samples(r#"{__name__="smoke_temp_c"}"#).await == 1
    })
    .await;
}

#[test]
fn feed_messages_are_complete_and_deterministic() {
    for kind in feed::KINDS {
        let (topic, payload) = feed::message(kind, "yazhong", "dev_1-a", 1_764_380_000_123, 7);
        assert_eq!(topic, format!("campus/yazhong/{kind}/dev_1-a"));
        assert_eq!(
            feed::message(kind, "yazhong", "dev_1-a", 1_764_380_000_123, 7).1,
            payload
        );
        assert_ne!(
            feed::message(kind, "yazhong", "dev_1-a", 1_764_380_000_123, 8).1,
            payload
        );
        let json: serde_json::Value = serde_json::from_str(&payload).expect("payload is JSON");
        assert_eq!(json["ts"], 1_764_380_000_123_i64);
        let object = json.as_object().expect("payload is an object");
        assert_eq!(object.len(), feed::fields(kind).len() + 1, "{payload}");
        for (field, ty) in feed::fields(kind) {
            let value = &json[*field];
            let ok = match ty {
                feed::FieldType::F64 => value.is_f64(),
                feed::FieldType::I64 => value.is_i64(),
                feed::FieldType::Bool => value.is_boolean(),
                feed::FieldType::Str => value.is_string(),
            };
            assert!(ok, "{kind}.{field} has the wrong type: {value}");
        }
    }
    // Alarms happen on their rhythm.
    assert_eq!(feed::payload("smoke", 0, 49)["alarm"], true);
    assert_eq!(feed::payload("smoke", 0, 48)["alarm"], false);
}
