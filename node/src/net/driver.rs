//! The driver: one task per peer that runs that peer's `common::sync::Session` over the
//! peer's links against the node's shared store.
//!
//! It feeds the session `Connected` (once, on the first link), every frame from any of
//! the peer's links, a `Tick` on a timer, `LocalChange` when the store's LSN moves (a
//! watch channel bumped by whoever writes, and by every driver whose session merged
//! something) and `SetSubscriptions` when the interest towards this peer changes (a
//! watch channel kept by [`super::peers`]). It sends the session's frames on the
//! chosen link ([`super::peers::choose_link`]); when that link goes, it continues on
//! another (the session tolerates the frames lost in the switch: it retries). A
//! `Close` from the session, or a link that breaks the framing rules, ends the session
//! with a logged reason; the other peers' drivers are unaffected.
//!
//! Session calls run on the blocking pool (`spawn_blocking`): a store behind the
//! `SyncStore` trait may do disk I/O. Inputs that queued up meanwhile go in one call.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trellis_common::sync::frame::{BlobWant, Links};
use trellis_common::sync::{
    CloseReason, Event, Hello, Input, Interest, LocalHello, Lsn, Output, Session, SessionConfig,
    SessionStats, SyncStore,
};

use super::link::{FrameReceiver, FrameSender, Link, LinkError, LinkKind, LinkStats};
use super::peers::{LinkCandidate, LinkSummary, choose_link};

/// The node's store as the sync layer sees it: one store shared by every session.
pub type SharedStore = Arc<Mutex<dyn SyncStore + Send>>;

/// What the mesh tells the node.
#[derive(Debug, Clone)]
pub enum MeshEvent {
    /// A session's handshake completed.
    PeerUp {
        /// The peer.
        peer: PeerId,
        /// Its hello.
        hello: Hello,
    },
    /// A session ended.
    PeerDown {
        /// The peer.
        peer: PeerId,
        /// Why it was closed; `None` when its last link went away.
        reason: Option<String>,
    },
    /// An event of a session (documents changed, caught up, presence, ...).
    Sync {
        /// The peer.
        peer: PeerId,
        /// The event.
        event: Event,
    },
}

/// What a driver publishes about its peer (read by [`super::peers::Peers::peers`]).
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    /// The peer's node id, once its hello arrived.
    pub node_id: Option<Vec<u8>>,
    /// The peer's links.
    pub links: Vec<LinkSummary>,
    /// The link frames are sent on.
    pub chosen: Option<u64>,
    /// The session's counters.
    pub session: SessionStats,
    /// Whether the session has nothing in flight.
    pub idle: bool,
}

/// How a driver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its last link went away.
    NoLinks,
    /// The session was closed (by either side, or for a broken link rule).
    Closed(String),
    /// The node is shutting down.
    Shutdown,
}

/// A driver's last words: links handed to it while it was ending are returned, so a
/// peer that reconnected at that moment gets a fresh session.
pub(crate) struct Ended {
    pub(crate) outcome: Outcome,
    pub(crate) leftover: Vec<Box<dyn Link>>,
}

impl fmt::Debug for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ended")
            .field("outcome", &self.outcome)
            .field("leftover", &self.leftover.len())
            .finish()
    }
}

/// What a driver tells the peer table.
#[derive(Debug)]
pub(crate) enum Report {
    /// The peer's interest changed.
    Interest {
        peer: PeerId,
        generation: u64,
        interest: Vec<Interest>,
    },
}

/// Everything a driver needs.
pub(crate) struct DriverSetup {
    pub(crate) peer: PeerId,
    pub(crate) generation: u64,
    pub(crate) store: SharedStore,
    pub(crate) session: SessionConfig,
    pub(crate) local: LocalHello,
    pub(crate) epoch: Instant,
    pub(crate) tick: Duration,
    pub(crate) lsn: watch::Sender<Lsn>,
    pub(crate) interest: watch::Receiver<Vec<Interest>>,
    pub(crate) links: mpsc::Receiver<Box<dyn Link>>,
    pub(crate) blob_wants: mpsc::Receiver<BlobWant>,
    pub(crate) reports: mpsc::Sender<Report>,
    pub(crate) events: broadcast::Sender<MeshEvent>,
    pub(crate) gossip: broadcast::Receiver<Links>,
    pub(crate) status: Arc<Mutex<PeerStatus>>,
    pub(crate) cancel: CancellationToken,
}

/// Frames queued per link writer.
const WRITE_QUEUE: usize = 32;
/// Frames queued from the link readers.
const READ_QUEUE: usize = 128;
/// Frames waiting for the link beyond this many bytes stop the pushes and timers that
/// make more (answers to the peer's requests still go out): the session's output stays
/// bounded however slow the link.
const MAX_OUTBOX_BYTES: usize = 16 << 20;
/// Inputs handed to the session in one blocking call, at most.
const BATCH: usize = 64;
/// How long a closing session may take to flush its `Goodbye`.
const FLUSH_ON_CLOSE: Duration = Duration::from_millis(500);

enum LinkMsg {
    Frame(Vec<u8>),
    Down(u64, LinkError),
}

struct ActiveLink {
    kind: LinkKind,
    remote: String,
    stats: Arc<LinkStats>,
    writer: mpsc::Sender<Vec<u8>>,
    reader_cancel: CancellationToken,
    throughput: Throughput,
}

/// The highest throughput seen on a link: bytes both ways per tick, counted only for
/// ticks that moved at least [`Throughput::MIN_SAMPLE`] bytes (pings and heads say
/// nothing about capacity).
struct Throughput {
    last_bytes: u64,
    last_at: Instant,
    peak: Option<u64>,
}

impl Throughput {
    const MIN_SAMPLE: u64 = 64 * 1024;

    fn new(stats: &LinkStats) -> Self {
        let snapshot = stats.snapshot();
        Self {
            last_bytes: snapshot.bytes_in + snapshot.bytes_out,
            last_at: Instant::now(),
            peak: None,
        }
    }

    fn sample(&mut self, stats: &LinkStats) {
        let snapshot = stats.snapshot();
        let bytes = snapshot.bytes_in + snapshot.bytes_out;
        let moved = bytes.saturating_sub(self.last_bytes);
        let secs = self.last_at.elapsed().as_secs_f64();
        self.last_bytes = bytes;
        self.last_at = Instant::now();
        if moved >= Self::MIN_SAMPLE && secs > 0.0 {
            let rate = (moved as f64 / secs) as u64;
            self.peak = Some(self.peak.map_or(rate, |p| p.max(rate)));
        }
    }
}

struct Driver {
    setup: DriverSetup,
    session: Option<Session>,
    links: BTreeMap<u64, ActiveLink>,
    next_link: u64,
    chosen: Option<u64>,
    tasks: JoinSet<()>,
    frames_tx: mpsc::Sender<LinkMsg>,
    outbox: VecDeque<Vec<u8>>,
    /// Bytes in `outbox`.
    outbox_bytes: usize,
    progress: SyncProgress,
}

/// Documents received from the peer, for the progress lines a long sync logs.
struct SyncProgress {
    /// Since the session started or last caught up.
    received: u64,
    logged_at: Instant,
    started_at: Instant,
}

/// A sync that receives documents for longer than this logs its progress, this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl SyncProgress {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            received: 0,
            logged_at: now,
            started_at: now,
        }
    }

    fn on_docs(&mut self, peer: PeerId, count: usize) {
        if self.received == 0 {
            self.started_at = Instant::now();
            self.logged_at = self.started_at;
        }
        self.received += count as u64;
        if self.logged_at.elapsed() >= PROGRESS_EVERY {
            self.logged_at = Instant::now();
            let secs = self.started_at.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                %peer,
                documents = self.received,
                per_second = (self.received as f64 / secs) as u64,
                "syncing: documents received so far"
            );
        }
    }

    fn on_caught_up(&mut self, peer: PeerId) {
        // Only a sync long enough to have logged progress says it finished.
        if self.logged_at > self.started_at {
            tracing::info!(
                %peer,
                documents = self.received,
                seconds = self.started_at.elapsed().as_secs_f64(),
                "caught up with the peer"
            );
        }
        self.received = 0;
    }
}

/// Runs a peer's session until it closes, its last link goes, or `cancel` fires.
pub(crate) async fn run(setup: DriverSetup, first: Box<dyn Link>) -> Ended {
    let (frames_tx, mut frames_rx) = mpsc::channel(READ_QUEUE);
    let session = Session::new(setup.session.clone(), setup.local.clone());
    let mut driver = Driver {
        setup,
        session: Some(session),
        links: BTreeMap::new(),
        next_link: 0,
        chosen: None,
        tasks: JoinSet::new(),
        frames_tx,
        outbox: VecDeque::new(),
        outbox_bytes: 0,
        progress: SyncProgress::new(),
    };
    driver.add_link(first);
    let outcome = driver.run(&mut frames_rx).await;
    driver.finish(outcome).await
}

impl Driver {
    async fn run(&mut self, frames_rx: &mut mpsc::Receiver<LinkMsg>) -> Outcome {
        let peer = self.setup.peer;
        let mut lsn_rx = self.setup.lsn.subscribe();
        let initial = self.setup.interest.borrow_and_update().clone();
        let mut inputs = vec![Input::Connected, Input::SetSubscriptions(initial)];
        let mut ticker = tokio::time::interval(self.setup.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !inputs.is_empty() {
                let batch = std::mem::take(&mut inputs);
                if let Err(outcome) = self.process(batch).await {
                    return outcome;
                }
            }
            let writer = self
                .chosen
                .and_then(|id| self.links.get(&id))
                .map(|l| l.writer.clone());
            let can_write = writer.is_some() && !self.outbox.is_empty();
            tokio::select! {
                biased;
                () = self.setup.cancel.cancelled() => return Outcome::Shutdown,
                permit = async { writer.as_ref().expect("guarded").reserve().await }, if can_write => {
                    match permit {
                        Ok(permit) => {
                            if let Some(frame) = self.outbox.pop_front() {
                                self.outbox_bytes -= frame.len();
                                permit.send(frame);
                            }
                        }
                        // The writer ended: its link is gone.
                        Err(_) => {
                            if let Some(id) = self.chosen
                                && let Some(outcome) = self.link_down(id, &LinkError::Closed)
                            {
                                return outcome;
                            }
                        }
                    }
                }
                msg = frames_rx.recv() => {
                    let Some(msg) = msg else { return Outcome::NoLinks };
                    let mut next = Some(msg);
                    while let Some(msg) = next.take() {
                        match msg {
                            LinkMsg::Frame(bytes) => inputs.push(Input::Frame(bytes)),
                            LinkMsg::Down(id, error) => {
                                if let Some(outcome) = self.link_down(id, &error) {
                                    return outcome;
                                }
                            }
                        }
                        if inputs.len() < BATCH {
                            next = frames_rx.try_recv().ok();
                        }
                    }
                }
                link = self.setup.links.recv() => match link {
                    Some(link) => self.add_link(link),
                    None => return Outcome::Shutdown,
                },
                _ = ticker.tick(), if self.outbox_bytes < MAX_OUTBOX_BYTES => {
                    inputs.push(Input::Tick);
                    self.reselect();
                }
                // While the link is behind, local changes wait in the watch, which keeps
                // only the latest LSN: the next push covers them all at once.
                changed = lsn_rx.changed(), if self.outbox_bytes < MAX_OUTBOX_BYTES => {
                    if changed.is_err() {
                        return Outcome::Shutdown;
                    }
                    let lsn = *lsn_rx.borrow_and_update();
                    inputs.push(Input::LocalChange { lsn });
                }
                Some(want) = self.setup.blob_wants.recv() => inputs.push(Input::WantBlob(want)),
                links = self.setup.gossip.recv() => match links {
                    Ok(links) => {
                        // Not back to the node that announced it.
                        let origin = self.setup.status.lock().node_id.clone();
                        if origin.as_ref() != Some(&links.origin) {
                            inputs.push(Input::SendLinks(links));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Outcome::Shutdown,
                },
                changed = self.setup.interest.changed() => {
                    if changed.is_err() {
                        return Outcome::Shutdown;
                    }
                    let interest = self.setup.interest.borrow_and_update().clone();
                    inputs.push(Input::SetSubscriptions(interest));
                }
            }
            if self.links.is_empty() {
                tracing::debug!(%peer, "last link lost");
                return Outcome::NoLinks;
            }
        }
    }

    /// A link went away. Returns the outcome when that ends the session.
    fn link_down(&mut self, id: u64, error: &LinkError) -> Option<Outcome> {
        let peer = self.setup.peer;
        let link = self.links.remove(&id)?;
        link.reader_cancel.cancel();
        if error.is_violation() {
            let reason = format!("peer broke the link framing on {}: {error}", link.kind);
            tracing::warn!(%peer, %reason, "sync session closed");
            return Some(Outcome::Closed(reason));
        }
        tracing::debug!(%peer, kind = %link.kind, %error, "link lost");
        self.reselect();
        self.links.is_empty().then_some(Outcome::NoLinks)
    }

    fn add_link(&mut self, link: Box<dyn Link>) {
        let id = self.next_link;
        self.next_link += 1;
        let kind = link.kind();
        let remote = link.remote();
        let stats = link.stats();
        tracing::debug!(peer = %self.setup.peer, %kind, %remote, "link added");
        let (sender, receiver) = link.split();
        let (writer, writer_rx) = mpsc::channel(WRITE_QUEUE);
        let reader_cancel = self.setup.cancel.child_token();
        self.tasks
            .spawn(write_loop(id, sender, writer_rx, self.frames_tx.clone()));
        self.tasks.spawn(read_loop(
            id,
            receiver,
            self.frames_tx.clone(),
            reader_cancel.clone(),
        ));
        let throughput = Throughput::new(&stats);
        self.links.insert(
            id,
            ActiveLink {
                kind,
                remote,
                stats,
                writer,
                reader_cancel,
                throughput,
            },
        );
        self.reselect();
    }

    fn reselect(&mut self) {
        for link in self.links.values_mut() {
            link.throughput.sample(&link.stats);
        }
        let candidates: Vec<LinkCandidate> = self
            .links
            .iter()
            .map(|(id, l)| LinkCandidate {
                id: *id,
                kind: l.kind,
                rtt: l.stats.rtt(),
                bandwidth: l.throughput.peak,
            })
            .collect();
        let chosen = choose_link(self.chosen, &candidates);
        if chosen != self.chosen {
            if let Some(link) = chosen.and_then(|id| self.links.get(&id)) {
                tracing::debug!(peer = %self.setup.peer, kind = %link.kind, remote = %link.remote, "sending on link");
            }
            self.chosen = chosen;
        }
    }

    /// Hands inputs to the session; carries out its outputs.
    async fn process(&mut self, inputs: Vec<Input>) -> Result<(), Outcome> {
        let mut session = self.session.take().ok_or(Outcome::Shutdown)?;
        let store = self.setup.store.clone();
        let now = u64::try_from(self.setup.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let joined = tokio::task::spawn_blocking(move || {
            let mut store = store.lock();
            let mut outputs = Vec::new();
            for input in inputs {
                outputs.extend(session.handle(&mut *store, now, input));
            }
            // What the inputs wrote is committed before any frame they produced leaves.
            if let Err(failure) = store.flush() {
                outputs.push(Output::Close {
                    reason: CloseReason::Store(failure),
                });
            }
            let lsn = store.current_lsn();
            (session, outputs, lsn)
        })
        .await;
        let (session, outputs, lsn) = match joined {
            Ok(done) => done,
            Err(error) => {
                let reason = format!("session task failed: {error}");
                tracing::warn!(peer = %self.setup.peer, %reason, "sync session closed");
                return Err(Outcome::Closed(reason));
            }
        };
        self.publish_status(&session);
        self.session = Some(session);
        let peer = self.setup.peer;
        let mut closed = None;
        for output in outputs {
            match output {
                Output::Send(frame) => {
                    self.outbox_bytes += frame.len();
                    self.outbox.push_back(frame);
                }
                Output::Close { reason } => {
                    tracing::warn!(%peer, %reason, "sync session closed");
                    closed = Some(reason.to_string());
                }
                Output::Event(event) => self.on_event(event, lsn).await,
            }
        }
        match closed {
            Some(reason) => Err(Outcome::Closed(reason)),
            None => Ok(()),
        }
    }

    async fn on_event(&mut self, event: Event, lsn: Lsn) {
        let peer = self.setup.peer;
        match &event {
            Event::PeerHello(hello) => {
                self.setup.status.lock().node_id = Some(hello.node_id.clone());
                let _ = self.setup.events.send(MeshEvent::PeerUp {
                    peer,
                    hello: hello.clone(),
                });
            }
            Event::PeerInterest(interest) => {
                let report = Report::Interest {
                    peer,
                    generation: self.setup.generation,
                    interest: interest.clone(),
                };
                // The peer table never waits on a driver, so this cannot deadlock.
                let _ = self.setup.reports.send(report).await;
            }
            Event::CaughtUp { .. } => self.progress.on_caught_up(peer),
            Event::DocsChanged { docs } => {
                self.progress.on_docs(peer, docs.len());
                self.setup.lsn.send_if_modified(|current| {
                    let newer = lsn > *current;
                    if newer {
                        *current = lsn;
                    }
                    newer
                });
            }
            Event::ProtocolError(error) => {
                tracing::debug!(%peer, %error, "tolerated protocol error");
            }
            Event::SubscriptionRejected(error) => {
                tracing::warn!(%peer, %error, "subscription rejected");
            }
            _ => {}
        }
        let _ = self.setup.events.send(MeshEvent::Sync { peer, event });
    }

    fn publish_status(&self, session: &Session) {
        let links = self
            .links
            .iter()
            .map(|(id, l)| LinkSummary {
                id: *id,
                kind: l.kind,
                remote: l.remote.clone(),
                stats: l.stats.snapshot(),
            })
            .collect();
        let mut status = self.setup.status.lock();
        status.links = links;
        status.chosen = self.chosen;
        status.session = session.stats();
        status.idle = session.is_idle();
    }

    /// Flushes a closing session's last frames (its `Goodbye`), stops the link tasks and
    /// returns the links that arrived meanwhile.
    async fn finish(mut self, outcome: Outcome) -> Ended {
        // A closing session's goodbye, and on shutdown what was already made for the
        // peer (a push telling it what it need not send back), go out if the link
        // takes them at once.
        if matches!(outcome, Outcome::Closed(_) | Outcome::Shutdown)
            && let Some(link) = self.chosen.and_then(|id| self.links.get(&id))
        {
            for frame in self.outbox.drain(..) {
                if link.writer.try_send(frame).is_err() {
                    break;
                }
            }
        }
        for link in self.links.values() {
            link.reader_cancel.cancel();
        }
        // Writers drain their queue and close once their sender is dropped.
        self.links.clear();
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(FLUSH_ON_CLOSE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.shutdown().await;
        }
        self.setup.links.close();
        let mut leftover = Vec::new();
        while let Ok(link) = self.setup.links.try_recv() {
            leftover.push(link);
        }
        if outcome != Outcome::NoLinks {
            leftover.clear();
        }
        Ended { outcome, leftover }
    }
}

async fn write_loop(
    id: u64,
    mut sender: Box<dyn FrameSender>,
    mut frames: mpsc::Receiver<Vec<u8>>,
    report: mpsc::Sender<LinkMsg>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(error) = sender.send(frame).await {
            let _ = report.try_send(LinkMsg::Down(id, error));
            return;
        }
    }
    sender.close().await;
}

async fn read_loop(
    id: u64,
    mut receiver: Box<dyn FrameReceiver>,
    report: mpsc::Sender<LinkMsg>,
    cancel: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            () = cancel.cancelled() => return,
            received = receiver.recv() => received,
        };
        let msg = match received {
            Ok(Some(frame)) => LinkMsg::Frame(frame),
            Ok(None) => LinkMsg::Down(id, LinkError::Closed),
            Err(error) => LinkMsg::Down(id, error),
        };
        let last = matches!(msg, LinkMsg::Down(..));
        tokio::select! {
            () = cancel.cancelled() => return,
            sent = report.send(msg) => if sent.is_err() || last { return },
        }
    }
}
