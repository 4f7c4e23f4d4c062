//! The sans-IO sync protocol: frames, the per-peer session state machine, what a session
//! needs from a store, interest propagation, and a deterministic simulator.
//!
//! `docs/sync.md` is the design; this module follows it. In short: each store numbers
//! its changes with receipt sequence numbers ([`Lsn`]); a node keeps, per peer store
//! incarnation and per subscription query, a *bookmark* (the peer's LSN up to which it
//! holds everything matching the query) and catches up by pulling what changed after
//! it; while connected, changes are pushed as they happen with the LSN range they
//! cover. Intermediaries pull what their other peers ask for (split-horizon interest).
//!
//! - [`frame`]: the versioned wire messages (`Frame::V1`), encoded with postcard, with a
//!   maximum frame size checked on encode and decode.
//! - [`session`]: [`Session`], one per connected peer: `handle(store, now_ms, input) ->
//!   outputs`. No sockets, no clocks, no runtime.
//! - [`store`]: the [`SyncStore`] trait and [`MemoryStore`], the in-memory reference
//!   implementation.
//! - [`interest`]: subscriptions ([`Subscription`]) and the split-horizon
//!   [`InterestTable`].
//! - [`sim`]: a seeded, deterministic simulator of many nodes over lossy links.

pub mod frame;
pub mod interest;
pub mod lsn;
pub mod session;
pub mod sim;
pub mod store;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crdt::DocState;

pub use frame::{Frame, FrameError, Hello, Message};
pub use interest::{Interest, InterestTable, MAX_INTEREST_HOPS, Subscription, SubscriptionError};
pub use lsn::{DocLsns, DocLsnsError};
pub use session::{
    CloseReason, Event, Input, LocalHello, Output, Session, SessionConfig, SessionStats,
};
pub use store::{ChangedDoc, MemoryStore, StoreFailure, SyncStore};

/// A receipt sequence number: a store's local, strictly increasing count of the
/// changes merged into it. 0 means "nothing yet" (a bookmark of 0 pulls from scratch).
pub type Lsn = u64;

/// The identity of one life of a store: random, made when the store is created. A
/// wiped device gets a new one, so bookmarks against its old life are not reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation(pub [u8; 16]);

impl Incarnation {
    /// A fresh random incarnation (UUID v4 bytes).
    pub fn random() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }

    /// An incarnation from a number, for tests and the simulator.
    pub fn from_u64(n: u64) -> Self {
        let mut bytes = [0; 16];
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        Self(bytes)
    }
}

impl fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Incarnation(")?;
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// The identity of a subscription query: the first 16 bytes of the BLAKE3 hash of its
/// text (trimmed). The same query from two subscribers is one query to the mesh.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueryId(pub [u8; 16]);

impl QueryId {
    /// The id of a query text.
    pub fn of(text: &str) -> Self {
        let hash = blake3::hash(text.trim().as_bytes());
        let mut id = [0; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        Self(id)
    }
}

impl fmt::Debug for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryId(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A short hash of a whole document state: the first 8 bytes of the BLAKE3 hash of its
/// V1 encoding. Equal states have equal digests; a receiver compares the digest a
/// sender attaches to a partial fragment with its own state after merging, and fetches
/// the whole document when they differ (see `docs/sync.md`, "Completeness per
/// document").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 8]);

impl Digest {
    /// The digest of a document state.
    pub fn of(state: &DocState) -> Self {
        let hash = blake3::hash(&crate::codec::encode_doc(state));
        let mut digest = [0; 8];
        digest.copy_from_slice(&hash.as_bytes()[..8]);
        Self(digest)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(")?;
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// Optional protocol features, negotiated at the handshake: a feature is used on a
/// session only when both hellos carry its bit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Document sync (every V1 peer has it).
    pub const DOCS: Capabilities = Capabilities(1);
    /// Attachment chunks (`BlobWant` / `BlobChunk`).
    pub const BLOBS: Capabilities = Capabilities(1 << 1);
    /// Presence gossip (`Links`).
    pub const PRESENCE: Capabilities = Capabilities(1 << 2);
    /// Everything this build implements.
    pub const ALL: Capabilities = Capabilities(0b111);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits both sides have.
    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({:#b})", self.0)
    }
}
