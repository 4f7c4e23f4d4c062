//! Sync frames: golden bytes of a `Hello`, round trips of every message, and refusal of
//! bad input with a clear error.

use serde_json::json;
use trellis_common::clock::Hlc;
use trellis_common::crdt::{DocState, Dot, Stamp, WriteContext};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::sync::frame::{
    self, BatchId, BlobChunk, BlobWant, Changes, Check, DocItem, DocReply, Docs, DocsItem, Frame,
    FrameError, Heads, Hello, InterestEntry, LinkInfo, Links, Message, Pull, Subscribe, Want,
    WantItem,
};
use trellis_common::sync::{Capabilities, Digest, Incarnation, QueryId};

const MAX: u32 = frame::DEFAULT_MAX_FRAME_BYTES;

fn hello() -> Hello {
    Hello {
        protocol: 1,
        node_id: vec![7; 32],
        actor: ActorId::from_u64(0xA1),
        incarnation: Incarnation::from_u64(42),
        capabilities: Capabilities::ALL,
        max_frame_bytes: MAX,
        admission: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The V1 bytes of a Hello. A change here is a wire format change: it needs a new
/// version (`Frame::V2`), not an edit of V1.
const HELLO_V1: &str = concat!(
    "00", // Frame::V1
    "00", // Message::Hello
    "01", // protocol 1
    "20",
    "0707070707070707070707070707070707070707070707070707070707070707", // node id
    "00000000000000a1",                                                 // actor
    "0000000000000000000000000000002a",                                 // incarnation
    "07",                                                               // capabilities
    "80808002",                                                         // max frame 4 MiB
    "00",                                                               // admission: none
);

#[test]
fn hello_v1_bytes_are_pinned() {
    let bytes = frame::encode(&Frame::V1(Message::Hello(hello())), MAX).unwrap();
    assert_eq!(hex(&bytes), HELLO_V1);
    assert_eq!(
        frame::decode(&bytes, MAX).unwrap(),
        Frame::V1(Message::Hello(hello()))
    );
}

fn state() -> DocState {
    let actor = ActorId::from_u64(3);
    let ctx = WriteContext {
        stamp: Stamp {
            hlc: Hlc::new(1_790_000_000_000, 1),
            actor,
        },
        dot: Dot { actor, seq: 9 },
    };
    DocState::insert_delta(
        ctx,
        &json!({"color": "blue", "km": 4, "engine": {"hp": 90}}),
    )
    .unwrap()
}

/// A fragment of `state()` that does not match.
fn fragment(id: &DocId, check: Check, piece: u32, pieces: u32) -> DocItem {
    DocItem {
        id: id.clone(),
        matches: false,
        check,
        piece,
        pieces,
        state: state(),
    }
}

fn every_message() -> Vec<Message> {
    let cars = CollectionName::new("cars").unwrap();
    let id = DocId::from_json(&json!({"site": "north", "n": 2})).unwrap();
    let query = QueryId::of("SELECT * FROM cars");
    vec![
        Message::Hello(Hello {
            admission: Some(vec![1, 2, 3]),
            ..hello()
        }),
        Message::Subscribe(Subscribe {
            version: 3,
            queries: vec![InterestEntry {
                query: "SELECT * FROM cars".to_owned(),
                hops: 2,
            }],
        }),
        Message::Subscribed { version: 3 },
        Message::Pull(Pull {
            pull_id: 7,
            base: 100,
            interest_version: 3,
            queries: vec!["SELECT * FROM cars".to_owned()],
        }),
        Message::Changes(Changes {
            batch: BatchId::Push(4),
            collection: cars.clone(),
            queries: vec![query],
            base: 100,
            upto: 120,
            part: 1,
            parts: 2,
            names_all: false,
            docs: vec![
                fragment(&id, Check::Digest(Digest::of(&state())), 0, 1),
                fragment(&id, Check::Shadow, 0, 1),
                fragment(&id, Check::Shadow, 1, 3),
            ],
        }),
        Message::Want(Want {
            docs: vec![WantItem {
                collection: cars.clone(),
                id: id.clone(),
                digest: None,
            }],
        }),
        Message::Docs(Docs {
            docs: vec![
                DocsItem {
                    collection: cars.clone(),
                    id: id.clone(),
                    reply: DocReply::State {
                        piece: 0,
                        pieces: 1,
                        state: state(),
                    },
                },
                DocsItem {
                    collection: cars,
                    id,
                    reply: DocReply::Missing,
                },
            ],
        }),
        Message::Heads(Heads {
            heads: vec![(query, 120)],
        }),
        Message::BlobWant(BlobWant {
            hash: [9; 32],
            chunks: vec![0, 5],
        }),
        Message::BlobChunk(BlobChunk {
            hash: [9; 32],
            index: 5,
            total: 6,
            data: vec![1, 2, 3],
        }),
        Message::Links(Links {
            origin: vec![1; 32],
            version: 2,
            links: vec![LinkInfo {
                peer: vec![2; 32],
                kind: "tcp".to_owned(),
                rtt_ms: 3,
                bytes_in: 10,
                bytes_out: 20,
            }],
        }),
        Message::Ping { nonce: 5 },
        Message::Pong { nonce: 5 },
        Message::Goodbye {
            reason: "bye".to_owned(),
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for message in every_message() {
        let frame = Frame::V1(message);
        let bytes = frame::encode(&frame, MAX).unwrap();
        assert_eq!(frame::decode(&bytes, MAX).unwrap(), frame, "{frame:?}");
    }
}

#[test]
fn the_frame_limit_is_enforced_on_encode_and_decode() {
    let frame = Frame::V1(Message::Goodbye {
        reason: "x".repeat(100),
    });
    assert!(matches!(
        frame::encode(&frame, 50),
        Err(FrameError::TooLarge { max: 50, .. })
    ));
    let bytes = frame::encode(&frame, MAX).unwrap();
    assert_eq!(
        frame::decode(&bytes, 50),
        Err(FrameError::TooLarge {
            len: bytes.len(),
            max: 50
        })
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    assert_eq!(frame::decode(&[], MAX), Err(FrameError::Empty));
    let error = frame::decode(&[1, 0, 0], MAX).unwrap_err();
    assert_eq!(error, FrameError::UnknownVersion(2));
    assert!(
        error.to_string().contains("version 2 is unknown"),
        "{error}"
    );
    let bytes = frame::encode(&Frame::V1(Message::Hello(hello())), MAX).unwrap();
    assert_eq!(
        frame::decode(&bytes[..bytes.len() - 3], MAX),
        Err(FrameError::Truncated)
    );
    let mut long = bytes.clone();
    long.extend_from_slice(&[0, 0]);
    assert_eq!(frame::decode(&long, MAX), Err(FrameError::TrailingBytes(2)));
    // An unknown message variant.
    assert!(matches!(
        frame::decode(&[0, 99], MAX),
        Err(FrameError::Corrupt(_))
    ));
    // A document id that is not canonical JSON.
    let want = Frame::V1(Message::Want(Want {
        docs: vec![WantItem {
            collection: CollectionName::new("cars").unwrap(),
            id: DocId::from_string("ab").unwrap(),
            digest: None,
        }],
    }));
    let mut bytes = frame::encode(&want, MAX).unwrap();
    let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
    bytes[at - 1] = b'x'; // the opening quote
    let error = frame::decode(&bytes, MAX).unwrap_err();
    assert!(error.to_string().contains("_id"), "{error}");
    // A part index beyond the part count.
    let Message::Changes(mut changes) = every_message().swap_remove(4) else {
        unreachable!()
    };
    changes.part = 2;
    let bytes = frame::encode(&Frame::V1(Message::Changes(changes)), MAX).unwrap();
    let error = frame::decode(&bytes, MAX).unwrap_err();
    assert!(error.to_string().contains("part 2 of 2"), "{error}");
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x1234_5678;
    for len in 0..2_000 {
        let bytes: Vec<u8> = (0..len % 97)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = frame::decode(&bytes, MAX);
        let mut prefixed = vec![0];
        prefixed.extend_from_slice(&bytes);
        let _ = frame::decode(&prefixed, MAX);
    }
}
