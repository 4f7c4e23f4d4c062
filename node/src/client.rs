//! A small HTTP client for a running node's API, used by the CLI (`trellis-node query`,
//! `status`, `export`, `import`). Plain HTTP/1.1 over hyper: the API listens on
//! loopback, or behind whatever TLS proxy the operator puts in front.

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered.
    #[error(
        "cannot reach trellis-node at {url}: {reason} (is it running? start it with `trellis-node run`, or pass --api URL or --data-dir DIR)"
    )]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code of the body.
        code: String,
        /// The error message of the body.
        message: String,
    },
    /// A URL or an answer this client cannot use.
    #[error("{0}")]
    Invalid(String),
}

/// A client of one node's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`), sending `token` as a bearer
    /// token when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(ClientError::Invalid(format!(
                "API URL '{base}' must start with http:// (e.g. http://127.0.0.1:4680)"
            )));
        }
        Ok(Self {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, answering the JSON body.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, answering the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.request(Method::POST, path, Some(body)).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(
                    serde_json::to_vec(body).map_err(|e| ClientError::Invalid(e.to_string()))?,
                )
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| ClientError::Invalid(format!("bad request to {url}: {e}")))?;
        let response = self.client.request(request).await.map_err(|e| {
            let reason =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            ClientError::Unreachable {
                url: url.clone(),
                reason,
            }
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Invalid(format!(
                "{url} answered HTTP {status} with a body that is not JSON: {e}"
            ))
        })?;
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        Err(ClientError::Api {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("unknown").to_owned(),
            message: error["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
        })
    }
}

/// Percent-encodes a query-string or path value (everything but unreserved
/// characters).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
