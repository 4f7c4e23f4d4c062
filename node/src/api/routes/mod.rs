//! The JSON routes, by concern. Each handler is annotated with `#[utoipa::path]`, from
//! which [`super::openapi`] builds the OpenAPI document.

pub mod attachments;
pub mod docs;
pub mod info;
pub mod mesh;
pub mod query;
