//! The fast path of inserts in the store: a [`NewDoc`] (a document new to the store,
//! already encoded by `codec::encode_insert`, in the codec's insert form) must store
//! what the same insert as a delta fragment stores (the same rows byte for byte on
//! RocksDB, but for the documents' encodings, which decode to the same states), on both
//! backends; and it must still merge correctly when the store does not trust that the
//! document is absent.

mod store_support;

use std::sync::Arc;

use serde_json::{Value, json};
use tempfile::TempDir;
use trellis_common::clock::Hlc;
use trellis_common::codec::{FORM_INSERT, encode_insert};
use trellis_common::crdt::{Crdt, DocState, Dot, Stamp, VersionVector, WriteContext};
use trellis_common::delta::{Delta, DocChange};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_node::store::{
    FORMAT_VERSION, IndexDef, MemoryStore, NewDoc, RocksOptions, RocksStore, Store, WriteBatch, cf,
    keys,
};

const T: u64 = 1_790_000_000_000;
const ACTOR: u64 = 7;

fn coll() -> CollectionName {
    CollectionName::new("cars").unwrap()
}

fn id(n: usize) -> DocId {
    DocId::from_string(format!("car-{n:03}")).unwrap()
}

fn ctx(seq: u64) -> WriteContext {
    let actor = ActorId::from_u64(ACTOR);
    WriteContext {
        stamp: Stamp {
            hlc: Hlc::new(T, seq as u16),
            actor,
        },
        dot: Dot { actor, seq },
    }
}

fn body(n: usize) -> Value {
    let color = ["blue", "red", "green"][n % 3];
    json!({
        "_id": format!("car-{n:03}"),
        "color": color,
        "km": n * 10,
        "tags": ["a", {"b": n}],
        "engine": {"hp": 90 + n, "fuel": {"kind": "diesel"}, "none": {}},
    })
}

/// The inserts of documents `0..n` by one transaction of writes `1..=n`: the delta's
/// range, and each document with its context.
fn inserts(
    n: usize,
) -> (
    VersionVector,
    VersionVector,
    Vec<(DocId, WriteContext, Value)>,
) {
    let actor = ActorId::from_u64(ACTOR);
    let docs = (0..n)
        .map(|i| (id(i), ctx(i as u64 + 1), body(i)))
        .collect();
    let since = VersionVector::new();
    let until = [(actor, n as u64)].into_iter().collect();
    (since, until, docs)
}

/// The inserts as one delta of fragments (the general path).
fn as_delta(n: usize) -> WriteBatch {
    let (since, until, docs) = inserts(n);
    let changes = docs
        .into_iter()
        .map(|(id, ctx, body)| DocChange {
            collection: coll(),
            id,
            state: DocState::insert_delta(ctx, &body).unwrap(),
        })
        .collect();
    WriteBatch::from(Delta {
        since,
        until,
        changes,
    })
}

/// The same inserts as new documents of an empty delta (the fast path).
fn as_new_docs(n: usize) -> WriteBatch {
    let (since, until, docs) = inserts(n);
    let mut batch = WriteBatch::from(Delta {
        since,
        until,
        changes: Vec::new(),
    });
    for (id, ctx, body) in docs {
        batch.push_new(NewDoc {
            collection: coll(),
            id,
            encoded: encode_insert(ctx, &body).unwrap().into(),
            dot: ctx.dot,
            hlc: ctx.stamp.hlc,
        });
    }
    batch
}

fn index() -> IndexDef {
    IndexDef::new("by_hp", coll(), vec!["engine".into(), "hp".into()]).unwrap()
}

/// Everything a client of the store can see of the collection.
fn observable(store: &dyn Store, n: usize) -> Vec<String> {
    let mut out = vec![
        format!("version {:?}", store.version()),
        format!("max_hlc {:?}", store.max_hlc()),
        format!("lsn {}", store.lsn()),
        format!(
            "changed {:?}",
            store.docs_changed_since(&VersionVector::new()).unwrap()
        ),
        format!(
            "by lsn {:?}",
            store.changed_since(&coll(), 0, 0, usize::MAX).unwrap()
        ),
        format!(
            "indexed {:?}",
            store
                .index_scan(
                    "by_hp",
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Unbounded
                )
                .unwrap()
        ),
    ];
    for i in 0..n {
        out.push(format!("{:?}", store.get(&coll(), &id(i)).unwrap()));
    }
    out
}

/// A store, and the directory of a RocksDB one (kept as long as the store).
struct Backend<S: ?Sized> {
    name: &'static str,
    store: Arc<S>,
    _dir: Option<TempDir>,
}

fn rocks() -> Backend<RocksStore> {
    let dir = TempDir::new().unwrap();
    let store = Arc::new(RocksStore::open(dir.path(), &RocksOptions::default()).unwrap());
    Backend {
        name: "rocksdb",
        store,
        _dir: Some(dir),
    }
}

fn both() -> [Backend<dyn Store>; 2] {
    let memory = Backend {
        name: "memory",
        store: Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        _dir: None,
    };
    let Backend { store, _dir, .. } = rocks();
    let rocks = Backend {
        name: "rocksdb",
        store: store as Arc<dyn Store>,
        _dir,
    };
    [memory, rocks]
}

/// Every key and value of the column families the write path fills.
fn rows(store: &RocksStore) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for family in [cf::DOCS, cf::CHANGES, cf::LSNS, cf::INDEXES, cf::META] {
        for key in store.raw_keys(family).unwrap() {
            // The incarnation is random per store.
            if key == trellis_node::store::keys::META_INCARNATION {
                continue;
            }
            let value = store.raw_get(family, &key).unwrap().unwrap();
            out.push((family, key, value));
        }
    }
    out
}

#[test]
fn new_documents_store_the_rows_of_their_insert_deltas() {
    let n = 20;
    let (slow, fast) = (rocks(), rocks());
    for store in [&slow.store, &fast.store] {
        store.create_index(&index()).unwrap();
    }
    slow.store.apply(&as_delta(n)).unwrap();
    fast.store.apply(&as_new_docs(n)).unwrap();
    let (slow_rows, fast_rows) = (rows(&slow.store), rows(&fast.store));
    assert!(
        slow_rows.len() >= 2 * n + 2,
        "documents, index entries, and a run in the change index and in the LSN index"
    );
    assert_eq!(fast_rows.len(), slow_rows.len());
    let mut documents = 0;
    for (fast, slow) in fast_rows.iter().zip(&slow_rows) {
        assert_eq!((fast.0, &fast.1), (slow.0, &slow.1), "the same keys");
        if fast.0 != cf::DOCS {
            assert_eq!(fast.2, slow.2, "the same index and meta values");
            continue;
        }
        // A document: V1 from the delta, the insert form from the new document, each
        // after the same change numbers, decoding to the same state.
        documents += 1;
        let (fast_state, fast_lsns) = keys::decode_doc_value_with_lsns(&fast.2).unwrap();
        let (slow_state, slow_lsns) = keys::decode_doc_value_with_lsns(&slow.2).unwrap();
        let v1 = trellis_common::codec::encode_doc(&slow_state);
        assert_eq!((fast_state, fast_lsns), (slow_state, slow_lsns));
        let lsn_bytes = slow.2.len() - v1.len();
        assert_eq!(slow.2[lsn_bytes..], v1[..]);
        assert_eq!(fast.2[..lsn_bytes], slow.2[..lsn_bytes]);
        assert_eq!(fast.2[lsn_bytes], FORM_INSERT);
        assert!(
            fast.2.len() < slow.2.len(),
            "the insert form is the smaller"
        );
    }
    assert_eq!(documents, n);
}

#[test]
fn a_format_3_store_opens_as_the_current_format_and_reads_its_documents() {
    let n = 6;
    let dir = TempDir::new().unwrap();
    let before = {
        let store = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
        store.create_index(&index()).unwrap();
        store.apply(&as_delta(n)).unwrap();
        let before = observable(&store, n);
        store_support::rewrite_runs_as_format_4(&store);
        store
            .raw_put(cf::META, keys::META_FORMAT_VERSION, &3u32.to_be_bytes())
            .unwrap();
        before
    };
    let store = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    let version = store.raw_get(cf::META, keys::META_FORMAT_VERSION).unwrap();
    assert_eq!(version, Some(FORMAT_VERSION.to_be_bytes().to_vec()));
    assert_eq!(observable(&store, n), before);
}

#[test]
fn new_documents_read_back_as_their_insert_deltas_on_both_backends() {
    let n = 12;
    for (slow, fast) in both().into_iter().zip(both()) {
        let name = slow.name;
        let (slow, fast) = (&slow.store, &fast.store);
        for store in [slow, fast] {
            store.create_index(&index()).unwrap();
        }
        let slow_applied = slow.apply(&as_delta(n)).unwrap();
        let fast_applied = fast.apply(&as_new_docs(n)).unwrap();
        assert_eq!(fast_applied, slow_applied, "[{name}] what apply reports");
        assert_eq!(fast_applied.docs.len(), n, "[{name}]");
        assert!(
            fast_applied.docs[0].exists_after(),
            "[{name}] states come back"
        );
        assert_eq!(
            observable(&**fast, n),
            observable(&**slow, n),
            "[{name}] what readers see"
        );
    }
}

#[test]
fn a_new_document_merges_with_a_stored_one_when_absence_is_not_vouched_for() {
    for backend in both() {
        let store = &backend.store;
        // Another actor inserted car-000 with a later stamp: its insert supersedes ours.
        let theirs = ActorId::from_u64(99);
        let their_ctx = WriteContext {
            stamp: Stamp {
                hlc: Hlc::new(T + 1_000, 0),
                actor: theirs,
            },
            dot: Dot {
                actor: theirs,
                seq: 1,
            },
        };
        let their_state = DocState::insert_delta(their_ctx, &json!({"owner": "x"})).unwrap();
        store
            .apply(&WriteBatch::from(Delta {
                since: VersionVector::new(),
                until: [(theirs, 1)].into_iter().collect(),
                changes: vec![DocChange {
                    collection: coll(),
                    id: id(0),
                    state: their_state.clone(),
                }],
            }))
            .unwrap();
        // No `assume_absent`: the store must read what it holds and merge.
        let applied = store.apply(&as_new_docs(1)).unwrap();
        let mut expected = their_state.clone();
        expected.merge(&DocState::insert_delta(ctx(1), &body(0)).unwrap());
        assert_eq!(expected, their_state, "the later insert wins");
        assert!(
            applied.docs.is_empty(),
            "[{}] nothing changed",
            backend.name
        );
        assert!(applied.all_advanced());
        assert_eq!(store.get(&coll(), &id(0)).unwrap(), Some(expected));
        assert_eq!(store.version().get(ActorId::from_u64(ACTOR)), 1);
    }
}
