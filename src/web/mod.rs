//! HTTP: the security room's status page, its JSON API and live event
//! stream, `/healthz` and `/metrics`. Only this module knows response shapes
//! (besides `alarms::AlarmView`, shared with MQTT).
//!
//! `router(state)` builds the app without binding, so tests can drive it;
//! `bind` binds (plain or TLS) and returns the server future, which ends
//! when the shutdown token fires.
//!
//! Access: everything but `/`, the assets, `/healthz`, `/metrics` and
//! `/api/login` needs a session cookie or an API token (`Authorization:
//! Bearer …`). A state-changing request on a session also needs its CSRF
//! token in `X-CSRF-Token`; API tokens carry no ambient authority and need
//! none. Roles: viewer reads, operator also acts on alarms and zones, admin
//! also manages users, tokens and rules. Every action is audited.

mod api;
mod assets;
pub mod auth;
mod error;
pub mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::alarms::store::AlarmStore;
use crate::registry::Registry;
use crate::rules::task::RulesHandle;
use crate::sources::now_ms;
use crate::telemetry::{affects_readiness, Health, Metrics, Status};
pub use auth::{AuthStore, Principal, Role};
pub use error::ApiError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "campusgw_session";

/// What the handlers share: cheap clones of `Arc`s and channel handles.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Component states.
    pub health: Arc<Health>,
    /// The devices.
    pub registry: Arc<Registry>,
    /// Users, sessions, tokens, audit.
    pub auth: Arc<AuthStore>,
    /// The alarm engine: commands, changes, open alarms.
    pub rules: RulesHandle,
    /// A read connection to the alarm store (history, ledger).
    pub alarms_db: Arc<Mutex<AlarmStore>>,
    /// Alarm, device and bus events for the stream, serialised once.
    pub live: stream::Live,
    /// Whether the page is served over TLS (cookies get `Secure`).
    pub tls: bool,
    /// The configuration file, for rule reloads from the API.
    pub config_path: Option<PathBuf>,
    /// The school's local time (`[alarms].utc_offset`), for reports.
    pub utc_offset: chrono::FixedOffset,
}

/// The signed-in user (or API token) of a request, with the CSRF check done
/// for state-changing methods.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Who.
    pub who: Principal,
    /// From where (for the audit log).
    pub addr: String,
}

impl Auth {
    /// Refuses with 403 unless the role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.who.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role",
                role.as_str()
            )))
        }
    }

    /// Records an action in the audit log.
    pub fn audit(&self, state: &AppState, action: &str, target: &str, detail: &str) {
        if let Err(e) = state
            .auth
            .audit(&self.who.user, action, target, detail, &self.addr)
        {
            tracing::error!(error = %e, "Cannot write the audit log.");
        }
    }
}

fn client_addr(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The client's address (for throttling and the audit log).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts)))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let addr = client_addr(parts);
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let auth = state.auth.clone();
        if let Some(token) = bearer {
            let token = token.to_owned();
            let who = tokio::task::spawn_blocking(move || auth.token(&token))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??;
            return who
                .map(|who| Auth { who, addr })
                .ok_or(ApiError::Unauthorized);
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned()) else {
            return Err(ApiError::Unauthorized);
        };
        let who = tokio::task::spawn_blocking(move || auth.session(&token))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
            .ok_or(ApiError::Unauthorized)?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            if sent.is_none() || sent != who.csrf.as_deref() {
                return Err(ApiError::Forbidden("missing or wrong X-CSRF-Token".into()));
            }
        }
        Ok(Auth { who, addr })
    }
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/me", get(api::me))
        .route("/login", post(api::login))
        .route("/logout", post(api::logout))
        .route("/alarms", get(api::alarms))
        .route("/alarms/{id}", get(api::alarm))
        .route("/alarms/{id}/ack", post(api::ack))
        .route("/alarms/{id}/shelve", post(api::shelve))
        .route("/alarms/{id}/unshelve", post(api::unshelve))
        .route("/alarms/{id}/comment", post(api::comment))
        .route("/devices", get(api::devices))
        .route("/buses", get(api::buses))
        .route("/buildings", get(api::buildings))
        .route("/suppressions", get(api::suppressions).post(api::suppress))
        .route("/suppressions/end", post(api::end_suppression))
        .route("/reports/ledger.csv", get(api::ledger))
        .route("/stream", get(stream::sse))
        .route("/users", get(api::users).post(api::add_user))
        .route("/users/{name}", axum::routing::delete(api::delete_user))
        .route("/tokens", get(api::tokens).post(api::add_token))
        .route("/tokens/{id}", axum::routing::delete(api::delete_token))
        .route("/audit", get(api::audit))
        .route("/admin/reload", post(api::reload))
        .fallback(|| async { ApiError::NotFound("no such API endpoint".into()) });
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{*path}", get(assets::file))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api", api)
        // Requests are small JSON; anything larger is a mistake or an attack.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// TLS for the page: PEM certificate chain and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Binds `addr` (port 0 picks one) and returns the bound address with the
/// server future, which runs until `shutdown`.
pub async fn bind(
    addr: SocketAddr,
    tls: Option<TlsFiles>,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let handle = axum_server::Handle::<SocketAddr>::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    // TCP_NODELAY: an SSE event is one small write that must go out now, not
    // wait (Nagle) for the acknowledgement of the previous one.
    use axum_server::accept::NoDelayAcceptor;
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        match tls {
            Some(t) => {
                let config =
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert, &t.key).await?;
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                    .acceptor(NoDelayAcceptor::new());
                Box::pin(
                    axum_server::from_tcp(listener)?
                        .acceptor(acceptor)
                        .handle(handle)
                        .serve(app),
                )
            }
            None => Box::pin(
                axum_server::from_tcp(listener)?
                    .acceptor(NoDelayAcceptor::new())
                    .handle(handle)
                    .serve(app),
            ),
        };
    Ok((local, server))
}

async fn healthz(State(s): State<AppState>) -> Response {
    let components = s.health.snapshot();
    // A Modbus device that is down degrades the gateway; only a core component makes it unready.
    let down = components
        .iter()
        .any(|(name, c)| c.status == Status::Down && affects_readiness(name));
    let device_down = components.values().any(|c| c.status == Status::Down);
    let starting = components.values().any(|c| c.status == Status::Starting);
    let overall = if down {
        "down"
    } else if starting || device_down || components.values().any(|c| c.status == Status::Degraded) {
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
    let now = now_ms();
    if s.metrics.devices_due(now) {
        for (kind, c) in s.registry.counts(now) {
            s.metrics.set_devices(kind, "online", c.online as i64);
            s.metrics.set_devices(kind, "offline", c.offline as i64);
        }
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
