//! Faulty Modbus devices (pymodbus) next to a healthy one: one stops
//! answering, one answers later than the timeout, one answers exception 2
//! (illegal data address). The healthy one keeps its poll rate, the faulty
//! ones are counted by reason, shown down in `/healthz` (which stays 200: a
//! device is not the gateway), and come back by themselves once they answer.
//!
//! No wall-clock assertions: poll counts are compared with what the
//! configured interval allows, with a generous margin for a busy 2-core machine.

mod common;

use std::time::{Duration, Instant};

use campus_gateway::app::Gateway;
use campus_gateway::telemetry::Status;
use common::modbus::{cabinet_unit, Cabinet, Mode, REFERENCE_MAPS};
use common::{eventually_with, Mosquitto, PyModbus};

const CABINET: Cabinet = Cabinet {
    voc_ppm: 0.3,
    temp_c: 21.0,
    humidity_pct: 44.0,
    door_open: false,
    locked: true,
    exhaust_fan_on: true,
};

const DEVICES: [(&str, u8); 4] = [("ok", 1), ("silent", 2), ("slow", 3), ("refuses", 4)];
const INTERVAL_MS: u64 = 250;

fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn polls(gw: &Gateway, device: &str) -> f64 {
    metric(
        gw,
        &format!("campusgw_modbus_polls_total{{device=\"{device}\"}}"),
    )
}

fn failures(gw: &Gateway, device: &str, reason: &str) -> f64 {
    metric(
        gw,
        &format!("campusgw_modbus_poll_failures_total{{device=\"{device}\",reason=\"{reason}\"}}"),
    )
}

async fn all_status(gw: &Gateway, device: &PyModbus, ids: &[&str], want: Status) {
    eventually_with(
        &format!("{ids:?} are {want:?}"),
        || async {
            ids.iter()
                .all(|id| gw.health.status(&format!("modbus/{id}")) == Some(want))
        },
        || {
            format!(
                "{:?}\n{}\n{}",
                gw.health.snapshot(),
                gw.metrics.render(),
                device.log()
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_devices_never_slow_the_healthy_one_and_recover() {
    let units: Vec<(u8, common::modbus::Unit)> = DEVICES
        .iter()
        .map(|(_, unit)| (*unit, cabinet_unit(&CABINET)))
        .collect();
    let mut device = PyModbus::tcp(&units);
    // A real broker, so the only trouble /healthz can see is the devices'.
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = format!(
        r#"
[gateway]
data_dir = "{}"
[mqtt]
url = "{}"
[web]
listen = "127.0.0.1:0"
[modbus]
poll_interval = "{INTERVAL_MS}ms"
timeout = "300ms"
retries = 1
offline_after_failures = 3
reconnect_min = "100ms"
reconnect_max = "1s"
{REFERENCE_MAPS}
"#,
        dir.path().display(),
        broker.url()
    );
    for (id, unit) in DEVICES {
        text.push_str(&format!(
            "[[modbus.devices]]\nid = \"{id}\"\nkind = \"labcab\"\nsite = \"yz\"\ntransport = \"tcp\"\naddress = \"{}\"\nunit = {unit}\nmap = \"cabinet\"\n",
            device.address()
        ));
    }
    let gw = common::gateway::start(common::gateway::config(&text)).await;
    common::gateway::wait_subscribed(&gw).await;
    let ids: Vec<&str> = DEVICES.iter().map(|(id, _)| *id).collect();
    all_status(&gw, &device, &ids, Status::Ok).await;

    // Three kinds of trouble at once.
    device.set(2, |u| u.mode = Mode::Silent);
    device.set(3, |u| u.mode = Mode::Slow(Duration::from_millis(1500)));
    device.set(4, |u| u.exception = Some(("holding", 0, 3)));
    all_status(&gw, &device, &["silent", "slow", "refuses"], Status::Down).await;

    // While they stay faulty, the healthy device is polled at its rate.
    let window = Duration::from_secs(5);
    let before = polls(&gw, "ok");
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed();
    let got = polls(&gw, "ok") - before;
    let possible = elapsed.as_millis() as f64 / INTERVAL_MS as f64;
    assert!(
        got >= 0.75 * possible,
        "the healthy device got {got} polls of {possible:.0} possible while the others failed\n{}",
        gw.metrics.render()
    );
    assert_eq!(gw.health.status("modbus/ok"), Some(Status::Ok));
    assert!(
        failures(&gw, "ok", "timeout") + failures(&gw, "ok", "exception") == 0.0,
        "the healthy device never failed"
    );

    // Each fault is counted under its reason.
    assert!(
        failures(&gw, "silent", "timeout") >= 3.0,
        "{}",
        gw.metrics.render()
    );
    assert!(
        failures(&gw, "slow", "timeout") >= 3.0,
        "{}",
        gw.metrics.render()
    );
    assert!(
        failures(&gw, "refuses", "exception") >= 3.0,
        "{}",
        gw.metrics.render()
    );
    assert_eq!(failures(&gw, "refuses", "timeout"), 0.0);
    for id in ["silent", "slow", "refuses"] {
        assert_eq!(
            metric(
                &gw,
                &format!("campusgw_modbus_device_online{{device=\"{id}\"}}")
            ),
            0.0,
            "{id} offline in /metrics"
        );
    }

    // /healthz shows them down but stays 200: a device is not the gateway.
    let (code, body) = common::gateway::get(&gw, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("healthz JSON");
    assert_eq!(
        health["components"]["modbus/silent"]["status"], "down",
        "{body}"
    );
    assert!(
        health["components"]["modbus/refuses"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("exception 2")),
        "{body}"
    );

    // They answer again: they come back by themselves and are polled again.
    let stalled: Vec<f64> = ["silent", "slow", "refuses"]
        .iter()
        .map(|id| polls(&gw, id))
        .collect();
    for unit in [2, 3, 4] {
        device.set(unit, |u| {
            u.mode = Mode::Normal;
            u.exception = None;
        });
    }
    all_status(&gw, &device, &ids, Status::Ok).await;
    for (id, before) in ["silent", "slow", "refuses"].iter().zip(stalled) {
        let id = *id;
        eventually_with(
            &format!("{id} polled again"),
            || async { polls(&gw, id) > before + 2.0 },
            || gw.metrics.render(),
        )
        .await;
    }
    gw.stop().await;
}
