//! Modbus polling benchmark: 200 simulated Modbus TCP devices (half kitchen
//! hoods, half chemical cabinets, on the reference maps) polled every second
//! by one gateway, readings written to a real InfluxDB 1.x.
//!
//! Run with `cargo bench --bench modbus` (release build). The devices are
//! tokio-modbus servers inside this process (the demo's simulator, values
//! changing every second); the gateway runs as its own process
//! (`campusgw run`), so its CPU and peak RSS are its own. After a warm-up,
//! `BENCH_SECONDS` (default 30) are measured: the achieved poll rate against
//! the configured one (from `campusgw_modbus_polls_total`), failures, the
//! slowest device's share, the gateway's CPU (from /proc/<pid>/stat) and
//! peak RSS (VmHWM), and the points InfluxDB holds afterwards.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use campus_gateway::config::Config;
use campus_gateway::demo::modbus::{serve, SimDevice};
use campus_gateway::reading::Kind;
use campus_gateway::sources::modbus::map::{Limits, ReadPlan};
use common::process::ChildGuard;
use common::{free_port, Influx1};
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 200;
const POLL_INTERVAL_S: f64 = 1.0;
const WARM_UP: Duration = Duration::from_secs(5);

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let influx = Influx1::start();
    rt.block_on(influx.create_database("bench"));
    let work = tempfile::tempdir().expect("temp dir");

    // The reference maps, as the example configuration ships them.
    let example_text = campus_gateway::demo::example_with_routes(work.path()).expect("routes");
    let example = Config::from_toml(&example_text, Vec::new())
        .expect("example config")
        .config;
    let plan = |name: &str, kind| {
        let map = &example.modbus.maps[name];
        ReadPlan::build(kind, &map.registers, Limits::default()).expect("reference map")
    };
    let kinds = [
        (
            Kind::Kitchen,
            "ref-kitchen-hood",
            plan("ref-kitchen-hood", Kind::Kitchen),
        ),
        (
            Kind::Labcab,
            "ref-chem-cabinet",
            plan("ref-chem-cabinet", Kind::Labcab),
        ),
    ];

    let stop = CancellationToken::new();
    let sims: Vec<(Kind, &str, SimDevice)> = rt.block_on(async {
        let mut sims = Vec::with_capacity(DEVICES);
        for i in 0..DEVICES {
            let (kind, map, plan) = &kinds[i % 2];
            let sim = serve(*kind, plan.clone(), i as u64, stop.child_token())
                .await
                .expect("simulated device");
            sims.push((*kind, *map, sim));
        }
        sims
    });

    let web_port = free_port();
    let config_path = work.path().join("bench.toml");
    let mut text = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nreconnect_max = \"60s\"\n[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"bench\"\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n[modbus]\npoll_interval = \"{POLL_INTERVAL_S}s\"\ntimeout = \"1s\"\n",
        work.path().join("data").display(),
        free_port(),
        influx.url()
    );
    // The maps, copied from the example by name.
    let example_text = campus_gateway::demo::EXAMPLE_CONFIG;
    for name in ["ref-kitchen-hood", "ref-chem-cabinet"] {
        let header = format!("[modbus.maps.{name}]");
        let start = example_text.find(&header).expect("map in the example");
        let end = example_text[start..].find("\n]\n").expect("end of map") + start + 3;
        text.push_str(&example_text[start..end]);
    }
    for (i, (kind, map, sim)) in sims.iter().enumerate() {
        let _ = write!(
            text,
            "[[modbus.devices]]\nid = \"{kind}-{i}\"\nkind = \"{kind}\"\nsite = \"bench\"\nbuilding = \"B{}\"\ntransport = \"tcp\"\naddress = \"{}\"\nmap = \"{map}\"\n",
            i % 10,
            sim.addr
        );
    }
    std::fs::write(&config_path, &text).expect("write config");

    let gw = start_gateway(&config_path);
    let pid = gw.id();
    let ready = wait_all_polled(web_port, Duration::from_secs(30));
    assert!(ready, "not every device was polled within 30 s");
    std::thread::sleep(WARM_UP);

    let (cpu0, _) = common::process::cpu_and_peak_rss(pid);
    let polls0 = poll_counts(web_port);
    let failures0 = failure_count(web_port);
    let requests0: u64 = sims.iter().map(|(_, _, s)| s.requests()).sum();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, rss_mb) = common::process::cpu_and_peak_rss(pid);
    let polls1 = poll_counts(web_port);
    let failures = failure_count(web_port) - failures0;
    let requests = sims.iter().map(|(_, _, s)| s.requests()).sum::<u64>() - requests0;

    let per_device: Vec<f64> = polls1
        .iter()
        .map(|(d, n)| {
            n - polls0
                .iter()
                .find(|(d0, _)| d0 == d)
                .map_or(0.0, |(_, n0)| *n0)
        })
        .collect();
    let total: f64 = per_device.iter().sum();
    let slowest = per_device.iter().copied().fold(f64::INFINITY, f64::min);
    let configured = DEVICES as f64 / POLL_INTERVAL_S;
    let achieved = total / elapsed;
    let cpu_pct = (cpu1 - cpu0) / elapsed * 100.0;
    let whole_run: f64 = poll_counts(web_port).iter().map(|(_, n)| n).sum();
    gw.stop();
    stop.cancel();

    // Every accepted poll is a point: count them in InfluxDB.
    let stored = rt.block_on(async {
        influx.count_field("bench", "kitchen", "duct_temp_c").await
            + influx.count_field("bench", "labcab", "voc_ppm").await
    });

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {}; {DEVICES} Modbus TCP devices (tokio-modbus servers in the benchmark process, half on the kitchen-hood map, half on the chemical-cabinet map: 2 requests per poll), poll interval {POLL_INTERVAL_S} s, {seconds} s measured after {} s warm-up, readings written to InfluxDB 1.6.7.\n",
        common::process::machine(),
        WARM_UP.as_secs()
    );
    let _ = writeln!(out, "| configured polls/s | achieved polls/s | slowest device | failed polls | requests answered | gateway CPU (% of one core) | peak RSS | polls / points in InfluxDB (whole run) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {configured:.0} | {achieved:.1} ({:.1}%) | {slowest:.0} polls in {elapsed:.0} s | {failures:.0} | {requests} | {cpu_pct:.1}% | {rss_mb:.1} MB | {whole_run:.0} / {stored} |",
        achieved / configured * 100.0
    );
    println!("\n{out}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-modbus.md");
    let _ = std::fs::write(&path, &out);
    eprintln!("written to {}", path.display());
    if achieved < 0.95 * configured {
        // A panic, not `process::exit`: unwinding stops the servers.
        panic!("the gateway polled below 95% of the configured rate");
    }
}

fn start_gateway(config: &std::path::Path) -> ChildGuard {
    ChildGuard::gateway(config, "warn,campus_gateway::sources::mqtt=error")
}

fn metrics(web_port: u16) -> String {
    common::http_sync(web_port, "GET", "/metrics", None, None)
        .map(|(_, text)| text)
        .unwrap_or_default()
}

/// (device, successful polls) for every device.
fn poll_counts(web_port: u16) -> Vec<(String, f64)> {
    metrics(web_port)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("campusgw_modbus_polls_total{device=\"")?;
            let (device, value) = rest.split_once("\"} ")?;
            Some((device.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn failure_count(web_port: u16) -> f64 {
    metrics(web_port)
        .lines()
        .filter(|l| l.starts_with("campusgw_modbus_poll_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_all_polled(web_port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let counts = poll_counts(web_port);
        if counts.len() == DEVICES && counts.iter().all(|(_, n)| *n > 0.0) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
