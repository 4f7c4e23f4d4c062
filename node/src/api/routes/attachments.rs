//! Attachments: `POST /v1/attachments` stores the body as a content-addressed blob and
//! answers the token to put in a document; `GET /v1/attachments/{hash}` streams a blob
//! back, with `Content-Length`, `Accept-Ranges: bytes` and one `Range` (206, or 416
//! outside the blob). A request with several ranges gets the whole blob (200), as
//! RFC 9110 allows.

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::api::openapi::ErrorBody;
use crate::store::BlobHash;
use crate::store::blobs::CHUNK_SIZE;

pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/attachments", post(upload))
        .route("/v1/attachments/{hash}", get(download))
}

/// Stores the body as an attachment. Answers its token
/// (`{"_attachment": "<blake3 hex>", "len": n, "meta": {...}}`), to put in a document.
/// `meta` holds the request's `Content-Type`, when given.
#[utoipa::path(post, path = "/v1/attachments", tag = "attachments",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "The attachment token", body = Value),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn upload(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body?;
    let meta = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(content_type) => json!({ "content_type": content_type }),
        None => json!({}),
    };
    let token = state
        .blocking(move |engine| Ok(engine.store().put_blob(&body, meta)?))
        .await?;
    Ok((StatusCode::CREATED, Json(token.to_json())))
}

/// One byte range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte.
    pub end: u64,
}

/// Parses a `Range` header against a blob of `len` bytes: `Ok(None)` means "send it
/// all" (no header, or several ranges, or a unit other than bytes); `Err` means 416.
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<ByteRange>, ApiError> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || ApiError::RangeNotSatisfiable { len };
    let (first, last) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // `bytes=-n`: the last n bytes.
        let n: u64 = last.parse().map_err(|_| unsatisfiable())?;
        if n == 0 || len == 0 {
            return Err(unsatisfiable());
        }
        ByteRange {
            start: len.saturating_sub(n),
            end: len - 1,
        }
    } else {
        let start: u64 = first.parse().map_err(|_| unsatisfiable())?;
        let end = if last.is_empty() {
            len.saturating_sub(1)
        } else {
            let end: u64 = last.parse().map_err(|_| unsatisfiable())?;
            end.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Err(unsatisfiable());
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

/// Streams an attachment, whole or one byte range.
#[utoipa::path(get, path = "/v1/attachments/{hash}", tag = "attachments",
    params(("hash" = String, Path, description = "BLAKE3 hash, 64 hex digits"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`")),
    responses(
        (status = 200, description = "The whole attachment", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range", content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 416, body = ErrorBody)))]
pub async fn download(
    State(state): State<ApiState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hash = BlobHash::from_hex(&hash).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "'{hash}' is not an attachment hash (64 hex digits)"
        ))
    })?;
    let len = state
        .blocking(move |engine| Ok(engine.store().blob_len(&hash)?))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no attachment {hash} on this node")))?;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    )?;
    let (status, start, count) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.start, r.end - r.start + 1),
        None => (StatusCode::OK, 0, len),
    };
    let stream = futures_util::stream::unfold(
        (state, start, count),
        move |(state, offset, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            let take = remaining.min(CHUNK_SIZE as u64);
            let read = state
                .blocking(move |engine| {
                    engine
                        .store()
                        .read_blob_range(&hash, offset, take as usize)?
                        .ok_or_else(|| {
                            ApiError::Internal(format!("attachment {hash} vanished while read"))
                        })
                })
                .await;
            match read {
                Ok(bytes) => {
                    let next = (state, offset + take, remaining - take);
                    Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), next))
                }
                Err(err) => {
                    tracing::error!(error = %err, %hash, "attachment read failed mid-stream");
                    Some((Err(std::io::Error::other(err.to_string())), (state, 0, 0)))
                }
            }
        },
    );
    let mut response = Body::from_stream(stream).into_response();
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if range.is_some() {
        let value = format!("bytes {start}-{}/{len}", start + count - 1);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100).map_err(|e| e.status().as_u16());
        assert_eq!(r("bytes=0-9"), Ok(Some(ByteRange { start: 0, end: 9 })));
        assert_eq!(r("bytes=90-"), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(r("bytes=-10"), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(
            r("bytes=95-200"),
            Ok(Some(ByteRange { start: 95, end: 99 }))
        );
        assert_eq!(r("bytes=0-1,5-6"), Ok(None));
        assert_eq!(r("items=0-1"), Ok(None));
        assert_eq!(r("bytes=100-"), Err(416));
        assert_eq!(r("bytes=5-4"), Err(416));
        assert_eq!(r("bytes=x-4"), Err(416));
        assert_eq!(parse_range(None, 100).ok(), Some(None));
    }
}
