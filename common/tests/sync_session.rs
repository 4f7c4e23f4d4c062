//! The session state machine between two in-memory stores over a perfect link, delivered
//! in flights (every frame sent in one flight arrives in the next), so tests can count
//! round trips.

use serde_json::{Value, json};
use trellis_common::clock::Hlc;
use trellis_common::crdt::{DocState, Dot, Mutation, Path, WriteContext};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::sync::frame::{self, Frame, Message};
use trellis_common::sync::{
    CloseReason, Event, FrameError, Incarnation, Input, Interest, LocalHello, MemoryStore, Output,
    QueryId, Session, SessionConfig, SyncStore,
};

const BLUE: &str = "SELECT * FROM cars WHERE color = 'blue'";

struct Node {
    store: MemoryStore,
    actor: ActorId,
    seq: u64,
}

impl Node {
    fn new(n: u64) -> Self {
        Self {
            store: MemoryStore::new(Incarnation::from_u64(n)),
            actor: ActorId::from_u64(n),
            seq: 0,
        }
    }

    fn ctx(&mut self, id: &DocId) -> WriteContext {
        self.seq += 1;
        let current = self.store.get(&cars(), id).cloned().unwrap_or_default();
        let dot = Dot {
            actor: self.actor,
            seq: self.seq,
        };
        let now = Hlc::new(1_790_000_000_000 + self.seq, 0);
        WriteContext::for_document(&current, now, dot)
    }

    fn insert(&mut self, id: &str, body: Value) {
        let id = DocId::from_string(id).unwrap();
        let ctx = self.ctx(&id);
        let delta = DocState::insert_delta(ctx, &body).unwrap();
        self.store.merge(&cars(), &id, &delta);
    }

    fn set(&mut self, id: &str, field: &str, value: Value) {
        let id = DocId::from_string(id).unwrap();
        let ctx = self.ctx(&id);
        let current = self.store.get(&cars(), &id).cloned().unwrap();
        let delta = current
            .update_delta(ctx, &[Mutation::Set(Path::parse_dotted(field), value)])
            .unwrap();
        self.store.merge(&cars(), &id, &delta);
    }

    fn get(&self, id: &str) -> Option<Value> {
        let id = DocId::from_string(id).unwrap();
        self.store.get(&cars(), &id)?.to_json(&id)
    }
}

fn cars() -> CollectionName {
    CollectionName::new("cars").unwrap()
}

fn session(n: u64) -> Session {
    Session::new(
        SessionConfig::default(),
        LocalHello {
            node_id: vec![n as u8; 32],
            actor: ActorId::from_u64(n),
            admission: None,
        },
    )
}

/// Two nodes, one session each way, and what went over the link.
struct Pair {
    nodes: [Node; 2],
    sessions: [Session; 2],
    in_flight: Vec<(usize, Vec<u8>)>,
    now: u64,
    /// Per flight, the messages delivered (receiver, name).
    log: Vec<Vec<(usize, &'static str)>>,
    events: [Vec<Event>; 2],
    closes: [Vec<CloseReason>; 2],
    /// The base of every pull delivered.
    pull_bases: Vec<u64>,
}

impl Pair {
    fn new(a: Node, b: Node) -> Self {
        Self {
            nodes: [a, b],
            sessions: [session(1), session(2)],
            in_flight: Vec::new(),
            now: 0,
            log: Vec::new(),
            events: [Vec::new(), Vec::new()],
            closes: [Vec::new(), Vec::new()],
            pull_bases: Vec::new(),
        }
    }

    fn input(&mut self, side: usize, input: Input) {
        let outputs = self.sessions[side].handle(&mut self.nodes[side].store, self.now, input);
        for output in outputs {
            match output {
                Output::Send(bytes) => self.in_flight.push((1 - side, bytes)),
                Output::Close { reason } => self.closes[side].push(reason),
                Output::Event(event) => self.events[side].push(event),
            }
        }
    }

    fn subscribe(&mut self, side: usize, query: &str) {
        let interest = vec![Interest {
            query: query.to_owned(),
            hops: 0,
        }];
        self.input(side, Input::SetSubscriptions(interest));
    }

    fn connect(&mut self) {
        self.input(0, Input::Connected);
        self.input(1, Input::Connected);
    }

    /// Delivers the frames in flight; returns how many there were.
    fn flight(&mut self) -> usize {
        self.now += 10;
        let frames = std::mem::take(&mut self.in_flight);
        let mut names = Vec::new();
        for (to, bytes) in &frames {
            if let Ok(Frame::V1(message)) = frame::decode(bytes, u32::MAX) {
                names.push((*to, message.name()));
                if let Message::Pull(pull) = &message {
                    self.pull_bases.push(pull.base);
                }
            }
            self.input(*to, Input::Frame(bytes.clone()));
        }
        self.log.push(names);
        frames.len()
    }

    fn settle(&mut self) -> usize {
        let mut flights = 0;
        while self.flight() > 0 {
            flights += 1;
            assert!(flights < 50, "no quiescence: {:?}", self.log);
        }
        flights
    }

    fn local_change(&mut self, side: usize) {
        let lsn = self.nodes[side].store.current_lsn();
        self.input(side, Input::LocalChange { lsn });
    }

    fn sent(&self, name: &str) -> usize {
        self.log
            .iter()
            .flatten()
            .filter(|(_, n)| *n == name)
            .count()
    }

    fn caught_up(&self, side: usize) -> bool {
        self.events[side]
            .iter()
            .any(|e| matches!(e, Event::CaughtUp { query, .. } if *query == QueryId::of(BLUE)))
    }
}

#[test]
fn handshake_exchanges_hellos_and_interest() {
    let mut pair = Pair::new(Node::new(1), Node::new(2));
    pair.subscribe(0, BLUE);
    pair.connect();
    pair.settle();
    assert!(pair.closes.iter().all(Vec::is_empty), "{:?}", pair.closes);
    let hello = pair.sessions[0].peer().expect("hello received");
    assert_eq!(hello.incarnation, Incarnation::from_u64(2));
    assert_eq!(pair.sessions[1].peer().unwrap().actor, ActorId::from_u64(1));
    assert!(
        pair.events[1]
            .iter()
            .any(|e| matches!(e, Event::PeerInterest(list) if list[0].query == BLUE))
    );
    assert!(pair.sessions[0].is_idle() && pair.sessions[1].is_idle());
}

#[test]
fn catch_up_takes_one_round_trip_when_nothing_newly_matches() {
    let mut b = Node::new(2);
    b.insert("car-1", json!({"color": "blue", "km": 1}));
    b.insert("car-2", json!({"color": "red", "km": 2}));
    let mut pair = Pair::new(Node::new(1), b);
    pair.subscribe(0, BLUE);
    pair.connect();
    pair.flight(); // hellos cross
    pair.flight(); // our pull arrives; the answer goes back
    pair.flight(); // the answer arrives
    assert!(
        pair.caught_up(0),
        "caught up one round trip after the hello"
    );
    pair.settle();
    assert_eq!(pair.nodes[0].get("car-1"), pair.nodes[1].get("car-1"));
    assert_eq!(pair.nodes[0].get("car-2"), None, "red cars do not travel");
    assert_eq!(pair.sent("Want"), 0);

    // Reconnect after changes on B: again one round trip, from the bookmark.
    pair.nodes[1].set("car-1", "km", json!(9));
    pair.nodes[1].insert("car-3", json!({"color": "blue"}));
    let nodes = std::mem::replace(&mut pair.nodes, [Node::new(8), Node::new(9)]);
    let mut pair = Pair::new_with(nodes);
    pair.subscribe(0, BLUE);
    pair.connect();
    let lsn_before = pair.nodes[1].store.current_lsn() - 2;
    pair.flight();
    pair.flight();
    assert_eq!(
        pair.pull_bases,
        vec![lsn_before],
        "the pull starts at the bookmark"
    );
    pair.flight();
    assert!(pair.caught_up(0));
    pair.settle();
    assert_eq!(pair.sent("Want"), 0);
    assert_eq!(pair.nodes[0].get("car-1").unwrap()["km"], json!(9));
    assert!(pair.nodes[0].get("car-3").is_some());
    let bookmark = pair.sessions[0].bookmark(&QueryId::of(BLUE)).unwrap();
    assert_eq!(bookmark, pair.nodes[1].store.current_lsn());
}

impl Pair {
    fn new_with(nodes: [Node; 2]) -> Self {
        let [a, b] = nodes;
        Self::new(a, b)
    }
}

#[test]
fn a_repainted_car_stops_matching_and_is_updated_on_the_subscriber() {
    let mut b = Node::new(2);
    b.insert("car-1", json!({"color": "blue", "km": 1}));
    b.insert("car-2", json!({"color": "red", "km": 2}));
    let mut pair = Pair::new(Node::new(1), b);
    pair.subscribe(0, BLUE);
    pair.connect();
    pair.settle();
    assert_eq!(pair.nodes[0].get("car-1").unwrap()["color"], json!("blue"));

    // Repainted red on B: pushed, and the subscriber's copy turns red too.
    pair.nodes[1].set("car-1", "color", json!("red"));
    pair.local_change(1);
    pair.settle();
    assert_eq!(pair.nodes[0].get("car-1"), pair.nodes[1].get("car-1"));
    assert_eq!(pair.nodes[0].get("car-1").unwrap()["color"], json!("red"));

    // A red car repainted blue newly matches: the subscriber fetches all of it.
    pair.nodes[1].set("car-2", "color", json!("blue"));
    pair.local_change(1);
    pair.settle();
    assert_eq!(pair.sent("Want"), 1);
    assert_eq!(pair.nodes[0].get("car-2"), pair.nodes[1].get("car-2"));
    assert_eq!(pair.nodes[0].get("car-2").unwrap()["km"], json!(2));
    let changed: Vec<_> = pair.events[0]
        .iter()
        .filter_map(|e| match e {
            Event::DocsChanged { docs } => Some(docs.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(changed.iter().any(|(_, id)| id.to_string() == "car-2"));
}

#[test]
fn garbage_from_a_peer_closes_the_session_with_a_reason() {
    let mut pair = Pair::new(Node::new(1), Node::new(2));
    pair.connect();
    pair.settle();
    pair.input(0, Input::Frame(vec![0x07, 0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(
        pair.closes[0],
        vec![CloseReason::BadFrame(FrameError::UnknownVersion(8))]
    );
    assert!(
        pair.closes[0][0]
            .to_string()
            .contains("version 8 is unknown")
    );
    // A goodbye went out, and the closed session ignores everything after.
    assert!(matches!(pair.in_flight.last(), Some((1, _))));
    pair.input(0, Input::Tick);
    assert_eq!(pair.closes[0].len(), 1);

    // Truncated garbage after a valid version byte.
    let mut pair = Pair::new(Node::new(1), Node::new(2));
    pair.connect();
    pair.settle();
    pair.input(1, Input::Frame(vec![0x00, 0x04, 0xff, 0xff]));
    assert!(matches!(pair.closes[1][..], [CloseReason::BadFrame(_)]));
}

#[test]
fn messages_that_overtake_the_peers_hello_are_handled_after_it() {
    // A sends its Hello on one link, B's Hello arrives, and A's subscription and pull go
    // out on another link that delivers them first.
    let mut b = Node::new(2);
    b.insert("car-1", json!({"color": "blue"}));
    let mut pair = Pair::new(Node::new(1), b);
    pair.subscribe(0, BLUE);
    pair.connect();
    let hellos = std::mem::take(&mut pair.in_flight);
    let (to_b, to_a): (Vec<_>, Vec<_>) = hellos.into_iter().partition(|(to, _)| *to == 1);
    pair.in_flight = to_a;
    pair.flight();
    let overtaking: Vec<&str> = pair
        .in_flight
        .iter()
        .filter_map(|(_, bytes)| {
            let Ok(Frame::V1(message)) = frame::decode(bytes, u32::MAX) else {
                return None;
            };
            Some(message.name())
        })
        .collect();
    assert!(overtaking.contains(&"Pull"), "{overtaking:?}");
    pair.flight();
    assert!(
        pair.sessions[1].peer().is_none(),
        "A's Hello is still on its way"
    );
    pair.in_flight = to_b;
    pair.settle();
    assert!(pair.closes.iter().all(Vec::is_empty), "{:?}", pair.closes);
    assert!(pair.caught_up(0));
    assert_eq!(
        pair.nodes[0].get("car-1"),
        Some(json!({"_id": "car-1", "color": "blue"}))
    );
}

#[test]
fn too_much_before_hello_or_an_oversized_frame_closes_the_session() {
    let mut pair = Pair::new(Node::new(1), Node::new(2));
    let ping = frame::encode(&Frame::V1(Message::Ping { nonce: 1 }), 1024).unwrap();
    // Held for the Hello (another link may deliver it later), up to a limit.
    for _ in 0..64 {
        pair.input(0, Input::Frame(ping.clone()));
    }
    assert!(pair.closes[0].is_empty(), "{:?}", pair.closes[0]);
    assert!(
        pair.in_flight.is_empty(),
        "nothing is answered before the Hello"
    );
    pair.input(0, Input::Frame(ping));
    assert_eq!(
        pair.closes[0],
        vec![CloseReason::BeforeHello { message: "Ping" }]
    );

    let mut pair = Pair::new(Node::new(1), Node::new(2));
    pair.connect();
    pair.settle();
    let big = vec![0u8; frame::DEFAULT_MAX_FRAME_BYTES as usize + 1];
    pair.input(1, Input::Frame(big));
    assert!(matches!(
        pair.closes[1][..],
        [CloseReason::BadFrame(FrameError::TooLarge { .. })]
    ));
}

#[test]
fn a_lost_push_is_repaired_by_a_pull() {
    let mut b = Node::new(2);
    b.insert("car-1", json!({"color": "blue", "km": 1}));
    let mut pair = Pair::new(Node::new(1), b);
    pair.subscribe(0, BLUE);
    pair.connect();
    pair.settle();
    pair.nodes[1].set("car-1", "km", json!(2));
    pair.local_change(1);
    pair.in_flight.clear(); // the push is lost
    pair.nodes[1].set("car-1", "km", json!(3));
    pair.nodes[1].insert("car-9", json!({"color": "blue"}));
    pair.local_change(1);
    pair.settle(); // the second push arrives out of order and waits
    assert!(!pair.sessions[0].is_idle());
    for _ in 0..10 {
        pair.now += 1_000;
        pair.input(0, Input::Tick);
        pair.input(1, Input::Tick);
        pair.settle();
    }
    assert_eq!(pair.nodes[0].get("car-1").unwrap()["km"], json!(3));
    assert!(pair.nodes[0].get("car-9").is_some());
    assert!(pair.sessions[0].is_idle());
    assert_eq!(
        pair.sessions[0].bookmark(&QueryId::of(BLUE)),
        Some(pair.nodes[1].store.current_lsn())
    );
}
