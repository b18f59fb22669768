//! `kill -9` of the gateway at random moments under load, ten times, with
//! the binary as a child process: acknowledged after persist means the
//! broker still holds whatever the gateway had not made durable, so after
//! the last restart every point is in InfluxDB (redeliveries rewrite the
//! same points). When the alarm engine lands, this test also counts the
//! alarms raised from the load (each must be in the alarm store after the
//! last restart).

mod common;

use std::time::Duration;

use common::gwproc::GatewayProcess;
use common::load::{self, Load};
use common::{eventually_with, Influx1, Mosquitto, Publisher};
use rand::Rng as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing() {
    let broker = Mosquitto::builder()
        .max_queued_messages(0)
        .max_inflight_messages(1000)
        .start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let mut gw = GatewayProcess::new();
    let config = format!(
        r#"
[gateway]
data_dir = "{}"
max_ts_past = "1d"
shutdown_timeout = "2s"
[mqtt]
url = "{}"
client_id = "gw-crash-{}"
clean_session = false
reconnect_min = "100ms"
reconnect_max = "1s"
[influx]
url = "{}"
api = "v1"
database = "campus"
retry_min = "100ms"
retry_max = "1s"
batch_size = 2000
flush_interval = "200ms"
"#,
        gw.data_dir().display(),
        broker.url(),
        std::process::id(),
        influx.url()
    );
    gw.start(&config);

    let base_ts = common::now_ms() - 3_600_000;
    let load = Load::start(Publisher::connect(&broker.url()).await, 1_000, base_ts);
    for round in 0..10 {
        let wait = rand::thread_rng().gen_range(200..2_500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let published = load.published();
        tokio::task::block_in_place(|| {
            gw.kill();
            gw.start_again();
        });
        eprintln!("round {round}: killed after {wait} ms, {published} published so far");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (published, _, _publisher) = load.finish().await;

    eventually_with(
        &format!("all {published} points in InfluxDB after 10 kills"),
        || async { load::points(&influx, "campus").await >= published },
        || gw.get("/metrics").1,
    )
    .await;
    assert_eq!(
        load::points(&influx, "campus").await,
        published,
        "each point once"
    );
    tokio::task::block_in_place(|| gw.stop());
}
