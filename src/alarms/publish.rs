//! Alarm transitions over MQTT, so a district platform or a corridor display
//! can follow without polling: one JSON message per change on
//! `campusgw/<site>/alarm/<device>/<rule>` (configurable), retained while the
//! alarm is open and the retained copy removed once it is closed.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, QoS};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::AlarmView;
use crate::alarms::Change;
use crate::config::MqttConfig;

/// Fills `{site}`, `{device}` and `{rule}` of the topic template.
pub fn topic(template: &str, c: &Change) -> String {
    let device = if c.alarm.is_group {
        format!("group-{}", c.alarm.id)
    } else {
        c.alarm.device.clone()
    };
    template
        .replace("{site}", &c.alarm.site)
        .replace("{device}", &device)
        .replace("{rule}", &c.alarm.rule)
}

/// Appended to `[mqtt] client_id` for this connection's own id.
pub const CLIENT_SUFFIX: &str = "-alarms";

/// Publishes every change from `events` until `cancel`.
pub async fn run(
    mqtt: MqttConfig,
    template: String,
    mut events: broadcast::Receiver<Arc<Change>>,
    cancel: CancellationToken,
) {
    let opts = match crate::sources::mqtt::options(&mqtt, CLIENT_SUFFIX) {
        Ok(o) => o,
        Err(e) => {
            warn!(error = %e, "Alarm publication disabled: cannot build the MQTT client.");
            return;
        }
    };
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let pump_cancel = cancel.clone();
    let (min, max) = (mqtt.reconnect_min, mqtt.reconnect_max);
    let pump = tokio::spawn(async move {
        let mut backoff = min;
        loop {
            tokio::select! {
                () = pump_cancel.cancelled() => break,
                e = eventloop.poll() => match e {
                    Ok(Event::Incoming(rumqttc::Packet::ConnAck(_))) => backoff = min,
                    Ok(_) => {}
                    Err(e) => {
                        debug!(error = %e, "Alarm publisher connection failed; retrying.");
                        // The client reconnects at the next poll: the pause
                        // is ours, and shutdown does not wait for it.
                        tokio::select! {
                            () = pump_cancel.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(max);
                    }
                }
            }
        }
    });
    loop {
        let change = tokio::select! {
            () = cancel.cancelled() => break,
            c = events.recv() => match c {
                Ok(c) => c,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "Alarm publisher fell behind; some transitions were not published.");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        let t = topic(&template, &change);
        let body = match serde_json::to_vec(&AlarmView::from(&change.alarm)) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let closed = change.alarm.is_closed();
        // Queued in the client (awaits only when its queue is full): it is
        // sent once the broker is reachable again.
        let _ = client
            .publish(t.clone(), QoS::AtLeastOnce, !closed, body)
            .await;
        if closed {
            // An empty retained message removes the retained copy.
            let _ = client.publish(t, QoS::AtLeastOnce, true, Vec::new()).await;
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), pump).await;
}
