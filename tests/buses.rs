//! School-bus route checks end to end through a real mosquitto and
//! InfluxDB: recorded traces of the example routes, replayed much faster
//! than real time, give the same report as the checker fed the same fixes
//! live; every episode is an alarm (`bus-<type>`) and a `bus_episode`
//! point; a trace delivered out of order in batches (a terminal uploading
//! its blind-area backlog) gives the same report too.

mod common;

use campus_gateway::bus::check::{Checker, Ctx, Fix};
use campus_gateway::bus::report::Report;
use campus_gateway::bus::trace::{generate, Fault, TraceSpec};
use campus_gateway::bus::trip::Trip;
use campus_gateway::bus::Plan;
use common::gateway;
use common::{Influx1, Mosquitto, Publisher, QoS};

/// Monday 30 November 2026, 07:00 in China (UTC+8).
const MONDAY_0700: i64 = 1_795_993_200_000;

fn config(dir: &std::path::Path, mqtt: &str, influx: &str) -> campus_gateway::config::Config {
    let routes = concat!(env!("CARGO_MANIFEST_DIR"), "/config/routes.example.geojson");
    gateway::config(&format!(
        r#"[gateway]
data_dir = "{}"
# The recorded traces are from a fixed day.
max_ts_past = "36500d"
[mqtt]
url = "{mqtt}"
client_id = "gw-buses-{}"
[influx]
url = "{influx}"
api = "v1"
database = "campus"
flush_interval = "100ms"
[web]
listen = "127.0.0.1:0"
[[devices]]
id = "bus-07"
kind = "bus"
site = "yazhong"
[[devices]]
id = "bus-12"
kind = "bus"
site = "yazhong"
[buses]
routes_file = "{routes}"
reorder_window = "3s"
[[buses.vehicles]]
id = "bus-07"
capacity = 35
route = "R1"
[[buses.vehicles]]
id = "bus-12"
capacity = 35
route = "R2"
[[buses.trips]]
route = "R1"
depart = "07:00"
[[buses.trips]]
route = "R2"
depart = "07:10"
"#,
        dir.display(),
        std::process::id(),
    ))
}

/// The trips the checker makes of `fixes` fed live, in order.
fn expected(plan: &Plan, vehicle: &str, fixes: &[Fix]) -> Vec<Trip> {
    let ctx = Ctx { plan, weather: &[] };
    let mut c = Checker::new(vehicle);
    let mut out = Vec::new();
    for f in fixes {
        c.push(*f, f.ts + 1000, &ctx, &mut out);
        c.tick(f.ts + 1000, &ctx, &mut out);
    }
    c.tick(fixes.last().map_or(0, |f| f.ts) + 60_000, &ctx, &mut out);
    let mut trips = std::mem::take(&mut c.finished);
    trips.extend(c.trip.take());
    trips.extend(c.extra.take());
    trips
}

async fn publish(p: &Publisher, vehicle: &str, fixes: &[Fix]) {
    for f in fixes {
        let payload = serde_json::json!({
            "ts": f.ts, "lat": f.lat, "lon": f.lon, "speed_kmh": f.speed_kmh, "heading_deg": 90.0,
            "passengers": f.passengers, "door_open": f.door_open, "route_id": "R1",
        });
        p.publish(
            &format!("campus/yazhong/bus/{vehicle}"),
            payload.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    }
}

async fn report(gw: &campus_gateway::app::Gateway, vehicle: &str) -> serde_json::Value {
    let (status, body) = gateway::get(
        gw,
        &format!("/api/reports/bus?date=2026-11-30&vehicle={vehicle}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_traces_give_the_same_report_alarms_and_points_as_live() {
    let broker = Mosquitto::start();
    let influx = Influx1::start();
    influx.create_database("campus").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), &broker.url(), &influx.url());
    let plan = Plan::new(&cfg).expect("valid").expect("a plan");
    let gw = gateway::start(cfg).await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;

    // bus-07: speeding on R1, skipping a stop, one teleporting and one (0,0) fix; in order.
    let r1 = TraceSpec::new("R1", MONDAY_0700)
        .with(Fault::Speed {
            at: 1000.0,
            kmh: 72.0,
            secs: 20.0,
        })
        .with(Fault::SkipStop(3))
        .with(Fault::Teleport { at: 300.0, km: 5.0 })
        .with(Fault::Zero { at: 400.0 });
    let fixes = generate(&plan.network, &r1).expect("R1");
    let want = expected(&plan, "bus-07", &fixes);
    assert_eq!(want.len(), 1);
    publish(&publisher, "bus-07", &fixes).await;

    // bus-12: overloaded on R2, delivered as a backlog: minutes reversed.
    let mut r2 = TraceSpec::new("R2", MONDAY_0700 + 600_000).with(Fault::Passengers {
        from_stop: 1,
        n: 40,
    });
    r2.passengers = 30;
    let fixes2 = generate(&plan.network, &r2).expect("R2");
    let want2 = expected(&plan, "bus-12", &fixes2);
    for chunk in fixes2.chunks(12) {
        let reversed: Vec<Fix> = chunk.iter().rev().copied().collect();
        publish(&publisher, "bus-12", &reversed).await;
    }

    for (vehicle, want) in [("bus-07", &want), ("bus-12", &want2)] {
        let want = serde_json::to_value(Report::new("2026-11-30", want, 0)).expect("json");
        let same = common::wait_until(std::time::Duration::from_secs(60), || async {
            report(&gw, vehicle).await == want
        })
        .await;
        let metrics = gateway::get(&gw, "/metrics").await.1;
        let metrics: Vec<&str> = metrics
            .lines()
            .filter(|l| l.contains("bus") || l.contains("rejected"))
            .collect();
        assert!(
            same,
            "{vehicle}: got {}\nwant {want}\n{metrics:#?}",
            report(&gw, vehicle).await
        );
    }
    let types = |t: &[Trip]| -> Vec<String> {
        t.iter()
            .flat_map(|t| &t.episodes)
            .map(|e| format!("bus-{}", e.kind.as_str()))
            .collect()
    };
    assert_eq!(types(&want), ["bus-overspeed", "bus-stop_skipped"]);
    assert!(types(&want2).contains(&"bus-overload".to_owned()));

    // Every episode is an alarm on its bus, with the bus's time.
    let open = gw.rules.open.read().expect("alarms").clone();
    for (vehicle, t) in [("bus-07", &want), ("bus-12", &want2)] {
        for rule in types(t) {
            let a = open
                .iter()
                .find(|a| a.rule == rule && a.device == vehicle)
                .unwrap_or_else(|| panic!("{rule} on {vehicle}: {open:#?}"));
            assert!(a.raised_at >= MONDAY_0700 && a.raised_at < MONDAY_0700 + 3_600_000);
        }
    }
    let speeding = open
        .iter()
        .find(|a| a.rule == "bus-overspeed")
        .expect("overspeed");
    assert_eq!(speeding.severity.as_str(), "high");
    assert_eq!(speeding.peak, Some(72.0));

    // Dropped, counted, never alarmed on.
    assert_eq!(
        gateway::metric(&gw, "campusgw_bus_fixes_dropped_total{reason=\"jump\"}").await,
        1.0
    );
    assert_eq!(
        gateway::metric(&gw, "campusgw_bus_fixes_dropped_total{reason=\"zero\"}").await,
        1.0
    );

    // And in InfluxDB as bus_episode points.
    let n = types(&want).len() + types(&want2).len();
    let stored = common::wait_until(std::time::Duration::from_secs(60), || async {
        influx.count("campus", "bus_episode").await == n as u64
    })
    .await;
    assert!(
        stored,
        "{:?}",
        influx.rows("campus", "SELECT * FROM bus_episode").await
    );
    let rows = influx
        .rows(
            "campus",
            "SELECT peak_kmh, limit_kmh FROM bus_episode WHERE \"type\" = 'overspeed'",
        )
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["peak_kmh"], 72.0);

    // The CSV for the bureau has one row per episode.
    let (status, csv) = gateway::get(&gw, "/api/reports/bus?date=2026-11-30&format=csv").await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 1 + n, "{csv}");
    assert!(csv.contains("stop_skipped"));

    // The bad-weather switch: an operator's, audited; a viewer may not.
    let post = |token: String, on: bool| {
        let url = format!("http://{}/api/buses/weather", gw.web_addr);
        async move {
            common::http_client()
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({ "on": on }))
                .send()
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(gateway::viewer_token(&gw), true).await, 403);
    gw.auth
        .set_user(
            "duty",
            campus_gateway::web::Role::Operator,
            "duty-room-password",
        )
        .expect("user");
    let op = gw
        .auth
        .create_token("duty", campus_gateway::web::Role::Operator, "duty", None)
        .expect("token");
    assert_eq!(post(op.clone(), true).await, 200);
    let (_, body) = gateway::get(&gw, "/api/buses").await;
    let buses: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(buses["bad_weather"], true, "{body}");
    assert_eq!(buses["routes"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        buses["routes"][0]["stops"].as_array().map(Vec::len),
        Some(5)
    );
    let audit = gw.auth.audit_log(10).expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "bus_weather" && e.user == "token:duty" && e.target == "on"),
        "{audit:?}"
    );
    gw.stop().await;
}
