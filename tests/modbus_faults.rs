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

/// A "device" that answers every request with a frame that is no Modbus
/// answer (a wrong protocol id: a misconfigured converter, another protocol
/// on the port). Ours, since no Modbus server sends garbage on purpose; the
/// healthy device is pymodbus. (Garbage that announces a longer frame than
/// it sends ends as a timeout: the decoder waits for the rest.)
async fn garbage_device() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 260];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0
                        || stream
                            .write_all(&[0x12, 0x34, 0xBE, 0xEF, 0x00, 0x03, 0x01, 0x03, 0x00])
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_as_decode_and_the_device_goes_offline() {
    let device = PyModbus::tcp(&[(1, cabinet_unit(&CABINET))]);
    let junk = garbage_device().await;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
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
reconnect_min = "100ms"
reconnect_max = "500ms"
{REFERENCE_MAPS}
[[modbus.devices]]
id = "ok"
kind = "labcab"
site = "yz"
transport = "tcp"
address = "{}"
map = "cabinet"
[[modbus.devices]]
id = "junk"
kind = "labcab"
site = "yz"
transport = "tcp"
address = "{junk}"
map = "cabinet"
"#,
        dir.path().display(),
        broker.url(),
        device.address()
    );
    let gw = common::gateway::start(common::gateway::config(&text)).await;
    all_status(&gw, &device, &["junk"], Status::Down).await;
    all_status(&gw, &device, &["ok"], Status::Ok).await;
    assert!(
        failures(&gw, "junk", "decode") >= 3.0,
        "{}",
        gw.metrics.render()
    );
    assert_eq!(polls(&gw, "junk"), 0.0);
    let before = polls(&gw, "ok");
    eventually_with(
        "the healthy device keeps being polled",
        || async { polls(&gw, "ok") >= before + 4.0 },
        || gw.metrics.render(),
    )
    .await;
    gw.stop().await;
}
