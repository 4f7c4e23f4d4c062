//! The node itself: `GET /v1/health` (no token needed), `GET /v1/status`,
//! `GET /metrics` and `GET /v1/openapi.json`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::api::openapi::{self, ErrorBody};
use crate::api::{ApiState, metrics, ops};

/// The routes open without a token.
pub(crate) fn public_router() -> Router<ApiState> {
    Router::new().route("/v1/health", get(health))
}

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_page))
}

/// The answer of `/v1/health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the node answers.
    pub status: &'static str,
    /// The trellis-node version.
    pub version: &'static str,
    /// This node's actor id (hex).
    pub actor: String,
}

/// The answer of `/v1/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    /// This node's actor id (hex).
    pub actor: String,
    /// The trellis-node version.
    pub version: &'static str,
    /// The data directory (absent for an in-memory node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Number of actors in this node's version vector (writers whose changes it holds).
    pub version_vector_size: usize,
    /// Number of collections holding documents.
    pub collections: usize,
    /// Live queries registered with the engine.
    pub observers: usize,
}

/// Whether the node is up; needs no token.
#[utoipa::path(get, path = "/v1/health", tag = "node", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<ApiState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        actor: state.engine().actor().to_string(),
    })
}

/// What this node is and holds.
#[utoipa::path(get, path = "/v1/status", tag = "node",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)))]
pub async fn status(State(state): State<ApiState>) -> Result<Json<Status>, ApiError> {
    let data_dir = state
        .options()
        .data_dir
        .as_ref()
        .map(|d| d.display().to_string());
    let status = state
        .blocking(move |engine| {
            Ok(Status {
                actor: engine.actor().to_string(),
                version: env!("CARGO_PKG_VERSION"),
                data_dir,
                version_vector_size: engine.version().len(),
                collections: ops::collections(engine)?.len(),
                observers: engine.observer_count(),
            })
        })
        .await?;
    Ok(Json(status))
}

/// Prometheus metrics, as text.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
}

/// This document: the OpenAPI description of the API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}
