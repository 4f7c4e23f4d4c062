//! The wire codec: round trips, golden bytes of format V1, and refusal of bad input.

use proptest::prelude::*;
use serde_json::json;
use trellis_common::codec::{CodecError, decode_delta, decode_doc, encode_delta, encode_doc};
use trellis_common::crdt::{Mutation, Path};
use trellis_common::delta::Delta;
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::replica::Replica;

const T: u64 = 1_790_000_000_000;

/// A fixed history touching every entry kind: map, leaves of each type, unset,
/// counter parts of two actors, and a deleted document.
fn sample() -> (Replica, Delta) {
    let cars = CollectionName::new("cars").unwrap();
    let one = DocId::from_string("car-1").unwrap();
    let two = DocId::from_json(&json!({"site": "north", "n": 2})).unwrap();
    let mut a = Replica::new(ActorId::from_u64(0xA1));
    let mut b = Replica::new(ActorId::from_u64(0xB2));
    let body = json!({
        "color": "blue", "km": 12, "big": u64::MAX, "ratio": 0.25, "ok": true, "none": null,
        "tags": ["x", {"y": 1}], "engine": {"hp": 90, "fuel": {"kind": "diesel"}}
    });
    a.insert(&cars, &one, &body, T).unwrap();
    a.insert(&cars, &two, &json!({"x": 1}), T + 1).unwrap();
    b.merge_replica(&a, T + 2);
    a.update(
        &cars,
        &one,
        &[Mutation::Increment(Path::parse_dotted("km"), 3.0)],
        T + 3,
    )
    .unwrap();
    b.update(
        &cars,
        &one,
        &[Mutation::Increment(Path::parse_dotted("km"), 4.5)],
        T + 3,
    )
    .unwrap();
    b.update(
        &cars,
        &one,
        &[Mutation::Unset(Path::parse_dotted("none"))],
        T + 4,
    )
    .unwrap();
    b.delete(&cars, &two, T + 5);
    a.merge_replica(&b, T + 6);
    let delta = a.delta_since(&Default::default());
    (a, delta)
}

fn golden(name: &str, bytes: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("TRELLIS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with TRELLIS_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == bytes,
        "the V1 encoding of {name} changed: a format change needs a new version (V2), not an edit of V1"
    );
}

#[test]
fn delta_v1_bytes_match_the_golden_file() {
    let (_, delta) = sample();
    let bytes = encode_delta(&delta);
    golden("delta_v1.bin", &bytes);
    let golden_bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/delta_v1.bin"),
    )
    .unwrap();
    assert_eq!(decode_delta(&golden_bytes).unwrap(), delta);
}

#[test]
fn document_v1_bytes_match_the_golden_file() {
    let (replica, _) = sample();
    let cars = CollectionName::new("cars").unwrap();
    let state = replica
        .state(&cars, &DocId::from_string("car-1").unwrap())
        .unwrap();
    golden("doc_v1.bin", &encode_doc(state));
    assert_eq!(&decode_doc(&encode_doc(state)).unwrap(), state);
    assert_eq!(
        state
            .to_json(&DocId::from_string("car-1").unwrap())
            .unwrap()["km"],
        json!(19.5)
    );
}

#[test]
fn tombstones_encode_compactly() {
    let (replica, _) = sample();
    let cars = CollectionName::new("cars").unwrap();
    let two = DocId::from_json(&json!({"site": "north", "n": 2})).unwrap();
    let tombstone = replica.state(&cars, &two).unwrap();
    assert!(tombstone.is_deleted());
    let bytes = encode_doc(tombstone);
    assert!(bytes.len() <= 24, "tombstone takes {} bytes", bytes.len());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let (_, delta) = sample();
    let bytes = encode_delta(&delta);
    assert_eq!(decode_delta(&[]), Err(CodecError::Empty));
    assert_eq!(
        decode_delta(&bytes[..bytes.len() / 2]),
        Err(CodecError::Truncated)
    );
    let mut newer = bytes.clone();
    newer[0] = 1;
    assert_eq!(decode_delta(&newer), Err(CodecError::UnknownVersion(2)));
    assert_eq!(
        decode_delta(&newer).unwrap_err().to_string(),
        "unknown format version 2 (this build reads version 1; is the peer newer?)"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode_delta(&trailing), Err(CodecError::TrailingBytes(1)));
    let huge = vec![0u8; trellis_common::codec::MAX_DELTA_BYTES + 1];
    assert!(matches!(
        decode_delta(&huge),
        Err(CodecError::TooLarge { .. })
    ));
}

#[test]
fn a_document_whose_entries_are_out_of_order_is_corrupt() {
    // V1, one write, two entries: ["b"] then ["a"] (out of order).
    let mut bytes = vec![0, 1];
    bytes.extend([0xA1, 0, 0, 0, 0, 0, 0, 0]); // actor
    bytes.extend([1, 0, 1]); // ms = 1, logical = 0, seq = 1
    bytes.push(2); // two entries
    bytes.extend([0, 1, 1, b'b', 0, 0]); // shared 0, ["b"], write 0, Map
    bytes.extend([0, 1, 1, b'a', 0, 0]); // shared 0, ["a"], write 0, Map
    let err = decode_doc(&bytes).unwrap_err();
    assert_eq!(err, CodecError::Corrupt("entries out of order".to_owned()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_doc(&bytes);
        let _ = decode_delta(&bytes);
    }

    #[test]
    fn corrupting_one_byte_is_an_error_or_another_valid_value(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (_, delta) = sample();
        let mut bytes = encode_delta(&delta);
        let i = index.index(bytes.len());
        bytes[i] = byte;
        if let Ok(decoded) = decode_delta(&bytes) {
            // Whatever decodes must survive a re-encode: no value that only one side
            // of a sync would see.
            prop_assert_eq!(decode_delta(&encode_delta(&decoded)).unwrap(), decoded);
        }
    }
}
