//! One error type for the API, mapped to HTTP in one place: `{"error": {code, message, field}}`.
//! Server-side failures are logged once here and shown to clients without internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong, as a client sees it.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a parameter or body field is wrong.
    BadRequest {
        field: Option<String>,
        message: String,
    },
    /// 401: no valid token.
    Unauthorized(String),
    /// 403: a valid token that may not do this.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 409: the request conflicts with the current state.
    Conflict(String),
    /// 500/503: our side failed; the detail goes to the log, not to the client.
    Internal(String),
    Unavailable(String),
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`, …
    pub code: &'static str,
    pub message: String,
    /// The parameter or body field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let (code, message, field) = match self {
            ApiError::BadRequest { field, message } => ("bad_request", message, field),
            ApiError::Unauthorized(m) => ("unauthorized", m, None),
            ApiError::Forbidden(m) => ("forbidden", m, None),
            ApiError::NotFound(m) => ("not_found", m, None),
            ApiError::Conflict(m) => ("conflict", m, None),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    "internal",
                    "internal error; see the server log".to_string(),
                    None,
                )
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                (
                    "unavailable",
                    "the database is not reachable right now; retry shortly".to_string(),
                    None,
                )
            }
        };
        (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code,
                    message,
                    field,
                },
            }),
        )
            .into_response()
    }
}

impl From<tollgate_clickhouse::Error> for ApiError {
    fn from(e: tollgate_clickhouse::Error) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<tollgate_clickhouse::clickhouse::error::Error> for ApiError {
    fn from(e: tollgate_clickhouse::clickhouse::error::Error) -> Self {
        ApiError::from(tollgate_clickhouse::Error::ClickHouse(e))
    }
}

impl From<tollgate_jobs::JobError> for ApiError {
    fn from(e: tollgate_jobs::JobError) -> Self {
        match e {
            tollgate_jobs::JobError::Store(e) => ApiError::from(e),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A rule's `params` or `channels` refused: a 400 naming the field.
impl From<tollgate_jobs::rules::ParamError> for ApiError {
    fn from(e: tollgate_jobs::rules::ParamError) -> Self {
        ApiError::BadRequest {
            field: Some(e.field),
            message: e.message,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body that did not parse: a 400 naming the field when serde says which.
pub fn json_rejection(e: axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection;
    let text = e.body_text();
    let field = match &e {
        JsonRejection::MissingJsonContentType(_) => Some("content-type".to_string()),
        _ => text.split('`').nth(1).map(str::to_string),
    };
    ApiError::BadRequest {
        field,
        message: text,
    }
}
