//! The mesh routes: `/v1/subscriptions` and `/v1/presence`, on engines with a real mesh
//! (libp2p on loopback), through `tower::ServiceExt::oneshot`; and 503 on a node
//! without one.

mod api_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use trellis_common::ids::{CollectionName, DocId};
use trellis_node::api::{ApiOptions, ApiState, app};
use trellis_node::config::MeshSettings;
use trellis_node::identity::Identity;
use trellis_node::sync::{self, SyncHandle};

use api_support::{Reply, TestApi, json_request};

/// A node's API with a mesh on loopback TCP (no mDNS), subscribing to all cars.
struct MeshApi {
    api: TestApi,
    state: ApiState,
    sync: SyncHandle,
}

impl MeshApi {
    async fn new(peers: Vec<String>) -> Self {
        Self::subscribed(peers, &["SELECT * FROM cars"]).await
    }

    async fn subscribed(peers: Vec<String>, subscriptions: &[&str]) -> Self {
        let api = TestApi::new();
        let settings = MeshSettings {
            enabled: true,
            listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
            peers,
            mdns: false,
            subscriptions: subscriptions.iter().map(|s| (*s).to_owned()).collect(),
        };
        let identity = Identity::generate().unwrap();
        let net = sync::net_config(&settings).unwrap();
        let sync = sync::start(Arc::clone(&api.engine), &identity, &settings, net)
            .await
            .unwrap();
        let state = ApiState::new(
            Arc::clone(&api.engine),
            ApiOptions::default(),
            CancellationToken::new(),
        )
        .with_sync(Some(sync.clone()));
        Self { api, state, sync }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let response = app(self.state.clone())
            .oneshot(json_request(method, uri, body, None))
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    async fn tcp_addr(&self) -> String {
        let presence = self
            .call(Method::GET, "/v1/presence", None)
            .await
            .expect(200);
        presence["listen"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find(|a| a.contains("/tcp/"))
            .unwrap()
            .to_owned()
    }
}

#[tokio::test]
async fn without_a_mesh_the_routes_answer_503() {
    let api = TestApi::new();
    for uri in ["/v1/subscriptions", "/v1/presence"] {
        let body = api.get(uri).await.expect(503);
        assert_eq!(body["error"]["code"], "unavailable");
    }
    let body = api
        .json(
            Method::POST,
            "/v1/subscriptions",
            Some(json!({"query": "SELECT * FROM cars"})),
        )
        .await
        .expect(503);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mesh.enabled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_listed_added_and_removed() {
    let node = MeshApi::new(Vec::new()).await;
    let list = node
        .call(Method::GET, "/v1/subscriptions", None)
        .await
        .expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["source"], "config");
    assert_eq!(list[0]["collection"], "cars");

    let blue = json!({"query": "SELECT * FROM trucks WHERE color = 'blue'"});
    let added = node
        .call(Method::POST, "/v1/subscriptions", Some(blue.clone()))
        .await
        .expect(201);
    assert_eq!(added["source"], "api");
    assert_eq!(added["collection"], "trucks");
    node.call(Method::POST, "/v1/subscriptions", Some(blue))
        .await
        .expect(200);
    let list = node
        .call(Method::GET, "/v1/subscriptions", None)
        .await
        .expect(200);
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Not a SELECT, parameters, bad JSON: 400 with the error shape.
    for bad in [
        json!({"query": "DELETE FROM trucks"}),
        json!({"query": "SELECT * FROM trucks WHERE a = :p"}),
        json!({"query": "SELECT * FORM trucks"}),
    ] {
        let body = node
            .call(Method::POST, "/v1/subscriptions", Some(bad))
            .await
            .expect(400);
        assert_eq!(body["error"]["code"], "bad_request");
    }
    node.call(Method::POST, "/v1/subscriptions", Some(json!({"q": 1})))
        .await
        .expect(400);

    // Removing: by id; again is 404; the configuration's cannot be removed here.
    let id = added["id"].as_str().unwrap();
    node.call(Method::DELETE, &format!("/v1/subscriptions/{id}"), None)
        .await
        .expect(204);
    node.call(Method::DELETE, &format!("/v1/subscriptions/{id}"), None)
        .await
        .expect(404);
    let config_id = list[0]["id"].as_str().unwrap().to_owned();
    let body = node
        .call(
            Method::DELETE,
            &format!("/v1/subscriptions/{config_id}"),
            None,
        )
        .await
        .expect(409);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mesh.subscriptions")
    );
    node.sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_forgets_evictions_of_the_collection() {
    let node = MeshApi::new(Vec::new()).await;
    let engine = &node.api.engine;
    engine
        .execute(
            r#"INSERT INTO trucks DOCUMENTS ({"_id": "t1"})"#,
            &Default::default(),
        )
        .unwrap();
    engine
        .execute("EVICT FROM trucks WHERE _id = 't1'", &Default::default())
        .unwrap();
    let trucks = CollectionName::new("trucks").unwrap();
    let t1 = DocId::from_string("t1").unwrap();
    assert!(engine.store().is_evicted(&trucks, &t1).unwrap());
    node.call(
        Method::POST,
        "/v1/subscriptions",
        Some(json!({"query": "SELECT * FROM trucks"})),
    )
    .await
    .expect(201);
    assert!(!engine.store().is_evicted(&trucks, &t1).unwrap());
    node.sync.shutdown().await;
}

/// Waits until `query` on `node` answers `expected` documents.
async fn eventually(node: &MeshApi, query: &str, expected: Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = node.api.execute(query, json!({})).await.expect(200);
        if got["documents"] == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query} answers {got}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two field teams register `truck-17` independently, at both ends of a line whose
/// middle node holds neither version (docs/sync.md, "Independent inserts of one id").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_inserts_of_a_natural_id_meet_across_a_node_that_holds_neither() {
    let a = MeshApi::subscribed(Vec::new(), &[]).await;
    let b = MeshApi::subscribed(vec![a.tcp_addr().await], &[]).await;
    let c = MeshApi::subscribed(
        vec![b.tcp_addr().await],
        &["SELECT * FROM cars WHERE color = 'blue'"],
    )
    .await;
    let truck = "SELECT * FROM cars WHERE _id = 'truck-17'";
    c.api
        .execute(
            r#"INSERT INTO cars DOCUMENTS ({"_id": "truck-17", "color": "blue", "km": 3})"#,
            json!({}),
        )
        .await
        .expect(200);
    // Later, on the other end: the newer version, which does not match C's query.
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.api
        .execute(
            r#"INSERT INTO cars DOCUMENTS ({"_id": "truck-17", "color": "red"})"#,
            json!({}),
        )
        .await
        .expect(200);
    eventually(&c, truck, json!([{"_id": "truck-17", "color": "red"}])).await;
    // B relayed A's version without holding it: its queries do not see it.
    let on_b = b.api.execute(truck, json!({})).await.expect(200);
    assert_eq!(on_b["documents"], json!([]), "{on_b}");
    for node in [&c, &b, &a] {
        node.sync.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_shows_the_peer_and_documents_flow_between_the_engines() {
    let first = MeshApi::new(Vec::new()).await;
    let second = MeshApi::new(vec![first.tcp_addr().await]).await;
    first
        .api
        .execute(
            r#"INSERT INTO cars DOCUMENTS ({"_id": "c1", "color": "blue"})"#,
            json!({}),
        )
        .await
        .expect(200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = second
            .api
            .execute("SELECT * FROM cars WHERE _id = 'c1'", json!({}))
            .await
            .expect(200);
        if got["documents"] == json!([{"_id": "c1", "color": "blue"}]) {
            break;
        }
        assert!(Instant::now() < deadline, "c1 did not arrive: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let presence = second
        .call(Method::GET, "/v1/presence", None)
        .await
        .expect(200);
    let peers = presence["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{presence}");
    assert_eq!(peers[0]["hops"], 1);
    let link = &peers[0]["links"][0];
    assert_eq!(link["kind"], "tcp");
    assert_eq!(link["chosen"], true);
    assert!(link["bytes_in"].as_u64().unwrap() > 0, "{presence}");
    second.sync.shutdown().await;
    first.sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_is_fetched_from_a_peer_in_chunks_and_resumes() {
    use axum::body::Body;
    use axum::http::Request;
    use trellis_node::store::BlobHash;

    let first = MeshApi::new(Vec::new()).await;
    let second = MeshApi::new(vec![first.tcp_addr().await]).await;
    // Five chunks and a bit, with a recognisable pattern.
    let bytes: Vec<u8> = (0..(5 * 65_536 + 1_234)).map(|i| (i % 251) as u8).collect();
    let upload = Request::builder()
        .method(Method::POST)
        .uri("/v1/attachments")
        .body(Body::from(bytes.clone()))
        .unwrap();
    let token = first.api.send(upload).await.expect(201);
    let hash = token["_attachment"].as_str().unwrap().to_owned();
    let len = token["len"].as_u64().unwrap();

    // The second node already has chunk 1 (say, from an interrupted fetch).
    let blob = BlobHash::from_hex(&hash).unwrap();
    second
        .api
        .engine
        .store()
        .put_chunk(&blob, len, 1, &bytes[65_536..131_072])
        .unwrap();

    let uri = format!("/v1/attachments/{hash}/fetch");
    let deadline = Instant::now() + Duration::from_secs(60);
    // The peers may still be linking: ask until a fetch runs or completes.
    let started = loop {
        let reply = second
            .call(Method::POST, &uri, Some(json!({ "len": len })))
            .await;
        let body = reply.json();
        if body["state"] != "failed" {
            break body;
        }
        assert!(Instant::now() < deadline, "fetch never started: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(started["chunks"], 6);
    loop {
        let progress = second.call(Method::GET, &uri, None).await.expect(200);
        if progress["state"] == "complete" {
            assert_eq!(progress["chunks_stored"], 6);
            break;
        }
        assert_eq!(progress["state"], "running", "{progress}");
        assert!(
            Instant::now() < deadline,
            "fetch did not finish: {progress}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let download = second
        .call(Method::GET, &format!("/v1/attachments/{hash}"), None)
        .await;
    assert_eq!(download.status.as_u16(), 200);
    assert_eq!(download.bytes.as_ref(), bytes.as_slice());

    // Asking again for a stored blob is complete at once (200).
    second
        .call(Method::POST, &uri, Some(json!({ "len": len })))
        .await
        .expect(200);
    second.sync.shutdown().await;
    first.sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_no_peer_has_fails_with_a_reason_and_bad_hashes_are_400() {
    let node = MeshApi::new(Vec::new()).await;
    let unknown = "ab".repeat(32);
    let body = node
        .call(
            Method::POST,
            &format!("/v1/attachments/{unknown}/fetch"),
            Some(json!({"len": 10})),
        )
        .await
        .expect(202);
    assert_eq!(body["state"], "failed");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no connected peer has this attachment")
    );
    node.call(Method::GET, "/v1/attachments/zz/fetch", None)
        .await
        .expect(400);
    node.call(
        Method::GET,
        &format!("/v1/attachments/{}/fetch", "cd".repeat(32)),
        None,
    )
    .await
    .expect(404);
    node.sync.shutdown().await;
}
