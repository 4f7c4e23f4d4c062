//! A seeded, deterministic simulator of a mesh of nodes running [`Session`]s.
//!
//! Each node has a [`MemoryStore`] (its durable state, kept across restarts), a hybrid
//! clock with its own skew, subscriptions of its own, and one session per connected
//! neighbour. Links have latency and jitter (so frames reorder), lose and duplicate
//! frames, are cut and healed; nodes restart (sessions dropped and recreated, store
//! kept). Random local writes insert, update, delete, re-insert and increment
//! documents; most inserted ids are UUIDs unique to their writer, some come from a small
//! pool of natural ids that every node inserts independently. Everything random comes
//! from one [`SimRng`] seeded by the seed, and events run in (time, sequence) order, so
//! a seed replays exactly.
//!
//! After the active phase every link heals, frames stop being lost, and the simulation
//! runs until the mesh is quiet. [`Simulation::check`] then verifies the properties of
//! `docs/sync.md`: every node holds exactly the latest state of every document that
//! matches its subscriptions and exists anywhere in its connected component, holds no
//! live matching document that is deleted or different there, and nodes agree on the
//! documents both subscribe to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Value, json};

use super::frame::MIN_MAX_FRAME_BYTES;
use super::interest::{Interest, InterestTable, Subscription};
use super::session::{CloseReason, Event, Input, LocalHello, Output, Session, SessionConfig};
use super::store::MemoryStore;
use super::{Incarnation, SyncStore};
use crate::clock::Clock;
use crate::crdt::{Crdt, DocState, Dot, Mutation, Path, WriteContext};
use crate::ids::{ActorId, CollectionName, DocId};

/// A small, fast, seedable generator (xoshiro256**, seeded through SplitMix64). Its
/// sequence is fixed forever, unlike a library's default generator, so a committed
/// failing seed keeps reproducing the same run.
#[derive(Debug, Clone)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The shape of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// 0 – 1 – 2 – ... : the ends never meet.
    Line,
    /// A line whose ends are joined.
    Ring,
    /// Node 0 in the middle.
    Star,
    /// A random tree plus a few random extra links.
    Random,
}

/// The queries the simulator subscribes nodes to.
pub const QUERY_POOL: &[&str] = &[
    "SELECT * FROM cars",
    "SELECT * FROM cars WHERE color = 'blue'",
    "SELECT * FROM cars WHERE km > 3",
    "SELECT * FROM cars WHERE color = 'red' OR km <= 2",
    "SELECT * FROM cars WHERE owner IS MISSING",
    "SELECT * FROM cars WHERE trips >= 2",
    "SELECT * FROM trucks",
    "SELECT * FROM trucks WHERE NOT (color = 'blue')",
];

/// One simulation's parameters (all drawn from the seed by [`SimConfig::random`]).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The mesh's shape.
    pub topology: Topology,
    /// Probability that a frame is lost (active phase only).
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Smallest one-way latency.
    pub latency_ms: u64,
    /// Extra random latency up to this (reorders frames).
    pub jitter_ms: u64,
    /// Number of local writes.
    pub writes: usize,
    /// How long writes and faults go on.
    pub active_ms: u64,
    /// Number of link cuts (each healed later).
    pub cuts: usize,
    /// Number of node restarts.
    pub restarts: usize,
    /// The frame limit every node announces.
    pub max_frame_bytes: u32,
    /// Each node's own subscriptions.
    pub subscriptions: Vec<Vec<String>>,
}

impl SimConfig {
    /// A configuration drawn from `rng`.
    pub fn random(rng: &mut SimRng) -> Self {
        let nodes = *rng.pick(&[3, 3, 4, 4, 5, 6, 8]);
        let topology = *rng.pick(&[
            Topology::Line,
            Topology::Line,
            Topology::Ring,
            Topology::Star,
            Topology::Random,
        ]);
        let mut subscriptions: Vec<Vec<String>> = (0..nodes)
            .map(|_| {
                let count = *rng.pick(&[0, 1, 1, 1, 2]);
                let mut subs: Vec<String> = (0..count)
                    .map(|_| (*rng.pick(QUERY_POOL)).to_owned())
                    .collect();
                subs.sort();
                subs.dedup();
                subs
            })
            .collect();
        // At least two subscribers with differing subscriptions.
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        subscriptions[a] = vec![QUERY_POOL[1].to_owned()];
        if subscriptions[b].is_empty() || subscriptions[b] == subscriptions[a] {
            subscriptions[b] = vec![(*rng.pick(&QUERY_POOL[2..])).to_owned()];
        }
        Self {
            nodes,
            topology,
            loss: *rng.pick(&[0.0, 0.02, 0.05, 0.1, 0.2]),
            duplicate: *rng.pick(&[0.0, 0.02, 0.1]),
            latency_ms: rng.between(1, 20),
            jitter_ms: rng.between(0, 20),
            writes: rng.between(8, 30) as usize,
            active_ms: rng.between(1_000, 4_000),
            cuts: rng.below(4) as usize,
            restarts: rng.below(3) as usize,
            max_frame_bytes: *rng.pick(&[
                MIN_MAX_FRAME_BYTES,
                64 * 1024,
                super::frame::DEFAULT_MAX_FRAME_BYTES,
            ]),
            subscriptions,
        }
    }
}

/// A check that failed, with the seed that replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation seed {} failed: {}\n  replay it: TRELLIS_SIM_SEED={} cargo test -p trellis-common --test sync_sim replay_one_seed -- --nocapture",
            self.seed, self.message, self.seed
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Frames sent.
    pub frames: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Local writes made.
    pub writes: u64,
    /// Sessions closed by a session (not by the simulator), by reason.
    pub closes: BTreeMap<String, u64>,
    /// Simulated time at quiescence.
    pub end_ms: u64,
    /// Documents held across all nodes at the end.
    pub docs_held: usize,
}

#[derive(Debug)]
struct SimNode {
    actor: ActorId,
    store: MemoryStore,
    clock: Clock,
    seq: u64,
    skew_ms: u64,
    next_doc: u64,
    subs: Vec<Subscription>,
    up: bool,
    interest: InterestTable<usize>,
    sessions: BTreeMap<usize, Session>,
    advertised: BTreeMap<usize, Vec<Interest>>,
}

#[derive(Debug, Clone)]
struct SimLink {
    a: usize,
    b: usize,
    cut: bool,
    conn: u64,
    connected: bool,
}

impl SimLink {
    fn other(&self, node: usize) -> usize {
        if node == self.a { self.b } else { self.a }
    }
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        link: usize,
        conn: u64,
        to: usize,
        bytes: Vec<u8>,
    },
    Tick {
        node: usize,
    },
    Write {
        node: usize,
    },
    Cut {
        link: usize,
    },
    Heal {
        link: usize,
    },
    Down {
        node: usize,
    },
    Up {
        node: usize,
    },
    Reconnect {
        link: usize,
    },
    HealAll,
    Check,
}

const EPOCH_MS: u64 = 1_790_000_000_000;
const TICK_MS: u64 = 50;
const CHECK_MS: u64 = 100;
const SETTLE_LIMIT_MS: u64 = 120_000;
/// How many natural ids all nodes share (each insert takes one with probability 1/8).
const SHARED_IDS: u64 = 6;

/// A simulated mesh. See the module documentation.
#[derive(Debug)]
pub struct Simulation {
    seed: u64,
    config: SimConfig,
    rng: SimRng,
    now: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<SimNode>,
    links: Vec<SimLink>,
    session_config: SessionConfig,
    report: SimReport,
    settling: bool,
    last_change: u64,
    quiet_since: Option<u64>,
    trace: bool,
    errors: Vec<String>,
}

impl Simulation {
    /// A simulation whose configuration is drawn from the seed.
    pub fn new(seed: u64) -> Self {
        let mut rng = SimRng::new(seed);
        let config = SimConfig::random(&mut rng);
        Self::with_config(seed, config)
    }

    /// A simulation of a given configuration (randomness still from the seed).
    pub fn with_config(seed: u64, config: SimConfig) -> Self {
        let mut rng = SimRng::new(seed ^ 0x5EED_5EED_5EED_5EED);
        let nodes = (0..config.nodes)
            .map(|i| SimNode {
                actor: ActorId::from_u64(0xA000 + i as u64),
                store: MemoryStore::new(Incarnation::from_u64(rng.next_u64())),
                clock: Clock::default(),
                seq: 0,
                skew_ms: rng.below(1_000),
                next_doc: 0,
                subs: config.subscriptions[i]
                    .iter()
                    .map(|q| Subscription::parse(q).expect("the query pool parses"))
                    .collect(),
                up: true,
                interest: {
                    let mut table = InterestTable::new();
                    table.set_own(config.subscriptions[i].clone());
                    table
                },
                sessions: BTreeMap::new(),
                advertised: BTreeMap::new(),
            })
            .collect();
        let links = topology_links(config.nodes, config.topology, &mut rng)
            .into_iter()
            .map(|(a, b)| SimLink {
                a,
                b,
                cut: false,
                conn: 0,
                connected: false,
            })
            .collect();
        let session_config = SessionConfig {
            max_frame_bytes: config.max_frame_bytes,
            handshake_timeout_ms: 3_000,
            retry_ms: 600,
            heartbeat_ms: 500,
            page_docs: 7,
            ..SessionConfig::default()
        };
        Self {
            seed,
            config,
            rng,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            links,
            session_config,
            report: SimReport::default(),
            settling: false,
            last_change: 0,
            quiet_since: None,
            trace: false,
            errors: Vec::new(),
        }
    }

    /// Prints every delivered message and fault to stderr.
    pub fn set_trace(&mut self, trace: bool) {
        self.trace = trace;
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The store of node `i`.
    pub fn store(&self, i: usize) -> &MemoryStore {
        &self.nodes[i].store
    }

    /// The links as node pairs.
    pub fn links(&self) -> Vec<(usize, usize)> {
        self.links.iter().map(|l| (l.a, l.b)).collect()
    }

    fn at(&mut self, time: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert((time, self.seq), ev);
    }

    fn fail(&self, message: impl Into<String>) -> SimFailure {
        SimFailure {
            seed: self.seed,
            message: format!(
                "{} [config: {:?}; links: {:?}]",
                message.into(),
                self.config,
                self.links()
            ),
        }
    }

    /// Runs the active phase, heals, runs to quiescence and checks the properties.
    pub fn run(&mut self) -> Result<SimReport, SimFailure> {
        self.schedule();
        while let Some(((time, _), ev)) = self.events.pop_first() {
            self.now = time;
            if self.settling && self.now > self.config.active_ms + SETTLE_LIMIT_MS {
                return Err(self.fail(format!(
                    "no quiescence {SETTLE_LIMIT_MS} ms after healing; busy sessions: {}",
                    self.busy_sessions()
                )));
            }
            if self.step(ev) {
                break;
            }
            if let Some(error) = self.errors.first() {
                return Err(self.fail(error.clone()));
            }
        }
        self.report.end_ms = self.now;
        self.report.docs_held = self.nodes.iter().map(|n| n.store.iter().count()).sum();
        self.check().map_err(|message| self.fail(message))?;
        Ok(self.report.clone())
    }

    fn busy_sessions(&self) -> String {
        let mut busy = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for (link, session) in &node.sessions {
                if !session.is_idle() {
                    busy.push(format!("{i}->{} ({session:?})", self.links[*link].other(i)));
                }
            }
        }
        for (l, link) in self.links.iter().enumerate() {
            if !link.connected {
                busy.push(format!("link {l} ({}-{}) down", link.a, link.b));
            }
        }
        busy.join("; ")
    }

    fn schedule(&mut self) {
        for l in 0..self.links.len() {
            let time = self.rng.below(20);
            self.at(time, Ev::Reconnect { link: l });
        }
        for n in 0..self.nodes.len() {
            let first = self.rng.below(TICK_MS);
            self.at(first, Ev::Tick { node: n });
        }
        let active = self.config.active_ms;
        for _ in 0..self.config.writes {
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            let time = self.rng.below(active);
            self.at(time, Ev::Write { node });
        }
        for _ in 0..self.config.cuts {
            let link = self.rng.below(self.links.len() as u64) as usize;
            let time = self.rng.below(active);
            self.at(time, Ev::Cut { link });
            let heal = time + self.rng.between(100, 2_000);
            self.at(heal, Ev::Heal { link });
        }
        for _ in 0..self.config.restarts {
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            let time = self.rng.below(active);
            self.at(time, Ev::Down { node });
            let up = time + self.rng.between(50, 1_500);
            self.at(up, Ev::Up { node });
        }
        self.at(active, Ev::HealAll);
    }

    /// Runs one event; true when the mesh is quiet after healing.
    fn step(&mut self, ev: Ev) -> bool {
        match ev {
            Ev::Deliver {
                link,
                conn,
                to,
                bytes,
            } => {
                let l = &self.links[link];
                if l.connected && l.conn == conn && self.nodes[to].up {
                    if self.trace {
                        let from = l.other(to);
                        let text = match super::frame::decode(&bytes, u32::MAX) {
                            Ok(super::Frame::V1(message)) => summary(&message),
                            Err(e) => format!("undecodable: {e}"),
                        };
                        self.trace(|| format!("{from} -> {to}: {text}"));
                    }
                    self.feed(to, link, Input::Frame(bytes));
                }
            }
            Ev::Tick { node } => {
                if self.nodes[node].up {
                    let links: Vec<usize> = self.nodes[node].sessions.keys().copied().collect();
                    for link in links {
                        self.feed(node, link, Input::Tick);
                    }
                }
                self.at(self.now + TICK_MS, Ev::Tick { node });
            }
            Ev::Write { node } => {
                if self.nodes[node].up {
                    self.write(node);
                }
            }
            Ev::Cut { link } => {
                if !self.settling {
                    self.trace(|| format!("cut link {link}"));
                    self.links[link].cut = true;
                    self.disconnect(link, None);
                }
            }
            Ev::Heal { link } => {
                self.links[link].cut = false;
                self.connect(link);
            }
            Ev::Down { node } => {
                if !self.settling && self.nodes[node].up {
                    self.trace(|| format!("node {node} down"));
                    self.nodes[node].up = false;
                    let links: Vec<usize> = self.nodes[node].sessions.keys().copied().collect();
                    for link in links {
                        self.disconnect(link, None);
                    }
                    let own = self.nodes[node].interest.own().to_vec();
                    let mut table = InterestTable::new();
                    table.set_own(own);
                    self.nodes[node].interest = table;
                    self.nodes[node].advertised.clear();
                }
            }
            Ev::Up { node } => {
                if !self.nodes[node].up {
                    self.trace(|| format!("node {node} up"));
                    self.nodes[node].up = true;
                    for link in 0..self.links.len() {
                        if self.links[link].a == node || self.links[link].b == node {
                            let delay = self.rng.between(1, 50);
                            self.at(self.now + delay, Ev::Reconnect { link });
                        }
                    }
                }
            }
            Ev::Reconnect { link } => self.connect(link),
            Ev::HealAll => {
                self.trace(|| "heal all".to_owned());
                self.settling = true;
                self.config.loss = 0.0;
                for node in 0..self.nodes.len() {
                    if !self.nodes[node].up {
                        self.step(Ev::Up { node });
                    }
                }
                for link in 0..self.links.len() {
                    self.links[link].cut = false;
                    self.connect(link);
                }
                self.last_change = self.now;
                self.at(self.now + CHECK_MS, Ev::Check);
            }
            Ev::Check => {
                let quiet = self.links.iter().all(|l| l.connected)
                    && self
                        .nodes
                        .iter()
                        .all(|n| n.sessions.values().all(Session::is_idle));
                let needed = 2 * self.session_config.heartbeat_ms
                    + self.session_config.retry_ms
                    + 4 * (self.config.latency_ms + self.config.jitter_ms);
                if quiet && self.now.saturating_sub(self.last_change) >= needed {
                    match self.quiet_since {
                        Some(since) if self.now - since >= needed => return true,
                        Some(_) => {}
                        None => self.quiet_since = Some(self.now),
                    }
                } else {
                    self.quiet_since = None;
                }
                self.at(self.now + CHECK_MS, Ev::Check);
            }
        }
        false
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>6} ms] {}", self.now, what());
        }
    }

    fn connect(&mut self, link: usize) {
        let l = &self.links[link];
        if l.connected || l.cut || !self.nodes[l.a].up || !self.nodes[l.b].up {
            return;
        }
        let (a, b) = (l.a, l.b);
        self.links[link].connected = true;
        self.links[link].conn += 1;
        self.trace(|| {
            format!(
                "connect link {link} ({a}-{b}), conn {}",
                self.links[link].conn
            )
        });
        for node in [a, b] {
            let local = LocalHello {
                node_id: self.nodes[node].actor.to_bytes().to_vec(),
                actor: self.nodes[node].actor,
                admission: None,
            };
            self.nodes[node]
                .sessions
                .insert(link, Session::new(self.session_config.clone(), local));
        }
        for node in [a, b] {
            self.feed(node, link, Input::Connected);
        }
        for node in [a, b] {
            self.refresh_interest(node);
        }
    }

    fn disconnect(&mut self, link: usize, reconnect_after: Option<u64>) {
        if !self.links[link].connected {
            return;
        }
        self.links[link].connected = false;
        let (a, b) = (self.links[link].a, self.links[link].b);
        self.trace(|| format!("disconnect link {link} ({a}-{b})"));
        for node in [a, b] {
            let n = &mut self.nodes[node];
            n.sessions.remove(&link);
            n.advertised.remove(&link);
            n.interest.remove_peer(&link);
        }
        for node in [a, b] {
            self.refresh_interest(node);
        }
        if let Some(delay) = reconnect_after {
            self.at(self.now + delay, Ev::Reconnect { link });
        }
    }

    /// Recomputes a node's interest towards each peer and tells the sessions whose
    /// interest changed.
    fn refresh_interest(&mut self, node: usize) {
        let links: Vec<usize> = self.nodes[node].sessions.keys().copied().collect();
        for link in links {
            let toward = self.nodes[node].interest.toward(&link);
            if self.nodes[node].advertised.get(&link) != Some(&toward) {
                self.nodes[node].advertised.insert(link, toward.clone());
                self.feed(node, link, Input::SetSubscriptions(toward));
            }
        }
    }

    fn feed(&mut self, node: usize, link: usize, input: Input) {
        let now = self.now;
        let outputs = {
            let n = &mut self.nodes[node];
            let Some(session) = n.sessions.get_mut(&link) else {
                return;
            };
            session.handle(&mut n.store, now, input)
        };
        self.process(node, link, outputs);
    }

    fn process(&mut self, node: usize, link: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send(bytes) => self.transmit(node, link, bytes),
                Output::Close { reason } => {
                    self.trace(|| format!("node {node} closes link {link}: {reason}"));
                    let key = close_kind(&reason);
                    *self.report.closes.entry(key).or_default() += 1;
                    if matches!(
                        reason,
                        CloseReason::BadFrame(_)
                            | CloseReason::Protocol(_)
                            | CloseReason::BadQuery(_)
                            | CloseReason::Unsendable(_)
                            | CloseReason::Store(_)
                    ) {
                        self.errors
                            .push(format!("node {node} closed link {link}: {reason}"));
                    }
                    let delay = self.rng.between(50, 400);
                    self.disconnect(link, Some(delay));
                }
                Output::Event(Event::PeerInterest(list)) => {
                    self.nodes[node].interest.set_peer(link, list);
                    self.refresh_interest(node);
                }
                Output::Event(Event::DocsChanged { .. }) => {
                    self.last_change = self.now;
                    self.local_change(node, Some(link));
                }
                Output::Event(Event::SubscriptionRejected(error)) => {
                    self.errors.push(format!("node {node}: {error}"));
                }
                Output::Event(_) => {}
            }
        }
    }

    fn local_change(&mut self, node: usize, except: Option<usize>) {
        let lsn = self.nodes[node].store.current_lsn();
        let links: Vec<usize> = self.nodes[node].sessions.keys().copied().collect();
        for other in links {
            if Some(other) != except {
                self.feed(node, other, Input::LocalChange { lsn });
            }
        }
    }

    fn transmit(&mut self, from: usize, link: usize, bytes: Vec<u8>) {
        self.report.frames += 1;
        self.report.bytes += bytes.len() as u64;
        let l = &self.links[link];
        if !l.connected {
            return;
        }
        let (to, conn) = (l.other(from), l.conn);
        if self.rng.chance(self.config.loss) {
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.config.latency_ms + self.rng.below(self.config.jitter_ms + 1);
            let ev = Ev::Deliver {
                link,
                conn,
                to,
                bytes: bytes.clone(),
            };
            self.at(self.now + delay, ev);
        }
    }

    /// One random local write on `node`, as the node's write path makes it.
    fn write(&mut self, node: usize) {
        let cars = CollectionName::new("cars").expect("valid");
        let trucks = CollectionName::new("trucks").expect("valid");
        let collection = if self.rng.chance(0.75) { cars } else { trucks };
        let held: Vec<(DocId, bool)> = self.nodes[node]
            .store
            .iter()
            .filter(|(c, _, _)| **c == collection)
            .map(|(_, id, state)| (id.clone(), state.is_live()))
            .collect();
        let live: Vec<DocId> = held
            .iter()
            .filter(|(_, l)| *l)
            .map(|(id, _)| id.clone())
            .collect();
        let dead: Vec<DocId> = held
            .iter()
            .filter(|(_, l)| !*l)
            .map(|(id, _)| id.clone())
            .collect();
        let roll = self.rng.below(100);
        enum Op {
            Insert(DocId),
            Update(DocId),
            Delete(DocId),
        }
        let op = if roll < 35 || live.is_empty() && dead.is_empty() {
            if self.rng.below(8) == 0 {
                // A natural id from a small pool shared by every node: inserted
                // independently on several nodes (docs/sync.md, "Independent inserts
                // of one id").
                let k = self.rng.below(SHARED_IDS);
                Op::Insert(DocId::from_string(format!("shared-{k}")).expect("valid"))
            } else {
                // A UUID, unique to its first writer like a generated one.
                let n = &mut self.nodes[node];
                n.next_doc += 1;
                let uuid = format!("00000000-0000-4000-8000-{:04x}{:08x}", node, n.next_doc);
                Op::Insert(DocId::from_string(uuid).expect("valid"))
            }
        } else if roll < 80 && !live.is_empty() {
            Op::Update(self.rng.pick(&live).clone())
        } else if roll < 90 && !live.is_empty() {
            Op::Delete(self.rng.pick(&live).clone())
        } else if !dead.is_empty() {
            Op::Insert(self.rng.pick(&dead).clone())
        } else {
            Op::Update(self.rng.pick(&live).clone())
        };
        let body = self.random_body();
        let mutations = self.random_mutations();
        let wall = EPOCH_MS + self.now + self.nodes[node].skew_ms;
        let n = &mut self.nodes[node];
        n.seq += 1;
        let dot = Dot {
            actor: n.actor,
            seq: n.seq,
        };
        let hlc = n.clock.tick(wall);
        let (id, delta) = match op {
            Op::Insert(id) => {
                let current = n.store.get(&collection, &id).cloned().unwrap_or_default();
                let ctx = WriteContext::for_document(&current, hlc, dot);
                (id, DocState::insert_delta(ctx, &body).expect("valid body"))
            }
            Op::Update(id) => {
                let current = n.store.get(&collection, &id).cloned().unwrap_or_default();
                let ctx = WriteContext::for_document(&current, hlc, dot);
                match current.update_delta(ctx, &mutations) {
                    Ok(delta) => (id, delta),
                    // INCREMENT of a field that holds a non-number: write a number instead.
                    Err(_) => {
                        let set = [Mutation::Set(Path::parse_dotted("trips"), json!(1))];
                        (
                            id,
                            current.update_delta(ctx, &set).expect("a set cannot fail"),
                        )
                    }
                }
            }
            Op::Delete(id) => {
                let current = n.store.get(&collection, &id).cloned().unwrap_or_default();
                let ctx = WriteContext::for_document(&current, hlc, dot);
                (id, DocState::delete_delta(ctx))
            }
        };
        self.trace(|| format!("node {node} writes {collection}/{id}"));
        self.nodes[node].store.merge(&collection, &id, &delta);
        self.report.writes += 1;
        self.last_change = self.now;
        self.local_change(node, None);
    }

    fn random_body(&mut self) -> Value {
        let color = *self.rng.pick(&["blue", "red", "green"]);
        let km = self.rng.below(8);
        let mut body =
            json!({"color": color, "km": km, "engine": {"hp": self.rng.between(50, 200)}});
        if self.rng.chance(0.5) {
            body["owner"] = json!(*self.rng.pick(&["ann", "bob"]));
        }
        if self.rng.chance(0.3) {
            body["trips"] = json!(self.rng.below(4));
        }
        if self.rng.chance(0.03) {
            // Larger than the smallest frame: travels in pieces.
            body["notes"] = json!(
                (0..25)
                    .map(|i| format!("note {i} {}", "x".repeat(90)))
                    .collect::<Vec<_>>()
            );
            body["log"] = json!({"a": "y".repeat(3_000), "b": "z".repeat(3_000)});
        }
        body
    }

    fn random_mutations(&mut self) -> Vec<Mutation> {
        let count = self.rng.between(1, 2);
        (0..count)
            .map(|_| match self.rng.below(7) {
                0 => Mutation::Set(
                    Path::parse_dotted("color"),
                    json!(*self.rng.pick(&["blue", "red", "green"])),
                ),
                1 => Mutation::Set(Path::parse_dotted("km"), json!(self.rng.below(8))),
                2 => Mutation::Unset(Path::parse_dotted("owner")),
                3 => Mutation::Set(
                    Path::parse_dotted("owner"),
                    json!(*self.rng.pick(&["ann", "bob"])),
                ),
                4 => Mutation::Set(
                    Path::parse_dotted("engine.hp"),
                    json!(self.rng.between(50, 200)),
                ),
                5 => Mutation::Restart(Path::parse_dotted("trips"), self.rng.below(3) as f64),
                _ => {
                    Mutation::Increment(Path::parse_dotted("trips"), self.rng.between(1, 3) as f64)
                }
            })
            .collect()
    }

    /// The connected components of the (healed) mesh.
    fn components(&self) -> Vec<Vec<usize>> {
        let mut seen = vec![false; self.nodes.len()];
        let mut components = Vec::new();
        for start in 0..self.nodes.len() {
            if seen[start] {
                continue;
            }
            let mut component = vec![start];
            seen[start] = true;
            let mut i = 0;
            while i < component.len() {
                let node = component[i];
                for link in &self.links {
                    if link.a == node || link.b == node {
                        let other = link.other(node);
                        if !seen[other] {
                            seen[other] = true;
                            component.push(other);
                        }
                    }
                }
                i += 1;
            }
            components.push(component);
        }
        components
    }

    /// Checks the convergence properties (see the module documentation).
    pub fn check(&self) -> Result<(), String> {
        for component in self.components() {
            let mut truth: BTreeMap<(CollectionName, DocId), DocState> = BTreeMap::new();
            for &node in &component {
                for (collection, id, state) in self.nodes[node].store.iter() {
                    truth
                        .entry((collection.clone(), id.clone()))
                        .or_default()
                        .merge(state);
                }
            }
            let subscribed = |node: usize, collection: &CollectionName, doc: &Value| {
                self.nodes[node]
                    .subs
                    .iter()
                    .any(|s| s.collection == *collection && s.matches_json(doc))
            };
            for &node in &component {
                let store = &self.nodes[node].store;
                // (1) Every document matching our subscriptions anywhere is here, exactly.
                for ((collection, id), state) in &truth {
                    let Some(expected) = state.to_json(id) else {
                        continue;
                    };
                    if !subscribed(node, collection, &expected) {
                        continue;
                    }
                    let ours = store.get(collection, id).and_then(|s| s.to_json(id));
                    if ours.as_ref() != Some(&expected) {
                        return Err(format!(
                            "node {node} (subscribed to {:?}) holds {collection}/{id} as {} but the latest state is {expected}",
                            self.config.subscriptions[node],
                            ours.map_or("nothing".to_owned(), |v| v.to_string())
                        ));
                    }
                }
                // ...and no live matching document is deleted or different elsewhere.
                for (collection, id, state) in store.iter() {
                    let Some(ours) = state.to_json(id) else {
                        continue;
                    };
                    if !subscribed(node, collection, &ours) {
                        continue;
                    }
                    let latest = truth[&(collection.clone(), id.clone())].to_json(id);
                    if latest.as_ref() != Some(&ours) {
                        return Err(format!(
                            "node {node} (subscribed to {:?}) holds {collection}/{id} as {ours}, which matches its subscription, but the latest state is {}",
                            self.config.subscriptions[node],
                            latest.map_or("deleted".to_owned(), |v| v.to_string())
                        ));
                    }
                }
            }
            // (2) Nodes agree on the documents both hold and subscribe to.
            let mut held: BTreeMap<(CollectionName, DocId), Vec<(usize, Value)>> = BTreeMap::new();
            for &node in &component {
                for (collection, id, state) in self.nodes[node].store.iter() {
                    if let Some(doc) = state.to_json(id)
                        && subscribed(node, collection, &doc)
                    {
                        held.entry((collection.clone(), id.clone()))
                            .or_default()
                            .push((node, doc));
                    }
                }
            }
            for ((collection, id), copies) in held {
                let distinct: BTreeSet<String> =
                    copies.iter().map(|(_, d)| d.to_string()).collect();
                if distinct.len() > 1 {
                    return Err(format!("nodes disagree on {collection}/{id}: {copies:?}"));
                }
            }
        }
        Ok(())
    }
}

/// A one-line description of a message for traces.
fn summary(message: &super::Message) -> String {
    use super::Message;
    match message {
        Message::Changes(c) => format!(
            "Changes {:?} ({}..{}] part {}/{} {:?}",
            c.batch,
            c.base,
            c.upto,
            c.part,
            c.parts,
            c.docs
                .iter()
                .map(|d| format!(
                    "{}{}{}",
                    d.id,
                    if d.matches { "" } else { "(nomatch)" },
                    match d.check {
                        super::frame::Check::Whole => "",
                        super::frame::Check::Digest(_) => "(partial)",
                        super::frame::Check::Shadow => "(shadow)",
                    }
                ))
                .collect::<Vec<_>>()
        ),
        Message::Want(w) => format!(
            "Want {:?}",
            w.docs.iter().map(|d| d.id.to_string()).collect::<Vec<_>>()
        ),
        Message::Docs(d) => format!(
            "Docs {:?}",
            d.docs
                .iter()
                .map(|d| format!(
                    "{}:{}",
                    d.id,
                    match d.reply {
                        super::frame::DocReply::State { .. } => "state",
                        super::frame::DocReply::Same => "same",
                        super::frame::DocReply::Missing => "missing",
                    }
                ))
                .collect::<Vec<_>>()
        ),
        Message::Pull(p) => format!("Pull {} base {} {:?}", p.pull_id, p.base, p.queries),
        Message::Subscribe(s) => format!(
            "Subscribe v{} {:?}",
            s.version,
            s.queries
                .iter()
                .map(|q| (&q.query, q.hops))
                .collect::<Vec<_>>()
        ),
        Message::Heads(h) => format!(
            "Heads {:?}",
            h.heads.iter().map(|(_, l)| *l).collect::<Vec<_>>()
        ),
        other => other.name().to_owned(),
    }
}

fn close_kind(reason: &CloseReason) -> String {
    let text = format!("{reason:?}");
    text.split(['(', ' ', '{']).next().unwrap_or("").to_owned()
}

/// The links of a topology.
fn topology_links(nodes: usize, topology: Topology, rng: &mut SimRng) -> Vec<(usize, usize)> {
    let mut links: Vec<(usize, usize)> = Vec::new();
    match topology {
        Topology::Line => links.extend((1..nodes).map(|i| (i - 1, i))),
        Topology::Ring => {
            links.extend((1..nodes).map(|i| (i - 1, i)));
            if nodes > 2 {
                links.push((0, nodes - 1));
            }
        }
        Topology::Star => links.extend((1..nodes).map(|i| (0, i))),
        Topology::Random => {
            for i in 1..nodes {
                links.push((rng.below(i as u64) as usize, i));
            }
            for _ in 0..rng.below(3) {
                let a = rng.below(nodes as u64) as usize;
                let b = rng.below(nodes as u64) as usize;
                if a != b && !links.contains(&(a.min(b), a.max(b))) {
                    links.push((a.min(b), a.max(b)));
                }
            }
        }
    }
    links
}
