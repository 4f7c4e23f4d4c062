//! The node's side of sync: the mesh started on the engine's store ([`start`]), the
//! subscriptions (from the configuration, plus those added through the API and kept in
//! the store), and what the API and the CLI show of peers ([`SyncHandle`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use libp2p::Multiaddr;
use parking_lot::Mutex;
use serde::Serialize;
use trellis_common::sync::{LocalHello, Subscription, SubscriptionError};
use utoipa::ToSchema;

use crate::config::MeshSettings;
use crate::engine::Engine;
use crate::fetch::{FetchProgress, Fetcher};
use crate::identity::Identity;
use crate::net::presence::Topology;
use crate::net::{
    EngineSyncStore, Mesh, MeshConfig, MeshEvent, NetConfig, NetError, Peers, PeersError,
    SharedStore, keypair_from_secret,
};
use crate::store::BlobHash;
use trellis_common::sync::Event;
use trellis_common::sync::frame::{self, Links};

/// The `meta` key of the subscriptions added through the API (a JSON array of texts).
const SUBSCRIPTIONS_KEY: &str = "sync/subscriptions";

/// Why a sync request failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The query cannot be a subscription.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// The subscription comes from the configuration file and cannot be removed here.
    #[error("'{0}' is set in the configuration (mesh.subscriptions); remove it there")]
    FromConfig(String),
    /// The mesh or the store failed.
    #[error("{0}")]
    Failed(String),
}

impl From<PeersError> for SyncError {
    fn from(e: PeersError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// One subscription, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionInfo {
    /// The query's id (hex of the first 16 bytes of its BLAKE3 hash).
    pub id: String,
    /// The query text.
    pub query: String,
    /// The collection it reads.
    pub collection: String,
    /// `config` (from the configuration file) or `api` (added at run time).
    pub source: &'static str,
}

impl SubscriptionInfo {
    fn new(parsed: Subscription, source: &'static str) -> Self {
        Self {
            id: hex::encode(parsed.id.0),
            query: parsed.text,
            collection: parsed.collection.to_string(),
            source,
        }
    }
}

/// One link of a peer, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkInfo {
    /// `tcp`, `quic`, `ble` or `memory`.
    pub kind: String,
    /// The remote address.
    pub remote: String,
    /// Whether frames are sent on this link.
    pub chosen: bool,
    /// The last measured round-trip time, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Bytes received on it.
    pub bytes_in: u64,
    /// Bytes sent on it.
    pub bytes_out: u64,
}

/// A connected peer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeerInfo {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its node id (hex of its Ed25519 key), once its hello arrived.
    pub node_id: Option<String>,
    /// Whether its session has nothing in flight (caught up, as far as we know).
    pub idle: bool,
    /// Its links.
    pub links: Vec<LinkInfo>,
    /// Hops from this node (1: a direct peer).
    pub hops: u32,
}

/// A link another node announced.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeshLink {
    /// The node at the other end (hex node id).
    pub peer: String,
    /// `tcp`, `quic`, `ble` or `memory`.
    pub kind: String,
    /// Round-trip time in milliseconds.
    pub rtt_ms: u32,
}

/// A node of the mesh graph.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeshNodeInfo {
    /// Its node id (hex).
    pub node_id: String,
    /// Hops from this node (0: this node).
    pub hops: u32,
    /// Its direct links, as it announced them.
    pub links: Vec<MeshLink>,
}

/// This node in the mesh.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Presence {
    /// Our libp2p peer id.
    pub peer_id: String,
    /// Our node id.
    pub node_id: String,
    /// The addresses we listen on.
    pub listen: Vec<String>,
    /// Our direct peers.
    pub peers: Vec<PeerInfo>,
    /// Every node reachable through the mesh, nearest first, with hop counts (from the
    /// links each node announces; a node appears once some announcement names it).
    pub mesh: Vec<MeshNodeInfo>,
}

/// The running mesh of a node, as the API and the node handle use it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    peers: Peers,
    client: crate::net::Client,
    from_config: Vec<String>,
    /// Serialises subscription changes (read, change, store, apply).
    changing: tokio::sync::Mutex<()>,
    mesh: Mutex<Option<Mesh>>,
    /// Stops the tasks that forward local commits, announce presence and fetch.
    cancel: tokio_util::sync::CancellationToken,
    /// Those tasks; [`SyncHandle::shutdown`] waits for them, so that the engine (and the
    /// store's lock) is released when it returns.
    tasks: Mutex<tokio::task::JoinSet<()>>,
    node_key: Vec<u8>,
    topology: Mutex<Topology>,
    fetcher: Fetcher,
}

/// Starts the mesh on the engine's store: listens, dials the static peers, applies the
/// subscriptions, and pushes every local commit to the peers.
pub async fn start(
    engine: Arc<Engine>,
    identity: &Identity,
    settings: &MeshSettings,
    net: NetConfig,
) -> Result<SyncHandle, SyncError> {
    let keypair = keypair_from_secret(identity.signing_key().to_bytes());
    let store: SharedStore = Arc::new(Mutex::new(EngineSyncStore::new(Arc::clone(&engine))));
    let local = LocalHello {
        node_id: identity.public_key().to_vec(),
        actor: identity.actor(),
        admission: None,
    };
    let config = MeshConfig {
        net,
        ..MeshConfig::default()
    };
    let mesh = Mesh::spawn(keypair, config, store, local)
        .map_err(|e: NetError| SyncError::Failed(e.to_string()))?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let handle = SyncHandle {
        inner: Arc::new(Inner {
            peers: mesh.peers().clone(),
            client: mesh.client().clone(),
            engine: Arc::clone(&engine),
            from_config: settings.subscriptions.clone(),
            changing: tokio::sync::Mutex::new(()),
            mesh: Mutex::new(None),
            node_key: identity.public_key().to_vec(),
            topology: Mutex::new(Topology::new()),
            fetcher: Fetcher::spawn(
                Arc::clone(&engine),
                mesh.peers().clone(),
                mesh.peers().events(),
                cancel.clone(),
                &mut tasks,
            ),
            cancel,
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        }),
    };
    tasks.spawn(announce_presence(handle.clone(), mesh.peers().events()));
    // Local commits move the store's LSN; every session then pushes what changed.
    let mut lsn = engine.watch_lsn();
    let peers = mesh.peers().clone();
    let cancel = handle.inner.cancel.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = lsn.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = *lsn.borrow_and_update();
                    peers.notify_local_change(current);
                }
            }
        }
    });
    *handle.inner.tasks.lock() = tasks;
    *handle.inner.mesh.lock() = Some(mesh);
    handle.apply_subscriptions().await?;
    handle.wait_for_listeners(settings.listen.len()).await;
    Ok(handle)
}

/// How long [`start`] waits for the listeners to come up.
const LISTEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The NetConfig for mesh settings.
pub fn net_config(settings: &MeshSettings) -> Result<NetConfig, crate::config::ConfigError> {
    Ok(NetConfig {
        listen: settings.listen_addrs()?,
        static_peers: settings.peer_addrs()?,
        mdns: settings.mdns,
        ..NetConfig::default()
    })
}

impl SyncHandle {
    /// Every subscription in effect: the configuration's, then those added at run time.
    pub fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>, SyncError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let sources = self
            .inner
            .from_config
            .iter()
            .map(|q| (q.clone(), "config"))
            .chain(self.added()?.into_iter().map(|q| (q, "api")));
        for (query, source) in sources {
            let parsed = Subscription::parse(&query)?;
            if seen.insert(parsed.id) {
                out.push(SubscriptionInfo::new(parsed, source));
            }
        }
        Ok(out)
    }

    /// Adds a subscription (kept in the store, so it survives restarts) and says
    /// whether it is new. Adding one that exists does nothing.
    pub async fn subscribe(&self, query: &str) -> Result<(SubscriptionInfo, bool), SyncError> {
        let parsed = Subscription::parse(query)?;
        let _changing = self.inner.changing.lock().await;
        let id = hex::encode(parsed.id.0);
        if let Some(existing) = self.subscriptions()?.into_iter().find(|s| s.id == id) {
            return Ok((existing, false));
        }
        let mut added = self.added()?;
        added.push(parsed.text.clone());
        self.store_added(&added)?;
        // Documents evicted earlier are fetched again now that a query asks for them.
        let store = self.inner.engine.store();
        let failed = |e: crate::store::StoreError| SyncError::Failed(e.to_string());
        let evicted = store.evicted(&parsed.collection).map_err(failed)?;
        store
            .forget_evicted(&parsed.collection, &evicted)
            .map_err(failed)?;
        self.apply_subscriptions().await?;
        Ok((SubscriptionInfo::new(parsed, "api"), true))
    }

    /// Removes a subscription added at run time, by id or query text. Returns whether
    /// it existed.
    pub async fn unsubscribe(&self, id_or_query: &str) -> Result<bool, SyncError> {
        let _changing = self.inner.changing.lock().await;
        let matches = |query: &str| {
            Subscription::parse(query)
                .is_ok_and(|s| hex::encode(s.id.0) == id_or_query || s.text == id_or_query.trim())
        };
        if let Some(query) = self.inner.from_config.iter().find(|q| matches(q)) {
            return Err(SyncError::FromConfig(query.clone()));
        }
        let mut added = self.added()?;
        let before = added.len();
        added.retain(|q| !matches(q));
        if added.len() == before {
            return Ok(false);
        }
        self.store_added(&added)?;
        self.apply_subscriptions().await?;
        Ok(true)
    }

    /// This node, its links and its peers.
    pub async fn presence(&self) -> Result<Presence, SyncError> {
        let listen = self
            .inner
            .client
            .listen_addrs()
            .await
            .map_err(|e| SyncError::Failed(e.to_string()))?;
        let peers = self.inner.peers.peers().await?;
        let mesh = self
            .inner
            .topology
            .lock()
            .graph(&self.inner.node_key)
            .into_iter()
            .map(|node| MeshNodeInfo {
                node_id: hex::encode(&node.node_id),
                hops: node.hops,
                links: node
                    .links
                    .iter()
                    .map(|l| MeshLink {
                        peer: hex::encode(&l.peer),
                        kind: l.kind.clone(),
                        rtt_ms: l.rtt_ms,
                    })
                    .collect(),
            })
            .collect();
        Ok(Presence {
            mesh,
            peer_id: self.inner.client.peer_id().to_string(),
            node_id: hex::encode(&self.inner.node_key),
            listen: listen.iter().map(Multiaddr::to_string).collect(),
            peers: peers
                .into_iter()
                .map(|p| PeerInfo {
                    peer_id: p.peer.to_string(),
                    node_id: p.node_id.as_deref().map(hex::encode),
                    idle: p.idle,
                    hops: 1,
                    links: p
                        .links
                        .iter()
                        .map(|l| LinkInfo {
                            kind: l.kind.to_string(),
                            remote: l.remote.clone(),
                            chosen: p.chosen == Some(l.id),
                            rtt_ms: l.stats.rtt.map(|d| d.as_secs_f64() * 1000.0),
                            bytes_in: l.stats.bytes_in,
                            bytes_out: l.stats.bytes_out,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// Starts (or resumes) fetching an attachment of `len` bytes from the peers.
    pub async fn fetch(&self, hash: BlobHash, len: u64) -> Result<FetchProgress, SyncError> {
        self.inner
            .fetcher
            .start(hash, len)
            .await
            .ok_or_else(|| SyncError::Failed("the mesh is stopping".to_owned()))
    }

    /// The progress of a fetch started earlier.
    pub async fn fetch_progress(&self, hash: BlobHash) -> Option<FetchProgress> {
        self.inner.fetcher.progress(hash).await
    }

    /// The libp2p side (dial, listen addresses).
    pub fn client(&self) -> &crate::net::Client {
        &self.inner.client
    }

    /// The peer table (events, peers).
    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// Stops the mesh and waits for its tasks.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let mesh = self.inner.mesh.lock().take();
        if let Some(mesh) = mesh {
            mesh.shutdown().await;
        }
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock());
        while tasks.join_next().await.is_some() {}
    }

    /// Waits (a little) until the swarm reports its listen addresses, so that what
    /// `start` returns can be asked for them: one address at least per configured
    /// listener (an unspecified IP gives one per interface).
    async fn wait_for_listeners(&self, listeners: usize) {
        let started = std::time::Instant::now();
        while started.elapsed() < LISTEN_WAIT {
            match self.inner.client.listen_addrs().await {
                Ok(addrs) if addrs.len() >= listeners => return,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                Err(_) => return,
            }
        }
        tracing::warn!(
            "the mesh is not listening after {} s; check mesh.listen (is the port taken?)",
            LISTEN_WAIT.as_secs()
        );
    }

    fn added(&self) -> Result<Vec<String>, SyncError> {
        let stored = self
            .inner
            .engine
            .store()
            .meta_get(SUBSCRIPTIONS_KEY)
            .map_err(|e| SyncError::Failed(e.to_string()))?;
        match stored {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SyncError::Failed(format!("stored subscriptions are unreadable: {e}"))
            }),
        }
    }

    fn store_added(&self, added: &[String]) -> Result<(), SyncError> {
        let bytes = serde_json::to_vec(added).expect("strings serialise");
        self.inner
            .engine
            .store()
            .meta_put(SUBSCRIPTIONS_KEY, &bytes)
            .map_err(|e| SyncError::Failed(e.to_string()))
    }

    async fn apply_subscriptions(&self) -> Result<(), SyncError> {
        let queries: Vec<String> = self.subscriptions()?.into_iter().map(|s| s.query).collect();
        if queries.is_empty() {
            tracing::info!(
                "no subscriptions: this node relays for its peers but receives nothing for itself; \
                 add [mesh] subscriptions (e.g. \"SELECT * FROM tasks\") or POST /v1/subscriptions"
            );
        }
        self.inner.peers.set_subscriptions(queries).await?;
        Ok(())
    }
}

/// How often this node announces its links (and expires old announcements).
const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Announces this node's links every [`ANNOUNCE_EVERY`], keeps what the peers announce
/// and passes on what is new (see `net::presence`); a peer that connects gets everything
/// known at once.
async fn announce_presence(
    handle: SyncHandle,
    mut events: tokio::sync::broadcast::Receiver<MeshEvent>,
) {
    let inner = &handle.inner;
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            _ = tick.tick() => {
                let Ok(peers) = inner.peers.peers().await else { return };
                let links = peers
                    .iter()
                    .filter_map(|p| {
                        let node = p.node_id.clone()?;
                        let chosen = p.links.iter().find(|l| Some(l.id) == p.chosen)?;
                        Some(frame::LinkInfo {
                            peer: node,
                            kind: chosen.kind.to_string(),
                            rtt_ms: chosen
                                .stats
                                .rtt
                                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
                            bytes_in: p.links.iter().map(|l| l.stats.bytes_in).sum(),
                            bytes_out: p.links.iter().map(|l| l.stats.bytes_out).sum(),
                        })
                    })
                    .collect();
                let now = wall_ms();
                let own = Links { origin: inner.node_key.clone(), version: now, links };
                let mut topology = inner.topology.lock();
                topology.expire(now);
                topology.update(own.clone(), now);
                drop(topology);
                inner.peers.announce(own);
            }
            event = events.recv() => match event {
                Ok(MeshEvent::Sync { event: Event::Links(links), .. }) => {
                    if inner.topology.lock().update(links.clone(), wall_ms()) {
                        inner.peers.announce(links);
                    }
                }
                Ok(MeshEvent::PeerUp { .. }) => {
                    let known: Vec<Links> = inner.topology.lock().all().cloned().collect();
                    for links in known {
                        inner.peers.announce(links);
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
