//! Modbus devices that are not our code (pymodbus's server) polled by the
//! gateway over TCP and over RTU on a socat serial pair, their values
//! changed while it runs, and every scaled value checked in a real InfluxDB —
//! both f32 word orders, signed registers, bits in a register, 32-bit integers.

mod common;

use campus_gateway::app::Gateway;
use campus_gateway::reading::Source;
use campus_gateway::telemetry::Status;
use common::modbus::{cabinet_unit, hood_unit, Cabinet, Hood, Unit, REFERENCE_MAPS};
use common::{eventually_with, free_port, Influx1, PyModbus, SerialPair};
use serde_json::{json, Map, Value};

const HOOD_A: Hood = Hood {
    duct_temp_c: -12.3,
    fan_current_a: 3.2,
    grease_mg_m3: 1.1,
    co_ppm: 4,
    gas_lel_pct: 0.7,
    fan_on: true,
};
const HOOD_B: Hood = Hood {
    duct_temp_c: 61.5,
    fan_current_a: 2.75,
    grease_mg_m3: 0.35,
    co_ppm: 12,
    gas_lel_pct: 1.5,
    fan_on: false,
};
const CABINET_A: Cabinet = Cabinet {
    voc_ppm: 0.3,
    temp_c: 21.0,
    humidity_pct: 44.0,
    door_open: false,
    locked: true,
    exhaust_fan_on: true,
};
const CABINET_B: Cabinet = Cabinet {
    voc_ppm: 12.75,
    temp_c: -3.5,
    humidity_pct: 61.2,
    door_open: true,
    locked: false,
    exhaust_fan_on: false,
};

fn hood_json(h: &Hood) -> Value {
    json!({
        "duct_temp_c": h.duct_temp_c,
        "fan_current_a": h.fan_current_a,
        "grease_mg_m3": h.grease_mg_m3,
        "co_ppm": f64::from(h.co_ppm),
        "gas_lel_pct": h.gas_lel_pct,
        "fan_on": h.fan_on,
    })
}

fn cabinet_json(c: &Cabinet) -> Value {
    json!({
        "voc_ppm": c.voc_ppm,
        "temp_c": c.temp_c,
        "humidity_pct": c.humidity_pct,
        "door_open": c.door_open,
        "locked": c.locked,
        "exhaust_fan_on": c.exhaust_fan_on,
    })
}

fn config(influx: &Influx1, dir: &std::path::Path, modbus: &str) -> campus_gateway::config::Config {
    common::gateway::config(&format!(
        r#"
[gateway]
data_dir = "{data}"
[mqtt]
# Nothing listens there: these tests are about Modbus only.
url = "mqtt://127.0.0.1:{mqtt}"
[influx]
url = "{influx}"
api = "v1"
database = "campus"
flush_interval = "100ms"
[web]
listen = "127.0.0.1:0"
[modbus]
poll_interval = "200ms"
timeout = "1s"
{REFERENCE_MAPS}
{modbus}
"#,
        data = dir.display(),
        mqtt = free_port(),
        influx = influx.url(),
    ))
}

/// The device's latest point in InfluxDB.
async fn latest(influx: &Influx1, measurement: &str, device: &str) -> Option<Map<String, Value>> {
    influx
        .rows(
            "campus",
            &format!(
                "SELECT * FROM \"{measurement}\" WHERE device = '{device}' ORDER BY time DESC LIMIT 1"
            ),
        )
        .await
        .into_iter()
        .next()
}

/// Whether every field of `want` is in `row` with exactly that value
/// (numbers compared as f64: InfluxDB prints the float 4.0 as `4`).
fn matches(row: &Map<String, Value>, want: &Value) -> bool {
    want.as_object().is_some_and(|w| {
        w.iter().all(|(k, v)| match (row.get(k), v.as_f64()) {
            (Some(got), Some(want)) => got.as_f64() == Some(want),
            (got, None) => got == Some(v),
            (None, Some(_)) => false,
        })
    })
}

/// Waits until the device's latest point carries `want`, field by field.
async fn wait_for(influx: &Influx1, gw: &Gateway, measurement: &str, device: &str, want: Value) {
    let deadline = std::time::Instant::now() + common::DEADLINE;
    let mut last = None;
    let mut found = false;
    while !found && std::time::Instant::now() < deadline {
        last = latest(influx, measurement, device).await;
        found = last.as_ref().is_some_and(|row| matches(row, &want));
        if !found {
            tokio::time::sleep(common::POLL).await;
        }
    }
    assert!(
        found,
        "{measurement}/{device} never showed {want}\nlatest row: {last:?}\nhealth: {:?}\n{}",
        gw.health.snapshot(),
        gw.metrics.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_devices_reference_maps_land_in_influxdb_scaled() {
    let influx = Influx1::start();
    influx.create_database("campus").await;
    // Unit 3 has a map of its own: 32-bit integers both ways, bits of a
    // register, an offset, and a gap read along (holding 15 is unused).
    let aux = Unit {
        holding: [0u16; 10]
            .into_iter()
            .chain([
                0x0001, 0x1170, // u32 big: 70000
                0xFFFB, 0xFFFF, // i32 little: -5
                0b1001, // bits 0 and 3
                0,      // unused
                90,     // 90 × 0.5 − 10 = 35
            ])
            .collect(),
        discrete_input: vec![false, true],
        ..Unit::default()
    };
    let mut device = PyModbus::tcp(&[
        (1, hood_unit(&HOOD_A)),
        (2, cabinet_unit(&CABINET_A)),
        (3, aux),
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let address = device.address();
    let cfg = config(
        &influx,
        dir.path(),
        &format!(
            r#"
[[devices]]
id = "cab-t"
kind = "labcab"
site = "yz"
building = "LAB"
room = "203"

[[modbus.devices]]
id = "hood-t"
kind = "kitchen"
site = "yz"
transport = "tcp"
address = "{address}"
unit = 1
map = "hood"

[[modbus.devices]]
device = "cab-t"
transport = "tcp"
address = "{address}"
unit = 2
map = "cabinet"

[[modbus.devices]]
id = "aux-t"
kind = "labcab"
site = "yz"
transport = "tcp"
address = "{address}"
unit = 3
max_gap = 1
registers = [
  {{ field = "count_big", table = "holding", address = 10, type = "u32", word_order = "big" }},
  {{ field = "delta_little", table = "holding", address = 12, type = "i32", word_order = "little" }},
  {{ field = "door_open", table = "holding", address = 14, type = "bit", bit = 0 }},
  {{ field = "locked", table = "holding", address = 14, type = "bit", bit = 3 }},
  {{ field = "exhaust_fan_on", table = "holding", address = 14, type = "bit", bit = 1 }},
  {{ field = "temp_c", table = "holding", address = 16, type = "u16", scale = 0.5, offset = -10.0 }},
  {{ field = "smoke_seen", table = "discrete_input", address = 1, type = "bool" }},
]
"#
        ),
    );
    let gw = common::gateway::start(cfg).await;

    wait_for(&influx, &gw, "kitchen", "hood-t", hood_json(&HOOD_A)).await;
    wait_for(&influx, &gw, "labcab", "cab-t", cabinet_json(&CABINET_A)).await;
    wait_for(
        &influx,
        &gw,
        "labcab",
        "aux-t",
        json!({
            "count_big": 70000.0,
            "delta_little": -5.0,
            "door_open": true,
            "locked": true,
            "exhaust_fan_on": false,
            "temp_c": 35.0,
            "smoke_seen": true,
        }),
    )
    .await;

    // The values change on the device; the next polls carry them.
    device.set(1, |u| *u = hood_unit(&HOOD_B));
    device.set(2, |u| *u = cabinet_unit(&CABINET_B));
    wait_for(&influx, &gw, "kitchen", "hood-t", hood_json(&HOOD_B)).await;
    wait_for(&influx, &gw, "labcab", "cab-t", cabinet_json(&CABINET_B)).await;

    // A declared device's place becomes tags, as for MQTT.
    let row = latest(&influx, "labcab", "cab-t")
        .await
        .expect("a cab-t row");
    assert_eq!(row["building"], "LAB");
    assert_eq!(row["room"], "203");
    assert_eq!(row["site"], "yz");

    // They are devices like any other: listed, online, from modbus.
    let devices = gw.registry.devices(common::now_ms());
    for id in ["hood-t", "cab-t", "aux-t"] {
        let d = devices
            .iter()
            .find(|d| &*d.id == id)
            .unwrap_or_else(|| panic!("{id} in the registry"));
        assert_eq!(d.source, Some(Source::Modbus), "{id}");
        assert!(d.online, "{id}");
        assert_eq!(
            gw.health.status(&format!("modbus/{id}")),
            Some(Status::Ok),
            "{id}"
        );
    }
    let metrics = gw.metrics.render();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("campusgw_modbus_poll_failures_total") && !l.ends_with(" 0")),
        "no failures against a healthy device:\n{metrics}\n{}",
        device.log()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_line_with_two_units_lands_in_influxdb() {
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let pair = SerialPair::start();
    let mut device = PyModbus::serial(
        &pair.b,
        &[(1, hood_unit(&HOOD_A)), (2, cabinet_unit(&CABINET_A))],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(
        &influx,
        dir.path(),
        &format!(
            r#"
[modbus.lines.bus1]
path = "{tty}"
baud = 19200
request_gap = "2ms"

[[modbus.devices]]
id = "hood-r"
kind = "kitchen"
site = "yz"
transport = "rtu"
line = "bus1"
unit = 1
map = "hood"

[[modbus.devices]]
id = "cab-r"
kind = "labcab"
site = "yz"
transport = "rtu"
line = "bus1"
unit = 2
map = "cabinet"
"#,
            tty = pair.a.display()
        ),
    );
    let gw = common::gateway::start(cfg).await;

    let diagnostics = || format!("{}\n{}", device.log(), pair.log());
    eventually_with(
        "both units on the line answer",
        || async {
            gw.health.status("modbus/hood-r") == Some(Status::Ok)
                && gw.health.status("modbus/cab-r") == Some(Status::Ok)
        },
        || format!("{:?}\n{}", gw.health.snapshot(), diagnostics()),
    )
    .await;
    wait_for(&influx, &gw, "kitchen", "hood-r", hood_json(&HOOD_A)).await;
    wait_for(&influx, &gw, "labcab", "cab-r", cabinet_json(&CABINET_A)).await;

    device.set(1, |u| *u = hood_unit(&HOOD_B));
    device.set(2, |u| *u = cabinet_unit(&CABINET_B));
    wait_for(&influx, &gw, "kitchen", "hood-r", hood_json(&HOOD_B)).await;
    wait_for(&influx, &gw, "labcab", "cab-r", cabinet_json(&CABINET_B)).await;
    gw.stop().await;
}
