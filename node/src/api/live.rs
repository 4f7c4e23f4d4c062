//! `GET /v1/live`: live queries over a WebSocket. The protocol is described in
//! `docs/websocket.md`.
//!
//! [`serve`] holds the whole protocol and is generic over a `Sink` of
//! [`ServerMessage`]s and a `Stream` of text frames, so tests drive it with channels;
//! [`handler`] adapts an axum WebSocket to it.
//!
//! Each subscription is an engine [`crate::engine::Observer`] and a task that waits
//! for its next diff and hands it to the socket's writer through a small bounded
//! queue ([`OUT_QUEUE`]). When the client reads slowly the queue fills, the task waits
//! on it, and meanwhile the observer folds every further change into one diff: memory
//! per socket is bounded whatever the write rate, and the client ends up with the
//! latest state.

use std::collections::HashMap;
use std::fmt::Display;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use trellis_common::query::{Params, Statement, parse};

use super::{ApiError, ApiState, metrics};
use crate::engine::{Observer, ObserverDiff};

/// Messages waiting to be written to one socket, all subscriptions together.
pub const OUT_QUEUE: usize = 16;
/// Most subscriptions one socket may hold.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Start a live query.
    Subscribe {
        /// The client's name for it, unique on this socket.
        id: String,
        /// A SELECT.
        query: String,
        /// Values of its `:name` parameters.
        #[serde(default)]
        args: Params,
    },
    /// Stop one.
    Unsubscribe {
        /// The name given at subscribe.
        id: String,
    },
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The result when the subscription started.
    Initial {
        /// The subscription.
        id: String,
        /// The rows, in the query's order.
        documents: Vec<Value>,
        /// The `_id` of each row, in the same order (empty for `COUNT(*)`).
        ids: Vec<Value>,
    },
    /// How the result changed since the previous message of this subscription.
    Diff {
        /// The subscription.
        id: String,
        /// `inserted`, `updated`, `removed` ids and the new rows in `documents`.
        #[serde(flatten)]
        diff: ObserverDiff,
        /// For a query with ORDER BY: the ids of the whole result, in order.
        #[serde(skip_serializing_if = "Option::is_none")]
        order: Option<Vec<Value>>,
    },
    /// A message the server could not act on, or a subscription that failed.
    Error {
        /// The subscription concerned, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl ServerMessage {
    fn error(id: Option<&str>, message: impl Into<String>) -> Self {
        Self::Error {
            id: id.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Why [`serve`] stopped early.
#[derive(Debug, thiserror::Error)]
#[error("writing to the live socket failed: {0}")]
pub struct LiveError(String);

/// The axum handler: upgrades and runs [`serve`] on the socket.
pub async fn handler(State(state): State<ApiState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_socket(state, socket))
}

async fn serve_socket(state: ApiState, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|message: ServerMessage| async move {
        let text = serde_json::to_string(&message).map_err(axum::Error::new)?;
        Ok::<_, axum::Error>(Message::Text(text.into()))
    });
    let stream = stream
        .take_while(|frame| {
            let open = matches!(frame, Ok(m) if !matches!(m, Message::Close(_)));
            async move { open }
        })
        .filter_map(|frame| async move {
            match frame {
                Ok(Message::Text(text)) => Some(text.as_str().to_owned()),
                Ok(Message::Binary(_)) => Some(String::new()),
                _ => None,
            }
        });
    if let Err(err) = serve(state, Box::pin(sink), Box::pin(stream)).await {
        tracing::debug!(error = %err, "live socket closed");
    }
}

struct Subscription {
    generation: u64,
    task: AbortHandle,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
        metrics::gauge!(metrics::LIVE_SUBSCRIPTIONS).decrement(1.0);
    }
}

/// Runs the live protocol: reads client messages from `incoming` (text frames) and
/// writes server messages to `outgoing`, until the client goes away, the node shuts
/// down, or writing fails. Closes `outgoing` at the end.
pub async fn serve<Si, St>(
    state: ApiState,
    mut outgoing: Si,
    mut incoming: St,
) -> Result<(), LiveError>
where
    Si: Sink<ServerMessage> + Unpin,
    Si::Error: Display,
    St: Stream<Item = String> + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(String, u64, ServerMessage)>(OUT_QUEUE);
    let mut subscriptions: HashMap<String, Subscription> = HashMap::new();
    let mut generation = 0u64;
    let shutdown = state.shutdown().clone();
    let result = loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            frame = incoming.next() => {
                let Some(text) = frame else { break Ok(()) };
                generation += 1;
                handle(&state, &text, &mut subscriptions, generation, &tx).await
            }
            Some((id, sent_generation, message)) = rx.recv() => {
                // A diff queued just before an unsubscribe (or a re-subscribe under the
                // same id) is dropped.
                let current = subscriptions.get(&id).is_some_and(|s| s.generation == sent_generation);
                current.then_some(message)
            }
        };
        if let Some(message) = message
            && let Err(err) = outgoing.send(message).await
        {
            break Err(LiveError(err.to_string()));
        }
    };
    drop(subscriptions);
    let _ = outgoing.close().await;
    result
}

/// Acts on one client message; returns the reply to send, if any.
async fn handle(
    state: &ApiState,
    text: &str,
    subscriptions: &mut HashMap<String, Subscription>,
    generation: u64,
    tx: &mpsc::Sender<(String, u64, ServerMessage)>,
) -> Option<ServerMessage> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return Some(ServerMessage::error(
                None,
                format!(
                    "not a client message (send JSON text like {{\"type\":\"subscribe\",\"id\":\"q1\",\"query\":\"SELECT * FROM c\"}}): {e}"
                ),
            ));
        }
    };
    match message {
        ClientMessage::Unsubscribe { id } => match subscriptions.remove(&id) {
            Some(_) => None,
            None => Some(ServerMessage::error(
                Some(&id),
                format!("no subscription '{id}'"),
            )),
        },
        ClientMessage::Subscribe { id, query, args } => {
            if subscriptions.contains_key(&id) {
                return Some(ServerMessage::error(
                    Some(&id),
                    format!("subscription id '{id}' is already in use on this socket"),
                ));
            }
            if subscriptions.len() >= MAX_SUBSCRIPTIONS {
                return Some(ServerMessage::error(
                    Some(&id),
                    format!("at most {MAX_SUBSCRIPTIONS} subscriptions per socket"),
                ));
            }
            let ordered =
                matches!(parse(&query), Ok(Statement::Select(s)) if !s.order_by.is_empty());
            let observer = state
                .blocking(move |engine| engine.observe(&query, &args).map_err(ApiError::from))
                .await;
            let observer = match observer {
                Ok(o) => o,
                Err(e) => return Some(ServerMessage::error(Some(&id), e.to_string())),
            };
            let initial = ServerMessage::Initial {
                id: id.clone(),
                documents: observer.result().to_vec(),
                ids: observer.ids(),
            };
            let task = tokio::spawn(forward(
                observer,
                id.clone(),
                generation,
                ordered,
                tx.clone(),
            ));
            metrics::gauge!(metrics::LIVE_SUBSCRIPTIONS).increment(1.0);
            subscriptions.insert(
                id,
                Subscription {
                    generation,
                    task: task.abort_handle(),
                },
            );
            Some(initial)
        }
    }
}

/// Hands each diff of one observer to the socket's writer.
async fn forward(
    mut observer: Observer,
    id: String,
    generation: u64,
    ordered: bool,
    tx: mpsc::Sender<(String, u64, ServerMessage)>,
) {
    while let Some(diff) = observer.next().await {
        let order = ordered.then(|| observer.ids());
        let message = ServerMessage::Diff {
            id: id.clone(),
            diff,
            order,
        };
        if tx.send((id.clone(), generation, message)).await.is_err() {
            return;
        }
    }
}
