//! The wire codec: round trips, golden bytes of format V1 and of the insert form, and
//! refusal of bad input.

use proptest::prelude::*;
use serde_json::json;
use trellis_common::clock::Hlc;
use trellis_common::codec::{
    CodecError, FORM_INSERT, decode_delta, decode_doc, encode_delta, encode_doc, encode_insert,
};
use trellis_common::crdt::{DocState, Dot, Mutation, Path, Stamp, WriteContext};
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

/// A document in the insert form: every leaf kind, a nested object, an empty one and an
/// array, with the root's `_id` left out.
fn sample_insert() -> (WriteContext, serde_json::Value) {
    let body = json!({
        "_id": "car-9",
        "model": "T",
        "doors": 4,
        "big": u64::MAX,
        "price": -1.5,
        "electric": true,
        "notes": null,
        "tags": ["a", 1],
        "engine": {"hp": 90, "spare": {}},
    });
    (insert_context(T, 3, 42), body)
}

#[test]
fn insert_form_bytes_match_the_golden_file() {
    let (ctx, body) = sample_insert();
    let bytes = encode_insert(ctx, &body).unwrap();
    golden("doc_insert.bin", &bytes);
    assert_eq!(
        decode_doc(&bytes).unwrap(),
        DocState::insert_delta(ctx, &body).unwrap()
    );
}

#[test]
fn an_insert_form_document_is_smaller_than_its_v1_encoding() {
    let (ctx, body) = sample_insert();
    let state = DocState::insert_delta(ctx, &body).unwrap();
    let (insert, v1) = (encode_insert(ctx, &body).unwrap(), encode_doc(&state));
    assert!(
        insert.len() < v1.len(),
        "{} vs {} bytes",
        insert.len(),
        v1.len()
    );
}

#[test]
fn bad_insert_form_input_gets_a_clear_error() {
    let (ctx, body) = sample_insert();
    let bytes = encode_insert(ctx, &body).unwrap();
    for end in 1..bytes.len() {
        assert!(
            decode_doc(&bytes[..end]).is_err(),
            "a prefix of {end} bytes"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode_doc(&trailing), Err(CodecError::TrailingBytes(1)));
    // Form, actor, the timestamp (ms = 1, logical = 0) and the sequence number.
    let header = |seq: u8| {
        let mut bytes = vec![FORM_INSERT];
        bytes.extend(ActorId::from_u64(0x5EED).to_bytes());
        bytes.extend(Hlc::new(1, 0).to_raw().to_le_bytes());
        bytes.push(seq);
        bytes
    };
    let doc = |fields: &[&[u8]]| {
        let mut bytes = header(1);
        bytes.extend(fields.concat());
        bytes
    };
    let corrupt = |what: &str| Err(CodecError::Corrupt(what.to_owned()));
    // Fields: key length + 1, key, kind (0 = object, 1 = value + leaf); 0 ends an object.
    let empty = DocState::insert_delta(insert_context(1, 0, 1), &json!({})).unwrap();
    assert_eq!(decode_doc(&doc(&[&[0]])), Ok(empty));
    assert_eq!(
        decode_doc(&doc(&[&[2, b'a', 1, 0], &[2, b'a', 1, 0], &[0]])),
        corrupt("an object repeats a key")
    );
    assert_eq!(
        decode_doc(&doc(&[&[4, b'_', b'i', b'd', 1, 0], &[0]])),
        corrupt("`_id` is the document's key, not a field")
    );
    assert_eq!(
        decode_doc(&doc(&[&[2, b'a', 9], &[0]])),
        corrupt("a field is neither an object nor a value")
    );
    assert_eq!(
        decode_doc(&doc(&[&[2, 0xff, 1, 0], &[0]])),
        corrupt("a key is not UTF-8")
    );
    assert_eq!(
        decode_doc(&doc(&[&[2, b'a', 1, 6, 1, b'x'], &[0]])),
        corrupt("array value is not a JSON array")
    );
    let mut zero_seq = header(0);
    zero_seq.push(0);
    assert_eq!(
        decode_doc(&zero_seq),
        corrupt("write with a zero sequence number")
    );
    // Objects nested 64 deep, the innermost empty, are the limit; 65 are one too many.
    let deep = |depth: usize| {
        let mut fields: Vec<&[u8]> = vec![&[2, b'n', 0]; depth];
        fields.extend(vec![&[0u8][..]; depth + 1]);
        doc(&fields)
    };
    assert!(decode_doc(&deep(64)).is_ok());
    assert_eq!(decode_doc(&deep(65)), corrupt("path deeper than 64"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_doc(&bytes);
        let _ = decode_delta(&bytes);
        // The same bytes as the fields of an insert-form document.
        let header = [FORM_INSERT, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 2, 3, 4, 5, 6, 1];
        let _ = decode_doc(&[&header[..], &bytes].concat());
    }

    #[test]
    fn corrupting_one_byte_of_an_insert_is_an_error_or_another_valid_value(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (ctx, body) = sample_insert();
        let mut bytes = encode_insert(ctx, &body).unwrap();
        let i = index.index(bytes.len());
        bytes[i] = byte;
        if let Ok(decoded) = decode_doc(&bytes) {
            prop_assert_eq!(decode_doc(&encode_doc(&decoded)).unwrap(), decoded);
        }
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

/// Keys that sort in awkward ways: empty, prefixes of each other, dots, non-ASCII, and
/// `_id` (skipped at the root only).
fn awkward_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(""),
        Just("a"),
        Just("aa"),
        Just("a.b"),
        Just("B"),
        Just("_id"),
        Just("é"),
        Just("a\u{0}"),
    ]
    .prop_map(str::to_owned)
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ]
}

/// Arbitrary JSON: nested objects (maps in the document) and arrays (leaves) of
/// anything, keys in arbitrary insertion order.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
            prop::collection::vec((awkward_key(), inner), 0..5)
                .prop_map(|fields| serde_json::Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn insert_context(ms: u64, logical: u16, seq: u64) -> WriteContext {
    let actor = ActorId::from_u64(0x5EED);
    WriteContext {
        stamp: Stamp {
            hlc: Hlc::new(ms, logical),
            actor,
        },
        dot: Dot { actor, seq },
    }
}

/// What the insert form of inserting `body` decodes to.
fn decoded_insert(ctx: WriteContext, body: &serde_json::Value) -> DocState {
    let encoded = encode_insert(ctx, body).expect("an object nested within the limit");
    assert_eq!(encoded[0], FORM_INSERT);
    decode_doc(&encoded).expect("an insert decodes")
}

/// A body nested `depth` objects deep (`{"n": {"n": ... {"leaf": 1}}}`).
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(json!({"leaf": 1}), |inner, _| json!({ "n": inner }))
}

#[test]
fn encoding_an_insert_refuses_what_building_it_refuses() {
    let ctx = insert_context(T, 0, 1);
    for body in [json!([1]), json!("text"), nested(64), nested(70)] {
        assert!(encode_insert(ctx, &body).is_none());
        assert!(DocState::insert_delta(ctx, &body).is_err());
    }
    let deepest = nested(63);
    let state = DocState::insert_delta(ctx, &deepest).unwrap();
    assert_eq!(decoded_insert(ctx, &deepest), state);
}

#[test]
fn an_insert_holding_arrays_of_any_length_decodes_to_the_state_it_creates() {
    let ctx = insert_context(T, 0, 1);
    // JSON texts of 127, 128 and 20,000 bytes: one-, two- and three-byte lengths.
    for len in [127, 128, 20_000] {
        let text = "x".repeat(len - 4);
        let body = json!({"a": [text], "b": {"c": [1, 2]}});
        assert_eq!(body["a"].to_string().len(), len);
        let state = DocState::insert_delta(ctx, &body).unwrap();
        assert_eq!(decoded_insert(ctx, &body), state);
    }
}

#[test]
fn an_insert_holding_arrays_of_any_content_decodes_to_the_state_it_creates() {
    let ctx = insert_context(T, 0, 1);
    let body = json!({
        "plain": ["field", "t1", "", "é ✓"],
        "escaped": ["quote\"", "back\\slash", "tab\t", "nul\u{0}", "del\u{7f}"],
        "mixed": [1, -2, 2.5, 1e300, true, null, [], [["deep"]], {"b": 1, "a": ["x"]}],
        "empty": [],
    });
    let state = DocState::insert_delta(ctx, &body).unwrap();
    assert_eq!(decoded_insert(ctx, &body), state);
}

#[test]
fn an_insert_stamped_with_numbers_of_every_varint_length_decodes_to_its_state() {
    let small = json!({"a": 1});
    // 200 fields: the entry count takes two bytes.
    let wide: serde_json::Value = (0..200).map(|i| (format!("f{i}"), json!(i))).collect();
    for body in [small, wide] {
        for ms in [1, 127, 128, 16_384, (1 << 48) - 1] {
            for logical in [0, 127, 128, u16::MAX] {
                for seq in [1, 127, 128, 1 << 35, u64::MAX] {
                    let ctx = insert_context(ms, logical, seq);
                    let state = DocState::insert_delta(ctx, &body).unwrap();
                    assert_eq!(
                        decoded_insert(ctx, &body),
                        state,
                        "ms {ms}, logical {logical}, seq {seq}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn an_insert_decodes_to_the_state_it_creates(
        fields in prop::collection::vec((awkward_key(), json_value()), 0..8),
        ms in 1u64..(1 << 48),
        logical in any::<u16>(),
        seq in 1u64..u64::MAX,
    ) {
        let body = serde_json::Value::Object(fields.into_iter().collect());
        let ctx = insert_context(ms, logical, seq);
        let state = DocState::insert_delta(ctx, &body).unwrap();
        let encoded = encode_insert(ctx, &body).unwrap();
        prop_assert_eq!(encoded[0], FORM_INSERT);
        prop_assert_eq!(decode_doc(&encoded).unwrap(), state);
    }
}
