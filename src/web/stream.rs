//! `GET /api/stream`: Server-Sent Events for the page — alarm changes (from
//! the rules task's broadcast), devices going online or offline (watched
//! here), and bus positions (from the router).
//!
//! One fan-out task serialises every event once and broadcasts the text; a
//! client only copies it into its stream, so 200 wall screens cost the
//! gateway 200 copies, not 200 serialisations. A slow client misses events
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
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, Auth};
use crate::alarms::AlarmView;
use crate::reading::{Reading, Value};
use crate::registry::Registry;
use crate::rules::engine::Change;
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

/// One SSE event, already serialised.
#[derive(Debug)]
pub struct LiveEvent {
    /// The SSE event name: `alarm`, `devices`, `bus` or `lagged`.
    pub name: &'static str,
    /// Its JSON data.
    pub data: String,
}

/// The events every open page receives.
#[derive(Debug, Clone)]
pub struct Live {
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
        }
    }
}

impl Live {
    /// Whether any page is listening.
    fn has_pages(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    fn send<T: Serialize>(&self, name: &'static str, data: &T) {
        if !self.has_pages() {
            return;
        }
        if let Ok(data) = serde_json::to_string(data) {
            let _ = self.tx.send(Arc::new(LiveEvent { name, data }));
        }
    }
}

/// What the fan-out task listens to.
pub struct Sources {
    /// Persisted alarm changes.
    pub changes: broadcast::Receiver<Arc<Change>>,
    /// Bus readings from the router, subscribed to only while a page is
    /// open: the router sends none while nobody listens.
    pub buses: broadcast::Sender<Arc<Reading>>,
    /// The devices, checked every two seconds for online/offline changes.
    pub registry: Arc<Registry>,
}

/// Serialises what happens into `live` until `cancel`.
pub async fn fan_out(live: Live, mut src: Sources, cancel: CancellationToken) {
    let mut known: HashMap<(Arc<str>, Arc<str>), bool> = HashMap::new();
    // The first look only learns what is there: a page fetches the list itself.
    let mut first = true;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut buses = None;
    loop {
        // Checked after every event and tick: a new page gets buses within 2 s.
        if live.has_pages() != buses.is_some() {
            buses = live.has_pages().then(|| src.buses.subscribe());
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            c = src.changes.recv() => match c {
                Ok(c) => live.send(
                    "alarm",
                    &json!({ "action": c.event.action, "alarm": AlarmView::from(&c.alarm) }),
                ),
                Err(RecvError::Lagged(_)) => live.send("lagged", &"refetch"),
                Err(RecvError::Closed) => break,
            },
            r = recv_bus(&mut buses) => match r {
                Ok(r) => live.send("bus", &bus_position(&r)),
                Err(RecvError::Lagged(_)) => live.send("lagged", &"refetch"),
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                // One event per tick with every change, so a campus coming
                // online at start-up is one message per page, not thousands.
                let mut changed = Vec::new();
                for d in src.registry.presence(now_ms()) {
                    let before = known.insert((d.site.clone(), d.id.clone()), d.online);
                    // A device seen for the first time (undeclared) is news too.
                    if !first && before != Some(d.online) {
                        changed.push(DeviceEvent {
                            id: d.id.to_string(),
                            site: d.site.to_string(),
                            kind: d.kind.as_str().to_owned(),
                            online: d.online,
                            last_seen: d.last_seen_ms.and_then(chrono::DateTime::from_timestamp_millis),
                        });
                    }
                }
                first = false;
                if !changed.is_empty() {
                    live.send("devices", &changed);
                }
            }
        }
    }
}

async fn recv_bus(
    rx: &mut Option<broadcast::Receiver<Arc<Reading>>>,
) -> Result<Arc<Reading>, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn bus_position(r: &Reading) -> serde_json::Value {
    let f = |n: &str| r.field(n).and_then(Value::as_f64);
    json!({
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
    })
}

/// `GET /api/stream`.
pub(super) async fn sse(
    State(s): State<AppState>,
    _auth: Auth,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let events = BroadcastStream::new(s.live.tx.subscribe()).map(|e| {
        Ok(match e {
            Ok(e) => Event::default().event(e.name).data(&e.data),
            Err(BroadcastStreamRecvError::Lagged(_)) => {
                Event::default().event("lagged").data("refetch")
            }
        })
    });
    let hello = stream::once(async { Ok(Event::default().event("hello").data("campusgw")) });
    Ok(
        Sse::new(hello.chain(events))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}
