//! The OpenAPI document of the API, generated from the handlers' `#[utoipa::path]`
//! annotations and the request and response types: adding a route means listing its
//! handler here, and `tests/api_routes.rs` checks every route of the router is in it.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::routes::{attachments, docs, info, mesh, query};

/// The shape of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `query`, `bad_request`, `invalid_json`,
    /// `unauthorized`, `not_found`, `conflict`, `too_large`, `range_not_satisfiable`,
    /// `invalid_document`, `internal`.
    pub code: String,
    /// For a person: what is wrong and, where it helps, what to do.
    pub message: String,
    /// For query syntax errors: the line (from 1).
    pub line: Option<usize>,
    /// For query syntax errors: the column in characters (from 1).
    pub column: Option<usize>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Trellis node API", description = "The local HTTP API of trellis-node. Live queries: `GET /v1/live` (WebSocket), see docs/websocket.md."),
    paths(
        query::execute,
        docs::list_collections,
        docs::list_docs,
        docs::get_doc,
        docs::put_doc,
        docs::patch_doc,
        docs::delete_doc,
        attachments::upload,
        attachments::download,
        info::health,
        info::status,
        info::metrics_page,
        info::openapi_json,
        mesh::list_subscriptions,
        mesh::add_subscription,
        mesh::remove_subscription,
        mesh::presence,
        mesh::fetch_attachment,
        mesh::fetch_progress,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
