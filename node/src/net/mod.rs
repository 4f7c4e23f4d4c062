//! The mesh: links, the libp2p swarm, and one sync session per peer.
//!
//! Layers, bottom up:
//! - [`link`]: the [`Link`](link::Link) trait (framed, size-limited, counted) and its
//!   stream, memory and simulated implementations. Bluetooth LE plugs in here.
//! - [`protocol`] and [`swarm`]: libp2p (TCP, QUIC, Noise, Yamux, identify, ping,
//!   mDNS, connection limits, static peers with backoff) as a `Client` / `EventLoop` /
//!   `NetEvent` triple; every connection yields one `/trellis/sync/1` link.
//! - [`peers`]: one session per peer whatever its links; link choice; the interest
//!   table.
//! - [`driver`]: the task that runs a peer's `common::sync::Session` over its links.
//! - [`presence`]: the mesh's shape from the links every node announces.
//! - [`store`]: the node's store as sessions see it.
//!
//! [`Mesh`] wires them together for a node.

pub mod driver;
pub mod link;
pub mod peers;
pub mod presence;
pub mod protocol;
pub mod store;
pub mod swarm;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trellis_common::sync::{LocalHello, Lsn};

pub use driver::{MeshEvent, SharedStore};
pub use link::{Link, LinkKind};
pub use peers::{PeerSummary, Peers, PeersConfig, PeersError};
pub use store::EngineSyncStore;
pub use swarm::{Client, NetConfig, NetError};

/// Settings of the mesh.
#[derive(Debug, Clone, Default)]
pub struct MeshConfig {
    /// The libp2p side.
    pub net: NetConfig,
    /// The session layer.
    pub peers: PeersConfig,
}

/// The libp2p identity of a node from its Ed25519 secret key.
pub fn keypair_from_secret(secret: [u8; 32]) -> Keypair {
    let mut secret = secret;
    Keypair::ed25519_from_bytes(&mut secret).expect("32 bytes are a valid Ed25519 secret key")
}

/// A running mesh: the swarm's event loop and the peer table, with their tasks.
#[derive(Debug)]
pub struct Mesh {
    client: Client,
    peers: Peers,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Mesh {
    /// Starts the swarm (listening at once; static peers dialled) and the peer table on
    /// the current tokio runtime.
    pub fn spawn(
        keypair: Keypair,
        config: MeshConfig,
        store: SharedStore,
        local: LocalHello,
    ) -> Result<Self, NetError> {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (client, event_loop, events) = swarm::new(keypair, config.net)?;
        tasks.spawn(event_loop.run(cancel.child_token()));
        let peers = Peers::spawn(
            store,
            local,
            config.peers,
            Some((client.clone(), events)),
            cancel.child_token(),
            &mut tasks,
        );
        Ok(Self {
            client,
            peers,
            cancel,
            tasks,
        })
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.client.peer_id()
    }

    /// The libp2p client (dial, disconnect, listen addresses).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The peer table (links from other transports, subscriptions, peers, events).
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The addresses we listen on (empty until the listeners are up).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.client.listen_addrs().await
    }

    /// Tells every session that the store changed up to `lsn` (call after a local write).
    pub fn notify_local_change(&self, lsn: Lsn) {
        self.peers.notify_local_change(lsn);
    }

    /// Replaces the node's own subscriptions.
    pub async fn set_subscriptions(&self, queries: Vec<String>) -> Result<(), PeersError> {
        self.peers.set_subscriptions(queries).await
    }

    /// Events of every session.
    pub fn events(&self) -> broadcast::Receiver<MeshEvent> {
        self.peers.events()
    }

    /// Stops everything: the sessions end, the swarm closes its connections; returns
    /// once every task has finished.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
