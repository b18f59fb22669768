//! The JSON API handlers. Each checks the caller's role, does one thing,
//! audits what changes state, and answers in the shapes INTERFACE.md names.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use tokio::sync::oneshot;

use super::auth::Role;
use super::error::{ApiJson, ApiQuery};
use super::signin::{Busy, Refused};
use super::views::*;
use super::{ApiError, AppState, Auth, ClientAddr, SESSION_COOKIE};
use crate::alarms::store::Query;
use crate::alarms::{Alarm, AlarmView};
use crate::alarms::{Command, Suppression};
use crate::reading::now_ms;

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

fn me_body(a: &Auth) -> Me<'_> {
    Me {
        user: &a.who.user,
        role: a.who.role,
        csrf: a.who.csrf.as_deref(),
    }
}

/// `GET /api/me`.
pub(super) async fn me(auth: Auth) -> Response {
    Json(me_body(&auth)).into_response()
}

/// `POST /api/login`.
pub(super) async fn login(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    jar: CookieJar,
    ApiJson(body): ApiJson<Login>,
) -> Result<(CookieJar, Response), ApiError> {
    // The same name rule as at creation, so a name that can be made can sign in.
    super::auth::check_name(&body.username)?;
    if body.password.len() > super::auth::PASSWORD_MAX_BYTES {
        return Err(ApiError::invalid(
            "credentials_too_long",
            "password too long",
        ));
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
    let body = Json(me_body(&auth)).into_response();
    Ok((jar.add(cookie), body))
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
        .map_err(|_| ApiError::invalid("bad_alarm_id", format!("`{id}` is not an alarm id")))
}

/// Open alarms with flood members nested in their group (`members`) and
/// covered alarms under the one that covers them (`covers`), by severity
/// then newest. Every open alarm is in the answer exactly once: one nests
/// only under an open group, or under an open cover that is itself a row
/// (not grouped, not covered); otherwise it is a row of its own — an
/// alarm whose cover closed or sits in a flood group stands on its own.
fn nest(open: &[Alarm]) -> Vec<Nested> {
    let by_id: HashMap<i64, &Alarm> = open.iter().map(|a| (a.id, a)).collect();
    let group_of = |a: &Alarm| a.group.filter(|g| by_id.get(g).is_some_and(|g| g.is_group));
    let is_row_cover = |c: &&Alarm| {
        !c.is_group
            && group_of(c).is_none()
            && !c.inhibited_by.is_some_and(|x| by_id.contains_key(&x))
    };
    let cover_of = |a: &Alarm| {
        if a.is_group || group_of(a).is_some() {
            return None;
        }
        a.inhibited_by
            .filter(|c| by_id.get(c).is_some_and(is_row_cover))
    };
    let mut top: Vec<&Alarm> = open
        .iter()
        .filter(|a| group_of(a).is_none() && cover_of(a).is_none())
        .collect();
    top.sort_by(|a, b| {
        (a.severity, std::cmp::Reverse(a.raised_at))
            .cmp(&(b.severity, std::cmp::Reverse(b.raised_at)))
    });
    top.into_iter()
        .map(|a| Nested {
            alarm: AlarmView::from(a),
            members: a.is_group.then(|| {
                open.iter()
                    .filter(|m| group_of(m) == Some(a.id))
                    .map(AlarmView::from)
                    .collect()
            }),
            covers: open
                .iter()
                .filter(|m| cover_of(m) == Some(a.id))
                .map(AlarmView::from)
                .collect(),
        })
        .collect()
}

/// `GET /api/alarms?state=active|all&since=…&until=…&limit=…`.
pub(super) async fn alarms(
    State(s): State<AppState>,
    _auth: Auth,
    ApiQuery(q): ApiQuery<AlarmQuery>,
) -> Result<Response, ApiError> {
    match q.state.as_deref().unwrap_or("active") {
        "active" => {
            let open = s
                .rules
                .open
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(Json(Alarms {
                alarms: nest(&open),
            })
            .into_response())
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
            Ok(Json(Alarms::of(&list)).into_response())
        }
        other => Err(ApiError::invalid(
            "bad_state",
            format!("state must be active or all, not `{other}`"),
        )),
    }
}

/// `GET /api/alarms/{id}`: the alarm with its ledger entries.
pub(super) async fn alarm(
    State(s): State<AppState>,
    _auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<AlarmDetail>, ApiError> {
    let id = parse_id(&id)?;
    let db = s.alarms_db.clone();
    let notify_db = s.notify_db.clone();
    let (alarm, events, notifications) = blocking(move || {
        let db = db.lock().unwrap_or_else(|e| e.into_inner());
        // The notifier's own store; none yet (no routes, never started) is no notifications.
        let notifications = match notify_db.filter(|p| p.exists()) {
            Some(p) => crate::notify::outbox::Outbox::open(&p)
                .and_then(|o| o.of_alarm(id))
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            None => Vec::new(),
        };
        Ok((db.get(id)?, db.events(id)?, notifications))
    })
    .await?;
    let alarm = alarm.ok_or_else(|| ApiError::NotFound(format!("no alarm {id}")))?;
    Ok(Json(AlarmDetail {
        alarm: AlarmView::from(&alarm),
        events: events.into_iter().map(EventView::from).collect(),
        notifications: notifications
            .into_iter()
            .map(NotificationView::from)
            .collect(),
    }))
}

/// `GET /api/duty`: who is on duty now, per team.
pub(super) async fn duty(State(s): State<AppState>, _auth: Auth) -> Response {
    let now = now_ms();
    let teams = s.roster.as_ref().map_or_else(Vec::new, |r| {
        r.duty(now).into_iter().map(TeamOnDuty::from).collect()
    });
    Json(DutyNow { at: ts(now), teams }).into_response()
}

pub(super) async fn run_command(s: &AppState, cmd: Command) -> Result<Vec<Alarm>, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.rules
        .commands
        .send((cmd, tx))
        .await
        .map_err(|_| ApiError::Unavailable("the alarm engine is not running".into()))?;
    let result = rx
        .await
        .map_err(|_| ApiError::Unavailable("the alarm engine is not running".into()))?;
    Ok(result?)
}

fn changed(alarms: &[Alarm]) -> Json<Alarms<AlarmView>> {
    Json(Alarms::of(alarms))
}

/// The longest comment or reason, in characters.
const MAX_TEXT: usize = 2000;

/// Trimmed text, `None` when empty; refused with `code` when too long.
fn bounded(
    text: Option<String>,
    what: &str,
    code: &'static str,
) -> Result<Option<String>, ApiError> {
    match text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        Some(t) if t.chars().count() > MAX_TEXT => Err(ApiError::invalid(
            code,
            format!("{what} may have at most {MAX_TEXT} characters"),
        )),
        other => Ok(other),
    }
}

/// The longest shelving: a week (the engine holds the same bound).
const MAX_SHELVE_MINUTES: u32 = 7 * 24 * 60;

/// The longest drill or maintenance: a day.
const MAX_SUPPRESS_MINUTES: u32 = 24 * 60;

fn minutes_within(minutes: u32, max: u32) -> Result<(), ApiError> {
    if (1..=max).contains(&minutes) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_minutes",
            format!("minutes must be 1 to {max}, not {minutes}"),
        ))
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
) -> Result<Json<Alarms<AlarmView>>, ApiError> {
    auth.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let comment = bounded(b.comment, "a comment", "comment_too_long")?;
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
) -> Result<Json<Alarms<AlarmView>>, ApiError> {
    auth.require(Role::Operator)?;
    let id = parse_id(&id)?;
    minutes_within(b.minutes, MAX_SHELVE_MINUTES)?;
    let reason = bounded(Some(b.reason), "a reason", "reason_too_long")?
        .ok_or_else(|| ApiError::invalid("reason_required", "say why the alarm is shelved"))?;
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
) -> Result<Json<Alarms<AlarmView>>, ApiError> {
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
) -> Result<Json<Alarms<AlarmView>>, ApiError> {
    auth.require(Role::Operator)?;
    let id = parse_id(&id)?;
    let text = bounded(Some(b.text), "a comment", "comment_too_long")?
        .ok_or_else(|| ApiError::invalid("comment_required", "a comment needs text"))?;
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
) -> Result<Json<Suppressions>, ApiError> {
    let db = s.alarms_db.clone();
    let now = now_ms();
    let list = blocking(move || {
        Ok(db
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .load_suppressions()?)
    })
    .await?;
    Ok(Json(Suppressions {
        suppressions: list
            .into_iter()
            .filter(|x| x.until > now)
            .map(SuppressionView::from)
            .collect(),
    }))
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
    let building = b.building.trim().to_owned();
    let floor = b
        .floor
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned);
    if building.is_empty() {
        return Err(ApiError::invalid(
            "building_required",
            "a suppression needs a building",
        ));
    }
    minutes_within(b.minutes, MAX_SUPPRESS_MINUTES)?;
    let reason = bounded(Some(b.reason), "a reason", "reason_too_long")?.ok_or_else(|| {
        ApiError::invalid("reason_required", "say why (fire drill, maintenance…)")
    })?;
    // A zone is matched by the devices' building codes exactly: a name that
    // is no device's building (its display name, a typo) would silence
    // nothing while the operator believes the drill is covered.
    let known = s.registry.buildings();
    let Some(floors) = known.get(&building) else {
        let list: Vec<&str> = known.keys().map(String::as_str).take(20).collect();
        return Err(ApiError::invalid(
            "unknown_building",
            format!(
                "no device is in building `{building}`; known: {}",
                list.join(", ")
            ),
        ));
    };
    if let Some(f) = floor.as_ref().filter(|f| !floors.contains(*f)) {
        return Err(ApiError::invalid(
            "unknown_floor",
            format!("no device of building `{building}` is on floor `{f}`"),
        ));
    }
    let sup = Suppression {
        building: building.clone(),
        floor: floor.clone(),
        until: now_ms() + i64::from(b.minutes) * 60_000,
        reason: reason.clone(),
        by: auth.who.user.clone(),
    };
    run_command(&s, Command::Suppress(sup)).await?;
    auth.audit(
        &s,
        "suppress",
        &format!("{building} {}", floor.as_deref().unwrap_or("")),
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
pub(super) async fn devices(State(s): State<AppState>, _auth: Auth) -> Json<Devices> {
    let now = now_ms();
    Json(Devices {
        devices: s.registry.devices(now),
        counts: s
            .registry
            .counts(now)
            .into_iter()
            .map(|(k, c)| (k.as_str(), c))
            .collect(),
    })
}

/// `GET /api/buildings`: the buildings of the devices (declared, and seen
/// with a place) with their floors, for choosing a drill zone.
pub(super) async fn buildings(State(s): State<AppState>, _auth: Auth) -> Json<Buildings> {
    Json(Buildings {
        buildings: s
            .registry
            .buildings()
            .into_iter()
            .map(|(building, floors)| Building { building, floors })
            .collect(),
    })
}

// ---------------------------------------------------------------------------
// Reports

#[derive(Deserialize)]
pub(super) struct Range {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// `zh` (default) or `en`: headers, states and texts.
    #[serde(default)]
    lang: crate::alarms::Lang,
}

/// `GET /api/reports/ledger.csv?from=…&to=…&lang=zh|en` (default: the last 30 days, Chinese).
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
        return Err(ApiError::invalid("bad_range", "`from` must be before `to`"));
    }
    let db = s.alarms_db.clone();
    let opts = crate::alarms::ledger::LedgerOptions {
        lang: r.lang,
        offset: s.utc_offset,
    };
    let csv = blocking(move || {
        // A BOM, so that Excel (what inspectors open it with) reads the Chinese right.
        let mut out = "\u{feff}".as_bytes().to_vec();
        let db = db.lock().unwrap_or_else(|e| e.into_inner());
        crate::alarms::ledger::write_csv(&db, from, to, opts, &mut out)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(out)
    })
    .await?;
    auth.audit(&s, "ledger_export", "", &format!("{from}..{to}"));
    let name = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(String::new, |t| {
            t.with_timezone(&s.utc_offset).format("%Y%m%d").to_string()
        })
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
pub(super) async fn users(State(s): State<AppState>, auth: Auth) -> Result<Json<Users>, ApiError> {
    auth.require(Role::Admin)?;
    let store = s.auth.clone();
    let list = blocking(move || Ok(store.users()?)).await?;
    Ok(Json(Users { users: list }))
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
pub(super) async fn tokens(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<Tokens>, ApiError> {
    auth.require(Role::Admin)?;
    let store = s.auth.clone();
    let list = blocking(move || Ok(store.tokens()?)).await?;
    Ok(Json(Tokens { tokens: list }))
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
) -> Result<Json<NewTokenMade>, ApiError> {
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
    Ok(Json(NewTokenMade {
        name: b.name,
        role: b.role,
        token,
        owner: auth.who.owner,
        expires_in_days: days,
    }))
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
        .map_err(|_| ApiError::invalid("bad_token_id", format!("`{id}` is not a token id")))?;
    let store = s.auth.clone();
    if !blocking(move || Ok(store.delete_token(id)?)).await? {
        return Err(ApiError::NotFound(format!("no token {id}")));
    }
    auth.audit(&s, "delete_token", &id.to_string(), "");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/audit`.
pub(super) async fn audit(State(s): State<AppState>, auth: Auth) -> Result<Json<Audit>, ApiError> {
    auth.require(Role::Admin)?;
    let store = s.auth.clone();
    let list = blocking(move || Ok(store.audit_log(500)?)).await?;
    Ok(Json(Audit { audit: list }))
}

/// `POST /api/admin/reload`: reload the rules from the configuration file,
/// and the built-in broker's users file (the same path as SIGHUP); a file
/// with problems is refused with every problem listed (422), and what runs
/// stays.
pub(super) async fn reload(
    State(s): State<AppState>,
    auth: Auth,
) -> Result<Json<Reloaded>, ApiError> {
    auth.require(Role::Admin)?;
    let path = s
        .config_path
        .clone()
        .ok_or_else(|| ApiError::Conflict("this gateway was not started from a file".into()))?;
    match crate::rules::task::reload(&path, &s.rules).await {
        Ok(n) => {
            auth.audit(&s, "reload", "rules", &format!("{n} rules"));
            let broker_accounts = match &s.broker {
                Some(b) => match b.reload_users().await {
                    Ok(a) => {
                        auth.audit(&s, "reload", "broker_users", &format!("{a} accounts"));
                        Some(a)
                    }
                    Err(e) => {
                        auth.audit(&s, "reload_refused", "broker_users", &e.to_string());
                        return Err(ApiError::Unprocessable {
                            message: format!("the rules were reloaded ({n}); the broker's users file was not, the running accounts stay"),
                            problems: vec![e.to_string()],
                        });
                    }
                },
                None => None,
            };
            Ok(Json(Reloaded {
                rules: n,
                broker_accounts,
            }))
        }
        Err(crate::rules::task::ReloadError::Invalid(e)) => {
            let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
            auth.audit(&s, "reload_refused", "rules", &problems.join("; "));
            Err(ApiError::Unprocessable {
                message: format!(
                    "the configuration file has {} problem(s); the running rules stay",
                    problems.len()
                ),
                problems,
            })
        }
        Err(e @ crate::rules::task::ReloadError::Stopped) => {
            Err(ApiError::Unavailable(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::lifecycle::tests::raised;

    #[test]
    fn a_covered_alarm_is_listed_under_its_cover_while_that_is_open() {
        let cover = raised(1);
        let mut covered = raised(2);
        covered.id = 2;
        covered.rule = "smoke-obscuration".into();
        covered.inhibited_by = Some(cover.id);
        // As the page reads it: the JSON, covers beside the alarm's own fields.
        let json = |list: &[Alarm]| serde_json::json!(nest(list));
        let both = json(&[cover.clone(), covered.clone()]);
        assert_eq!(
            both.as_array().map(Vec::len),
            Some(1),
            "one event, one row: {both}"
        );
        assert_eq!(both[0]["covers"][0]["id"], 2);
        assert_eq!(both[0]["id"], 1);
        let alone = json(&[covered]);
        assert_eq!(
            alone.as_array().map(Vec::len),
            Some(1),
            "its cover closed: a row of its own"
        );
        assert_eq!(alone[0]["id"], 2);
    }

    /// Every id in the nested answer, wherever it sits.
    fn shown(list: &[Nested]) -> Vec<i64> {
        let mut ids: Vec<i64> = list
            .iter()
            .flat_map(|n| {
                let inner = n.members.iter().flatten().chain(&n.covers);
                std::iter::once(n.alarm.id).chain(inner.map(|v| v.id))
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn an_alarm_is_never_nested_where_no_row_shows_it() {
        // 10 is a flood group with member 1; 2 is covered by that member;
        // 3 is covered by 2 (a cover that is itself covered); 4 names a
        // group that is not open; 5 names a group and is covered.
        let mut group = raised(10);
        group.id = 10;
        group.is_group = true;
        let mut member = raised(1);
        member.group = Some(10);
        let mut under_member = raised(2);
        under_member.id = 2;
        under_member.inhibited_by = Some(1);
        let mut under_covered = raised(3);
        under_covered.id = 3;
        under_covered.inhibited_by = Some(2);
        let mut orphan = raised(4);
        orphan.id = 4;
        orphan.group = Some(99);
        let mut both = raised(5);
        both.id = 5;
        both.group = Some(10);
        both.inhibited_by = Some(2);
        let open = [group, member, under_member, under_covered, orphan, both];
        let list = nest(&open);
        assert_eq!(
            shown(&list),
            vec![1, 2, 3, 4, 5, 10],
            "each open alarm once"
        );
        let rows: Vec<i64> = list.iter().map(|n| n.alarm.id).collect();
        assert!(
            rows.contains(&2),
            "its cover is in a flood group: a row of its own"
        );
        assert!(rows.contains(&4), "its group is not open: a row of its own");
        let g = list
            .iter()
            .find(|n| n.alarm.id == 10)
            .map(|n| shown(std::slice::from_ref(n)));
        assert_eq!(g, Some(vec![1, 5, 10]), "the group holds its members");
    }
}
