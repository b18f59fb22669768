//! Alarm latency benchmark: with 5,000 messages/s of reference feed in the
//! background, a smoke detector's `alarm = true` is published every 100 ms
//! (a new device each time, so each is a new alarm) and timed until it is
//! (a) on MQTT (`campusgw/…/alarm/…`, published only after the alarm store
//! committed it) and (b) on the event stream of each of 200 signed-in SSE
//! clients. Broker: mosquitto with `set_tcp_nodelay true` and
//! `max_inflight_messages 1000` (deploy/mosquitto-gateway.conf); the gateway is the
//! release binary as its own process, writing to InfluxDB 1.x.
//!
//! `cargo bench --bench alarms` (`BENCH_SECONDS`, default 20; `BENCH_SSE_CLIENTS`, default 200).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{feed, free_port, Influx1, Mosquitto};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const BACKGROUND_RATE: u64 = 5_000;
const DEVICES: usize = 1_000;

type Sent = Arc<Mutex<HashMap<String, Instant>>>;

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let clients: usize = std::env::var("BENCH_SSE_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The broker as deploy/mosquitto-gateway.conf sets it up: with acknowledge
    // after persist, mosquitto's default window of 20 unacknowledged messages
    // would queue the background load in front of every alarm.
    let broker = Mosquitto::builder()
        .max_queued_messages(0)
        .max_inflight_messages(1000)
        .start();
    let influx = Influx1::start();
    rt.block_on(influx.create_database("campus"));
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let web_port = free_port();

    let mut cfg = format!(
        "[gateway]\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\nclient_id = \"bench-alarms\"\n{}[web]\nlisten = \"127.0.0.1:{web_port}\"\n[alarms]\nflood_threshold = 0\n[[rules]]\nid = \"smoke-alarm\"\nseverity = \"critical\"\nkinds = [\"smoke\"]\nmessage = \"smoke at {{device}}\"\ncondition = {{ type = \"equals\", field = \"alarm\", value = true }}\n",
        data.display(),
        broker.url(),
        // BENCH_NO_INFLUX=1: readings are spooled but not written, to tell the database's share apart.
        if std::env::var("BENCH_NO_INFLUX").is_ok() {
            String::new()
        } else {
            format!("[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"campus\"\n", influx.url())
        }
    );
    for d in 0..DEVICES {
        cfg.push_str(&format!("[[devices]]\nid = \"smoke-{d}\"\nkind = \"smoke\"\nsite = \"bench\"\nbuilding = \"B{}\"\n", d % 10));
    }
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, cfg).expect("config");
    let mut add = Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args([
            "user",
            "add",
            "bench",
            "--role",
            "viewer",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    if let Some(mut stdin) = add.stdin.take() {
        use std::io::Write as _;
        let _ = stdin.write_all(b"bench-password-123\n");
    }
    let _ = add.wait();
    let mut gw = Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::http_sync(web_port, "GET", "/healthz", None, None)
        .is_ok_and(|(c, b)| c == 200 && !b.contains("subscribing"))
    {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (mqtt_lat, sse_lat, probes) = rt.block_on(run(&broker.url(), web_port, clients, seconds));
    let _ = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status();
    let _ = gw.wait();

    let report = |name: &str, mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let p = |q: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((v.len() - 1) as f64 * q) as usize]
            }
        };
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            p(0.5),
            p(0.99),
            p(0.999),
            v.last().copied().unwrap_or(f64::NAN)
        );
    };
    println!("\n{probes} alarms, {BACKGROUND_RATE} msg/s background from {DEVICES} devices, {clients} SSE clients, {seconds} s; latency from publish (ms):\n");
    println!("| delivered on | samples | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|");
    report("MQTT (after the store commit)", mqtt_lat);
    report(&format!("SSE, each of {clients} clients"), sse_lat);
}

async fn run(
    url: &str,
    web_port: u16,
    clients: usize,
    seconds: u64,
) -> (Vec<f64>, Vec<f64>, usize) {
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");

    // Sign in once; every SSE client uses the session.
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let resp = http
        .post(format!("http://127.0.0.1:{web_port}/api/login"))
        .json(&serde_json::json!({ "username": "bench", "password": "bench-password-123" }))
        .send()
        .await
        .expect("login");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned();

    let sse_lat = Arc::new(Mutex::new(Vec::new()));
    let mut streams = Vec::new();
    for _ in 0..clients {
        let (http, cookie, sent, lat) =
            (http.clone(), cookie.clone(), sent.clone(), sse_lat.clone());
        streams.push(tokio::spawn(async move {
            let Ok(mut resp) = http
                .get(format!("http://127.0.0.1:{web_port}/api/stream"))
                .header("Cookie", cookie)
                .send()
                .await
            else {
                return;
            };
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let ev: String = buf.drain(..end + 2).collect();
                    if ev.contains("event: alarm") && ev.contains("\"action\":\"raise\"") {
                        if let Some(dev) = ev
                            .split("\"device\":\"")
                            .nth(1)
                            .and_then(|r| r.split('"').next())
                        {
                            if let Some(t0) = sent.lock().expect("sent").get(dev) {
                                lat.lock()
                                    .expect("lat")
                                    .push(t0.elapsed().as_secs_f64() * 1000.0);
                            }
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Alarm watcher on MQTT.
    let mqtt_lat = Arc::new(Mutex::new(Vec::new()));
    let mut o = MqttOptions::new("bench-alarm-watch", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (sub, mut sub_events) = AsyncClient::new(o, 100);
    sub.subscribe("campusgw/+/alarm/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let (s2, l2) = (sent.clone(), mqtt_lat.clone());
    tokio::spawn(async move {
        while let Ok(ev) = sub_events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let t = p.topic.clone();
                let dev = t.split('/').nth(3).unwrap_or("").to_owned();
                if let Some(t0) = s2.lock().expect("sent").get(&dev) {
                    if String::from_utf8_lossy(&p.payload).contains("\"state\":\"unacked\"") {
                        l2.lock()
                            .expect("lat")
                            .push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
        }
    });

    // Background load and probes on separate connections.
    let mut o = MqttOptions::new("bench-background", "127.0.0.1", port);
    o.set_inflight(1000).set_request_channel_capacity(10_000);
    let (bg, mut bg_events) = AsyncClient::new(o, 10_000);
    tokio::spawn(async move { while bg_events.poll().await.is_ok() {} });
    let mut o = MqttOptions::new("bench-probe", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (probe, mut probe_events) = AsyncClient::new(o, 100);
    tokio::spawn(async move { while probe_events.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    let mut seq = 0u64;
    let mut probes = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * BACKGROUND_RATE as f64) as u64;
        while seq < due {
            let d = (seq as usize) % DEVICES;
            let (t, p) = feed::message(
                "smoke",
                "bench",
                &format!("smoke-{d}"),
                common::now_ms(),
                seq,
            );
            // The feed's own alarm flag recurs every 50 messages: keep the background quiet.
            let p = p.replace("\"alarm\":true", "\"alarm\":false");
            let _ = bg.try_publish(t, QoS::AtLeastOnce, false, p);
            seq += 1;
        }
        if start.elapsed().as_millis() as usize / 100 > probes {
            let dev = format!("probe-{probes}");
            let mut p = feed::payload("smoke", common::now_ms(), probes as u64);
            p["alarm"] = serde_json::json!(true);
            sent.lock()
                .expect("sent")
                .insert(dev.clone(), Instant::now());
            let _ = probe
                .publish(
                    format!("campus/bench/smoke/{dev}"),
                    QoS::AtLeastOnce,
                    false,
                    p.to_string(),
                )
                .await;
            probes += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in streams {
        s.abort();
    }
    let m = mqtt_lat.lock().expect("lat").clone();
    let s = sse_lat.lock().expect("lat").clone();
    (m, s, probes)
}
