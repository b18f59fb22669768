//! API errors: a short, clear JSON body with the right status; the detail
//! of a server-side failure goes to the log, not to the client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
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
    /// 409: the state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// 429.
    #[error("too many failed sign-ins; try again in {minutes} minutes")]
    TooManyAttempts {
        /// Minutes to wait.
        minutes: u64,
    },
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::LoginFailed => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyAttempts { .. } | ApiError::SlowDown { .. } | ApiError::Limit(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "Request failed.");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut body = json!({ "error": self.to_string() });
        if let ApiError::TooManyAttempts { minutes } = &self {
            body["retry_after_s"] = json!(minutes * 60);
        }
        if let ApiError::SlowDown { seconds } = &self {
            body["retry_after_s"] = json!(seconds);
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
            Err(e) => Err(ApiError::BadRequest(json_problem(&e))),
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
            Err(e) => Err(ApiError::BadRequest(query_problem(&e))),
        }
    }
}

fn query_problem(e: &QueryRejection) -> String {
    format!("bad query: {}", e.body_text())
}
