//! The local HTTP and WebSocket API: [`app`] builds the axum [`Router`] over an
//! [`ApiState`] (the engine plus the API settings); [`crate::node::Node`] serves it.
//!
//! - [`error`]: [`ApiError`], the one JSON error shape.
//! - [`routes`]: the JSON routes by concern (queries, documents, attachments, node
//!   information), each documented for the OpenAPI document ([`openapi`]).
//! - [`live`]: `GET /v1/live`, live queries over a WebSocket, written over any
//!   `Sink`/`Stream` so tests drive it with channels.
//! - [`metrics`]: the Prometheus recorder and the per-request counters.
//!
//! The engine is synchronous: every handler calls it through [`ApiState::blocking`],
//! which runs the work with `spawn_blocking` behind a semaphore, so at most
//! [`MAX_BLOCKING`] storage calls are in flight and further requests wait their turn
//! instead of piling threads up.

pub mod error;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod routes;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::engine::Engine;

/// At most this many engine calls run at once on the blocking pool.
pub const MAX_BLOCKING: usize = 32;

/// The default limit of a JSON request body: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// The default limit of an uploaded attachment: 256 MiB.
pub const DEFAULT_MAX_ATTACHMENT_BYTES: usize = 256 << 20;

/// The API settings.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// When set, every route but `/v1/health` requires `Authorization: Bearer <token>`
    /// (`/v1/live` also accepts `?access_token=<token>`, for browsers).
    pub token: Option<String>,
    /// Largest JSON request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest attachment upload accepted (413 above).
    pub max_attachment_bytes: usize,
    /// The data directory, reported by `/v1/status` (`None`: in memory).
    pub data_dir: Option<PathBuf>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_attachment_bytes: DEFAULT_MAX_ATTACHMENT_BYTES,
            data_dir: None,
        }
    }
}

/// What every handler shares: cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    options: ApiOptions,
    blocking: Semaphore,
    shutdown: CancellationToken,
    sync: Option<crate::sync::SyncHandle>,
}

impl ApiState {
    /// The state of an API over `engine`. `shutdown` tells long-lived handlers
    /// (WebSockets) to close when the node stops.
    pub fn new(engine: Arc<Engine>, options: ApiOptions, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                options,
                blocking: Semaphore::new(MAX_BLOCKING),
                shutdown,
                sync: None,
            }),
        }
    }

    /// The same state with the node's mesh (subscriptions, presence). Call before
    /// cloning the state.
    pub fn with_sync(mut self, sync: Option<crate::sync::SyncHandle>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_sync is called on a fresh state")
            .sync = sync;
        self
    }

    /// The node's mesh, when it runs one.
    pub fn sync(&self) -> Option<&crate::sync::SyncHandle> {
        self.inner.sync.as_ref()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The settings.
    pub fn options(&self) -> &ApiOptions {
        &self.inner.options
    }

    /// Cancelled when the node shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Runs `work` on the engine off the async runtime (see the module documentation).
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        let _permit = self
            .inner
            .blocking
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("the node is shutting down".to_owned()))?;
        let engine = Arc::clone(&self.inner.engine);
        tokio::task::spawn_blocking(move || work(&engine))
            .await
            .map_err(|e| ApiError::Internal(format!("an engine task failed: {e}")))?
    }
}

/// The API router over `state`.
pub fn app(state: ApiState) -> Router {
    let max_body = state.options().max_body_bytes;
    let max_attachment = state.options().max_attachment_bytes;
    let protected = Router::new()
        .merge(routes::query::router())
        .merge(routes::docs::router())
        .merge(routes::info::router())
        .merge(routes::mesh::router())
        .merge(routes::attachments::router().layer(DefaultBodyLimit::max(max_attachment)))
        .route("/v1/live", axum::routing::get(live::handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(routes::info::public_router())
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(metrics::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route: see /v1/openapi.json".to_owned())
}

/// Requires the bearer token when one is configured.
async fn authorize(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.options().token {
        let header_token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Browsers cannot set headers on a WebSocket: the live feed also takes the token
        // as `?access_token=`, and only the live feed (query strings end up in logs).
        let query_token = (request.uri().path() == "/v1/live")
            .then(|| access_token(request.uri()))
            .flatten();
        let given = header_token.or(query_token.as_deref()).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// The `access_token` parameter of the query string, percent-decoded.
fn access_token(uri: &axum::http::Uri) -> Option<String> {
    let axum::extract::Query(mut params) =
        axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(uri)
            .ok()?;
    params.remove("access_token")
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `axum::Json` whose rejections are [`ApiError`]s (400, or 413 above the body limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokeN", b"secret-token"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }
}
