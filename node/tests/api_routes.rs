//! Every route of the local API through `tower::ServiceExt::oneshot`, on a RocksDB
//! store in a temporary directory: successes and the errors a person can cause.

mod api_support;

use api_support::{TOKEN, TestApi, json_request};
use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};
use trellis_node::api::ApiOptions;

#[tokio::test]
async fn execute_runs_a_statement_and_answers_its_result() {
    let api = TestApi::new();
    let inserted = api
        .execute(
            "INSERT INTO tasks DOCUMENTS (:d)",
            json!({"d": {"_id": "t1", "title": "water", "done": false}}),
        )
        .await
        .expect(200);
    assert_eq!(inserted, json!({"kind": "mutated", "ids": ["t1"]}));
    let selected = api
        .execute(
            "SELECT title FROM tasks WHERE done = :done",
            json!({"done": false}),
        )
        .await
        .expect(200);
    assert_eq!(
        selected,
        json!({"kind": "documents", "documents": [{"title": "water"}]})
    );
}

#[tokio::test]
async fn execute_runs_a_script_or_a_flagged_statement_as_a_transaction() {
    let api = TestApi::new();
    let body = api
        .json(
            Method::POST,
            "/v1/execute",
            Some(json!({
                "query": "INSERT INTO c DOCUMENTS (:a); INSERT INTO c DOCUMENTS (:b); SELECT COUNT(*) FROM c",
                "args": {"a": {"_id": "a"}, "b": {"_id": "b"}},
            })),
        )
        .await
        .expect(200);
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    assert_eq!(body["results"][2]["documents"], json!([{"count": 2}]));

    let flagged = api
        .json(
            Method::POST,
            "/v1/execute",
            Some(json!({"query": "SELECT * FROM c", "transaction": true})),
        )
        .await
        .expect(200);
    assert_eq!(
        flagged["results"][0]["documents"].as_array().unwrap().len(),
        2
    );

    // All or nothing: the second INSERT conflicts, the first is not kept either.
    let failed = api
        .json(
            Method::POST,
            "/v1/execute",
            Some(json!({
                "query": "INSERT INTO c DOCUMENTS (:x); INSERT INTO c DOCUMENTS (:a)",
                "args": {"x": {"_id": "x"}, "a": {"_id": "a"}},
            })),
        )
        .await
        .expect(409);
    assert_eq!(failed["error"]["code"], "conflict");
    api.get("/v1/collections/c/docs/x").await.expect(404);
}

#[tokio::test]
async fn execute_errors_carry_code_message_and_position() {
    let api = TestApi::new();
    let syntax = api
        .execute("SELECT *\nFROM tasks WHERE", json!({}))
        .await
        .expect(400);
    assert_eq!(syntax["error"]["code"], "query");
    assert_eq!(syntax["error"]["line"], 2);
    assert!(syntax["error"]["column"].as_u64().unwrap() > 1, "{syntax}");
    assert!(
        syntax["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2")
    );

    let param = api
        .execute("SELECT * FROM c WHERE a = :missing", json!({}))
        .await
        .expect(400);
    assert!(
        param["error"]["message"]
            .as_str()
            .unwrap()
            .contains(":missing")
    );
    assert!(param["error"].get("line").is_none());

    let bad_name = api
        .execute("SELECT * FROM `__reserved`", json!({}))
        .await
        .expect(400);
    assert_eq!(bad_name["error"]["code"], "query");

    api.execute(
        "INSERT INTO c DOCUMENTS (:d)",
        json!({"d": {"_id": "a", "n": "text"}}),
    )
    .await
    .expect(200);
    let dup = api
        .execute("INSERT INTO c DOCUMENTS (:d)", json!({"d": {"_id": "a"}}))
        .await
        .expect(409);
    assert!(
        dup["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );

    let bad_doc = api
        .execute("UPDATE c APPLY n INCREMENT BY 1 WHERE _id = 'a'", json!({}))
        .await
        .expect(422);
    assert_eq!(bad_doc["error"]["code"], "invalid_document");
    let bad_id = api
        .execute("INSERT INTO c DOCUMENTS (:d)", json!({"d": {"_id": 5}}))
        .await
        .expect(422);
    assert!(bad_id["error"]["message"].as_str().unwrap().contains("_id"));
}

#[tokio::test]
async fn bad_json_bodies_are_400_with_the_error_shape() {
    let api = TestApi::new();
    let request = Request::post("/v1/execute")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"query\": "))
        .unwrap();
    let reply = api.send(request).await.expect(400);
    assert_eq!(reply["error"]["code"], "invalid_json");

    let wrong_shape = api
        .json(
            Method::POST,
            "/v1/execute",
            Some(json!({"statement": "SELECT * FROM c"})),
        )
        .await
        .expect(400);
    assert_eq!(wrong_shape["error"]["code"], "invalid_json");

    let no_type = Request::post("/v1/execute").body(Body::from("{}")).unwrap();
    api.send(no_type).await.expect(400);

    let not_object = api
        .json(Method::PUT, "/v1/collections/c/docs/a", Some(json!([1, 2])))
        .await
        .expect(400);
    assert_eq!(not_object["error"]["code"], "invalid_json");
}

#[tokio::test]
async fn bodies_and_documents_over_the_limit_are_413() {
    let api = TestApi::with(ApiOptions {
        max_body_bytes: 64 * 1024,
        max_attachment_bytes: 1024,
        ..ApiOptions::default()
    });
    let big = "x".repeat(100 * 1024);
    let reply = api
        .execute("INSERT INTO c DOCUMENTS (:d)", json!({"d": {"big": big}}))
        .await
        .expect(413);
    assert_eq!(reply["error"]["code"], "too_large");
    let upload = Request::post("/v1/attachments")
        .body(Body::from(vec![0u8; 2048]))
        .unwrap();
    api.send(upload).await.expect(413);

    // A document above 5 MiB inside a body the limit allows: the store refuses it.
    let roomy = TestApi::with(ApiOptions {
        max_body_bytes: 16 << 20,
        ..ApiOptions::default()
    });
    let huge = "y".repeat(6 << 20);
    let refused = roomy
        .execute(
            "INSERT INTO c DOCUMENTS (:d)",
            json!({"d": {"_id": "h", "huge": huge}}),
        )
        .await
        .expect(413);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit")
    );
}

#[tokio::test]
async fn document_routes_get_put_patch_delete() {
    let api = TestApi::new();
    let created = api
        .json(
            Method::PUT,
            "/v1/collections/tasks/docs/t1",
            Some(json!({"title": "water", "tags": {"a": 1, "b": 2}})),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201);
    assert_eq!(
        created.json(),
        json!({"_id": "t1", "title": "water", "tags": {"a": 1, "b": 2}})
    );

    // PUT again: sets the given fields, keeps the others.
    let replaced = api
        .json(
            Method::PUT,
            "/v1/collections/tasks/docs/t1",
            Some(json!({"done": true})),
        )
        .await
        .expect(200);
    assert_eq!(replaced["title"], "water");
    assert_eq!(replaced["done"], true);

    // PATCH: merge patch; nested objects merge, null unsets.
    let patched = api
        .json(
            Method::PATCH,
            "/v1/collections/tasks/docs/t1",
            Some(json!({"title": null, "tags": {"b": 3, "c": 4}, "odd key": "ok"})),
        )
        .await
        .expect(200);
    assert_eq!(
        patched,
        json!({"_id": "t1", "tags": {"a": 1, "b": 3, "c": 4}, "done": true, "odd key": "ok"})
    );
    assert_eq!(
        api.get("/v1/collections/tasks/docs/t1").await.expect(200),
        patched
    );

    api.json(
        Method::PATCH,
        "/v1/collections/tasks/docs/nope",
        Some(json!({"a": 1})),
    )
    .await
    .expect(404);
    api.json(
        Method::PUT,
        "/v1/collections/tasks/docs/t1",
        Some(json!({"_id": "other"})),
    )
    .await
    .expect(400);

    let deleted = api
        .json(Method::DELETE, "/v1/collections/tasks/docs/t1", None)
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    api.get("/v1/collections/tasks/docs/t1").await.expect(404);
    api.json(Method::DELETE, "/v1/collections/tasks/docs/t1", None)
        .await
        .expect(404);
}

#[tokio::test]
async fn object_ids_are_written_as_json_in_the_url() {
    let api = TestApi::new();
    api.execute(
        "INSERT INTO c DOCUMENTS (:d)",
        json!({"d": {"_id": {"site": "a", "n": 1}, "v": 1}}),
    )
    .await
    .expect(200);
    let url = "/v1/collections/c/docs/%7B%22n%22%3A1%2C%22site%22%3A%22a%22%7D";
    let doc = api.get(url).await.expect(200);
    assert_eq!(doc["v"], 1);
}

#[tokio::test]
async fn invalid_collection_names_are_400_and_empty_collections_list_nothing() {
    let api = TestApi::new();
    let bad = api.get("/v1/collections/9bad!/docs").await.expect(400);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("collection")
    );
    api.get("/v1/collections/__sys/docs/a").await.expect(400);
    let empty = api
        .get("/v1/collections/nothing_here/docs")
        .await
        .expect(200);
    assert_eq!(empty, json!({"documents": []}));
    api.get("/v1/collections/nothing_here/docs/a")
        .await
        .expect(404);
}

#[tokio::test]
async fn listing_pages_by_id_with_a_cursor() {
    let api = TestApi::new();
    for i in 0..25 {
        api.execute(
            "INSERT INTO c DOCUMENTS (:d)",
            json!({"d": {"_id": format!("d{i:02}"), "i": i}}),
        )
        .await
        .expect(200);
    }
    api.execute("DELETE FROM c WHERE _id = 'd03'", json!({}))
        .await
        .expect(200);
    let mut seen = Vec::new();
    let mut uri = "/v1/collections/c/docs?limit=10".to_owned();
    loop {
        let page = api.get(&uri).await.expect(200);
        for doc in page["documents"].as_array().unwrap() {
            seen.push(doc["_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                uri = format!(
                    "/v1/collections/c/docs?limit=10&after={}",
                    trellis_node::client::encode_component(next)
                );
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..25)
        .filter(|i| *i != 3)
        .map(|i| format!("d{i:02}"))
        .collect();
    assert_eq!(seen, expected);

    api.get("/v1/collections/c/docs?limit=0").await.expect(400);
    api.get("/v1/collections/c/docs?limit=abc")
        .await
        .expect(400);
    api.get("/v1/collections/c/docs?after=not-a-cursor")
        .await
        .expect(400);

    let collections = api.get("/v1/collections").await.expect(200);
    assert_eq!(collections, json!({"collections": ["c"]}));
}

#[tokio::test]
async fn health_status_metrics_and_openapi() {
    let api = TestApi::new();
    let health = api.get("/v1/health").await.expect(200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["actor"], api_support::ACTOR.to_string());
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));

    api.execute("INSERT INTO a DOCUMENTS (:d)", json!({"d": {"_id": "x"}}))
        .await
        .expect(200);
    let status = api.get("/v1/status").await.expect(200);
    assert_eq!(status["collections"], 1);
    assert_eq!(status["version_vector_size"], 1);
    assert_eq!(status["data_dir"], api.dir.path().display().to_string());

    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status.as_u16(), 200);
    let text = String::from_utf8_lossy(&metrics.bytes);
    assert!(text.contains("trellis_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/v1/execute\""), "{text}");
    assert!(text.contains("trellis_query_duration_seconds"), "{text}");
    assert!(text.contains("trellis_documents_written_total"), "{text}");

    let doc = api.get("/v1/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/execute",
        "/v1/collections",
        "/v1/collections/{collection}/docs",
        "/v1/collections/{collection}/docs/{id}",
        "/v1/attachments",
        "/v1/attachments/{hash}",
        "/v1/health",
        "/v1/status",
        "/metrics",
        "/v1/openapi.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    for method in ["get", "put", "patch", "delete"] {
        assert!(
            paths["/v1/collections/{collection}/docs/{id}"]
                .get(method)
                .is_some(),
            "{method}"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let api = TestApi::new();
    let reply = api.get("/v1/nothing").await.expect(404);
    assert_eq!(reply["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_configured_token_guards_every_route_but_health() {
    let api = TestApi::with_token();
    api.get("/v1/health").await.expect(200);
    for (method, uri) in [
        (Method::GET, "/v1/status"),
        (Method::GET, "/v1/collections"),
        (Method::GET, "/v1/collections/c/docs"),
        (Method::GET, "/v1/collections/c/docs/a"),
        (Method::DELETE, "/v1/collections/c/docs/a"),
        (Method::POST, "/v1/execute"),
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/openapi.json"),
        (Method::GET, "/v1/live"),
        (Method::POST, "/v1/attachments"),
        (Method::GET, "/v1/subscriptions"),
        (Method::POST, "/v1/subscriptions"),
        (Method::DELETE, "/v1/subscriptions/x"),
        (Method::GET, "/v1/presence"),
        (Method::GET, "/v1/attachments/ab/fetch"),
        (Method::POST, "/v1/attachments/ab/fetch"),
    ] {
        let missing = api
            .send(json_request(method.clone(), uri, None, None))
            .await
            .expect(401);
        assert_eq!(missing["error"]["code"], "unauthorized", "{uri}");
        api.send(json_request(
            method,
            uri,
            None,
            Some("0123456789abcdef-wrong-token"),
        ))
        .await
        .expect(401);
    }
    let ok = api
        .send(json_request(
            Method::POST,
            "/v1/execute",
            Some(json!({"query": "SELECT * FROM c"})),
            Some(TOKEN),
        ))
        .await
        .expect(200);
    assert_eq!(ok["documents"], json!([]));
}

#[tokio::test]
async fn attachments_upload_download_and_ranges() {
    let api = TestApi::new();
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let upload = Request::post("/v1/attachments")
        .header(header::CONTENT_TYPE, "image/png")
        .body(Body::from(content.clone()))
        .unwrap();
    let token = api.send(upload).await.expect(201);
    let hash = token["_attachment"].as_str().unwrap().to_owned();
    assert_eq!(token["len"], 200_000);
    assert_eq!(token["meta"]["content_type"], "image/png");

    let whole = api.get(&format!("/v1/attachments/{hash}")).await;
    assert_eq!(whole.status.as_u16(), 200);
    assert_eq!(whole.header("content-length"), Some("200000"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.bytes.as_ref(), content.as_slice());

    let ranged = |range: &'static str| {
        Request::get(format!("/v1/attachments/{hash}"))
            .header(header::RANGE, range)
            .body(Body::empty())
            .unwrap()
    };
    let part = api.send(ranged("bytes=65530-65545")).await;
    assert_eq!(part.status.as_u16(), 206);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 65530-65545/200000")
    );
    assert_eq!(part.header("content-length"), Some("16"));
    assert_eq!(part.bytes.as_ref(), &content[65530..=65545]);

    let tail = api.send(ranged("bytes=-10")).await;
    assert_eq!(tail.status.as_u16(), 206);
    assert_eq!(tail.bytes.as_ref(), &content[199_990..]);

    let beyond = api.send(ranged("bytes=300000-")).await;
    beyond.expect(416);
    assert_eq!(beyond.header("content-range"), Some("bytes */200000"));

    let several = api.send(ranged("bytes=0-1,5-6")).await;
    assert_eq!(several.status.as_u16(), 200);
    assert_eq!(several.bytes.len(), 200_000);

    api.get("/v1/attachments/not-a-hash").await.expect(400);
    api.get(&format!("/v1/attachments/{}", "ab".repeat(32)))
        .await
        .expect(404);
}

#[tokio::test]
async fn the_empty_attachment_is_served_with_length_zero() {
    let api = TestApi::new();
    let token = api
        .send(
            Request::post("/v1/attachments")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .expect(201);
    let hash = token["_attachment"].as_str().unwrap();
    let reply = api.get(&format!("/v1/attachments/{hash}")).await;
    assert_eq!(reply.status.as_u16(), 200);
    assert_eq!(reply.header("content-length"), Some("0"));
    assert!(reply.bytes.is_empty());
    let _: Value = token;
}

#[tokio::test]
async fn the_live_feed_also_takes_the_token_in_the_query_string() {
    let api = TestApi::with_token();
    // Without WebSocket upgrade headers the request gets past authorisation and is then
    // refused by the upgrade itself: anything but 401 means the token was accepted.
    let accepted = api
        .send(json_request(
            Method::GET,
            &format!("/v1/live?access_token={TOKEN}"),
            None,
            None,
        ))
        .await;
    assert_ne!(accepted.status.as_u16(), 401, "{accepted:?}");
    api.send(json_request(
        Method::GET,
        "/v1/live?access_token=0123456789abcdef-wrong-token",
        None,
        None,
    ))
    .await
    .expect(401);
    // Only the live feed: other routes still need the header.
    api.send(json_request(
        Method::GET,
        &format!("/v1/status?access_token={TOKEN}"),
        None,
        None,
    ))
    .await
    .expect(401);
}
