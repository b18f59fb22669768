//! A steady QoS 1 load of reference-feed messages, and counting it back.
//!
//! Message `n`: kind `KINDS[n % 5]`, device `<kind>-<(n / 5) % 20>`, time
//! `base_ts + n` ms, so every message is its own point (series + time) and
//! a redelivery rewrites the same point. While [`Load::set_doubled`] is on,
//! every 10th message (always a smoke detector) is first published with
//! stale values and then with its own: after any replay InfluxDB must hold the
//! second one, which proves that the per-series order of arrival was kept.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{feed, Influx1, Publisher, QoS};

pub const SITE: &str = "yazhong";
const DEVICES_PER_KIND: u64 = 20;

/// (topic, payload) of message `n`; `stale` gives other field values for the same point.
pub fn message(n: u64, base_ts: i64, stale: bool) -> (String, String) {
    let kind = feed::KINDS[(n % 5) as usize];
    let device = format!("{kind}-{}", (n / 5) % DEVICES_PER_KIND);
    feed::message(
        kind,
        SITE,
        &device,
        base_ts + n as i64,
        if stale { n + 7 } else { n },
    )
}

/// A field every point of `kind` carries, to count points with.
pub fn count_field(kind: &str) -> &'static str {
    match kind {
        "smoke" => "temp_c",
        "gate" => "person_count",
        "kitchen" => "duct_temp_c",
        "labcab" => "voc_ppm",
        _ => "speed_kmh",
    }
}

/// Distinct points in `db`, over the five kinds.
pub async fn points(influx: &Influx1, db: &str) -> u64 {
    let mut total = 0;
    for kind in feed::KINDS {
        total += influx.count_field(db, kind, count_field(kind)).await;
    }
    total
}

struct Shared {
    published: AtomicU64,
    stop: AtomicBool,
    doubled_on: AtomicBool,
    doubled: Mutex<Vec<u64>>,
}

/// A publisher task sending `rate` messages per second until stopped.
pub struct Load {
    shared: Arc<Shared>,
    base_ts: i64,
    task: JoinHandle<Publisher>,
}

impl Load {
    /// Starts publishing (QoS 1) at `rate` messages/s, paced every 10 ms.
    pub fn start(publisher: Publisher, rate: u64, base_ts: i64) -> Load {
        let shared = Arc::new(Shared {
            published: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            doubled_on: AtomicBool::new(false),
            doubled: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !s.stop.load(Ordering::SeqCst) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due && !s.stop.load(Ordering::SeqCst) {
                    if n % 10 == 0 && s.doubled_on.load(Ordering::SeqCst) {
                        let (t, p) = message(n, base_ts, true);
                        publisher.publish(&t, p, QoS::AtLeastOnce).await;
                        if let Ok(mut d) = s.doubled.lock() {
                            d.push(n);
                        }
                    }
                    let (t, p) = message(n, base_ts, false);
                    publisher.publish(&t, p, QoS::AtLeastOnce).await;
                    n += 1;
                    s.published.store(n, Ordering::SeqCst);
                }
            }
            publisher
        });
        Load {
            shared,
            base_ts,
            task,
        }
    }

    /// Messages published so far (distinct points).
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::SeqCst)
    }

    /// Publish every 10th message twice (stale first) from now on, or stop doing so.
    pub fn set_doubled(&self, on: bool) {
        self.shared.doubled_on.store(on, Ordering::SeqCst);
    }

    /// Stops, waits until the broker acknowledged everything; returns the count.
    pub async fn finish(self) -> (u64, Vec<u64>, Publisher) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let publisher = self.task.await.expect("load task");
        publisher.flush().await;
        let doubled = self
            .shared
            .doubled
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        (
            self.shared.published.load(Ordering::SeqCst),
            doubled,
            publisher,
        )
    }

    pub fn base_ts(&self) -> i64 {
        self.base_ts
    }
}

/// Checks that every doubled message holds its own (second) values in
/// InfluxDB, not the stale ones published just before it.
pub async fn assert_order_kept(influx: &Influx1, db: &str, doubled: &[u64], base_ts: i64) {
    let rows = influx
        .rows(db, "SELECT temp_c FROM smoke GROUP BY device")
        .await;
    let stored: std::collections::HashMap<(String, i64), f64> = rows
        .iter()
        .filter_map(|r| {
            Some((
                (
                    r.get("device")?.as_str()?.to_owned(),
                    r.get("time")?.as_i64()?,
                ),
                r.get("temp_c")?.as_f64()?,
            ))
        })
        .collect();
    let mut wrong = Vec::new();
    for &n in doubled {
        let device = format!("smoke-{}", (n / 5) % DEVICES_PER_KIND);
        let want = feed::payload("smoke", base_ts + n as i64, n)["temp_c"]
            .as_f64()
            .expect("temp_c");
        match stored.get(&(device.clone(), base_ts + n as i64)) {
            Some(v) if (*v - want).abs() < 1e-9 => {}
            other => wrong.push((n, device, other.copied(), want)),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} doubled points hold stale values (order of arrival lost), e.g. {:?}",
        wrong.len(),
        doubled.len(),
        &wrong[..wrong.len().min(5)]
    );
}
