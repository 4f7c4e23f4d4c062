//! Fetching attachments from peers: [`Fetcher`].
//!
//! Blobs are never pushed; a node fetches one when asked (`POST
//! /v1/attachments/{hash}/fetch`, `trellis-node fetch`). The fetcher asks one connected
//! peer at a time for the chunks the store lacks, [`WINDOW`] chunks in flight, and
//! stores each chunk as it arrives (checked for its size), so a fetch interrupted by a
//! disconnection or a restart resumes with the chunks still missing. A peer that answers
//! "not here", sends a chunk of the wrong size, goes away, or sends nothing for
//! [`STALL`] is dropped for this fetch and the next peer is asked. When every chunk is
//! in, the store verifies the whole blob against its BLAKE3 hash (`finish_blob`); on a
//! mismatch the chunks are deleted and the fetch fails. Progress is kept per hash for
//! the API and the CLI.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use trellis_common::sync::Event;
use trellis_common::sync::frame::{BlobChunk, BlobWant};
use utoipa::ToSchema;

use crate::engine::Engine;
use crate::net::{MeshEvent, Peers};
use crate::store::blobs::chunk_count;
use crate::store::{BlobHash, StoreError};

/// Chunks (64 KiB each) asked for at once from one peer.
pub const WINDOW: usize = 16;
/// A peer that sends nothing for this long is replaced.
pub const STALL: Duration = Duration::from_secs(10);
/// Fetches remembered (for `GET .../fetch`) before finished ones are forgotten.
const KEPT_FETCHES: usize = 1024;

/// Where a fetch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FetchState {
    /// Chunks are arriving.
    Running,
    /// The blob is stored and verified.
    Complete,
    /// It stopped; `error` says why. Asking again resumes with the missing chunks.
    Failed,
}

/// The progress of one fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FetchProgress {
    /// The blob's hash (hex).
    pub hash: String,
    /// Its length in bytes.
    pub len: u64,
    /// Its number of chunks.
    pub chunks: u32,
    /// Chunks stored so far.
    pub chunks_stored: u32,
    /// Where it stands.
    pub state: FetchState,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

enum Command {
    Start {
        hash: BlobHash,
        len: u64,
        reply: oneshot::Sender<FetchProgress>,
    },
    Progress {
        hash: BlobHash,
        reply: oneshot::Sender<Option<FetchProgress>>,
    },
}

/// A handle on the fetcher task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fetcher {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fetch::Command")
    }
}

impl Fetcher {
    /// Starts the fetcher task in `tasks` (stopped by `cancel`).
    pub fn spawn(
        engine: Arc<Engine>,
        peers: Peers,
        events: broadcast::Receiver<MeshEvent>,
        cancel: CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Self {
        let (commands_tx, commands) = mpsc::channel(32);
        let task = Task {
            engine,
            peers,
            fetches: HashMap::new(),
        };
        tasks.spawn(task.run(commands, events, cancel));
        Self {
            commands: commands_tx,
        }
    }

    /// Starts fetching a blob of `len` bytes (or resumes a stopped fetch); answers its
    /// progress. A blob already stored is complete at once.
    pub async fn start(&self, hash: BlobHash, len: u64) -> Option<FetchProgress> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Start { hash, len, reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// The progress of a fetch started earlier, if any.
    pub async fn progress(&self, hash: BlobHash) -> Option<FetchProgress> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Progress { hash, reply })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }
}

struct Fetch {
    len: u64,
    chunks: u32,
    stored: u32,
    state: FetchState,
    error: Option<String>,
    peer: Option<PeerId>,
    /// Peers that failed this fetch.
    tried: HashSet<PeerId>,
    outstanding: BTreeSet<u32>,
    last_progress: Instant,
}

impl Fetch {
    fn progress(&self, hash: &BlobHash) -> FetchProgress {
        FetchProgress {
            hash: hash.to_hex(),
            len: self.len,
            chunks: self.chunks,
            chunks_stored: self.stored,
            state: self.state,
            error: self.error.clone(),
        }
    }

    fn fail(&mut self, error: impl Into<String>) {
        self.state = FetchState::Failed;
        self.error = Some(error.into());
        self.peer = None;
        self.outstanding.clear();
    }
}

struct Task {
    engine: Arc<Engine>,
    peers: Peers,
    fetches: HashMap<BlobHash, Fetch>,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: broadcast::Receiver<MeshEvent>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                command = commands.recv() => match command {
                    Some(Command::Start { hash, len, reply }) => {
                        let progress = self.start(hash, len).await;
                        let _ = reply.send(progress);
                    }
                    Some(Command::Progress { hash, reply }) => {
                        let _ = reply.send(self.fetches.get(&hash).map(|f| f.progress(&hash)));
                    }
                    None => return,
                },
                event = events.recv() => match event {
                    Ok(MeshEvent::Sync { peer, event: Event::BlobChunk(chunk) }) => {
                        self.on_chunk(peer, chunk).await;
                    }
                    Ok(MeshEvent::PeerDown { peer, .. }) => self.on_peer_gone(peer).await,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn start(&mut self, hash: BlobHash, len: u64) -> FetchProgress {
        // Finished fetches are kept for their progress queries, but not without bound.
        if self.fetches.len() >= KEPT_FETCHES {
            self.fetches
                .retain(|h, f| *h == hash || f.state == FetchState::Running);
        }
        let store = self.engine.store();
        let chunks = chunk_count(len);
        let running = self
            .fetches
            .get(&hash)
            .is_some_and(|f| f.state == FetchState::Running && f.len == len);
        if !running {
            let mut fetch = Fetch {
                len,
                chunks,
                stored: 0,
                state: FetchState::Running,
                error: None,
                peer: None,
                tried: HashSet::new(),
                outstanding: BTreeSet::new(),
                last_progress: Instant::now(),
            };
            match store.blob_len(&hash) {
                Ok(Some(stored)) if stored == len => {
                    fetch.stored = chunks;
                    fetch.state = FetchState::Complete;
                }
                Ok(Some(stored)) => fetch.fail(format!(
                    "the attachment stored here is {stored} bytes, not {len}"
                )),
                Ok(None) => {}
                Err(e) => fetch.fail(e.to_string()),
            }
            self.fetches.insert(hash, fetch);
            if self.fetches[&hash].state == FetchState::Running {
                self.advance(hash).await;
            }
        }
        self.fetches[&hash].progress(&hash)
    }

    /// Asks for the next window, finishing the blob when nothing is missing, or moving
    /// to another peer when there is none.
    async fn advance(&mut self, hash: BlobHash) {
        let store = Arc::clone(self.engine.store());
        let Some(fetch) = self.fetches.get_mut(&hash) else {
            return;
        };
        if fetch.state != FetchState::Running || !fetch.outstanding.is_empty() {
            return;
        }
        let missing = match store.missing_chunks(&hash, fetch.len) {
            Ok(missing) => missing,
            Err(e) => return fetch.fail(e.to_string()),
        };
        fetch.stored = fetch.chunks - u32::try_from(missing.len()).unwrap_or(fetch.chunks);
        if missing.is_empty() {
            match store.finish_blob(&hash, fetch.len) {
                Ok(()) => {
                    fetch.state = FetchState::Complete;
                    fetch.peer = None;
                    tracing::info!(hash = %hash.to_hex(), len = fetch.len, "attachment fetched and verified");
                }
                Err(StoreError::BlobCorrupt { reason, .. }) => {
                    fetch.fail(format!(
                        "the chunks received do not match the hash ({reason}); they were discarded"
                    ));
                }
                Err(e) => fetch.fail(e.to_string()),
            }
            return;
        }
        let window: Vec<u32> = missing.into_iter().take(WINDOW).collect();
        loop {
            let peer = match fetch.peer {
                Some(peer) => peer,
                None => {
                    let Ok(peers) = self.peers.peers().await else {
                        return fetch.fail("the mesh is stopping");
                    };
                    let next = peers
                        .iter()
                        .filter(|p| p.node_id.is_some() && !fetch.tried.contains(&p.peer))
                        .map(|p| p.peer)
                        .next();
                    match next {
                        Some(peer) => {
                            fetch.peer = Some(peer);
                            peer
                        }
                        None => {
                            return fetch.fail(
                                "no connected peer has this attachment; ask again to resume",
                            );
                        }
                    }
                }
            };
            let want = BlobWant {
                hash: *hash.as_bytes(),
                chunks: window.clone(),
            };
            if matches!(self.peers.want_blob(peer, want).await, Ok(true)) {
                fetch.outstanding = window.into_iter().collect();
                fetch.last_progress = Instant::now();
                return;
            }
            fetch.tried.insert(peer);
            fetch.peer = None;
        }
    }

    async fn on_chunk(&mut self, peer: PeerId, chunk: BlobChunk) {
        let hash = BlobHash::from_bytes(chunk.hash);
        let Some(fetch) = self.fetches.get_mut(&hash) else {
            return;
        };
        if fetch.peer != Some(peer) || !fetch.outstanding.contains(&chunk.index) {
            return; // late, duplicate, or from a peer we moved away from
        }
        if chunk.total == 0 {
            tracing::debug!(%peer, hash = %hash.to_hex(), "peer does not have the attachment");
            self.drop_peer(hash, peer).await;
            return;
        }
        let stored = if chunk.total == fetch.chunks {
            self.engine
                .store()
                .put_chunk(&hash, fetch.len, chunk.index, &chunk.data)
                .map_err(|e| e.to_string())
        } else {
            Err(format!(
                "peer says {} chunks, expected {}",
                chunk.total, fetch.chunks
            ))
        };
        if let Err(error) = stored {
            tracing::warn!(%peer, hash = %hash.to_hex(), %error, "bad attachment chunk; asking another peer");
            self.drop_peer(hash, peer).await;
            return;
        }
        fetch.outstanding.remove(&chunk.index);
        fetch.stored += 1;
        fetch.last_progress = Instant::now();
        if fetch.outstanding.is_empty() {
            self.advance(hash).await;
        }
    }

    async fn drop_peer(&mut self, hash: BlobHash, peer: PeerId) {
        if let Some(fetch) = self.fetches.get_mut(&hash) {
            fetch.tried.insert(peer);
            fetch.peer = None;
            fetch.outstanding.clear();
        }
        self.advance(hash).await;
    }

    async fn on_peer_gone(&mut self, peer: PeerId) {
        let affected: Vec<BlobHash> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.state == FetchState::Running && f.peer == Some(peer))
            .map(|(h, _)| *h)
            .collect();
        for hash in affected {
            self.drop_peer(hash, peer).await;
        }
    }

    async fn on_tick(&mut self) {
        let stalled: Vec<(BlobHash, PeerId)> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.state == FetchState::Running && f.last_progress.elapsed() > STALL)
            .filter_map(|(h, f)| Some((*h, f.peer?)))
            .collect();
        for (hash, peer) in stalled {
            tracing::debug!(%peer, hash = %hash.to_hex(), "attachment fetch stalled; asking another peer");
            self.drop_peer(hash, peer).await;
        }
    }
}
