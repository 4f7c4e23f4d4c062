//! The peer table: exactly one sync session per peer, whatever the number of links.
//!
//! Links arrive from libp2p (one per connection) or from elsewhere (Bluetooth LE later,
//! memory in tests) through [`Peers::add_link`]. The first link of a peer starts a
//! driver ([`super::driver`]) that owns the peer's session; later links join that
//! driver, which sends on the best one ([`choose_link`]: a link measured as several
//! times wider in bandwidth, else the lowest measured round-trip time, then QUIC over
//! TCP over BLE) and keeps going on the others when one is lost.
//! The table also keeps the node's [`InterestTable`]: when a peer's interest changes
//! (or a peer leaves) it recomputes the interest towards every other peer and hands it
//! to their drivers.
//!
//! Every driver runs in the table's `JoinSet` under a child of its `CancellationToken`,
//! so peers that come and go leave no task behind, and shutdown drains them all.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{self, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trellis_common::sync::frame::{BlobWant, Links};
use trellis_common::sync::{
    Interest, InterestTable, LocalHello, Lsn, SessionConfig, SessionStats, Subscription,
    SubscriptionError,
};

use super::driver::{
    self, DriverSetup, Ended, MeshEvent, Outcome, PeerStatus, Report, SharedStore,
};
use super::link::{Link, LinkKind, LinkSnapshot};
use super::swarm::{Client, NetEvent};

/// A link as the chooser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCandidate {
    /// The link's id within its peer.
    pub id: u64,
    /// What carries it.
    pub kind: LinkKind,
    /// Its measured round-trip time.
    pub rtt: Option<Duration>,
    /// The highest throughput measured on it (bytes per second, both directions), once
    /// enough data crossed it to tell ([`super::driver`] measures it).
    pub bandwidth: Option<u64>,
}

/// Round-trip times closer than this (or than a fifth of the larger) count as equal, so
/// measurement noise does not flip links back and forth.
const RTT_TOLERANCE: Duration = Duration::from_millis(2);

fn clearly_faster(a: Duration, b: Duration) -> bool {
    a + RTT_TOLERANCE.max(b / 5) < b
}

/// A measured bandwidth this many times another's wins whatever the round-trip times
/// (a Bluetooth link with a short ping is still no match for Wi-Fi on a bulk sync).
const BANDWIDTH_FACTOR: u64 = 4;

/// Orders candidates best first: a link measured as several times faster in bandwidth
/// wins; else a measured round-trip time beats none and a clearly lower one wins;
/// otherwise the link kind decides (QUIC, TCP, BLE), then the older link.
fn compare(a: &LinkCandidate, b: &LinkCandidate) -> Ordering {
    if let (Some(x), Some(y)) = (a.bandwidth, b.bandwidth) {
        if x >= y.saturating_mul(BANDWIDTH_FACTOR) {
            return Ordering::Less;
        }
        if y >= x.saturating_mul(BANDWIDTH_FACTOR) {
            return Ordering::Greater;
        }
    }
    match (a.rtt, b.rtt) {
        (Some(x), Some(y)) if clearly_faster(x, y) => return Ordering::Less,
        (Some(x), Some(y)) if clearly_faster(y, x) => return Ordering::Greater,
        (Some(_), None) => return Ordering::Less,
        (None, Some(_)) => return Ordering::Greater,
        _ => {}
    }
    a.kind.rank().cmp(&b.kind.rank()).then(a.id.cmp(&b.id))
}

/// The link to send on: the best candidate, but the current one is kept unless another
/// is strictly better (hysteresis).
pub fn choose_link(current: Option<u64>, links: &[LinkCandidate]) -> Option<u64> {
    let best = links.iter().min_by(|a, b| compare(a, b))?;
    match current.and_then(|id| links.iter().find(|l| l.id == id)) {
        Some(current) if compare(best, current) != Ordering::Less => Some(current.id),
        _ => Some(best.id),
    }
}

/// One link of a peer, for presence and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSummary {
    /// The link's id within its peer.
    pub id: u64,
    /// What carries it.
    pub kind: LinkKind,
    /// The remote end.
    pub remote: String,
    /// Its counters.
    pub stats: LinkSnapshot,
}

/// One peer with its session.
#[derive(Debug, Clone)]
pub struct PeerSummary {
    /// The peer.
    pub peer: PeerId,
    /// Its node id (once its hello arrived).
    pub node_id: Option<Vec<u8>>,
    /// Its links.
    pub links: Vec<LinkSummary>,
    /// The link we send on.
    pub chosen: Option<u64>,
    /// The session's counters.
    pub session: SessionStats,
    /// Whether the session has nothing in flight.
    pub idle: bool,
}

/// Settings of the session layer.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// Timers and limits of each session.
    pub session: SessionConfig,
    /// How often sessions get a `Tick` (and links are re-chosen).
    pub tick: Duration,
    /// Events kept for slow subscribers of [`Peers::events`] before they lag.
    pub event_capacity: usize,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            tick: Duration::from_millis(250),
            event_capacity: 1024,
        }
    }
}

/// Why a request to the peer table failed.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// A subscription query is not valid.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// The peer table has stopped.
    #[error("the peer table has stopped")]
    Stopped,
}

#[derive(Debug)]
enum Command {
    AddLink {
        peer: PeerId,
        link: Box<dyn Link>,
    },
    SetSubscriptions {
        queries: Vec<String>,
        reply: oneshot::Sender<()>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerSummary>>,
    },
    WantBlob {
        peer: PeerId,
        want: BlobWant,
        reply: oneshot::Sender<bool>,
    },
}

/// Commands waiting for the peer table.
const COMMAND_QUEUE: usize = 64;
/// Reports waiting from drivers.
const REPORT_QUEUE: usize = 256;
/// Links waiting for a driver.
const LINK_QUEUE: usize = 8;
/// Presence announcements queued per driver (a lagging driver skips some; nodes
/// re-announce every few seconds).
const GOSSIP_QUEUE: usize = 64;
/// Attachment requests queued per driver.
const BLOB_WANT_QUEUE: usize = 16;

/// A handle on the peer table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Peers {
    commands: mpsc::Sender<Command>,
    lsn: watch::Sender<Lsn>,
    events: broadcast::Sender<MeshEvent>,
    gossip: broadcast::Sender<Links>,
}

impl Peers {
    /// Starts the peer table in `tasks` (stopped by `cancel`). `net` is the libp2p
    /// side, when there is one: its links join the table, and a peer whose session is
    /// closed is disconnected there.
    pub fn spawn(
        store: SharedStore,
        local: LocalHello,
        config: PeersConfig,
        net: Option<(Client, mpsc::Receiver<NetEvent>)>,
        cancel: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let current = store.lock().current_lsn();
        let (lsn, _) = watch::channel(current);
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (gossip, _) = broadcast::channel(GOSSIP_QUEUE);
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (reports_tx, reports) = mpsc::channel(REPORT_QUEUE);
        let (client, net_events) = match net {
            Some((client, events)) => (Some(client), Some(events)),
            None => (None, None),
        };
        let table = Table {
            store,
            local,
            config,
            epoch: Instant::now(),
            lsn: lsn.clone(),
            events: events.clone(),
            gossip: gossip.clone(),
            reports_tx,
            drivers: HashMap::new(),
            tasks: JoinSet::new(),
            task_peers: HashMap::new(),
            interest: InterestTable::new(),
            generation: 0,
            cancel: cancel.clone(),
            client,
        };
        tasks.spawn(table.run(commands, reports, net_events));
        Self {
            commands: commands_tx,
            lsn,
            events,
            gossip,
        }
    }

    /// Sends a presence announcement to every peer but its origin (see
    /// [`super::presence`]).
    pub fn announce(&self, links: Links) {
        let _ = self.gossip.send(links);
    }

    /// Adds a link to a peer (its session starts with its first link).
    pub async fn add_link(&self, peer: PeerId, link: Box<dyn Link>) -> Result<(), PeersError> {
        self.send(Command::AddLink { peer, link }).await
    }

    /// Tells every session that the store changed (a local write) up to `lsn`.
    pub fn notify_local_change(&self, lsn: Lsn) {
        self.lsn.send_if_modified(|current| {
            let newer = lsn > *current;
            if newer {
                *current = lsn;
            }
            newer
        });
    }

    /// Replaces the node's own subscriptions (query texts; each must be a `SELECT`
    /// without parameters). The interest towards every peer is recomputed.
    pub async fn set_subscriptions(&self, queries: Vec<String>) -> Result<(), PeersError> {
        for query in &queries {
            Subscription::parse(query)?;
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetSubscriptions { queries, reply })
            .await?;
        rx.await.map_err(|_| PeersError::Stopped)
    }

    /// Asks `peer` for chunks of an attachment; the chunks arrive as
    /// `Event::BlobChunk` events. Returns whether the request was handed to the peer's
    /// session (false: no session, or too many requests queued).
    pub async fn want_blob(&self, peer: PeerId, want: BlobWant) -> Result<bool, PeersError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::WantBlob { peer, want, reply }).await?;
        rx.await.map_err(|_| PeersError::Stopped)
    }

    /// The peers with a session, and their links.
    pub async fn peers(&self) -> Result<Vec<PeerSummary>, PeersError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Peers { reply }).await?;
        rx.await.map_err(|_| PeersError::Stopped)
    }

    /// Events of every session. A subscriber that falls behind by more than the
    /// configured capacity gets `Lagged` and should re-read the store.
    pub fn events(&self) -> broadcast::Receiver<MeshEvent> {
        self.events.subscribe()
    }

    async fn send(&self, command: Command) -> Result<(), PeersError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| PeersError::Stopped)
    }
}

struct DriverEntry {
    generation: u64,
    links: mpsc::Sender<Box<dyn Link>>,
    blob_wants: mpsc::Sender<BlobWant>,
    interest: watch::Sender<Vec<Interest>>,
    status: Arc<Mutex<PeerStatus>>,
}

struct Table {
    store: SharedStore,
    local: LocalHello,
    config: PeersConfig,
    epoch: Instant,
    lsn: watch::Sender<Lsn>,
    events: broadcast::Sender<MeshEvent>,
    gossip: broadcast::Sender<Links>,
    reports_tx: mpsc::Sender<Report>,
    drivers: HashMap<PeerId, DriverEntry>,
    tasks: JoinSet<Ended>,
    task_peers: HashMap<task::Id, (PeerId, u64)>,
    interest: InterestTable<PeerId>,
    generation: u64,
    cancel: CancellationToken,
    client: Option<Client>,
}

impl Table {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut reports: mpsc::Receiver<Report>,
        mut net_events: Option<mpsc::Receiver<NetEvent>>,
    ) {
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok((id, ended)) => self.on_ended(id, ended).await,
                        Err(error) => {
                            let id = error.id();
                            tracing::error!(%error, "a sync driver failed");
                            self.on_ended(id, Ended { outcome: Outcome::Closed(error.to_string()), leftover: Vec::new() }).await;
                        }
                    }
                }
                Some(report) = reports.recv() => self.on_report(report),
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(event) = async { net_events.as_mut().expect("guarded").recv().await }, if net_events.is_some() => {
                    if let NetEvent::Link { peer, link } = event {
                        self.add_link(peer, link);
                    }
                }
            }
        }
        // Drivers watch a child of our token: they are stopping; wait for them.
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::AddLink { peer, link } => self.add_link(peer, link),
            Command::SetSubscriptions { queries, reply } => {
                self.interest.set_own(queries);
                self.refresh_interest();
                let _ = reply.send(());
            }
            Command::WantBlob { peer, want, reply } => {
                let sent = self
                    .drivers
                    .get(&peer)
                    .is_some_and(|entry| entry.blob_wants.try_send(want).is_ok());
                let _ = reply.send(sent);
            }
            Command::Peers { reply } => {
                let mut list: Vec<PeerSummary> = self
                    .drivers
                    .iter()
                    .map(|(peer, entry)| {
                        let status = entry.status.lock().clone();
                        PeerSummary {
                            peer: *peer,
                            node_id: status.node_id,
                            links: status.links,
                            chosen: status.chosen,
                            session: status.session,
                            idle: status.idle,
                        }
                    })
                    .collect();
                list.sort_by_key(|p| p.peer);
                let _ = reply.send(list);
            }
        }
    }

    fn add_link(&mut self, peer: PeerId, link: Box<dyn Link>) {
        if let Some(entry) = self.drivers.get(&peer) {
            match entry.links.try_send(link) {
                Ok(()) => return,
                // The driver is ending: a fresh one takes the link.
                Err(mpsc::error::TrySendError::Closed(link)) => {
                    self.drivers.remove(&peer);
                    self.start_driver(peer, link);
                }
                Err(mpsc::error::TrySendError::Full(link)) => {
                    tracing::warn!(%peer, remote = %link.remote(), "too many links waiting for a peer; link dropped");
                }
            }
            return;
        }
        self.start_driver(peer, link);
    }

    fn start_driver(&mut self, peer: PeerId, link: Box<dyn Link>) {
        self.generation += 1;
        let generation = self.generation;
        let (links_tx, links) = mpsc::channel(LINK_QUEUE);
        let (blob_wants_tx, blob_wants) = mpsc::channel(BLOB_WANT_QUEUE);
        let (interest_tx, interest) = watch::channel(self.interest.toward(&peer));
        let status = Arc::new(Mutex::new(PeerStatus::default()));
        let setup = DriverSetup {
            peer,
            generation,
            store: self.store.clone(),
            session: self.config.session.clone(),
            local: self.local.clone(),
            epoch: self.epoch,
            tick: self.config.tick,
            lsn: self.lsn.clone(),
            interest,
            links,
            blob_wants,
            reports: self.reports_tx.clone(),
            events: self.events.clone(),
            gossip: self.gossip.subscribe(),
            status: status.clone(),
            cancel: self.cancel.child_token(),
        };
        tracing::debug!(%peer, generation, "session starting");
        let handle = self.tasks.spawn(driver::run(setup, link));
        self.task_peers.insert(handle.id(), (peer, generation));
        self.drivers.insert(
            peer,
            DriverEntry {
                generation,
                links: links_tx,
                blob_wants: blob_wants_tx,
                interest: interest_tx,
                status,
            },
        );
    }

    async fn on_ended(&mut self, id: task::Id, ended: Ended) {
        let Some((peer, generation)) = self.task_peers.remove(&id) else {
            return;
        };
        if self
            .drivers
            .get(&peer)
            .is_some_and(|e| e.generation == generation)
        {
            self.drivers.remove(&peer);
            self.interest.remove_peer(&peer);
            self.refresh_interest();
        }
        let reason = match &ended.outcome {
            Outcome::Closed(reason) => Some(reason.clone()),
            Outcome::NoLinks | Outcome::Shutdown => None,
        };
        tracing::debug!(%peer, generation, outcome = ?ended.outcome, "session ended");
        if ended.outcome == Outcome::Shutdown {
            return;
        }
        let _ = self.events.send(MeshEvent::PeerDown {
            peer,
            reason: reason.clone(),
        });
        if reason.is_some()
            && let Some(client) = &self.client
        {
            // Its connections carry no session any more; a fresh connection (a redial)
            // starts a fresh one.
            let _ = client.disconnect(peer).await;
        }
        for link in ended.leftover {
            self.add_link(peer, link);
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Interest {
                peer,
                generation,
                interest,
            } => {
                if self
                    .drivers
                    .get(&peer)
                    .is_some_and(|e| e.generation == generation)
                {
                    self.interest.set_peer(peer, interest);
                    self.refresh_interest();
                }
            }
        }
    }

    /// Recomputes the interest towards every peer and hands changes to their drivers.
    fn refresh_interest(&mut self) {
        for (peer, entry) in &self.drivers {
            let toward = self.interest.toward(peer);
            entry.interest.send_if_modified(|current| {
                let changed = *current != toward;
                if changed {
                    *current = toward;
                }
                changed
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u64, kind: LinkKind, rtt_ms: Option<u64>) -> LinkCandidate {
        LinkCandidate {
            id,
            kind,
            rtt: rtt_ms.map(Duration::from_millis),
            bandwidth: None,
        }
    }

    #[test]
    fn a_link_measured_several_times_wider_wins_over_a_quicker_ping() {
        let ble = LinkCandidate {
            bandwidth: Some(20_000),
            ..link(0, LinkKind::Ble, Some(5))
        };
        let wifi = LinkCandidate {
            bandwidth: Some(2_000_000),
            ..link(1, LinkKind::Tcp, Some(30))
        };
        assert_eq!(choose_link(Some(0), &[ble, wifi]), Some(1));
        // Within the factor, the round-trip time decides as before.
        let close = LinkCandidate {
            bandwidth: Some(60_000),
            ..link(1, LinkKind::Tcp, Some(30))
        };
        assert_eq!(choose_link(None, &[ble, close]), Some(0));
        // Unmeasured bandwidth: round-trip time, then kind.
        assert_eq!(
            choose_link(
                None,
                &[
                    link(0, LinkKind::Ble, Some(5)),
                    link(1, LinkKind::Tcp, Some(30))
                ]
            ),
            Some(0)
        );
    }

    #[test]
    fn the_lowest_rtt_wins_then_the_link_kind() {
        let links = [
            link(0, LinkKind::Tcp, Some(40)),
            link(1, LinkKind::Ble, Some(10)),
        ];
        assert_eq!(choose_link(None, &links), Some(1));
        let links = [
            link(0, LinkKind::Tcp, Some(10)),
            link(1, LinkKind::Quic, Some(11)),
        ];
        assert_eq!(choose_link(None, &links), Some(1), "equal RTTs: QUIC first");
        let links = [
            link(0, LinkKind::Tcp, None),
            link(1, LinkKind::Ble, Some(90)),
        ];
        assert_eq!(choose_link(None, &links), Some(1), "a measured link first");
        assert_eq!(choose_link(None, &[]), None);
    }

    #[test]
    fn the_current_link_is_kept_unless_another_is_clearly_better() {
        let links = [
            link(0, LinkKind::Tcp, Some(10)),
            link(1, LinkKind::Tcp, Some(9)),
        ];
        assert_eq!(choose_link(Some(0), &links), Some(0));
        let links = [
            link(0, LinkKind::Tcp, Some(50)),
            link(1, LinkKind::Tcp, Some(9)),
        ];
        assert_eq!(choose_link(Some(0), &links), Some(1));
        let links = [link(1, LinkKind::Tcp, Some(9))];
        assert_eq!(
            choose_link(Some(0), &links),
            Some(1),
            "a lost link is replaced"
        );
    }
}
