//! `POST /v1/execute`: any statement of the query language, or a transaction.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::Value;
use trellis_common::query::Params;
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::api::openapi::ErrorBody;
use crate::api::{ApiJson, ApiState, ops};

/// The body of `POST /v1/execute`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// One statement, or several separated by `;` (run as one transaction).
    pub query: String,
    /// Values of the `:name` parameters.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub args: Params,
    /// Run as a transaction even if there is one statement: the answer is then
    /// `{"results": [...]}`.
    #[serde(default)]
    pub transaction: bool,
}

pub(crate) fn router() -> Router<ApiState> {
    Router::new().route("/v1/execute", post(execute))
}

/// Runs a statement, or several atomically.
///
/// One statement answers its result (`{"kind": "documents", "documents": [...]}`,
/// `{"kind": "mutated", "ids": [...]}`, ...); a transaction (several statements, or
/// `transaction: true`) answers `{"results": [...]}`, one per statement, and writes all
/// of them or nothing.
#[utoipa::path(
    post,
    path = "/v1/execute",
    tag = "query",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The statement's result, or `{\"results\": [...]}` for a transaction", body = Value),
        (status = 400, description = "Bad JSON, or a query error (with `line` and `column` for syntax errors)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "An INSERT met an existing `_id`", body = ErrorBody),
        (status = 413, description = "Body or document above the limit", body = ErrorBody),
        (status = 422, description = "A document the engine cannot write", body = ErrorBody),
    )
)]
pub async fn execute(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Json<Value>, ApiError> {
    let out = state
        .blocking(move |engine| {
            ops::execute(engine, &request.query, &request.args, request.transaction)
        })
        .await?;
    Ok(Json(out.to_json()))
}
