//! Nodes with in-memory stores syncing over real libp2p sockets on 127.0.0.1.

mod net_support;

use futures_util::StreamExt;
use libp2p::swarm::SwarmEvent;
use net_support::{TestNode, Transport, eventually, init_tracing};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use trellis_node::net::MeshEvent;
use trellis_node::net::protocol::SyncStreamEvent;
use trellis_node::net::swarm::{BehaviourEvent, NetConfig, build_swarm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_the_peer_over_tcp() {
    init_tracing();
    let a = TestNode::new(1, Transport::Tcp, vec![]).await;
    let b = TestNode::new(2, Transport::Tcp, vec![a.addr().await]).await;
    a.write("red", json!({"color": "red"}));
    b.wait_for_doc("red", &json!({"color": "red"})).await;
    b.write("blue", json!({"color": "blue"}));
    a.wait_for_doc("blue", &json!({"color": "blue"})).await;
    let peers = a.mesh.peers().peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer, b.peer_id());
    assert!(peers[0].links.iter().all(|l| l.kind.as_str() == "tcp"));
    a.mesh.shutdown().await;
    b.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_the_peer_over_quic() {
    init_tracing();
    let a = TestNode::new(1, Transport::Quic, vec![]).await;
    let b = TestNode::new(2, Transport::Quic, vec![a.addr().await]).await;
    a.write("red", json!({"color": "red", "km": 10}));
    b.wait_for_doc("red", &json!({"km": 10})).await;
    let peers = b.mesh.peers().peers().await.unwrap();
    assert!(peers[0].links.iter().all(|l| l.kind.as_str() == "quic"));
    a.mesh.shutdown().await;
    b.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reached_over_tcp_and_quic_is_one_session() {
    init_tracing();
    let a = TestNode::new(1, Transport::Both, vec![]).await;
    let b = TestNode::new(2, Transport::Both, a.addrs(2).await).await;
    eventually("two links, one session", || async {
        let peers = a.mesh.peers().peers().await.unwrap();
        peers.len() == 1 && peers[0].links.len() == 2
    })
    .await;
    let peers = a.mesh.peers().peers().await.unwrap();
    let mut kinds: Vec<&str> = peers[0].links.iter().map(|l| l.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["quic", "tcp"]);
    assert!(peers[0].chosen.is_some());
    a.write("both", json!({"n": 1}));
    b.wait_for_doc("both", &json!({"n": 1})).await;
    a.mesh.shutdown().await;
    b.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_crosses_a_line_whose_ends_never_meet() {
    init_tracing();
    let a = TestNode::new(1, Transport::Tcp, vec![]).await;
    let b = TestNode::new(2, Transport::Tcp, vec![a.addr().await]).await;
    let c = TestNode::new(3, Transport::Tcp, vec![b.addr().await]).await;
    a.write("far", json!({"color": "green"}));
    c.wait_for_doc("far", &json!({"color": "green"})).await;
    c.write("back", json!({"color": "grey"}));
    a.wait_for_doc("back", &json!({"color": "grey"})).await;
    let a_peers = a.mesh.client().connected_peers().await.unwrap();
    assert!(!a_peers.contains(&c.peer_id()), "A and C never meet");
    assert_eq!(a.session_peers().await, vec![b.peer_id()]);
    for node in [a, b, c] {
        node.mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_dialling_at_once_make_one_session() {
    init_tracing();
    let a = TestNode::new(1, Transport::Tcp, vec![]).await;
    let b = TestNode::new(2, Transport::Tcp, vec![]).await;
    let mut a_events = a.mesh.events();
    let (a_addr, b_addr) = (a.addr().await, b.addr().await);
    let (da, db) = tokio::join!(a.mesh.client().dial(b_addr), b.mesh.client().dial(a_addr));
    da.unwrap();
    db.unwrap();
    a.write("one", json!({"n": 1}));
    b.wait_for_doc("one", &json!({"n": 1})).await;
    b.write("two", json!({"n": 2}));
    a.wait_for_doc("two", &json!({"n": 2})).await;
    for node in [&a, &b] {
        let peers = node.mesh.peers().peers().await.unwrap();
        assert_eq!(peers.len(), 1, "one session per peer: {peers:?}");
        assert!(!peers[0].links.is_empty() && peers[0].links.len() <= 2);
    }
    let mut ups = 0;
    while let Ok(event) = a_events.try_recv() {
        if matches!(event, MeshEvent::PeerUp { peer, .. } if peer == b.peer_id()) {
            ups += 1;
        }
    }
    assert_eq!(ups, 1, "exactly one handshake with B");
    a.mesh.shutdown().await;
    b.mesh.shutdown().await;
}

/// What a misbehaving peer sends on its sync stream.
#[derive(Debug, Clone, Copy)]
enum Garbage {
    /// A well-framed frame whose bytes decode to nothing.
    Bytes,
    /// A length prefix far above the limit.
    Oversized,
    /// A well-framed frame of version 8.
    UnknownVersion,
    /// A proper `Hello`, then a `Changes` frame whose document does not decode.
    BadDelta,
}

/// A `Hello` and a `Changes` push whose document is corrupt: a valid frame with bytes
/// flipped, from the end (where the document is), until the decoder rejects the
/// document itself rather than the envelope.
fn hello_then_bad_delta() -> Vec<Vec<u8>> {
    use trellis_common::clock::Hlc;
    use trellis_common::crdt::{DocState, Dot, Stamp, WriteContext};
    use trellis_common::ids::{ActorId, CollectionName, DocId};
    use trellis_common::sync::frame::{
        self, BatchId, Changes, Check, DocItem, Frame, Hello, Message, PROTOCOL_VERSION,
    };
    use trellis_common::sync::{Capabilities, Incarnation};
    const MAX: u32 = 1 << 20;
    let actor = ActorId::from_u64(99);
    let hello = Frame::V1(Message::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        node_id: vec![9; 32],
        actor,
        incarnation: Incarnation::from_u64(99),
        capabilities: Capabilities::ALL,
        max_frame_bytes: MAX,
        admission: None,
    }));
    let ctx = WriteContext {
        stamp: Stamp {
            hlc: Hlc::new(1_790_000_000_000, 0),
            actor,
        },
        dot: Dot { actor, seq: 1 },
    };
    let state = DocState::insert_delta(ctx, &json!({"a": 1, "b": "two", "c": [3]})).unwrap();
    let changes = Frame::V1(Message::Changes(Changes {
        batch: BatchId::Push(1),
        collection: CollectionName::new("docs").unwrap(),
        queries: vec![],
        base: 0,
        upto: 1,
        part: 0,
        parts: 1,
        names_all: false,
        docs: vec![DocItem {
            id: DocId::from_string("x").unwrap(),
            matches: true,
            check: Check::Whole,
            piece: 0,
            pieces: 1,
            state,
        }],
    }));
    let good = frame::encode(&changes, MAX).unwrap();
    let bad = (0..good.len())
        .rev()
        .find_map(|i| {
            let mut bytes = good.clone();
            bytes[i] = bytes[i].wrapping_add(0x40);
            match frame::decode(&bytes, MAX) {
                Err(e) if e.to_string().contains("document") => Some(bytes),
                _ => None,
            }
        })
        .expect("some corruption of the document is caught as such");
    vec![frame::encode(&hello, MAX).unwrap(), bad]
}

impl Garbage {
    fn bytes(self) -> Vec<u8> {
        let framed = |payload: &[u8]| {
            let mut out = (payload.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(payload);
            out
        };
        match self {
            Garbage::Bytes => framed(&[0, 0xff, 0xfe, 0x13, 0x37, 0x00, 0x42, 0x99]),
            Garbage::Oversized => 0xffff_fff0_u32.to_be_bytes().to_vec(),
            Garbage::UnknownVersion => framed(&[7, 1, 2, 3]),
            Garbage::BadDelta => hello_then_bad_delta()
                .iter()
                .flat_map(|f| framed(f))
                .collect(),
        }
    }

    fn reason_mentions(self) -> &'static str {
        match self {
            Garbage::Bytes => "bad frame",
            Garbage::Oversized => "exceeds the limit",
            Garbage::UnknownVersion => "version",
            Garbage::BadDelta => "document",
        }
    }
}

/// A bare libp2p swarm dials `victim`, opens the sync stream and writes `garbage`.
/// Returns once the victim has closed the connection.
async fn misbehave(victim: libp2p::Multiaddr, garbage: Garbage) -> libp2p::PeerId {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let config = NetConfig {
        listen: vec![],
        mdns: false,
        ..NetConfig::default()
    };
    let mut swarm = build_swarm(keypair, &config).unwrap();
    let me = *swarm.local_peer_id();
    swarm.dial(victim).unwrap();
    let mut stream = None;
    let deadline = tokio::time::Instant::now() + net_support::DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .expect("the victim reacts in time");
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Sync(SyncStreamEvent::Opened {
                stream: s,
                ..
            })) => {
                let mut s = s.compat();
                s.write_all(&garbage.bytes()).await.unwrap();
                s.flush().await.unwrap();
                stream = Some(s);
            }
            SwarmEvent::ConnectionClosed {
                num_established: 0, ..
            } if stream.is_some() => return me,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_peer_is_dropped_while_the_others_keep_syncing() {
    init_tracing();
    let a = TestNode::new(1, Transport::Tcp, vec![]).await;
    let b = TestNode::new(2, Transport::Tcp, vec![a.addr().await]).await;
    let a_addr = a.addr().await;
    a.write("before", json!({"n": 0}));
    b.wait_for_doc("before", &json!({"n": 0})).await;
    for (i, garbage) in [
        Garbage::Bytes,
        Garbage::Oversized,
        Garbage::UnknownVersion,
        Garbage::BadDelta,
    ]
    .into_iter()
    .enumerate()
    {
        let mut events = a.mesh.events();
        let bad = misbehave(a_addr.clone(), garbage).await;
        let reason = loop {
            let event = tokio::time::timeout(net_support::DEADLINE, events.recv())
                .await
                .expect("a PeerDown in time")
                .unwrap();
            if let MeshEvent::PeerDown { peer, reason } = event
                && peer == bad
            {
                break reason.expect("a reason");
            }
        };
        assert!(
            reason.contains(garbage.reason_mentions()),
            "{garbage:?}: {reason}"
        );
        let id = format!("after-{i}");
        a.write(&id, json!({"n": i}));
        b.wait_for_doc(&id, &json!({"n": i})).await;
        assert_eq!(a.session_peers().await, vec![b.peer_id()]);
    }
    a.mesh.shutdown().await;
    b.mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up() {
    init_tracing();
    let a = TestNode::new(1, Transport::Tcp, vec![]).await;
    let a_addr = a.addr().await;
    let b = TestNode::new(2, Transport::Tcp, vec![a_addr.clone()]).await;
    a.write("first", json!({"n": 1}));
    b.wait_for_doc("first", &json!({"n": 1})).await;
    let (b_key, b_store, b_id) = (b.keypair.clone(), b.store.clone(), b.peer_id());
    b.mesh.shutdown().await;
    eventually("A notices B left", || async {
        !a.session_peers().await.contains(&b_id)
    })
    .await;
    for i in 0..20 {
        a.write(&format!("while-away-{i}"), json!({"n": i}));
    }
    a.write("first", json!({"n": 2}));
    let b = TestNode::start(b_key, b_store, Transport::Tcp, vec![a_addr]).await;
    assert_eq!(b.peer_id(), b_id);
    for i in 0..20 {
        b.wait_for_doc(&format!("while-away-{i}"), &json!({"n": i}))
            .await;
    }
    b.wait_for_doc("first", &json!({"n": 2})).await;
    eventually("B is one session on A again", || async {
        a.session_peers().await == vec![b_id]
    })
    .await;
    a.mesh.shutdown().await;
    b.mesh.shutdown().await;
}
