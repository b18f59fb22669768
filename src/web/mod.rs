//! HTTP: `/healthz` and `/metrics` now, the status page and API as they land.
//! Only this module knows JSON response shapes.
//!
//! `router(state)` builds the app without binding, so tests can drive it;
//! `serve` binds and runs it until the shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;
use crate::sources::now_ms;
use crate::telemetry::{Health, Metrics, Status};

/// What the handlers share: cheap clones of `Arc`s.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Component states.
    pub health: Arc<Health>,
    /// The devices.
    pub registry: Arc<Registry>,
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds `addr` (port 0 picks one) and returns the bound address with the server future.
pub async fn bind(
    addr: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state);
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    };
    Ok((local, server))
}

async fn healthz(State(s): State<AppState>) -> Response {
    let components = s.health.snapshot();
    let down = components.values().any(|c| c.status == Status::Down);
    let starting = components.values().any(|c| c.status == Status::Starting);
    let overall = if down {
        "down"
    } else if starting || components.values().any(|c| c.status == Status::Degraded) {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": overall,
        "components": components,
        "spool_bytes": s.metrics.spool_bytes.get(),
        "spool_points": s.metrics.spool_points.get(),
        "devices": s.registry.len(),
    });
    let code = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    for (kind, c) in s.registry.counts(now_ms()) {
        s.metrics.set_devices(kind, "online", c.online as i64);
        s.metrics.set_devices(kind, "offline", c.offline as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
