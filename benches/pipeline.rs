//! End-to-end benchmark: reference-feed messages published through a real
//! mosquitto at fixed rates and at the highest rate the gateway sustains,
//! into a real InfluxDB 1.x, every point counted.
//!
//! Run with `cargo bench --bench pipeline` (release build). The gateway runs
//! as its own process (`campusgw run`) so its CPU and peak RSS are its own;
//! broker, database and load generator share the same machine.
//!
//! Per phase: a fresh database and gateway, `BENCH_SECONDS` (default 15) of
//! load from 10,000 devices, then wait until every point is in InfluxDB.
//! Reported: messages/s end to end (published → counted in InfluxDB), the
//! gateway's CPU (% of one core, and per 1,000 msg/s), its peak RSS, and the
//! lag from publish to point, read off the cumulative curves of published
//! messages and of `campusgw_points_written_total` (sampled every 100 ms:
//! finer than the lag, and light enough not to weigh on the gateway's CPU —
//! each scrape counts 10,000 devices' online state).
//!
//! The broker runs with `max_inflight_messages 1000`, as
//! `deploy/mosquitto-gateway.conf` recommends: the gateway acknowledges a
//! message only once it is fsynced in its spool, so the in-flight window
//! divided by that wait is the ceiling of QoS 1 throughput.
//!
//! `BENCH_DB=victoria` writes to VictoriaMetrics through the InfluxDB v2
//! write API instead: a database that costs far less CPU per point, which
//! leaves more of the two cores to the gateway and shows its own ceiling.
//!
//! The traffic shape: `BENCH_DEVICES` (10,000), `BENCH_CONNECTIONS` (4),
//! `BENCH_ALARM_FRACTION` (0: the share of messages over a rule's limit, each
//! an alarm raised and, at the device's next message, cleared) and
//! `BENCH_RULES` (0–5 threshold rules, `tests/common/campus.rs`);
//! `BENCH_SHAPE=campus` is issue 17's school: 500 devices over one connection,
//! 1 % alarm-worthy, five rules, rates 1,000 and 5,000 msg/s. `BENCH_CONTROL=1`
//! (on for `campus`) adds a `control` row per rate: the same load through the
//! broker alone to a plain QoS 1 subscriber (no gateway), so the broker's own
//! cost and lag are in the same run. `BENCH_IDLE=<seconds>` adds an `idle`
//! row: the gateway connected, no traffic.
//!
//! `BENCH_BROKER=embedded` runs the gateway as its own broker
//! (`[mqtt.embedded_broker]`, anonymous on loopback) and publishes to it
//! instead of to mosquitto: the same feed, and the gateway's CPU then
//! includes the broker's (the control rows still go through mosquitto).
//!
//! `BENCH_SOAK=1 cargo bench --bench pipeline` runs the soak instead:
//! `BENCH_SOAK_MINUTES` (60) at `BENCH_SOAK_RATE` (5,000) messages/s with
//! InfluxDB stopped for `BENCH_SOAK_OUTAGE_SECS` (60) every
//! `BENCH_SOAK_EVERY_SECS` (600); the gateway's RSS and backlog are sampled
//! every 10 s, and every point is counted at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::ChildGuard;
use common::{campus, feed, free_port, Influx1, Mosquitto, Victoria};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// The traffic: how many devices over how many connections, how much of it alarm-worthy.
struct Shape {
    devices: usize,
    connections: usize,
    /// One message in this many is alarm-worthy (0: none).
    alarm_period: u64,
    alarm_fraction: f64,
    /// How many of the five threshold rules the gateway has.
    rules: usize,
    /// `campus`: the default rates are issue 17's 1,000 and 5,000 msg/s.
    campus: bool,
}

impl Shape {
    fn from_env() -> Shape {
        let campus = std::env::var("BENCH_SHAPE").is_ok_and(|s| s == "campus");
        let (devices, connections, fraction, rules) = if campus {
            (500, 1, 0.01, 5)
        } else {
            (10_000, 4, 0.0, 0)
        };
        let fraction = std::env::var("BENCH_ALARM_FRACTION")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(fraction);
        Shape {
            devices: env_u64("BENCH_DEVICES", devices as u64) as usize,
            connections: env_u64("BENCH_CONNECTIONS", connections as u64).max(1) as usize,
            alarm_period: campus::period(fraction),
            alarm_fraction: fraction,
            rules: (env_u64("BENCH_RULES", rules as u64) as usize).min(5),
            campus,
        }
    }

    /// The reference feed as it is, the shape the earlier tables measured.
    fn plain(&self) -> bool {
        self.alarm_period == 0 && self.rules == 0
    }
}

static SHAPE: std::sync::OnceLock<Shape> = std::sync::OnceLock::new();

fn shape() -> &'static Shape {
    SHAPE.get_or_init(Shape::from_env)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Through the gateway.
    Gateway,
    /// Through the broker alone, to a plain subscriber.
    Control,
    /// The gateway with no traffic.
    Idle,
}

struct Phase {
    name: String,
    rate: Option<u64>,
    kind: Kind,
}

#[derive(Default)]
struct Outcome {
    published: u64,
    stored: u64,
    seconds: f64,
    msgs_per_s: f64,
    cpu_pct: f64,
    rss_mb: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    /// CPU (% of one core) of mosquitto, InfluxDB and the load generator (this process).
    others_pct: [f64; 3],
    /// Alarm transitions the gateway made (raised, cleared…).
    transitions: u64,
}

/// Where the gateway writes, fresh for every phase.
enum Database {
    /// InfluxDB 1.6.7, v1 API, one database per phase.
    Influx(Influx1),
    /// VictoriaMetrics, v2 write API, one server per phase (it has no
    /// databases to keep phases apart), started by `prepare`.
    Victoria(Option<Victoria>),
}

/// The one always-present field of each kind: counting it counts the points.
const COUNTED: [(&str, &str); 5] = [
    ("smoke", "temp_c"),
    ("gate", "person_count"),
    ("kitchen", "duct_temp_c"),
    ("labcab", "voc_ppm"),
    ("bus", "speed_kmh"),
];

impl Database {
    fn start() -> Database {
        match std::env::var("BENCH_DB").as_deref() {
            Ok("victoria") => Database::Victoria(None),
            Ok("influx") | Err(_) => Database::Influx(Influx1::start()),
            Ok(other) => panic!("BENCH_DB={other}: use influx (the default) or victoria"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Database::Influx(_) => "InfluxDB",
            Database::Victoria(_) => "VictoriaMetrics",
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Database::Influx(_) => "InfluxDB 1.6.7 (v1 API)",
            Database::Victoria(_) => "VictoriaMetrics (InfluxDB v2 write API)",
        }
    }

    /// An empty database for phase `db`, and the gateway's `[influx]` table for it.
    async fn prepare(&mut self, db: &str) -> String {
        match self {
            Database::Influx(influx) => {
                influx.create_database(db).await;
                v1_sink(influx, db)
            }
            Database::Victoria(server) => {
                // The previous phase's server stops as it is replaced.
                let vm = server.insert(Victoria::start());
                format!(
                    "[influx]\nurl = \"{}\"\napi = \"v2\"\norg = \"bench\"\nbucket = \"{db}\"\ntoken = \"unused-by-victoria\"\n",
                    vm.url()
                )
            }
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Database::Influx(influx) => influx.pid(),
            Database::Victoria(vm) => vm.as_ref().and_then(Victoria::pid),
        }
        .unwrap_or(0)
    }

    /// The points of phase `db` the database holds.
    async fn count(&self, db: &str) -> u64 {
        let mut n = 0;
        for (kind, field) in COUNTED {
            n += match self {
                Database::Influx(influx) => influx.count_field(db, kind, field).await,
                Database::Victoria(vm) => {
                    vm.as_ref()
                        .expect("prepared")
                        .count_samples(&format!("{{__name__=\"{kind}_{field}\"}}"))
                        .await
                }
            };
        }
        n
    }
}

/// The gateway's `[influx]` table for database `db` of `influx`.
fn v1_sink(influx: &Influx1, db: &str) -> String {
    format!(
        "[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"{db}\"\n",
        influx.url()
    )
}

/// The benchmark's own runtime: two workers, like the machine's cores.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("BENCH_SOAK").is_ok_and(|v| v == "1") {
        soak();
        return;
    }
    let seconds = env_u64("BENCH_SECONDS", 15);
    let shape = shape();
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .ok()
        .map(|s| s.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if shape.campus {
                vec![1_000, 5_000]
            } else {
                vec![1_000, 5_000, 10_000, 20_000, 40_000]
            }
        });
    let control = std::env::var("BENCH_CONTROL").map_or(shape.campus, |v| v == "1");
    let embedded = std::env::var("BENCH_BROKER").is_ok_and(|v| v == "embedded");
    let idle = env_u64("BENCH_IDLE", 0);
    let rt = runtime();
    let broker = Mosquitto::builder().for_gateway().start();
    let mut database = Database::start();
    let work = tempfile::tempdir().expect("temp dir");
    let config_path = work.path().join("bench.toml");

    let mut phases: Vec<Phase> = Vec::new();
    if idle > 0 {
        phases.push(Phase {
            name: "idle".into(),
            rate: Some(0),
            kind: Kind::Idle,
        });
    }
    for r in &rates {
        if control {
            phases.push(Phase {
                name: format!("control {r} msg/s"),
                rate: Some(*r),
                kind: Kind::Control,
            });
        }
        phases.push(Phase {
            name: format!("{r} msg/s"),
            rate: Some(*r),
            kind: Kind::Gateway,
        });
    }
    // The campus shape is about a school's own rates, not the ceiling.
    if !shape.campus || std::env::var("BENCH_MAX").is_ok_and(|v| v == "1") {
        phases.push(Phase {
            name: "max".into(),
            rate: None,
            kind: Kind::Gateway,
        });
    }

    let mut rows = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        if phase.kind == Kind::Control {
            let outcome = rt.block_on(run_control(
                &broker.url(),
                broker.pid().unwrap_or(0),
                phase.rate,
                seconds,
            ));
            eprintln!(
                "{:>20}: {:>8.0} msg/s to the subscriber, mosquitto CPU {:.1}%, lag p50 {:.0} ms p99 {:.0} ms",
                phase.name, outcome.msgs_per_s, outcome.others_pct[0], outcome.lag_p50_ms, outcome.lag_p99_ms
            );
            rows.push((phase, outcome));
            continue;
        }
        let db = format!("bench{i}");
        let sink = rt.block_on(database.prepare(&db));
        let web_port = free_port();
        // The gateway's own broker: devices publish to it, mosquitto idles.
        let (url, mqtt_section) = if embedded {
            let port = free_port();
            (
                format!("mqtt://127.0.0.1:{port}"),
                format!("[mqtt.embedded_broker]\nlisten = \"127.0.0.1:{port}\"\nallow_anonymous = true\nmax_publish_rate = 1000000\n"),
            )
        } else {
            (broker.url(), format!("url = \"{}\"\n", broker.url()))
        };
        std::fs::write(
            &config_path,
            config(&mqtt_section, &sink, &db, web_port, work.path()),
        )
        .expect("write config");
        let gw = start_gateway(&config_path, web_port);
        let pid = gw.id();
        if phase.kind == Kind::Idle {
            // Past the start-up's own work (devices loaded, trims) first.
            std::thread::sleep(Duration::from_secs(5));
            let (cpu0, _) = common::process::cpu_and_peak_rss(pid);
            let t0 = Instant::now();
            std::thread::sleep(Duration::from_secs(idle));
            let (cpu1, rss) = common::process::cpu_and_peak_rss(pid);
            gw.stop();
            let outcome = Outcome {
                seconds: t0.elapsed().as_secs_f64(),
                cpu_pct: (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0,
                rss_mb: rss,
                ..Outcome::default()
            };
            eprintln!("idle: gateway CPU {:.3}% over {idle} s", outcome.cpu_pct);
            rows.push((phase, outcome));
            continue;
        }
        let outcome = rt.block_on(run_phase(
            &url,
            &database,
            &db,
            web_port,
            Procs {
                gateway: pid,
                broker: if embedded {
                    0
                } else {
                    broker.pid().unwrap_or(0)
                },
                database: database.pid(),
            },
            phase.rate,
            seconds,
        ));
        gw.stop();
        eprintln!(
            "{:>12}: {:>8.0} msg/s end to end over {:.1} s, gateway CPU {:>5.1}% of a core, peak RSS {:>5.1} MB, lag p50 {:.0} ms p99 {:.0} ms, {} alarm transitions",
            phase.name, outcome.msgs_per_s, outcome.seconds, outcome.cpu_pct, outcome.rss_mb, outcome.lag_p50_ms, outcome.lag_p99_ms, outcome.transitions
        );
        rows.push((phase, outcome));
    }

    let mut out = String::new();
    let via = if embedded {
        "the gateway's built-in broker (its CPU is in the gateway's)"
    } else {
        "mosquitto `set_tcp_nodelay true` and `max_inflight_messages 1000`"
    };
    let _ = writeln!(out, "Machine: {}; load average at the end {}; {} devices, {} publisher connections, {:.1} % of messages alarm-worthy, {} threshold rules, {seconds} s per phase, QoS 1, {via}, {}, gateway defaults (batch 5,000 / 1 s, spool with fsync, `spool_sync_interval` 2 ms).\n", common::process::machine(), loadavg(), shape.devices, shape.connections, shape.alarm_fraction * 100.0, shape.rules, database.describe());
    let db_name = database.name();
    let _ = writeln!(out, "| offered | published | in {db_name} | end-to-end msg/s | gateway CPU (% of one core) | CPU per 1,000 msg/s | µs CPU per message | peak RSS | lag p50 / p99 / max | mosquitto / {db_name} / generator CPU |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for (phase, o) in &rows {
        let per_k = if o.msgs_per_s > 0.0 {
            o.cpu_pct / (o.msgs_per_s / 1000.0)
        } else {
            0.0
        };
        if phase.kind == Kind::Control {
            let _ = writeln!(
                out,
                "| {} | {} | {} (to the subscriber) | {:.0} | — | — | — | — | {:.0} / {:.0} / {:.0} ms | {:.0}% / — / {:.0}% |",
                phase.name, o.published, o.stored, o.msgs_per_s, o.lag_p50_ms, o.lag_p99_ms, o.lag_max_ms, o.others_pct[0], o.others_pct[2]
            );
            continue;
        }
        if phase.kind == Kind::Idle {
            let _ = writeln!(
                out,
                "| idle ({:.0} s) | 0 | 0 | 0 | {:.3}% | — | — | {:.1} MB | — | — |",
                o.seconds, o.cpu_pct, o.rss_mb
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1}% | {:.2}% | {:.0} | {:.1} MB | {:.0} / {:.0} / {:.0} ms | {:.0}% / {:.0}% / {:.0}% |",
            phase.name,
            o.published,
            o.stored,
            o.msgs_per_s,
            o.cpu_pct,
            per_k,
            per_k * 10.0,
            o.rss_mb,
            o.lag_p50_ms,
            o.lag_p99_ms,
            o.lag_max_ms,
            o.others_pct[0],
            o.others_pct[1],
            o.others_pct[2]
        );
    }
    println!("\n{out}");
    let file = match (shape.campus, embedded) {
        (true, false) => "target/bench-pipeline-campus.md",
        (true, true) => "target/bench-pipeline-campus-embedded.md",
        (false, false) => "target/bench-pipeline.md",
        (false, true) => "target/bench-pipeline-embedded.md",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let _ = std::fs::write(&path, &out);
    eprintln!("written to {}", path.display());
    let lost: u64 = rows
        .iter()
        .map(|(_, o)| o.published.saturating_sub(o.stored))
        .sum();
    // A panic, not `process::exit`: unwinding stops the servers.
    assert!(lost == 0, "LOST {lost} messages");
}

/// The gateway's configuration, with the 10,000 devices in a `devices_file`
/// (written next to it) as a school with that many would declare them.
/// `mqtt` is the `[mqtt]` section's own lines (the broker's URL, or the
/// built-in broker's table).
fn config(mqtt: &str, sink: &str, db: &str, web_port: u16, dir: &std::path::Path) -> String {
    let mut csv = String::from("id,kind,site,building,floor,room\n");
    for d in 0..shape().devices {
        let kind = feed::KINDS[d % 5];
        let _ = writeln!(
            csv,
            "{kind}-{d},{kind},bench,B{},{},{}",
            d % 20,
            d % 6,
            d % 400
        );
    }
    let devices = dir.join("devices.csv");
    std::fs::write(&devices, csv).expect("write the devices file");
    format!(
        "devices_file = \"{}\"\n[gateway]\ndata_dir = \"{}\"\nmax_ts_past = \"1d\"\n[mqtt]\nclient_id = \"bench-gw-{db}\"\nclean_session = true\n{mqtt}{sink}[web]\nlisten = \"127.0.0.1:{web_port}\"\n{}",
        devices.display(),
        dir.join(format!("data-{db}")).display(),
        campus::rules(shape().rules)
    )
}

fn start_gateway(config: &std::path::Path, web_port: u16) -> ChildGuard {
    let child = ChildGuard::gateway(config, "warn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, body)) = common::http_sync(web_port, "GET", "/healthz", None, None) {
            // Subscribed: without a session /healthz shows states only.
            if body.contains("\"mqtt\":{\"status\":\"ok\"}") {
                return child;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the gateway did not become ready");
}

/// Readings written to the database: the points written less the alarm
/// transitions, which are points too (measurement `alarm`).
fn points_written(web_port: u16) -> u64 {
    let text = common::http_sync(web_port, "GET", "/metrics", None, None)
        .map(|(_, t)| t)
        .unwrap_or_default();
    let written = series_sum(&text, "campusgw_points_written_total");
    written.saturating_sub(series_sum(&text, "campusgw_alarm_transitions_total"))
}

/// The sum of every sample of `name` (all its label sets) in `text`.
fn series_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|r| r.starts_with(' ') || r.starts_with('{'))
        .filter_map(|r| r.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The processes whose CPU a phase measures.
struct Procs {
    gateway: u32,
    broker: u32,
    database: u32,
}

async fn run_phase(
    url: &str,
    database: &Database,
    db: &str,
    web_port: u16,
    procs: Procs,
    rate: Option<u64>,
    seconds: u64,
) -> Outcome {
    let pid = procs.gateway;
    // The load generator is this process.
    let others = [procs.broker, procs.database, std::process::id()];
    let published = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let (cpu0, _) = common::process::cpu_and_peak_rss(pid);
    let others0 = others.map(|p| common::process::cpu_and_peak_rss(p).0);
    let start = Instant::now();

    // Cumulative curves for the lag: (elapsed ms, count).
    let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let published = published.clone();
        let stop = sampler_stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut pub_curve = Vec::new();
            let mut written_curve = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = start.elapsed().as_secs_f64() * 1000.0;
                pub_curve.push((t, published.load(Ordering::Relaxed)));
                written_curve.push((
                    start.elapsed().as_secs_f64() * 1000.0,
                    points_written(web_port),
                ));
                std::thread::sleep(Duration::from_millis(100));
            }
            (pub_curve, written_curve)
        })
    };

    let connections = shape().connections;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let published = published.clone();
        let acked = acked.clone();
        let url = url.to_owned();
        let per_conn_rate = rate.map(|r| r as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            publish_load(
                &url,
                c,
                per_conn_rate,
                Duration::from_secs(seconds),
                published,
                acked,
            )
            .await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let total = published.load(Ordering::Relaxed);

    // Drain: wait until InfluxDB holds every point (or stops growing for 30 s).
    let mut stored = 0;
    let mut last_change = Instant::now();
    while stored < total && last_change.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let w = points_written(web_port);
        if w != stored {
            stored = w;
            last_change = Instant::now();
        }
    }
    let end = start.elapsed().as_secs_f64();
    let (cpu1, rss) = common::process::cpu_and_peak_rss(pid);
    let transitions = common::http_sync(web_port, "GET", "/metrics", None, None)
        .map_or(0, |(_, t)| {
            series_sum(&t, "campusgw_alarm_transitions_total")
        });
    let mut others_pct = [0.0; 3];
    for (i, p) in others.iter().enumerate() {
        others_pct[i] = (common::process::cpu_and_peak_rss(*p).0 - others0[i]) / end * 100.0;
    }
    sampler_stop.store(true, Ordering::Relaxed);
    let (pub_curve, written_curve) = sampler.await.expect("sampler");

    // Count what the database really has. VictoriaMetrics makes new series
    // searchable a little after it acknowledged them: count until the count
    // is complete or stops changing.
    let mut in_db = database.count(db).await;
    let mut unchanged = 0;
    while in_db < total && unchanged < 5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = database.count(db).await;
        unchanged = if now == in_db { unchanged + 1 } else { 0 };
        in_db = now;
    }

    if in_db < total {
        // Say where they went: the gateway's own counts of what it refused or dropped.
        if let Ok((_, text)) = common::http_sync(web_port, "GET", "/metrics", None, None) {
            for l in text.lines().filter(|l| {
                !l.starts_with('#')
                    && (l.contains("rejected")
                        || l.contains("dropped")
                        || l.contains("points_written"))
            }) {
                eprintln!("  {l}");
            }
        }
    }
    let (lag_p50_ms, lag_p99_ms, lag_max_ms, t_last) =
        lag_of(&pub_curve, &written_curve, in_db, end);
    Outcome {
        published: total,
        stored: in_db,
        seconds: end,
        msgs_per_s: in_db as f64 / t_last,
        cpu_pct: (cpu1 - cpu0) / end * 100.0,
        rss_mb: rss,
        lag_p50_ms,
        lag_p99_ms,
        lag_max_ms,
        others_pct,
        transitions,
    }
}

/// Lag p50 / p99 / max (ms) of the `done` curve behind the `published`
/// curve (for each publish sample, how long until that many were done),
/// and the time (s) the last of `count` was done (`end` if never).
fn lag_of(
    published: &[(f64, u64)],
    done: &[(f64, u64)],
    count: u64,
    end: f64,
) -> (f64, f64, f64, f64) {
    let mut lags: Vec<f64> = published
        .iter()
        .filter(|(_, p)| *p > 0 && *p <= count)
        .filter_map(|(t_p, p)| {
            done.iter()
                .find(|(_, w)| w >= p)
                .map(|(t_w, _)| (t_w - t_p).max(0.0))
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    // Throughput up to the moment the last point was done.
    let t_last = done
        .iter()
        .find(|(_, w)| *w >= count)
        .map_or(end * 1000.0, |(t, _)| *t)
        / 1000.0;
    let pct = |p: f64| {
        if lags.is_empty() {
            0.0
        } else {
            lags[((lags.len() - 1) as f64 * p) as usize]
        }
    };
    (
        pct(0.5),
        pct(0.99),
        lags.last().copied().unwrap_or(0.0),
        t_last,
    )
}

/// The control: the same load through the broker alone, to one plain QoS 1
/// subscriber (in this process, so its CPU is in the generator's column).
/// `stored` is what the subscriber received; the lag is publish → receipt,
/// read off the same 100-ms curves as the gateway's rows.
async fn run_control(url: &str, broker: u32, rate: Option<u64>, seconds: u64) -> Outcome {
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("broker port");
    let received = Arc::new(AtomicU64::new(0));
    let mut opts = MqttOptions::new(
        format!("bench-control-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true);
    let (sub, mut events) = AsyncClient::new(opts, 100);
    sub.subscribe("campus/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let pump = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("control subscriber: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), subscribed).await;
    let others = [broker, 0, std::process::id()];
    let others0 = others.map(|p| common::process::cpu_and_peak_rss(p).0);
    let published = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (published, received, stop) = (published.clone(), received.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let (mut p, mut r) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let t = start.elapsed().as_secs_f64() * 1000.0;
                p.push((t, published.load(Ordering::Relaxed)));
                r.push((t, received.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(100));
            }
            (p, r)
        })
    };
    let connections = shape().connections;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (published, acked, url) = (published.clone(), acked.clone(), url.to_owned());
        let per_conn_rate = rate.map(|r| r as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            publish_load(
                &url,
                c,
                per_conn_rate,
                Duration::from_secs(seconds),
                published,
                acked,
            )
            .await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let total = published.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One more sample past the last receipt.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let end = start.elapsed().as_secs_f64();
    let mut others_pct = [0.0; 3];
    for (i, p) in others.iter().enumerate() {
        if *p != 0 {
            others_pct[i] = (common::process::cpu_and_peak_rss(*p).0 - others0[i]) / end * 100.0;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (pub_curve, recv_curve) = sampler.await.expect("sampler");
    let got = received.load(Ordering::Relaxed);
    let _ = sub.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    let (lag_p50_ms, lag_p99_ms, lag_max_ms, t_last) = lag_of(&pub_curve, &recv_curve, got, end);
    Outcome {
        published: total,
        // The control's "stored" is "received": counted as lost when short.
        stored: got,
        seconds: end,
        msgs_per_s: got as f64 / t_last,
        lag_p50_ms,
        lag_p99_ms,
        lag_max_ms,
        others_pct,
        ..Outcome::default()
    }
}

/// The 1-, 5- and 15-minute load averages: the others' work on this machine.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One publisher connection: devices `c, c+CONNECTIONS, …` in turn, at
/// `rate` messages/s (paced every 10 ms) or as fast as QoS 1 allows.
async fn publish_load(
    url: &str,
    c: usize,
    rate: Option<f64>,
    duration: Duration,
    published: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
) {
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("broker port");
    let mut opts = MqttOptions::new(
        format!("bench-load-{c}-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_inflight(1000)
        .set_keep_alive(Duration::from_secs(30))
        .set_request_channel_capacity(10_000);
    let (client, mut events) = AsyncClient::new(opts, 10_000);
    let mine = acked.clone();
    let sent_here = Arc::new(AtomicU64::new(0));
    let acked_here = Arc::new(AtomicU64::new(0));
    let acked_here2 = acked_here.clone();
    let pump = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    mine.fetch_add(1, Ordering::Relaxed);
                    acked_here2.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("load generator connection {c}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let start = Instant::now();
    let mut seq: u64 = 0;
    let shape = shape();
    let devices: Vec<usize> = (c..shape.devices).step_by(shape.connections).collect();
    // Each device's last timestamp: a burst after a stall (the machine is
    // shared) may reach a device twice in one millisecond, and InfluxDB
    // keeps one point per series and time.
    let mut last_ts = vec![0i64; devices.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < duration {
        let n = match rate {
            Some(r) => {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * r) as u64;
                due.saturating_sub(seq)
            }
            None => 200,
        };
        for _ in 0..n {
            let i = (seq as usize) % devices.len();
            let d = devices[i];
            let kind = feed::KINDS[d % 5];
            let ts = common::now_ms().max(last_ts[i] + 1);
            last_ts[i] = ts;
            let (topic, payload) = if shape.plain() {
                feed::message(kind, "bench", &format!("{kind}-{d}"), ts, seq)
            } else {
                let alarm = campus::alarm_worthy(seq, shape.alarm_period);
                (
                    feed::topic("bench", kind, &format!("{kind}-{d}")),
                    campus::payload(kind, ts, seq, alarm),
                )
            };
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
            seq += 1;
            sent_here.fetch_add(1, Ordering::Relaxed);
            published.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Wait for the broker to acknowledge everything this connection sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_here.load(Ordering::Relaxed) < sent_here.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
}

/// One series' value from the gateway's `/metrics` (0 when absent or unreachable).
fn metric(web_port: u16, series: &str) -> f64 {
    common::http_sync(web_port, "GET", "/metrics", None, None)
        .ok()
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(series)
                        .filter(|r| r.starts_with(' '))
                        .map(|r| r.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// The soak: a long steady load with regular InfluxDB outages.
fn soak() {
    let minutes = env_u64("BENCH_SOAK_MINUTES", 60);
    let rate = env_u64("BENCH_SOAK_RATE", 5_000);
    let every = env_u64("BENCH_SOAK_EVERY_SECS", 600);
    let outage = env_u64("BENCH_SOAK_OUTAGE_SECS", 60);
    let rt = runtime();
    let broker = Mosquitto::builder().for_gateway().start();
    let mut influx = Influx1::start();
    let work = tempfile::tempdir().expect("temp dir");
    let config_path = work.path().join("soak.toml");
    let db = "soak";
    rt.block_on(influx.create_database(db));
    let web_port = free_port();
    std::fs::write(
        &config_path,
        config(
            &broker.url(),
            &v1_sink(&influx, db),
            db,
            web_port,
            work.path(),
        ),
    )
    .expect("write config");
    let gw = start_gateway(&config_path, web_port);
    let pid = gw.id();
    let published = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs(minutes * 60);
    let mut tasks = Vec::new();
    let connections = shape().connections;
    for c in 0..connections {
        let (published, acked, url) = (published.clone(), acked.clone(), broker.url());
        let r = rate as f64 / connections as f64;
        tasks.push(rt.spawn(async move {
            publish_load(&url, c, Some(r), duration, published, acked).await
        }));
    }
    let start = Instant::now();
    let mut samples: Vec<(u64, f64, f64, bool)> = Vec::new();
    let mut down_since: Option<Instant> = None;
    let mut outages = 0;
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(10));
        let t = start.elapsed().as_secs();
        match down_since {
            None if t >= every * (outages + 1) => {
                influx.stop();
                down_since = Some(Instant::now());
                outages += 1;
                eprintln!("{t:>5} s: InfluxDB stopped (outage {outages})");
            }
            Some(d) if d.elapsed() >= Duration::from_secs(outage) => {
                influx.start_again();
                down_since = None;
                eprintln!("{t:>5} s: InfluxDB back");
            }
            _ => {}
        }
        let rss = common::process::rss_mb(pid);
        let backlog = metric(web_port, "campusgw_spool_points");
        eprintln!(
            "{t:>5} s: RSS {rss:.1} MB, backlog {backlog} points, published {}",
            published.load(Ordering::Relaxed)
        );
        samples.push((t, rss, backlog, down_since.is_some()));
    }
    if down_since.is_some() {
        influx.start_again();
    }
    for t in tasks {
        let _ = rt.block_on(t);
    }
    let total = published.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = COUNTED
            .iter()
            .map(|(k, f)| rt.block_on(influx.count_field(db, k, f)))
            .sum::<u64>();
        if stored >= total {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let (cpu, hwm) = common::process::cpu_and_peak_rss(pid);
    gw.stop();
    let warm: Vec<f64> = samples.iter().filter(|s| s.0 >= 120).map(|s| s.1).collect();
    let (lo, hi) = warm
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), r| (a.min(*r), b.max(*r)));
    let peak_backlog = samples.iter().map(|s| s.2).fold(0.0, f64::max);
    let mut out = String::new();
    let _ = writeln!(out, "Soak: {minutes} min at {rate} msg/s (QoS 1, 10,000 devices), InfluxDB stopped {outage} s every {every} s ({outages} outages). Machine: {}.\n", common::process::machine());
    let _ = writeln!(out, "| published | in InfluxDB | lost | gateway RSS after warm-up (min / max) | peak RSS | peak backlog | gateway CPU |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {total} | {stored} | {} | {lo:.1} / {hi:.1} MB | {hwm:.1} MB | {peak_backlog:.0} points | {:.1}% of a core |",
        total.saturating_sub(stored),
        cpu / start.elapsed().as_secs_f64() * 100.0
    );
    let _ = writeln!(
        out,
        "\nRSS every minute (MB): {}",
        samples
            .iter()
            .filter(|s| s.0 % 60 < 10)
            .map(|s| format!("{:.0}", s.1))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("\n{out}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-soak.md");
    let _ = std::fs::write(&path, &out);
    eprintln!("written to {}", path.display());
    if stored < total {
        panic!("LOST {} messages", total - stored);
    }
}
