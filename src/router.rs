//! The router: the one task between the sources and the consumers. It admits
//! each reading through the registry (declared? kind right? location?),
//! counts it, and hands it to the rule engine, the sink, and — for buses —
//! the live view.
//!
//! A reading it refuses is dropped with its acknowledgement token, which
//! confirms the message (it will never become data); a reading it cannot
//! hand on is abandoned, so the broker sends it again.
//!
//! It ends when every source has dropped its sender, and then drops its own
//! senders, so the consumers drain and flush in order at shutdown.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use crate::reading::now_ms;
use crate::reading::{Kind, Reading};
use crate::registry::Registry;
use crate::telemetry::{LogLimiter, Metrics};

/// Where admitted readings go.
#[derive(Debug)]
pub struct Outputs {
    /// The sink (InfluxDB); the sink task holds the other end.
    pub sink: mpsc::Sender<Arc<Reading>>,
    /// The rule engine; the rules task holds the other end. It shares the
    /// sink's reading: both only read it.
    pub rules: mpsc::Sender<Arc<Reading>>,
    /// Bus positions for the live page; subscribers may come and go.
    pub buses: broadcast::Sender<Arc<Reading>>,
    /// Bus fixes for the route checks (`bus::task` holds the other end);
    /// none without a route file.
    pub checks: Option<mpsc::Sender<Arc<Reading>>>,
}

/// Runs until `rx` closes or the sink is gone.
pub async fn run(
    mut rx: mpsc::Receiver<Reading>,
    out: Outputs,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) {
    let readings = Kind::ALL.map(|k| metrics.readings(k));
    let depth = metrics.queue_depth("router");
    let log_limit = LogLimiter::new(std::time::Duration::from_secs(10));
    while let Some(mut r) = rx.recv().await {
        depth.set(rx.len() as i64);
        if let Err(reason) = registry.admit(&mut r, now_ms()) {
            metrics.reject(reason);
            if let Some(held) = log_limit.check(reason.as_str()) {
                warn!(site = %r.site, device = %r.device, kind = %r.kind, reason = reason.as_str(), held_back = held, "Reading rejected.");
            }
            continue;
        }
        readings[r.kind as usize].inc();
        let page = out.buses.receiver_count() > 0;
        if r.kind == Kind::Bus && (page || out.checks.is_some()) {
            // One copy for the page and the route checks. It persists
            // nothing, so it must not hold the message's acknowledgement
            // back (a lagging stream would; the checks' store does not wait
            // for it either, see bus::task).
            let mut fix = r.clone();
            fix.ack = None;
            let fix = Arc::new(fix);
            if page {
                let _ = out.buses.send(fix.clone());
            }
            if let Some(checks) = &out.checks {
                // A full queue waits.
                let _ = checks.send(fix).await;
            }
        }
        // The rules task holds its clone of the reading's Ack until the alarm
        // store has what the reading changed. A rules task that is gone (a
        // bug) must not stop the time series.
        let r = Arc::new(r);
        let _ = out.rules.send(r.clone()).await;
        // A rejected reading was dropped above: its message is confirmed at
        // once, since it will never become data.
        if let Err(mpsc::error::SendError(r)) = out.sink.send(r).await {
            // The sink is gone: this reading was not persisted.
            if let Some(ack) = &r.ack {
                ack.abandon();
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::reading::Reject;
    use crate::reading::{Source, Value};

    #[tokio::test]
    async fn an_mqtt_reading_for_a_polled_device_is_refused_and_counted() {
        let cfg = Config::from_toml(
            r#"[mqtt]
url = "mqtt://127.0.0.1:1883"
[modbus.maps.m]
registers = [{ field = "gas_lel_pct", table = "input", address = 0, type = "u16" }]
[[modbus.devices]]
id = "hood-3"
kind = "kitchen"
site = "yz"
transport = "tcp"
address = "10.0.0.1"
map = "m"
"#,
            Vec::new(),
        )
        .expect("config")
        .config;
        let registry = Arc::new(Registry::new(&cfg, &cfg.known_devices()));
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(4);
        let (sink, mut sink_rx) = mpsc::channel(4);
        let (rules, mut rules_rx) = mpsc::channel(4);
        let (buses, _) = broadcast::channel(4);
        let router = tokio::spawn(run(
            rx,
            Outputs {
                sink,
                rules,
                buses,
                checks: None,
            },
            registry,
            metrics.clone(),
        ));
        let reading = |source| {
            Reading::new(
                Arc::from("yz"),
                Arc::from("hood-3"),
                Kind::Kitchen,
                now_ms(),
                vec![("gas_lel_pct".into(), Value::F64(40.0))],
                source,
            )
        };
        tx.send(reading(Source::Mqtt)).await.expect("router");
        tx.send(reading(Source::Modbus)).await.expect("router");
        drop(tx);
        router.await.expect("router ends");
        assert_eq!(metrics.rejected(Reject::SourceMismatch), 1);
        let passed = sink_rx.recv().await.expect("the poller's reading");
        assert_eq!(passed.source, Source::Modbus);
        assert!(sink_rx.recv().await.is_none(), "the MQTT one went nowhere");
        assert_eq!(
            rules_rx.recv().await.map(|r| r.source),
            Some(Source::Modbus)
        );
        assert!(rules_rx.recv().await.is_none());
    }
}
