//! The fast path of INSERT (a document new to the store is encoded straight from its
//! JSON), end to end through the engine on both backends: what it stores is what
//! `DocState::insert_delta` makes, with given and generated ids; a transaction that
//! reads or writes a document it has just inserted sees it; observers and indexes see
//! batch inserts; a transaction of many inserts finds every id conflict, also when it
//! is large enough that its documents are prepared on several threads.

mod engine_support;

use engine_support::{Db, backends, p};
use serde_json::{Value, json};
use trellis_common::crdt::{DocState, Dot, WriteContext};
use trellis_common::ids::{CollectionName, DocId};

fn coll() -> CollectionName {
    CollectionName::new("c").unwrap()
}

/// The state `body` inserted by the write that made the root entry of `stored`.
fn insert_state_like(stored: &DocState, body: &Value) -> DocState {
    let root = stored.get(&[]).expect("a stored insert has a root entry");
    let ctx = WriteContext {
        stamp: root.stamp,
        dot: Dot {
            actor: root.stamp.actor,
            seq: root.seq,
        },
    };
    DocState::insert_delta(ctx, body).unwrap()
}

fn stored(db: &Db, id: &Value) -> DocState {
    stored_or_none(db, id).unwrap()
}

fn stored_or_none(db: &Db, id: &Value) -> Option<DocState> {
    let id = DocId::from_json(id).unwrap();
    db.store.get(&coll(), &id).unwrap()
}

#[test]
fn inserted_documents_are_stored_as_their_insert_deltas() {
    for db in backends() {
        let bodies = [
            json!({"_id": "a", "n": 1, "nested": {"x": [1, {"y": 2}], "empty": {}}}),
            json!({"_id": {"site": "n", "k": 2}, "z": null, "a": "text", "B": 2.5}),
            json!({"n": 3, "deep": {"er": {"est": true}}}),
            json!({}),
        ];
        let params = json!({"a": bodies[0], "b": bodies[1], "c": bodies[2], "d": bodies[3]});
        let result = db
            .engine
            .execute_transaction(
                "INSERT INTO c DOCUMENTS (:a), (:b); INSERT INTO c DOCUMENTS (:c), (:d)",
                &p(params),
            )
            .unwrap();
        let ids: Vec<Value> = result.iter().flat_map(|r| r.ids().to_vec()).collect();
        assert_eq!(ids.len(), 4, "[{}]", db.name);
        let mut seqs = Vec::new();
        for (id, body) in ids.iter().zip(&bodies) {
            let state = stored(&db, id);
            assert_eq!(state, insert_state_like(&state, body), "[{}] {id}", db.name);
            seqs.push(state.get(&[]).unwrap().seq);
            let mut expected = body.clone();
            expected
                .as_object_mut()
                .unwrap()
                .insert("_id".into(), id.clone());
            let got = db.rows("SELECT * FROM c WHERE _id = :id", json!({"id": id}));
            assert_eq!(got, vec![expected], "[{}]", db.name);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2, 3, 4], "[{}] one dot per insert", db.name);
    }
}

#[test]
fn a_transaction_reads_and_writes_the_documents_it_just_inserted() {
    for db in backends() {
        let results = db
            .engine
            .execute_transaction(
                "INSERT INTO c DOCUMENTS ({_id: 'a', n: 1}), ({_id: 'b', n: 5}), ({_id: 'd', n: 7});
                 SELECT * FROM c;
                 UPDATE c SET n = n + 1 WHERE _id = 'a';
                 DELETE FROM c WHERE _id = 'd';
                 INSERT INTO c DOCUMENTS ({_id: 'b', n: 9}) ON ID CONFLICT DO NOTHING;
                 SELECT * FROM c WHERE n >= 2",
                &p(json!({})),
            )
            .unwrap();
        assert_eq!(
            results[1].documents().len(),
            3,
            "[{}] a scan sees them",
            db.name
        );
        assert_eq!(
            results[5].documents(),
            &[json!({"_id": "a", "n": 2}), json!({"_id": "b", "n": 5})],
            "[{}]",
            db.name
        );
        assert_eq!(
            db.all("c"),
            vec![json!({"_id": "a", "n": 2}), json!({"_id": "b", "n": 5})]
        );
        let err = db
            .engine
            .execute_transaction(
                "INSERT INTO c DOCUMENTS ({_id: 'e'}); INSERT INTO c DOCUMENTS ({_id: 'e'})",
                &p(json!({})),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("already exists"),
            "[{}] {err}",
            db.name
        );
        assert_eq!(
            db.all("c").len(),
            2,
            "[{}] the failed transaction wrote nothing",
            db.name
        );
    }
}

#[test]
fn observers_and_indexes_see_batch_inserts() {
    for db in backends() {
        db.run("CREATE INDEX by_n ON c (n)", json!({}));
        let mut obs = db
            .engine
            .observe("SELECT * FROM c WHERE n >= 2", &p(json!({})))
            .unwrap();
        let docs: Vec<Value> = (0..5)
            .map(|n| json!({"_id": format!("d{n}"), "n": n}))
            .collect();
        db.run(
            "INSERT INTO c DOCUMENTS (:a), (:b), (:c), (:d), (:e)",
            json!({"a": docs[0], "b": docs[1], "c": docs[2], "d": docs[3], "e": docs[4]}),
        );
        let diff = obs.try_next().expect("one diff for the commit");
        assert_eq!(
            diff.inserted,
            vec![json!("d2"), json!("d3"), json!("d4")],
            "[{}]",
            db.name
        );
        assert_eq!(obs.result(), &docs[2..], "[{}]", db.name);
        let plan = db.run("EXPLAIN SELECT * FROM c WHERE n = 3", json!({}));
        assert!(
            format!("{plan:?}").contains("IndexScan"),
            "[{}] {plan:?}",
            db.name
        );
        assert_eq!(
            db.rows("SELECT * FROM c WHERE n = 3", json!({})),
            vec![docs[3].clone()]
        );
    }
}

#[test]
fn a_transaction_of_many_inserts_finds_every_id_conflict() {
    for db in backends() {
        let run = |script: &str, params: Value| db.engine.execute_transaction(script, &p(params));
        run(
            "INSERT INTO c DOCUMENTS (:a)",
            json!({"a": {"_id": "old", "n": 0}}),
        )
        .unwrap();
        // Many inserts, one of a stored id: the transaction fails and stores nothing.
        let many = json!({
            "a": {"_id": "new-1"}, "b": {"_id": "old", "n": 1}, "c": {"_id": "new-2"},
        });
        let err = run("INSERT INTO c DOCUMENTS (:a), (:b), (:c)", many.clone()).unwrap_err();
        assert!(err.to_string().contains("old"), "[{}] {err}", db.name);
        assert!(
            stored_or_none(&db, &json!("new-1")).is_none(),
            "[{}]",
            db.name
        );
        // DO NOTHING skips the stored one and inserts the others.
        let result = run(
            "INSERT INTO c DOCUMENTS (:a), (:b), (:c) ON ID CONFLICT DO NOTHING",
            many,
        )
        .unwrap();
        assert_eq!(
            result[0].ids(),
            [json!("new-1"), json!("new-2")],
            "[{}]",
            db.name
        );
        let old = stored(&db, &json!("old"));
        let first = insert_state_like(&old, &json!({"_id": "old", "n": 0}));
        assert_eq!(old, first, "[{}] the stored one is left as it was", db.name);
        // An id absent when the transaction starts conflicts with its own insert
        // earlier in the same transaction.
        let twice = json!({"a": {"_id": "twice"}, "b": {"_id": "twice"}, "c": {"_id": "x"}});
        let err = run(
            "INSERT INTO c DOCUMENTS (:a), (:c); INSERT INTO c DOCUMENTS (:b)",
            twice,
        )
        .unwrap_err();
        assert!(err.to_string().contains("twice"), "[{}] {err}", db.name);
        assert!(
            stored_or_none(&db, &json!("twice")).is_none(),
            "[{}]",
            db.name
        );
    }
}

/// A transaction of `statements` INSERTs into `c`, each of its own `:dN`, with
/// `ON ID CONFLICT conflict`; its parameters are `bodies` in order.
fn large_insert(db: &Db, bodies: &[Value], conflict: &str) -> Result<Vec<Value>, String> {
    let inserts: Vec<(&str, Value)> = bodies.iter().map(|b| ("c", b.clone())).collect();
    insert_script(db, &inserts, conflict)
}

/// A transaction of one INSERT per `(collection, body)`, each of its own `:dN`, with
/// `ON ID CONFLICT conflict`.
fn insert_script(db: &Db, inserts: &[(&str, Value)], conflict: &str) -> Result<Vec<Value>, String> {
    let script: Vec<String> = inserts
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("INSERT INTO {c} DOCUMENTS (:d{i}) ON ID CONFLICT {conflict}"))
        .collect();
    let params: serde_json::Map<String, Value> = inserts
        .iter()
        .enumerate()
        .map(|(i, (_, body))| (format!("d{i}"), body.clone()))
        .collect();
    db.engine
        .execute_transaction(&script.join(";\n"), &params)
        .map(|results| results.iter().flat_map(|r| r.ids().to_vec()).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn a_large_transaction_prepared_on_several_threads_keeps_every_insert_rule() {
    const N: usize = 600; // well past what one thread prepares
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'stored', v: 0}), ({_id: 'gone', v: 0})",
            json!({}),
        );
        db.run("DELETE FROM c WHERE _id = 'gone'", json!({}));
        // Ids in descending order: the transaction sorts what it writes.
        let new = |i: usize| json!({"_id": format!("n-{:04}", 2 * N - i), "i": i, "o": {"k": [i]}});

        // A stored id fails the whole transaction, wherever it is: nothing is stored.
        let mut bodies: Vec<Value> = (0..N).map(new).collect();
        bodies[450] = json!({"_id": "stored", "v": 1});
        let err = large_insert(&db, &bodies, "FAIL").unwrap_err();
        assert!(err.contains("stored"), "[{}] {err}", db.name);
        // So does an invalid id, and a document nested too deep.
        bodies[450] = json!({"_id": 1.5});
        let err = large_insert(&db, &bodies, "FAIL").unwrap_err();
        assert!(err.contains("_id"), "[{}] {err}", db.name);
        bodies[450] = (0..70).fold(json!(1), |inner, _| json!({ "n": inner }));
        assert!(large_insert(&db, &bodies, "FAIL").is_err(), "[{}]", db.name);
        assert_eq!(db.all("c").len(), 1, "[{}] only `stored` is there", db.name);

        // DO NOTHING: a stored id and an id inserted earlier in the transaction are
        // skipped; a deleted id is inserted again; a document without `_id` gets one.
        let mut bodies: Vec<Value> = (0..N).map(new).collect();
        bodies[100] = json!({"_id": "stored", "v": 1});
        bodies[200] = json!({"_id": "gone", "v": 1});
        bodies[300] = json!({"_id": "n-1199", "v": "second"});
        bodies[400] = json!({"v": "no id"});
        let ids = large_insert(&db, &bodies, "DO NOTHING").unwrap();
        assert_eq!(ids.len(), N - 2, "[{}] two inserts skipped", db.name);
        assert_eq!(ids[0], json!("n-1200"), "[{}]", db.name);
        assert_eq!(ids[199], json!("gone"), "[{}]", db.name);
        let all = db.all("c");
        assert_eq!(
            all.len(),
            N - 1,
            "[{}] N - 3 new ones, gone, stored",
            db.name
        );
        let stored_doc = db.rows("SELECT * FROM c WHERE _id = 'stored'", json!({}));
        assert_eq!(
            stored_doc,
            [json!({"_id": "stored", "v": 0})],
            "[{}]",
            db.name
        );
        let first = db.rows("SELECT * FROM c WHERE _id = 'n-1199'", json!({}));
        assert_eq!(first, [new(1)], "[{}] the first insert wins", db.name);
        let gone = db.rows("SELECT * FROM c WHERE _id = 'gone'", json!({}));
        assert_eq!(gone, [json!({"_id": "gone", "v": 1})], "[{}]", db.name);
        let generated = db.rows("SELECT * FROM c WHERE v = 'no id'", json!({}));
        assert_eq!(generated.len(), 1, "[{}]", db.name);
        for i in [0, 250, 599] {
            let body = new(i);
            let state = stored(&db, &body["_id"]);
            assert_eq!(state, insert_state_like(&state, &body), "[{}] {i}", db.name);
        }

        // DO UPDATE sets the given fields of a stored document.
        let mut bodies: Vec<Value> = (N..2 * N).map(new).collect();
        bodies[500] = json!({"_id": "stored", "w": 2});
        large_insert(&db, &bodies, "DO UPDATE").unwrap();
        let updated = db.rows("SELECT * FROM c WHERE _id = 'stored'", json!({}));
        assert_eq!(
            updated,
            [json!({"_id": "stored", "v": 0, "w": 2})],
            "[{}]",
            db.name
        );
    }
}

#[test]
fn a_large_transaction_over_two_collections_reads_each_ones_ids() {
    const N: usize = 700;
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'x-0003', v: 'c'})",
            json!({}),
        );
        db.run(
            "INSERT INTO d DOCUMENTS ({_id: 'x-0004', v: 'd'})",
            json!({}),
        );
        // The statements alternate between the collections, each id once in each.
        let inserts: Vec<(&str, Value)> = (0..N)
            .map(|i| {
                let c = if i % 2 == 0 { "c" } else { "d" };
                (c, json!({"_id": format!("x-{:04}", i / 2), "i": i}))
            })
            .collect();
        let err = insert_script(&db, &inserts, "FAIL").unwrap_err();
        assert!(err.contains("x-0003"), "[{}] {err}", db.name);
        assert_eq!(db.all("c").len(), 1, "[{}]", db.name);
        assert_eq!(db.all("d").len(), 1, "[{}]", db.name);

        // A failure at the first document stops the transaction, prepared or not.
        let mut failing = inserts.clone();
        failing[0].1 = json!({"_id": 1.5});
        let err = insert_script(&db, &failing, "FAIL").unwrap_err();
        assert!(err.contains("_id"), "[{}] {err}", db.name);
        assert_eq!(db.all("c").len() + db.all("d").len(), 2, "[{}]", db.name);

        let ids = insert_script(&db, &inserts, "DO NOTHING").unwrap();
        assert_eq!(
            ids.len(),
            N - 2,
            "[{}] each stored id skipped once",
            db.name
        );
        assert_eq!(db.all("c").len(), N / 2, "[{}]", db.name);
        assert_eq!(db.all("d").len(), N / 2, "[{}]", db.name);
        // Each collection kept its stored document and took the other id.
        for (c, id, body) in [
            ("c", "x-0003", json!({"_id": "x-0003", "v": "c"})),
            ("d", "x-0003", json!({"_id": "x-0003", "i": 7})),
            ("d", "x-0004", json!({"_id": "x-0004", "v": "d"})),
            ("c", "x-0004", json!({"_id": "x-0004", "i": 8})),
        ] {
            let found = db.rows(&format!("SELECT * FROM {c} WHERE _id = '{id}'"), json!({}));
            assert_eq!(found, [body], "[{}] {c}/{id}", db.name);
        }
    }
}

#[test]
fn a_batch_mostly_in_id_order_stores_each_document_once() {
    const N: usize = 300; // prepared on several threads
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'k-0100', v: 'stored'})",
            json!({}),
        );
        let doc = |i: usize| json!({"_id": format!("k-{i:04}"), "i": i});
        let mut bodies: Vec<Value> = (0..N).map(doc).collect();
        // Out of order: an id new to the transaction, then one it inserted already,
        // then one the store holds; a document without `_id`; then in order again.
        bodies[150] = doc(9_000);
        bodies[151] = doc(3);
        bodies[152] = doc(100);
        bodies[153] = json!({"i": "generated"});
        bodies.push(doc(20));
        let ids = large_insert(&db, &bodies, "DO NOTHING").unwrap();
        // Skipped: both `k-0100` (stored), the second `k-0003` and the second `k-0020`.
        assert_eq!(ids.len(), N + 1 - 4, "[{}]", db.name);
        assert!(ids.contains(&json!("k-9000")), "[{}]", db.name);
        assert!(!ids.contains(&json!("k-0100")), "[{}]", db.name);
        // The stored one, N - 5 of the numbered ones, `k-9000` and the generated one.
        let all = db.all("c");
        assert_eq!(all.len(), N - 2, "[{}] each document once", db.name);
        let stored_doc = db.rows("SELECT * FROM c WHERE _id = 'k-0100'", json!({}));
        assert_eq!(
            stored_doc,
            [json!({"_id": "k-0100", "v": "stored"})],
            "[{}]",
            db.name
        );
        for i in [0, 3, 20, 149, 154, 299, 9_000] {
            let rows = db.rows(
                "SELECT * FROM c WHERE _id = :id",
                json!({"id": format!("k-{i:04}")}),
            );
            assert_eq!(rows, [doc(i)], "[{}] {i}", db.name);
        }
        assert_eq!(
            db.rows("SELECT * FROM c WHERE i = 'generated'", json!({}))
                .len(),
            1
        );

        // With FAIL, the same repeated id fails the whole batch.
        let mut again: Vec<Value> = (1_000..1_000 + N).map(doc).collect();
        again[200] = doc(1_010);
        let err = large_insert(&db, &again, "FAIL").unwrap_err();
        assert!(err.contains("k-1010"), "[{}] {err}", db.name);
        assert_eq!(db.all("c").len(), all.len(), "[{}] nothing stored", db.name);
    }
}
