//! `GET /api/stream`: Server-Sent Events for the page — alarm changes (from
//! the rules task's broadcast), devices going online or offline (watched
//! here), and bus positions (from the router). A slow client misses events
//! (it is told to refetch), it never slows the gateway.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, Auth};
use crate::alarms::AlarmView;
use crate::reading::Value;
use crate::registry::Registry;
use crate::sources::now_ms;

/// A device going online or offline.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceEvent {
    /// Device id.
    pub id: String,
    /// Site.
    pub site: String,
    /// Kind.
    pub kind: String,
    /// Now online?
    pub online: bool,
    /// Last reading.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// Live events that are not alarms.
#[derive(Debug, Clone)]
pub struct Live {
    /// Online/offline changes; `watch_devices` sends.
    pub devices: broadcast::Sender<DeviceEvent>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            devices: broadcast::channel(1024).0,
        }
    }
}

/// Sends a `DeviceEvent` whenever a device's online state changes.
pub async fn watch_devices(
    registry: Arc<Registry>,
    tx: broadcast::Sender<DeviceEvent>,
    cancel: CancellationToken,
) {
    let mut known: HashMap<(String, String), bool> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        for d in registry.devices(now_ms()) {
            let key = (d.site.to_string(), d.id.to_string());
            let before = known.insert(key, d.online);
            if before.is_some_and(|b| b != d.online) {
                let _ = tx.send(DeviceEvent {
                    id: d.id.to_string(),
                    site: d.site.to_string(),
                    kind: d.kind.as_str().to_owned(),
                    online: d.online,
                    last_seen: d.last_seen,
                });
            }
        }
    }
}

fn event<T: Serialize>(name: &str, data: &T) -> Option<Event> {
    Event::default().event(name).json_data(data).ok()
}

/// `GET /api/stream`.
pub(super) async fn sse(
    State(s): State<AppState>,
    _auth: Auth,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let lagged = || Some(Event::default().event("lagged").data("refetch"));
    let alarms =
        BroadcastStream::new(s.rules.changes.subscribe()).filter_map(move |c| async move {
            match c {
                Ok(c) => event(
                    "alarm",
                    &json!({ "action": c.event.action, "alarm": AlarmView::from(&c.alarm) }),
                ),
                Err(BroadcastStreamRecvError::Lagged(_)) => lagged(),
            }
        });
    let devices =
        BroadcastStream::new(s.live.devices.subscribe()).filter_map(move |d| async move {
            match d {
                Ok(d) => event("device", &d),
                Err(BroadcastStreamRecvError::Lagged(_)) => lagged(),
            }
        });
    let buses = BroadcastStream::new(s.buses.subscribe()).filter_map(|r| async move {
        let r = r.ok()?;
        let f = |n: &str| r.field(n).and_then(Value::as_f64);
        event(
            "bus",
            &json!({
                "id": &*r.device,
                "site": &*r.site,
                "lat": f("lat"),
                "lon": f("lon"),
                "speed_kmh": f("speed_kmh"),
                "heading_deg": f("heading_deg"),
                "passengers": f("passengers"),
                "door_open": r.field("door_open").and_then(Value::as_bool),
                "route_id": r.field("route_id").and_then(Value::as_str),
                "ts": chrono::DateTime::<chrono::Utc>::from_timestamp_millis(r.ts_ms),
            }),
        )
    });
    let hello = stream::once(async { Event::default().event("hello").data("campusgw") });
    let merged = hello
        .chain(stream::select(alarms, stream::select(devices, buses)))
        .map(Ok);
    Ok(Sse::new(merged).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
