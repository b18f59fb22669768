//! The fault suite of the store-and-forward path: InfluxDB away for 30 s and
//! for 5 minutes under a steady 2,000 messages/s, a spool that fills up, a
//! disk that fills up, and a spool segment torn by a power cut. Every point
//! is counted in a real InfluxDB afterwards; nothing may be missing, and
//! what the gateway had to drop must be counted and said.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::gateway::{self, metric};
use common::gwproc::GatewayProcess;
use common::load::{self, Load};
use common::{eventually_with, wait_until, Influx1, Mosquitto, Publisher, QoS};

const DB: &str = "campus";

fn config_text(
    data_dir: &Path,
    mqtt_url: &str,
    influx_url: &str,
    extra_gateway: &str,
    extra_influx: &str,
) -> String {
    format!(
        r#"
[gateway]
data_dir = "{}"
max_ts_past = "1d"
{extra_gateway}

[mqtt]
url = "{mqtt_url}"
client_id = "gw-faults-{}-{}"
clean_session = false
reconnect_min = "100ms"
reconnect_max = "1s"

[influx]
url = "{influx_url}"
api = "v1"
database = "{DB}"
timeout = "3s"
retry_min = "100ms"
retry_max = "1s"
{extra_influx}
"#,
        data_dir.display(),
        std::process::id(),
        common::mqtt::unique_client_id("c"),
    )
}

fn in_process_config(
    data_dir: &Path,
    mqtt_url: &str,
    influx_url: &str,
    extra_gateway: &str,
    extra_influx: &str,
) -> campus_gateway::config::Config {
    gateway::config(&format!(
        "{}\n[web]\nlisten = \"127.0.0.1:0\"\n",
        config_text(data_dir, mqtt_url, influx_url, extra_gateway, extra_influx)
    ))
}

/// The broker the way deploy/mosquitto-gateway.conf sets it up.
fn broker() -> Mosquitto {
    Mosquitto::builder().for_gateway().start()
}

/// InfluxDB stopped for `outage` while 2,000 messages/s keep coming, with
/// the gateway as its own process so that its memory is its own.
async fn influxdb_outage_under_load(outage: Duration) {
    let broker = broker();
    let mut influx = Influx1::start();
    influx.create_database(DB).await;
    let mut gw = GatewayProcess::new();
    gw.start(&config_text(
        &gw.data_dir(),
        &broker.url(),
        &influx.url(),
        "",
        "",
    ));

    let base_ts = common::now_ms() - 3_600_000;
    let load = Load::start(Publisher::connect(&broker.url()).await, 2_000, base_ts);
    tokio::time::sleep(Duration::from_secs(5)).await;
    influx.stop();
    load.set_doubled(true);
    let mut max_rss: f64 = 0.0;
    let mut max_backlog: f64 = 0.0;
    let until = Instant::now() + outage;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_rss = max_rss.max(gw.rss_mb());
        max_backlog = max_backlog.max(gw.metric("campusgw_spool_points"));
    }
    let (status, body) = gw.get("/healthz");
    assert_eq!(status, 503, "the outage shows: {body}");
    influx.start_again();
    load.set_doubled(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (published, doubled, _publisher) = load.finish().await;
    eprintln!("published {published}, peak backlog {max_backlog} points, peak RSS {max_rss:.1} MB");

    // A hang guard only: the replay of a 5-minute backlog takes a while.
    let all_in = wait_until(Duration::from_secs(600), || async {
        load::points(&influx, DB).await >= published
    })
    .await;
    assert!(
        all_in,
        "{} of {published} points in InfluxDB; metrics:\n{}\nlog:\n{}",
        load::points(&influx, DB).await,
        gw.get("/metrics").1,
        gw.log()
    );
    assert_eq!(
        load::points(&influx, DB).await,
        published,
        "every point, once"
    );
    load::assert_order_kept(&influx, DB, &doubled, base_ts).await;
    assert!(
        max_backlog >= 1_000.0,
        "the backlog showed in /metrics while InfluxDB was away: {max_backlog}"
    );
    eventually_with(
        "the backlog drains to 0",
        || async { gw.metric("campusgw_spool_points") == 0.0 },
        || gw.get("/metrics").1,
    )
    .await;
    assert_eq!(
        gw.metric("campusgw_points_dropped_total{reason=\"spool_full\"}"),
        0.0
    );
    // Queues are bounded and the backlog is on disk: memory does not follow it.
    assert!(
        max_rss < 100.0,
        "peak RSS {max_rss:.1} MB with a backlog of {max_backlog} points"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_30_seconds_at_2000_per_second_loses_nothing() {
    influxdb_outage_under_load(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_5_minutes_at_2000_per_second_loses_nothing() {
    influxdb_outage_under_load(Duration::from_secs(300)).await;
}

/// Publishes messages `0..n` as fast as the broker takes them.
async fn publish_burst(url: &str, n: u64, base_ts: i64) {
    let publisher = Publisher::connect(url).await;
    for i in 0..n {
        let (t, p) = load::message(i, base_ts, false);
        publisher.publish(&t, p, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;
}

async fn spooled_everything(gw: &campus_gateway::app::Gateway, n: u64) {
    eventually_with(
        &format!("the gateway took all {n} messages and acknowledged them"),
        || async {
            metric(gw, "campusgw_messages_received_total{source=\"mqtt\"}").await >= n as f64
                && metric(gw, "campusgw_queue_depth{queue=\"mqtt_unacked\"}").await == 0.0
        },
        || gw.metrics.render(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_the_oldest_counts_it_and_says_so() {
    const N: u64 = 20_000;
    let broker = broker();
    let mut influx = Influx1::start();
    influx.create_database(DB).await;
    influx.stop();
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(in_process_config(
        dir.path(),
        &broker.url(),
        &influx.url(),
        "spool_max_mb = 1",
        "batch_size = 500",
    ))
    .await;
    gateway::wait_subscribed(&gw).await;
    let base_ts = common::now_ms() - 3_600_000;
    publish_burst(&broker.url(), N, base_ts).await;
    spooled_everything(&gw, N).await;

    let dropped = gw.metrics.dropped("spool_full");
    assert!(dropped > 0, "{} points in 1 MiB", N);
    let (status, body) = gateway::get(&gw, "/healthz").await;
    assert!(
        body.contains("\"spool\"") && body.contains("dropping oldest data"),
        "{status} {body}"
    );
    assert!(metric(&gw, "campusgw_points_dropped_total{reason=\"spool_full\"}").await > 0.0);
    assert!(gw.metrics.spool_bytes.get() <= 1024 * 1024);

    influx.start_again();
    eventually_with(
        "what was kept is written",
        || async { gw.metrics.spool_points.get() == 0 },
        || gw.metrics.render(),
    )
    .await;
    // The spool also carries the `gateway-spool-full` alarm's transitions
    // (`alarm` measurement); they are stored or dropped like the readings.
    let transitions = || {
        gw.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("campusgw_alarm_transitions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let accounted = || async {
        load::points(&influx, DB).await
            + influx.count_field(DB, "alarm", "state").await
            + gw.metrics.dropped("spool_full")
    };
    eventually_with(
        "every point (reading or alarm transition) is in InfluxDB or counted as dropped",
        || async { accounted().await == N + transitions() },
        || {
            format!(
                "{} dropped, {N} readings + {} alarm transitions expected",
                gw.metrics.dropped("spool_full"),
                transitions()
            )
        },
    )
    .await;
    // Drop-oldest: the newest message survived.
    let newest = influx
        .rows(
            DB,
            &format!(
                "SELECT * FROM bus WHERE time = {}ms",
                base_ts + N as i64 - 1
            ),
        )
        .await;
    assert_eq!(newest.len(), 1, "the newest point is kept");
    gw.stop().await;
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run mount: {e}"));
        assert!(
            out.status.success(),
            "mounting a small tmpfs needs root (CI runs as root; run the tests with sudo): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    const N: u64 = 20_000;
    let disk = SmallDisk::mount("2m");
    let broker = broker();
    let mut influx = Influx1::start();
    influx.create_database(DB).await;
    influx.stop();
    let gw = gateway::start(in_process_config(
        disk.dir.path(),
        &broker.url(),
        &influx.url(),
        "spool_max_mb = 64",
        "batch_size = 500",
    ))
    .await;
    gateway::wait_subscribed(&gw).await;
    // The token that reads /healthz's details, made while the disk has room.
    gateway::viewer_token(&gw);
    let base_ts = common::now_ms() - 3_600_000;
    publish_burst(&broker.url(), N, base_ts).await;

    eventually_with(
        "/healthz names the full disk",
        || async {
            let (status, body) = gateway::get(&gw, "/healthz").await;
            status == 503 && body.contains("gateway.data_dir is full")
        },
        || gw.metrics.render(),
    )
    .await;
    // Still running, still answering, nothing dropped: the broker holds the rest.
    assert_eq!(gw.metrics.dropped("spool_full"), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(gateway::get(&gw, "/metrics").await.0 == 200);

    influx.start_again();
    eventually_with(
        &format!("all {N} points once the database is back and the disk has room"),
        || async { load::points(&influx, DB).await >= N },
        || gw.metrics.render(),
    )
    .await;
    assert_eq!(load::points(&influx, DB).await, N);
    eventually_with(
        "the spool is healthy again",
        || async { gw.health.status("spool") == Some(campus_gateway::telemetry::Status::Ok) },
        || format!("{:?}", gw.health.snapshot()),
    )
    .await;
    gw.stop().await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_spool_record_is_skipped_after_a_restart() {
    const N: u64 = 3_000;
    let broker = broker();
    let mut influx = Influx1::start();
    influx.create_database(DB).await;
    influx.stop();
    let dir = tempfile::tempdir().expect("temp dir");
    let client = common::mqtt::unique_client_id("torn");
    let influx_url = influx.url();
    let cfg = || {
        let mut c = in_process_config(dir.path(), &broker.url(), &influx_url, "", "");
        c.mqtt.client_id = client.clone();
        c
    };
    let gw = gateway::start(cfg()).await;
    gateway::wait_subscribed(&gw).await;
    let base_ts = common::now_ms() - 3_600_000;
    publish_burst(&broker.url(), N, base_ts).await;
    spooled_everything(&gw, N).await;
    assert_eq!(gw.metrics.spool_points.get(), N as i64);
    gw.stop().await;

    // A power cut in the middle of the next write: half a record at the end
    // of the newest segment.
    let spool = dir.path().join("spool");
    let mut segments: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let newest = segments
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .expect("a segment with data");
    let mut bytes = std::fs::read(newest).expect("read segment");
    let line = b"smoke,device=torn,site=yazhong temp_c=1.0 1\n";
    bytes.extend_from_slice(&(line.len() as u32 * 4).to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
    bytes.extend_from_slice(&line[..20]);
    std::fs::write(newest, bytes).expect("write segment");

    influx.start_again();
    let gw = gateway::start(cfg()).await;
    eventually_with(
        &format!("all {N} points written after the restart"),
        || async { load::points(&influx, DB).await >= N },
        || gw.metrics.render(),
    )
    .await;
    assert_eq!(load::points(&influx, DB).await, N);
    assert_eq!(
        gw.metrics.spool_corrupt_records.get(),
        1,
        "the torn record was seen"
    );
    assert_eq!(influx.count(DB, "smoke").await, N / 5, "and not written");
    gw.stop().await;
}
