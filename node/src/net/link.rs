//! Links: the framed, bidirectional channels a sync session runs over, whatever carries
//! them (a libp2p stream over TCP or QUIC, Bluetooth LE later, memory in tests).
//!
//! A [`Link`] carries whole frames (byte vectors produced by `common::sync`), enforces a
//! maximum frame size in both directions, and counts bytes and frames in [`LinkStats`]
//! (with the round-trip time measured by whoever can: libp2p ping for libp2p links, the
//! configured latency for a simulated link). The session layer never sees what is
//! underneath, so a new transport is one more `Link` implementation.
//!
//! Implementations here: [`StreamLink`] (any byte stream, frames prefixed with their
//! length as a big-endian `u32`), [`memory_pair`] (a [`StreamLink`] pair over an
//! in-process pipe) and [`sim_pair`] (frames delayed by a latency and paced by a
//! bandwidth, on tokio time, so paused-time tests can simulate slow radios).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What carries a link. The order of preference when a peer is reachable over several
/// links with comparable round-trip times is QUIC, TCP, Bluetooth LE (memory links are
/// for tests and rank first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkKind {
    /// QUIC (libp2p).
    Quic,
    /// TCP with Noise and Yamux (libp2p).
    Tcp,
    /// Bluetooth LE (L2CAP or GATT).
    Ble,
    /// An in-process link (tests, simulations).
    Memory,
}

impl LinkKind {
    /// The preference rank: lower is better.
    pub fn rank(self) -> u8 {
        match self {
            LinkKind::Memory => 0,
            LinkKind::Quic => 1,
            LinkKind::Tcp => 2,
            LinkKind::Ble => 3,
        }
    }

    /// A short name for logs and presence.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Quic => "quic",
            LinkKind::Tcp => "tcp",
            LinkKind::Ble => "ble",
            LinkKind::Memory => "memory",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A frame larger than the limit, sent or announced by the peer.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The frame's length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The link was closed (by either side).
    #[error("link closed")]
    Closed,
    /// An I/O error underneath.
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl LinkError {
    /// Whether the error is the peer's fault (it broke the framing rules), as opposed to
    /// the link going away.
    pub fn is_violation(&self) -> bool {
        matches!(self, LinkError::Oversized { .. })
    }
}

/// Counters of a link, shared between its halves and whoever measures it.
#[derive(Debug, Default)]
pub struct LinkStats {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    /// Microseconds; 0 = not measured yet.
    rtt_us: AtomicU64,
}

/// A copy of a link's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkSnapshot {
    /// Bytes received (frame payloads and headers).
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// The last measured round-trip time.
    pub rtt: Option<Duration>,
}

impl LinkStats {
    /// Records a measured round-trip time.
    pub fn set_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        self.rtt_us.store(us, Ordering::Relaxed);
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Counts a frame received.
    pub fn record_in(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame sent.
    pub fn record_out(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        self.frames_out.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> LinkSnapshot {
        LinkSnapshot {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
            rtt: self.rtt(),
        }
    }
}

/// The sending half of a link.
pub trait FrameSender: Send + fmt::Debug {
    /// Sends one frame (refused with [`LinkError::Oversized`] above the limit).
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), LinkError>>;

    /// Closes the sending direction (best effort).
    fn close(&mut self) -> BoxFuture<'_, ()>;
}

/// The receiving half of a link.
pub trait FrameReceiver: Send + fmt::Debug {
    /// The next frame; `Ok(None)` when the peer closed the link cleanly. Not cancel-safe:
    /// a dropped call may lose a partly read frame (the link is then unusable).
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, LinkError>>;
}

/// A bidirectional framed channel to one peer. See the module documentation.
pub trait Link: Send + fmt::Debug {
    /// What carries it.
    fn kind(&self) -> LinkKind;

    /// A description of the remote end (an address) for logs and presence.
    fn remote(&self) -> String;

    /// The link's counters (shared: they keep counting after [`Link::split`]).
    fn stats(&self) -> Arc<LinkStats>;

    /// Splits the link into its halves, so sending and receiving run concurrently.
    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>);
}

/// Bytes of the length prefix.
const HEADER: usize = 4;

/// A link over any byte stream: each frame is a big-endian `u32` length and the bytes.
pub struct StreamLink<S> {
    io: S,
    kind: LinkKind,
    remote: String,
    max_frame_bytes: u32,
    stats: Arc<LinkStats>,
}

impl<S> fmt::Debug for StreamLink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamLink")
            .field("kind", &self.kind)
            .field("remote", &self.remote)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

impl<S> StreamLink<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    /// A link over `io`, refusing frames above `max_frame_bytes` in both directions.
    pub fn new(io: S, kind: LinkKind, remote: impl Into<String>, max_frame_bytes: u32) -> Self {
        Self::with_stats(io, kind, remote, max_frame_bytes, Arc::default())
    }

    /// As [`StreamLink::new`], counting into existing counters (so a measurer elsewhere,
    /// such as libp2p ping, can record the round-trip time).
    pub fn with_stats(
        io: S,
        kind: LinkKind,
        remote: impl Into<String>,
        max_frame_bytes: u32,
        stats: Arc<LinkStats>,
    ) -> Self {
        Self {
            io,
            kind,
            remote: remote.into(),
            max_frame_bytes,
            stats,
        }
    }
}

impl<S> Link for StreamLink<S>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    fn kind(&self) -> LinkKind {
        self.kind
    }

    fn remote(&self) -> String {
        self.remote.clone()
    }

    fn stats(&self) -> Arc<LinkStats> {
        self.stats.clone()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>) {
        let (read, write) = tokio::io::split(self.io);
        let sender = StreamSender {
            io: write,
            max: self.max_frame_bytes,
            stats: self.stats.clone(),
        };
        let receiver = StreamReceiver {
            io: read,
            max: self.max_frame_bytes,
            stats: self.stats,
        };
        (Box::new(sender), Box::new(receiver))
    }
}

struct StreamSender<S> {
    io: WriteHalf<S>,
    max: u32,
    stats: Arc<LinkStats>,
}

impl<S> fmt::Debug for StreamSender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender").finish_non_exhaustive()
    }
}

impl<S: AsyncWrite + Send> FrameSender for StreamSender<S> {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(async move {
            let len = u32::try_from(frame.len())
                .ok()
                .filter(|len| *len <= self.max)
                .ok_or(LinkError::Oversized {
                    len: frame.len() as u64,
                    max: self.max,
                })?;
            let mut buf = Vec::with_capacity(HEADER + frame.len());
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&frame);
            self.io.write_all(&buf).await?;
            self.io.flush().await?;
            self.stats.record_out(buf.len());
            Ok(())
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.io.shutdown().await;
        })
    }
}

struct StreamReceiver<S> {
    io: ReadHalf<S>,
    max: u32,
    stats: Arc<LinkStats>,
}

impl<S> fmt::Debug for StreamReceiver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Send> FrameReceiver for StreamReceiver<S> {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, LinkError>> {
        Box::pin(async move {
            let mut header = [0u8; HEADER];
            // A clean end of stream is only allowed between frames.
            let first = self.io.read(&mut header[..1]).await?;
            if first == 0 {
                return Ok(None);
            }
            self.io.read_exact(&mut header[1..]).await?;
            let len = u32::from_be_bytes(header);
            if len > self.max {
                return Err(LinkError::Oversized {
                    len: u64::from(len),
                    max: self.max,
                });
            }
            let mut frame = vec![0; len as usize];
            self.io.read_exact(&mut frame).await?;
            self.stats.record_in(HEADER + frame.len());
            Ok(Some(frame))
        })
    }
}

/// Two [`Memory`](LinkKind::Memory) links joined by an in-process pipe (their round-trip
/// time is set to 10 µs, so they win the link choice).
pub fn memory_pair(
    max_frame_bytes: u32,
) -> (
    StreamLink<tokio::io::DuplexStream>,
    StreamLink<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let make = |io| {
        let link = StreamLink::new(io, LinkKind::Memory, "memory", max_frame_bytes);
        // Nothing measures a pipe; its round trip is a few microseconds.
        link.stats.set_rtt(Duration::from_micros(10));
        link
    };
    (make(a), make(b))
}

/// The figures of a simulated link (see `/work/shared/LINKS.md` for real BLE ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimLinkConfig {
    /// What the link pretends to be.
    pub kind: LinkKind,
    /// One-way latency added to every frame.
    pub latency: Duration,
    /// Goodput in bytes per second (0 = unlimited).
    pub bytes_per_sec: u64,
    /// Per-frame overhead counted against the bandwidth (headers, chunking).
    pub frame_overhead_bytes: u32,
    /// The largest frame either side may send.
    pub max_frame_bytes: u32,
}

impl Default for SimLinkConfig {
    fn default() -> Self {
        Self {
            kind: LinkKind::Memory,
            latency: Duration::ZERO,
            bytes_per_sec: 0,
            frame_overhead_bytes: 0,
            max_frame_bytes: trellis_common::sync::frame::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Frames in flight per direction before a sender waits.
const SIM_QUEUE: usize = 64;

/// Two simulated links: frames arrive in order after the latency, and a sender is paced
/// by the bandwidth (it waits until its previous frames have left). Runs on tokio time.
pub fn sim_pair(config: &SimLinkConfig) -> (SimLink, SimLink) {
    let (a_tx, b_rx) = mpsc::channel(SIM_QUEUE);
    let (b_tx, a_rx) = mpsc::channel(SIM_QUEUE);
    let make = |tx, rx| {
        let stats = Arc::new(LinkStats::default());
        if !config.latency.is_zero() {
            stats.set_rtt(config.latency * 2);
        }
        SimLink {
            config: config.clone(),
            tx,
            rx,
            stats,
        }
    };
    (make(a_tx, a_rx), make(b_tx, b_rx))
}

/// One end of a simulated link (see [`sim_pair`]).
#[derive(Debug)]
pub struct SimLink {
    config: SimLinkConfig,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    stats: Arc<LinkStats>,
}

impl Link for SimLink {
    fn kind(&self) -> LinkKind {
        self.config.kind
    }

    fn remote(&self) -> String {
        format!("sim:{}", self.config.kind)
    }

    fn stats(&self) -> Arc<LinkStats> {
        self.stats.clone()
    }

    fn split(self: Box<Self>) -> (Box<dyn FrameSender>, Box<dyn FrameReceiver>) {
        let sender = SimSender {
            config: self.config.clone(),
            tx: Some(self.tx),
            busy_until: Instant::now(),
            stats: self.stats.clone(),
        };
        let receiver = SimReceiver {
            rx: self.rx,
            stats: self.stats,
        };
        (Box::new(sender), Box::new(receiver))
    }
}

#[derive(Debug)]
struct SimSender {
    config: SimLinkConfig,
    tx: Option<mpsc::Sender<(Instant, Vec<u8>)>>,
    busy_until: Instant,
    stats: Arc<LinkStats>,
}

impl FrameSender for SimSender {
    fn send(&mut self, frame: Vec<u8>) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(async move {
            let max = self.config.max_frame_bytes;
            if frame.len() as u64 > u64::from(max) {
                return Err(LinkError::Oversized {
                    len: frame.len() as u64,
                    max,
                });
            }
            let tx = self.tx.as_ref().ok_or(LinkError::Closed)?;
            let start = self.busy_until.max(Instant::now());
            let wire = frame.len() as u64 + u64::from(self.config.frame_overhead_bytes);
            let transmit = match self.config.bytes_per_sec {
                0 => Duration::ZERO,
                bps => Duration::from_secs_f64(wire as f64 / bps as f64),
            };
            self.busy_until = start + transmit;
            tokio::time::sleep_until(self.busy_until).await;
            let bytes = frame.len();
            tx.send((self.busy_until + self.config.latency, frame))
                .await
                .map_err(|_| LinkError::Closed)?;
            self.stats.record_out(bytes);
            Ok(())
        })
    }

    fn close(&mut self) -> BoxFuture<'_, ()> {
        self.tx = None;
        Box::pin(async {})
    }
}

#[derive(Debug)]
struct SimReceiver {
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    stats: Arc<LinkStats>,
}

impl FrameReceiver for SimReceiver {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Vec<u8>>, LinkError>> {
        Box::pin(async move {
            let Some((at, frame)) = self.rx.recv().await else {
                return Ok(None);
            };
            tokio::time::sleep_until(at).await;
            self.stats.record_in(frame.len());
            Ok(Some(frame))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_a_memory_pair_and_are_counted() {
        let (a, b) = memory_pair(64);
        let (mut a_tx, _a_rx) = (Box::new(a) as Box<dyn Link>).split();
        let b: Box<dyn Link> = Box::new(b);
        let stats = b.stats();
        let (_b_tx, mut b_rx) = b.split();
        a_tx.send(b"hello".to_vec()).await.unwrap();
        assert_eq!(b_rx.recv().await.unwrap().unwrap(), b"hello");
        assert_eq!(stats.snapshot().bytes_in, 9);
        assert!(matches!(
            a_tx.send(vec![0; 65]).await,
            Err(LinkError::Oversized { len: 65, max: 64 })
        ));
        a_tx.close().await;
        drop(a_tx);
        assert!(b_rx.recv().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_announced_oversized_frame_is_refused() {
        let (a, b) = tokio::io::duplex(1024);
        let link = Box::new(StreamLink::new(b, LinkKind::Tcp, "t", 16));
        let (_tx, mut rx) = link.split();
        let mut a = a;
        a.write_all(&1000u32.to_be_bytes()).await.unwrap();
        let err = rx.recv().await.unwrap_err();
        assert!(err.is_violation(), "{err}");
    }

    #[tokio::test]
    async fn a_simulated_link_applies_latency_and_bandwidth() {
        let config = SimLinkConfig {
            kind: LinkKind::Ble,
            latency: Duration::from_millis(20),
            bytes_per_sec: 10_000,
            ..SimLinkConfig::default()
        };
        let (a, b) = sim_pair(&config);
        let (mut tx, _) = (Box::new(a) as Box<dyn Link>).split();
        let (_, mut rx) = (Box::new(b) as Box<dyn Link>).split();
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for i in 0..10u8 {
                tx.send(vec![i; 100]).await.unwrap();
            }
            tx
        });
        for i in 0..10u8 {
            assert_eq!(rx.recv().await.unwrap().unwrap(), vec![i; 100], "in order");
        }
        // 1,000 bytes at 10,000 B/s plus 20 ms of latency, at least (a lower bound:
        // the simulator may be slower, never faster).
        assert!(start.elapsed() >= Duration::from_millis(120));
        drop(sender.await.unwrap());
    }
}
