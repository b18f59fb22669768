//! HTTP: the security room's status page, its JSON API and live event
//! stream, `/healthz` and `/metrics`. Only this module knows response shapes
//! (besides `alarms::AlarmView`, shared with MQTT).
//!
//! `router(state)` builds the app without binding, so tests can drive it;
//! `bind` binds (plain or TLS) and returns the server future, which ends
//! when the shutdown token fires.
//!
//! Access: everything but `/`, the assets, `/healthz` (states only; its
//! details need a session or token), `/metrics`, `/ack/{token}` (its
//! one-time token is the credential, see `ack`) and
//! `/api/login` needs a session cookie or an API token (`Authorization:
//! Bearer …`). A state-changing request on a session also needs its CSRF
//! token in `X-CSRF-Token`; API tokens carry no ambient authority and need
//! none. Roles: viewer reads, operator also acts on alarms and zones, admin
//! also manages users, tokens and rules. Every action is audited.

pub mod ack;
mod api;
mod assets;
pub mod auth;
mod buses;
mod error;
pub mod limits;
pub mod signin;
pub mod stream;
mod views;

use std::net::{IpAddr, SocketAddr};
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
use crate::reading::now_ms;
use crate::registry::Registry;
use crate::rules::task::RulesHandle;
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
    /// Who is on duty when (`GET /api/duty`).
    pub roster: Option<Arc<crate::notify::roster::Roster>>,
    /// The notifier's store, read for an alarm's notifications.
    pub notify_db: Option<PathBuf>,
    /// The sign-in throttle and password-hashing pool.
    pub signin: Arc<signin::SignIn>,
    /// Peers whose `X-Forwarded-For` names the client (`web.trusted_proxies`).
    pub trusted_proxies: Arc<[IpAddr]>,
    /// Connection and event-stream caps and timeouts.
    pub limits: Arc<limits::Limits>,
    /// `/ack/{token}` (policies with `ack_links`).
    pub ack: Option<Arc<ack::AckPages>>,
    /// The bus route checks (none without `[buses] routes_file`).
    pub buses: Option<crate::bus::task::BusHandle>,
    /// The built-in broker (its users file is reloaded with the rules).
    pub broker: Option<Arc<crate::broker::Broker>>,
}

/// The signed-in user (or API token) of a request, with the CSRF check done
/// for state-changing methods.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Who.
    pub who: Principal,
    /// From where (for the audit log).
    pub addr: String,
    /// What it signed in with, to check again later (an event stream ends
    /// when its session or token does).
    pub credential: Credential,
}

/// The secret a request was authenticated with.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A session cookie.
    Session(String),
    /// An API token.
    Token(String),
}

impl Credential {
    /// Whether it is still valid (a store error counts as valid: a
    /// database hiccup must not blank the security room's screens).
    pub fn still_valid(&self, store: &AuthStore) -> bool {
        let found = match self {
            Credential::Session(t) => store.session(t),
            Credential::Token(t) => store.token(t),
        };
        !matches!(found, Ok(None))
    }

    /// A key for counting per session or token that is not the secret itself.
    pub fn key(&self) -> String {
        match self {
            Credential::Session(t) | Credential::Token(t) => auth::digest(t),
        }
    }
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

/// The client's address: the TCP peer's, or, when the peer is a trusted
/// proxy, the rightmost address in `X-Forwarded-For` that is not one (each
/// proxy appends the address it was reached from, so entries left of the
/// last untrusted hop may be forged and are never read).
fn client_addr(parts: &Parts, trusted: &[IpAddr]) -> String {
    let Some(peer) = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return "unknown".into();
    };
    forwarded_client(peer, &parts.headers, trusted).to_string()
}

fn forwarded_client(peer: IpAddr, headers: &header::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => client = ip,
            Ok(ip) => return ip,
            // A proxy that writes what is not an address: keep the last good hop.
            Err(_) => return client,
        }
    }
    client
}

/// The client's address (for throttling and the audit log), through
/// trusted proxies.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts, &state.trusted_proxies)))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let addr = client_addr(parts, &state.trusted_proxies);
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let auth = state.auth.clone();
        if let Some(token) = bearer {
            let token = token.to_owned();
            let t = token.clone();
            let who = tokio::task::spawn_blocking(move || auth.token(&t))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??;
            return who
                .map(|who| Auth {
                    who,
                    addr,
                    credential: Credential::Token(token),
                })
                .ok_or(ApiError::Unauthorized);
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned()) else {
            return Err(ApiError::Unauthorized);
        };
        let t = token.clone();
        let who = tokio::task::spawn_blocking(move || auth.session(&t))
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
        Ok(Auth {
            who,
            addr,
            credential: Credential::Session(token),
        })
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
        .route("/buses", get(buses::buses))
        .route("/buses/weather", post(buses::weather))
        .route("/reports/bus", get(buses::report))
        .route("/duty", get(api::duty))
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
        .route("/ack/{token}", get(ack::show).post(ack::confirm))
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
    // A page may ask for less strict: the ack pages need `same-origin`, or
    // the browser posts their form with `Origin: null`.
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
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
    let limits = state.limits.clone();
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
    // Caps, TCP_NODELAY and the idle timeout (web::limits); then the
    // timeouts for the first request and for every request's headers, so a
    // socket that sends nothing, or too slowly, is closed.
    let accept = limits::LimitAcceptor::new(limits.clone());
    let mut server = axum_server::from_tcp(listener)?
        .handle(handle)
        .first_request_timeout(limits.first_request_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.header_timeout);
    let server: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        match tls {
            Some(t) => {
                let config =
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert, &t.key).await?;
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                    .handshake_timeout(limits.first_request_timeout)
                    .acceptor(accept);
                Box::pin(server.acceptor(acceptor).serve(app))
            }
            None => Box::pin(server.acceptor(accept).serve(app)),
        };
    Ok((local, server))
}

/// `/healthz`: public, for load balancers and monitoring, so without a
/// session or token it shows only each component's state; the details (the
/// addresses connected to, what is wrong) need a signed-in user or a token.
async fn healthz(State(s): State<AppState>, auth: Result<Auth, ApiError>) -> Response {
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
    let body = if auth.is_ok() {
        json!({
            "status": overall,
            "components": components,
            "spool_bytes": s.metrics.spool_bytes.get(),
            "spool_points": s.metrics.spool_points.get(),
            "devices": s.registry.len(),
        })
    } else {
        // The same shape as with details, so monitors read `components.<name>.status` either way.
        let states: std::collections::BTreeMap<&str, serde_json::Value> = components
            .iter()
            .map(|(name, c)| (name.as_str(), json!({ "status": c.status })))
            .collect();
        json!({ "status": overall, "components": states })
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let proxy = ip("10.0.0.2");
        let trusted = [proxy, ip("10.0.0.3")];
        let with = |xff: &[&str]| {
            let mut h = header::HeaderMap::new();
            for v in xff {
                h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
            }
            h
        };
        // Not from a proxy: the header is ignored.
        assert_eq!(
            forwarded_client(ip("192.0.2.9"), &with(&["1.2.3.4"]), &trusted),
            ip("192.0.2.9")
        );
        // Through two proxies; what the client wrote itself on the left is not believed.
        assert_eq!(
            forwarded_client(proxy, &with(&["6.6.6.6, 192.0.2.7", "10.0.0.3"]), &trusted),
            ip("192.0.2.7")
        );
        assert_eq!(forwarded_client(proxy, &with(&[]), &trusted), proxy);
        assert_eq!(
            forwarded_client(proxy, &with(&["garbage, 10.0.0.3"]), &trusted),
            ip("10.0.0.3")
        );
    }
}
