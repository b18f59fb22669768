//! `GET /api/stream`: Server-Sent Events for the page — alarm changes (from
//! the rules task's broadcast), devices going online or offline (watched
//! here), and bus positions (from the router).
//!
//! One fan-out task serialises and frames every event once and broadcasts
//! the bytes; every client's stream writes the same buffer, so 200 wall
//! screens cost the gateway 200 socket writes, not 200 serialisations or
//! copies (a campus coming online is one `devices` event of ~100 KB). A slow
//! client misses events (it is told to refetch), it never slows the gateway.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, Auth, Credential};
use crate::alarms::AlarmView;
use crate::alarms::Change;
use crate::reading::now_ms;
use crate::reading::{Reading, Value};
use crate::registry::Registry;

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

/// The first event of every stream: the client is subscribed from here on.
const HELLO: &[u8] = b"event: hello\ndata: campusgw\n\n";

/// What a client that fell behind the broadcast is sent instead of what it missed.
const LAGGED: &[u8] = b"event: lagged\ndata: refetch\n\n";

/// A comment line: keeps proxies and idle timeouts from closing a quiet stream.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// One SSE event (`event: NAME`, one `data:` line with compact JSON).
fn frame(name: &str, json: &str) -> Bytes {
    // Compact serde_json output escapes line breaks inside strings, so the
    // data is one line, as SSE requires.
    debug_assert!(!json.contains(['\n', '\r']));
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// The events every open page receives, each framed once.
#[derive(Debug, Clone)]
pub struct Live {
    tx: broadcast::Sender<Bytes>,
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
        if let Ok(json) = serde_json::to_string(data) {
            let _ = self.tx.send(frame(name, &json));
        }
    }

    /// Tells every page that events were missed: it refetches.
    fn lagged(&self) {
        let _ = self.tx.send(Bytes::from_static(LAGGED));
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
                // Built only for a page: with none open (most of the time
                // at a school) every alarm change was shaped for nobody.
                Ok(c) if live.has_pages() => live.send(
                    "alarm",
                    &json!({ "action": c.event.action, "alarm": AlarmView::from(&c.alarm) }),
                ),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => live.lagged(),
                Err(RecvError::Closed) => break,
            },
            r = recv_bus(&mut buses) => match r {
                Ok(r) => live.send("bus", &bus_position(&r)),
                Err(RecvError::Lagged(_)) => live.lagged(),
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                // With no page open the devices are not looked at (a look at
                // 10,000 was nearly all of an idle gateway's CPU); the first
                // look after a page opens sends what changed meanwhile.
                if !first && !live.has_pages() {
                    continue;
                }
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

/// How often an open stream checks its session or token even when nothing
/// was revoked here (it may have expired, or `campusgw user add` in another
/// process may have ended it).
const RECHECK: Duration = Duration::from_secs(60);

/// Resolves when the stream's session or token has ended: checked at once
/// on every sign-out, deletion and password change, and every `RECHECK`.
async fn session_ended(s: AppState, credential: Credential) {
    let mut revoked = s.auth.revocations();
    let mut watching = true;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    loop {
        tokio::select! {
            changed = revoked.changed(), if watching => watching = changed.is_ok(),
            _ = tick.tick() => {}
        }
        let (store, c) = (s.auth.clone(), credential.clone());
        let valid = tokio::task::spawn_blocking(move || c.still_valid(&store))
            .await
            .unwrap_or(true);
        if !valid {
            s.metrics.web.streams_revoked.inc();
            return;
        }
    }
}

/// `GET /api/stream`: `hello` once the stream is subscribed, then every
/// event, with a keep-alive comment every 15 s; it ends when its session or
/// token does. At most `web.max_streams_per_session` per session or token
/// and `web.max_streams_per_address` per client address (429 beyond).
pub(super) async fn sse(State(s): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let slot = s
        .limits
        .open_stream(&auth.credential.key(), &auth.addr)
        .map_err(|cap| {
            ApiError::Limit(match cap {
                "per_session" => "too many event streams open for this session".into(),
                _ => "too many event streams open from this address".into(),
            })
        })?;
    let ended = session_ended(s.clone(), auth.credential.clone());
    let events = BroadcastStream::new(s.live.tx.subscribe()).map(|e| match e {
        Ok(frame) => frame,
        Err(BroadcastStreamRecvError::Lagged(_)) => Bytes::from_static(LAGGED),
    });
    let period = Duration::from_secs(15);
    let keep_alive = stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut tick| async move {
            tick.tick().await;
            Some((Bytes::from_static(KEEP_ALIVE), tick))
        },
    );
    let body = stream::once(async { Bytes::from_static(HELLO) })
        .chain(stream::select(events, keep_alive))
        .take_until(ended)
        .map(move |b| {
            // The slot is given back when the client goes or the stream ends.
            let _held = &slot;
            Ok::<_, Infallible>(b)
        });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::reading::{Kind, Source};

    #[tokio::test(start_paused = true)]
    async fn what_changed_while_no_page_was_open_reaches_the_next_page() {
        let cfg = Config::from_toml(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[[devices]]\nid = \"a3-301\"\nkind = \"smoke\"\nsite = \"yz\"\n",
            Vec::new(),
        )
        .expect("config")
        .config;
        let registry = Arc::new(Registry::new(&cfg, &cfg.known_devices()));
        let live = Live::default();
        let (_alarms, changes) = broadcast::channel(4);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(fan_out(
            live.clone(),
            Sources {
                changes,
                buses: broadcast::channel(4).0,
                registry: registry.clone(),
            },
            cancel.clone(),
        ));
        // The look at start-up learns that the detector was never heard.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut reading = Reading::new(
            Arc::from("yz"),
            Arc::from("a3-301"),
            Kind::Smoke,
            now_ms(),
            vec![("temp_c".into(), Value::F64(21.0))],
            Source::Mqtt,
        );
        registry.admit(&mut reading, now_ms()).expect("admitted");
        // No page for a while: the devices are not looked at.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut page = live.tx.subscribe();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let frame = page.try_recv().expect("a devices event");
        let text = String::from_utf8_lossy(&frame);
        assert!(
            text.starts_with("event: devices\n")
                && text.contains("\"id\":\"a3-301\"")
                && text.contains("\"online\":true"),
            "{text}"
        );
        cancel.cancel();
        task.await.expect("the fan-out task");
    }

    #[test]
    fn an_event_is_one_data_line_even_when_its_text_has_line_breaks() {
        let json =
            serde_json::to_string(&json!({ "message": "smoke\r\nin A3" })).expect("serialise");
        assert_eq!(
            &frame("alarm", &json)[..],
            b"event: alarm\ndata: {\"message\":\"smoke\\r\\nin A3\"}\n\n"
        );
    }
}
