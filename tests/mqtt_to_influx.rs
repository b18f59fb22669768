//! The backbone end to end: reference-feed messages through a real mosquitto
//! into a real InfluxDB (v1 API, InfluxDB 1.6) and a real v2 write endpoint
//! (VictoriaMetrics), counted and checked point by point.

mod common;

use std::collections::BTreeMap;

use campus_gateway::config::Config;
use common::{eventually_with, feed, Influx1, Mosquitto, Publisher, QoS, Victoria};
use serde_json::Value;

const SITE: &str = "yazhong";
const DEVICES_PER_KIND: usize = 20;
const MESSAGES: usize = 10_000;

/// Declares half of the devices (with a location), leaving the rest undeclared,
/// so both paths of the registry are exercised.
fn devices_toml() -> String {
    let mut s = String::new();
    for kind in feed::KINDS {
        for i in 0..DEVICES_PER_KIND / 2 {
            s.push_str(&format!(
                "[[devices]]\nid = \"{kind}-{i}\"\nkind = \"{kind}\"\nsite = \"{SITE}\"\nbuilding = \"B{i}\"\nfloor = \"{}\"\nroom = \"R {i}\"\n\n",
                i % 4
            ));
        }
    }
    s
}

fn gateway_config(mqtt_url: &str, influx: &str, data_dir: &std::path::Path) -> Config {
    let text = format!(
        "[gateway]\ndata_dir = \"{}\"\n\n[mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"gw-{}\"\n\n{influx}\n\n[web]\nlisten = \"127.0.0.1:0\"\n\n{}",
        data_dir.display(),
        std::process::id(),
        devices_toml()
    );
    Config::from_toml(&text, Vec::new())
        .unwrap_or_else(|e| panic!("test config: {e}"))
        .config
}

/// Publishes `MESSAGES` messages spread over all kinds and devices; returns
/// what was sent, keyed by (kind, device, ts).
async fn publish_feed(url: &str, base_ts: i64) -> BTreeMap<(String, String, i64), Value> {
    let publisher = Publisher::connect(url).await;
    let mut sent = BTreeMap::new();
    for n in 0..MESSAGES {
        let kind = feed::KINDS[n % feed::KINDS.len()];
        let device = format!("{kind}-{}", (n / feed::KINDS.len()) % DEVICES_PER_KIND);
        // One second apart per device: every point has its own series+time identity.
        let ts = base_ts + (n / (feed::KINDS.len() * DEVICES_PER_KIND)) as i64 * 1000;
        let (topic, payload) = feed::message(kind, SITE, &device, ts, n as u64);
        publisher
            .publish(&topic, payload.clone(), QoS::AtLeastOnce)
            .await;
        sent.insert(
            (kind.to_owned(), device, ts),
            serde_json::from_str(&payload).expect("feed payload is JSON"),
        );
    }
    publisher.flush().await;
    sent
}

/// A broker set up as README tells schools to: mosquitto's default
/// `max_queued_messages 1000` silently drops QoS 1 messages for a subscriber
/// that falls behind during a burst.
fn gateway_broker() -> Mosquitto {
    Mosquitto::builder().max_queued_messages(0).start()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_land_in_influxdb_v1() {
    let broker = gateway_broker();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tmp();
    let cfg = gateway_config(
        &broker.url(),
        &format!(
            "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"campus\"\nbatch_size = 1000\nflush_interval = \"200ms\"",
            influx.url()
        ),
        dir.path(),
    );
    let gw = common::gateway::start(cfg).await;
    common::gateway::wait_subscribed(&gw).await;

    let base_ts = common::now_ms() - 3_600_000;
    let sent = publish_feed(&broker.url(), base_ts).await;
    assert_eq!(sent.len(), MESSAGES);

    let per_kind = MESSAGES as u64 / feed::KINDS.len() as u64;
    for kind in feed::KINDS {
        eventually_with(
            &format!("{per_kind} {kind} points in InfluxDB"),
            || async { influx.count("campus", kind).await >= per_kind },
            || format!("{}\n{}", gw.metrics.render(), influx.log()),
        )
        .await;
    }
    // Exactly: nothing lost, nothing doubled.
    let mut total = 0;
    for kind in feed::KINDS {
        let n = influx.count("campus", kind).await;
        assert_eq!(n, per_kind, "{kind} points");
        total += n;
    }
    assert_eq!(total, MESSAGES as u64);

    // Every point of one declared device and one undeclared device, field by field.
    for (kind, device, declared) in [
        ("smoke", "smoke-3", true),
        ("bus", "bus-15", false),
        ("gate", "gate-0", true),
    ] {
        let rows = influx
            .rows(
                "campus",
                &format!("SELECT * FROM \"{kind}\" WHERE device = '{device}' ORDER BY time"),
            )
            .await;
        let expected: Vec<_> = sent
            .iter()
            .filter(|((k, d, _), _)| k == kind && d == device)
            .collect();
        assert_eq!(rows.len(), expected.len(), "{kind}/{device} rows");
        for (row, ((_, _, ts), payload)) in rows.iter().zip(expected) {
            assert_eq!(
                row["time"].as_i64(),
                Some(*ts),
                "timestamp of {kind}/{device}"
            );
            assert_eq!(row["site"], SITE);
            if declared {
                let i: usize = device
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("index");
                assert_eq!(row["building"], format!("B{i}"));
                assert_eq!(
                    row["room"],
                    format!("R {i}"),
                    "tag values with spaces survive escaping"
                );
            } else {
                assert!(
                    row["building"].is_null(),
                    "undeclared devices have no location"
                );
            }
            for (field, ty) in feed::fields(kind) {
                let want = &payload[*field];
                let got = &row[*field];
                match ty {
                    feed::FieldType::F64 => {
                        assert_eq!(got.as_f64(), want.as_f64(), "{kind}.{field}")
                    }
                    _ => assert_eq!(got, want, "{kind}.{field}"),
                }
            }
        }
    }

    // Field types as InfluxDB stored them: integers stay integers, floats floats.
    let types = influx.rows("campus", "SHOW FIELD KEYS FROM \"bus\"").await;
    let type_of = |f: &str| {
        types
            .iter()
            .find(|r| r["fieldKey"] == f)
            .map(|r| r["fieldType"].clone())
    };
    assert_eq!(type_of("passengers"), Some(Value::from("integer")));
    assert_eq!(type_of("heading_deg"), Some(Value::from("float")));

    assert_eq!(gw.metrics.points_written.get(), MESSAGES as u64);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_land_through_the_v2_api() {
    let broker = gateway_broker();
    let vm = Victoria::start();
    let dir = tmp();
    let cfg = gateway_config(
        &broker.url(),
        &format!(
            "[influx]\nurl = \"{}\"\napi = \"v2\"\norg = \"yazhong\"\nbucket = \"campus\"\ntoken = \"unused-by-victoria\"\nbatch_size = 2000",
            vm.url()
        ),
        dir.path(),
    );
    let gw = common::gateway::start(cfg).await;
    common::gateway::wait_subscribed(&gw).await;

    let base_ts = common::now_ms() - 3_600_000;
    let sent = publish_feed(&broker.url(), base_ts).await;

    // A field every point of its kind carries: one sample per point.
    let per_kind = MESSAGES as u64 / feed::KINDS.len() as u64;
    let probes = [
        ("smoke", "smoke_temp_c"),
        ("gate", "gate_person_count"),
        ("kitchen", "kitchen_duct_temp_c"),
        ("labcab", "labcab_voc_ppm"),
        ("bus", "bus_speed_kmh"),
    ];
    for (kind, metric) in probes {
        let selector = format!("{{__name__=\"{metric}\"}}");
        eventually_with(
            &format!("{per_kind} {kind} points in VictoriaMetrics"),
            || async { vm.count_samples(&selector).await >= per_kind },
            || vm.log(),
        )
        .await;
        assert_eq!(
            vm.count_samples(&selector).await,
            per_kind,
            "{kind} samples"
        );
    }

    // One series in detail: tags, values and millisecond timestamps.
    let series = vm
        .export_flushed("{__name__=\"kitchen_duct_temp_c\",device=\"kitchen-2\"}")
        .await;
    assert_eq!(series.len(), 1, "one series for kitchen-2");
    let s = &series[0];
    assert_eq!(s["metric"]["site"], SITE);
    assert_eq!(s["metric"]["building"], "B2");
    let expected: Vec<(i64, f64)> = sent
        .iter()
        .filter(|((k, d, _), _)| k == "kitchen" && d == "kitchen-2")
        .map(|((_, _, ts), p)| (*ts, p["duct_temp_c"].as_f64().expect("duct temp")))
        .collect();
    let got: Vec<(i64, f64)> = s["timestamps"]
        .as_array()
        .expect("timestamps")
        .iter()
        .zip(s["values"].as_array().expect("values"))
        .map(|(t, v)| (t.as_i64().expect("ts"), v.as_f64().expect("value")))
        .collect();
    assert_eq!(got, expected);
    gw.stop().await;
}
