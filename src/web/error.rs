//! API errors: a short, clear JSON body with the right status; the detail
//! of a server-side failure goes to the log, not to the client.
//!
//! Every body is `{"error": "<English text>", "code": "<stable code>"}`.
//! The text is for people reading logs and `curl`; the code is for programs:
//! the page translates it (and falls back to the text for a code it does not
//! know), so codes are kept stable and only added to. Each variant has one
//! code; `Invalid` carries a finer one for a 400 the page explains, e.g.
//! `invalid_minutes`, `comment_too_long`, `unknown_building`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::alarms::lifecycle::NotAllowed;
use crate::alarms::CommandError;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 (`bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// 400 with a code naming the problem.
    #[error("{message}")]
    Invalid {
        /// Stable code, e.g. `unknown_building`.
        code: &'static str,
        /// What was wrong, in English.
        message: String,
    },
    /// 401.
    #[error("sign in first")]
    Unauthorized,
    /// 401 at sign-in.
    #[error("wrong user name or password")]
    LoginFailed,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 404: no open alarm has this id (`alarm_not_found`).
    #[error("no open alarm {0}")]
    AlarmNotFound(i64),
    /// 422: a file (or body) with these problems, each with its key path
    /// (`invalid_file`).
    #[error("{message}")]
    Unprocessable {
        /// One line on what was refused.
        message: String,
        /// Every problem.
        problems: Vec<String>,
    },
    /// 409: the state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// 409: the alarm's state does not allow the action (`not_allowed`);
    /// the body names both.
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    /// 429: the sign-in throttle asks the client to wait (web::signin).
    #[error("too many sign-in attempts; try again in {seconds} s")]
    SlowDown {
        /// Seconds to wait.
        seconds: u64,
    },
    /// 429: a cap on what one client may hold (web::limits).
    #[error("{0}")]
    Limit(String),
    /// 500: logged, not shown.
    #[error("internal error")]
    Internal(String),
    /// 503.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A 400 with its code.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The stable code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::LoginFailed => "login_failed",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::AlarmNotFound(_) => "alarm_not_found",
            ApiError::Unprocessable { .. } => "invalid_file",
            ApiError::Conflict(_) => "conflict",
            ApiError::NotAllowed(_) => "not_allowed",
            ApiError::SlowDown { .. } => "slow_down",
            ApiError::Limit(_) => "limit",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::LoginFailed => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::AlarmNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::NotAllowed(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::SlowDown { .. } | ApiError::Limit(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "Request failed.");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut body = json!({ "error": self.to_string(), "code": self.code() });
        match &self {
            // The page says it in words: "already acknowledged".
            ApiError::NotAllowed(n) => {
                body["action"] = json!(n.action);
                body["state"] = json!(n.state);
            }
            ApiError::Unprocessable { problems, .. } => body["problems"] = json!(problems),
            ApiError::SlowDown { seconds } => body["retry_after_s"] = json!(seconds),
            _ => {}
        }
        (status, Json(body)).into_response()
    }
}

impl From<crate::web::auth::AuthError> for ApiError {
    fn from(e: crate::web::auth::AuthError) -> Self {
        match e {
            crate::web::auth::AuthError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound(id) => ApiError::AlarmNotFound(id),
            CommandError::NotAllowed(n) => ApiError::NotAllowed(n),
            // The handlers check what they can first, with finer codes; this
            // is what the engine alone knows.
            CommandError::Invalid(m) => ApiError::invalid("invalid_command", m),
        }
    }
}

impl From<crate::alarms::store::StoreError> for ApiError {
    fn from(e: crate::alarms::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// `Json<T>` whose rejection is an `ApiError` with a readable message.
#[derive(Debug)]
pub(super) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(ApiError::invalid("bad_json", json_problem(&e))),
        }
    }
}

fn json_problem(e: &JsonRejection) -> String {
    match e {
        JsonRejection::MissingJsonContentType(_) => "send Content-Type: application/json".into(),
        other => format!("bad JSON body: {}", other.body_text()),
    }
}

/// `Query<T>` whose rejection is an `ApiError`.
#[derive(Debug)]
pub(super) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(ApiError::invalid("bad_query", query_problem(&e))),
        }
    }
}

fn query_problem(e: &QueryRejection) -> String {
    format!("bad query: {}", e.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let res = e.into_response();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 64 * 1024)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[tokio::test]
    async fn every_error_body_has_its_text_and_a_stable_code() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (
                ApiError::invalid("unknown_building", "no"),
                400,
                "unknown_building",
            ),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::LoginFailed, 401, "login_failed"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::AlarmNotFound(12), 404, "alarm_not_found"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (ApiError::SlowDown { seconds: 2 }, 429, "slow_down"),
            (ApiError::Limit("x".into()), 429, "limit"),
            (ApiError::Internal("secret detail".into()), 500, "internal"),
            (ApiError::Unavailable("x".into()), 503, "unavailable"),
        ];
        for (e, status, code) in cases {
            let (s, b) = body(e).await;
            assert_eq!(
                (s.as_u16(), b["code"].as_str()),
                (status, Some(code)),
                "{b}"
            );
            assert!(b["error"].as_str().is_some_and(|t| !t.is_empty()), "{b}");
        }
        let (_, b) = body(ApiError::AlarmNotFound(12)).await;
        assert_eq!(b["error"], "no open alarm 12");
        let (_, b) = body(ApiError::Internal("secret detail".into())).await;
        assert_eq!(
            b["error"], "internal error",
            "the detail goes to the log only"
        );
    }

    #[tokio::test]
    async fn the_engines_refusals_keep_their_kind() {
        let not_allowed = NotAllowed {
            action: "ack",
            state: "acked",
        };
        let (s, b) = body(CommandError::NotAllowed(not_allowed).into()).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(
            (&b["code"], &b["action"], &b["state"]),
            (&json!("not_allowed"), &json!("ack"), &json!("acked"))
        );
        let (s, b) = body(CommandError::NotFound(7).into()).await;
        assert_eq!(
            (s, &b["code"]),
            (StatusCode::NOT_FOUND, &json!("alarm_not_found"))
        );
        let (s, b) = body(CommandError::Invalid("too late".into()).into()).await;
        assert_eq!(
            (s, &b["code"], &b["error"]),
            (
                StatusCode::BAD_REQUEST,
                &json!("invalid_command"),
                &json!("too late")
            )
        );
    }
}
