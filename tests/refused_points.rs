//! Points InfluxDB refuses: one device's bad point must not cost the other
//! devices theirs. A field name line protocol cannot carry is cut at decode
//! (through both write APIs); a point InfluxDB still refuses (a field whose
//! type changed) is found by splitting the batch, and only it is dropped.
//! VictoriaMetrics answers 204 even to malformed lines, so the splitting is
//! tested through InfluxDB 1.x, which answers 400.

mod common;

use common::gateway::{self, metric};
use common::{eventually, eventually_with, Influx1, Mosquitto, Publisher, QoS, Victoria};

fn config(dir: &std::path::Path, mqtt: &str, influx: &str) -> campus_gateway::config::Config {
    gateway::config(&format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{mqtt}\"\nclient_id = \"gw-refused-{}\"\n{influx}\nflush_interval = \"2s\"\nbatch_size = 5000\n[web]\nlisten = \"127.0.0.1:0\"\n",
        dir.display(),
        std::process::id(),
    ))
}

async fn smoke(publisher: &Publisher, device: &str, payload: String) {
    publisher
        .publish(
            &format!("campus/yazhong/smoke/{device}"),
            payload,
            QoS::AtLeastOnce,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_influxdb_refuses_costs_only_itself_not_the_batch() {
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(
        dir.path(),
        &broker.url(),
        &format!(
            "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"campus\"",
            influx.url()
        ),
    ))
    .await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;
    let t0 = common::now_ms() - 60_000;

    // `x` becomes a float field of `smoke`.
    smoke(
        &publisher,
        "d0",
        format!(r#"{{"ts":{t0},"temp_c":1,"x":1.5}}"#),
    )
    .await;
    publisher.flush().await;
    eventually("the first point", || async {
        influx.count_field("campus", "smoke", "x").await == 1
    })
    .await;

    // One batch: 40 good points of other devices around a point InfluxDB
    // refuses (`x` now a string: a field type conflict) and one whose field
    // name holds a line break.
    for i in 0..40 {
        if i == 20 {
            smoke(
                &publisher,
                "d0",
                format!(r#"{{"ts":{},"temp_c":2,"x":"text"}}"#, t0 + 1),
            )
            .await;
            smoke(
                &publisher,
                "g-bad",
                format!(r#"{{"ts":{},"temp_c":3,"bad\nname":1}}"#, t0 + 1),
            )
            .await;
        }
        smoke(
            &publisher,
            &format!("g{i}"),
            format!(r#"{{"ts":{},"temp_c":20}}"#, t0 + 2 + i),
        )
        .await;
    }
    publisher.flush().await;

    eventually_with(
        "the refused point counted",
        || async { metric(&gw, "campusgw_points_dropped_total{reason=\"rejected\"}").await >= 1.0 },
        || influx.log(),
    )
    .await;
    eventually_with(
        "every good point in InfluxDB",
        || async { influx.count("campus", "smoke").await == 42 },
        || influx.log(),
    )
    .await;
    assert_eq!(
        metric(&gw, "campusgw_points_dropped_total{reason=\"rejected\"}").await,
        1.0,
        "only the conflicting point is dropped"
    );
    assert_eq!(
        metric(&gw, "campusgw_fields_cut_total{reason=\"bad_field_name\"}").await,
        1.0
    );
    let rows = influx
        .rows("campus", "SELECT temp_c FROM smoke WHERE device = 'g-bad'")
        .await;
    assert_eq!(rows.len(), 1, "the line-break field cut, its reading kept");
    assert_eq!(rows[0]["temp_c"], 3.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_name_with_a_line_break_is_cut_through_the_v2_api() {
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let vm = Victoria::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(
        dir.path(),
        &broker.url(),
        &format!(
            "[influx]\nurl = \"{}\"\napi = \"v2\"\norg = \"yazhong\"\nbucket = \"campus\"\ntoken = \"unused-by-victoria\"",
            vm.url()
        ),
    ))
    .await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;
    let t0 = common::now_ms() - 60_000;
    smoke(
        &publisher,
        "g-bad",
        format!(r#"{{"ts":{t0},"temp_c":3,"bad\r\nname":1}}"#),
    )
    .await;
    smoke(
        &publisher,
        "g-good",
        format!(r#"{{"ts":{t0},"temp_c":20}}"#),
    )
    .await;
    publisher.flush().await;

    for device in ["g-bad", "g-good"] {
        let selector = format!("{{__name__=\"smoke_temp_c\",device=\"{device}\"}}");
        eventually_with(
            &format!("{device}'s point in VictoriaMetrics"),
            || async { vm.count_samples(&selector).await == 1 },
            || vm.log(),
        )
        .await;
    }
    assert_eq!(
        metric(&gw, "campusgw_fields_cut_total{reason=\"bad_field_name\"}").await,
        1.0
    );
    assert_eq!(
        vm.count_series("{__name__=~\"smoke_.*name.*\"}").await,
        0,
        "no series from the bad name"
    );
    gw.stop().await;
}
