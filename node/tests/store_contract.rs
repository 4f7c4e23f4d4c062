//! The store contract: one suite of behaviours, run against every backend
//! ([`MemoryStore`] and [`RocksStore`]), plus a property test that compares the store
//! with the in-memory reference replica of `trellis-common` on random histories, and
//! the RocksDB-only behaviours (reopening, corruption, format version).

mod store_support;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::ops::Bound;

use proptest::prelude::*;
use serde_json::{Value, json};
use tempfile::TempDir;
use trellis_common::clock::Hlc;
use trellis_common::crdt::{DocState, Dot, Mutation, Path, Stamp, VersionVector, WriteContext};
use trellis_common::delta::{Delta, DocChange};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::replica::Replica;
use trellis_node::store::blobs::CHUNK_SIZE;
use trellis_node::store::{
    AttachmentToken, BlobHash, BlobReader, BlobStore, Durability, FORMAT_VERSION, IndexDef,
    MAX_DOC_BYTES, MemoryStore, RocksOptions, RocksStore, Store, StoreError, WARN_DOC_BYTES,
    WriteBatch, attachment_refs, cf, keys,
};

const T: u64 = 1_790_000_000_000;

fn coll(name: &str) -> CollectionName {
    CollectionName::new(name).unwrap()
}

fn id(name: &str) -> DocId {
    DocId::from_string(name).unwrap()
}

fn replica(n: u64) -> Replica {
    Replica::new(ActorId::from_u64(n))
}

fn apply(store: &dyn Store, delta: &Delta) -> trellis_node::store::Applied {
    store.apply(&WriteBatch::from(delta.clone())).unwrap()
}

fn json_of(store: &dyn Store, c: &CollectionName, i: &DocId) -> Option<Value> {
    store.get(c, i).unwrap()?.to_json(i)
}

fn set(path: &str, value: Value) -> Mutation {
    Mutation::Set(Path::parse_dotted(path), value)
}

fn ids(list: &[&str]) -> Vec<DocId> {
    list.iter().map(|s| id(s)).collect()
}

/// A delta inserting `body` as `actor`'s write number `seq`, built without a replica.
fn insert_delta(actor: u64, seq: u64, c: &CollectionName, i: &DocId, body: &Value) -> Delta {
    let actor = ActorId::from_u64(actor);
    let ctx = WriteContext {
        stamp: Stamp {
            hlc: Hlc::new(T, seq as u16),
            actor,
        },
        dot: Dot { actor, seq },
    };
    Delta {
        since: [(actor, seq - 1)].into_iter().collect(),
        until: [(actor, seq)].into_iter().collect(),
        changes: vec![DocChange {
            collection: c.clone(),
            id: i.clone(),
            state: DocState::insert_delta(ctx, body).unwrap(),
        }],
    }
}

// ---------------------------------------------------------------------------------------
// The suite: each function is one behaviour, run against every backend by `contract!`.

fn local_writes_are_stored_and_read_back(store: &dyn Store) {
    let mut a = replica(1);
    let cars = coll("cars");
    let d = a
        .insert(
            &cars,
            &id("c1"),
            &json!({"color": "blue", "engine": {"hp": 90}}),
            T,
        )
        .unwrap();
    let applied = apply(store, &d);
    assert_eq!(applied.advanced, vec![true]);
    let d = a
        .update(&cars, &id("c1"), &[set("engine.hp", json!(110))], T + 1)
        .unwrap();
    apply(store, &d);
    assert_eq!(
        json_of(store, &cars, &id("c1")),
        Some(json!({"_id": "c1", "color": "blue", "engine": {"hp": 110}}))
    );
    assert_eq!(
        store.get(&cars, &id("c1")).unwrap().as_ref(),
        a.state(&cars, &id("c1"))
    );
    assert_eq!(store.get(&cars, &id("nope")).unwrap(), None);
    assert_eq!(store.version(), *a.version());
}

fn remote_deltas_merge_with_local_writes(store: &dyn Store) {
    let cars = coll("cars");
    let mut a = replica(1);
    let mut b = replica(2);
    let d = a
        .insert(&cars, &id("c1"), &json!({"color": "blue", "hp": 90}), T)
        .unwrap();
    apply(store, &d);
    b.apply(&d, T);
    // Concurrent edits of different fields, one local, one remote: both survive.
    let local = a
        .update(&cars, &id("c1"), &[set("color", json!("red"))], T + 5)
        .unwrap();
    let remote = b
        .update(&cars, &id("c1"), &[set("hp", json!(120))], T + 5)
        .unwrap();
    apply(store, &remote);
    apply(store, &local);
    assert_eq!(
        json_of(store, &cars, &id("c1")),
        Some(json!({"_id": "c1", "color": "red", "hp": 120}))
    );
    let both: VersionVector = [(ActorId::from_u64(1), 2), (ActorId::from_u64(2), 1)]
        .into_iter()
        .collect();
    assert_eq!(store.version(), both);
}

fn scan_pages_in_id_order_within_one_collection(store: &dyn Store) {
    let mut a = replica(1);
    for c in ["a", "a-b", "ab", "b"] {
        for i in ["k3", "k1", "k2", "k10"] {
            let d = a.insert(&coll(c), &id(i), &json!({"c": c}), T).unwrap();
            apply(store, &d);
        }
    }
    let names = |page: &[(DocId, DocState)]| -> Vec<String> {
        page.iter().map(|(i, _)| i.to_string()).collect()
    };
    let all = store.scan(&coll("a"), None, 100).unwrap();
    assert_eq!(names(&all), ["k1", "k10", "k2", "k3"]);
    assert!(all.iter().all(|(i, s)| s.to_json(i).unwrap()["c"] == "a"));
    let first = store.scan(&coll("a-b"), None, 2).unwrap();
    assert_eq!(names(&first), ["k1", "k10"]);
    let rest = store.scan(&coll("a-b"), Some(&id("k10")), 2).unwrap();
    assert_eq!(names(&rest), ["k2", "k3"]);
    assert!(
        store
            .scan(&coll("a-b"), Some(&id("k3")), 2)
            .unwrap()
            .is_empty()
    );
    assert!(store.scan(&coll("zzz"), None, 10).unwrap().is_empty());
    assert_eq!(
        store.collections().unwrap(),
        vec![coll("a"), coll("a-b"), coll("ab"), coll("b")]
    );
}

fn deleted_documents_stay_as_tombstones(store: &dyn Store) {
    let cars = coll("cars");
    let mut a = replica(1);
    let insert = a
        .insert(&cars, &id("c1"), &json!({"color": "blue"}), T)
        .unwrap();
    apply(store, &insert);
    let delete = a.delete(&cars, &id("c1"), T + 1);
    let applied = apply(store, &delete);
    assert!(applied.docs[0].existed_before() && !applied.docs[0].exists_after());
    let state = store
        .get(&cars, &id("c1"))
        .unwrap()
        .expect("the tombstone stays");
    assert!(state.is_deleted());
    assert_eq!(state.to_json(&id("c1")), None);
    assert_eq!(store.scan(&cars, None, 10).unwrap().len(), 1);
    // An old peer sending the insert again does not resurrect the document.
    let applied = apply(store, &insert);
    assert!(applied.docs.is_empty());
    assert!(store.get(&cars, &id("c1")).unwrap().unwrap().is_deleted());
}

fn version_advances_only_when_since_is_covered(store: &dyn Store) {
    let cars = coll("cars");
    let mut a = replica(1);
    let first = a.insert(&cars, &id("c1"), &json!({"n": 1}), T).unwrap();
    let second = a.insert(&cars, &id("c2"), &json!({"n": 2}), T + 1).unwrap();
    let mut reference = replica(9);

    // The second write arrives first: its document is merged, the vector stays.
    let applied = apply(store, &second);
    assert_eq!(applied.advanced, vec![reference.apply(&second, T)]);
    assert_eq!(applied.advanced, vec![false]);
    assert!(store.version().is_empty());
    assert!(json_of(store, &cars, &id("c2")).is_some());

    let applied = apply(store, &first);
    assert_eq!(applied.advanced, vec![reference.apply(&first, T)]);
    assert_eq!(store.version(), *reference.version());
    assert_eq!(store.version().get(ActorId::from_u64(1)), 1);

    // Redelivered, the second write now advances the vector without changing documents.
    let applied = apply(store, &second);
    assert!(applied.docs.is_empty());
    assert_eq!(applied.advanced, vec![reference.apply(&second, T)]);
    assert_eq!(store.version(), *reference.version());
    assert_eq!(applied.version, store.version());
}

fn a_batch_applies_its_deltas_in_order_in_one_commit(store: &dyn Store) {
    let cars = coll("cars");
    let mut a = replica(1);
    let d1 = a.insert(&cars, &id("c1"), &json!({"n": 1}), T).unwrap();
    let d2 = a
        .update(&cars, &id("c1"), &[set("n", json!(2))], T + 1)
        .unwrap();
    let d3 = a.insert(&cars, &id("c2"), &json!({"n": 3}), T + 2).unwrap();
    let batch: WriteBatch = [d1, d2, d3].into_iter().collect();
    let applied = store.apply(&batch).unwrap();
    assert_eq!(applied.advanced, vec![true, true, true]);
    assert!(applied.all_advanced());
    // One entry per document, before the batch and after all of it.
    assert_eq!(applied.docs.len(), 2);
    assert_eq!(applied.docs[0].before, None);
    assert_eq!(
        applied.docs[0].after_json(),
        Some(json!({"_id": "c1", "n": 2}))
    );
    assert_eq!(store.version().get(ActorId::from_u64(1)), 3);
}

/// Reads `wanted` with `get_many` and with `get` one by one, and checks they agree.
fn check_get_many(store: &dyn Store, c: &CollectionName, wanted: &[DocId]) {
    let refs: Vec<&DocId> = wanted.iter().collect();
    let together: Vec<Option<DocState>> = store
        .get_many(c, &refs)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let one_by_one: Vec<Option<DocState>> =
        wanted.iter().map(|i| store.get(c, i).unwrap()).collect();
    assert_eq!(together.len(), wanted.len());
    for ((i, a), b) in wanted.iter().zip(&together).zip(&one_by_one) {
        assert_eq!(a, b, "{c}/{i}");
    }
}

fn get_many_reads_what_get_reads(store: &dyn Store) {
    let (cars, vans) = (coll("cars"), coll("vans"));
    let key = |n: usize| id(&format!("k-{n:04}"));
    let mut a = replica(1);
    // Every even key of 600 in `cars`, a few in `vans` (after `cars` in key order),
    // one of them deleted.
    let mut batch: Vec<Delta> = (0..600)
        .step_by(2)
        .map(|n| a.insert(&cars, &key(n), &json!({ "n": n }), T).unwrap())
        .collect();
    batch.extend((0..10).map(|n| a.insert(&vans, &key(n), &json!({ "v": n }), T).unwrap()));
    batch.push(a.delete(&cars, &key(10), T + 1));
    store.apply(&batch.into_iter().collect()).unwrap();
    assert!(
        store
            .get(&cars, &key(10))
            .unwrap()
            .is_some_and(|s| !s.is_live())
    );

    // New ids past every stored one (`vans` holds keys after them).
    check_get_many(store, &cars, &(600..700).map(key).collect::<Vec<_>>());
    // Every key of a range, present and absent by turns, out of order and twice.
    let mut close: Vec<DocId> = (0..64).rev().map(key).collect();
    close.extend((0..8).map(key));
    check_get_many(store, &cars, &close);
    // Ids scattered among many stored ones, more than the walk seeks for.
    let scattered: Vec<DocId> = (0..600).step_by(7).rev().map(key).collect();
    check_get_many(store, &cars, &scattered);
    // A few ids, and none.
    check_get_many(store, &vans, &[key(3), key(11)]);
    check_get_many(store, &vans, &[]);
    // The other collection, from before its first key to past its last.
    check_get_many(store, &vans, &(0..20).map(key).collect::<Vec<_>>());
    check_get_many(store, &coll("none"), &(0..20).map(key).collect::<Vec<_>>());
}

fn applied_reports_before_and_after_of_changed_documents_only(store: &dyn Store) {
    let cars = coll("cars");
    let mut a = replica(1);
    let d = a.insert(&cars, &id("c1"), &json!({"n": 1}), T).unwrap();
    let applied = apply(store, &d);
    assert_eq!(applied.docs.len(), 1);
    let doc = &applied.docs[0];
    assert_eq!((&doc.collection, &doc.id), (&cars, &id("c1")));
    assert!(!doc.existed_before() && doc.exists_after());
    assert_eq!(doc.before_json(), None);
    // A duplicate changes nothing and reports nothing.
    assert!(apply(store, &d).docs.is_empty());
    let d = a
        .update(&cars, &id("c1"), &[set("n", json!(2))], T + 1)
        .unwrap();
    let applied = apply(store, &d);
    assert_eq!(
        applied.docs[0].before_json(),
        Some(json!({"_id": "c1", "n": 1}))
    );
    assert_eq!(
        applied.docs[0].after_json(),
        Some(json!({"_id": "c1", "n": 2}))
    );
    assert!(applied.warnings.is_empty());
}

fn docs_changed_since_finds_exactly_the_documents_a_peer_lacks(store: &dyn Store) {
    let cars = coll("cars");
    let trucks = coll("trucks");
    let mut a = replica(1);
    let mut b = replica(2);
    for d in [
        a.insert(&cars, &id("c1"), &json!({"n": 1}), T).unwrap(),
        a.insert(&cars, &id("c2"), &json!({"n": 2}), T).unwrap(),
        a.insert(&trucks, &id("t1"), &json!({"n": 3}), T).unwrap(),
    ] {
        apply(store, &d);
        b.apply(&d, T);
    }
    // b re-inserts c1: the new insert supersedes every entry of a's write 1 in c1.
    let d = b
        .insert(&cars, &id("c1"), &json!({"n": 10}), T + 5)
        .unwrap();
    apply(store, &d);
    let vv = |pairs: &[(u64, u64)]| -> VersionVector {
        pairs
            .iter()
            .map(|(a, s)| (ActorId::from_u64(*a), *s))
            .collect()
    };
    let changed = |seen: VersionVector| store.docs_changed_since(&seen).unwrap();
    let all = vec![
        (cars.clone(), id("c1")),
        (cars.clone(), id("c2")),
        (trucks.clone(), id("t1")),
    ];
    assert_eq!(changed(vv(&[])), all);
    // Knowing b's write but none of a's: c1 no longer holds a's write 1.
    assert_eq!(changed(vv(&[(2, 1)])), all[1..].to_vec());
    assert_eq!(changed(vv(&[(1, 1), (2, 1)])), all[1..].to_vec());
    assert_eq!(changed(vv(&[(1, 2)])), vec![all[0].clone(), all[2].clone()]);
    assert_eq!(changed(vv(&[(1, 3)])), vec![all[0].clone()]);
    assert!(changed(vv(&[(1, 3), (2, 1)])).is_empty());
    assert!(changed(vv(&[(1, u64::MAX), (2, u64::MAX)])).is_empty());
}

fn delta_since_brings_a_peer_up_to_date(store: &dyn Store) {
    let cars = coll("cars");
    let mut a = replica(1);
    let mut peer = replica(2);
    let d = a
        .insert(&cars, &id("c1"), &json!({"n": 1, "k": {"x": 1}}), T)
        .unwrap();
    apply(store, &d);
    peer.apply(&d, T);
    for d in [
        a.update(
            &cars,
            &id("c1"),
            &[
                set("k.y", json!(2)),
                Mutation::Increment(Path::parse_dotted("n"), 4.0),
            ],
            T + 1,
        )
        .unwrap(),
        a.insert(&cars, &id("c2"), &json!({"m": true}), T + 2)
            .unwrap(),
        a.delete(&cars, &id("c2"), T + 3),
    ] {
        apply(store, &d);
    }
    let delta = store.delta_since(peer.version()).unwrap();
    assert_eq!(delta.until, store.version());
    assert!(peer.apply(&delta, T));
    assert_eq!(peer.version(), a.version());
    assert_eq!(peer.state(&cars, &id("c1")), a.state(&cars, &id("c1")));
    assert_eq!(peer.state(&cars, &id("c2")), a.state(&cars, &id("c2")));
    assert!(
        store
            .delta_since(peer.version())
            .unwrap()
            .changes
            .is_empty()
    );
}

fn indexes_are_built_from_existing_documents_and_maintained(store: &dyn Store) {
    let people = coll("people");
    let mut a = replica(1);
    for (i, body) in [
        ("p1", json!({"age": 30, "name": "ann"})),
        ("p2", json!({"age": 25.5})),
        ("p3", json!({"age": "old"})),
        ("p4", json!({"name": "no age"})),
        ("p5", json!({"age": 30})),
        ("p6", json!({"age": 41})),
    ] {
        apply(store, &a.insert(&people, &id(i), &body, T).unwrap());
    }
    apply(store, &a.delete(&people, &id("p6"), T));
    // Another collection's documents stay out of the index.
    apply(
        store,
        &a.insert(&coll("pets"), &id("x"), &json!({"age": 3}), T)
            .unwrap(),
    );

    let def = IndexDef::new("by_age", people.clone(), vec!["age".to_owned()]).unwrap();
    store.create_index(&def).unwrap();
    assert_eq!(store.indexes(), vec![def.clone()]);
    let scan = |lo: Bound<&Value>, hi: Bound<&Value>| store.index_scan("by_age", lo, hi).unwrap();
    use Bound::{Excluded, Included, Unbounded};
    // Numbers before strings; missing and deleted documents are not indexed.
    assert_eq!(scan(Unbounded, Unbounded), ids(&["p2", "p1", "p5", "p3"]));
    assert_eq!(
        scan(Included(&json!(30)), Included(&json!(30.0))),
        ids(&["p1", "p5"])
    );
    assert_eq!(
        scan(Excluded(&json!(25.5)), Unbounded),
        ids(&["p1", "p5", "p3"])
    );
    assert_eq!(scan(Unbounded, Excluded(&json!(30))), ids(&["p2"]));
    assert_eq!(scan(Included(&json!("")), Unbounded), ids(&["p3"]));
    assert!(scan(Excluded(&json!(30)), Excluded(&json!(30))).is_empty());

    // Maintained on update, unset, delete and re-insert.
    apply(
        store,
        &a.update(&people, &id("p1"), &[set("age", json!(20))], T + 1)
            .unwrap(),
    );
    apply(
        store,
        &a.update(&people, &id("p4"), &[set("age", json!(26))], T + 1)
            .unwrap(),
    );
    apply(
        store,
        &a.update(
            &people,
            &id("p3"),
            &[Mutation::Unset(Path::parse_dotted("age"))],
            T + 1,
        )
        .unwrap(),
    );
    apply(store, &a.delete(&people, &id("p5"), T + 1));
    apply(
        store,
        &a.insert(&people, &id("p6"), &json!({"age": 1}), T + 2)
            .unwrap(),
    );
    assert_eq!(scan(Unbounded, Unbounded), ids(&["p6", "p1", "p2", "p4"]));
    assert_eq!(
        scan(Included(&json!(20)), Included(&json!(26))),
        ids(&["p1", "p2", "p4"])
    );

    assert!(store.drop_index("by_age").unwrap());
    assert!(!store.drop_index("by_age").unwrap());
    assert!(store.indexes().is_empty());
    assert!(matches!(
        store.index_scan("by_age", Unbounded, Unbounded),
        Err(StoreError::UnknownIndex(name)) if name == "by_age"
    ));
    // Recreated, it is rebuilt from the documents as they are now.
    store.create_index(&def).unwrap();
    assert_eq!(scan(Unbounded, Unbounded), ids(&["p6", "p1", "p2", "p4"]));
}

fn nested_paths_and_structured_values_are_indexed_in_query_order(store: &dyn Store) {
    let things = coll("things");
    let mut a = replica(1);
    store
        .create_index(
            &IndexDef::new("by_v", things.clone(), vec!["m".to_owned(), "v".to_owned()]).unwrap(),
        )
        .unwrap();
    store
        .create_index(&IndexDef::new("by_id", things.clone(), vec!["_id".to_owned()]).unwrap())
        .unwrap();
    for (i, v) in [
        ("t1", json!({"b": 1})),
        ("t2", json!([10])),
        ("t3", json!([9, 1])),
        ("t4", json!(null)),
        ("t5", json!(true)),
        ("t6", json!("s")),
        ("t7", json!(-3)),
    ] {
        apply(
            store,
            &a.insert(&things, &id(i), &json!({"m": {"v": v}}), T)
                .unwrap(),
        );
    }
    assert_eq!(
        store
            .index_scan("by_v", Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        ids(&["t4", "t5", "t7", "t6", "t3", "t2", "t1"])
    );
    assert_eq!(
        store
            .index_scan(
                "by_v",
                Bound::Included(&json!({"b": 1})),
                Bound::Included(&json!({"b": 1}))
            )
            .unwrap(),
        ids(&["t1"])
    );
    assert_eq!(
        store
            .index_scan(
                "by_id",
                Bound::Included(&json!("t2")),
                Bound::Excluded(&json!("t4"))
            )
            .unwrap(),
        ids(&["t2", "t3"])
    );
}

fn index_definitions_are_validated(store: &dyn Store) {
    let c = coll("c");
    assert!(matches!(
        IndexDef::new("bad name", c.clone(), vec!["a".to_owned()]),
        Err(StoreError::InvalidIndex(_))
    ));
    assert!(matches!(
        IndexDef::new("ok", c.clone(), vec![]),
        Err(StoreError::InvalidIndex(_))
    ));
    let def = IndexDef::new("i", c.clone(), vec!["a".to_owned()]).unwrap();
    store.create_index(&def).unwrap();
    store.create_index(&def).unwrap();
    let other = IndexDef::new("i", c, vec!["b".to_owned()]).unwrap();
    let err = store.create_index(&other).unwrap_err();
    assert!(matches!(&err, StoreError::IndexExists(name) if name == "i"));
    assert!(err.to_string().contains("already exists"));
    assert_eq!(store.indexes(), vec![def]);
}

fn evicted_documents_are_removed_locally_and_remembered(store: &dyn Store) {
    let cars = coll("cars");
    let mut a = replica(1);
    store
        .create_index(&IndexDef::new("by_n", cars.clone(), vec!["n".to_owned()]).unwrap())
        .unwrap();
    let d1 = a.insert(&cars, &id("c1"), &json!({"n": 1}), T).unwrap();
    apply(store, &d1);
    apply(
        store,
        &a.insert(&cars, &id("c2"), &json!({"n": 2}), T).unwrap(),
    );
    let version = store.version();

    let removed = store.evict(&cars, &[id("c1"), id("missing")]).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].0, id("c1"));
    assert!(removed[0].1.is_live());
    assert_eq!(store.get(&cars, &id("c1")).unwrap(), None);
    assert_eq!(
        store.version(),
        version,
        "eviction is local: the vector stays"
    );
    assert!(store.is_evicted(&cars, &id("c1")).unwrap());
    assert!(!store.is_evicted(&cars, &id("c2")).unwrap());
    assert_eq!(store.evicted(&cars).unwrap(), vec![id("c1")]);
    assert_eq!(
        store.docs_changed_since(&VersionVector::new()).unwrap(),
        vec![(cars.clone(), id("c2"))]
    );
    assert_eq!(
        store
            .index_scan("by_n", Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        vec![id("c2")]
    );
    assert!(
        store
            .delta_since(&VersionVector::new())
            .unwrap()
            .changes
            .len()
            == 1
    );

    // Fetched again (a subscription asked), it is stored and no longer evicted.
    apply(store, &d1);
    assert!(store.get(&cars, &id("c1")).unwrap().is_some());
    assert!(!store.is_evicted(&cars, &id("c1")).unwrap());
    assert_eq!(
        store
            .index_scan("by_n", Bound::Unbounded, Bound::Unbounded)
            .unwrap()
            .len(),
        2
    );

    store.evict(&cars, &[id("c2")]).unwrap();
    store.forget_evicted(&cars, &[id("c2")]).unwrap();
    assert!(store.evicted(&cars).unwrap().is_empty());
}

fn an_oversized_document_refuses_the_whole_batch(store: &dyn Store) {
    let cars = coll("cars");
    let big = "x".repeat(MAX_DOC_BYTES + 1);
    let small = insert_delta(1, 1, &cars, &id("small"), &json!({"n": 1}));
    let huge = insert_delta(1, 2, &cars, &id("huge"), &json!({"blob": big}));
    let batch: WriteBatch = [small, huge].into_iter().collect();
    let err = store.apply(&batch).unwrap_err();
    match &err {
        StoreError::DocumentTooLarge {
            collection,
            id: i,
            size,
            limit,
        } => {
            assert_eq!((collection, i, *limit), (&cars, &id("huge"), MAX_DOC_BYTES));
            assert!(*size > MAX_DOC_BYTES);
        }
        other => panic!("expected DocumentTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(store.get(&cars, &id("small")).unwrap(), None);
    assert_eq!(store.get(&cars, &id("huge")).unwrap(), None);
    assert!(store.version().is_empty());
    assert!(store.collections().unwrap().is_empty());
    assert!(
        store
            .docs_changed_since(&VersionVector::new())
            .unwrap()
            .is_empty()
    );
}

fn a_large_document_is_stored_with_a_warning(store: &dyn Store) {
    let cars = coll("cars");
    let body = json!({"blob": "y".repeat(WARN_DOC_BYTES + 10)});
    let applied = store
        .apply(&WriteBatch::from(insert_delta(
            1,
            1,
            &cars,
            &id("big"),
            &body,
        )))
        .unwrap();
    assert_eq!(applied.warnings.len(), 1);
    assert_eq!(applied.warnings[0].id, id("big"));
    assert!(applied.warnings[0].size > WARN_DOC_BYTES);
    assert!(store.get(&cars, &id("big")).unwrap().is_some());
}

fn the_greatest_timestamp_applied_is_kept(store: &dyn Store) {
    assert_eq!(store.max_hlc(), Hlc::ZERO);
    let c = coll("c");
    apply(store, &insert_delta(1, 5, &c, &id("a"), &json!({})));
    apply(store, &insert_delta(2, 2, &c, &id("b"), &json!({})));
    assert_eq!(store.max_hlc(), Hlc::new(T, 5));
}

fn node_metadata_round_trips(store: &dyn Store) {
    assert_eq!(store.meta_get("identity").unwrap(), None);
    store.meta_put("identity", b"key bytes").unwrap();
    store.meta_put("identity", b"new key").unwrap();
    assert_eq!(
        store.meta_get("identity").unwrap(),
        Some(b"new key".to_vec())
    );
    // Node metadata cannot clobber the store's own entries.
    store.meta_put("format_version", b"x").unwrap();
    store.meta_put("store/format_version", b"x").unwrap();
    assert_eq!(
        store.meta_get("format_version").unwrap(),
        Some(b"x".to_vec())
    );
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn blobs_are_content_addressed_chunked_and_verified(store: &dyn Store) {
    let bytes = content(3 * CHUNK_SIZE + 100, 1);
    let token = store
        .put_blob(&bytes, json!({"type": "image/png"}))
        .unwrap();
    assert_eq!(token.hash, BlobHash::of(&bytes));
    assert_eq!(token.len, bytes.len() as u64);
    assert_eq!(store.put_blob(&bytes, json!({})).unwrap().hash, token.hash);
    assert!(store.has_blob(&token.hash).unwrap());
    assert_eq!(
        store.blob_len(&token.hash).unwrap(),
        Some(bytes.len() as u64)
    );
    assert_eq!(store.get_blob(&token.hash).unwrap(), Some(bytes.clone()));
    // A range across a chunk boundary, and one clipped at the end.
    let at = CHUNK_SIZE as u64 - 10;
    assert_eq!(
        store.read_blob_range(&token.hash, at, 30).unwrap().unwrap(),
        bytes[CHUNK_SIZE - 10..CHUNK_SIZE + 20].to_vec()
    );
    let tail = store
        .read_blob_range(&token.hash, bytes.len() as u64 - 5, 100)
        .unwrap()
        .unwrap();
    assert_eq!(tail, bytes[bytes.len() - 5..].to_vec());
    assert!(matches!(
        store.read_blob_range(&token.hash, bytes.len() as u64 + 1, 1),
        Err(StoreError::BlobRange { .. })
    ));
    assert_eq!(store.get_chunk(&token.hash, 3).unwrap().unwrap().len(), 100);
    assert!(store.get_chunk(&token.hash, 4).is_err());
    // Streaming in and out.
    let mut reader = BlobReader::open(store, &token.hash).unwrap().unwrap();
    let mut streamed = Vec::new();
    reader.read_to_end(&mut streamed).unwrap();
    assert_eq!(streamed, bytes);
    let other = content(CHUNK_SIZE * 2, 7);
    let streamed_token = store
        .put_blob_reader(&mut other.as_slice(), json!(null))
        .unwrap();
    assert_eq!(streamed_token.hash, BlobHash::of(&other));
    assert_eq!(store.get_blob(&streamed_token.hash).unwrap(), Some(other));
    let again = store
        .put_blob_reader(&mut bytes.as_slice(), json!(null))
        .unwrap();
    assert_eq!(again.hash, token.hash);
    // The empty blob, and an unknown one.
    let empty = store.put_blob(&[], json!(null)).unwrap();
    assert_eq!(store.get_blob(&empty.hash).unwrap(), Some(Vec::new()));
    let unknown = BlobHash::of(b"never stored");
    assert_eq!(store.get_blob(&unknown).unwrap(), None);
    assert!(!store.has_blob(&unknown).unwrap());
    assert!(BlobReader::open(store, &unknown).unwrap().is_none());
}

fn blobs_fetched_chunk_by_chunk_are_verified_before_use(store: &dyn Store) {
    let bytes = content(2 * CHUNK_SIZE + 1, 3);
    let hash = BlobHash::of(&bytes);
    let len = bytes.len() as u64;
    assert_eq!(store.missing_chunks(&hash, len).unwrap(), vec![0, 1, 2]);
    store
        .put_chunk(&hash, len, 2, &bytes[2 * CHUNK_SIZE..])
        .unwrap();
    store
        .put_chunk(&hash, len, 0, &bytes[..CHUNK_SIZE])
        .unwrap();
    assert!(matches!(
        store.put_chunk(&hash, len, 1, &bytes[..10]),
        Err(StoreError::BlobRange { .. })
    ));
    assert!(store.put_chunk(&hash, len, 3, &[]).is_err());
    // Partial: not readable yet, and it says what is missing (resumable).
    assert!(!store.has_blob(&hash).unwrap());
    assert_eq!(store.missing_chunks(&hash, len).unwrap(), vec![1]);
    assert!(matches!(
        store.finish_blob(&hash, len),
        Err(StoreError::BlobRange { .. })
    ));
    store
        .put_chunk(&hash, len, 1, &bytes[CHUNK_SIZE..2 * CHUNK_SIZE])
        .unwrap();
    store.finish_blob(&hash, len).unwrap();
    assert_eq!(store.get_blob(&hash).unwrap(), Some(bytes.clone()));
    assert!(store.missing_chunks(&hash, len).unwrap().is_empty());

    // A peer sending wrong bytes: refused at the end, and the chunks are discarded.
    let claimed = BlobHash::of(b"what the token said");
    let garbage = content(100, 9);
    store.put_chunk(&claimed, 100, 0, &garbage).unwrap();
    let err = store.finish_blob(&claimed, 100).unwrap_err();
    assert!(matches!(err, StoreError::BlobCorrupt { .. }), "{err}");
    assert!(!store.has_blob(&claimed).unwrap());
    assert_eq!(store.missing_chunks(&claimed, 100).unwrap(), vec![0]);
}

fn unreferenced_blobs_are_garbage_collected(store: &dyn Store) {
    let kept = store.put_blob(b"kept", json!({"name": "a.txt"})).unwrap();
    let dropped = store.put_blob(b"dropped", json!(null)).unwrap();
    let partial = BlobHash::of(&content(CHUNK_SIZE + 1, 0));
    store
        .put_chunk(&partial, CHUNK_SIZE as u64 + 1, 1, &[0])
        .unwrap();
    let notes = coll("notes");
    let mut a = replica(1);
    let body = json!({"files": [kept.to_json()]});
    apply(store, &a.insert(&notes, &id("n1"), &body, T).unwrap());
    assert_eq!(
        AttachmentToken::from_json(&body["files"][0]),
        Some(kept.clone())
    );

    let mut referenced = HashSet::new();
    for c in store.collections().unwrap() {
        for (i, state) in store.scan(&c, None, usize::MAX).unwrap() {
            if let Some(doc) = state.to_json(&i) {
                referenced.extend(attachment_refs(&doc));
            }
        }
    }
    let mut all = store.blob_hashes().unwrap();
    all.sort();
    let mut expected = vec![kept.hash, dropped.hash, partial];
    expected.sort();
    assert_eq!(all, expected);
    let mut deleted = store.delete_unreferenced_blobs(&referenced).unwrap();
    deleted.sort();
    let mut expected_deleted = vec![dropped.hash, partial];
    expected_deleted.sort();
    assert_eq!(deleted, expected_deleted);
    assert!(store.has_blob(&kept.hash).unwrap());
    assert!(!store.has_blob(&dropped.hash).unwrap());
    assert_eq!(store.blob_hashes().unwrap(), vec![kept.hash]);
}

// ---------------------------------------------------------------------------------------
// The store against the reference replica, on random histories.

#[derive(Debug, Clone)]
enum Op {
    Insert {
        writer: usize,
        doc: usize,
        value: i64,
    },
    Set {
        writer: usize,
        doc: usize,
        field: usize,
        value: i64,
    },
    Unset {
        writer: usize,
        doc: usize,
        field: usize,
    },
    Increment {
        writer: usize,
        doc: usize,
        by: i64,
    },
    Delete {
        writer: usize,
        doc: usize,
    },
    /// One writer sends another everything it lacks.
    Sync {
        from: usize,
        to: usize,
    },
    /// A written delta reaches the store (and the reference): in any order, maybe twice.
    Deliver {
        pick: usize,
        keep: bool,
    },
    /// The store catches up with a writer: `writer.delta_since(store.version())`.
    CatchUp {
        writer: usize,
    },
}

const WRITERS: usize = 3;
const DOCS: usize = 5;

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WRITERS;
    let d = 0..DOCS;
    prop_oneof![
        3 => (w.clone(), d.clone(), -5i64..5).prop_map(|(writer, doc, value)| Op::Insert { writer, doc, value }),
        3 => (w.clone(), d.clone(), 0..3usize, -5i64..5)
            .prop_map(|(writer, doc, field, value)| Op::Set { writer, doc, field, value }),
        1 => (w.clone(), d.clone(), 0..3usize).prop_map(|(writer, doc, field)| Op::Unset { writer, doc, field }),
        1 => (w.clone(), d.clone(), -3i64..4).prop_map(|(writer, doc, by)| Op::Increment { writer, doc, by }),
        1 => (w.clone(), d.clone()).prop_map(|(writer, doc)| Op::Delete { writer, doc }),
        1 => (w.clone(), w.clone()).prop_map(|(from, to)| Op::Sync { from, to }),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, keep)| Op::Deliver { pick, keep }),
        1 => w.prop_map(|writer| Op::CatchUp { writer }),
    ]
}

fn doc_key(doc: usize) -> (CollectionName, DocId) {
    (
        coll(if doc.is_multiple_of(2) { "even" } else { "odd" }),
        id(&format!("d{doc}")),
    )
}

fn check_history(store: &dyn Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut writers: Vec<Replica> = (1..=WRITERS as u64).map(replica).collect();
    let mut reference = replica(100);
    let mut pending: Vec<Delta> = Vec::new();
    let deliver = |store: &dyn Store, reference: &mut Replica, delta: &Delta| {
        let applied = store.apply(&WriteBatch::from(delta.clone())).unwrap();
        let advanced = reference.apply(delta, T);
        assert_eq!(applied.advanced, vec![advanced]);
    };
    for (step, op) in ops.iter().enumerate() {
        let now = T + step as u64;
        let field = |f: usize| Path::parse_dotted(&format!("f{f}"));
        match op.clone() {
            Op::Insert { writer, doc, value } => {
                let (c, i) = doc_key(doc);
                pending.push(
                    writers[writer]
                        .insert(&c, &i, &json!({"v": value, "f0": value}), now)
                        .unwrap(),
                );
            }
            Op::Set {
                writer,
                doc,
                field: f,
                value,
            } => {
                let (c, i) = doc_key(doc);
                let m = [Mutation::Set(field(f), json!(value))];
                pending.push(writers[writer].update(&c, &i, &m, now).unwrap());
            }
            Op::Unset {
                writer,
                doc,
                field: f,
            } => {
                let (c, i) = doc_key(doc);
                pending.push(
                    writers[writer]
                        .update(&c, &i, &[Mutation::Unset(field(f))], now)
                        .unwrap(),
                );
            }
            Op::Increment { writer, doc, by } => {
                let (c, i) = doc_key(doc);
                let m = [Mutation::Increment(Path::parse_dotted("count"), by as f64)];
                if let Ok(delta) = writers[writer].update(&c, &i, &m, now) {
                    pending.push(delta);
                }
            }
            Op::Delete { writer, doc } => {
                let (c, i) = doc_key(doc);
                pending.push(writers[writer].delete(&c, &i, now));
            }
            Op::Sync { from, to } => {
                let delta = writers[from].delta_since(writers[to].version());
                writers[to].apply(&delta, now);
            }
            Op::Deliver { pick, keep } => {
                if !pending.is_empty() {
                    let index = pick % pending.len();
                    let delta = if keep {
                        pending[index].clone()
                    } else {
                        pending.remove(index)
                    };
                    deliver(store, &mut reference, &delta);
                }
            }
            Op::CatchUp { writer } => {
                let delta = writers[writer].delta_since(&store.version());
                deliver(store, &mut reference, &delta);
            }
        }
    }

    // Same documents (tombstones included) and the same version vector.
    let mut stored = BTreeMap::new();
    for c in store.collections().unwrap() {
        for (i, state) in store.scan(&c, None, usize::MAX).unwrap() {
            stored.insert((c.clone(), i), state);
        }
    }
    let expected: BTreeMap<_, _> = reference
        .states()
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    prop_assert_eq!(&stored, &expected);
    prop_assert_eq!(store.version(), reference.version().clone());

    // The change index finds exactly the documents holding writes a vector lacks.
    let mut vectors = vec![VersionVector::new(), reference.version().clone()];
    vectors.extend(writers.iter().map(|w| w.version().clone()));
    for seen in &vectors {
        let lacking: Vec<(CollectionName, DocId)> = expected
            .iter()
            .filter(|(_, state)| !state.delta_since(seen).is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        prop_assert_eq!(store.docs_changed_since(seen).unwrap(), lacking);
    }

    // A delta built from the store brings a writer exactly where the reference's would.
    for writer in &writers {
        let mut from_store = writer.clone();
        let mut from_reference = writer.clone();
        from_store.apply(&store.delta_since(writer.version()).unwrap(), T);
        from_reference.apply(&reference.delta_since(writer.version()), T);
        let a: Vec<_> = from_store.states().collect();
        let b: Vec<_> = from_reference.states().collect();
        prop_assert_eq!(a, b);
        prop_assert_eq!(from_store.version(), from_reference.version());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The backends.

type Made = (Box<dyn Store>, Option<TempDir>);

fn memory() -> Made {
    (Box::new(MemoryStore::new()), None)
}

fn rocks_with(durability: Durability) -> Made {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions {
        durability,
        ..RocksOptions::default()
    };
    let store = RocksStore::open(dir.path(), &options).unwrap();
    (Box::new(store), Some(dir))
}

fn rocks() -> Made {
    rocks_with(Durability::Sync)
}

fn changes_are_numbered_for_sync(store: &dyn Store) {
    let cars = coll("cars");
    let vans = coll("vans");
    let mut a = replica(1);
    assert_eq!(store.lsn(), 0);
    apply(
        store,
        &a.insert(&cars, &id("c1"), &json!({"n": 1, "k": "x"}), T)
            .unwrap(),
    );
    apply(
        store,
        &a.insert(&cars, &id("c2"), &json!({"n": 2}), T + 1).unwrap(),
    );
    apply(
        store,
        &a.insert(&vans, &id("v1"), &json!({"n": 3}), T + 2).unwrap(),
    );
    let update = a
        .update(&cars, &id("c1"), &[set("n", json!(10))], T + 3)
        .unwrap();
    apply(store, &update);
    assert_eq!(store.lsn(), 4);
    // A duplicate changes nothing and takes no number.
    apply(store, &update);
    assert_eq!(store.lsn(), 4);

    let all = store.changed_since(&cars, 0, 0, 10).unwrap();
    let order: Vec<(String, u64, bool)> = all
        .iter()
        .map(|d| (d.id.to_string(), d.lsn, d.whole))
        .collect();
    assert_eq!(
        order,
        vec![("c2".to_owned(), 2, true), ("c1".to_owned(), 4, true)]
    );
    assert_eq!(Some(&all[1].state), a.state(&cars, &id("c1")));
    // After LSN 2: only c1, and only the entry the update changed.
    let later = store.changed_since(&cars, 2, 2, 10).unwrap();
    assert_eq!(later.len(), 1);
    assert!(!later[0].whole);
    assert_eq!(later[0].fragment, update.changes[0].state);
    // Paging with the cursor, and collections kept apart.
    let first = store.changed_since(&cars, 0, 0, 1).unwrap();
    assert_eq!(first.len(), 1);
    let next = store.changed_since(&cars, 0, first[0].lsn, 1).unwrap();
    assert_eq!(next[0].id, id("c1"));
    assert_eq!(store.changed_since(&vans, 0, 0, 10).unwrap().len(), 1);
    // Evicted documents leave the index.
    store.evict(&cars, &[id("c2")]).unwrap();
    let left: Vec<DocId> = store
        .changed_since(&cars, 0, 0, 10)
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, vec![id("c1")]);
}

fn bookmarks_are_committed_with_their_batch(store: &dyn Store) {
    use trellis_common::sync::{Incarnation, QueryId};
    let cars = coll("cars");
    let peer = Incarnation::from_u64(9);
    let query = QueryId::of("SELECT * FROM cars");
    assert_eq!(store.bookmark(&peer, &query).unwrap(), 0);
    let mut a = replica(1);
    let mut batch = WriteBatch::from(a.insert(&cars, &id("c1"), &json!({"n": 1}), T).unwrap());
    batch.set_bookmark(peer, query, 41);
    batch.set_bookmark(peer, query, 42);
    store.apply(&batch).unwrap();
    assert_eq!(store.bookmark(&peer, &query).unwrap(), 42);
    // A bookmark alone is a write too.
    let mut alone = WriteBatch::new();
    alone.set_bookmark(peer, QueryId::of("SELECT * FROM vans"), 7);
    store.apply(&alone).unwrap();
    assert_eq!(
        store
            .bookmark(&peer, &QueryId::of("SELECT * FROM vans"))
            .unwrap(),
        7
    );
    // A batch that fails records no bookmark.
    let big = json!({"blob": "x".repeat(MAX_DOC_BYTES + 1)});
    let mut failing = WriteBatch::from(a.insert(&cars, &id("big"), &big, T + 1).unwrap());
    failing.set_bookmark(peer, query, 99);
    assert!(store.apply(&failing).is_err());
    assert_eq!(store.bookmark(&peer, &query).unwrap(), 42);
}

/// A fragment of `truck-17` as another node inserted it, newer than `T`.
fn their_truck() -> trellis_common::delta::DocChange {
    let mut b = replica(2);
    let cars = coll("cars");
    let delta = b
        .insert(&cars, &id("truck-17"), &json!({"color": "red"}), T + 5)
        .unwrap();
    delta.changes.into_iter().next().unwrap()
}

fn shadows_are_out_of_sight_relayed_and_absorbed(store: &dyn Store) {
    let cars = coll("cars");
    let truck = id("truck-17");
    let theirs = their_truck();
    let kept = store.apply_shadows(std::slice::from_ref(&theirs)).unwrap();
    assert!(kept.held.is_empty());
    assert_eq!((kept.lsn, store.lsn()), (1, 1));
    assert_eq!(store.get(&cars, &truck).unwrap(), None, "out of sight");
    assert!(store.scan(&cars, None, 10).unwrap().is_empty());
    assert_eq!(
        store.shadow(&cars, &truck).unwrap(),
        Some(theirs.state.clone())
    );
    let relayed = store.changed_since(&cars, 0, 0, 10).unwrap();
    assert_eq!(relayed.len(), 1);
    assert!(relayed[0].shadow);
    assert_eq!(relayed[0].fragment, theirs.state);
    // The same fragment again changes nothing and takes no number.
    store.apply_shadows(std::slice::from_ref(&theirs)).unwrap();
    assert_eq!(store.lsn(), 1);

    // This node inserts the same id itself (an older write): the document absorbs the
    // shadow in the same commit.
    let mut a = replica(1);
    apply(
        store,
        &a.insert(&cars, &truck, &json!({"color": "blue", "km": 3}), T)
            .unwrap(),
    );
    assert_eq!(store.shadow(&cars, &truck).unwrap(), None);
    assert_eq!(
        json_of(store, &cars, &truck),
        Some(json!({"_id": "truck-17", "color": "red"})),
        "both versions merged: the newer insert wins"
    );
    let changed = store.changed_since(&cars, 0, 0, 10).unwrap();
    assert_eq!(changed.len(), 1, "the shadow left the LSN index");
    assert!(!changed[0].shadow && changed[0].whole);

    // A fragment of a held document is not kept as a shadow: it is handed back.
    let lsn = store.lsn();
    let back = store.apply_shadows(std::slice::from_ref(&theirs)).unwrap();
    assert_eq!(back.held, vec![theirs]);
    assert_eq!(store.lsn(), lsn);
    assert_eq!(store.shadow(&cars, &truck).unwrap(), None);
}

fn shadows_of_one_commit_each_take_an_lsn_and_are_all_relayed(store: &dyn Store) {
    let cars = coll("cars");
    let mut b = replica(2);
    let fragments: Vec<_> = ["van-1", "van-2", "van-3"]
        .iter()
        .map(|name| {
            let delta = b.insert(&cars, &id(name), &json!({"n": 1}), T).unwrap();
            delta.changes.into_iter().next().unwrap()
        })
        .collect();
    let kept = store.apply_shadows(&fragments).unwrap();
    assert_eq!((kept.lsn, store.lsn()), (3, 3));
    // Paged one at a time, as a session pages its pulls: none is skipped.
    let mut relayed = Vec::new();
    let mut cursor = 0;
    while let [doc] = store.changed_since(&cars, 0, cursor, 1).unwrap().as_slice() {
        assert!(doc.shadow);
        relayed.push((doc.id.clone(), doc.lsn));
        cursor = doc.lsn;
    }
    assert_eq!(
        relayed,
        vec![(id("van-1"), 1), (id("van-2"), 2), (id("van-3"), 3)]
    );
}

/// The property test writes thousands of times: without the fsync, which changes
/// nothing of the semantics.
fn rocks_buffered() -> Made {
    rocks_with(Durability::Buffered)
}

macro_rules! contract {
    ($backend:ident, $make:expr, $make_fast:expr) => {
        mod $backend {
            use super::*;

            contract!(@each $make;
                local_writes_are_stored_and_read_back,
                remote_deltas_merge_with_local_writes,
                scan_pages_in_id_order_within_one_collection,
                deleted_documents_stay_as_tombstones,
                version_advances_only_when_since_is_covered,
                a_batch_applies_its_deltas_in_order_in_one_commit,
                get_many_reads_what_get_reads,
                applied_reports_before_and_after_of_changed_documents_only,
                docs_changed_since_finds_exactly_the_documents_a_peer_lacks,
                delta_since_brings_a_peer_up_to_date,
                indexes_are_built_from_existing_documents_and_maintained,
                nested_paths_and_structured_values_are_indexed_in_query_order,
                index_definitions_are_validated,
                evicted_documents_are_removed_locally_and_remembered,
                an_oversized_document_refuses_the_whole_batch,
                a_large_document_is_stored_with_a_warning,
                the_greatest_timestamp_applied_is_kept,
                node_metadata_round_trips,
                blobs_are_content_addressed_chunked_and_verified,
                blobs_fetched_chunk_by_chunk_are_verified_before_use,
                unreferenced_blobs_are_garbage_collected,
                changes_are_numbered_for_sync,
                bookmarks_are_committed_with_their_batch,
                shadows_are_out_of_sight_relayed_and_absorbed,
                shadows_of_one_commit_each_take_an_lsn_and_are_all_relayed,
            );

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(64))]
                #[test]
                fn store_matches_the_replica_reference_on_random_histories(
                    ops in prop::collection::vec(op(), 1..60)
                ) {
                    let (store, _dir) = $make_fast();
                    check_history(&*store, &ops)?;
                }
            }
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (store, _dir) = $make();
                super::$name(&*store);
            }
        )*
    };
}

contract!(memory_backend, memory, memory);
contract!(rocks_backend, rocks, rocks_buffered);

// ---------------------------------------------------------------------------------------
// RocksDB only: what lives across opening and closing, and what is on the disk.

fn open(dir: &TempDir) -> RocksStore {
    RocksStore::open(dir.path(), &RocksOptions::default()).unwrap()
}

#[test]
fn reopening_keeps_documents_indexes_version_evictions_and_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let cars = coll("cars");
    let mut a = replica(1);
    let token;
    {
        let store = open(&dir);
        for (i, n) in [("c1", 1), ("c2", 2), ("c3", 3)] {
            apply(
                &store,
                &a.insert(&cars, &id(i), &json!({"n": n}), T).unwrap(),
            );
        }
        apply(&store, &a.delete(&cars, &id("c2"), T + 1));
        store
            .create_index(&IndexDef::new("by_n", cars.clone(), vec!["n".to_owned()]).unwrap())
            .unwrap();
        store.evict(&cars, &[id("c3")]).unwrap();
        store.meta_put("identity", b"secret").unwrap();
        token = store
            .put_blob(&content(CHUNK_SIZE + 3, 5), json!(null))
            .unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.version(), *a.version());
    assert_eq!(
        store.max_hlc(),
        a.state(&cars, &id("c2")).unwrap().max_hlc()
    );
    assert_eq!(
        json_of(&store, &cars, &id("c1")),
        Some(json!({"_id": "c1", "n": 1}))
    );
    assert!(store.get(&cars, &id("c2")).unwrap().unwrap().is_deleted());
    assert_eq!(store.get(&cars, &id("c3")).unwrap(), None);
    assert!(store.is_evicted(&cars, &id("c3")).unwrap());
    assert_eq!(store.indexes().len(), 1);
    assert_eq!(
        store
            .index_scan("by_n", Bound::Unbounded, Bound::Unbounded)
            .unwrap(),
        vec![id("c1")]
    );
    assert_eq!(
        store.meta_get("identity").unwrap(),
        Some(b"secret".to_vec())
    );
    assert_eq!(
        store.get_blob(&token.hash).unwrap(),
        Some(content(CHUNK_SIZE + 3, 5))
    );
    assert_eq!(
        store.docs_changed_since(&VersionVector::new()).unwrap(),
        vec![(cars.clone(), id("c1")), (cars.clone(), id("c2"))]
    );
    // Writing goes on from the stored vector.
    apply(
        &store,
        &a.insert(&cars, &id("c4"), &json!({"n": 4}), T + 2).unwrap(),
    );
    assert_eq!(store.version(), *a.version());
}

#[test]
fn a_corrupt_stored_document_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let cars = coll("cars");
    let mut a = replica(1);
    apply(
        &store,
        &a.insert(&cars, &id("good"), &json!({"n": 1}), T).unwrap(),
    );
    store
        .raw_put(
            cf::DOCS,
            &keys::doc_key(&cars, &id("bad")),
            b"\x00garbage bytes",
        )
        .unwrap();
    let err = store.get(&cars, &id("bad")).unwrap_err();
    match &err {
        StoreError::Corrupt {
            collection,
            id: i,
            reason,
        } => {
            assert_eq!((collection.as_str(), i.as_str()), ("cars", "bad"));
            assert!(!reason.is_empty());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("stored document bad in collection 'cars' is corrupt"),
        "{err}"
    );
    assert!(matches!(
        store.scan(&cars, None, 10),
        Err(StoreError::Corrupt { .. })
    ));
    // Read together with others, it is the one error among them.
    let wanted = ids(&["a", "bad", "good", "zzz"]);
    let refs: Vec<&DocId> = wanted.iter().collect();
    let together = store.get_many(&cars, &refs);
    assert!(matches!(&together[1], Err(StoreError::Corrupt { .. })));
    assert!(together[0].as_ref().is_ok_and(Option::is_none));
    assert!(together[2].as_ref().is_ok_and(Option::is_some));
    assert!(together[3].as_ref().is_ok_and(Option::is_none));
    // A write to the corrupt document fails and writes nothing, the rest still works.
    let version = store.version();
    let d = a
        .update(&cars, &id("bad"), &[set("n", json!(2))], T + 1)
        .unwrap();
    assert!(matches!(
        store.apply(&WriteBatch::from(d)),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.version(), version);
    assert_eq!(
        json_of(&store, &cars, &id("good")),
        Some(json!({"_id": "good", "n": 1}))
    );
    // An unknown future document format is corrupt too, with the codec's explanation
    // (after an empty change-number header).
    store
        .raw_put(cf::DOCS, &keys::doc_key(&cars, &id("bad")), &[0, 7, 1, 2])
        .unwrap();
    let err = store.get(&cars, &id("bad")).unwrap_err();
    assert!(err.to_string().contains("unknown format version"), "{err}");
}

/// The format version a store records.
fn format_version(store: &RocksStore) -> u32 {
    let bytes = store.raw_get(cf::META, keys::META_FORMAT_VERSION).unwrap();
    u32::from_be_bytes(bytes.unwrap().try_into().unwrap())
}

/// Makes a store claim format `version` (its data is left as it is).
fn set_format_version(store: &RocksStore, version: u32) {
    store
        .raw_put(cf::META, keys::META_FORMAT_VERSION, &version.to_be_bytes())
        .unwrap();
}

#[test]
fn a_store_written_by_a_newer_build_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        assert_eq!(format_version(&store), FORMAT_VERSION);
        set_format_version(&store, FORMAT_VERSION + 1);
    }
    let err = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NewerFormat {
            found: 6,
            supported: 5
        }
    ));
    assert_eq!(
        err.to_string(),
        "store format 6 is newer than this build (5): upgrade trellis-node"
    );
}

#[test]
fn a_format_1_store_is_migrated_on_open() {
    use trellis_common::codec::encode_doc;
    let dir = tempfile::tempdir().unwrap();
    let cars = coll("cars");
    let mut a = replica(1);
    let incarnation;
    {
        let store = open(&dir);
        incarnation = store.incarnation();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            apply(
                &store,
                &a.insert(&cars, &id(name), &json!({"n": i}), T + i as u64)
                    .unwrap(),
            );
        }
        // Rewrite it as format 1 wrote it: bare encoded documents, no change numbers,
        // no LSN index, a change-index row per entry.
        rewrite_indexes_as_format_2(&store, &[&cars]);
        for key in store.raw_keys(cf::LSNS).unwrap() {
            store.raw_delete(cf::LSNS, &key).unwrap();
        }
        for name in ["a", "b", "c"] {
            let state = store.get(&cars, &id(name)).unwrap().unwrap();
            store
                .raw_put(
                    cf::DOCS,
                    &keys::doc_key(&cars, &id(name)),
                    &encode_doc(&state),
                )
                .unwrap();
        }
        set_format_version(&store, 1);
    }
    let store = open(&dir);
    assert_eq!(format_version(&store), FORMAT_VERSION);
    for name in ["a", "b", "c"] {
        assert_eq!(
            store.get(&cars, &id(name)).unwrap().as_ref(),
            a.state(&cars, &id(name))
        );
    }
    let numbered: Vec<(DocId, u64)> = store
        .changed_since(&cars, 0, 0, 10)
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.lsn))
        .collect();
    assert_eq!(numbered, vec![(id("a"), 1), (id("b"), 2), (id("c"), 3)]);
    assert_eq!(store.lsn(), 3);
    // A migration starts a new life of the store: peers' bookmarks are not reused.
    assert_ne!(store.incarnation(), incarnation);
}

/// Rewrites the change index and the LSN index as format 2 kept them: a row per
/// entry, `actor seq collection 0x00 id` → empty and `collection 0x00 lsn` → id.
fn rewrite_indexes_as_format_2(store: &RocksStore, collections: &[&CollectionName]) {
    let mut by_lsn = Vec::new();
    for c in collections {
        for doc in store.changed_since(c, 0, 0, 1_000).unwrap() {
            by_lsn.push((keys::lsn_key(c, doc.lsn), doc.id));
        }
    }
    for family in [cf::LSNS, cf::CHANGES] {
        for key in store.raw_keys(family).unwrap() {
            store.raw_delete(family, &key).unwrap();
        }
    }
    for (key, id) in by_lsn {
        store
            .raw_put(cf::LSNS, &key, id.as_canonical().as_bytes())
            .unwrap();
    }
    for c in collections {
        for (doc, state) in store.scan(c, None, usize::MAX).unwrap() {
            for dot in state.dots() {
                let mut key = dot.actor.to_bytes().to_vec();
                key.extend_from_slice(&dot.seq.to_be_bytes());
                key.extend_from_slice(&keys::doc_key(c, &doc));
                store.raw_put(cf::CHANGES, &key, &[]).unwrap();
            }
        }
    }
}

/// The documents of collection `c`, oldest change first.
fn ids_by_lsn(store: &dyn Store, c: &CollectionName) -> Vec<DocId> {
    store
        .changed_since(c, 0, 0, 1_000)
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect()
}

/// What sync reads from a store's two change indexes: the documents changed after a
/// few version vectors, and each collection's documents in LSN order.
fn index_view(store: &dyn Store, collections: &[&CollectionName]) -> Vec<String> {
    let mut view = Vec::new();
    for seen in [
        VersionVector::new(),
        [(ActorId::from_u64(1), 3)].into_iter().collect(),
    ] {
        view.push(format!("{:?}", store.docs_changed_since(&seen).unwrap()));
    }
    for c in collections {
        for (id, lsn) in store
            .changed_since(c, 0, 0, 1_000)
            .unwrap()
            .into_iter()
            .map(|d| (d.id, d.lsn))
        {
            view.push(format!("{c} {id} {lsn}"));
        }
    }
    view
}

#[test]
fn a_format_2_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (cars, vans) = (coll("cars"), coll("vans"));
    let mut a = replica(1);
    let mut b = replica(2);
    let before;
    {
        let store = open(&dir);
        // One commit across two collections, then one by another actor, then a change.
        let batch: WriteBatch = [(&cars, "c1"), (&cars, "c2"), (&vans, "v1"), (&vans, "v2")]
            .into_iter()
            .map(|(c, name)| a.insert(c, &id(name), &json!({"n": 0}), T).unwrap())
            .collect();
        store.apply(&batch).unwrap();
        apply(
            &store,
            &b.insert(&cars, &id("c3"), &json!({"n": 3}), T).unwrap(),
        );
        apply(
            &store,
            &a.update(&cars, &id("c1"), &[set("n", json!(10))], T + 1)
                .unwrap(),
        );
        before = index_view(&store, &[&cars, &vans]);
        rewrite_indexes_as_format_2(&store, &[&cars, &vans]);
        set_format_version(&store, 2);
    }
    let store = open(&dir);
    assert_eq!(format_version(&store), FORMAT_VERSION);
    assert_eq!(index_view(&store, &[&cars, &vans]), before);
    // The migrated runs change like any: c2's entries move to the new commit's runs.
    apply(
        &store,
        &a.update(&cars, &id("c2"), &[set("n", json!(20))], T + 2)
            .unwrap(),
    );
    assert_eq!(ids_by_lsn(&store, &cars), ids(&["c3", "c1", "c2"]));
    let seen_all_but_last: VersionVector = [(ActorId::from_u64(1), 5), (ActorId::from_u64(2), 1)]
        .into_iter()
        .collect();
    assert_eq!(
        store.docs_changed_since(&seen_all_but_last).unwrap(),
        vec![(cars.clone(), id("c2"))]
    );
}

#[test]
fn a_format_4_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (cars, vans) = (coll("cars"), coll("vans"));
    let mut a = replica(1);
    let before;
    {
        let store = open(&dir);
        let batch: WriteBatch = ["c-001", "c-002", "c-010"]
            .into_iter()
            .map(|name| (&cars, name))
            .chain([(&vans, "v-1"), (&vans, "v-2")])
            .map(|(c, name)| a.insert(c, &id(name), &json!({"n": 0}), T).unwrap())
            .collect();
        store.apply(&batch).unwrap();
        apply(
            &store,
            &a.update(&cars, &id("c-002"), &[set("n", json!(2))], T + 1)
                .unwrap(),
        );
        before = index_view(&store, &[&cars, &vans]);
        store_support::rewrite_runs_as_format_4(&store);
        set_format_version(&store, 4);
    }
    let store = open(&dir);
    assert_eq!(format_version(&store), FORMAT_VERSION);
    assert_eq!(index_view(&store, &[&cars, &vans]), before);
    // Every run is in the new layout: the format-4 reader no longer takes them all.
    let runs: Vec<Vec<u8>> = store
        .raw_keys(cf::CHANGES)
        .unwrap()
        .iter()
        .map(|key| store.raw_get(cf::CHANGES, key).unwrap().unwrap())
        .collect();
    assert!(runs.iter().all(|run| keys::decode_change_run(run).is_ok()));
    assert!(
        runs.iter()
            .any(|run| keys::decode_change_run_v4(run).is_err())
    );
    // The migrated runs change like any.
    apply(
        &store,
        &a.update(&cars, &id("c-001"), &[set("n", json!(1))], T + 2)
            .unwrap(),
    );
    assert_eq!(ids_by_lsn(&store, &cars), ids(&["c-010", "c-002", "c-001"]));
}

#[test]
fn the_lsn_and_the_incarnation_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let cars = coll("cars");
    let mut a = replica(1);
    let (lsn, incarnation) = {
        let store = open(&dir);
        apply(
            &store,
            &a.insert(&cars, &id("a"), &json!({"n": 1}), T).unwrap(),
        );
        apply(
            &store,
            &a.insert(&cars, &id("b"), &json!({"n": 2}), T + 1).unwrap(),
        );
        (store.lsn(), store.incarnation())
    };
    let store = open(&dir);
    assert_eq!((store.lsn(), store.incarnation()), (lsn, incarnation));
    apply(
        &store,
        &a.insert(&cars, &id("c"), &json!({"n": 3}), T + 2).unwrap(),
    );
    assert_eq!(store.lsn(), lsn + 1);
}

#[test]
fn shadows_survive_reopening_and_are_absorbed_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cars, truck) = (coll("cars"), id("truck-17"));
    let theirs = their_truck();
    {
        let store = open(&dir);
        store.apply_shadows(std::slice::from_ref(&theirs)).unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.shadow(&cars, &truck).unwrap(), Some(theirs.state));
    let mut a = replica(1);
    apply(
        &store,
        &a.insert(&cars, &truck, &json!({"km": 3}), T).unwrap(),
    );
    assert_eq!(store.shadow(&cars, &truck).unwrap(), None);
    assert_eq!(
        json_of(&store, &cars, &truck),
        Some(json!({"_id": "truck-17", "color": "red"}))
    );
}

#[test]
fn a_corrupt_blob_chunk_is_detected_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let bytes = content(CHUNK_SIZE * 2, 4);
    let token = store.put_blob(&bytes, json!(null)).unwrap();
    let mut flipped = bytes[CHUNK_SIZE..].to_vec();
    flipped[17] ^= 1;
    store
        .raw_put(
            cf::ATTACHMENTS,
            &keys::blob_chunk_key(token.hash.as_bytes(), 1),
            &flipped,
        )
        .unwrap();
    let err = store.get_blob(&token.hash).unwrap_err();
    assert!(matches!(err, StoreError::BlobCorrupt { .. }));
    assert!(
        err.to_string().contains("chunk 1 does not match its hash"),
        "{err}"
    );
    // The intact chunk still reads.
    assert_eq!(
        store.read_blob_range(&token.hash, 0, 10).unwrap().unwrap(),
        bytes[..10].to_vec()
    );
    assert!(
        store
            .read_blob_range(&token.hash, CHUNK_SIZE as u64, 10)
            .is_err()
    );
}

#[test]
fn a_store_already_open_elsewhere_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(&dir);
    let err = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)));
    assert!(err.to_string().contains("lock"), "{err}");
}

#[test]
fn an_interrupted_upload_leaves_nothing_behind() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disconnected"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let err = store
        .put_blob_reader(&mut Failing(3 * CHUNK_SIZE), json!(null))
        .unwrap_err();
    assert!(matches!(err, StoreError::Io(_)));
    assert!(store.blob_hashes().unwrap().is_empty());
    assert!(
        store.raw_keys(cf::ATTACHMENTS).unwrap().is_empty(),
        "staged chunks are removed"
    );
}
