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
