//! `GET /v1/live`: the live-query protocol driven through channels (the protocol logic
//! is generic over `Sink`/`Stream`), and once over a real WebSocket.

mod api_support;

use std::collections::BTreeMap;
use std::time::Duration;

use api_support::TestApi;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::replica::Replica;
use trellis_node::api::live::{self, ServerMessage};

/// A client of [`live::serve`] over channels.
struct Client {
    to_server: mpsc::Sender<String>,
    from_server: mpsc::Receiver<ServerMessage>,
    task: JoinHandle<()>,
}

impl Client {
    /// `capacity`: how many server messages the "socket" buffers (1: a slow link).
    fn connect(api: &TestApi, capacity: usize) -> Self {
        let (to_server, incoming) = mpsc::channel::<String>(8);
        let (outgoing, from_server) = mpsc::channel::<ServerMessage>(capacity);
        let incoming = futures_util::stream::unfold(incoming, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        let state = api.state.clone();
        let task = tokio::spawn(async move {
            live::serve(state, PollSender::new(outgoing), Box::pin(incoming))
                .await
                .unwrap();
        });
        Self {
            to_server,
            from_server,
            task,
        }
    }

    async fn send(&self, message: Value) {
        self.to_server.send(message.to_string()).await.unwrap();
    }

    async fn subscribe(&self, id: &str, query: &str, args: Value) {
        self.send(json!({"type": "subscribe", "id": id, "query": query, "args": args}))
            .await;
    }

    /// The next message, as the JSON a socket would carry.
    async fn next(&mut self) -> Value {
        let message = tokio::time::timeout(Duration::from_secs(20), self.from_server.recv())
            .await
            .expect("no message from the server within 20 s")
            .expect("server closed");
        serde_json::to_value(message).unwrap()
    }
}

fn ids(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn initial_result_then_diffs_after_local_writes() {
    let api = TestApi::new();
    api.execute(
        "INSERT INTO tasks DOCUMENTS (:d)",
        json!({"d": {"_id": "a", "p": 1}}),
    )
    .await
    .expect(200);
    let mut client = Client::connect(&api, 16);
    client
        .subscribe(
            "q1",
            "SELECT * FROM tasks WHERE p >= :min",
            json!({"min": 1}),
        )
        .await;
    let initial = client.next().await;
    assert_eq!(
        initial,
        json!({"type": "initial", "id": "q1", "documents": [{"_id": "a", "p": 1}], "ids": ["a"]})
    );

    api.execute(
        "INSERT INTO tasks DOCUMENTS (:d)",
        json!({"d": {"_id": "b", "p": 2}}),
    )
    .await
    .expect(200);
    let diff = client.next().await;
    assert_eq!(diff["type"], "diff");
    assert_eq!(diff["id"], "q1");
    assert_eq!(diff["inserted"], json!(["b"]));
    assert_eq!(diff["documents"]["b"], json!({"_id": "b", "p": 2}));

    api.execute("UPDATE tasks SET p = 0 WHERE _id = 'a'", json!({}))
        .await
        .expect(200);
    let diff = client.next().await;
    assert_eq!(diff["removed"], json!(["a"]));

    api.execute("UPDATE tasks SET p = 5 WHERE _id = 'b'", json!({}))
        .await
        .expect(200);
    let diff = client.next().await;
    assert_eq!(diff["updated"], json!(["b"]));
    assert_eq!(diff["documents"]["b"]["p"], 5);
}

#[tokio::test]
async fn remote_deltas_reach_live_queries() {
    let api = TestApi::new();
    let mut client = Client::connect(&api, 16);
    client
        .subscribe("q", "SELECT _id, v FROM c ORDER BY v DESC", json!({}))
        .await;
    assert_eq!(client.next().await["documents"], json!([]));

    let mut peer = Replica::new(ActorId::from_u64(2));
    let c = CollectionName::new("c").unwrap();
    let delta = peer
        .insert(
            &c,
            &DocId::from_string("r1").unwrap(),
            &json!({"v": 10}),
            1_000,
        )
        .unwrap();
    api.engine.apply_remote(&delta).unwrap();
    let diff = client.next().await;
    assert_eq!(diff["inserted"], json!(["r1"]));
    assert_eq!(diff["documents"]["r1"], json!({"_id": "r1", "v": 10}));
    assert_eq!(diff["order"], json!(["r1"]));

    api.execute(
        "INSERT INTO c DOCUMENTS (:d)",
        json!({"d": {"_id": "l1", "v": 20}}),
    )
    .await
    .expect(200);
    let diff = client.next().await;
    assert_eq!(diff["order"], json!(["l1", "r1"]));

    let delete = peer.delete(&c, &DocId::from_string("r1").unwrap(), 2_000);
    api.engine.apply_remote(&delete).unwrap();
    assert_eq!(client.next().await["removed"], json!(["r1"]));
}

#[tokio::test]
async fn two_queries_on_one_socket_and_unsubscribe() {
    let api = TestApi::new();
    let mut client = Client::connect(&api, 16);
    client
        .subscribe("open", "SELECT * FROM t WHERE done = false", json!({}))
        .await;
    assert_eq!(client.next().await["id"], "open");
    client
        .subscribe("count", "SELECT COUNT(*) FROM t", json!({}))
        .await;
    let count = client.next().await;
    assert_eq!(count["documents"], json!([{"count": 0}]));

    api.execute(
        "INSERT INTO t DOCUMENTS (:d)",
        json!({"d": {"_id": "x", "done": false}}),
    )
    .await
    .expect(200);
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let m = client.next().await;
        got.insert(m["id"].as_str().unwrap().to_owned(), m);
    }
    assert_eq!(got["open"]["inserted"], json!(["x"]));
    assert_eq!(got["count"]["aggregate"], json!({"count": 1}));

    // Same id twice: an error for that id; the first subscription keeps running.
    client.subscribe("open", "SELECT * FROM t", json!({})).await;
    let dup = client.next().await;
    assert_eq!(dup["type"], "error");
    assert_eq!(dup["id"], "open");

    client
        .send(json!({"type": "unsubscribe", "id": "open"}))
        .await;
    api.execute(
        "INSERT INTO t DOCUMENTS (:d)",
        json!({"d": {"_id": "y", "done": false}}),
    )
    .await
    .expect(200);
    let only = client.next().await;
    assert_eq!(only["id"], "count");
    assert_eq!(only["aggregate"], json!({"count": 2}));

    client
        .send(json!({"type": "unsubscribe", "id": "open"}))
        .await;
    assert_eq!(client.next().await["type"], "error");
}

#[tokio::test]
async fn bad_messages_and_bad_queries_answer_errors_and_keep_the_socket() {
    let api = TestApi::new();
    let mut client = Client::connect(&api, 16);
    client.to_server.send("not json".to_owned()).await.unwrap();
    let err = client.next().await;
    assert_eq!(err["type"], "error");
    assert!(err.get("id").is_none());

    client.subscribe("q", "SELECT * FROM", json!({})).await;
    let err = client.next().await;
    assert_eq!(
        err,
        json!({"type": "error", "id": "q", "message": err["message"]})
    );
    assert!(err["message"].as_str().unwrap().contains("line 1"));

    client.subscribe("w", "DELETE FROM c", json!({})).await;
    assert!(
        client.next().await["message"]
            .as_str()
            .unwrap()
            .contains("only a SELECT")
    );

    client.subscribe("ok", "SELECT * FROM c", json!({})).await;
    assert_eq!(client.next().await["type"], "initial");
}

#[tokio::test]
async fn a_slow_client_gets_coalesced_diffs_ending_in_the_final_state() {
    let api = TestApi::new();
    // The "socket" holds one message: the server cannot write ahead of the client.
    let mut client = Client::connect(&api, 1);
    client.subscribe("q", "SELECT * FROM c", json!({})).await;
    assert_eq!(client.next().await["type"], "initial");

    const WRITES: usize = 300;
    for i in 0..WRITES {
        let id = format!("d{}", i % 20);
        api.execute(
            "INSERT INTO c DOCUMENTS (:d) ON ID CONFLICT DO UPDATE",
            json!({"d": {"_id": id, "n": i}}),
        )
        .await
        .expect(200);
    }
    api.execute("DELETE FROM c WHERE _id = 'd0'", json!({}))
        .await
        .expect(200);
    let expected: BTreeMap<String, Value> = (1..20)
        .map(|k| {
            let last = (0..WRITES).filter(|i| i % 20 == k).max().unwrap();
            let id = format!("d{k}");
            (id.clone(), json!({"_id": id, "n": last}))
        })
        .collect();

    // Now read: fold the diffs into a state until it matches.
    let mut state: BTreeMap<String, Value> = BTreeMap::new();
    let mut messages = 0;
    while state != expected {
        let diff = client.next().await;
        messages += 1;
        for id in ids(&diff["removed"]) {
            state.remove(id.as_str().unwrap());
        }
        for (id, doc) in diff["documents"].as_object().unwrap() {
            state.insert(id.clone(), doc.clone());
        }
    }
    assert!(
        messages <= WRITES + 1,
        "{messages} messages for {WRITES} writes"
    );
    client.task.abort();
}

#[tokio::test]
async fn shutdown_ends_the_session() {
    let api = TestApi::new();
    let mut client = Client::connect(&api, 4);
    client.subscribe("q", "SELECT * FROM c", json!({})).await;
    client.next().await;
    api.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), &mut client.task)
        .await
        .expect("session did not end on shutdown")
        .unwrap();
    assert_eq!(api.engine.observer_count(), 0);
}

#[tokio::test]
async fn over_a_real_websocket() {
    let api = TestApi::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app();
    let shutdown = api.shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/live"))
        .await
        .unwrap();
    use tokio_tungstenite::tungstenite::Message;
    socket
        .send(Message::text(
            json!({"type": "subscribe", "id": "q1", "query": "SELECT * FROM c"}).to_string(),
        ))
        .await
        .unwrap();
    let read = async |socket: &mut tokio_tungstenite::WebSocketStream<_>| -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("no frame within 20 s")
                .expect("socket closed")
                .unwrap();
            if let Message::Text(text) = frame {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    };
    assert_eq!(
        read(&mut socket).await,
        json!({"type": "initial", "id": "q1", "documents": [], "ids": []})
    );
    api.execute(
        "INSERT INTO c DOCUMENTS (:d)",
        json!({"d": {"_id": "a", "x": 1}}),
    )
    .await
    .expect(200);
    let diff = read(&mut socket).await;
    assert_eq!(diff["type"], "diff");
    assert_eq!(diff["inserted"], json!(["a"]));

    // Shutdown closes the socket from the server side.
    api.shutdown.cancel();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("not closed")
        {
            None | Some(Err(_) | Ok(Message::Close(_))) => break,
            Some(Ok(_)) => {}
        }
    }
    server.await.unwrap();
}
