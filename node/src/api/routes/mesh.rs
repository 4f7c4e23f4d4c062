//! The mesh: `POST/GET/DELETE /v1/subscriptions` (what this node asks its peers for),
//! `GET /v1/presence` (this node, its links, its peers and the mesh graph), and
//! `POST/GET /v1/attachments/{hash}/fetch` (fetch an attachment from the peers, and its
//! progress). All answer 503 when the node runs without a mesh (`mesh.enabled =
//! false`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::api::openapi::ErrorBody;
use crate::api::{ApiJson, ApiState};
use crate::fetch::{FetchProgress, FetchState};
use crate::store::BlobHash;
use crate::sync::{Presence, SubscriptionInfo, SyncError, SyncHandle};

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/subscriptions",
            get(list_subscriptions).post(add_subscription),
        )
        .route("/v1/subscriptions/{id}", delete(remove_subscription))
        .route("/v1/presence", get(presence))
        .route(
            "/v1/attachments/{hash}/fetch",
            get(fetch_progress).post(fetch_attachment),
        )
}

/// The body of `POST /v1/attachments/{hash}/fetch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The attachment's length in bytes (the `len` of its token).
    pub len: u64,
}

fn blob_hash(text: &str) -> Result<BlobHash, ApiError> {
    BlobHash::from_hex(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "'{text}' is not an attachment hash (64 hexadecimal digits)"
        ))
    })
}

/// Fetches an attachment from the connected peers, in chunks, resuming with what is
/// missing when asked again after an interruption; verified against its hash when
/// complete. Answers the progress at once (202 while running, 200 when already here);
/// poll `GET` for more.
#[utoipa::path(post, path = "/v1/attachments/{hash}/fetch", tag = "mesh",
    params(("hash" = String, Path, description = "The attachment's BLAKE3 hash (hex)")),
    request_body = FetchRequest,
    responses((status = 202, body = FetchProgress), (status = 200, body = FetchProgress),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn fetch_attachment(
    State(state): State<ApiState>,
    Path(hash): Path<String>,
    ApiJson(body): ApiJson<FetchRequest>,
) -> Result<(StatusCode, Json<FetchProgress>), ApiError> {
    let hash = blob_hash(&hash)?;
    let progress = mesh(&state)?.fetch(hash, body.len).await?;
    let status = match progress.state {
        FetchState::Complete => StatusCode::OK,
        FetchState::Running | FetchState::Failed => StatusCode::ACCEPTED,
    };
    Ok((status, Json(progress)))
}

/// The progress of a fetch: chunks stored of the total, and its state.
#[utoipa::path(get, path = "/v1/attachments/{hash}/fetch", tag = "mesh",
    params(("hash" = String, Path, description = "The attachment's BLAKE3 hash (hex)")),
    responses((status = 200, body = FetchProgress), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn fetch_progress(
    State(state): State<ApiState>,
    Path(hash): Path<String>,
) -> Result<Json<FetchProgress>, ApiError> {
    let parsed = blob_hash(&hash)?;
    mesh(&state)?
        .fetch_progress(parsed)
        .await
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no fetch of attachment {hash} was started")))
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
    let (info, created) = mesh(&state)?.subscribe(&body.query).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
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
