//! `cargo bench --bench buses`: a district's fleet, 500 buses reporting every
//! second, through one gateway.
//!
//! 1. The checker alone (this process, one thread): 500 buses driving the
//!    example routes with GPS noise, one fix per bus per simulated second —
//!    CPU per 1,000 fixes, the check's latency per fix (p50, p99, max), and
//!    memory per bus (the growth of this process's resident memory over the
//!    500 running trips).
//! 2. The whole gateway (the release binary as its own process, a real
//!    mosquitto, no InfluxDB: readings go to the spool): 500 buses publishing
//!    one fix a second for `BENCH_SECONDS` (default 20), once with the route
//!    checks and once without — the gateway's CPU per 1,000 fixes and peak
//!    resident memory, and the difference the checks make.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use campus_gateway::bus::check::{Checker, Ctx, Fix};
use campus_gateway::bus::trace::{generate, Fault, TraceSpec};
use campus_gateway::bus::Plan;
use common::process::ChildGuard;
use common::{free_port, Mosquitto, Publisher, QoS};

const BUSES: usize = 500;
/// Monday 30 November 2026, 07:00 in China (UTC+8).
const MONDAY_0700: i64 = 1_795_993_200_000;

fn config(data: &std::path::Path, mqtt: &str, web: u16, checks: bool, depart: &str) -> String {
    let routes = concat!(env!("CARGO_MANIFEST_DIR"), "/config/routes.example.geojson");
    let mut text = format!(
        "[gateway]\ndata_dir = \"{}\"\nmax_devices = 2000\n[mqtt]\nurl = \"{mqtt}\"\n[web]\nlisten = \"127.0.0.1:{web}\"\n",
        data.display()
    );
    for i in 0..BUSES {
        text.push_str(&format!(
            "[[devices]]\nid = \"bus-{i}\"\nkind = \"bus\"\nsite = \"district\"\n"
        ));
    }
    if checks {
        text.push_str(&format!("[buses]\nroutes_file = \"{routes}\"\n"));
        for i in 0..BUSES {
            let route = if i % 2 == 0 { "R1" } else { "R2" };
            text.push_str(&format!(
                "[[buses.vehicles]]\nid = \"bus-{i}\"\ncapacity = 40\nroute = \"{route}\"\n"
            ));
        }
        // Every bus departs at `depart` on its route.
        for route in ["R1", "R2"] {
            text.push_str(&format!(
                "[[buses.trips]]\nroute = \"{route}\"\ndepart = \"{depart}\"\n"
            ));
        }
    }
    text
}

/// One trace per bus, one fix per second, departing at `depart`.
fn traces(plan: &Plan, depart: i64) -> Vec<Vec<Fix>> {
    (0..BUSES)
        .map(|i| {
            let mut s = TraceSpec::new(if i % 2 == 0 { "R1" } else { "R2" }, depart);
            s.interval_s = 1.0;
            s.seed = i as u64;
            s.faults.push(Fault::Jitter(15.0));
            generate(&plan.network, &s).unwrap_or_default()
        })
        .collect()
}

fn rss_kb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0.0)
}

fn checker_alone(plan: &Plan) {
    let traces = traces(plan, MONDAY_0700);
    let ctx = Ctx { plan, weather: &[] };
    let rss0 = rss_kb();
    let mut checkers: Vec<Checker> = (0..BUSES)
        .map(|i| Checker::new(&format!("bus-{i}")))
        .collect();
    let steps = traces.iter().map(Vec::len).min().unwrap_or(0);
    let mut lat = Vec::with_capacity(steps * BUSES);
    let mut out = Vec::new();
    let t0 = Instant::now();
    for s in 0..steps {
        for (c, tr) in checkers.iter_mut().zip(&traces) {
            let f = tr[s];
            let t = Instant::now();
            c.push(f, f.ts + 500, &ctx, &mut out);
            lat.push(t.elapsed());
            out.clear();
        }
        let now = traces[0][s].ts + 1000;
        for c in &mut checkers {
            c.tick(now, &ctx, &mut out);
            out.clear();
        }
    }
    let cpu = t0.elapsed();
    let fixes = (steps * BUSES) as f64;
    let running = checkers.iter().filter(|c| c.trip.is_some()).count();
    let rss1 = rss_kb();
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!("## The checker alone (one thread)");
    println!(
        "{BUSES} buses, {fixes:.0} fixes ({steps} s of driving), {running} trips running at the end"
    );
    println!(
        "CPU per 1,000 fixes: {:.2} ms; latency per fix: p50 {:?}, p99 {:?}, max {:?}",
        cpu.as_secs_f64() * 1000.0 / fixes * 1000.0,
        q(0.5),
        q(0.99),
        lat.last().copied().unwrap_or_default()
    );
    println!(
        "memory per bus: {:.1} KiB resident (process growth over {BUSES} running trips, incl. the reorder buffers)",
        (rss1 - rss0) / BUSES as f64
    );
}

fn gateway(plan: &Plan, checks: bool, seconds: u64) -> (f64, f64, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = Mosquitto::start();
    let work = tempfile::tempdir().expect("temp dir");
    let web = free_port();
    let path = work.path().join("bench.toml");
    // The trip departs this minute, so the fixes are fresh.
    let start = chrono::Utc::now().timestamp_millis() / 60_000 * 60_000;
    let depart = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(start)
        .unwrap_or_default()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("offset"))
        .format("%H:%M")
        .to_string();
    let text = config(
        &work.path().join("data"),
        &broker.url(),
        web,
        checks,
        &depart,
    );
    std::fs::write(&path, text).expect("config");
    let gw = ChildGuard::gateway(&path, "warn");
    let pid = gw.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::http_sync(web, "GET", "/healthz", None, None).map_or(true, |r| r.0 != 200) {
        assert!(
            Instant::now() < deadline,
            "the gateway did not become ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let traces = traces(plan, start);
    let (cpu0, _) = common::process::cpu_and_peak_rss(pid);
    let sent = rt.block_on(async {
        let p = Publisher::connect(&broker.url()).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut sent = 0u64;
        for s in 0..seconds as usize {
            tick.tick().await;
            for (i, tr) in traces.iter().enumerate() {
                let Some(f) = tr.get(s + 30) else { continue };
                let body = format!(
                    r#"{{"ts":{},"lat":{},"lon":{},"speed_kmh":{},"heading_deg":0,"passengers":{},"door_open":{},"route_id":"R1"}}"#,
                    chrono::Utc::now().timestamp_millis(),
                    f.lat,
                    f.lon,
                    f.speed_kmh,
                    f.passengers.unwrap_or(0),
                    f.door_open
                );
                p.publish(&format!("campus/district/bus/bus-{i}"), body, QoS::AtLeastOnce)
                    .await;
                sent += 1;
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_secs(2));
    let (cpu1, rss) = common::process::cpu_and_peak_rss(pid);
    gw.stop();
    ((cpu1 - cpu0) / sent as f64 * 1000.0 * 1000.0, rss, sent)
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let data = tempfile::tempdir().expect("temp dir");
    let text = config(data.path(), "mqtt://127.0.0.1:1", 1, true, "07:00");
    let cfg = campus_gateway::config::Config::from_toml(&text, Vec::new())
        .expect("config")
        .config;
    let plan = Plan::new(&cfg).expect("valid").expect("plan");
    println!("Machine: {}", common::process::machine());
    checker_alone(&plan);
    let (with, rss_with, n) = gateway(&plan, true, seconds);
    let (without, rss_without, _) = gateway(&plan, false, seconds);
    println!("## Through one gateway ({BUSES} buses, 1 fix/s each, {seconds} s, {n} fixes)");
    println!("| | CPU per 1,000 fixes | peak RSS |");
    println!("|---|---|---|");
    println!("| with the route checks | {with:.1} ms | {rss_with:.1} MB |");
    println!("| without (`[buses]` removed) | {without:.1} ms | {rss_without:.1} MB |");
    println!(
        "the checks: {:.1} ms CPU per 1,000 fixes, {:.1} KB per bus",
        with - without,
        (rss_with - rss_without) * 1024.0 / BUSES as f64
    );
}
