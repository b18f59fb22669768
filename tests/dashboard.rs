//! The Grafana dashboard for InfluxDB 1.x (deploy/grafana/dashboards/
//! campusgw-influxql.json): every InfluxQL query in it, run against a real
//! InfluxDB 1.x after a burst of the reference feed (`campusgw simulate`)
//! through the gateway, returns the series its panel shows.

mod common;

use std::collections::BTreeSet;

use common::{gateway, Influx1, Mosquitto, Publisher, QoS};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_campusgw");
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/dashboards/campusgw-influxql.json"
);

/// Every InfluxQL query of the dashboard (panels' targets and annotations), with its title.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push((
                format!("{} [{}]", p["title"].as_str().unwrap_or("?"), t["refId"]),
                t["query"].as_str().expect("an InfluxQL query").to_owned(),
            ));
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        out.push((
            format!("annotation {}", a["name"]),
            a["query"].as_str().expect("annotation query").to_owned(),
        ));
    }
    out
}

/// Grafana's macros as Grafana fills them for "the last hour".
fn expand(q: &str) -> String {
    q.replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "10s")
}

/// `/metrics` as Telegraf's inputs.prometheus (metric_version = 2) writes it:
/// measurement `prometheus`, labels as tags, one field named after the metric.
fn telegraf_lines(metrics: &str, ts_ms: i64) -> String {
    let mut out = String::new();
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if !name.starts_with("campusgw_") || name.ends_with("_bucket") {
            continue;
        }
        let mut tags = String::new();
        for kv in labels.split(',').filter(|s| !s.is_empty()) {
            if let Some((k, v)) = kv.split_once('=') {
                let v = v.trim_matches('"').replace(' ', "\\ ").replace(',', "\\,");
                if !v.is_empty() {
                    tags.push_str(&format!(",{k}={v}"));
                }
            }
        }
        out.push_str(&format!("prometheus{tags} {name}={v} {ts_ms}\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_influxql_query_of_the_dashboard_returns_its_series_after_a_burst_of_the_feed() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard"))
            .expect("JSON");
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The simulator's smoke detectors declared in two buildings (the
    // per-building panels), the rest undeclared (accepted, no location).
    let cfg = format!(
        r#"
[gateway]
data_dir = "{}"
[mqtt]
url = "{}"
[influx]
url = "{}"
api = "v1"
database = "campus"
flush_interval = "200ms"
[web]
listen = "127.0.0.1:0"
[[rules]]
id = "duct-hot"
severity = "high"
kinds = ["kitchen"]
message = "duct {{value}}"
condition = {{ type = "above", field = "duct_temp_c", value = 80.0, clear = 70.0 }}
[[devices]]
id = "sim-smoke-001"
kind = "smoke"
site = "yz"
building = "A1"
[[devices]]
id = "sim-smoke-002"
kind = "smoke"
site = "yz"
building = "A3"
"#,
        dir.path().display(),
        broker.url(),
        influx.url()
    );
    let gw = gateway::start(gateway::config(&cfg)).await;
    gateway::wait_subscribed(&gw).await;
    let (_, metrics_before) = gateway::get(&gw, "/metrics").await;
    let before_ms = common::now_ms() - 30_000;

    let out = tokio::task::spawn_blocking({
        let url = broker.url();
        move || {
            std::process::Command::new(BIN)
                .args(["simulate", "--broker", &url, "--site", "yz"])
                .args(["--devices", "10", "--rate", "200", "--duration", "3s"])
                .output()
                .expect("simulate")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the simulator's steady feed lacks: a gate forced and one held
    // open, and a duct overheating (the alarm and its annotation).
    let publisher = Publisher::connect(&broker.url()).await;
    let now = common::now_ms();
    for (topic, body) in [
        (
            "campus/yz/gate/sim-gate-001",
            format!(r#"{{"ts":{now},"door_open":true,"event":"forced_open","person_count":1}}"#),
        ),
        (
            "campus/yz/gate/sim-gate-002",
            format!(r#"{{"ts":{now},"door_open":true,"event":"held_open","person_count":0}}"#),
        ),
        (
            "campus/yz/kitchen/sim-kitchen-001",
            format!(
                r#"{{"ts":{now},"duct_temp_c":95.0,"fan_on":true,"fan_current_a":3.1,"grease_mg_m3":1.2,"co_ppm":4.0,"gas_lel_pct":0.0}}"#
            ),
        ),
    ] {
        publisher.publish(topic, body, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;
    common::eventually("the burst and the alarm are in InfluxDB", || async {
        influx.count("campus", "alarm").await > 0
            && influx.count_field("campus", "gate", "event").await > 0
            && gateway::metric(&gw, "campusgw_spool_points").await == 0.0
    })
    .await;
    // Telegraf's two scrapes of /metrics, before and after the burst.
    let (_, metrics_after) = gateway::get(&gw, "/metrics").await;
    let lines = telegraf_lines(&metrics_before, before_ms)
        + &telegraf_lines(&metrics_after, common::now_ms());
    let (status, body) = influx.write_lines("campus", &lines).await;
    assert!(status < 300, "{status} {body}");

    let all = queries(&dashboard);
    assert!(all.len() >= 13, "{all:?}");
    for (title, q) in &all {
        let q = expand(q);
        let v = influx
            .try_query("campus", &q)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        let series = v["results"][0]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Some value that is not null, in a column other than time.
        let has_value = series.iter().any(|s| {
            s["values"].as_array().is_some_and(|rows| {
                rows.iter().any(|r| {
                    r.as_array()
                        .is_some_and(|cells| cells.iter().skip(1).any(|c| !c.is_null()))
                })
            })
        });
        assert!(has_value, "{title}: no data for\n{q}\n{v}");
        let tag = |name: &str| -> BTreeSet<String> {
            series
                .iter()
                .filter_map(|s| s["tags"][name].as_str().map(str::to_owned))
                .collect()
        };
        if q.contains("GROUP BY time(10s), \"building\"") {
            let buildings = tag("building");
            assert!(
                buildings.contains("A1") && buildings.contains("A3"),
                "{title}: a series per building: {buildings:?}"
            );
        }
        if q.contains("'forced_open'") {
            assert_eq!(
                tag("device"),
                BTreeSet::from(["sim-gate-001".to_owned()]),
                "{title}"
            );
        }
        if q.contains("'held_open'") {
            assert_eq!(
                tag("device"),
                BTreeSet::from(["sim-gate-002".to_owned()]),
                "{title}"
            );
        }
        if q.contains("FROM \"kitchen\"")
            || q.contains("FROM \"labcab\"")
            || q.contains("FROM \"bus\"")
        {
            assert_eq!(
                tag("device").len(),
                2,
                "{title}: one series per device: {v}"
            );
        }
        if q.contains("FROM \"alarm\"") {
            assert!(v.to_string().contains("duct-hot"), "{title}: {v}");
        }
    }
    gw.stop().await;
}
