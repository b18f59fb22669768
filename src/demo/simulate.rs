//! `campusgw simulate`: the demo's simulated devices ([`super::sim`]'s
//! payloads and topics) publishing the reference feed to any broker, at a
//! chosen number of devices and total rate, for an installer checking a
//! site's broker, ACLs and database before the real devices arrive.
//!
//! Every message is QoS 1 and waits for room in the client's queue (never
//! dropped here); at the end the simulator waits for the broker's PUBACKs and
//! reports how many were published and how many acknowledged, so a broker
//! that stops answering shows in the numbers. (An MQTT 3.1.1 broker
//! acknowledges a publish its ACL refuses as if it took it: check that with
//! a subscriber, e.g. `mosquitto_sub -t 'campus/#' -v`, or the gateway's
//! /metrics.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::sim::{payload_value, topic};
use crate::reading::Kind;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Number of devices, spread over `kinds` in turn.
    pub devices: usize,
    /// Messages per second over all devices.
    pub rate: u32,
    /// The kinds of device (all five when empty).
    pub kinds: Vec<Kind>,
    /// The `<site>` level of the topics.
    pub site: String,
    /// Stop after this long (None: until cancelled).
    pub duration: Option<Duration>,
}

/// What the simulator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulateReport {
    /// Messages handed to the client.
    pub published: u64,
    /// PUBACKs received from the broker.
    pub acknowledged: u64,
}

/// Why the simulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The broker refused the connection (bad credentials, not authorised).
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// No connection in time.
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

/// The simulated devices: `(kind, device id)`, ids `sim-<kind>-<n>`.
pub fn devices(n: usize, kinds: &[Kind]) -> Vec<(Kind, String)> {
    let kinds: &[Kind] = if kinds.is_empty() { &Kind::ALL } else { kinds };
    (0..n)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            (
                kind,
                format!("sim-{}-{:03}", kind.as_str(), i / kinds.len() + 1),
            )
        })
        .collect()
}

/// How long to wait for the broker's answer to the connection, and for the
/// last acknowledgements at the end.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with `mqtt`, publishes `opts`' feed until its duration ends or
/// `stop`, and waits (bounded) for the acknowledgements.
pub async fn simulate(
    mqtt: MqttOptions,
    opts: SimulateOptions,
    stop: CancellationToken,
) -> Result<SimulateReport, SimulateError> {
    if opts.devices == 0 || opts.rate == 0 {
        return Err(SimulateError::Options(
            "--devices and --rate must be at least 1".into(),
        ));
    }
    let site_ok = !opts.site.is_empty()
        && opts
            .site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !site_ok {
        return Err(SimulateError::Options(format!(
            "--site `{}`: letters, digits, - and _ only (it is a topic level)",
            opts.site
        )));
    }
    let (client, mut events) = AsyncClient::new(mqtt, 1024);
    connect(&mut events).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let pump_stop = CancellationToken::new();
    let pump = tokio::spawn(pump(events, acked.clone(), pump_stop.clone()));

    let devices = devices(opts.devices, &opts.kinds);
    let topics: Vec<String> = devices
        .iter()
        .map(|(k, id)| topic(&opts.site, *k, id))
        .collect();
    info!(
        devices = devices.len(),
        rate = opts.rate,
        "Simulating the reference feed."
    );
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: u64 = 0;
    'outer: loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = start.elapsed();
        if opts.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        // Paced by the clock, not by the ticks: a slow broker or a late
        // tick makes the next ticks catch up instead of lowering the rate.
        let due = (elapsed.as_secs_f64() * f64::from(opts.rate)) as u64;
        while published < due {
            let i = (published % devices.len() as u64) as usize;
            let seq = published / devices.len() as u64;
            let body = payload_value(
                devices[i].0,
                seq,
                i as u64,
                chrono::Utc::now().timestamp_millis(),
            );
            let send = client.publish(topics[i].clone(), QoS::AtLeastOnce, false, body.to_string());
            tokio::select! {
                () = stop.cancelled() => break 'outer,
                r = send => if r.is_err() { break 'outer },
            }
            published += 1;
        }
    }
    // The last acknowledgements, bounded: a broker that stopped answering
    // shows as fewer acknowledged than published.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while acked.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = client.disconnect().await;
    // The pump ends once the DISCONNECT is out, or here at the latest.
    let mut pump = pump;
    if tokio::time::timeout(Duration::from_secs(2), &mut pump)
        .await
        .is_err()
    {
        pump_stop.cancel();
        let _ = pump.await;
    }
    Ok(SimulateReport {
        published,
        acknowledged: acked.load(Ordering::Relaxed),
    })
}

/// Waits for the CONNACK: a refusal or no broker is an error at once, not a retry loop.
async fn connect(events: &mut EventLoop) -> Result<(), SimulateError> {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return match ack.code {
                        ConnectReturnCode::Success => Ok(()),
                        code => Err(SimulateError::Refused(code)),
                    }
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    return Err(SimulateError::Refused(code))
                }
                Err(e) => return Err(SimulateError::Connect(e.to_string())),
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => Err(SimulateError::Connect(format!(
            "no answer in {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// Drives the connection, counting PUBACKs; reconnects after a loss.
async fn pump(mut events: EventLoop, acked: Arc<AtomicU64>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            e = events.poll() => match e {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                // Ours, at the end: the broker closing the socket next is no loss.
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    warn!("MQTT connection lost ({e}); reconnecting.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_take_the_kinds_in_turn_with_unique_ids() {
        let d = devices(7, &[Kind::Smoke, Kind::Bus]);
        assert_eq!(d.len(), 7);
        assert_eq!(d[0], (Kind::Smoke, "sim-smoke-001".into()));
        assert_eq!(d[1], (Kind::Bus, "sim-bus-001".into()));
        assert_eq!(d[6], (Kind::Smoke, "sim-smoke-004".into()));
        let mut ids: Vec<_> = d.iter().map(|(_, id)| id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 7);
        assert_eq!(devices(5, &[]).len(), 5, "all five kinds by default");
        assert!(Kind::ALL
            .iter()
            .all(|k| devices(5, &[]).iter().any(|(dk, _)| dk == k)));
    }
}
