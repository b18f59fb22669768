//! A simulated campus publishing the reference feed (FEED.md): every declared
//! device reports at its kind's pace with plausible, slowly varying values,
//! buses drive a loop round the school, and every ten minutes something goes
//! wrong that the example rules catch (a duct overheating, a gate forced, a
//! detector falling silent, a cabinet opened with one card) besides a
//! garbled payload now and then for the rejection counters. The buses of
//! `[[buses.vehicles]]` drive their routes of the route file to the demo's
//! timetable (every 20 minutes); bus-07 now and then speeds in the gate
//! zone, skips a stop or takes a detour.

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::DeviceConfig;
use crate::reading::Kind;

/// The topic of a device in the reference layout.
pub fn topic(site: &str, kind: Kind, device: &str) -> String {
    format!("campus/{site}/{}/{device}", kind.as_str())
}

/// A reference-feed payload for the `seq`-th report of a device: every field
/// of its kind, values varying deterministically with `seq` and `salt`.
pub fn payload(kind: Kind, seq: u64, salt: u64, ts_ms: i64) -> String {
    payload_value(kind, seq, salt, ts_ms).to_string()
}

/// The first device of a kind: the one the scenarios happen to.
fn first_of(devices: &[DeviceConfig], kind: Kind) -> Option<usize> {
    devices.iter().position(|d| d.kind == kind)
}

/// Every ten minutes, the things the example rules catch happen to the first
/// device of a kind: a canteen duct overheats (60–150 s), a gate is forced
/// (200 s); a detector falls silent (120 s, in `run`); a chemical cabinet
/// is opened with one card (300 s, in `run`).
fn scenario(kind: Kind, first: bool, phase: u64, body: &mut serde_json::Value) {
    if !first {
        return;
    }
    match kind {
        Kind::Kitchen if (60..150).contains(&phase) => {
            body["duct_temp_c"] = json!(round2(60.0 + (phase - 60) as f64 * 0.6));
        }
        Kind::Gate if (200..215).contains(&phase) => {
            body["event"] = json!("forced_open");
            body["door_open"] = json!(true);
        }
        _ => {}
    }
}

/// The payload as JSON, for the scenarios to change.
pub fn payload_value(kind: Kind, seq: u64, salt: u64, ts_ms: i64) -> serde_json::Value {
    let phase = (seq as f64 / 20.0) + salt as f64;
    let wave = phase.sin();
    let v = match kind {
        Kind::Smoke => json!({
            "ts": ts_ms,
            "obscuration_pct_m": round2(0.3 + 0.1 * wave.abs()),
            "temp_c": round2(23.0 + 1.5 * wave),
            "alarm": false,
            "fault": false,
            "battery_pct": 95 - ((seq / 500 + salt) % 80) as i64,
            "tamper": false,
        }),
        Kind::Gate => {
            let events = [
                "access_granted",
                "closed",
                "access_granted",
                "closed",
                "access_denied",
            ];
            let event = events[((seq + salt) % events.len() as u64) as usize];
            json!({
                "ts": ts_ms,
                "door_open": event == "access_granted",
                "event": event,
                "card_id": format!("C{:05}", (seq * 7 + salt) % 40_000),
                "person_count": ((seq + salt) % 3) as i64,
            })
        }
        Kind::Kitchen => json!({
            "ts": ts_ms,
            "duct_temp_c": round2(55.0 + 8.0 * wave),
            "fan_on": true,
            "fan_current_a": round2(3.1 + 0.2 * wave),
            "grease_mg_m3": round2(1.0 + 0.3 * wave.abs()),
            "co_ppm": round2(4.0 + wave.abs()),
            "gas_lel_pct": 0.0,
        }),
        Kind::Labcab => json!({
            "ts": ts_ms,
            "voc_ppm": round2(0.3 + 0.05 * wave),
            "temp_c": round2(21.0 + 0.5 * wave),
            "humidity_pct": round2(44.0 + 3.0 * wave),
            "door_open": false,
            "locked": true,
            "exhaust_fan_on": true,
        }),
        Kind::Bus => {
            let (lat, lon, heading) = route_position(seq + salt * 37);
            json!({
                "ts": ts_ms,
                "lat": lat,
                "lon": lon,
                "speed_kmh": round2(30.0 + 10.0 * wave.abs()),
                "heading_deg": heading,
                "passengers": 20 + ((seq + salt) % 15) as i64,
                "door_open": false,
                "route_id": if salt % 2 == 0 { "R1" } else { "R2" },
            })
        }
    };
    v
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A loop round the school near the reference feed's coordinates.
const ROUTE: [(f64, f64); 6] = [
    (29.9812, 103.0011),
    (29.9850, 103.0060),
    (29.9900, 103.0075),
    (29.9935, 103.0020),
    (29.9890, 102.9960),
    (29.9835, 102.9970),
];

/// Position and heading after `step` reports, 40 steps per leg.
fn route_position(step: u64) -> (f64, f64, f64) {
    const STEPS: u64 = 40;
    let leg = ((step / STEPS) % ROUTE.len() as u64) as usize;
    let t = (step % STEPS) as f64 / STEPS as f64;
    let (a, b) = (ROUTE[leg], ROUTE[(leg + 1) % ROUTE.len()]);
    let lat = a.0 + (b.0 - a.0) * t;
    let lon = a.1 + (b.1 - a.1) * t;
    let heading = (b.1 - a.1).atan2(b.0 - a.0).to_degrees().rem_euclid(360.0);
    (
        (lat * 1e6).round() / 1e6,
        (lon * 1e6).round() / 1e6,
        heading.round(),
    )
}

/// Seconds between two reports of a simulated device: brisker than the feed's
/// minimum so the demo looks alive.
fn period(kind: Kind) -> u64 {
    match kind {
        Kind::Smoke => 10,
        Kind::Gate => 15,
        Kind::Kitchen => 5,
        Kind::Labcab => 10,
        Kind::Bus => 5,
    }
}

/// Minutes between two departures of a demo bus.
pub const BUS_CYCLE_MIN: u32 = 20;

/// A bus driving its route in the demo.
struct DemoBus {
    device: usize,
    route: String,
    /// Its departures are this many ms after each cycle's start.
    offset_ms: i64,
    cycle: i64,
    trace: Vec<crate::bus::check::Fix>,
    next: usize,
    last_sent: i64,
}

impl DemoBus {
    /// The fixes due by `now`, a new trace at each departure.
    fn due(
        &mut self,
        plan: &crate::bus::Plan,
        now: i64,
        first: bool,
    ) -> Vec<crate::bus::check::Fix> {
        use crate::bus::trace::{generate, Fault, TraceSpec};
        let cycle_ms = i64::from(BUS_CYCLE_MIN) * 60_000;
        let cycle = (now - self.offset_ms).div_euclid(cycle_ms);
        if cycle != self.cycle {
            self.cycle = cycle;
            let depart = cycle * cycle_ms + self.offset_ms;
            let mut spec = TraceSpec::new(&self.route, depart);
            spec.seed = cycle as u64;
            spec.faults.push(Fault::Jitter(8.0));
            // The first bus misbehaves in three cycles out of five.
            if first {
                match cycle.rem_euclid(5) {
                    1 => spec.faults.push(Fault::Speed {
                        at: 0.0,
                        kmh: 35.0,
                        secs: 18.0,
                    }),
                    2 => spec.faults.push(Fault::SkipStop(2)),
                    3 => spec.faults.push(Fault::Detour {
                        from: 600.0,
                        to: 2400.0,
                        depth: 400.0,
                    }),
                    _ => {}
                }
            }
            self.trace = generate(&plan.network, &spec).unwrap_or_default();
            self.next = self.trace.partition_point(|f| f.ts < now - 1000);
        }
        let mut out = Vec::new();
        while let Some(f) = self.trace.get(self.next).filter(|f| f.ts <= now) {
            out.push(*f);
            self.next += 1;
        }
        // Parked after the trip: standing where it stopped, every 5 s.
        if out.is_empty() && now - self.last_sent >= 5000 {
            let at = self
                .trace
                .get(self.next.saturating_sub(1))
                .or(self.trace.first());
            if let Some(f) = at {
                if self.next >= self.trace.len() || f.ts < now - 30_000 {
                    out.push(crate::bus::check::Fix {
                        ts: now,
                        speed_kmh: 0.0,
                        door_open: false,
                        passengers: Some(0),
                        ..*f
                    });
                }
            }
        }
        if !out.is_empty() {
            self.last_sent = now;
        }
        out
    }
}

/// Publishes the feed of `devices` to the broker at `addr` until `stop`;
/// with `plan`, its buses drive their routes.
pub async fn run(
    addr: SocketAddr,
    devices: Vec<DeviceConfig>,
    plan: Option<std::sync::Arc<crate::bus::Plan>>,
    stop: CancellationToken,
) {
    let mut opts = MqttOptions::new("campusgw-demo-sim", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 256);
    let stop_events = stop.clone();
    let pump = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop_events.cancelled() => break,
                e = events.poll() => if e.is_err() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    let mut rng = StdRng::from_entropy();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seconds: u64 = 0;
    let mut silent: Option<(usize, u64)> = None;
    let mut buses: Vec<DemoBus> = match &plan {
        None => Vec::new(),
        Some(p) => devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let v = p.vehicles.get(&d.id)?;
                let n = p.vehicles.keys().position(|k| *k == d.id).unwrap_or(0) as i64;
                Some(DemoBus {
                    device: i,
                    route: v.route.clone(),
                    offset_ms: (n * 10 * 60_000) % (i64::from(BUS_CYCLE_MIN) * 60_000),
                    cycle: i64::MIN,
                    trace: Vec::new(),
                    next: 0,
                    last_sent: 0,
                })
            })
            .collect(),
    };
    info!(devices = devices.len(), "Simulated campus publishing.");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        seconds += 1;
        // Every ten minutes, one smoke detector falls silent for four: it goes offline.
        if seconds % 600 == 120 {
            let smoke: Vec<usize> = (0..devices.len())
                .filter(|i| devices[*i].kind == Kind::Smoke)
                .collect();
            if !smoke.is_empty() {
                let i = smoke[rng.gen_range(0..smoke.len())];
                debug!(device = %devices[i].id, "Simulating a silent detector.");
                silent = Some((i, seconds + 240));
            }
        }
        if silent.is_some_and(|(_, until)| seconds >= until) {
            silent = None;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let phase = seconds % 600;
        if let Some(plan) = &plan {
            for (n, b) in buses.iter_mut().enumerate() {
                let d = &devices[b.device];
                for f in b.due(plan, now, n == 0) {
                    let body = json!({
                        "ts": f.ts, "lat": (f.lat * 1e6).round() / 1e6, "lon": (f.lon * 1e6).round() / 1e6,
                        "speed_kmh": round2(f.speed_kmh), "heading_deg": 0.0,
                        "passengers": f.passengers, "door_open": f.door_open, "route_id": b.route,
                    });
                    let _ = client.try_publish(
                        topic(&d.site, d.kind, &d.id),
                        QoS::AtLeastOnce,
                        false,
                        body.to_string(),
                    );
                }
            }
        }
        for (i, d) in devices.iter().enumerate() {
            let p = period(d.kind);
            if (seconds + i as u64) % p != 0
                || silent.is_some_and(|(s, _)| s == i)
                || buses.iter().any(|b| b.device == i)
            {
                continue;
            }
            let mut body = payload_value(d.kind, seconds / p, i as u64, now);
            scenario(
                d.kind,
                first_of(&devices, d.kind) == Some(i),
                phase,
                &mut body,
            );
            let _ = client.try_publish(
                topic(&d.site, d.kind, &d.id),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            );
        }
        // A cabinet opened by one card only (the two-person rule catches it).
        if let Some(i) = first_of(&devices, Kind::Labcab) {
            let d = &devices[i];
            let events: &[(u64, serde_json::Value)] = &[
                (
                    300,
                    json!({"ts": now, "card_id": "T1001", "door_open": false}),
                ),
                (
                    302,
                    json!({"ts": now, "card_id": "T1001", "door_open": true, "locked": false}),
                ),
                (330, json!({"ts": now, "door_open": false, "locked": true})),
            ];
            for (at, body) in events {
                if phase == *at {
                    let _ = client.try_publish(
                        topic(&d.site, d.kind, &d.id),
                        QoS::AtLeastOnce,
                        false,
                        body.to_string(),
                    );
                }
            }
        }
        // Now and then, what a real campus also sends: a truncated payload.
        if seconds % 45 == 0 {
            if let Some(d) = devices.first() {
                let _ = client.try_publish(
                    topic(&d.site, d.kind, &d.id),
                    QoS::AtLeastOnce,
                    false,
                    "{\"ts\":17643800",
                );
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = pump.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::decode::{Decoder, Limits};

    #[test]
    fn payloads_decode_with_every_field() {
        let cfg: crate::config::TopicConfig = toml::from_str("").expect("default topic");
        let d = Decoder::new(&cfg).expect("decoder");
        let limits = Limits {
            max_payload_bytes: 65_536,
            max_past_ms: 1000,
            max_future_ms: 1000,
            max_fields: 64,
            max_string_bytes: 256,
        };
        for kind in Kind::ALL {
            for seq in [0, 1, 999] {
                let body = payload(kind, seq, 3, 5_000);
                let r = d
                    .decode(&topic("yz", kind, "d-1"), body.as_bytes(), 5_000, &limits)
                    .expect("topic matches")
                    .unwrap_or_else(|e| panic!("{kind} {body}: {e:?}"));
                let missing: Vec<_> = kind
                    .schema()
                    .iter()
                    .filter(|(n, _)| r.field(n).is_none() && *n != "card_id")
                    .collect();
                assert!(missing.is_empty(), "{kind}: {missing:?}");
            }
        }
    }
}
