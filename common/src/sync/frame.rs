//! The wire messages of the sync protocol and their framing.
//!
//! Every frame is `enum Frame { V1(Message) }` encoded with postcard: the first byte is
//! the format version's variant index, so a peer refuses a version it does not know
//! instead of misreading it. A frame is at most `max` bytes, checked on encode (the
//! smaller of both sides' limits, from the hellos) and on decode (our own limit).
//! Decoding is for untrusted bytes: every failure is a [`FrameError`], never a panic;
//! collection names, document ids and document states are validated as the codec does
//! (document states use the codec's V1 document encoding). The variant order of
//! [`Message`] is part of the format: add variants at the end only.
//! `common/tests/sync_frame.rs` pins the bytes of a `Hello`.

use serde::{Deserialize, Serialize};

use super::{Capabilities, Digest, Incarnation, Lsn, QueryId};
use crate::codec::{CodecError, DocV1, doc_from_v1, doc_v1};
use crate::crdt::DocState;
use crate::ids::{ActorId, CollectionName, DocId};

/// The protocol version this build speaks (carried in [`Hello::protocol`]).
pub const PROTOCOL_VERSION: u32 = 1;
/// The frame limit a node announces unless configured otherwise.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;
/// The smallest frame limit a peer may announce: room for a hello, a subscription set
/// and a few document entries.
pub const MIN_MAX_FRAME_BYTES: u32 = 4 * 1024;

/// Why bytes are not a frame this build accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error(
        "frame format version {0} is unknown (this build speaks version 1; is the peer newer?)"
    )]
    UnknownVersion(u32),
    #[error("frame is truncated")]
    Truncated,
    #[error("frame has {0} unexpected bytes after its end")]
    TrailingBytes(usize),
    #[error("corrupt frame: {0}")]
    Corrupt(String),
}

fn corrupt(what: impl Into<String>) -> FrameError {
    FrameError::Corrupt(what.into())
}

/// The versioned envelope of every message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Protocol format 1.
    V1(Message),
}

/// One protocol message (see the message table in `docs/sync.md`).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// First message of each side.
    Hello(Hello),
    /// The sender's whole interest towards the receiver; replaces the previous one.
    Subscribe(Subscribe),
    /// Acknowledges a `Subscribe` of this version.
    Subscribed {
        /// The acknowledged version.
        version: u64,
    },
    /// Asks for what changed after `base` for some queries of one collection.
    Pull(Pull),
    /// One frame of a catch-up response or of a push.
    Changes(Changes),
    /// Asks for whole documents.
    Want(Want),
    /// Answers a `Want`.
    Docs(Docs),
    /// The sender's push position per query, so a receiver notices a lost push.
    Heads(Heads),
    /// Asks for chunks of an attachment.
    BlobWant(BlobWant),
    /// One chunk of an attachment.
    BlobChunk(BlobChunk),
    /// The sender's direct links (presence).
    Links(Links),
    /// Round-trip probe.
    Ping {
        /// Echoed by the `Pong`.
        nonce: u64,
    },
    /// Answer to a `Ping`.
    Pong {
        /// The `Ping`'s nonce.
        nonce: u64,
    },
    /// The sender is closing the session.
    Goodbye {
        /// Why, for the peer's log.
        reason: String,
    },
}

impl Message {
    /// The message's name, for logs and close reasons.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Subscribe(_) => "Subscribe",
            Message::Subscribed { .. } => "Subscribed",
            Message::Pull(_) => "Pull",
            Message::Changes(_) => "Changes",
            Message::Want(_) => "Want",
            Message::Docs(_) => "Docs",
            Message::Heads(_) => "Heads",
            Message::BlobWant(_) => "BlobWant",
            Message::BlobChunk(_) => "BlobChunk",
            Message::Links(_) => "Links",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
            Message::Goodbye { .. } => "Goodbye",
        }
    }
}

/// The handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The sender's node identity (its Ed25519 public key; opaque here).
    pub node_id: Vec<u8>,
    /// The actor id the sender writes as.
    pub actor: ActorId,
    /// The sender's store incarnation: bookmarks are kept against it.
    pub incarnation: Incarnation,
    /// Optional features the sender supports.
    pub capabilities: Capabilities,
    /// The largest frame the sender accepts.
    pub max_frame_bytes: u32,
    /// Mesh admission (a mesh-key proof or a certificate); reserved, not checked yet.
    pub admission: Option<Vec<u8>>,
}

/// One query of an interest set, with the number of hops from the node that subscribes
/// to it (0: the sender itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestEntry {
    /// The query text.
    pub query: String,
    /// Hops from its subscriber.
    pub hops: u8,
}

/// See [`Message::Subscribe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Increases with each new interest set of the sender on this session.
    pub version: u64,
    /// The interest set.
    pub queries: Vec<InterestEntry>,
}

/// See [`Message::Pull`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    /// Chosen by the puller; the response's frames carry it.
    pub pull_id: u64,
    /// The bookmark: send what changed after this LSN of yours (0: from scratch).
    pub base: Lsn,
    /// The puller's interest version when it sent this pull.
    pub interest_version: u64,
    /// The query texts (all of one collection).
    pub queries: Vec<String>,
}

/// Which exchange a `Changes` frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BatchId {
    /// The response to the receiver's pull of this id.
    Pull(u64),
    /// A push, numbered by the sender.
    Push(u64),
}

/// How a receiver can tell it holds the sender's whole document after merging a
/// fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    /// The fragment is the sender's whole document.
    Whole,
    /// The digest of the sender's whole document; a receiver whose state differs after
    /// merging asks for the whole document.
    Digest(Digest),
    /// The sender does not hold the document: the fragment is what it kept, out of
    /// sight, of changes to it (a shadow, docs/sync.md). A holder merges it, anyone else
    /// keeps it as a shadow too; there is nothing to check against.
    Shadow,
}

/// A document fragment in a `Changes` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DocItem {
    /// The document.
    pub id: DocId,
    /// Whether the sender's document matches one of the batch's queries.
    pub matches: bool,
    /// See [`Check`].
    pub check: Check,
    /// This piece's index, for a fragment too large for one frame.
    pub piece: u32,
    /// How many pieces the fragment was split into (1 usually).
    pub pieces: u32,
    /// The entries (of this piece).
    pub state: DocState,
}

/// See [`Message::Changes`].
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The pull answered, or the push.
    pub batch: BatchId,
    /// The collection of every document in the batch.
    pub collection: CollectionName,
    /// The queries the batch covers.
    pub queries: Vec<QueryId>,
    /// The batch holds every document changed after this LSN of the sender...
    pub base: Lsn,
    /// ...up to this one (the receiver's new bookmark once the batch is complete).
    pub upto: Lsn,
    /// This frame's index in the batch.
    pub part: u32,
    /// The number of frames in the batch.
    pub parts: u32,
    /// For the answer to a pull from scratch, which names only matching documents:
    /// whether it named every document of the collection the sender holds. Then a
    /// document the receiver holds and the answer did not name is not at the sender at
    /// all, and the receiver has nothing to compare. Always false for other batches.
    pub names_all: bool,
    /// The fragments.
    pub docs: Vec<DocItem>,
}

/// One document asked for by a `Want`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantItem {
    /// Its collection.
    pub collection: CollectionName,
    /// Its id.
    pub id: DocId,
    /// The digest of the asker's copy, if it has one: an equal copy is answered `Same`.
    pub digest: Option<Digest>,
}

/// See [`Message::Want`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The documents.
    pub docs: Vec<WantItem>,
}

/// The answer for one wanted document.
#[derive(Debug, Clone, PartialEq)]
pub enum DocReply {
    /// The whole document (or one piece of it).
    State {
        /// The piece's index.
        piece: u32,
        /// The number of pieces.
        pieces: u32,
        /// The entries.
        state: DocState,
    },
    /// The asker's copy equals ours.
    Same,
    /// We hold nothing for it.
    Missing,
}

/// One document of a `Docs` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DocsItem {
    /// Its collection.
    pub collection: CollectionName,
    /// Its id.
    pub id: DocId,
    /// The answer.
    pub reply: DocReply,
}

/// See [`Message::Docs`].
#[derive(Debug, Clone, PartialEq)]
pub struct Docs {
    /// The answers.
    pub docs: Vec<DocsItem>,
}

/// See [`Message::Heads`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    /// Per query, the LSN up to which the sender has pushed (or answered a pull).
    pub heads: Vec<(QueryId, Lsn)>,
}

/// See [`Message::BlobWant`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobWant {
    /// The BLAKE3 hash of the blob.
    pub hash: [u8; 32],
    /// The chunk indexes wanted.
    pub chunks: Vec<u32>,
}

/// See [`Message::BlobChunk`]. `total == 0` means the sender does not have the blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobChunk {
    /// The BLAKE3 hash of the blob.
    pub hash: [u8; 32],
    /// The chunk's index.
    pub index: u32,
    /// The number of chunks of the blob (0: not here).
    pub total: u32,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

/// One direct link of the sender, for presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The peer's node id.
    pub peer: Vec<u8>,
    /// The link kind ("tcp", "quic", "ble", ...).
    pub kind: String,
    /// Round-trip time in milliseconds.
    pub rtt_ms: u32,
    /// Bytes received over the link.
    pub bytes_in: u64,
    /// Bytes sent over the link.
    pub bytes_out: u64,
}

/// See [`Message::Links`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The node the links belong to.
    pub origin: Vec<u8>,
    /// Increases with each new link set of `origin`.
    pub version: u64,
    /// The links.
    pub links: Vec<LinkInfo>,
}

// ---------------------------------------------------------------------------------
// The wire form: the same messages with documents in the codec's V1 encoding and names
// and ids as text, validated when decoded.

#[derive(Serialize, Deserialize)]
enum FrameWire {
    V1(MessageWire),
}

#[derive(Serialize, Deserialize)]
enum MessageWire {
    Hello(Hello),
    Subscribe(Subscribe),
    Subscribed { version: u64 },
    Pull(Pull),
    Changes(ChangesWire),
    Want(Vec<WantItemWire>),
    Docs(Vec<DocsItemWire>),
    Heads(Heads),
    BlobWant(BlobWant),
    BlobChunk(BlobChunk),
    Links(Links),
    Ping { nonce: u64 },
    Pong { nonce: u64 },
    Goodbye { reason: String },
}

#[derive(Serialize, Deserialize)]
struct ChangesWire {
    batch: BatchId,
    collection: String,
    queries: Vec<QueryId>,
    base: Lsn,
    upto: Lsn,
    part: u32,
    parts: u32,
    names_all: bool,
    docs: Vec<DocItemWire>,
}

/// A fragment on the wire. Almost every fragment is in one piece, so the common cases
/// are variants of their own: the variant index (one byte) carries `matches` and the
/// kind of check, and the piece numbers travel only for split fragments. Per document
/// that is the id, one byte, and for a partial fragment its 8-byte digest.
#[derive(Serialize, Deserialize)]
pub(crate) enum DocItemWire {
    WholeMatching {
        id: String,
        doc: DocV1,
    },
    WholeOther {
        id: String,
        doc: DocV1,
    },
    PartMatching {
        id: String,
        digest: Digest,
        doc: DocV1,
    },
    PartOther {
        id: String,
        digest: Digest,
        doc: DocV1,
    },
    Piece {
        id: String,
        matches: bool,
        check: Check,
        piece: u32,
        pieces: u32,
        doc: DocV1,
    },
    /// Last, so that adding it left the other variants' bytes as they were.
    Shadow {
        id: String,
        doc: DocV1,
    },
}

#[derive(Serialize, Deserialize)]
struct WantItemWire {
    collection: String,
    id: String,
    digest: Option<Digest>,
}

#[derive(Serialize, Deserialize)]
enum ReplyWire {
    State { piece: u32, pieces: u32, doc: DocV1 },
    Same,
    Missing,
}

#[derive(Serialize, Deserialize)]
struct DocsItemWire {
    collection: String,
    id: String,
    reply: ReplyWire,
}

fn item_wire(item: &DocItem) -> DocItemWire {
    let id = item.id.as_canonical().to_owned();
    let doc = doc_v1(&item.state);
    match (item.pieces, item.matches, item.check) {
        (1, true, Check::Whole) => DocItemWire::WholeMatching { id, doc },
        (1, false, Check::Whole) => DocItemWire::WholeOther { id, doc },
        (1, true, Check::Digest(digest)) => DocItemWire::PartMatching { id, digest, doc },
        (1, false, Check::Digest(digest)) => DocItemWire::PartOther { id, digest, doc },
        (1, _, Check::Shadow) => DocItemWire::Shadow { id, doc },
        _ => DocItemWire::Piece {
            id,
            matches: item.matches,
            check: item.check,
            piece: item.piece,
            pieces: item.pieces,
            doc,
        },
    }
}

fn item_from_wire(item: DocItemWire) -> Result<DocItem, FrameError> {
    let whole = |id: &str, matches, check, doc| -> Result<DocItem, FrameError> {
        Ok(DocItem {
            id: doc_id(id)?,
            matches,
            check,
            piece: 0,
            pieces: 1,
            state: self::doc(doc)?,
        })
    };
    match item {
        DocItemWire::WholeMatching { id, doc } => whole(&id, true, Check::Whole, doc),
        DocItemWire::WholeOther { id, doc } => whole(&id, false, Check::Whole, doc),
        DocItemWire::PartMatching { id, digest, doc } => {
            whole(&id, true, Check::Digest(digest), doc)
        }
        DocItemWire::PartOther { id, digest, doc } => whole(&id, false, Check::Digest(digest), doc),
        DocItemWire::Shadow { id, doc } => whole(&id, false, Check::Shadow, doc),
        DocItemWire::Piece {
            id,
            matches,
            check,
            piece,
            pieces,
            doc,
        } => {
            check_piece(piece, pieces)?;
            Ok(DocItem {
                id: doc_id(&id)?,
                matches,
                check,
                piece,
                pieces,
                state: self::doc(doc)?,
            })
        }
    }
}

fn docs_item_wire(item: &DocsItem) -> DocsItemWire {
    DocsItemWire {
        collection: item.collection.as_str().to_owned(),
        id: item.id.as_canonical().to_owned(),
        reply: match &item.reply {
            DocReply::State {
                piece,
                pieces,
                state,
            } => ReplyWire::State {
                piece: *piece,
                pieces: *pieces,
                doc: doc_v1(state),
            },
            DocReply::Same => ReplyWire::Same,
            DocReply::Missing => ReplyWire::Missing,
        },
    }
}

fn to_wire(message: &Message) -> MessageWire {
    match message {
        Message::Hello(h) => MessageWire::Hello(h.clone()),
        Message::Subscribe(s) => MessageWire::Subscribe(s.clone()),
        Message::Subscribed { version } => MessageWire::Subscribed { version: *version },
        Message::Pull(p) => MessageWire::Pull(p.clone()),
        Message::Changes(c) => MessageWire::Changes(ChangesWire {
            batch: c.batch,
            collection: c.collection.as_str().to_owned(),
            queries: c.queries.clone(),
            base: c.base,
            upto: c.upto,
            part: c.part,
            parts: c.parts,
            names_all: c.names_all,
            docs: c.docs.iter().map(item_wire).collect(),
        }),
        Message::Want(w) => MessageWire::Want(
            w.docs
                .iter()
                .map(|i| WantItemWire {
                    collection: i.collection.as_str().to_owned(),
                    id: i.id.as_canonical().to_owned(),
                    digest: i.digest,
                })
                .collect(),
        ),
        Message::Docs(d) => MessageWire::Docs(d.docs.iter().map(docs_item_wire).collect()),
        Message::Heads(h) => MessageWire::Heads(h.clone()),
        Message::BlobWant(b) => MessageWire::BlobWant(b.clone()),
        Message::BlobChunk(b) => MessageWire::BlobChunk(b.clone()),
        Message::Links(l) => MessageWire::Links(l.clone()),
        Message::Ping { nonce } => MessageWire::Ping { nonce: *nonce },
        Message::Pong { nonce } => MessageWire::Pong { nonce: *nonce },
        Message::Goodbye { reason } => MessageWire::Goodbye {
            reason: reason.clone(),
        },
    }
}

fn collection(name: &str) -> Result<CollectionName, FrameError> {
    CollectionName::new(name).map_err(|e| corrupt(format!("collection: {e}")))
}

fn doc_id(text: &str) -> Result<DocId, FrameError> {
    DocId::from_canonical(text).map_err(|e| corrupt(format!("_id: {e}")))
}

fn doc(doc: DocV1) -> Result<DocState, FrameError> {
    doc_from_v1(doc).map_err(|e| match e {
        CodecError::Corrupt(what) => corrupt(format!("document: {what}")),
        other => corrupt(format!("document: {other}")),
    })
}

fn check_piece(piece: u32, pieces: u32) -> Result<(), FrameError> {
    if pieces == 0 || piece >= pieces {
        return Err(corrupt(format!("piece {piece} of {pieces}")));
    }
    Ok(())
}

fn from_wire(message: MessageWire) -> Result<Message, FrameError> {
    Ok(match message {
        MessageWire::Hello(h) => Message::Hello(h),
        MessageWire::Subscribe(s) => Message::Subscribe(s),
        MessageWire::Subscribed { version } => Message::Subscribed { version },
        MessageWire::Pull(p) => Message::Pull(p),
        MessageWire::Changes(c) => {
            if c.parts == 0 || c.part >= c.parts {
                return Err(corrupt(format!("part {} of {}", c.part, c.parts)));
            }
            if c.upto < c.base {
                return Err(corrupt("changes end before they begin"));
            }
            let mut docs = Vec::with_capacity(c.docs.len());
            for item in c.docs {
                docs.push(item_from_wire(item)?);
            }
            Message::Changes(Changes {
                batch: c.batch,
                collection: collection(&c.collection)?,
                queries: c.queries,
                base: c.base,
                upto: c.upto,
                part: c.part,
                parts: c.parts,
                names_all: c.names_all,
                docs,
            })
        }
        MessageWire::Want(items) => {
            let mut docs = Vec::with_capacity(items.len());
            for i in items {
                docs.push(WantItem {
                    collection: collection(&i.collection)?,
                    id: doc_id(&i.id)?,
                    digest: i.digest,
                });
            }
            Message::Want(Want { docs })
        }
        MessageWire::Docs(items) => {
            let mut docs = Vec::with_capacity(items.len());
            for i in items {
                let reply = match i.reply {
                    ReplyWire::State {
                        piece,
                        pieces,
                        doc: d,
                    } => {
                        check_piece(piece, pieces)?;
                        DocReply::State {
                            piece,
                            pieces,
                            state: doc(d)?,
                        }
                    }
                    ReplyWire::Same => DocReply::Same,
                    ReplyWire::Missing => DocReply::Missing,
                };
                docs.push(DocsItem {
                    collection: collection(&i.collection)?,
                    id: doc_id(&i.id)?,
                    reply,
                });
            }
            Message::Docs(Docs { docs })
        }
        MessageWire::Heads(h) => Message::Heads(h),
        MessageWire::BlobWant(b) => Message::BlobWant(b),
        MessageWire::BlobChunk(b) => Message::BlobChunk(b),
        MessageWire::Links(l) => Message::Links(l),
        MessageWire::Ping { nonce } => Message::Ping { nonce },
        MessageWire::Pong { nonce } => Message::Pong { nonce },
        MessageWire::Goodbye { reason } => Message::Goodbye { reason },
    })
}

/// Encodes a frame of at most `max` bytes.
pub fn encode(frame: &Frame, max: u32) -> Result<Vec<u8>, FrameError> {
    let Frame::V1(message) = frame;
    let bytes = postcard::to_stdvec(&FrameWire::V1(to_wire(message)))
        .expect("encoding into a Vec cannot fail");
    check_len(bytes.len(), max)?;
    Ok(bytes)
}

/// Decodes a frame of at most `max` bytes.
pub fn decode(bytes: &[u8], max: u32) -> Result<Frame, FrameError> {
    if bytes.is_empty() {
        return Err(FrameError::Empty);
    }
    check_len(bytes.len(), max)?;
    // The version is the variant index of `FrameWire`, a varint; V1 is 0.
    if bytes[0] != 0 {
        let version = match postcard::take_from_bytes::<u32>(bytes) {
            Ok((index, _)) => index.saturating_add(1),
            Err(_) => u32::MAX,
        };
        return Err(FrameError::UnknownVersion(version));
    }
    let (wire, rest) = postcard::take_from_bytes::<FrameWire>(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => FrameError::Truncated,
        other => corrupt(other.to_string()),
    })?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    let FrameWire::V1(message) = wire;
    Ok(Frame::V1(from_wire(message)?))
}

fn check_len(len: usize, max: u32) -> Result<(), FrameError> {
    let max = max as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(())
}

/// The encoded size of one document item inside a `Changes` frame.
pub(crate) fn item_len(item: &DocItem) -> usize {
    postcard::experimental::serialized_size(&item_wire(item)).unwrap_or(usize::MAX)
}

/// The encoded size of one answer inside a `Docs` frame.
pub(crate) fn docs_item_len(item: &DocsItem) -> usize {
    postcard::experimental::serialized_size(&docs_item_wire(item)).unwrap_or(usize::MAX)
}

/// The encoded size of a frame holding `message`.
pub(crate) fn frame_len(message: &Message) -> usize {
    postcard::experimental::serialized_size(&FrameWire::V1(to_wire(message))).unwrap_or(usize::MAX)
}
