//! The JSON API handlers. Each checks the caller's role, does one thing,
//! audits what changes state, and answers in the shapes INTERFACE.md names.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use tokio::sync::oneshot;

use super::auth::Role;
use super::error::{ApiJson, ApiQuery};
use super::signin::{Busy, Refused};
use super::{ApiError, AppState, Auth, ClientAddr, SESSION_COOKIE};
use crate::alarms::store::Query;
use crate::alarms::{Alarm, AlarmView};
use crate::reading::Kind;
use crate::rules::engine::{Command, CommandError, Suppression};
use crate::sources::now_ms;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

// ---------------------------------------------------------------------------
// Session

#[derive(Deserialize)]
pub(super) struct Login {
    username: String,
    password: String,
}

fn me_body(a: &Auth) -> Json_ {
    json!({ "user": a.who.user, "role": a.who.role, "csrf": a.who.csrf })
}

/// `GET /api/me`.
pub(super) async fn me(auth: Auth) -> Json<Json_> {
    Json(me_body(&auth))
}

/// `POST /api/login`.
pub(super) async fn login(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    jar: CookieJar,
    ApiJson(body): ApiJson<Login>,
) -> Result<(CookieJar, Json<Json_>), ApiError> {
    // The same name rule as at creation, so a name that can be made can sign in.
    super::auth::check_name(&body.username)?;
    if body.password.len() > super::auth::PASSWORD_MAX_BYTES {
        return Err(ApiError::BadRequest("password too long".into()));
    }
    // Counted before it is checked: a burst cannot all pass (web::signin).
    let web = &s.metrics.web;
    let attempt = match s
        .signin
        .throttle
        .reserve(&addr, &body.username, Instant::now())
    {
        Ok(a) => a,
        Err(Refused::Wait(wait)) => {
            web.login_refused("throttled");
            return Err(ApiError::SlowDown {
                seconds: wait.as_secs_f64().ceil() as u64,
            });
        }
    };
    let auth = s.auth.clone();
    let name = body.username.clone();
    let metrics = s.metrics.clone();
    let checked = s
        .signin
        .hasher
        .run(move || {
            metrics.web.login_checks.inc();
            let result = auth.login(&name, &body.password);
            // The audit write stays off the async workers, like the check.
            let action = match &result {
                Ok(Some(_)) => "login",
                _ => "login_failed",
            };
            let _ = auth.audit(&name, action, "", "", &addr);
            (result, addr)
        })
        .await;
    let (result, addr) = match checked {
        Ok(r) => r,
        Err(Busy) => {
            s.signin.throttle.refund(attempt);
            web.login_refused("busy");
            return Err(ApiError::Unavailable(
                "sign-in is busy; try again in a few seconds".into(),
            ));
        }
    };
    let Some((token, who)) = result? else {
        web.login_failures.inc();
        return Err(ApiError::LoginFailed);
    };
    s.signin.throttle.succeeded(attempt, Instant::now());
    let credential = super::Credential::Session(token.clone());
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(s.tls)
        .path("/")
        .max_age(time_days(7))
        .build();
    let auth = Auth {
        who,
        addr,
        credential,
    };
    Ok((jar.add(cookie), Json(me_body(&auth))))
}

fn time_days(d: i64) -> time::Duration {
    time::Duration::days(d)
}

/// `POST /api/logout`.
pub(super) async fn logout(
    State(s): State<AppState>,
    auth: Auth,
    jar: CookieJar,
) -> Result<(CookieJar, StatusCode), ApiError> {
    if let Some(c) = jar.get(SESSION_COOKIE) {
        let token = c.value().to_owned();
        let store = s.auth.clone();
        blocking(move || Ok(store.logout(&token)?)).await?;
    }
    auth.audit(&s, "logout", "", "");
    Ok((
        jar.remove(Cookie::build(SESSION_COOKIE).path("/")),
        StatusCode::NO_CONTENT,
    ))
}

// ---------------------------------------------------------------------------
// Alarms

#[derive(Deserialize)]
pub(super) struct AlarmQuery {
    state: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<usize>,
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not an alarm id")))
}

/// Open alarms with flood members nested in their group, by severity then newest.
fn nest(open: &[Alarm]) -> Vec<Json_> {
    let mut top: Vec<&Alarm> = open.iter().filter(|a| a.group.is_none()).collect();
    top.sort_by(|a, b| {
        (a.severity, std::cmp::Reverse(a.raised_at))
            .cmp(&(b.severity, std::cmp::Reverse(b.raised_at)))
    });
    top.into_iter()
        .map(|a| {
            let mut v = json!(AlarmView::from(a));
            if a.is_group {
                let members: Vec<AlarmView> = open
                    .iter()
                    .filter(|m| m.group == Some(a.id))
                    .map(AlarmView::from)
                    .collect();
                v["members"] = json!(members);
            }
            v
        })
        .collect()
}

/// `GET /api/alarms?state=active|all&since=…&until=…&limit=…`.
pub(super) async fn alarms(
    State(s): State<AppState>,
    _auth: Auth,
    ApiQuery(q): ApiQuery<AlarmQuery>,
) -> Result<Json<Json_>, ApiError> {
    match q.state.as_deref().unwrap_or("active") {
        "active" => {
            let open = s
                .rules
                .open
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(Json(json!({ "alarms": nest(&open) })))
        }
        "all" => {
            let query = Query {
                open_only: false,
                since: q.since.map(|t| t.timestamp_millis()),
                until: q.until.map(|t| t.timestamp_millis()),
                limit: q.limit.unwrap_or(200).clamp(1, 5000),
            };
            let db = s.alarms_db.clone();
            let list =
                blocking(move || Ok(db.lock().unwrap_or_else(|e| e.into_inner()).query(&query)?))
                    .await?;
            let views: Vec<AlarmView> = list.iter().map(AlarmView::from).collect();
            Ok(Json(json!({ "alarms": views })))
        }
        other => Err(ApiError::BadRequest(format!(
            "state must be active or all, not `{other}`"
        ))),
    }
}

/// `GET /api/alarms/{id}`: the alarm with its ledger entries.
pub(super) async fn alarm(
    State(s): State<AppState>,
    _auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let id = parse_id(&id)?;
    let db = s.alarms_db.clone();
    let (alarm, events) = blocking(move || {
        let db = db.lock().unwrap_or_else(|e| e.into_inner());
        Ok((db.get(id)?, db.events(id)?))
    })
    .await?;
    let alarm = alarm.ok_or_else(|| ApiError::NotFound(format!("no alarm {id}")))?;
    let events: Vec<Json_> = events
        .into_iter()
        .map(|e| {
            json!({
                "at": DateTime::<Utc>::from_timestamp_millis(e.at),
                "action": e.action,
                "from": e.from,
                "to": e.to,
                "user": e.user,
                "comment": e.comment,
                "value": e.value,
            })
        })
        .collect();
    Ok(Json(
        json!({ "alarm": AlarmView::from(&alarm), "events": events }),
    ))
}

async fn run_command(s: &AppState, cmd: Command) -> Result<Vec<Alarm>, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.rules
        .commands
        .send((cmd, tx))
        .await
        .map_err(|_| ApiError::Unavailable("the alarm engine is not running".into()))?;
    let result = rx
        .await
        .map_err(|_| ApiError::Unavailable("the alarm engine is not running".into()))?;
    result.map_err(|e| match e {
        CommandError::NotFound(id) => ApiError::NotFound(format!("no open alarm {id}")),
        CommandError::NotAllowed(n) => ApiError::Conflict(n.to_string()),
        CommandError::Invalid(m) => ApiError::BadRequest(m),
    })
}

fn changed(alarms: &[Alarm]) -> Json<Json_> {
    let views: Vec<AlarmView> = alarms.iter().map(AlarmView::from).collect();
    Json(json!({ "alarms": views }))
}

fn bounded(text: Option<String>, what: &str) -> Result<Option<String>, ApiError> {
    match text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() > 2000 => Err(ApiError::BadRequest(format!(
            "{what} may have at most 2000 characters"
        ))),
        other => Ok(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AckBody {
    comment: Option<String>,
}

/// `POST /api/alarms/{id}/ack`.
pub(super) async fn ack(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<AckBody>,
) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let comment = bounded(b.comment, "a comment")?;
    let out = run_command(
        &s,
        Command::Ack {
            id,
            by: auth.who.user.clone(),
            comment: comment.clone(),
        },
    )
    .await?;
    auth.audit(
        &s,
        "ack",
        &format!("alarm {id}"),
        comment.as_deref().unwrap_or(""),
    );
    Ok(changed(&out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ShelveBody {
    minutes: u32,
    reason: String,
}

/// `POST /api/alarms/{id}/shelve`.
pub(super) async fn shelve(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ShelveBody>,
) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let reason = bounded(Some(b.reason), "a reason")?
        .ok_or_else(|| ApiError::BadRequest("say why the alarm is shelved".into()))?;
    let out = run_command(
        &s,
        Command::Shelve {
            id,
            by: auth.who.user.clone(),
            minutes: b.minutes,
            reason: reason.clone(),
        },
    )
    .await?;
    auth.audit(
        &s,
        "shelve",
        &format!("alarm {id}"),
        &format!("{} min: {reason}", b.minutes),
    );
    Ok(changed(&out))
}

/// `POST /api/alarms/{id}/unshelve`.
pub(super) async fn unshelve(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let out = run_command(
        &s,
        Command::Unshelve {
            id,
            by: auth.who.user.clone(),
        },
    )
    .await?;
    auth.audit(&s, "unshelve", &format!("alarm {id}"), "");
    Ok(changed(&out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommentBody {
    text: String,
}

/// `POST /api/alarms/{id}/comment`.
pub(super) async fn comment(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<CommentBody>,
) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let text = bounded(Some(b.text), "a comment")?
        .ok_or_else(|| ApiError::BadRequest("a comment needs text".into()))?;
    let out = run_command(
        &s,
        Command::Comment {
            id,
            by: auth.who.user.clone(),
            text: text.clone(),
        },
    )
    .await?;
    auth.audit(&s, "comment", &format!("alarm {id}"), &text);
    Ok(changed(&out))
}

// ---------------------------------------------------------------------------
// Zones under drill or maintenance

/// `GET /api/suppressions`: read from the store, which the engine keeps current.
pub(super) async fn suppressions(
    State(s): State<AppState>,
    _auth: Auth,
) -> Result<Json<Json_>, ApiError> {
    let db = s.alarms_db.clone();
    let now = now_ms();
    let list = blocking(move || {
        Ok(db
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .load_suppressions()?)
    })
    .await?;
    let list: Vec<Json_> = list
        .into_iter()
        .filter(|x| x.until > now)
        .map(|x| json!({ "building": x.building, "floor": x.floor, "until": DateTime::<Utc>::from_timestamp_millis(x.until), "reason": x.reason, "by": x.by }))
        .collect();
    Ok(Json(json!({ "suppressions": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SuppressBody {
    building: String,
    floor: Option<String>,
    minutes: u32,
    reason: String,
}

/// `POST /api/suppressions`: a drill or maintenance in a zone.
pub(super) async fn suppress(
    State(s): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<SuppressBody>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Operator)?;
    if b.building.trim().is_empty() || b.minutes == 0 || b.minutes > 24 * 60 {
        return Err(ApiError::BadRequest(
            "a suppression needs a building and 1 to 1440 minutes".into(),
        ));
    }
    let reason = bounded(Some(b.reason), "a reason")?
        .ok_or_else(|| ApiError::BadRequest("say why (fire drill, maintenance…)".into()))?;
    let sup = Suppression {
        building: b.building.clone(),
        floor: b.floor.clone(),
        until: now_ms() + i64::from(b.minutes) * 60_000,
        reason: reason.clone(),
        by: auth.who.user.clone(),
    };
    run_command(&s, Command::Suppress(sup)).await?;
    auth.audit(
        &s,
        "suppress",
        &format!("{} {}", b.building, b.floor.as_deref().unwrap_or("")),
        &format!("{} min: {reason}", b.minutes),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndBody {
    building: String,
    floor: Option<String>,
}

/// `POST /api/suppressions/end`.
pub(super) async fn end_suppression(
    State(s): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<EndBody>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Operator)?;
    run_command(
        &s,
        Command::EndSuppression {
            building: b.building.clone(),
            floor: b.floor.clone(),
        },
    )
    .await?;
    auth.audit(
        &s,
        "end_suppression",
        &format!("{} {}", b.building, b.floor.as_deref().unwrap_or("")),
        "",
    );
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Devices and buses

/// `GET /api/devices`.
pub(super) async fn devices(State(s): State<AppState>, _auth: Auth) -> Json<Json_> {
    let now = now_ms();
    let counts: BTreeMap<&str, Json_> = s
        .registry
        .counts(now)
        .into_iter()
        .map(|(k, c)| (k.as_str(), json!(c)))
        .collect();
    Json(json!({ "devices": s.registry.devices(now), "counts": counts }))
}

/// `GET /api/buses`.
pub(super) async fn buses(State(s): State<AppState>, _auth: Auth) -> Json<Json_> {
    let buses: Vec<Json_> = s
        .registry
        .devices(now_ms())
        .into_iter()
        .filter(|d| d.kind == Kind::Bus)
        .map(|d| {
            let f = |n: &str| d.fields.get(n).cloned().unwrap_or(Json_::Null);
            json!({
                "id": d.id,
                "site": d.site,
                "name": d.location.as_ref().and_then(|l| l.name.clone()),
                "online": d.online,
                "last_seen": d.last_seen,
                "lat": f("lat"),
                "lon": f("lon"),
                "speed_kmh": f("speed_kmh"),
                "heading_deg": f("heading_deg"),
                "passengers": f("passengers"),
                "door_open": f("door_open"),
                "route_id": f("route_id"),
                // Route compliance arrives with the route work.
                "compliance": Json_::Null,
            })
        })
        .collect();
    Json(json!({ "buses": buses, "routes": [] }))
}

// ---------------------------------------------------------------------------
// Reports

#[derive(Deserialize)]
pub(super) struct Range {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

/// `GET /api/reports/ledger.csv?from=…&to=…` (default: the last 30 days).
pub(super) async fn ledger(
    State(s): State<AppState>,
    auth: Auth,
    ApiQuery(r): ApiQuery<Range>,
) -> Result<Response, ApiError> {
    let to = r.to.map_or_else(now_ms, |t| t.timestamp_millis());
    let from = r
        .from
        .map_or(to - 30 * 86_400_000, |t| t.timestamp_millis());
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    let db = s.alarms_db.clone();
    let csv = blocking(move || {
        // A BOM, so that Excel (what inspectors open it with) reads the Chinese right.
        let mut out = "\u{feff}".as_bytes().to_vec();
        db.lock()
            .unwrap_or_else(|e| e.into_inner())
            .ledger_csv(from, to, &mut out)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(out)
    })
    .await?;
    auth.audit(&s, "ledger_export", "", &format!("{from}..{to}"));
    let name = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .map_or_else(String::new, |t| t.format("%Y%m%d").to_string())
    };
    let disposition = format!(
        "attachment; filename=\"ledger-{}-{}.csv\"",
        name(from),
        name(to)
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        csv,
    )
        .into_response())
}

// ---------------------------------------------------------------------------
// Administration

/// `GET /api/users`.
pub(super) async fn users(State(s): State<AppState>, auth: Auth) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Admin)?;
    let store = s.auth.clone();
    let list = blocking(move || Ok(store.users()?)).await?;
    Ok(Json(json!({ "users": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    name: String,
    role: Role,
    password: String,
}

/// `POST /api/users`: create a user or set a user's role and password.
pub(super) async fn add_user(
    State(s): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<NewUser>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Admin)?;
    let store = s.auth.clone();
    let (name, role) = (b.name.clone(), b.role);
    // Hashing the new password: on the hashing pool, like every Argon2 run.
    s.signin
        .hasher
        .run(move || store.set_user(&name, role, &b.password))
        .await
        .map_err(|_| ApiError::Unavailable("busy; try again in a few seconds".into()))??;
    auth.audit(&s, "set_user", &b.name, b.role.as_str());
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/users/{name}`.
pub(super) async fn delete_user(
    State(s): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Admin)?;
    if name == auth.who.owner {
        return Err(ApiError::Conflict("you cannot delete yourself".into()));
    }
    let store = s.auth.clone();
    let n = name.clone();
    if !blocking(move || Ok(store.delete_user(&n)?)).await? {
        return Err(ApiError::NotFound(format!("no user `{name}`")));
    }
    auth.audit(&s, "delete_user", &name, "");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/tokens`.
pub(super) async fn tokens(State(s): State<AppState>, auth: Auth) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Admin)?;
    let store = s.auth.clone();
    let list = blocking(move || Ok(store.tokens()?)).await?;
    Ok(Json(json!({ "tokens": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
    role: Role,
    /// Refused after this many days; without it, valid until revoked (or its owner is deleted).
    expires_in_days: Option<u32>,
}

/// `POST /api/tokens`: the secret is in this answer only.
pub(super) async fn add_token(
    State(s): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<NewToken>,
) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Admin)?;
    // Owned by the signed-in user (a token made with a token: that token's
    // owner), never above what the caller may do now.
    if b.role > auth.who.role {
        return Err(ApiError::Forbidden(
            "a token cannot have a role above yours".into(),
        ));
    }
    let store = s.auth.clone();
    let owner = auth.who.owner.clone();
    let (name, role, days) = (b.name.clone(), b.role, b.expires_in_days);
    let token = blocking(move || Ok(store.create_token(&name, role, &owner, days)?)).await?;
    auth.audit(
        &s,
        "create_token",
        &b.name,
        &format!(
            "{}{}",
            b.role.as_str(),
            days.map_or(String::new(), |d| format!(", {d} days"))
        ),
    );
    Ok(Json(
        json!({ "name": b.name, "role": b.role, "token": token, "owner": auth.who.owner, "expires_in_days": days }),
    ))
}

/// `DELETE /api/tokens/{id}`.
pub(super) async fn delete_token(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(Role::Admin)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not a token id")))?;
    let store = s.auth.clone();
    if !blocking(move || Ok(store.delete_token(id)?)).await? {
        return Err(ApiError::NotFound(format!("no token {id}")));
    }
    auth.audit(&s, "delete_token", &id.to_string(), "");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/audit`.
pub(super) async fn audit(State(s): State<AppState>, auth: Auth) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Admin)?;
    let store = s.auth.clone();
    let list = blocking(move || Ok(store.audit_log(500)?)).await?;
    Ok(Json(json!({ "audit": list })))
}

/// `POST /api/admin/reload`: reload the rules from the configuration file;
/// a file with problems is refused with every problem listed.
pub(super) async fn reload(State(s): State<AppState>, auth: Auth) -> Result<Json<Json_>, ApiError> {
    auth.require(Role::Admin)?;
    let path = s
        .config_path
        .clone()
        .ok_or_else(|| ApiError::Conflict("this gateway was not started from a file".into()))?;
    let loaded = blocking(move || {
        crate::config::Config::load(&path).map_err(|e| ApiError::BadRequest(e.to_string()))
    })
    .await;
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            auth.audit(&s, "reload_refused", "rules", &e.to_string());
            return Err(e);
        }
    };
    let set = crate::rules::RuleSet::compile(&loaded.config).map_err(|p| {
        ApiError::BadRequest(
            p.into_iter()
                .map(|(k, m)| format!("{k}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let n = set.rules.len();
    s.rules
        .reload
        .send(set)
        .await
        .map_err(|_| ApiError::Unavailable("the alarm engine is not running".into()))?;
    auth.audit(&s, "reload", "rules", &format!("{n} rules"));
    Ok(Json(json!({ "rules": n })))
}
