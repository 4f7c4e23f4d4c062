//! Helpers of the mesh tests: nodes with an in-memory store over real sockets, writes
//! made the way the node's write path makes them, and polling with a deadline.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use parking_lot::Mutex;
use serde_json::Value;
use trellis_common::clock::Hlc;
use trellis_common::crdt::{DocState, Dot, WriteContext};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::sync::{Incarnation, LocalHello, MemoryStore, SessionConfig, SyncStore};
use trellis_node::net::{Mesh, MeshConfig, NetConfig, PeersConfig, SharedStore};

pub const ALL_CARS: &str = "SELECT * FROM cars";

/// How long a condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it holds; panics with `what` at the deadline.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn cars() -> CollectionName {
    CollectionName::new("cars").unwrap()
}

/// A store with a writer identity.
#[derive(Clone)]
pub struct Store {
    pub inner: Arc<Mutex<MemoryStore>>,
    pub actor: ActorId,
    seq: Arc<Mutex<u64>>,
}

impl Store {
    pub fn new(n: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemoryStore::new(Incarnation::random()))),
            actor: ActorId::from_u64(n),
            seq: Arc::new(Mutex::new(0)),
        }
    }

    pub fn shared(&self) -> SharedStore {
        self.inner.clone()
    }

    /// Inserts (or overwrites) a document; returns the store's LSN after it.
    pub fn insert(&self, id: &str, body: Value) -> u64 {
        let id = DocId::from_string(id).unwrap();
        let mut seq = self.seq.lock();
        *seq += 1;
        let mut store = self.inner.lock();
        let current = store.get(&cars(), &id).cloned().unwrap_or_default();
        let dot = Dot {
            actor: self.actor,
            seq: *seq,
        };
        let now = Hlc::new(1_790_000_000_000 + *seq, 0);
        let ctx = WriteContext::for_document(&current, now, dot);
        let delta = DocState::insert_delta(ctx, &body).unwrap();
        store.merge(&cars(), &id, &delta);
        store.current_lsn()
    }

    pub fn get(&self, id: &str) -> Option<Value> {
        let id = DocId::from_string(id).unwrap();
        self.inner.lock().get(&cars(), &id)?.to_json(&id)
    }
}

/// A session config with short retries, so repairs after a link switch are quick.
pub fn session_config() -> SessionConfig {
    SessionConfig {
        retry_ms: 500,
        heartbeat_ms: 250,
        ..SessionConfig::default()
    }
}

pub fn local_hello(keypair: &Keypair, store: &Store) -> LocalHello {
    LocalHello {
        node_id: keypair.public().encode_protobuf(),
        actor: store.actor,
        admission: None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Tcp,
    Quic,
    Both,
}

pub fn config(transport: Transport, static_peers: Vec<Multiaddr>) -> MeshConfig {
    let tcp = "/ip4/127.0.0.1/tcp/0";
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let listen: Vec<Multiaddr> = match transport {
        Transport::Tcp => vec![tcp.parse().unwrap()],
        Transport::Quic => vec![quic.parse().unwrap()],
        Transport::Both => vec![tcp.parse().unwrap(), quic.parse().unwrap()],
    };
    MeshConfig {
        net: NetConfig {
            listen,
            static_peers,
            mdns: false,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            ..NetConfig::default()
        },
        peers: PeersConfig {
            session: session_config(),
            tick: Duration::from_millis(100),
            ..PeersConfig::default()
        },
    }
}

/// A node of a test mesh.
pub struct TestNode {
    pub mesh: Mesh,
    pub store: Store,
    pub keypair: Keypair,
}

impl TestNode {
    pub async fn start(
        keypair: Keypair,
        store: Store,
        transport: Transport,
        static_peers: Vec<Multiaddr>,
    ) -> Self {
        let local = local_hello(&keypair, &store);
        let mesh = Mesh::spawn(
            keypair.clone(),
            config(transport, static_peers),
            store.shared(),
            local,
        )
        .expect("mesh starts");
        mesh.set_subscriptions(vec![ALL_CARS.to_owned()])
            .await
            .unwrap();
        Self {
            mesh,
            store,
            keypair,
        }
    }

    pub async fn new(n: u64, transport: Transport, static_peers: Vec<Multiaddr>) -> Self {
        Self::start(
            Keypair::generate_ed25519(),
            Store::new(n),
            transport,
            static_peers,
        )
        .await
    }

    pub fn peer_id(&self) -> PeerId {
        self.mesh.peer_id()
    }

    /// The listen address, with `/p2p/<id>`.
    pub async fn addr(&self) -> Multiaddr {
        self.addrs(1).await.remove(0)
    }

    /// The first `n` listen addresses, each with `/p2p/<id>`.
    pub async fn addrs(&self, n: usize) -> Vec<Multiaddr> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let found = loop {
            let addrs = self.mesh.listen_addrs().await.unwrap();
            if addrs.len() >= n {
                break addrs;
            }
            assert!(tokio::time::Instant::now() < deadline, "no listen address");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        found
            .into_iter()
            .take(n)
            .map(|a| a.with(Protocol::P2p(self.peer_id())))
            .collect()
    }

    /// Writes a car and tells the mesh.
    pub fn write(&self, id: &str, body: Value) {
        let lsn = self.store.insert(id, body);
        self.mesh.notify_local_change(lsn);
    }

    /// Waits until this node holds `id` with `body`'s fields.
    pub async fn wait_for_doc(&self, id: &str, expect: &Value) {
        let what = format!("{id} = {expect} on {}", self.peer_id());
        eventually(&what, || {
            let got = self.store.get(id);
            async move {
                got.is_some_and(|doc| {
                    expect
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| doc.get(k) == Some(v))
                })
            }
        })
        .await;
    }

    pub async fn session_peers(&self) -> Vec<PeerId> {
        self.mesh
            .peers()
            .peers()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.peer)
            .collect()
    }
}
