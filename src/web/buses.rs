//! The bus endpoints: `GET /api/buses` (positions, the routes as WGS-84
//! coordinates with their stops and zones, each bus's trip and episodes
//! now), `GET /api/reports/bus` (JSON or CSV) and `POST /api/buses/weather`
//! (the operator's bad-weather switch: every limit 20 km/h).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::auth::Role;
use super::error::{ApiJson, ApiQuery};
use super::{ApiError, AppState, Auth};
use crate::bus::report::Report;
use crate::bus::task::LiveBus;
use crate::reading::{now_ms, Kind};

/// A stop as the page draws it.
#[derive(Debug, Serialize)]
pub(super) struct StopView {
    stop: String,
    lon: f64,
    lat: f64,
    planned_offset_s: i64,
    radius_m: f64,
}

/// A route as the page draws it (WGS-84, whatever the file was drawn in).
#[derive(Debug, Serialize)]
pub(super) struct RouteView {
    route_id: String,
    corridor_m: f64,
    speed_limit_kmh: f64,
    length_m: f64,
    coordinates: Vec<[f64; 2]>,
    stops: Vec<StopView>,
}

/// A speed zone.
#[derive(Debug, Serialize)]
pub(super) struct ZoneView {
    zone: String,
    speed_limit_kmh: f64,
    route_id: Option<String>,
    coordinates: Vec<[f64; 2]>,
}

/// A bus: its latest reading and its compliance state.
#[derive(Debug, Serialize)]
pub(super) struct BusView {
    id: String,
    site: String,
    name: Option<String>,
    online: bool,
    last_seen: Option<chrono::DateTime<chrono::Utc>>,
    lat: serde_json::Value,
    lon: serde_json::Value,
    speed_kmh: serde_json::Value,
    heading_deg: serde_json::Value,
    passengers: serde_json::Value,
    door_open: serde_json::Value,
    route_id: serde_json::Value,
    /// The checker's view (none: not a checked bus).
    compliance: Option<LiveBus>,
}

/// `GET /api/buses`.
#[derive(Debug, Serialize)]
pub(super) struct BusesView {
    buses: Vec<BusView>,
    routes: Vec<RouteView>,
    zones: Vec<ZoneView>,
    bad_weather: bool,
}

/// `GET /api/buses`.
pub(super) async fn buses(State(s): State<AppState>, _auth: Auth) -> Json<BusesView> {
    let live: Vec<LiveBus> = s
        .buses
        .as_ref()
        .and_then(|b| b.live.read().ok().map(|l| l.clone()))
        .unwrap_or_default();
    let buses = s
        .registry
        .devices(now_ms())
        .into_iter()
        .filter(|d| d.kind == Kind::Bus)
        .map(|d| {
            let f = |n: &str| d.fields.get(n).cloned().unwrap_or(serde_json::Value::Null);
            BusView {
                compliance: live.iter().find(|l| *l.vehicle == *d.id).cloned(),
                id: d.id.to_string(),
                site: d.site.to_string(),
                name: d.location.as_ref().and_then(|l| l.name.clone()),
                online: d.online,
                last_seen: d.last_seen,
                lat: f("lat"),
                lon: f("lon"),
                speed_kmh: f("speed_kmh"),
                heading_deg: f("heading_deg"),
                passengers: f("passengers"),
                door_open: f("door_open"),
                route_id: f("route_id"),
            }
        })
        .collect();
    let (routes, zones, bad_weather) = match &s.buses {
        None => (Vec::new(), Vec::new(), false),
        Some(b) => {
            let n = &b.plan.network;
            let routes = n
                .routes
                .iter()
                .map(|r| RouteView {
                    route_id: r.id.clone(),
                    corridor_m: r.corridor_m,
                    speed_limit_kmh: r.speed_limit_kmh,
                    length_m: r.length_m,
                    coordinates: r.coords.iter().map(|(x, y)| [*x, *y]).collect(),
                    stops: r
                        .stops
                        .iter()
                        .map(|st| StopView {
                            stop: st.name.clone(),
                            lon: st.lon,
                            lat: st.lat,
                            planned_offset_s: st.planned_offset_s,
                            radius_m: st.radius_m,
                        })
                        .collect(),
                })
                .collect();
            let zones = n
                .zones
                .iter()
                .map(|z| ZoneView {
                    zone: z.name.clone(),
                    speed_limit_kmh: z.speed_limit_kmh,
                    route_id: z.route.clone(),
                    coordinates: z.ring.iter().map(|(x, y)| [*x, *y]).collect(),
                })
                .collect();
            (routes, zones, b.bad_weather.load(Ordering::Relaxed))
        }
    };
    Json(BusesView {
        buses,
        routes,
        zones,
        bad_weather,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    /// The local date of departure (default: today).
    date: Option<chrono::NaiveDate>,
    vehicle: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// `GET /api/reports/bus?date=YYYY-MM-DD[&vehicle=ID][&format=csv]`.
pub(super) async fn report(
    State(s): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let Some(b) = &s.buses else {
        return Err(ApiError::NotFound(
            "no bus routes are configured ([buses] routes_file)".into(),
        ));
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("bad_format", "format is json or csv")),
    };
    if q.vehicle.as_ref().is_some_and(|v| v.len() > 128) {
        return Err(ApiError::invalid(
            "bad_vehicle",
            "a vehicle id is at most 128 characters",
        ));
    }
    let date = q
        .date
        .unwrap_or_else(|| chrono::Utc::now().with_timezone(&s.utc_offset).date_naive())
        .format("%Y-%m-%d")
        .to_string();
    let path = b.store.clone();
    let (d, v) = (date.clone(), q.vehicle.clone());
    let trips = tokio::task::spawn_blocking(move || {
        crate::bus::store::BusStore::open(&path).and_then(|st| st.trips(&d, v.as_deref()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let report = Report::new(&date, &trips, now_ms());
    if !csv {
        return Ok(Json(report).into_response());
    }
    let mut body = "\u{feff}".as_bytes().to_vec();
    body.extend(
        report
            .to_csv()
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    auth.audit(
        &s,
        "bus_report_export",
        q.vehicle.as_deref().unwrap_or(""),
        &date,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"bus-{}.csv\"", date.replace('-', "")),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WeatherBody {
    /// Bad weather (fog, rain, snow, ice): every limit 20 km/h.
    on: bool,
}

/// The switch's state.
#[derive(Debug, Serialize)]
pub(super) struct WeatherView {
    bad_weather: bool,
}

/// `POST /api/buses/weather {"on": true|false}` (operator).
pub(super) async fn weather(
    State(s): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<WeatherBody>,
) -> Result<Json<WeatherView>, ApiError> {
    auth.require(Role::Operator)?;
    let Some(h) = &s.buses else {
        return Err(ApiError::NotFound(
            "no bus routes are configured ([buses] routes_file)".into(),
        ));
    };
    let (tx, rx) = oneshot::channel();
    h.weather
        .send((b.on, auth.who.user.clone(), tx))
        .await
        .map_err(|_| ApiError::Unavailable("the bus checks are not running".into()))?;
    rx.await
        .map_err(|_| ApiError::Unavailable("the bus checks are not running".into()))?
        .map_err(ApiError::Internal)?;
    auth.audit(&s, "bus_weather", if b.on { "on" } else { "off" }, "");
    Ok(Json(WeatherView { bad_weather: b.on }))
}
