//! Alarms end to end through a real mosquitto: a smoke message becomes an
//! alarm in the durable store, in InfluxDB's `alarm` measurement and on MQTT
//! (retained while open); open alarms survive a restart; a flood of silent
//! detectors is one grouped entry; operator actions are recorded with names.

mod common;

use std::time::Duration;

use campus_gateway::alarms::ledger::{write_csv, LedgerOptions};
use campus_gateway::alarms::store::AlarmStore;
use campus_gateway::alarms::Command;
use campus_gateway::alarms::{Alarm, Lang, State};
use campus_gateway::app::Gateway;
use common::gateway;
use common::{eventually, eventually_with, feed, Influx1, Mosquitto, Publisher, QoS, Subscriber};

const RULES: &str = r#"
[alarms]
flood_threshold = 10
flood_window = "30s"

[[rules]]
id = "smoke-alarm"
severity = "critical"
kinds = ["smoke"]
message = "Smoke at {location}"
condition = { type = "equals", field = "alarm", value = true }

[[rules]]
id = "smoke-offline"
severity = "high"
kinds = ["smoke"]
devices = OFFLINE_DEVICES
message = "{device} silent"
condition = { type = "offline", after = "1s" }
"#;

fn config(
    dir: &std::path::Path,
    mqtt: &str,
    influx: &str,
    devices: usize,
) -> campus_gateway::config::Config {
    let mut text = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{mqtt}\"\nclient_id = \"gw-alarms-{}\"\n[influx]\nurl = \"{influx}\"\napi = \"v1\"\ndatabase = \"campus\"\nflush_interval = \"100ms\"\n[web]\nlisten = \"127.0.0.1:0\"\n{}\n[[devices]]\nid = \"a3-301\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"A3\"\nfloor = \"3\"\nroom = \"301\"\n",
        dir.display(),
        std::process::id(),
        RULES.replace(
            "OFFLINE_DEVICES",
            &format!("[{}]", (0..devices).map(|i| format!("\"silent-{i}\"")).collect::<Vec<_>>().join(", ")),
        ),
    );
    for i in 0..devices {
        text.push_str(&format!("[[devices]]\nid = \"silent-{i}\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"B\"\n"));
    }
    gateway::config(&text)
}

fn open_alarms(gw: &Gateway) -> Vec<Alarm> {
    gw.rules.open.read().expect("snapshot").clone()
}

async fn command(gw: &Gateway, cmd: Command) -> Vec<Alarm> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    gw.rules
        .commands
        .send((cmd, tx))
        .await
        .expect("rules task alive");
    rx.await.expect("answer").expect("command accepted")
}

async fn smoke(publisher: &Publisher, alarm: bool, seq: u64) {
    let mut p = feed::payload("smoke", common::now_ms(), seq);
    p["alarm"] = serde_json::json!(alarm);
    publisher
        .publish(
            &feed::topic("yazhong", "smoke", "a3-301"),
            p.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_alarm_reaches_the_store_influxdb_and_mqtt_and_is_handled() {
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(dir.path(), &broker.url(), &influx.url(), 0)).await;
    gateway::wait_subscribed(&gw).await;
    let mut display = Subscriber::connect(&broker.url(), "campusgw/#").await;
    let publisher = Publisher::connect(&broker.url()).await;

    smoke(&publisher, true, 1).await;
    eventually("the alarm is open", || async {
        open_alarms(&gw).len() == 1
    })
    .await;
    let alarm = open_alarms(&gw).remove(0);
    assert_eq!(
        (alarm.rule.as_str(), alarm.device.as_str(), alarm.state),
        ("smoke-alarm", "a3-301", State::Unacked)
    );
    assert_eq!(alarm.message.zh, "Smoke at A3 / 3 / 301");

    // On MQTT for a corridor display, retained.
    let msg = display.recv().await;
    assert_eq!(msg.topic, "campusgw/yazhong/alarm/a3-301/smoke-alarm");
    assert!(
        msg.retain || msg.json()["state"] == "unacked",
        "{}",
        msg.payload_str()
    );
    assert_eq!(msg.json()["severity"], "critical");

    // In InfluxDB's alarm measurement.
    eventually_with(
        "the alarm point in InfluxDB",
        || async { influx.count("campus", "alarm").await >= 1 },
        || influx.log(),
    )
    .await;
    let rows = influx.rows("campus", "SELECT * FROM alarm").await;
    assert_eq!(rows[0]["rule"], "smoke-alarm");
    assert_eq!(rows[0]["severity"], "critical");
    assert_eq!(rows[0]["state"], "unacked");

    // An operator acknowledges it; then the room is clear: it closes.
    let acked = command(
        &gw,
        Command::Ack {
            id: alarm.id,
            by: "王老师".into(),
            comment: Some("false alarm, steam".into()),
        },
    )
    .await;
    assert_eq!(acked[0].state, State::Acked);
    smoke(&publisher, false, 2).await;
    eventually("the alarm is closed", || async {
        open_alarms(&gw).is_empty()
    })
    .await;
    gw.stop().await;

    // The ledger has who did what; the retained copy is gone.
    let store = AlarmStore::open(&dir.path().join("alarms.db")).expect("store");
    let closed = store.get(alarm.id).expect("query").expect("stored");
    assert_eq!(
        (closed.state, closed.acked_by.as_deref()),
        (State::Cleared, Some("王老师"))
    );
    let actions: Vec<String> = store
        .events(alarm.id)
        .expect("events")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["raise", "ack", "clear"]);
    let mut csv = Vec::new();
    let opts = LedgerOptions {
        lang: Lang::Zh,
        offset: chrono::FixedOffset::east_opt(8 * 3600).expect("offset"),
    };
    write_csv(&store, 0, i64::MAX, opts, &mut csv).expect("ledger");
    assert!(
        String::from_utf8_lossy(&csv).contains("王老师 确认: false alarm, steam"),
        "{}",
        String::from_utf8_lossy(&csv)
    );
    let mut late = Subscriber::connect(&broker.url(), "campusgw/#").await;
    assert!(
        late.recv_timeout(Duration::from_millis(500))
            .await
            .is_none(),
        "no retained alarm once closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_alarms_survive_a_restart() {
    let broker = Mosquitto::builder().max_queued_messages(0).start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let publisher = Publisher::connect(&broker.url()).await;

    let gw = gateway::start(config(dir.path(), &broker.url(), &influx.url(), 0)).await;
    gateway::wait_subscribed(&gw).await;
    smoke(&publisher, true, 1).await;
    eventually("the alarm is open", || async {
        open_alarms(&gw).len() == 1
    })
    .await;
    let before = open_alarms(&gw).remove(0);
    gw.stop().await;

    let gw = gateway::start(config(dir.path(), &broker.url(), &influx.url(), 0)).await;
    assert_eq!(open_alarms(&gw), vec![before.clone()], "back as it was");
    gateway::wait_subscribed(&gw).await;
    smoke(&publisher, true, 2).await;
    smoke(&publisher, false, 3).await;
    eventually("the restored alarm clears", || async {
        open_alarms(&gw)
            .first()
            .is_some_and(|a| a.state == State::ClearedUnacked)
    })
    .await;
    assert_eq!(
        open_alarms(&gw)[0].id,
        before.id,
        "no second alarm for the same fire"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_silent_detectors_are_one_grouped_entry() {
    let broker = Mosquitto::start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway::start(config(dir.path(), &broker.url(), &influx.url(), 200)).await;
    eventually("200 offline alarms", || async {
        open_alarms(&gw).iter().filter(|a| !a.is_group).count() == 200
    })
    .await;
    let open = open_alarms(&gw);
    let groups: Vec<&Alarm> = open.iter().filter(|a| a.is_group).collect();
    assert_eq!(groups.len(), 1, "one grouped entry");
    let g = groups[0];
    assert_eq!(g.count, 200);
    assert!(open
        .iter()
        .filter(|a| !a.is_group)
        .all(|a| a.group == Some(g.id)));
    command(
        &gw,
        Command::Ack {
            id: g.id,
            by: "op".into(),
            comment: None,
        },
    )
    .await;
    eventually("all members acknowledged", || async {
        open_alarms(&gw).iter().all(|a| a.state == State::Acked)
    })
    .await;
    gw.stop().await;
}

/// A flood of detectors within the window is one group; a detector going
/// off after the window has passed is a row of its own, not hidden in the
/// old group (through a real mosquitto, on the gateway's own clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_alarm_is_not_hidden_in_an_old_flood_group() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"gw-flood-{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n[alarms]\nflood_threshold = 10\nflood_window = \"5s\"\n{}",
        dir.path().display(),
        broker.url(),
        std::process::id(),
        gateway::smoke_rule("Smoke at {location}"),
    );
    for i in 0..13 {
        text.push_str(&format!(
            "[[devices]]\nid = \"d{i}\"\nkind = \"smoke\"\nsite = \"yazhong\"\nbuilding = \"{}\"\nfloor = \"{}\"\n",
            if i < 12 { "宿舍楼" } else { "图书馆" },
            i % 3 + 1
        ));
    }
    let gw = gateway::start(gateway::config(&text)).await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;
    let fire = |i: u64| {
        let mut p = feed::payload("smoke", common::now_ms(), i);
        p["alarm"] = serde_json::json!(true);
        (
            feed::topic("yazhong", "smoke", &format!("d{i}")),
            p.to_string(),
        )
    };
    for i in 0..12 {
        let (topic, payload) = fire(i);
        publisher.publish(&topic, payload, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;
    eventually("a flood group of 12", || async {
        open_alarms(&gw).iter().any(|a| a.is_group && a.count == 12)
    })
    .await;
    let group = open_alarms(&gw)
        .into_iter()
        .find(|a| a.is_group)
        .expect("group");
    let places = group
        .location
        .as_ref()
        .and_then(|l| l.name.clone())
        .unwrap_or_default();
    assert!(
        places.contains("宿舍楼 / 1") && places.contains("宿舍楼 / 3"),
        "{places}"
    );

    // Past the window (the gateway's real clock): the library's detector.
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    let (topic, payload) = fire(12);
    publisher.publish(&topic, payload, QoS::AtLeastOnce).await;
    publisher.flush().await;
    eventually("the library's alarm", || async {
        open_alarms(&gw).iter().any(|a| a.device == "d12")
    })
    .await;
    let open = open_alarms(&gw);
    let late = open.iter().find(|a| a.device == "d12").expect("d12");
    assert_eq!(late.group, None, "a row of its own");
    assert_eq!(
        late.location.as_ref().and_then(|l| l.building.as_deref()),
        Some("图书馆")
    );
    assert_eq!(
        open.iter().find(|a| a.id == group.id).map(|g| g.count),
        Some(12),
        "the old group did not take it"
    );
    gw.stop().await;
}
