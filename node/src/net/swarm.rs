//! The libp2p swarm as a [`Client`] / [`EventLoop`] / [`NetEvent`] triple: commands with
//! oneshot replies go in through the client, events (new sync links above all) come out
//! of a bounded channel, and the event loop owns the swarm.
//!
//! Transports: TCP (Noise, Yamux) and QUIC. Behaviours: connection limits (2 per peer,
//! so two nodes dialling each other at once keep both connections; the session layer
//! makes them one peer), identify, ping (its round-trip time per connection feeds the
//! link choice), mDNS (optional; a hint: discovered peers are dialled once), and the
//! sync protocol ([`super::protocol`]). Static peers are dialled at start and again
//! with capped, jittered exponential backoff whenever they are not connected.
//!
//! Every dial takes a new local port. libp2p's default reuses the listening port, and
//! then two nodes dialling each other at the same moment can meet in a TCP
//! simultaneous open: one connection on which both sides start Noise as the initiator,
//! so both dials fail (seen on loopback). We do no hole punching, so nothing is lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, connection_limits, identify, mdns, noise, ping, tcp,
    yamux,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::link::{Link, LinkStats, StreamLink};
use super::protocol::{SyncBehaviour, SyncStreamEvent};

/// Settings of the libp2p side.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on (TCP and/or QUIC multiaddrs).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start and keep dialling (with or without `/p2p/<id>`).
    pub static_peers: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// How long a connection without streams stays open. The sync stream keeps a
    /// connection busy, so this only closes connections that lost their session.
    pub idle_timeout: Duration,
    /// The largest sync frame, both directions (the session's limit).
    pub max_frame_bytes: u32,
    /// Connections kept per peer (2: both sides may dial at once).
    pub max_connections_per_peer: u32,
    /// Connections kept in all.
    pub max_connections: u32,
    /// The first redial delay of a static peer.
    pub backoff_initial: Duration,
    /// The longest redial delay.
    pub backoff_max: Duration,
    /// How often libp2p ping measures each connection.
    pub ping_interval: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("a valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("a valid multiaddr"),
            ],
            static_peers: Vec::new(),
            mdns: true,
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: trellis_common::sync::frame::DEFAULT_MAX_FRAME_BYTES,
            max_connections_per_peer: 2,
            max_connections: 256,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            ping_interval: Duration::from_secs(5),
        }
    }
}

/// Failures of the libp2p side.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The transport could not be built.
    #[error("building the libp2p transport: {0}")]
    Transport(String),
    /// A listen address was refused.
    #[error("cannot listen on {addr} (mesh.listen): {error}; is another node using the port?")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        error: String,
    },
    /// A dial failed at once.
    #[error("cannot dial {addr}: {error}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        error: String,
    },
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
}

/// The behaviours of the swarm.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "BehaviourEvent")]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    sync: SyncBehaviour,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

/// What the behaviours report.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum BehaviourEvent {
    /// Identify.
    Identify(Box<identify::Event>),
    /// A ping result.
    Ping(ping::Event),
    /// mDNS discovery.
    Mdns(mdns::Event),
    /// A sync stream.
    Sync(SyncStreamEvent),
}

impl From<std::convert::Infallible> for BehaviourEvent {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<identify::Event> for BehaviourEvent {
    fn from(event: identify::Event) -> Self {
        BehaviourEvent::Identify(Box::new(event))
    }
}

impl From<ping::Event> for BehaviourEvent {
    fn from(event: ping::Event) -> Self {
        BehaviourEvent::Ping(event)
    }
}

impl From<mdns::Event> for BehaviourEvent {
    fn from(event: mdns::Event) -> Self {
        BehaviourEvent::Mdns(event)
    }
}

impl From<SyncStreamEvent> for BehaviourEvent {
    fn from(event: SyncStreamEvent) -> Self {
        BehaviourEvent::Sync(event)
    }
}

/// Builds the swarm: TCP + QUIC, Noise, Yamux and the behaviours above, with the node's
/// identity. Public so tests can drive a bare swarm (a misbehaving peer).
pub fn build_swarm(keypair: Keypair, config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_established(Some(config.max_connections));
    let ping_config = ping::Config::new().with_interval(config.ping_interval);
    let mdns_on = config.mdns;
    let idle = config.idle_timeout;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let mdns = if mdns_on {
                match mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    key.public().to_peer_id(),
                ) {
                    Ok(mdns) => Some(mdns),
                    Err(error) => {
                        tracing::warn!(%error, "mDNS unavailable; static peers only");
                        None
                    }
                }
            } else {
                None
            };
            Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/trellis/1".to_owned(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping_config),
                mdns: Toggle::from(mdns),
                sync: SyncBehaviour::default(),
            }
        })
        .map_err(|e| NetError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// What the event loop reports.
#[derive(Debug)]
pub enum NetEvent {
    /// A sync link to a peer is up (one per connection).
    Link {
        /// The peer.
        peer: PeerId,
        /// The link.
        link: Box<dyn Link>,
    },
    /// We are connected to a peer (its first connection).
    PeerConnected(PeerId),
    /// The last connection to a peer closed.
    PeerDisconnected(PeerId),
}

#[derive(Debug)]
enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Disconnect {
        peer: PeerId,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// Commands to the event loop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl Client {
    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Dials an address once (no redial; see [`NetConfig::static_peers`] for that).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { addr, reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Closes every connection to a peer.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.send(Command::Disconnect { peer }).await
    }

    /// The addresses we listen on (empty until the listeners are up).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenAddrs { reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The peers we have at least one connection to.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ConnectedPeers { reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    async fn send(&self, command: Command) -> Result<(), NetError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetError::Stopped)
    }
}

/// Commands waiting for the event loop.
const COMMAND_QUEUE: usize = 64;
/// Events waiting for their consumer (the event loop keeps polling the swarm meanwhile).
const EVENT_QUEUE: usize = 64;
/// How often static peers are checked for a due redial.
const REDIAL_CHECK: Duration = Duration::from_millis(200);

#[derive(Debug)]
enum StaticState {
    Waiting { due: Instant },
    Dialing(ConnectionId),
    Connected(PeerId),
}

#[derive(Debug)]
struct StaticPeer {
    addr: Multiaddr,
    state: StaticState,
    failures: u32,
}

/// Owns the swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    outbox: VecDeque<NetEvent>,
    statics: Vec<StaticPeer>,
    stats: HashMap<ConnectionId, Arc<LinkStats>>,
    listen_addrs: Vec<Multiaddr>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("peer_id", self.swarm.local_peer_id())
            .field("statics", &self.statics)
            .finish_non_exhaustive()
    }
}

/// libp2p opens TCP listeners with `SO_REUSEPORT`, so a second node configured with the
/// same TCP port would share it silently (the kernel spreading connections between
/// them). A plain bind first, released at once, fails as it should when the port is
/// taken.
fn check_tcp_port_free(addr: &Multiaddr) -> Result<(), NetError> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => std::net::TcpListener::bind((ip, port))
            .map(drop)
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                error: e.to_string(),
            }),
        _ => Ok(()),
    }
}

/// An error's message and its sources (some transport errors say nothing at the top).
fn describe(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.trim().is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        format!("{error:?}")
    } else {
        parts.join(": ")
    }
}

/// Builds the swarm, starts listening, and returns the client, the event loop (to be
/// run) and the events.
pub fn new(
    keypair: Keypair,
    config: NetConfig,
) -> Result<(Client, EventLoop, mpsc::Receiver<NetEvent>), NetError> {
    let mut swarm = build_swarm(keypair, &config)?;
    for addr in &config.listen {
        check_tcp_port_free(addr)?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                error: describe(&e),
            })?;
    }
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let now = Instant::now();
    let statics = config
        .static_peers
        .iter()
        .map(|addr| StaticPeer {
            addr: addr.clone(),
            state: StaticState::Waiting { due: now },
            failures: 0,
        })
        .collect();
    let client = Client {
        commands: commands_tx,
        peer_id: *swarm.local_peer_id(),
    };
    let event_loop = EventLoop {
        swarm,
        config,
        commands,
        events,
        outbox: VecDeque::new(),
        statics,
        stats: HashMap::new(),
        listen_addrs: Vec::new(),
    };
    Ok((client, event_loop, events_rx))
}

/// The delay before redial number `failures` (1-based): doubling from the initial delay,
/// capped, with ±25% jitter so peers that lost each other do not redial in lockstep.
pub fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = initial.saturating_mul(1 << exp).min(max);
    let jitter = (getrandom::u32().unwrap_or(0) % 1000) as f64 / 1000.0;
    base.mul_f64(0.75 + 0.5 * jitter)
}

impl EventLoop {
    /// Runs until `cancel` fires (or the client and events are all dropped); the swarm
    /// and its connections are closed when it returns.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut redial = tokio::time::interval(REDIAL_CHECK);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let events = self.events.clone();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                permit = events.reserve(), if !self.outbox.is_empty() => {
                    let Ok(permit) = permit else { break };
                    if let Some(event) = self.outbox.pop_front() {
                        permit.send(event);
                    }
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = redial.tick() => self.redial_due(),
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "network event loop stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { addr, reply } => {
                let opts = DialOpts::unknown_peer_id()
                    .address(addr.clone())
                    .allocate_new_port()
                    .build();
                let result = self.swarm.dial(opts).map_err(|e| NetError::Dial {
                    addr,
                    error: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn redial_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.statics.len() {
            let StaticState::Waiting { due } = self.statics[i].state else {
                continue;
            };
            if due > now {
                continue;
            }
            let opts = DialOpts::unknown_peer_id()
                .address(self.statics[i].addr.clone())
                .allocate_new_port()
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => self.statics[i].state = StaticState::Dialing(id),
                Err(error) => {
                    tracing::debug!(addr = %self.statics[i].addr, %error, "static peer dial refused");
                    self.static_failed(i);
                }
            }
        }
    }

    fn static_failed(&mut self, i: usize) {
        let peer = &mut self.statics[i];
        peer.failures = peer.failures.saturating_add(1);
        let delay = backoff(
            self.config.backoff_initial,
            self.config.backoff_max,
            peer.failures,
        );
        peer.state = StaticState::Waiting {
            due: Instant::now() + delay,
        };
    }

    fn emit(&mut self, event: NetEvent) {
        self.outbox.push_back(event);
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                for s in &mut self.statics {
                    if matches!(s.state, StaticState::Dialing(id) if id == connection_id) {
                        s.state = StaticState::Connected(peer_id);
                        s.failures = 0;
                    }
                }
                if num_established.get() == 1 {
                    self.emit(NetEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "connection closed");
                self.stats.remove(&connection_id);
                if num_established == 0 {
                    let due = Instant::now() + self.config.backoff_initial;
                    for s in &mut self.statics {
                        if matches!(s.state, StaticState::Connected(p) if p == peer_id) {
                            s.state = StaticState::Waiting { due };
                        }
                    }
                    self.emit(NetEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some(i) = self.statics.iter().position(
                    |s| matches!(s.state, StaticState::Dialing(id) if id == connection_id),
                ) {
                    tracing::debug!(addr = %self.statics[i].addr, %error, "static peer unreachable");
                    self.static_failed(i);
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Sync(SyncStreamEvent::Opened {
                peer,
                connection,
                kind,
                remote,
                stream,
            }) => {
                let stats = self.stats.entry(connection).or_default().clone();
                let link = StreamLink::with_stats(
                    stream.compat(),
                    kind,
                    remote.to_string(),
                    self.config.max_frame_bytes,
                    stats,
                );
                self.emit(NetEvent::Link {
                    peer,
                    link: Box::new(link),
                });
            }
            BehaviourEvent::Sync(SyncStreamEvent::Failed { peer, error, .. }) => {
                tracing::debug!(%peer, %error, "no sync stream on a connection");
            }
            BehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(rtt),
                ..
            }) => {
                self.stats.entry(connection).or_default().set_rtt(rtt);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
                        continue;
                    }
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .allocate_new_port()
                        .build();
                    if let Err(error) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, %error, "mDNS peer dial refused");
                    }
                }
            }
            _ => {}
        }
    }
}
