//! Observers (live queries): the initial result, diffs after local commits and after
//! remote deltas (built by the reference replica) interleaved with them, documents that
//! stop matching, coalescing for a slow consumer, and that an observer of another
//! collection is never woken. No timing assertions: the engine brings observers up to
//! date before a write returns, so `try_next` right after a write sees it.

mod engine_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use engine_support::{Db, backends, p};
use serde_json::{Value, json};
use trellis_common::crdt::{Mutation, Path};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::replica::Replica;
use trellis_node::engine::{Engine, EngineOptions, ObserverDiff};
use trellis_node::store::MemoryStore;

const T: u64 = 1_790_000_000_000;

fn coll(name: &str) -> CollectionName {
    CollectionName::new(name).unwrap()
}

fn id(name: &str) -> DocId {
    DocId::from_string(name).unwrap()
}

fn diff(inserted: &[&str], updated: &[&str], removed: &[&str], documents: Value) -> ObserverDiff {
    let ids = |list: &[&str]| list.iter().map(|s| json!(s)).collect::<Vec<_>>();
    let documents: BTreeMap<String, Value> = match documents {
        Value::Object(map) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    ObserverDiff {
        inserted: ids(inserted),
        updated: ids(updated),
        removed: ids(removed),
        documents,
        aggregate: None,
    }
}

#[test]
fn initial_result_then_a_diff_per_local_commit() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', k: 1, n: 2}), ({_id: 'b', k: 2, n: 1})",
            json!({}),
        );
        let mut obs = db
            .engine
            .observe(
                "SELECT * FROM c WHERE k = :k ORDER BY n",
                &p(json!({"k": 1})),
            )
            .unwrap();
        assert_eq!(obs.result(), &[json!({"_id": "a", "k": 1, "n": 2})]);
        assert_eq!(obs.try_next(), None);

        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'c', k: 1, n: 0})",
            json!({}),
        );
        assert_eq!(
            obs.try_next(),
            Some(diff(
                &["c"],
                &[],
                &[],
                json!({"c": {"_id": "c", "k": 1, "n": 0}})
            )),
            "[{}]",
            db.name
        );
        assert_eq!(obs.ids(), vec![json!("c"), json!("a")], "ORDER BY n");

        db.run("UPDATE c SET n = 5 WHERE _id = 'a'", json!({}));
        assert_eq!(
            obs.try_next(),
            Some(diff(
                &[],
                &["a"],
                &[],
                json!({"a": {"_id": "a", "k": 1, "n": 5}})
            ))
        );

        // `b` starts matching, `c` stops matching: one commit, one diff.
        db.engine
            .execute_transaction(
                "UPDATE c SET k = 1 WHERE _id = 'b'; UPDATE c SET k = 3 WHERE _id = 'c'",
                &p(json!({})),
            )
            .unwrap();
        assert_eq!(
            obs.try_next(),
            Some(diff(
                &["b"],
                &[],
                &["c"],
                json!({"b": {"_id": "b", "k": 1, "n": 1}})
            ))
        );

        db.run("DELETE FROM c WHERE _id = 'a'", json!({}));
        assert_eq!(obs.try_next(), Some(diff(&[], &[], &["a"], json!({}))));

        // Writes that do not change the result wake nobody.
        db.run("INSERT INTO c DOCUMENTS ({_id: 'z', k: 9})", json!({}));
        db.run("UPDATE c SET n = 1 WHERE _id = 'b'", json!({}));
        assert_eq!(obs.try_next(), None);
        assert_eq!(
            obs.result(),
            db.rows("SELECT * FROM c WHERE k = 1 ORDER BY n", json!({}))
                .as_slice()
        );
    }
}

#[test]
fn remote_deltas_reach_observers_exactly_like_local_writes() {
    for db in backends() {
        let mut peer = Replica::new(ActorId::from_u64(2));
        let c = coll("c");
        let mut obs = db
            .engine
            .observe("SELECT _id, v FROM c WHERE v >= 10", &p(json!({})))
            .unwrap();
        assert!(obs.result().is_empty());

        // Remote insert.
        let d1 = peer.insert(&c, &id("r1"), &json!({"v": 10}), T).unwrap();
        db.engine.apply_remote(&d1).unwrap();
        assert_eq!(
            obs.try_next(),
            Some(diff(
                &["r1"],
                &[],
                &[],
                json!({"r1": {"_id": "r1", "v": 10}})
            )),
            "[{}]",
            db.name
        );

        // Local insert in between.
        db.run("INSERT INTO c DOCUMENTS ({_id: 'l1', v: 20})", json!({}));
        assert_eq!(
            obs.try_next(),
            Some(diff(
                &["l1"],
                &[],
                &[],
                json!({"l1": {"_id": "l1", "v": 20}})
            ))
        );

        // The peer learns of the local document and edits it; a remote update.
        let local = db.store.delta_since(peer.version()).unwrap();
        peer.apply(&local, T);
        let d2 = peer
            .update(
                &c,
                &id("l1"),
                &[Mutation::Set(Path::new(["v"]), json!(21))],
                T + 1,
            )
            .unwrap();
        db.engine.apply_remote(&d2).unwrap();
        assert_eq!(
            obs.try_next(),
            Some(diff(
                &[],
                &["l1"],
                &[],
                json!({"l1": {"_id": "l1", "v": 21}})
            ))
        );

        // A remote change that makes a document stop matching, and a remote delete.
        let d3 = peer
            .update(
                &c,
                &id("r1"),
                &[Mutation::Set(Path::new(["v"]), json!(1))],
                T + 2,
            )
            .unwrap();
        db.engine.apply_remote(&d3).unwrap();
        assert_eq!(obs.try_next(), Some(diff(&[], &[], &["r1"], json!({}))));
        let d4 = peer.delete(&c, &id("l1"), T + 3);
        db.engine.apply_remote(&d4).unwrap();
        assert_eq!(obs.try_next(), Some(diff(&[], &[], &["l1"], json!({}))));

        // A duplicate delta changes nothing and wakes nobody.
        db.engine.apply_remote(&d1).unwrap();
        assert_eq!(obs.try_next(), None);
        assert!(obs.result().is_empty());

        // Both sides converge.
        let mine = db.store.delta_since(peer.version()).unwrap();
        peer.apply(&mine, T + 4);
        for name in ["r1", "l1"] {
            assert_eq!(
                peer.get(&c, &id(name)),
                db.engine.get("c", &id(name)).unwrap()
            );
        }
    }
}

#[test]
fn a_slow_consumer_gets_one_diff_to_the_latest_state() {
    for db in backends() {
        db.run("INSERT INTO c DOCUMENTS ({_id: 'keep', n: 0}), ({_id: 'gone', n: 0}), ({_id: 'same', n: 0})", json!({}));
        let mut obs = db.engine.observe("SELECT * FROM c", &p(json!({}))).unwrap();
        let initial = obs.result().to_vec();
        for i in 0..60 {
            db.run("UPDATE c SET n = :i WHERE _id = 'keep'", json!({"i": i}));
            db.run(
                "INSERT INTO c DOCUMENTS (:d)",
                json!({"d": {"_id": format!("t{i:02}")}}),
            );
            if i % 2 == 1 {
                db.run(
                    "DELETE FROM c WHERE _id = :id",
                    json!({"id": format!("t{:02}", i - 1)}),
                );
            }
        }
        db.run("DELETE FROM c WHERE _id = 'gone'", json!({}));
        // `same` changes and changes back: no net change, not reported.
        db.run("UPDATE c SET n = 1 WHERE _id = 'same'", json!({}));
        db.run("UPDATE c SET n = 0 WHERE _id = 'same'", json!({}));

        let d = obs.try_next().expect("a coalesced diff");
        let inserted: Vec<Value> = (0..60)
            .filter(|i| i % 2 == 1)
            .map(|i| json!(format!("t{i:02}")))
            .collect();
        assert_eq!(d.inserted, inserted, "[{}]", db.name);
        assert_eq!(d.updated, vec![json!("keep")]);
        assert_eq!(d.removed, vec![json!("gone")]);
        assert_eq!(d.documents["keep"], json!({"_id": "keep", "n": 59}));
        assert_eq!(d.documents.len(), 31);
        assert_eq!(obs.try_next(), None, "everything was in the one diff");
        assert_ne!(obs.result(), initial.as_slice());
        assert_eq!(obs.result(), db.all("c").as_slice());
    }
}

#[test]
fn observers_of_another_collection_are_not_woken() {
    let db = Db::rocks();
    let mut other = db
        .engine
        .observe("SELECT * FROM other", &p(json!({})))
        .unwrap();
    let mut mine = db
        .engine
        .observe("SELECT COUNT(*) FROM c", &p(json!({})))
        .unwrap();
    assert_eq!(mine.result(), &[json!({"count": 0})]);
    let mut peer = Replica::new(ActorId::from_u64(3));
    for i in 0..5 {
        db.run(
            "INSERT INTO c DOCUMENTS (:d)",
            json!({"d": {"_id": format!("l{i}")}}),
        );
        let remote = peer
            .insert(&coll("c"), &id(&format!("r{i}")), &json!({}), T)
            .unwrap();
        db.engine.apply_remote(&remote).unwrap();
    }
    db.run("EVICT FROM c WHERE _id = 'l0'", json!({}));
    assert_eq!(other.try_next(), None);
    let d = mine.try_next().unwrap();
    assert_eq!(d.aggregate, Some(json!({"count": 9})));
    assert!(d.inserted.is_empty() && d.removed.is_empty());
}

#[test]
fn projection_limit_and_evict_shape_the_diffs() {
    for db in backends() {
        db.run("INSERT INTO c DOCUMENTS ({_id: 'a', n: 3, x: 0}), ({_id: 'b', n: 2, x: 0}), ({_id: 'c', n: 9})", json!({}));
        let mut top = db
            .engine
            .observe("SELECT _id, n FROM c ORDER BY n LIMIT 2", &p(json!({})))
            .unwrap();
        assert_eq!(top.ids(), vec![json!("b"), json!("a")]);
        // A field outside the projection changes: the rows do not.
        db.run("UPDATE c SET x = 1", json!({}));
        assert_eq!(top.try_next(), None, "[{}]", db.name);
        // A new smallest pushes `a` out of the LIMIT.
        db.run("INSERT INTO c DOCUMENTS ({_id: 'd', n: 1})", json!({}));
        assert_eq!(
            top.try_next(),
            Some(diff(
                &["d"],
                &[],
                &["a"],
                json!({"d": {"_id": "d", "n": 1}})
            ))
        );
        // Evicting `d` brings `a` back.
        db.run("EVICT FROM c WHERE _id = 'd'", json!({}));
        assert_eq!(
            top.try_next(),
            Some(diff(
                &["a"],
                &[],
                &["d"],
                json!({"a": {"_id": "a", "n": 3}})
            ))
        );
        // `a` changes and moves to the front: `ids` gives the new order.
        db.run("UPDATE c SET n = 0 WHERE _id = 'a'", json!({}));
        let d = top.try_next().unwrap();
        assert_eq!(d.updated, vec![json!("a")]);
        assert_eq!(top.ids(), vec![json!("a"), json!("b")]);
    }
}

#[test]
fn a_dropped_observer_is_unregistered() {
    let db = Db::memory();
    let obs = db.engine.observe("SELECT * FROM c", &p(json!({}))).unwrap();
    let _kept = db.engine.observe("SELECT * FROM c", &p(json!({}))).unwrap();
    assert_eq!(db.engine.observer_count(), 2);
    drop(obs);
    db.run("INSERT INTO c DOCUMENTS ({_id: 'a'})", json!({}));
    assert_eq!(db.engine.observer_count(), 1);
}

#[tokio::test]
async fn next_waits_for_commits_made_on_other_threads_and_ends_with_the_engine() {
    let engine = Arc::new(
        Engine::open(
            Arc::new(MemoryStore::new()),
            ActorId::from_u64(1),
            EngineOptions::default(),
        )
        .unwrap(),
    );
    let mut obs = engine
        .observe("SELECT _id FROM c WHERE n >= 0", &p(json!({})))
        .unwrap();
    let writer = Arc::clone(&engine);
    let handle = tokio::task::spawn_blocking(move || {
        for i in 0..50 {
            writer
                .execute(
                    "INSERT INTO c DOCUMENTS (:d)",
                    &p(json!({"d": {"_id": format!("d{i:02}"), "n": i}})),
                )
                .unwrap();
        }
    });
    // Whatever the interleaving, the diffs add up to the final result, in order.
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < 50 {
        let d = obs.next().await.expect("the engine is alive");
        assert!(d.removed.is_empty());
        assert!(
            d.inserted.iter().all(|id| !seen.contains(id)),
            "no id twice"
        );
        seen.extend(d.inserted);
    }
    handle.await.unwrap();
    let expected: Vec<Value> = (0..50).map(|i| json!(format!("d{i:02}"))).collect();
    assert_eq!(seen, expected, "commit order");
    drop(engine);
    assert_eq!(obs.next().await, None);
}
