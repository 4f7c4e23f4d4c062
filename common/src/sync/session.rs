//! [`Session`]: the sync state machine for one peer.
//!
//! Sans-IO: the node (or the simulator) feeds it [`Input`]s — the link connected, a
//! frame arrived, a timer tick, the store changed, our interest towards this peer
//! changed — together with the store and the current time, and carries out the
//! [`Output`]s: frames to send, a close with its reason, events for the node. Nothing
//! in here reads a clock or touches a socket.
//!
//! A session plays both roles at once. As a *receiver* it pulls, per query of its
//! interest, what the peer changed after its bookmark, merges it, fetches whole
//! documents where a fragment is not enough, and advances the bookmark only when a
//! batch is complete. As a *sender* it answers the peer's pulls and wants, and pushes
//! changes that touch the peer's interest as they happen. `docs/sync.md` explains why
//! this is correct under loss, duplication and reordering of frames.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::frame::{
    self, BatchId, BlobChunk, BlobWant, Changes, Check, DocItem, DocReply, Docs, DocsItem, Frame,
    FrameError, Heads, Hello, Links, MIN_MAX_FRAME_BYTES, Message, PROTOCOL_VERSION, Pull,
    Subscribe, Want, WantItem,
};
use super::interest::{Interest, Subscription, SubscriptionError};
use super::store::{StoreFailure, SyncStore};
use super::{Capabilities, Digest, Lsn, QueryId};
use crate::crdt::{Crdt, DocState};
use crate::ids::{ActorId, CollectionName, DocId};

/// Timers and limits of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The largest frame we accept (announced in our hello).
    pub max_frame_bytes: u32,
    /// The optional features we offer.
    pub capabilities: Capabilities,
    /// How long the peer has to complete the handshake.
    pub handshake_timeout_ms: u64,
    /// How long a pull, want or subscription may go without progress before it is sent
    /// again; also how long a detected gap in pushes may last before a pull repairs it.
    pub retry_ms: u64,
    /// How often to send `Heads` and `Ping`.
    pub heartbeat_ms: u64,
    /// Documents read from the store per page when building a batch.
    pub page_docs: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: frame::DEFAULT_MAX_FRAME_BYTES,
            capabilities: Capabilities::ALL,
            handshake_timeout_ms: 10_000,
            retry_ms: 3_000,
            heartbeat_ms: 1_000,
            page_docs: 256,
        }
    }
}

/// What our hello says about us (the store adds its incarnation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHello {
    /// Our node identity (Ed25519 public key).
    pub node_id: Vec<u8>,
    /// The actor id we write as.
    pub actor: ActorId,
    /// Mesh admission proof, when the mesh requires one.
    pub admission: Option<Vec<u8>>,
}

/// What the driver tells a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The link is up: send our hello.
    Connected,
    /// A frame arrived from the peer.
    Frame(Vec<u8>),
    /// Time passed: retries, handshake timeout, heartbeat.
    Tick,
    /// The store changed (a local write, or a merge by another session): push to the
    /// peer what touches its interest.
    LocalChange {
        /// The store's LSN after the change (a hint; the session reads the store).
        lsn: Lsn,
    },
    /// Our interest towards this peer (see [`super::InterestTable::toward`]).
    SetSubscriptions(Vec<Interest>),
    /// Share our direct links with the peer (presence).
    SendLinks(Links),
    /// Ask the peer for attachment chunks.
    WantBlob(BlobWant),
}

/// What a session asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send these bytes (one frame) to the peer.
    Send(Vec<u8>),
    /// Close the link; the session is finished. The node keeps its other sessions.
    Close {
        /// Why, for the log.
        reason: CloseReason,
    },
    /// Something the node should know.
    Event(Event),
}

/// Events for the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The peer's hello arrived and was accepted.
    PeerHello(Hello),
    /// A pull completed: we hold what the peer held for `query` up to `lsn`.
    CaughtUp {
        /// The query.
        query: QueryId,
        /// The new bookmark.
        lsn: Lsn,
    },
    /// Documents changed in the store (notify observers; feed `LocalChange` to the
    /// other sessions).
    DocsChanged {
        /// The documents.
        docs: Vec<(CollectionName, DocId)>,
    },
    /// The peer's interest changed: recompute the interest towards the other peers.
    PeerInterest(Vec<Interest>),
    /// One of our own subscriptions was refused (it is left out).
    SubscriptionRejected(SubscriptionError),
    /// The peer did something odd that we tolerate.
    ProtocolError(String),
    /// The peer's presence gossip.
    Links(Links),
    /// An attachment chunk from the peer (not verified yet: the node checks the hash).
    BlobChunk(BlobChunk),
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloseReason {
    #[error("bad frame from peer: {0}")]
    BadFrame(FrameError),
    #[error("peer sent {message} before its Hello, beyond what a session holds until then")]
    BeforeHello { message: &'static str },
    #[error("peer speaks protocol version {peer}, this build speaks {PROTOCOL_VERSION}")]
    UnsupportedProtocol { peer: u32 },
    #[error("peer's frame limit of {peer} bytes is below the minimum of {MIN_MAX_FRAME_BYTES}")]
    FrameLimitTooSmall { peer: u32 },
    #[error("no Hello from the peer within {0} ms")]
    HandshakeTimeout(u64),
    #[error("connected to ourselves (same store incarnation)")]
    SelfConnection,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("peer sent a bad subscription: {0}")]
    BadQuery(SubscriptionError),
    #[error("{0}")]
    Store(StoreFailure),
    #[error("cannot send: {0}")]
    Unsendable(String),
    #[error("peer said goodbye: {0}")]
    Goodbye(String),
}

impl From<StoreFailure> for CloseReason {
    fn from(failure: StoreFailure) -> Self {
        CloseReason::Store(failure)
    }
}

/// Bytes and frames counted by a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// The last measured round-trip time.
    pub rtt_ms: Option<u64>,
    /// Requests sent that wait for an answer (`Pull` and `Want` frames).
    pub requests: u64,
    /// Inputs after which at least one request left: the number of request waves, i.e.
    /// of round trips spent waiting for data (the handshake not counted).
    pub request_waves: u64,
    /// The lowest push cursor: the store LSN up to which the changes of the collections
    /// the peer asks for have been pushed to it (a change in another collection does not
    /// move it); 0 before the peer pulls.
    pub pushed_upto: Lsn,
}

type DocKey = (CollectionName, DocId);

/// What [`Session::collect_items`] found.
struct Collected {
    /// The fragments to send.
    items: Vec<DocItem>,
    /// Documents left out because the peer sent us this very state.
    echoes: usize,
    /// Documents left out because they do not match (a pull from scratch).
    left_out: usize,
}

/// Echo entries kept per session at most (see `Session::echo`).
const ECHO_LIMIT: usize = 200_000;

/// How much of out-of-order pushes a session keeps (estimated) before dropping them.
const PARKED_LIMIT_BYTES: usize = 8 * 1024 * 1024;
/// Messages a session holds that arrived before the peer's Hello: the peer sends its
/// Hello first, but on the link it had then, and what it sends next may take another of
/// its links to us and overtake it. More than this, or more bytes than one frame, before
/// the Hello closes the session.
const EARLY_LIMIT: usize = 64;
type Result<T = ()> = std::result::Result<T, CloseReason>;

/// A pull we sent and have not finished.
#[derive(Debug)]
struct PullState {
    collection: CollectionName,
    queries: Vec<QueryId>,
    base: Lsn,
    last_progress: u64,
}

/// A batch (pull response or push) being received.
#[derive(Debug)]
struct Incoming {
    collection: CollectionName,
    queries: Vec<QueryId>,
    base: Lsn,
    upto: Lsn,
    parts: u32,
    received: BTreeSet<u32>,
    /// Wanted documents the batch waits for.
    waiting: BTreeSet<DocKey>,
    /// For a pull from scratch: every document the response named.
    mentioned: Option<BTreeSet<DocId>>,
    last_progress: u64,
}

/// A document we asked for.
#[derive(Debug)]
struct WantState {
    digest: Option<Digest>,
    sent_at: Option<u64>,
    batches: BTreeSet<BatchId>,
}

/// Pieces of a fragment split across frames.
#[derive(Debug)]
struct Pieces {
    parts: Vec<Option<DocState>>,
}

/// Where a piece belongs: a batch, or a `Docs` answer.
type PieceKey = (Option<BatchId>, DocKey);

/// The sync state machine for one peer. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    local: LocalHello,
    closed: bool,
    connected_at: Option<u64>,
    hello_sent_at: u64,
    peer: Option<Hello>,
    /// Messages that arrived before the peer's Hello, handled right after it.
    early: Vec<Message>,
    /// Their frames' size.
    early_bytes: usize,
    now: u64,
    stats: SessionStats,
    last_heartbeat: u64,
    changed: Vec<DocKey>,
    /// Documents whose stored state we know the peer holds too (we just merged it from
    /// the peer and ended up with its state), by digest: sending them back would be an
    /// echo. A later change gives the document another digest, so a stale entry never
    /// hides a change; the map is cleared when it reaches [`ECHO_LIMIT`].
    echo: HashMap<DocKey, Digest>,

    // Receiver: what we want from the peer.
    interest: Vec<Interest>,
    interest_version: u64,
    subscribe_acked: bool,
    subscribe_sent_at: u64,
    wanted: BTreeMap<QueryId, Subscription>,
    bookmarks: BTreeMap<QueryId, Lsn>,
    pulled: BTreeSet<QueryId>,
    pulling: BTreeMap<QueryId, u64>,
    pulls: BTreeMap<u64, PullState>,
    next_pull: u64,
    incoming: BTreeMap<BatchId, Incoming>,
    done: BTreeMap<QueryId, BTreeMap<Lsn, Lsn>>,
    heads: BTreeMap<QueryId, Lsn>,
    behind: BTreeMap<QueryId, u64>,
    wants: BTreeMap<DocKey, WantState>,
    pieces: BTreeMap<PieceKey, Pieces>,
    parked: BTreeMap<u64, Vec<Changes>>,
    parked_bytes: usize,

    // Sender: what the peer wants from us.
    peer_interest_version: u64,
    peer_interest: BTreeMap<QueryId, Subscription>,
    served: BTreeMap<QueryId, Subscription>,
    push_cursor: BTreeMap<QueryId, Lsn>,
    next_push: u64,
    answered: BTreeSet<u64>,
    adopted: BTreeMap<QueryId, u64>,
}

impl Session {
    /// A session that has not connected yet.
    pub fn new(config: SessionConfig, local: LocalHello) -> Self {
        Self {
            config,
            local,
            closed: false,
            connected_at: None,
            hello_sent_at: 0,
            peer: None,
            early: Vec::new(),
            early_bytes: 0,
            now: 0,
            stats: SessionStats::default(),
            last_heartbeat: 0,
            changed: Vec::new(),
            echo: HashMap::new(),
            interest: Vec::new(),
            interest_version: 1,
            subscribe_acked: false,
            subscribe_sent_at: 0,
            wanted: BTreeMap::new(),
            bookmarks: BTreeMap::new(),
            pulled: BTreeSet::new(),
            pulling: BTreeMap::new(),
            pulls: BTreeMap::new(),
            next_pull: 1,
            incoming: BTreeMap::new(),
            done: BTreeMap::new(),
            heads: BTreeMap::new(),
            behind: BTreeMap::new(),
            wants: BTreeMap::new(),
            pieces: BTreeMap::new(),
            parked: BTreeMap::new(),
            parked_bytes: 0,
            peer_interest_version: 0,
            peer_interest: BTreeMap::new(),
            served: BTreeMap::new(),
            push_cursor: BTreeMap::new(),
            next_push: 1,
            answered: BTreeSet::new(),
            adopted: BTreeMap::new(),
        }
    }

    /// The peer's hello, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// Whether the session has closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            pushed_upto: self.push_cursor.values().copied().min().unwrap_or(0),
            ..self.stats
        }
    }

    /// The capabilities both sides have (ours before the handshake).
    pub fn capabilities(&self) -> Capabilities {
        match &self.peer {
            Some(peer) => self.config.capabilities.intersect(peer.capabilities),
            None => self.config.capabilities,
        }
    }

    /// `event` when the negotiated capabilities include `capability`, else a protocol
    /// error naming the message that needed it.
    fn if_capable(
        &self,
        capability: Capabilities,
        message: &str,
        name: &str,
        event: impl FnOnce() -> Event,
    ) -> Event {
        if self.capabilities().contains(capability) {
            event()
        } else {
            Event::ProtocolError(format!("{message} without the {name} capability, ignored"))
        }
    }

    /// The bookmark of a query of our interest on this session.
    pub fn bookmark(&self, query: &QueryId) -> Option<Lsn> {
        self.bookmarks.get(query).copied()
    }

    /// The interest the peer advertised to us.
    pub fn peer_interest(&self) -> impl Iterator<Item = &Subscription> {
        self.peer_interest.values()
    }

    /// Whether nothing is in flight: handshake done, our interest acknowledged, every
    /// query pulled, no batch, want or repair pending.
    pub fn is_idle(&self) -> bool {
        !self.closed
            && self.peer.is_some()
            && self.subscribe_acked
            && self.pulls.is_empty()
            && self.incoming.is_empty()
            && self.wants.is_empty()
            && self.behind.is_empty()
            && self.parked.is_empty()
            && self.wanted.keys().all(|q| self.pulled.contains(q))
    }

    /// Handles one input at time `now_ms`; returns what to do.
    pub fn handle(&mut self, store: &mut dyn SyncStore, now_ms: u64, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.now = now_ms;
        let requests_before = self.stats.requests;
        let result = match input {
            Input::Connected => self.on_connected(store, &mut out),
            Input::Frame(bytes) => self.on_frame(store, &mut out, &bytes),
            Input::Tick => self.on_tick(store, &mut out),
            Input::LocalChange { .. } if self.peer.is_some() => self.push(store, &mut out),
            Input::LocalChange { .. } => Ok(()),
            Input::SetSubscriptions(list) => self.set_subscriptions(store, &mut out, list),
            Input::SendLinks(links) => {
                if self.peer.is_some() && self.capabilities().contains(Capabilities::PRESENCE) {
                    self.send(&mut out, Message::Links(links))
                } else {
                    Ok(())
                }
            }
            Input::WantBlob(want) => {
                if self.peer.is_some() && self.capabilities().contains(Capabilities::BLOBS) {
                    self.send(&mut out, Message::BlobWant(want))
                } else {
                    Ok(())
                }
            }
        };
        let result = result
            .and_then(|()| {
                if self.peer.is_some() {
                    self.unpark(store, &mut out)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| self.flush_wants(&mut out));
        if self.stats.requests > requests_before {
            self.stats.request_waves += 1;
        }
        if !self.changed.is_empty() {
            let mut docs = std::mem::take(&mut self.changed);
            docs.sort();
            docs.dedup();
            out.push(Output::Event(Event::DocsChanged { docs }));
        }
        if let Err(reason) = result {
            if !matches!(reason, CloseReason::Goodbye(_)) && self.connected_at.is_some() {
                let goodbye = Message::Goodbye {
                    reason: reason.to_string(),
                };
                let _ = self.send(&mut out, goodbye);
            }
            out.push(Output::Close { reason });
            self.closed = true;
        }
        out
    }

    fn send_limit(&self) -> u32 {
        match &self.peer {
            Some(peer) => self.config.max_frame_bytes.min(peer.max_frame_bytes),
            None => self.config.max_frame_bytes,
        }
    }

    fn send(&mut self, out: &mut Vec<Output>, message: Message) -> Result {
        if matches!(message, Message::Pull(_) | Message::Want(_)) {
            self.stats.requests += 1;
        }
        let bytes = frame::encode(&Frame::V1(message), self.send_limit())
            .map_err(|e| CloseReason::Unsendable(e.to_string()))?;
        self.stats.bytes_out += bytes.len() as u64;
        self.stats.frames_out += 1;
        out.push(Output::Send(bytes));
        Ok(())
    }

    fn hello(&self, store: &dyn SyncStore) -> Hello {
        Hello {
            protocol: PROTOCOL_VERSION,
            node_id: self.local.node_id.clone(),
            actor: self.local.actor,
            incarnation: store.incarnation(),
            capabilities: self.config.capabilities,
            max_frame_bytes: self.config.max_frame_bytes,
            admission: self.local.admission.clone(),
        }
    }

    fn on_connected(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Output>) -> Result {
        if self.connected_at.is_some() {
            return Ok(());
        }
        self.connected_at = Some(self.now);
        self.hello_sent_at = self.now;
        let hello = self.hello(store);
        self.send(out, Message::Hello(hello))
    }

    fn on_frame(
        &mut self,
        store: &mut dyn SyncStore,
        out: &mut Vec<Output>,
        bytes: &[u8],
    ) -> Result {
        self.stats.bytes_in += bytes.len() as u64;
        self.stats.frames_in += 1;
        let Frame::V1(message) =
            frame::decode(bytes, self.config.max_frame_bytes).map_err(CloseReason::BadFrame)?;
        if self.peer.is_none() {
            return match message {
                Message::Hello(hello) => {
                    self.on_hello(store, out, hello)?;
                    self.early_bytes = 0;
                    for message in std::mem::take(&mut self.early) {
                        self.on_message(store, out, message)?;
                    }
                    Ok(())
                }
                Message::Goodbye { reason } => Err(CloseReason::Goodbye(reason)),
                other
                    if self.early.len() < EARLY_LIMIT
                        && self.early_bytes + bytes.len()
                            <= self.config.max_frame_bytes as usize =>
                {
                    self.early.push(other);
                    self.early_bytes += bytes.len();
                    Ok(())
                }
                other => Err(CloseReason::BeforeHello {
                    message: other.name(),
                }),
            };
        }
        self.on_message(store, out, message)
    }

    /// A message from the peer after its Hello.
    fn on_message(
        &mut self,
        store: &mut dyn SyncStore,
        out: &mut Vec<Output>,
        message: Message,
    ) -> Result {
        match message {
            Message::Hello(hello) => {
                if Some(&hello) == self.peer.as_ref() {
                    Ok(()) // a duplicate
                } else {
                    Err(CloseReason::Protocol(
                        "a second, different Hello".to_owned(),
                    ))
                }
            }
            Message::Subscribe(subscribe) => self.on_subscribe(out, subscribe),
            Message::Subscribed { version } => {
                if version == self.interest_version {
                    self.subscribe_acked = true;
                }
                Ok(())
            }
            Message::Pull(pull) => self.on_pull(store, out, pull),
            Message::Changes(changes) => self.on_changes(store, out, changes),
            Message::Want(want) => self.on_want(store, out, want),
            Message::Docs(docs) => self.on_docs(store, out, docs),
            Message::Heads(heads) => {
                self.on_heads(heads);
                Ok(())
            }
            Message::BlobWant(want) => self.on_blob_want(store, out, want),
            Message::BlobChunk(chunk) => {
                let event = self.if_capable(Capabilities::BLOBS, "BlobChunk", "blobs", || {
                    Event::BlobChunk(chunk)
                });
                out.push(Output::Event(event));
                Ok(())
            }
            Message::Links(links) => {
                let event = self.if_capable(Capabilities::PRESENCE, "Links", "presence", || {
                    Event::Links(links)
                });
                out.push(Output::Event(event));
                Ok(())
            }
            Message::Ping { nonce } => self.send(out, Message::Pong { nonce }),
            Message::Pong { nonce } => {
                if nonce <= self.now {
                    self.stats.rtt_ms = Some(self.now - nonce);
                }
                Ok(())
            }
            Message::Goodbye { reason } => Err(CloseReason::Goodbye(reason)),
        }
    }

    fn on_hello(
        &mut self,
        store: &mut dyn SyncStore,
        out: &mut Vec<Output>,
        hello: Hello,
    ) -> Result {
        if hello.protocol != PROTOCOL_VERSION {
            return Err(CloseReason::UnsupportedProtocol {
                peer: hello.protocol,
            });
        }
        if hello.max_frame_bytes < MIN_MAX_FRAME_BYTES {
            return Err(CloseReason::FrameLimitTooSmall {
                peer: hello.max_frame_bytes,
            });
        }
        if hello.incarnation == store.incarnation() {
            return Err(CloseReason::SelfConnection);
        }
        if self.connected_at.is_none() {
            self.on_connected(store, out)?;
        }
        self.peer = Some(hello.clone());
        out.push(Output::Event(Event::PeerHello(hello.clone())));
        let queries: Vec<QueryId> = self.wanted.keys().copied().collect();
        for query in queries {
            let lsn = store.bookmark(&hello.incarnation, &query)?;
            self.bookmarks.insert(query, lsn);
        }
        self.send_subscribe(out)?;
        self.start_pulls(out, self.wanted.keys().copied().collect())
    }

    fn send_subscribe(&mut self, out: &mut Vec<Output>) -> Result {
        self.subscribe_acked = false;
        self.subscribe_sent_at = self.now;
        let subscribe = Subscribe {
            version: self.interest_version,
            queries: self.interest.clone(),
        };
        self.send(out, Message::Subscribe(subscribe))
    }

    fn set_subscriptions(
        &mut self,
        store: &mut dyn SyncStore,
        out: &mut Vec<Output>,
        list: Vec<Interest>,
    ) -> Result {
        let mut parsed: BTreeMap<QueryId, (Subscription, u8)> = BTreeMap::new();
        for interest in list {
            match Subscription::parse(&interest.query) {
                Ok(sub) => {
                    let hops = parsed
                        .get(&sub.id)
                        .map_or(interest.hops, |(_, h)| (*h).min(interest.hops));
                    parsed.insert(sub.id, (sub, hops));
                }
                Err(error) => out.push(Output::Event(Event::SubscriptionRejected(error))),
            }
        }
        let interest: Vec<Interest> = parsed
            .values()
            .map(|(sub, hops)| Interest {
                query: sub.text.clone(),
                hops: *hops,
            })
            .collect();
        if interest == self.interest {
            return Ok(());
        }
        self.interest = interest;
        self.interest_version += 1;
        let wanted: BTreeMap<QueryId, Subscription> =
            parsed.into_iter().map(|(id, (sub, _))| (id, sub)).collect();
        let removed: Vec<QueryId> = self
            .wanted
            .keys()
            .filter(|q| !wanted.contains_key(q))
            .copied()
            .collect();
        for query in removed {
            self.pulling.remove(&query);
            self.pulled.remove(&query);
            self.behind.remove(&query);
            self.done.remove(&query);
            self.heads.remove(&query);
            self.bookmarks.remove(&query);
        }
        let added: Vec<QueryId> = wanted
            .keys()
            .filter(|q| !self.wanted.contains_key(q))
            .copied()
            .collect();
        self.wanted = wanted;
        let Some(peer) = self.peer.as_ref().map(|p| p.incarnation) else {
            return Ok(());
        };
        for query in &added {
            let lsn = store.bookmark(&peer, query)?;
            self.bookmarks.insert(*query, lsn);
        }
        self.send_subscribe(out)?;
        self.start_pulls(out, added)
    }

    /// Sends one pull per (collection, bookmark) group of `queries`.
    fn start_pulls(&mut self, out: &mut Vec<Output>, queries: Vec<QueryId>) -> Result {
        let mut groups: BTreeMap<(CollectionName, Lsn), Vec<QueryId>> = BTreeMap::new();
        for query in queries {
            if self.pulling.contains_key(&query) {
                continue;
            }
            let Some(sub) = self.wanted.get(&query) else {
                continue;
            };
            let base = self.bookmarks.get(&query).copied().unwrap_or(0);
            groups
                .entry((sub.collection.clone(), base))
                .or_default()
                .push(query);
        }
        for ((collection, base), queries) in groups {
            let pull_id = self.next_pull;
            self.next_pull += 1;
            let texts = queries
                .iter()
                .map(|q| self.wanted[q].text.clone())
                .collect();
            for query in &queries {
                self.pulling.insert(*query, pull_id);
                self.behind.remove(query);
            }
            self.pulls.insert(
                pull_id,
                PullState {
                    collection,
                    queries,
                    base,
                    last_progress: self.now,
                },
            );
            let pull = Pull {
                pull_id,
                base,
                interest_version: self.interest_version,
                queries: texts,
            };
            self.send(out, Message::Pull(pull))?;
        }
        Ok(())
    }

    fn on_tick(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Output>) -> Result {
        let now = self.now;
        let retry = self.config.retry_ms;
        let Some(connected_at) = self.connected_at else {
            return Ok(());
        };
        if self.peer.is_none() {
            if now.saturating_sub(connected_at) >= self.config.handshake_timeout_ms {
                return Err(CloseReason::HandshakeTimeout(
                    self.config.handshake_timeout_ms,
                ));
            }
            if now.saturating_sub(self.hello_sent_at) >= retry {
                self.hello_sent_at = now;
                let hello = self.hello(store);
                self.send(out, Message::Hello(hello))?;
            }
            return Ok(());
        }
        if !self.subscribe_acked && now.saturating_sub(self.subscribe_sent_at) >= retry {
            self.send_subscribe(out)?;
        }
        // Pulls whose response stopped arriving are abandoned and sent again (from the
        // bookmark, which may have moved on meanwhile); a pull whose frames have all
        // arrived waits for its wants instead.
        let stale: Vec<u64> = self
            .pulls
            .iter()
            .filter(|(id, p)| {
                let frames_done = self
                    .incoming
                    .get(&BatchId::Pull(**id))
                    .is_some_and(|i| i.received.len() as u32 == i.parts);
                !frames_done && now.saturating_sub(p.last_progress) >= retry
            })
            .map(|(id, _)| *id)
            .collect();
        let mut again = Vec::new();
        for id in stale {
            if let Some(pull) = self.pulls.remove(&id) {
                self.incoming.remove(&BatchId::Pull(id));
                for query in pull.queries {
                    if self.pulling.get(&query) == Some(&id) {
                        self.pulling.remove(&query);
                        again.push(query);
                    }
                }
            }
        }
        // Pushes that stopped arriving are dropped; the gap they leave is repaired below.
        self.incoming.retain(|id, batch| {
            matches!(id, BatchId::Pull(_))
                || batch.received.len() as u32 == batch.parts
                || now.saturating_sub(batch.last_progress) < 2 * retry
        });
        for (query, since) in &self.behind {
            if now.saturating_sub(*since) >= retry && !self.pulling.contains_key(query) {
                again.push(*query);
            }
        }
        // Queries of our interest never pulled (a pull lost before it was tracked).
        for query in self.wanted.keys() {
            if !self.pulled.contains(query) && !self.pulling.contains_key(query) {
                again.push(*query);
            }
        }
        again.sort();
        again.dedup();
        self.start_pulls(out, again)?;
        for want in self.wants.values_mut() {
            if want.sent_at.is_some_and(|t| now.saturating_sub(t) >= retry) {
                want.sent_at = None;
            }
        }
        if now.saturating_sub(self.last_heartbeat) >= self.config.heartbeat_ms {
            self.last_heartbeat = now;
            let heads = Heads {
                heads: self.push_cursor.iter().map(|(q, l)| (*q, *l)).collect(),
            };
            self.send(out, Message::Heads(heads))?;
            self.send(out, Message::Ping { nonce: now })?;
        }
        Ok(())
    }

    // --- Sender ---------------------------------------------------------------------

    fn peer_query(&self, text: &str) -> Result<Subscription> {
        let id = QueryId::of(text);
        if let Some(sub) = self.served.get(&id).or_else(|| self.peer_interest.get(&id)) {
            return Ok(sub.clone());
        }
        Subscription::parse(text).map_err(CloseReason::BadQuery)
    }

    fn on_subscribe(&mut self, out: &mut Vec<Output>, subscribe: Subscribe) -> Result {
        if subscribe.version > self.peer_interest_version {
            let mut interest = BTreeMap::new();
            for entry in &subscribe.queries {
                let sub = self.peer_query(&entry.query)?;
                interest.insert(sub.id, sub);
            }
            self.peer_interest_version = subscribe.version;
            self.peer_interest = interest;
            // Stop serving queries the peer dropped, unless a pull newer than this
            // subscription asked for them (the subscription was overtaken).
            let keep = &self.peer_interest;
            let version = subscribe.version;
            let adopted = &self.adopted;
            let dropped: Vec<QueryId> = self
                .served
                .keys()
                .filter(|q| !keep.contains_key(q) && adopted.get(q).is_none_or(|v| *v <= version))
                .copied()
                .collect();
            for query in dropped {
                self.served.remove(&query);
                self.push_cursor.remove(&query);
                self.adopted.remove(&query);
            }
            out.push(Output::Event(Event::PeerInterest(subscribe.queries)));
        }
        self.send(
            out,
            Message::Subscribed {
                version: subscribe.version,
            },
        )
    }

    fn on_pull(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Output>, pull: Pull) -> Result {
        if !self.answered.insert(pull.pull_id) {
            return Ok(()); // a duplicate
        }
        let mut subs = Vec::with_capacity(pull.queries.len());
        for text in &pull.queries {
            subs.push(self.peer_query(text)?);
        }
        let Some(collection) = subs.first().map(|s| s.collection.clone()) else {
            return Err(CloseReason::Protocol("a Pull without queries".to_owned()));
        };
        if subs.iter().any(|s| s.collection != collection) {
            return Err(CloseReason::Protocol(
                "a Pull's queries must read one collection".to_owned(),
            ));
        }
        let current = store.current_lsn();
        let upto = current.max(pull.base);
        let base = pull.base.min(current);
        let collected = self.collect_items(store, &collection, &subs, base, base == 0)?;
        let names_all = base == 0 && collected.echoes == 0 && collected.left_out == 0;
        let ids: Vec<QueryId> = subs.iter().map(|s| s.id).collect();
        self.send_batch(
            out,
            BatchId::Pull(pull.pull_id),
            &collection,
            &ids,
            pull.base,
            upto,
            collected.items,
            names_all,
        )?;
        let adopt = pull.interest_version > self.peer_interest_version;
        for sub in subs {
            if adopt || self.peer_interest.contains_key(&sub.id) {
                self.push_cursor.insert(sub.id, upto);
                self.adopted.insert(sub.id, pull.interest_version);
                self.served.insert(sub.id, sub);
            }
        }
        Ok(())
    }

    /// The fragments of documents of `collection` changed after `base`: those that match
    /// one of `subs`, and (unless `only_matching`) those that do not, so that a receiver
    /// holding them sees them change (and stop matching). Documents with natural ids
    /// and shadows travel even when `only_matching`: every version of a natural id must
    /// reach the nodes that may hold another (docs/sync.md).
    fn collect_items(
        &self,
        store: &dyn SyncStore,
        collection: &CollectionName,
        subs: &[Subscription],
        base: Lsn,
        only_matching: bool,
    ) -> Result<Collected> {
        let mut items = Vec::new();
        let mut echoes = 0;
        let mut left_out = 0;
        let mut cursor = base;
        let page = self.config.page_docs.max(1);
        loop {
            let changed = store.changed_since(collection, base, cursor, page)?;
            let full = changed.len() == page;
            for doc in changed {
                cursor = doc.lsn;
                if let Some(digest) = self.echo.get(&(collection.clone(), doc.id.clone()))
                    && *digest == Digest::of(&doc.state)
                {
                    // The peer sent us this very state: nothing to send back.
                    echoes += 1;
                    continue;
                }
                if doc.shadow {
                    items.push(DocItem {
                        id: doc.id,
                        matches: false,
                        check: Check::Shadow,
                        piece: 0,
                        pieces: 1,
                        state: doc.fragment,
                    });
                    continue;
                }
                let json = doc.state.to_json(&doc.id);
                let matches = json
                    .as_ref()
                    .is_some_and(|j| subs.iter().any(|s| s.matches_json(j)));
                if !matches && only_matching && doc.id.is_uuid() {
                    left_out += 1;
                    continue;
                }
                let check = if doc.whole {
                    Check::Whole
                } else {
                    Check::Digest(Digest::of(&doc.state))
                };
                items.push(DocItem {
                    id: doc.id,
                    matches,
                    check,
                    piece: 0,
                    pieces: 1,
                    state: doc.fragment,
                });
            }
            if !full {
                break;
            }
        }
        Ok(Collected {
            items,
            echoes,
            left_out,
        })
    }

    /// Pushes to the peer what changed since each served query's cursor.
    fn push(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Output>) -> Result {
        let current = store.current_lsn();
        let mut groups: BTreeMap<(CollectionName, Lsn), Vec<QueryId>> = BTreeMap::new();
        for (query, cursor) in &self.push_cursor {
            if *cursor < current {
                let collection = self.served[query].collection.clone();
                groups
                    .entry((collection, *cursor))
                    .or_default()
                    .push(*query);
            }
        }
        for ((collection, cursor), queries) in groups {
            let subs: Vec<Subscription> = queries.iter().map(|q| self.served[q].clone()).collect();
            let Collected { items, echoes, .. } =
                self.collect_items(store, &collection, &subs, cursor, false)?;
            if items.is_empty() && echoes == 0 {
                // Nothing of this collection changed: the cursor stays, and the next push
                // covers the wider range.
                continue;
            }
            // A batch of echoes only is sent empty: it moves the peer's bookmark past
            // them (and our cursor), so they are not scanned again.
            let id = self.next_push;
            self.next_push += 1;
            self.send_batch(
                out,
                BatchId::Push(id),
                &collection,
                &queries,
                cursor,
                current,
                items,
                false,
            )?;
            for query in queries {
                self.push_cursor.insert(query, current);
            }
        }
        Ok(())
    }

    /// Splits a fragment too large for one frame into pieces of whole entries.
    fn split(item: DocItem, budget: usize) -> Result<Vec<DocItem>> {
        let mut chunks: Vec<Vec<_>> = vec![Vec::new()];
        let mut used = 0;
        for (path, entry) in item.state.entries() {
            let single = DocItem {
                state: DocState::from_entries([(path.clone(), entry.clone())]),
                ..item.clone_header()
            };
            let len = frame::item_len(&single);
            if len > budget {
                return Err(CloseReason::Unsendable(format!(
                    "document {} has a field of {len} bytes, more than fits in a frame of this session",
                    item.id
                )));
            }
            if used + len > budget {
                chunks.push(Vec::new());
                used = 0;
            }
            used += len;
            chunks
                .last_mut()
                .expect("never empty")
                .push((path.clone(), entry.clone()));
        }
        let pieces = chunks.len() as u32;
        Ok(chunks
            .into_iter()
            .enumerate()
            .map(|(i, entries)| DocItem {
                piece: i as u32,
                pieces,
                state: DocState::from_entries(entries),
                ..item.clone_header()
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn send_batch(
        &mut self,
        out: &mut Vec<Output>,
        batch: BatchId,
        collection: &CollectionName,
        queries: &[QueryId],
        base: Lsn,
        upto: Lsn,
        items: Vec<DocItem>,
        names_all: bool,
    ) -> Result {
        let header = |part, parts, docs| Changes {
            batch,
            collection: collection.clone(),
            queries: queries.to_vec(),
            base,
            upto,
            part,
            parts,
            names_all,
            docs,
        };
        let overhead =
            frame::frame_len(&Message::Changes(header(u32::MAX, u32::MAX, Vec::new()))) + 8;
        let budget = (self.send_limit() as usize)
            .checked_sub(overhead)
            .filter(|b| *b >= 64)
            .ok_or_else(|| {
                CloseReason::Unsendable("a batch header does not fit in a frame".to_owned())
            })?;
        let mut sized = Vec::with_capacity(items.len());
        for item in items {
            let len = frame::item_len(&item);
            if len <= budget {
                sized.push((item, len));
            } else {
                for piece in Self::split(item, budget)? {
                    let len = frame::item_len(&piece);
                    sized.push((piece, len));
                }
            }
        }
        let frames = pack(sized, budget);
        let parts = frames.len() as u32;
        for (part, docs) in frames.into_iter().enumerate() {
            self.send(out, Message::Changes(header(part as u32, parts, docs)))?;
        }
        Ok(())
    }

    fn on_want(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Output>, want: Want) -> Result {
        let mut replies = Vec::with_capacity(want.docs.len());
        for item in want.docs {
            let reply = match store.doc(&item.collection, &item.id)? {
                None => DocReply::Missing,
                Some(state) if item.digest == Some(Digest::of(&state)) => DocReply::Same,
                Some(state) => DocReply::State {
                    piece: 0,
                    pieces: 1,
                    state,
                },
            };
            replies.push(DocsItem {
                collection: item.collection,
                id: item.id,
                reply,
            });
        }
        let overhead = frame::frame_len(&Message::Docs(Docs { docs: Vec::new() })) + 8;
        let budget = (self.send_limit() as usize).saturating_sub(overhead);
        let mut sized = Vec::with_capacity(replies.len());
        for reply in replies {
            let len = frame::docs_item_len(&reply);
            if len <= budget {
                sized.push((reply, len));
                continue;
            }
            let DocReply::State { state, .. } = reply.reply else {
                return Err(CloseReason::Unsendable(
                    "a Docs answer does not fit in a frame".to_owned(),
                ));
            };
            let as_item = DocItem {
                id: reply.id.clone(),
                matches: true,
                check: Check::Whole,
                piece: 0,
                pieces: 1,
                state,
            };
            for piece in Self::split(as_item, budget.saturating_sub(overhead))? {
                let answer = DocsItem {
                    collection: reply.collection.clone(),
                    id: reply.id.clone(),
                    reply: DocReply::State {
                        piece: piece.piece,
                        pieces: piece.pieces,
                        state: piece.state,
                    },
                };
                let len = frame::docs_item_len(&answer);
                sized.push((answer, len));
            }
        }
        for docs in pack(sized, budget) {
            if !docs.is_empty() {
                self.send(out, Message::Docs(Docs { docs }))?;
            }
        }
        Ok(())
    }

    fn on_blob_want(
        &mut self,
        store: &mut dyn SyncStore,
        out: &mut Vec<Output>,
        want: BlobWant,
    ) -> Result {
        if !self.capabilities().contains(Capabilities::BLOBS) {
            return Err(CloseReason::Protocol(
                "BlobWant without the blobs capability".to_owned(),
            ));
        }
        for index in want.chunks {
            let chunk = match store.blob_chunk(&want.hash, index)? {
                Some((total, data)) => BlobChunk {
                    hash: want.hash,
                    index,
                    total,
                    data,
                },
                None => BlobChunk {
                    hash: want.hash,
                    index,
                    total: 0,
                    data: Vec::new(),
                },
            };
            let missing = chunk.total == 0;
            self.send(out, Message::BlobChunk(chunk))?;
            if missing {
                break;
            }
        }
        Ok(())
    }

    // --- Receiver -------------------------------------------------------------------

    fn on_changes(
        &mut self,
        store: &mut dyn SyncStore,
        out: &mut Vec<Output>,
        changes: Changes,
    ) -> Result {
        let key = changes.batch;
        match key {
            BatchId::Pull(id) => {
                let Some(pull) = self.pulls.get_mut(&id) else {
                    return Ok(()); // an abandoned pull, or a duplicate of a finished one
                };
                if pull.base != changes.base
                    || pull.collection != changes.collection
                    || pull.queries != changes.queries
                {
                    return Err(CloseReason::Protocol(format!(
                        "the response to pull {id} does not match the pull"
                    )));
                }
                pull.last_progress = self.now;
            }
            BatchId::Push(id) => {
                if !self.incoming.contains_key(&key) {
                    let wanted: Vec<Lsn> = changes
                        .queries
                        .iter()
                        .filter_map(|q| self.bookmarks.get(q).copied())
                        .collect();
                    if wanted.iter().all(|b| *b >= changes.upto) {
                        return Ok(()); // nothing we want, or a duplicate of a finished push
                    }
                    if wanted.iter().any(|b| *b < changes.base) {
                        // It starts after what we hold: applying it now could drop a
                        // change to a document that an earlier batch is about to bring.
                        self.park(id, changes);
                        return Ok(());
                    }
                }
            }
        }
        let now = self.now;
        let batch = self.incoming.entry(key).or_insert_with(|| Incoming {
            collection: changes.collection.clone(),
            queries: changes.queries.clone(),
            base: changes.base,
            upto: changes.upto,
            parts: changes.parts,
            received: BTreeSet::new(),
            waiting: BTreeSet::new(),
            mentioned: (matches!(key, BatchId::Pull(_)) && changes.base == 0 && !changes.names_all)
                .then(BTreeSet::new),
            last_progress: now,
        });
        if batch.collection != changes.collection
            || batch.queries != changes.queries
            || batch.base != changes.base
            || batch.upto != changes.upto
            || batch.parts != changes.parts
        {
            if matches!(key, BatchId::Pull(_)) {
                // The answer to a duplicate of the pull, made from a later state.
                return Ok(());
            }
            return Err(CloseReason::Protocol(format!(
                "frames of batch {key:?} disagree on its header"
            )));
        }
        if !batch.received.insert(changes.part) {
            return Ok(()); // a duplicate frame
        }
        batch.last_progress = now;
        for item in changes.docs {
            self.on_item(store, key, &changes.collection, item)?;
        }
        self.try_complete(store, out, key)
    }

    /// One fragment of a batch: merge it if we hold the document or it matches, and ask
    /// for the whole document when the fragment may not be enough.
    fn on_item(
        &mut self,
        store: &mut dyn SyncStore,
        batch: BatchId,
        collection: &CollectionName,
        item: DocItem,
    ) -> Result {
        let state = if item.pieces > 1 {
            let key = (Some(batch), (collection.clone(), item.id.clone()));
            match self.assemble(key, item.piece, item.pieces, item.state)? {
                Some(state) => state,
                None => return Ok(()),
            }
        } else {
            item.state
        };
        if let Some(mentioned) = self
            .incoming
            .get_mut(&batch)
            .and_then(|b| b.mentioned.as_mut())
        {
            mentioned.insert(item.id.clone());
        }
        let held = store.doc(collection, &item.id)?;
        if held.is_none() && (!item.matches || item.check == Check::Shadow) {
            // Not for us to hold; but another version of a natural id may reach us (or a
            // node behind us) by another path, and must then meet this one.
            if !item.id.is_uuid() && store.apply_shadow(collection, &item.id, &state)? {
                self.changed.push((collection.clone(), item.id.clone()));
            }
            return Ok(());
        }
        match (held, item.check) {
            (_, Check::Shadow) => {
                // The sender only has a shadow: nothing to compare.
                self.apply(store, collection, &item.id, &state)?;
            }
            (None, Check::Digest(_)) => {
                // A part of a document we have never seen: we need all of it.
                self.want(Some(batch), collection, &item.id, None);
            }
            (_, Check::Whole) => {
                self.apply(store, collection, &item.id, &state)?;
                self.note_if_echo(store, collection, &item.id, Digest::of(&state))?;
            }
            (Some(_), Check::Digest(digest)) => {
                self.apply(store, collection, &item.id, &state)?;
                let ours = store.doc(collection, &item.id)?.map(|s| Digest::of(&s));
                if ours == Some(digest) {
                    self.note_echo(collection, &item.id, digest);
                } else {
                    self.want(Some(batch), collection, &item.id, ours);
                }
            }
        }
        Ok(())
    }

    fn assemble(
        &mut self,
        key: PieceKey,
        piece: u32,
        pieces: u32,
        state: DocState,
    ) -> Result<Option<DocState>> {
        let buffer = self.pieces.entry(key.clone()).or_insert_with(|| Pieces {
            parts: vec![None; pieces as usize],
        });
        if buffer.parts.len() != pieces as usize {
            return Err(CloseReason::Protocol(
                "pieces of one document disagree on their count".to_owned(),
            ));
        }
        buffer.parts[piece as usize] = Some(state);
        if buffer.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let buffer = self.pieces.remove(&key).expect("present");
        let mut whole = DocState::new();
        for part in buffer.parts.into_iter().flatten() {
            whole.merge(&part);
        }
        Ok(Some(whole))
    }

    fn apply(
        &mut self,
        store: &mut dyn SyncStore,
        collection: &CollectionName,
        id: &DocId,
        state: &DocState,
    ) -> Result {
        if store.apply(collection, id, state)? {
            self.changed.push((collection.clone(), id.clone()));
        }
        Ok(())
    }

    /// Remembers that the peer holds exactly our state of a document.
    fn note_echo(&mut self, collection: &CollectionName, id: &DocId, digest: Digest) {
        if self.echo.len() >= ECHO_LIMIT {
            self.echo.clear();
        }
        self.echo.insert((collection.clone(), id.clone()), digest);
    }

    /// After merging the peer's whole document (digest `theirs`): if our state is now
    /// the same, the peer needs nothing of it back.
    fn note_if_echo(
        &mut self,
        store: &dyn SyncStore,
        collection: &CollectionName,
        id: &DocId,
        theirs: Digest,
    ) -> Result {
        if store
            .doc(collection, id)?
            .is_some_and(|s| Digest::of(&s) == theirs)
        {
            self.note_echo(collection, id, theirs);
        }
        Ok(())
    }

    fn want(
        &mut self,
        batch: Option<BatchId>,
        collection: &CollectionName,
        id: &DocId,
        digest: Option<Digest>,
    ) {
        let key = (collection.clone(), id.clone());
        let want = self.wants.entry(key.clone()).or_insert(WantState {
            digest,
            sent_at: None,
            batches: BTreeSet::new(),
        });
        if let Some(batch) = batch {
            want.batches.insert(batch);
            if let Some(incoming) = self.incoming.get_mut(&batch) {
                incoming.waiting.insert(key);
            }
        }
    }

    /// Sends the wants not sent yet (or due again), several per frame.
    fn flush_wants(&mut self, out: &mut Vec<Output>) -> Result {
        if self.peer.is_none() || self.closed {
            return Ok(());
        }
        let now = self.now;
        let due: Vec<WantItem> = self
            .wants
            .iter_mut()
            .filter(|(_, w)| w.sent_at.is_none())
            .map(|((collection, id), w)| {
                w.sent_at = Some(now);
                WantItem {
                    collection: collection.clone(),
                    id: id.clone(),
                    digest: w.digest,
                }
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        // An item is at most ~340 bytes (a 64-byte name, a 256-byte id, a digest).
        let per_frame = ((self.send_limit() as usize).saturating_sub(64) / 340).max(1);
        for chunk in due.chunks(per_frame) {
            self.send(
                out,
                Message::Want(Want {
                    docs: chunk.to_vec(),
                }),
            )?;
        }
        Ok(())
    }

    fn on_docs(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Output>, docs: Docs) -> Result {
        let mut touched = BTreeSet::new();
        for item in docs.docs {
            let key = (item.collection.clone(), item.id.clone());
            if !self.wants.contains_key(&key) {
                continue; // not asked for, or already answered
            }
            match item.reply {
                DocReply::State {
                    piece,
                    pieces,
                    state,
                } => {
                    let state = if pieces > 1 {
                        match self.assemble((None, key.clone()), piece, pieces, state)? {
                            Some(state) => state,
                            None => continue,
                        }
                    } else {
                        state
                    };
                    self.apply(store, &item.collection, &item.id, &state)?;
                    self.note_if_echo(store, &item.collection, &item.id, Digest::of(&state))?;
                }
                DocReply::Same | DocReply::Missing => {}
            }
            if let Some(want) = self.wants.remove(&key) {
                for batch in want.batches {
                    if let Some(incoming) = self.incoming.get_mut(&batch) {
                        incoming.waiting.remove(&key);
                    }
                    touched.insert(batch);
                }
            }
        }
        for batch in touched {
            self.try_complete(store, out, batch)?;
        }
        Ok(())
    }

    /// Keeps a push that is not contiguous with our bookmarks until they reach it.
    fn park(&mut self, id: u64, changes: Changes) {
        for query in &changes.queries {
            if self.bookmarks.contains_key(query) {
                self.behind.entry(*query).or_insert(self.now);
            }
        }
        let frames = self.parked.entry(id).or_default();
        if frames.iter().any(|f| f.part == changes.part) {
            return;
        }
        let len: usize = changes
            .docs
            .iter()
            .map(|d| d.state.len() * 64)
            .sum::<usize>()
            + 64;
        if self.parked_bytes + len > PARKED_LIMIT_BYTES {
            // Too much out of order: drop it; the gap is repaired by a pull.
            return;
        }
        self.parked_bytes += len;
        frames.push(changes);
    }

    /// Applies parked pushes that our bookmarks have reached; drops those they passed.
    fn unpark(&mut self, store: &mut dyn SyncStore, out: &mut Vec<Output>) -> Result {
        loop {
            let ready: Vec<u64> = self
                .parked
                .iter()
                .filter(|(_, frames)| {
                    let first = &frames[0];
                    first
                        .queries
                        .iter()
                        .filter_map(|q| self.bookmarks.get(q))
                        .all(|b| *b >= first.base)
                })
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() {
                return Ok(());
            }
            for id in ready {
                let frames = self.parked.remove(&id).unwrap_or_default();
                for changes in frames {
                    let len: usize = changes
                        .docs
                        .iter()
                        .map(|d| d.state.len() * 64)
                        .sum::<usize>()
                        + 64;
                    self.parked_bytes = self.parked_bytes.saturating_sub(len);
                    self.on_changes(store, out, changes)?;
                }
            }
        }
    }

    fn on_heads(&mut self, heads: Heads) {
        // A query we pulled that the peer does not serve (it lost our pull's effect, e.g.
        // to an overtaken subscription): pull again.
        let served: BTreeSet<QueryId> = heads.heads.iter().map(|(q, _)| *q).collect();
        for query in self.wanted.keys() {
            if self.pulled.contains(query)
                && !served.contains(query)
                && !self.pulling.contains_key(query)
            {
                self.behind.entry(*query).or_insert(self.now);
            }
        }
        for (query, head) in heads.heads {
            if !self.wanted.contains_key(&query) {
                continue;
            }
            self.heads.insert(query, head);
            let bookmark = self.bookmarks.get(&query).copied().unwrap_or(0);
            if head > bookmark && !self.pulling.contains_key(&query) {
                self.behind.entry(query).or_insert(self.now);
            }
        }
    }

    /// Finishes a batch whose frames have all arrived and whose wants are answered.
    fn try_complete(
        &mut self,
        store: &mut dyn SyncStore,
        out: &mut Vec<Output>,
        key: BatchId,
    ) -> Result {
        let Some(batch) = self.incoming.get_mut(&key) else {
            return Ok(());
        };
        if batch.received.len() as u32 != batch.parts || !batch.waiting.is_empty() {
            return Ok(());
        }
        if let Some(mentioned) = batch.mentioned.take() {
            // A pull from scratch names only matching documents. Every other document
            // of the collection we hold may be one the peer has and we lack part of
            // (it changed without matching while we were not holding it): compare.
            let collection = batch.collection.clone();
            let page = self.config.page_docs.max(1);
            let mut after: Option<DocId> = None;
            loop {
                let docs = store.docs_in(&collection, after.as_ref(), page)?;
                let full = docs.len() == page;
                for (id, state) in docs {
                    if !mentioned.contains(&id) {
                        self.want(Some(key), &collection, &id, Some(Digest::of(&state)));
                    }
                    after = Some(id);
                }
                if !full {
                    break;
                }
            }
            if self
                .incoming
                .get(&key)
                .is_some_and(|b| !b.waiting.is_empty())
            {
                return Ok(());
            }
        }
        let batch = self.incoming.remove(&key).expect("present");
        for query in &batch.queries {
            self.range_done(store, *query, batch.base, batch.upto)?;
        }
        match key {
            BatchId::Pull(id) => {
                self.pulls.remove(&id);
                for query in &batch.queries {
                    if self.pulling.get(query) == Some(&id) {
                        self.pulling.remove(query);
                        self.pulled.insert(*query);
                        if let Some(lsn) = self.bookmarks.get(query).copied() {
                            out.push(Output::Event(Event::CaughtUp { query: *query, lsn }));
                        }
                    }
                }
            }
            BatchId::Push(_) => {
                for query in &batch.queries {
                    if self.bookmarks.get(query).is_some_and(|b| *b < batch.base) {
                        self.behind.entry(*query).or_insert(self.now);
                    }
                }
            }
        }
        Ok(())
    }

    /// Records that we hold what the peer held for `query` in `(base, upto]`, and moves
    /// the bookmark over every range now contiguous with it.
    fn range_done(
        &mut self,
        store: &mut dyn SyncStore,
        query: QueryId,
        base: Lsn,
        upto: Lsn,
    ) -> Result {
        let Some(bookmark) = self.bookmarks.get(&query).copied() else {
            return Ok(()); // no longer of our interest
        };
        if upto <= bookmark {
            return Ok(());
        }
        let ranges = self.done.entry(query).or_default();
        let end = ranges.entry(base).or_insert(upto);
        *end = (*end).max(upto);
        let mut advanced = bookmark;
        while let Some(next) = ranges
            .range(..=advanced)
            .map(|(_, u)| *u)
            .filter(|u| *u > advanced)
            .max()
        {
            advanced = next;
        }
        ranges.retain(|_, u| *u > advanced);
        if advanced > bookmark {
            self.bookmarks.insert(query, advanced);
            let peer = self
                .peer
                .as_ref()
                .expect("batches arrive after the hello")
                .incarnation;
            store.set_bookmark(&peer, &query, advanced)?;
            if self.heads.get(&query).is_none_or(|h| *h <= advanced) {
                self.behind.remove(&query);
            }
        }
        Ok(())
    }
}

impl DocItem {
    fn clone_header(&self) -> DocItem {
        DocItem {
            id: self.id.clone(),
            matches: self.matches,
            check: self.check,
            piece: self.piece,
            pieces: self.pieces,
            state: DocState::new(),
        }
    }
}

/// Packs sized items into frames of at most `budget` bytes of items; always at least one
/// (possibly empty) frame.
fn pack<T>(items: Vec<(T, usize)>, budget: usize) -> Vec<Vec<T>> {
    let mut frames = vec![Vec::new()];
    let mut used = 0;
    for (item, len) in items {
        if used + len > budget && !frames.last().is_some_and(Vec::is_empty) {
            frames.push(Vec::new());
            used = 0;
        }
        used += len;
        frames.last_mut().expect("never empty").push(item);
    }
    frames
}
