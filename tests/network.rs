//! The broker side of "nothing lost": mosquitto restarted under a steady
//! load, and the network between the gateway and the broker cut (an
//! nftables rule dropping the broker port on loopback, the devices still
//! publishing through a second listener), then restored.

mod common;

use std::process::Command;
use std::time::Duration;

use common::gateway;
use common::load::{self, Load};
use common::process::require_executable;
use common::{eventually, eventually_with, Influx1, Mosquitto, MqttClientConfig, Publisher};

fn config(
    data_dir: &std::path::Path,
    mqtt_url: &str,
    influx_url: &str,
) -> campus_gateway::config::Config {
    gateway::config(&format!(
        r#"
[gateway]
data_dir = "{}"
max_ts_past = "1d"
[mqtt]
url = "{mqtt_url}"
client_id = "{}"
clean_session = false
keep_alive = "5s"
reconnect_min = "100ms"
reconnect_max = "1s"
[influx]
url = "{influx_url}"
api = "v1"
database = "campus"
retry_min = "100ms"
retry_max = "1s"
[web]
listen = "127.0.0.1:0"
"#,
        data_dir.display(),
        common::mqtt::unique_client_id("gw-net"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_under_load_loses_nothing() {
    let mut broker = Mosquitto::builder().persistence().for_gateway().start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(dir.path(), &broker.url(), &influx.url())).await;
    gateway::wait_subscribed(&gw).await;
    // The devices keep a session too, so what they had in flight is sent again.
    let publisher = Publisher::connect_with(
        MqttClientConfig::new(&broker.url())
            .client_id(&common::mqtt::unique_client_id("devices"))
            .clean_session(false),
    )
    .await;
    let base_ts = common::now_ms() - 3_600_000;
    let load = Load::start(publisher, 1_000, base_ts);
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| broker.restart());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (published, _, _publisher) = load.finish().await;
    eventually_with(
        &format!("all {published} points after the broker restart"),
        || async { load::points(&influx, "campus").await >= published },
        || broker.log(),
    )
    .await;
    assert_eq!(load::points(&influx, "campus").await, published);
    assert!(
        gw.metrics.mqtt_connection_errors.get() >= 1,
        "the restart was seen"
    );
    gw.stop().await;
}

/// An nftables table dropping TCP to and from one loopback port; deleted on drop.
struct Cut {
    table: String,
}

impl Cut {
    fn port(port: u16) -> Cut {
        let nft = require_executable(
            "nft",
            "run scripts/test.sh (it installs it) or apt-get install -y nftables; the test needs root (CI runs as root)",
        );
        let table = format!("campusgw_test_{}_{port}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  oif lo tcp dport {port} drop\n  oif lo tcp sport {port} drop\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&file, rules).expect("write nft rules");
        let out = Command::new(&nft)
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("run nft: {e}"));
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "nft could not add the rule (needs root / CAP_NET_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cut { table }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Some(nft) = common::process::find_executable("nft") {
            let _ = Command::new(nft)
                .args(["delete", "table", "inet", &self.table])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_to_the_broker_reconnects_and_loses_nothing() {
    let devices_port = common::free_port();
    let broker = Mosquitto::builder()
        .for_gateway()
        .extra_config(&format!("listener {devices_port} 127.0.0.1"))
        .start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(dir.path(), &broker.url(), &influx.url())).await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&format!("mqtt://127.0.0.1:{devices_port}")).await;
    let base_ts = common::now_ms() - 3_600_000;
    let load = Load::start(publisher, 1_000, base_ts);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let cut = Cut::port(broker.port());
    eventually("the gateway notices the cut", || async {
        gw.health.status("mqtt") == Some(campus_gateway::telemetry::Status::Down)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(cut);
    gateway::wait_subscribed(&gw).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (published, _, _publisher) = load.finish().await;
    eventually_with(
        &format!("all {published} points after the network came back"),
        || async { load::points(&influx, "campus").await >= published },
        || gw.metrics.render(),
    )
    .await;
    assert_eq!(load::points(&influx, "campus").await, published);
    gw.stop().await;
}
