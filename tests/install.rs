//! The gateway as a school installs it: a core source that cannot start is
//! shown as down, stores owned by the service's user, one process per data
//! directory, demos side by side.

mod common;

use campus_gateway::config::Secret;
use common::{gateway, Mosquitto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_source_that_cannot_start_makes_healthz_503_with_mqtt_down() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().display(),
        broker.url()
    ));
    // What `check` refuses, reaching the gateway anyway (a secret file
    // removed after the check): the source cannot build its credentials.
    cfg.mqtt.username = Some("gw".into());
    cfg.mqtt.password = Some(Secret::Env {
        env: "CAMPUSGW_TEST_SECRET_NOBODY_SET".into(),
    });
    let gw = gateway::start(cfg).await;
    common::eventually("the MQTT source is shown as down", || async {
        gw.health.status("mqtt") == Some(campus_gateway::telemetry::Status::Down)
    })
    .await;
    let (status, body) = gateway::get(&gw, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], "down", "{body}");
    assert_eq!(v["components"]["mqtt"]["status"], "down", "{body}");
    let detail = v["components"]["mqtt"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains("CAMPUSGW_TEST_SECRET_NOBODY_SET"),
        "the reason is shown: {body}"
    );
    gw.stop().await;
}
