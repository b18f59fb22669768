//! `/ack/{token}`: acknowledging an alarm from the link in a duty message,
//! without signing in — the one-time token (`notify::ack`) is the
//! credential, bound to the alarm and the person it was sent to.
//!
//! - `GET` shows the alarm (what, where, when, severity, in the person's
//!   language) and a confirm button, and changes nothing: chat apps fetch
//!   links for their previews.
//! - `POST` acknowledges as the person's page user, audited as
//!   "acknowledged by 张三 from the message link". Its form carries a nonce
//!   bound to the token and the time the page was shown, and a browser's
//!   `Origin` must be this page's; a used, expired or unknown token gets a
//!   clear page (410 / 404), counted in `/metrics`.
//! - Every request is counted per client address by a throttle like the
//!   sign-in's (`web::signin`), so tokens cannot be guessed at speed.
//!
//! Small server-rendered pages, every value HTML-escaped, under the same
//! security headers (CSP without inline scripts or styles) as the rest.

// The `Err` of these helpers is the page answered at once (a `Response`):
// boxing it buys nothing on a path taken a few times a day.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, ClientAddr};
use crate::alarms::{Alarm, Command, Lang, State as AlarmState};
use crate::notify::ack::{AckLinks, Lookup};
use crate::reading::now_ms;

/// The ack pages' shared parts.
#[derive(Debug)]
pub struct AckPages {
    /// The tokens.
    pub links: AckLinks,
    /// Guesses per address (its own, so a guesser never slows sign-in).
    pub throttle: super::signin::Throttle,
    /// The origin of `[web] public_url` (`https://safety.school.example`).
    pub origin: Option<String>,
}

impl AckPages {
    /// The pages of `cfg`, when a policy sends ack links.
    pub fn open_for(
        cfg: &crate::config::Config,
    ) -> Result<Option<Arc<Self>>, crate::notify::ack::AckError> {
        if !cfg.notify.policies.values().any(|p| p.ack_links) {
            return Ok(None);
        }
        Self::open(&cfg.gateway.data_dir, cfg.notify.public_url(&cfg.web))
            .map(|p| Some(Arc::new(p)))
    }

    /// The pages of the gateway whose data directory is `data_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        public_url: Option<&str>,
    ) -> Result<Self, crate::notify::ack::AckError> {
        let origin = public_url
            .and_then(|u| reqwest::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization());
        Ok(Self {
            links: AckLinks::open(data_dir)?,
            throttle: super::signin::Throttle::default(),
            origin,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct ConfirmForm {
    nonce: String,
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Picks the Chinese or the English of a text.
fn t(lang: Lang, zh: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
    }
}

fn page(status: StatusCode, lang: Lang, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"{l}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\
<body><main>\n<h1>{title}</h1>\n{body}\n</main></body></html>\n",
        l = t(lang, "zh-CN", "en"),
        title = esc(title),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page names an alarm and holds a nonce: never cached.
            (header::CACHE_CONTROL, "no-store"),
            // Its own origin on the confirm form's POST (with `no-referrer`
            // a browser sends `Origin: null`); nothing to any other site.
            (header::REFERRER_POLICY, "same-origin"),
        ],
        html,
    )
        .into_response()
}

/// The page of a token that cannot be used, counted.
fn refused(s: &AppState, lang: Lang, found: &Lookup) -> Response {
    let (status, result, title, text) = match found {
        Lookup::Used { .. } => (
            StatusCode::GONE,
            "used",
            t(lang, "链接已使用", "Link already used"),
            t(
                lang,
                "这个确认链接已经用过了，每个链接只能用一次。请在值班页面查看报警。",
                "This link has been used already; each link works once. See the alarm on the status page.",
            ),
        ),
        Lookup::Expired { .. } => (
            StatusCode::GONE,
            "expired",
            t(lang, "链接已过期", "Link expired"),
            t(
                lang,
                "这个确认链接已过期。请在值班页面确认报警，或联系保卫处。",
                "This link has expired. Acknowledge the alarm on the status page, or call the security room.",
            ),
        ),
        Lookup::Valid { .. } | Lookup::Unknown => (
            StatusCode::NOT_FOUND,
            "unknown",
            t(lang, "链接无效", "Link not valid"),
            t(
                lang,
                "这个确认链接无效。请检查链接是否完整，或在值班页面查看报警。",
                "This link is not valid. Check that it is complete, or see the alarm on the status page.",
            ),
        ),
    };
    s.metrics.ack_link(result);
    page(status, lang, title, &format!("<p>{}</p>", esc(text)))
}

fn person_of(s: &AppState, found: &Lookup) -> Option<crate::config::PersonConfig> {
    let id = match found {
        Lookup::Valid { person, .. } | Lookup::Used { person } | Lookup::Expired { person } => {
            person
        }
        Lookup::Unknown => return None,
    };
    s.roster.as_ref().and_then(|r| r.person(id).cloned())
}

fn describe(s: &AppState, a: &Alarm, lang: Lang) -> String {
    let place = a.place();
    let when = chrono::DateTime::from_timestamp_millis(a.raised_at)
        .map(|t| {
            t.with_timezone(&s.utc_offset)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    let rows = [
        (t(lang, "报警", "Alarm"), a.name.get(lang).to_owned()),
        (
            t(lang, "等级", "Severity"),
            crate::notify::task::severity_word(a.severity, lang).to_owned(),
        ),
        (t(lang, "位置", "Where"), place),
        (t(lang, "时间", "When"), when),
        (t(lang, "详情", "Detail"), a.message.get(lang).to_owned()),
    ];
    let mut out = String::from("<dl>\n");
    for (k, v) in rows {
        out.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", esc(k), esc(&v)));
    }
    out.push_str("</dl>");
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "An ack link request failed.");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

fn unavailable(lang: Lang) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        lang,
        t(lang, "暂时无法确认", "Cannot acknowledge now"),
        &format!(
            "<p>{}</p>",
            esc(t(
                lang,
                "网关暂时无法处理，请稍后再试，或在值班页面确认。",
                "The gateway cannot do this right now; try again shortly, or use the status page."
            ))
        ),
    )
}

/// Counts the request against the client's address; `Err` is the page to answer.
fn throttle(
    pages: &AckPages,
    s: &AppState,
    addr: &str,
    token: &str,
) -> Result<super::signin::Attempt, Response> {
    pages.throttle.reserve(addr, token, Instant::now()).map_err(
        |super::signin::Refused::Wait(wait)| {
            s.metrics.ack_link("throttled");
            let mut r = page(
                StatusCode::TOO_MANY_REQUESTS,
                Lang::Zh,
                "请稍后再试 / Try again later",
                "<p>请求过多，请稍后再试。</p><p>Too many requests; try again later.</p>",
            );
            if let Ok(v) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        },
    )
}

struct Found {
    lookup: Lookup,
    person: Option<crate::config::PersonConfig>,
    alarm: Option<Alarm>,
}

async fn find(
    s: &AppState,
    pages: &Arc<AckPages>,
    token: &str,
    consume: bool,
) -> Result<Found, Response> {
    let (p, tok, db) = (pages.clone(), token.to_owned(), s.alarms_db.clone());
    let now = now_ms();
    let found = blocking(move || {
        let lookup = if consume {
            p.links.consume(&tok, now)
        } else {
            p.links.lookup(&tok, now)
        }?;
        let alarm = match &lookup {
            Lookup::Valid { alarm_id, .. } => db
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(*alarm_id)
                .map_err(|e| {
                    tracing::error!(error = %e, "Cannot read the alarm of an ack link.");
                    e
                })
                .ok()
                .flatten(),
            _ => None,
        };
        Ok::<_, crate::notify::ack::AckError>((lookup, alarm))
    })
    .await?;
    let (lookup, alarm) = found.map_err(|e| {
        tracing::error!(error = %e, "Cannot read the ack links.");
        unavailable(Lang::Zh)
    })?;
    let person = person_of(s, &lookup);
    Ok(Found {
        lookup,
        person,
        alarm,
    })
}

fn ackable(a: &Alarm) -> bool {
    matches!(a.state, AlarmState::Unacked | AlarmState::ClearedUnacked)
}

fn handled(lang: Lang, a: &Alarm, detail: String) -> String {
    let by = a.acked_by.as_deref().unwrap_or("-");
    format!(
        "{detail}\n<p>{} {}</p>",
        esc(t(
            lang,
            "这条报警已处理，确认人：",
            "This alarm has been handled; acknowledged by"
        )),
        esc(by)
    )
}

/// `GET /ack/{token}`: the alarm and a confirm button; changes nothing.
pub(super) async fn show(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(token): Path<String>,
) -> Response {
    let Some(pages) = s.ack.clone() else {
        return refused(&s, Lang::Zh, &Lookup::Unknown);
    };
    let attempt = match throttle(&pages, &s, &addr, &token) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let f = match find(&s, &pages, &token, false).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let lang = f.person.as_ref().map_or(Lang::Zh, |p| p.lang);
    let (Lookup::Valid { .. }, Some(a)) = (&f.lookup, &f.alarm) else {
        return refused(&s, lang, &f.lookup);
    };
    pages.throttle.succeeded(attempt, Instant::now());
    s.metrics.ack_link("shown");
    let detail = describe(&s, a, lang);
    let name = f.person.as_ref().map_or("-", |p| p.name.as_str());
    if !ackable(a) {
        return page(
            StatusCode::OK,
            lang,
            t(lang, "报警已处理", "Alarm handled"),
            &handled(lang, a, detail),
        );
    }
    let nonce = pages.links.nonce(&token, now_ms());
    let body = format!(
        "{detail}\n<form method=\"post\" action=\"/ack/{tok}\">\
<input type=\"hidden\" name=\"nonce\" value=\"{nonce}\">\
<p>{who} {name}</p>\
<button type=\"submit\" id=\"confirm\">{button}</button></form>",
        tok = esc(&token),
        nonce = esc(&nonce),
        who = esc(t(lang, "确认人：", "Acknowledging as")),
        name = esc(name),
        button = esc(t(lang, "确认收到", "Acknowledge")),
    );
    page(
        StatusCode::OK,
        lang,
        t(lang, "确认报警", "Acknowledge the alarm"),
        &body,
    )
}

/// Whether a browser's `Origin` is this page's: `[web] public_url`'s or the
/// address the request was sent to. A request without one (not a browser
/// form, or an old browser) relies on the nonce.
fn origin_ok(pages: &AckPages, headers: &HeaderMap, tls: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if pages.origin.as_deref() == Some(origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    host.is_some_and(|h| origin == format!("{}://{h}", if tls { "https" } else { "http" }))
}

/// `POST /ack/{token}`: acknowledges as the person the link was sent to.
pub(super) async fn confirm(
    State(s): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(token): Path<String>,
    headers: HeaderMap,
    form: Result<Form<ConfirmForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(pages) = s.ack.clone() else {
        return refused(&s, Lang::Zh, &Lookup::Unknown);
    };
    let attempt = match throttle(&pages, &s, &addr, &token) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let bad_form = |lang: Lang| {
        s.metrics.ack_link("refused");
        page(
            StatusCode::FORBIDDEN,
            lang,
            t(lang, "请重新打开链接", "Open the link again"),
            &format!(
                "<p>{}</p>",
                esc(t(
                    lang,
                    "确认页面已过期或不是从链接打开的。请重新打开消息里的链接。",
                    "The page has expired or was not opened from the link. Open the link in the message again."
                ))
            ),
        )
    };
    // Looked up first (changing nothing) for the person's language and to
    // refuse a dead token before the form is judged.
    let peek = match find(&s, &pages, &token, false).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let lang = peek.person.as_ref().map_or(Lang::Zh, |p| p.lang);
    let (Lookup::Valid { .. }, Some(a)) = (&peek.lookup, &peek.alarm) else {
        return refused(&s, lang, &peek.lookup);
    };
    let nonce_ok = form
        .as_ref()
        .is_ok_and(|f| pages.links.nonce_ok(&token, &f.nonce, now_ms()));
    if !nonce_ok || !origin_ok(&pages, &headers, s.tls) {
        return bad_form(lang);
    }
    pages.throttle.succeeded(attempt, Instant::now());
    if !ackable(a) {
        let detail = describe(&s, a, lang);
        return page(
            StatusCode::OK,
            lang,
            t(lang, "报警已处理", "Alarm handled"),
            &handled(lang, a, detail),
        );
    }
    let f = match find(&s, &pages, &token, true).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Lookup::Valid { alarm_id, .. } = f.lookup else {
        // Used by a second tap in the meantime.
        return refused(&s, lang, &f.lookup);
    };
    let Some(person) = f.person else {
        return refused(&s, lang, &Lookup::Unknown);
    };
    let by = person.user.clone().unwrap_or_else(|| person.name.clone());
    let comment = format!("acknowledged by {} from the message link", person.name);
    let result = super::api::run_command(
        &s,
        Command::Ack {
            id: alarm_id,
            by: by.clone(),
            comment: Some(comment.clone()),
        },
    )
    .await;
    if let Err(e) = result {
        tracing::warn!(alarm = alarm_id, error = ?e, "An ack link could not acknowledge its alarm; the link stays usable.");
        let (p, tok) = (pages.clone(), token.clone());
        if let Ok(Err(e)) = blocking(move || p.links.release(&tok)).await {
            tracing::error!(error = %e, "Cannot release an ack link.");
        }
        return unavailable(lang);
    }
    if let Err(e) = s
        .auth
        .audit(&by, "ack", &format!("alarm {alarm_id}"), &comment, &addr)
    {
        tracing::error!(error = %e, "Cannot write the audit log.");
    }
    s.metrics.ack_link("acknowledged");
    tracing::info!(alarm = alarm_id, person = %person.id, "Alarm acknowledged from a message link.");
    let detail = f
        .alarm
        .as_ref()
        .map(|a| describe(&s, a, lang))
        .unwrap_or_default();
    page(
        StatusCode::OK,
        lang,
        t(lang, "已确认", "Acknowledged"),
        &format!(
            "{detail}\n<p id=\"done\">{} {}</p>",
            esc(t(lang, "已确认收到，确认人：", "Acknowledged by")),
            esc(&person.name)
        ),
    )
}
