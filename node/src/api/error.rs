//! [`ApiError`]: every way an API request fails, as one JSON shape:
//! `{"error": {"code": "...", "message": "...", "line": 1, "column": 8}}` (`line` and
//! `column` only for query syntax errors), with a 4xx status for the caller's mistakes
//! and 500 for the node's own failures (which are logged here, where they are handled).

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use trellis_common::query::{Position, QueryError};

use crate::engine::EngineError;
use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The statement does not parse or bind: 400, with its position when known.
    #[error("{message}")]
    Query {
        /// What is wrong, position included.
        message: String,
        /// Where, for syntax errors.
        at: Option<Position>,
    },
    /// A request the API cannot act on (bad parameter, bad name, bad header): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not the JSON the route expects: 400.
    #[error("{0}")]
    InvalidJson(String),
    /// No or a wrong bearer token: 401.
    #[error("missing or wrong API token: send 'Authorization: Bearer <api.token>'")]
    Unauthorized,
    /// Nothing there: 404.
    #[error("{0}")]
    NotFound(String),
    /// A document id (or index name) already taken: 409.
    #[error("{0}")]
    Conflict(String),
    /// A body or a document above its limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// A range outside the attachment: 416.
    #[error("range not satisfiable: the attachment is {len} bytes")]
    RangeNotSatisfiable {
        /// The attachment's length.
        len: u64,
    },
    /// A document the engine cannot write (wrong type, bad `_id`): 422.
    #[error("{0}")]
    InvalidDocument(String),
    /// Something this node does not run (the mesh when disabled): 503.
    #[error("{0}")]
    Unavailable(String),
    /// The node failed: 500. The message is logged when the response is made.
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Query { .. } | Self::BadRequest(_) | Self::InvalidJson(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::InvalidDocument(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Query { .. } => "query",
            Self::BadRequest(_) => "bad_request",
            Self::InvalidJson(_) => "invalid_json",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too_large",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::InvalidDocument(_) => "invalid_document",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn position(&self) -> Option<Position> {
        match self {
            Self::Query { at, .. } => *at,
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let message = self.to_string();
        let at = self.position();
        let body = Body {
            error: Detail {
                code: self.code(),
                message: &message,
                line: at.map(|p| p.line),
                column: at.map(|p| p.column),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Self::RangeNotSatisfiable { len } = self
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        let at = match &err {
            QueryError::Unexpected { at, .. } | QueryError::Invalid { at, .. } => Some(*at),
            QueryError::InvalidName { at, .. } => *at,
            _ => None,
        };
        Self::Query {
            message: err.to_string(),
            at,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::DocumentTooLarge { .. } => Self::TooLarge(err.to_string()),
            StoreError::InvalidIndex(_) => Self::BadRequest(err.to_string()),
            StoreError::IndexExists(_) => Self::Conflict(err.to_string()),
            StoreError::UnknownIndex(_) => Self::NotFound(err.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Query(q) => q.into(),
            EngineError::Store(s) => s.into(),
            EngineError::Document { .. }
            | EngineError::Body { .. }
            | EngineError::InvalidId { .. }
            | EngineError::WrongType { .. } => Self::InvalidDocument(err.to_string()),
            EngineError::IdConflict { .. } | EngineError::IndexExists { .. } => {
                Self::Conflict(err.to_string())
            }
            EngineError::UnknownIndex { .. } => Self::NotFound(err.to_string()),
            EngineError::InvalidCollection(_)
            | EngineError::NotTransactional { .. }
            | EngineError::NotObservable { .. }
            | EngineError::EmptyTransaction => Self::BadRequest(err.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge(format!(
                "the request body is larger than the limit (api.max_body_bytes): {}",
                rejection.body_text()
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::BadRequest(
                "send the body as JSON with 'Content-Type: application/json'".to_owned(),
            ),
            _ => Self::InvalidJson(rejection.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(
                "the attachment is larger than the limit (api.max_attachment_bytes)".to_owned(),
            )
        } else {
            Self::BadRequest(rejection.body_text())
        }
    }
}
