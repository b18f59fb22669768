//! `kill -9` of the gateway at random moments under load, ten times, with
//! the binary as a child process: acknowledged after persist means the
//! broker still holds whatever the gateway had not made durable, so after
//! the last restart every point is in InfluxDB (redeliveries rewrite the
//! same points), and every alarm is in the alarm store: a new detector
//! goes into alarm every 100 ms throughout, each must have its alarm.

mod common;

use std::time::Duration;

use common::gwproc::GatewayProcess;
use common::load::{self, Load};
use common::{eventually_with, Influx1, Mosquitto, Publisher, QoS};
use rand::Rng as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing() {
    let broker = Mosquitto::builder().for_gateway().start();
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
[alarms]
flood_threshold = 0
{}"#,
        gw.data_dir().display(),
        broker.url(),
        std::process::id(),
        influx.url(),
        common::gateway::smoke_rule("smoke at {device}")
    );
    gw.start(&config);

    let base_ts = common::now_ms() - 3_600_000;
    let load = Load::start(Publisher::connect(&broker.url()).await, 1_000, base_ts);
    let probes = Publisher::connect(&broker.url()).await;
    let alarming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe_task = {
        let alarming = alarming.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while alarming.load(std::sync::atomic::Ordering::SeqCst) {
                let mut p = common::feed::payload("smoke", common::now_ms(), n);
                p["alarm"] = serde_json::json!(true);
                let topic = format!("campus/{}/smoke/probe-{n}", load::SITE);
                probes
                    .publish(&topic, p.to_string(), QoS::AtLeastOnce)
                    .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            probes.flush().await;
            n
        })
    };
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
    let (load_published, _, _publisher) = load.finish().await;
    alarming.store(false, std::sync::atomic::Ordering::SeqCst);
    let raised = probe_task.await.expect("probe publisher");
    // The detectors' alarm messages are points too.
    let published = load_published + raised;

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

    // Every detector that went into alarm has its alarm, once.
    let store = campus_gateway::alarms::store::AlarmStore::open(&gw.data_dir().join("alarms.db"))
        .expect("open the alarm store");
    let probe_alarms = || {
        let all = store
            .query(&campus_gateway::alarms::store::Query {
                limit: 100_000,
                ..Default::default()
            })
            .expect("query the alarm store");
        let mut devices: Vec<String> = all
            .into_iter()
            .filter(|a| a.device.starts_with("probe-"))
            .map(|a| a.device)
            .collect();
        devices.sort();
        devices
    };
    eventually_with(
        &format!("all {raised} alarms in the store after 10 kills"),
        || async { probe_alarms().len() as u64 >= raised },
        || format!("{:?}", probe_alarms()),
    )
    .await;
    let devices = probe_alarms();
    let mut distinct = devices.clone();
    distinct.dedup();
    assert_eq!(distinct.len() as u64, raised, "an alarm for every detector");
    assert_eq!(
        devices.len(),
        distinct.len(),
        "each alarm once: {devices:?}"
    );
    tokio::task::block_in_place(|| gw.stop());
}
