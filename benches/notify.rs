//! Duty-alert benchmark, two parts, against the `campusgw` binary as its
//! own process and a real mosquitto:
//!
//! 1. **Latency**: with 5,000 messages/s of reference feed in the
//!    background, a smoke detector's `alarm = true` is published every
//!    500 ms (a new device each time, so each is a new alarm) and timed
//!    until this benchmark's own webhook receiver (axum, in this process,
//!    timing the arrival) has the first message for it: p50/p99/max.
//! 2. **Flood**: 1,000 distinct alarms at once against a channel limited to
//!    20 messages a minute: the gateway's resident memory is sampled
//!    throughout, and the outbox must drain (merged messages) in alarm
//!    order with every alarm's idempotency key at the receiver once.
//!
//! `cargo bench --bench notify` (`BENCH_SECONDS` for part 1, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gwproc::GatewayProcess;
use common::load::Load;
use common::{Mosquitto, Publisher, QoS};

const BACKGROUND_RATE: u64 = 5_000;

/// What the receiver got: each message's arrival and body.
#[derive(Default)]
struct Inbox {
    got: Vec<(Instant, serde_json::Value, String)>,
}

type Shared = Arc<Mutex<Inbox>>;

async fn receive(
    axum::extract::State(inbox): axum::extract::State<Shared>,
    headers: axum::http::HeaderMap,
    body: String,
) -> &'static str {
    let at = Instant::now();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json = serde_json::from_str(&body).unwrap_or_default();
    inbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .got
        .push((at, json, key));
    "{}"
}

async fn start_receiver(inbox: Shared) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind the receiver");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new()
        .route("/webhook", axum::routing::post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(inbox);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

fn config(gw: &GatewayProcess, broker: &str, receiver: u16, rate: Option<u32>) -> String {
    let rate = rate
        .map(|r| format!("rate_per_minute = {r}\n"))
        .unwrap_or_else(|| "rate_per_minute = 100000\n".into());
    format!(
        r#"[gateway]
data_dir = "{data}"
max_ts_past = "1d"
[mqtt]
url = "{broker}"
client_id = "gw-bench-notify-{pid}"
[alarms]
flood_threshold = 0
{rule}
[notify]
group_wait = "0s"
[[notify.people]]
id = "zhang"
name = "张伟"
[notify.teams.security]
members = ["zhang"]
[[notify.shifts]]
team = "security"
people = ["zhang"]
[notify.channels.hook]
type = "webhook"
url = "http://127.0.0.1:{receiver}/webhook"
{rate}[notify.policies.fire]
steps = [{{ after = "0s", notify = ["on_duty:security"], channels = ["hook"] }}]
[[notify.routes]]
policy = "fire"
"#,
        data = gw.data_dir().display(),
        pid = std::process::id(),
        rule = common::gateway::smoke_rule("smoke at {device}"),
    )
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn alarm_smoke(device: &str) -> (String, String) {
    let mut p = common::feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = serde_json::json!(true);
    (
        format!("campus/{}/smoke/{device}", common::load::SITE),
        p.to_string(),
    )
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(latency(seconds));
    rt.block_on(flood());
}

async fn latency(seconds: u64) {
    let broker = Mosquitto::builder().for_gateway().start();
    let inbox = Shared::default();
    let receiver = start_receiver(inbox.clone()).await;
    let mut gw = GatewayProcess::new();
    let cfg = config(&gw, &broker.url(), receiver, None);
    tokio::task::block_in_place(|| gw.start(&cfg));
    let load_started = Instant::now();
    let load = Load::start(
        Publisher::connect(&broker.url()).await,
        BACKGROUND_RATE,
        common::now_ms() - 3_600_000,
    );
    let probes = Publisher::connect(&broker.url()).await;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0;
    while Instant::now() < end {
        let device = format!("probe-{n}");
        let (topic, body) = alarm_smoke(&device);
        sent.insert(device, Instant::now());
        probes.publish(&topic, body, QoS::AtLeastOnce).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let published = load.published();
    let load_seconds = load_started.elapsed().as_secs_f64();
    let _ = load.finish().await;
    let mut lat: Vec<f64> = Vec::new();
    {
        let got = inbox.lock().unwrap_or_else(|e| e.into_inner());
        for (device, at) in &sent {
            let first = got
                .got
                .iter()
                .filter(|(_, j, _)| {
                    // The rule's message, then the place on the next line.
                    j["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!("smoke at {device}\n")))
                })
                .map(|(t, _, _)| *t)
                .min();
            if let Some(t) = first {
                lat.push(t.duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "latency: {} alarms ({} received) under {:.0} msg/s of background feed; raised → first message at the receiver: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sent.len(),
        lat.len(),
        published as f64 / load_seconds.max(1.0),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    tokio::task::block_in_place(|| gw.stop());
}

async fn flood() {
    const ALARMS: usize = 1_000;
    let broker = Mosquitto::builder().for_gateway().start();
    let inbox = Shared::default();
    let receiver = start_receiver(inbox.clone()).await;
    let mut gw = GatewayProcess::new();
    let cfg = config(&gw, &broker.url(), receiver, Some(20));
    tokio::task::block_in_place(|| gw.start(&cfg));
    let rss_before = tokio::task::block_in_place(|| gw.rss_mb());
    let publisher = Publisher::connect(&broker.url()).await;
    let started = Instant::now();
    for i in 0..ALARMS {
        let (topic, body) = alarm_smoke(&format!("flood-{i:04}"));
        publisher.publish(&topic, body, QoS::AtLeastOnce).await;
    }
    publisher.flush().await;
    let mut rss_max = rss_before;
    let keys_of = |inbox: &Shared| -> Vec<String> {
        inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .got
            .iter()
            .flat_map(|(_, _, k)| k.split('+').map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        rss_max = rss_max.max(tokio::task::block_in_place(|| gw.rss_mb()));
        let keys = keys_of(&inbox);
        let depth = tokio::task::block_in_place(|| gw.metric("campusgw_notify_outbox_depth"));
        if keys.len() >= ALARMS && depth == 0.0 {
            break;
        }
        if Instant::now() > deadline {
            println!(
                "flood: timed out with {} of {ALARMS} keys, outbox depth {depth}",
                keys.len()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = started.elapsed();
    let keys = keys_of(&inbox);
    let ids: Vec<i64> = keys
        .iter()
        .filter_map(|k| k.split(':').nth(1).and_then(|n| n.parse().ok()))
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    let in_order = ids.windows(2).all(|w| w[0] < w[1]);
    let messages = inbox.lock().unwrap_or_else(|e| e.into_inner()).got.len();
    println!(
        "flood: {ALARMS} alarms against 20 messages/min: {messages} messages, {} keys ({} distinct alarms), in order: {in_order}, drained in {:.1} s; RSS {rss_before:.1} MB before, max {rss_max:.1} MB",
        keys.len(),
        unique.len(),
        drained.as_secs_f64()
    );
    assert_eq!(unique.len(), ALARMS, "every alarm told once");
    assert_eq!(keys.len(), ALARMS, "none twice");
    assert!(in_order, "the outbox drains in order");
    tokio::task::block_in_place(|| gw.stop());
}
