//! The mesh: `POST/GET/DELETE /v1/subscriptions` (what this node asks its peers for)
//! and `GET /v1/presence` (this node, its links and its peers). Both answer 503 when
//! the node runs without a mesh (`mesh.enabled = false`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::api::openapi::ErrorBody;
use crate::api::{ApiJson, ApiState};
use crate::sync::{Presence, SubscriptionInfo, SyncError, SyncHandle};

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/subscriptions",
            get(list_subscriptions).post(add_subscription),
        )
        .route("/v1/subscriptions/{id}", delete(remove_subscription))
        .route("/v1/presence", get(presence))
}

/// The body of `POST /v1/subscriptions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// A `SELECT` without parameters, e.g. `SELECT * FROM cars WHERE color = 'blue'`.
    pub query: String,
}

fn mesh(state: &ApiState) -> Result<&SyncHandle, ApiError> {
    state.sync().ok_or_else(|| {
        ApiError::Unavailable("this node runs without a mesh (mesh.enabled = false)".to_owned())
    })
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Subscription(e) => ApiError::BadRequest(e.to_string()),
            SyncError::FromConfig(_) => ApiError::Conflict(e.to_string()),
            SyncError::Failed(message) => ApiError::Internal(message),
        }
    }
}

/// The subscriptions in effect (from the configuration and added here).
#[utoipa::path(get, path = "/v1/subscriptions", tag = "mesh",
    responses((status = 200, body = [SubscriptionInfo]), (status = 503, body = ErrorBody)))]
pub async fn list_subscriptions(
    State(state): State<ApiState>,
) -> Result<Json<Vec<SubscriptionInfo>>, ApiError> {
    Ok(Json(mesh(&state)?.subscriptions()?))
}

/// Asks the peers for the documents a query matches (kept across restarts). Adding a
/// subscription that exists answers it with 200.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "mesh", request_body = NewSubscription,
    responses((status = 201, body = SubscriptionInfo), (status = 200, body = SubscriptionInfo),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn add_subscription(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<NewSubscription>,
) -> Result<(StatusCode, Json<SubscriptionInfo>), ApiError> {
    let mesh = mesh(&state)?;
    let existed = mesh
        .subscriptions()?
        .into_iter()
        .any(|s| s.query == body.query.trim());
    let info = mesh.subscribe(&body.query).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)))
}

/// Removes a subscription added through the API, by id (or URL-encoded query text).
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "mesh",
    params(("id" = String, Path, description = "The subscription's id or its query text")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn remove_subscription(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if mesh(&state)?.unsubscribe(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no subscription '{id}'")))
    }
}

/// This node in the mesh: its ids, listen addresses and direct peers with their links.
#[utoipa::path(get, path = "/v1/presence", tag = "mesh",
    responses((status = 200, body = Presence), (status = 503, body = ErrorBody)))]
pub async fn presence(State(state): State<ApiState>) -> Result<Json<Presence>, ApiError> {
    Ok(Json(mesh(&state)?.presence().await?))
}
