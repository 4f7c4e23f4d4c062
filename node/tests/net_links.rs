//! One session per peer over several links (memory and simulated links, no libp2p):
//! link choice, surviving the loss of a link, and no tasks left behind.

mod net_support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use libp2p::PeerId;
use libp2p::identity::Keypair;
use net_support::{ALL_CARS, Store, eventually, init_tracing, local_hello, session_config};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trellis_node::net::link::{
    FrameReceiver, FrameSender, Link, LinkError, LinkKind, LinkStats, SimLinkConfig, memory_pair,
    sim_pair,
};
use trellis_node::net::{MeshEvent, Peers, PeersConfig};

/// A link the test can cut: both halves fail once `cut` fires.
#[derive(Debug)]
struct Cuttable {
    inner: Box<dyn Link>,
    cut: CancellationToken,
}

#[derive(Debug)]
struct CutSender {
    inner: Box<dyn FrameSender>,
    cut: CancellationToken,
}

#[derive(Debug)]
struct CutReceiver {
    inner: Box<dyn FrameReceiver>,
    cut: CancellationToken,
}

impl Link for Cuttable {
    fn kind(&self) -> LinkKind {
        self.inner.kind()
    }

    fn remote(&self) -> String {
        self.inner.remote()
    }

    fn stats(&self) -> Arc<LinkStats> {
        self.inner.stats()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>) {
        let (tx, rx) = self.inner.split();
        (
            Box::new(CutSender {
                inner: tx,
                cut: self.cut.clone(),
            }),
            Box::new(CutReceiver {
                inner: rx,
                cut: self.cut,
            }),
        )
    }
}

impl FrameSender for CutSender {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), LinkError>> {
        if self.cut.is_cancelled() {
            return Box::pin(async { Err(LinkError::Closed) });
        }
        self.inner.send(frame)
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }
}

impl FrameReceiver for CutReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, LinkError>> {
        Box::pin(async move {
            tokio::select! {
                () = self.cut.cancelled() => Err(LinkError::Closed),
                frame = self.inner.recv() => frame,
            }
        })
    }
}

struct Side {
    peers: Peers,
    store: Store,
    id: PeerId,
}

fn side(n: u64, cancel: &CancellationToken, tasks: &mut JoinSet<()>) -> Side {
    let keypair = Keypair::generate_ed25519();
    let store = Store::new(n);
    let config = PeersConfig {
        session: session_config(),
        tick: Duration::from_millis(50),
        ..PeersConfig::default()
    };
    let peers = Peers::spawn(
        store.shared(),
        local_hello(&keypair, &store),
        config,
        None,
        cancel.child_token(),
        tasks,
    );
    Side {
        peers,
        store,
        id: keypair.public().to_peer_id(),
    }
}

impl Side {
    fn write(&self, id: &str, n: i64) {
        let lsn = self.store.insert(id, json!({"n": n}));
        self.peers.notify_local_change(lsn);
    }

    async fn wait_for(&self, id: &str, n: i64) {
        eventually(&format!("{id} = {n}"), || {
            let got = self.store.get(id);
            async move { got.is_some_and(|d| d["n"] == json!(n)) }
        })
        .await;
    }
}

/// Joins `a` and `b` with a link pair; returns the switch that cuts it.
async fn join(a: &Side, b: &Side, pair: (Box<dyn Link>, Box<dyn Link>)) -> CancellationToken {
    let cut = CancellationToken::new();
    let (x, y) = pair;
    a.peers
        .add_link(
            b.id,
            Box::new(Cuttable {
                inner: x,
                cut: cut.clone(),
            }),
        )
        .await
        .unwrap();
    b.peers
        .add_link(
            a.id,
            Box::new(Cuttable {
                inner: y,
                cut: cut.clone(),
            }),
        )
        .await
        .unwrap();
    cut
}

fn memory() -> (Box<dyn Link>, Box<dyn Link>) {
    let (x, y) = memory_pair(1 << 20);
    (Box::new(x), Box::new(y))
}

fn ble() -> (Box<dyn Link>, Box<dyn Link>) {
    let (x, y) = sim_pair(&SimLinkConfig {
        kind: LinkKind::Ble,
        latency: Duration::from_millis(15),
        bytes_per_sec: 100_000,
        ..SimLinkConfig::default()
    });
    (Box::new(x), Box::new(y))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_losing_the_link_it_was_using() {
    init_tracing();
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let (a, b) = (side(1, &cancel, &mut tasks), side(2, &cancel, &mut tasks));
    for s in [&a, &b] {
        s.peers
            .set_subscriptions(vec![ALL_CARS.to_owned()])
            .await
            .unwrap();
    }
    let mut a_events = a.peers.events();
    let fast = join(&a, &b, memory()).await;
    let slow = join(&a, &b, ble()).await;
    a.write("one", 1);
    b.wait_for("one", 1).await;
    let peers = a.peers.peers().await.unwrap();
    assert_eq!(peers.len(), 1, "one session for two links");
    eventually("both links joined the session", || async {
        a.peers.peers().await.unwrap()[0].links.len() == 2
    })
    .await;
    let summary = &a.peers.peers().await.unwrap()[0];
    let chosen = summary.links.iter().find(|l| Some(l.id) == summary.chosen);
    assert_eq!(chosen.unwrap().kind, LinkKind::Memory);

    // Cut the link in use: the session goes on over the simulated BLE link.
    fast.cancel();
    eventually("the session moved to the BLE link", || async {
        let peers = a.peers.peers().await.unwrap();
        peers.len() == 1 && peers[0].links.len() == 1 && peers[0].links[0].kind == LinkKind::Ble
    })
    .await;
    for i in 0..10 {
        a.write(&format!("after-{i}"), i);
        b.write(&format!("back-{i}"), i);
    }
    for i in 0..10 {
        b.wait_for(&format!("after-{i}"), i).await;
        a.wait_for(&format!("back-{i}"), i).await;
    }
    let mut ups = 0;
    let mut downs = 0;
    while let Ok(event) = a_events.try_recv() {
        match event {
            MeshEvent::PeerUp { .. } => ups += 1,
            MeshEvent::PeerDown { .. } => downs += 1,
            MeshEvent::Sync { .. } => {}
        }
    }
    assert_eq!((ups, downs), (1, 0), "the same session throughout");

    // Losing the last link ends the session.
    slow.cancel();
    eventually("the session ended", || async {
        a.peers.peers().await.unwrap().is_empty() && b.peers.peers().await.unwrap().is_empty()
    })
    .await;
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_come_and_go_leave_no_tasks_behind() {
    init_tracing();
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let a = side(1, &cancel, &mut tasks);
    a.peers
        .set_subscriptions(vec![ALL_CARS.to_owned()])
        .await
        .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut baseline = None;
    for round in 0..12 {
        let inner_cancel = cancel.child_token();
        let mut inner = JoinSet::new();
        let b = side(10 + round, &inner_cancel, &mut inner);
        b.peers
            .set_subscriptions(vec![ALL_CARS.to_owned()])
            .await
            .unwrap();
        let cut = join(&a, &b, memory()).await;
        let id = format!("round-{round}");
        a.write(&id, round as i64);
        b.wait_for(&id, round as i64).await;
        cut.cancel();
        eventually("the session ended", || async {
            a.peers.peers().await.unwrap().is_empty()
        })
        .await;
        inner_cancel.cancel();
        while inner.join_next().await.is_some() {}
        if round == 1 {
            baseline = Some(metrics.num_alive_tasks());
        }
    }
    let baseline = baseline.unwrap();
    eventually("tasks back to the baseline", || async {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}
