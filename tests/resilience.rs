//! What happens when the servers around the gateway go away or misbehave: a
//! broker restart mid-stream with QoS 1, a broker with no in-flight window,
//! an InfluxDB outage, and a shutdown with points still batched. Nothing
//! accepted may be lost, and nothing may grow without bound.

mod common;

use common::gateway::{self, metric};
use common::{
    eventually, eventually_with, feed, Influx1, Mosquitto, MqttClientConfig, Publisher, QoS,
};

fn config(
    data_dir: &std::path::Path,
    mqtt_url: &str,
    influx_url: &str,
    extra_influx: &str,
) -> campus_gateway::config::Config {
    gateway::config(&format!(
        r#"
[gateway]
data_dir = "{}"

[mqtt]
url = "{mqtt_url}"
client_id = "gw-resilience-{}"
clean_session = false
reconnect_min = "100ms"
reconnect_max = "1s"

[influx]
url = "{influx_url}"
api = "v1"
database = "campus"
retry_min = "100ms"
retry_max = "1s"
{extra_influx}

[web]
listen = "127.0.0.1:0"
"#,
        data_dir.display(),
        std::process::id()
    ))
}

/// Message `n` of a stream: five kinds round-robin over 10 devices, each point its own time.
fn message(n: u64, base_ts: i64) -> (String, String) {
    let kind = feed::KINDS[(n % 5) as usize];
    let device = format!("{kind}-{}", (n / 5) % 10);
    feed::message(
        kind,
        "yazhong",
        &device,
        base_ts + (n / 50) as i64 * 1000,
        n,
    )
}

async fn total_points(influx: &Influx1) -> u64 {
    let mut total = 0;
    for kind in feed::KINDS {
        total += influx.count("campus", kind).await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing_at_qos1() {
    const N: u64 = 4_000;
    let mut broker = Mosquitto::builder()
        .persistence()
        .max_queued_messages(0)
        .start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(dir.path(), &broker.url(), &influx.url(), "")).await;
    gateway::wait_subscribed(&gw).await;

    // The devices' side keeps a persistent session too, so what it had in
    // flight when the broker went down is sent again.
    let publisher = Publisher::connect_with(
        MqttClientConfig::new(&broker.url())
            .client_id(&format!("devices-{}", std::process::id()))
            .clean_session(false),
    )
    .await;
    let base_ts = common::now_ms() - 600_000;
    for n in 0..N / 2 {
        let (t, p) = message(n, base_ts);
        publisher.publish(&t, p, QoS::AtLeastOnce).await;
    }
    // Restart while messages are still on their way through the broker.
    broker.restart();
    for n in N / 2..N {
        let (t, p) = message(n, base_ts);
        publisher.publish(&t, p, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;

    eventually_with(
        &format!("all {N} points in InfluxDB after the broker restart"),
        || async { total_points(&influx).await >= N },
        || broker.log(),
    )
    .await;
    assert_eq!(
        total_points(&influx).await,
        N,
        "every message once (redeliveries rewrite the same point)"
    );
    assert!(
        gw.metrics.mqtt_connection_errors.get() >= 1,
        "the restart was noticed"
    );
    gw.stop().await;
}

/// A broker with no `max_inflight_messages` sends a stored session's whole
/// queue at once: the gateway itself must bound what it holds unacknowledged
/// (it once grew past 300,000 when its PUBACKs fell behind the inflow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_a_window_cannot_overfill_the_gateway() {
    const N: u64 = 40_000;
    let broker = Mosquitto::builder()
        .max_queued_messages(0)
        .max_inflight_messages(0)
        .start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), &broker.url(), &influx.url(), "");
    // The first connection creates the persistent session; the messages
    // then wait in the broker for the second.
    let gw = gateway::start(cfg.clone()).await;
    gateway::wait_subscribed(&gw).await;
    gw.stop().await;
    let publisher = Publisher::connect(&broker.url()).await;
    let base_ts = common::now_ms() - 3_600_000;
    for n in 0..N {
        let (t, p) = message(n, base_ts);
        publisher.publish(&t, p, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;

    let gw = gateway::start(cfg).await;
    // Sampled every millisecond from before the connection until the end.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let unacked = gw.metrics.queue_depth("mqtt_unacked");
        let done = done.clone();
        async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(unacked.get());
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            peak
        }
    });
    eventually_with(
        &format!("all {N} points in InfluxDB"),
        || async { total_points(&influx).await >= N },
        || gw.metrics.render(),
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    assert!(peak > 0, "the sampler saw the flood");
    assert!(
        peak <= campus_gateway::sources::mqtt::UNACKED_MAX as i64,
        "at most {} messages held unacknowledged, saw {peak}",
        campus_gateway::sources::mqtt::UNACKED_MAX
    );
    assert_eq!(total_points(&influx).await, N);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_outage_is_retried_until_every_point_is_written() {
    const N: u64 = 2_000;
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let mut influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(
        dir.path(),
        &broker.url(),
        &influx.url(),
        "batch_size = 500",
    ))
    .await;
    gateway::wait_subscribed(&gw).await;

    influx.stop();
    let publisher = Publisher::connect(&broker.url()).await;
    let base_ts = common::now_ms() - 600_000;
    for n in 0..N {
        let (t, p) = message(n, base_ts);
        publisher.publish(&t, p, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;

    eventually("the outage shows in /healthz as 503", || async {
        let (status, body) = gateway::get(&gw, "/healthz").await;
        status == 503 && body.contains("\"influx\"") && body.contains("\"down\"")
    })
    .await;
    assert!(metric(&gw, "campusgw_write_errors_total{reason=\"network\"}").await >= 1.0);

    influx.start_again();
    eventually_with(
        &format!("all {N} points written after InfluxDB came back"),
        || async { total_points(&influx).await >= N },
        || gw.metrics.render(),
    )
    .await;
    assert_eq!(total_points(&influx).await, N);
    eventually("healthy again", || async {
        gateway::get(&gw, "/healthz").await.0 == 200
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_was_accepted() {
    const N: u64 = 500;
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    // A batch that would wait a minute: only the shutdown flush can write it in time.
    let gw = gateway::start(config(
        dir.path(),
        &broker.url(),
        &influx.url(),
        "batch_size = 100000\nflush_interval = \"60s\"",
    ))
    .await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;
    let base_ts = common::now_ms() - 600_000;
    for n in 0..N {
        let (t, p) = message(n, base_ts);
        publisher.publish(&t, p, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;
    eventually("the gateway accepted every message", || async {
        metric(&gw, "campusgw_messages_received_total{source=\"mqtt\"}").await == N as f64
    })
    .await;
    assert_eq!(
        total_points(&influx).await,
        0,
        "nothing written before the shutdown"
    );
    gw.stop().await;
    assert_eq!(total_points(&influx).await, N);
}
