//! Documents by id, without the query language: `GET/PUT/PATCH/DELETE
//! /v1/collections/{c}/docs/{id}`, `GET /v1/collections/{c}/docs` (paged) and
//! `GET /v1/collections`.
//!
//! `{id}` is a string id, or an object id written as its JSON (`{"k":1}`,
//! URL-encoded).

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::ApiError;
use crate::api::openapi::ErrorBody;
use crate::api::ops::{self, Page};
use crate::api::{ApiJson, ApiState};

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/collections", get(list_collections))
        .route("/v1/collections/{collection}/docs", get(list_docs))
        .route(
            "/v1/collections/{collection}/docs/{id}",
            get(get_doc)
                .put(put_doc)
                .patch(patch_doc)
                .delete(delete_doc),
        )
}

/// The query string of a document listing.
#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// The collections of this node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Collections {
    /// Names, in order.
    pub collections: Vec<String>,
}

/// Lists the collections holding at least one document.
#[utoipa::path(get, path = "/v1/collections", tag = "documents",
    responses((status = 200, body = Collections), (status = 401, body = ErrorBody)))]
pub async fn list_collections(
    State(state): State<ApiState>,
) -> Result<Json<Collections>, ApiError> {
    let collections = state.blocking(ops::collections).await?;
    Ok(Json(Collections { collections }))
}

/// Lists the documents of a collection in id order, a page at a time.
#[utoipa::path(get, path = "/v1/collections/{collection}/docs", tag = "documents",
    params(("collection" = String, Path, description = "Collection name"), ListParams),
    responses(
        (status = 200, description = "A page (empty for a collection without documents)", body = Page),
        (status = 400, description = "Invalid collection name, limit or cursor", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list_docs(
    State(state): State<ApiState>,
    Path(collection): Path<String>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let collection = ops::collection(&collection)?;
    let page = state
        .blocking(move |engine| {
            ops::list_docs(
                engine,
                &collection,
                params.after.as_deref(),
                params.limit.unwrap_or(ops::DEFAULT_PAGE),
            )
        })
        .await?;
    Ok(Json(page))
}

/// One document.
#[utoipa::path(get, path = "/v1/collections/{collection}/docs/{id}", tag = "documents",
    params(("collection" = String, Path), ("id" = String, Path, description = "String id, or an object id as JSON")),
    responses((status = 200, body = Value), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_doc(
    State(state): State<ApiState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (collection, id) = (ops::collection(&collection)?, ops::doc_id(&id)?);
    let doc = state
        .blocking(move |engine| ops::get_doc(engine, &collection, &id))
        .await?;
    Ok(Json(doc))
}

/// Inserts the document, or sets the given fields of the existing one (fields not
/// given are kept). 201 when created, 200 when updated; answers the stored document.
#[utoipa::path(put, path = "/v1/collections/{collection}/docs/{id}", tag = "documents",
    params(("collection" = String, Path), ("id" = String, Path)),
    request_body = Value,
    responses((status = 200, body = Value), (status = 201, body = Value),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_doc(
    State(state): State<ApiState>,
    Path((collection, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (collection, id) = (ops::collection(&collection)?, ops::doc_id(&id)?);
    let (created, doc) = state
        .blocking(move |engine| ops::put_doc(engine, &collection, &id, body))
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(doc)))
}

/// Applies a JSON merge patch: the given fields are set, nested objects are merged
/// key by key, `null` removes a field. Answers the document after.
#[utoipa::path(patch, path = "/v1/collections/{collection}/docs/{id}", tag = "documents",
    params(("collection" = String, Path), ("id" = String, Path)),
    request_body = Value,
    responses((status = 200, body = Value), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_doc(
    State(state): State<ApiState>,
    Path((collection, id)): Path<(String, String)>,
    ApiJson(patch): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let (collection, id) = (ops::collection(&collection)?, ops::doc_id(&id)?);
    let doc = state
        .blocking(move |engine| ops::patch_doc(engine, &collection, &id, patch))
        .await?;
    Ok(Json(doc))
}

/// Deletes the document (a tombstone that syncs to peers). 204, or 404.
#[utoipa::path(delete, path = "/v1/collections/{collection}/docs/{id}", tag = "documents",
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_doc(
    State(state): State<ApiState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (collection, id) = (ops::collection(&collection)?, ops::doc_id(&id)?);
    state
        .blocking(move |engine| ops::delete_doc(engine, &collection, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
