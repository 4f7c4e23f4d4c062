//! Helpers shared by the API test suites: an API over a RocksDB store in a temporary
//! directory, and one-shot requests through `tower::ServiceExt::oneshot`.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use trellis_common::ids::ActorId;
use trellis_node::api::{ApiOptions, ApiState, app};
use trellis_node::engine::{Engine, EngineOptions};
use trellis_node::store::{RocksOptions, RocksStore, Store};

pub const ACTOR: ActorId = ActorId::from_u64(0xA11CE);
pub const TOKEN: &str = "0123456789abcdef-test-token";

/// An API on a fresh RocksDB store.
pub struct TestApi {
    pub state: ApiState,
    pub engine: Arc<Engine>,
    pub shutdown: CancellationToken,
    pub dir: TempDir,
}

impl TestApi {
    pub fn new() -> Self {
        Self::with(ApiOptions::default())
    }

    pub fn with_token() -> Self {
        Self::with(ApiOptions {
            token: Some(TOKEN.to_owned()),
            ..ApiOptions::default()
        })
    }

    pub fn with(mut options: ApiOptions) -> Self {
        let dir = TempDir::new().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RocksStore::open(dir.path(), &RocksOptions::default()).unwrap());
        let engine = Arc::new(Engine::open(store, ACTOR, EngineOptions::default()).unwrap());
        options.data_dir = Some(dir.path().to_owned());
        let shutdown = CancellationToken::new();
        let state = ApiState::new(Arc::clone(&engine), options, shutdown.clone());
        Self {
            state,
            engine,
            shutdown,
            dir,
        }
    }

    pub fn app(&self) -> Router {
        app(self.state.clone())
    }

    /// Sends a request; `body` is sent as JSON when it is a `Value`.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    pub async fn json(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        self.send(json_request(method, uri, body, None)).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.json(Method::GET, uri, None).await
    }

    pub async fn execute(&self, query: &str, args: Value) -> Reply {
        self.json(
            Method::POST,
            "/v1/execute",
            Some(serde_json::json!({ "query": query, "args": args })),
        )
        .await
    }
}

pub fn json_request(
    method: Method,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.bytes))
        })
    }

    /// Asserts the status and, for errors, the JSON error shape; returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.bytes)
        );
        if self.bytes.is_empty() {
            return Value::Null;
        }
        let body = self.json();
        if status >= 400 {
            assert!(body["error"]["code"].is_string(), "error shape: {body}");
            assert!(body["error"]["message"].is_string(), "error shape: {body}");
        }
        body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
