//! A school broker that wants TLS, a client certificate and a password, the
//! password read from a file: readings arrive; a wrong password is a clear,
//! visible failure.

mod common;

use common::gateway::{self, metric};
use common::{eventually, feed, Mosquitto, Publisher, QoS};

fn config(
    broker: &Mosquitto,
    dir: &std::path::Path,
    password_file: &std::path::Path,
) -> campus_gateway::config::Config {
    gateway::config(&format!(
        r#"
[gateway]
data_dir = "{}"
[mqtt]
url = "{}"
username = "campusgw"
password = {{ file = "{}" }}
reconnect_min = "100ms"
reconnect_max = "1s"
[mqtt.tls]
ca_file = "{}"
client_cert_file = "{}"
client_key_file = "{}"
[web]
listen = "127.0.0.1:0"
"#,
        dir.display(),
        broker.url(),
        password_file.display(),
        broker.ca_pem_path().display(),
        broker.client_cert_path().display(),
        broker.client_key_path().display(),
    ))
}

fn broker() -> Mosquitto {
    Mosquitto::builder()
        .require_client_cert()
        .user("campusgw", "gw-secret")
        .user("devices", "dev-secret")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_and_password_from_a_file() {
    let broker = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("mqtt.password");
    std::fs::write(&pw, "gw-secret\n").expect("write password file");
    let gw = gateway::start(config(&broker, dir.path(), &pw)).await;
    gateway::wait_subscribed(&gw).await;

    let devices =
        Publisher::connect_with(broker.client_config().credentials("devices", "dev-secret")).await;
    for n in 0..50 {
        let (t, p) = feed::message(
            "gate",
            "yazhong",
            "east-1",
            common::now_ms() - 1000 + n,
            n as u64,
        );
        devices.publish(&t, p, QoS::AtLeastOnce).await;
    }
    devices.flush().await;
    eventually("50 gate readings over TLS", || async {
        metric(&gw, "campusgw_readings_total{kind=\"gate\"}").await == 50.0
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mqtt_password_shows_in_healthz() {
    let broker = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("mqtt.password");
    std::fs::write(&pw, "not-the-password").expect("write password file");
    let gw = gateway::start(config(&broker, dir.path(), &pw)).await;
    eventually("/healthz reports the refused connection", || async {
        let (status, body) = gateway::get(&gw, "/healthz").await;
        status == 503
            && body.contains("refused the connection")
            && body.contains("mqtt.username/password")
    })
    .await;
    assert!(gw.metrics.mqtt_connection_errors.get() >= 1);
    gw.stop().await;
}

/// The broker ACL of `deploy/mosquitto-acl.conf`, as shipped: a site's
/// devices publish only under their site, so a gate "forced open" under a
/// made-up site never reaches the gateway, and only the gateway's user
/// writes `campusgw/#`, so a device cannot forge an alarm for the corridor
/// displays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_broker_acl_keeps_devices_to_their_site_and_alarms_to_the_gateway() {
    let acl = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/mosquitto-acl.conf");
    let broker = Mosquitto::builder()
        .user("campusgw", "gw-secret")
        .user("yazhong", "site-secret")
        .user("display", "display-secret")
        .extra_config(&format!("acl_file {acl}"))
        .start();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = dir.path().join("mqtt.password");
    std::fs::write(&pw, "gw-secret\n").expect("write password file");
    let gw = gateway::start(gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nusername = \"campusgw\"\npassword = {{ file = \"{}\" }}\n[web]\nlisten = \"127.0.0.1:0\"\n{}",
        dir.path().display(),
        broker.url(),
        pw.display(),
        gateway::smoke_rule("Smoke at {device}"),
    )))
    .await;
    gateway::wait_subscribed(&gw).await;
    let mut display = common::Subscriber::connect_with(
        broker
            .client_config()
            .credentials("display", "display-secret"),
        &["campusgw/#"],
        QoS::AtLeastOnce,
    )
    .await;
    let site =
        Publisher::connect_with(broker.client_config().credentials("yazhong", "site-secret")).await;

    // Refused by the broker (in order, before the allowed messages below).
    let (_, forced) = feed::message("gate", "evilsite", "east-1", common::now_ms(), 1);
    site.publish("campus/evilsite/gate/east-1", forced, QoS::AtLeastOnce)
        .await;
    site.publish(
        "campusgw/yazhong/alarm/a3-301/smoke-alarm",
        r#"{"state":"unacked","severity":"critical","message":"forged"}"#,
        QoS::AtLeastOnce,
    )
    .await;
    // Allowed: the site's own detector, in alarm.
    let mut p = feed::payload("smoke", common::now_ms(), 2);
    p["alarm"] = serde_json::json!(true);
    site.publish(
        &feed::topic("yazhong", "smoke", "a3-301"),
        p.to_string(),
        QoS::AtLeastOnce,
    )
    .await;
    site.flush().await;

    eventually("the site's detector seen", || async {
        gw.registry.len() == 1
    })
    .await;
    let devices = gw.registry.devices(common::now_ms());
    assert_eq!(
        (&*devices[0].site, &*devices[0].id),
        ("yazhong", "a3-301"),
        "nothing from the made-up site"
    );
    // The first thing a display hears is the gateway's alarm, not the forgery.
    let first = display.recv().await;
    assert_eq!(first.topic, "campusgw/yazhong/alarm/a3-301/smoke-alarm");
    assert_ne!(first.json()["message"], "forged", "{}", first.payload_str());
    gw.stop().await;
}
