//! Every statement end to end through the engine, on both store backends (RocksDB in a
//! temporary directory, WAL synced, and the in-memory store): INSERT with each
//! `ON ID CONFLICT` policy, UPDATE with SET / UNSET / INCREMENT / RESTART, DELETE and
//! re-INSERT, EVICT, indexes, NULL / MISSING and nested paths; transactions; the clock
//! and the deltas local writes produce; and bad input, which must fail clearly and
//! write nothing.

mod engine_support;

use std::sync::Arc;

use engine_support::{ACTOR, Db, backends, p};
use serde_json::{Value, json};
use trellis_common::clock::Hlc;
use trellis_common::crdt::VersionVector;
use trellis_common::ids::{ActorId, CollectionName, DocId, IdError};
use trellis_common::query::QueryError;
use trellis_common::replica::Replica;
use trellis_node::engine::{Engine, EngineError, EngineOptions, Outcome};
use trellis_node::store::{RocksOptions, RocksStore, Store, StoreError};

fn coll(name: &str) -> CollectionName {
    CollectionName::new(name).unwrap()
}

fn id(name: &str) -> DocId {
    DocId::from_string(name).unwrap()
}

#[test]
fn inserted_documents_read_back_with_their_ids() {
    for db in backends() {
        let r = db.run(
            "INSERT INTO cars DOCUMENTS (:a), ({_id: {site: 'n', n: 2}, color: 'red'})",
            json!({"a": {"_id": "a", "color": "blue", "engine": {"hp": 90}}}),
        );
        assert_eq!(r.ids(), &[json!("a"), json!({"n": 2, "site": "n"})]);
        assert_eq!(
            db.all("cars"),
            vec![
                json!({"_id": "a", "color": "blue", "engine": {"hp": 90}}),
                json!({"_id": {"n": 2, "site": "n"}, "color": "red"}),
            ],
            "[{}]",
            db.name
        );
        assert_eq!(
            db.engine.get("cars", &id("a")).unwrap().unwrap()["color"],
            "blue"
        );
    }
}

#[test]
fn an_insert_without_id_gets_a_generated_uuid() {
    for db in backends() {
        let r = db.run(
            "INSERT INTO notes DOCUMENTS ({text: 'hi'}), ({text: 'ho'})",
            json!({}),
        );
        let ids = r.ids();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        for generated in ids {
            assert_eq!(generated.as_str().unwrap().len(), 36, "{generated}");
        }
        let rows = db.rows("SELECT _id, text FROM notes WHERE text = 'hi'", json!({}));
        assert_eq!(rows, vec![json!({"_id": ids[0], "text": "hi"})]);
    }
}

#[test]
fn on_id_conflict_fail_names_the_id_and_writes_nothing_of_the_statement() {
    for db in backends() {
        db.run("INSERT INTO c DOCUMENTS ({_id: 'x', v: 1})", json!({}));
        let err = db.fail(
            "INSERT INTO c DOCUMENTS ({_id: 'new', v: 0}), ({_id: 'x', v: 2})",
            json!({}),
        );
        assert!(
            matches!(&err, EngineError::IdConflict { id, .. } if *id == self::id("x")),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "a document with _id x already exists in 'c' (use ON ID CONFLICT DO NOTHING or DO UPDATE)"
        );
        // The explicit spelling behaves the same.
        let err = db.fail(
            "INSERT INTO c DOCUMENTS ({_id: 'x'}) ON ID CONFLICT FAIL",
            json!({}),
        );
        assert!(matches!(err, EngineError::IdConflict { .. }));
        assert_eq!(
            db.all("c"),
            vec![json!({"_id": "x", "v": 1})],
            "[{}]",
            db.name
        );
    }
}

#[test]
fn on_id_conflict_do_nothing_keeps_the_existing_document() {
    for db in backends() {
        db.run("INSERT INTO c DOCUMENTS ({_id: 'x', v: 1})", json!({}));
        let r = db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'x', v: 2}), ({_id: 'y', v: 3}) ON ID CONFLICT DO NOTHING",
            json!({}),
        );
        assert_eq!(r.ids(), &[json!("y")]);
        assert_eq!(
            db.all("c"),
            vec![json!({"_id": "x", "v": 1}), json!({"_id": "y", "v": 3})]
        );
    }
}

#[test]
fn on_id_conflict_do_update_sets_the_given_top_level_fields() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'x', v: 1, keep: true, o: {a: 1, b: 2}})",
            json!({}),
        );
        let r = db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'x', v: 2, o: {a: 9}}) ON ID CONFLICT DO UPDATE",
            json!({}),
        );
        assert_eq!(r.ids(), &[json!("x")]);
        // Each given top-level field is set whole (`o` replaced, not merged); the
        // others stay.
        assert_eq!(
            db.all("c"),
            vec![json!({"_id": "x", "keep": true, "o": {"a": 9}, "v": 2})],
            "[{}]",
            db.name
        );
        // With no existing document it is a plain insert.
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'z', v: 5}) ON ID CONFLICT DO UPDATE",
            json!({}),
        );
        assert_eq!(
            db.rows("SELECT v FROM c WHERE _id = 'z'", json!({})),
            vec![json!({"v": 5})]
        );
    }
}

#[test]
fn update_set_evaluates_its_value_on_each_document() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', a: 1}), ({_id: 'b', a: 10}), ({_id: 'c'})",
            json!({}),
        );
        let r = db.run(
            "UPDATE c SET b = a + 1, tag = :t WHERE a IS NOT MISSING",
            json!({"t": "x"}),
        );
        assert_eq!(r.ids(), &[json!("a"), json!("b")]);
        assert_eq!(
            db.all("c"),
            vec![
                json!({"_id": "a", "a": 1, "b": 2, "tag": "x"}),
                json!({"_id": "b", "a": 10, "b": 11, "tag": "x"}),
                json!({"_id": "c"}),
            ]
        );
    }
}

#[test]
fn update_unset_and_set_to_missing_remove_fields_and_nested_paths_are_created() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', x: 1, y: 2, z: 3})",
            json!({}),
        );
        db.run(
            "UPDATE c UNSET x SET y = nope, deep.er.est = 'v' WHERE _id = 'a'",
            json!({}),
        );
        assert_eq!(
            db.all("c"),
            vec![json!({"_id": "a", "deep": {"er": {"est": "v"}}, "z": 3})]
        );
        db.run(
            "UPDATE c SET deep.er.other = 1 UNSET deep.er.est",
            json!({}),
        );
        assert_eq!(
            db.rows("SELECT deep FROM c", json!({})),
            vec![json!({"deep": {"er": {"other": 1}}})]
        );
    }
}

#[test]
fn increment_and_restart_make_counters() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', n: 5}), ({_id: 'b'})",
            json!({}),
        );
        db.run("UPDATE c APPLY n INCREMENT BY 2", json!({}));
        db.run(
            "UPDATE c APPLY n INCREMENT BY :by WHERE _id = 'a'",
            json!({"by": -10}),
        );
        assert_eq!(
            db.rows("SELECT _id, n FROM c", json!({})),
            vec![json!({"_id": "a", "n": -3}), json!({"_id": "b", "n": 2})]
        );
        db.run(
            "UPDATE c APPLY n RESTART WITH 100 WHERE _id = 'a'",
            json!({}),
        );
        db.run(
            "UPDATE c APPLY n INCREMENT BY 0.5 WHERE _id = 'a'",
            json!({}),
        );
        assert_eq!(
            db.rows("SELECT n FROM c WHERE _id = 'a'", json!({})),
            vec![json!({"n": 100.5})]
        );
        // The increment may come from the document itself.
        db.run("UPDATE c APPLY n INCREMENT BY n WHERE _id = 'b'", json!({}));
        assert_eq!(
            db.rows("SELECT n FROM c WHERE _id = 'b'", json!({})),
            vec![json!({"n": 4})]
        );
    }
}

#[test]
fn an_update_that_cannot_apply_fails_clearly_and_writes_nothing() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', n: 1}), ({_id: 'b', n: 'text'})",
            json!({}),
        );
        let before = db.store.version();
        let err = db.fail("UPDATE c APPLY n INCREMENT BY 1", json!({}));
        assert_eq!(
            err.to_string(),
            "document b in 'c': cannot apply INCREMENT to 'n': it holds a string, not a number"
        );
        let err = db.fail(
            "UPDATE c APPLY n INCREMENT BY name WHERE _id = 'a'",
            json!({}),
        );
        assert_eq!(
            err.to_string(),
            "APPLY n INCREMENT BY (document a) must be a number, found MISSING"
        );
        assert_eq!(db.store.version(), before);
        assert_eq!(
            db.rows("SELECT n FROM c WHERE _id = 'a'", json!({})),
            vec![json!({"n": 1})]
        );
    }
}

#[test]
fn delete_leaves_a_tombstone_and_a_reinsert_starts_afresh() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', old: 1}), ({_id: 'b'})",
            json!({}),
        );
        let r = db.run("DELETE FROM c WHERE old = 1", json!({}));
        assert_eq!(r.ids(), &[json!("a")]);
        assert_eq!(db.all("c"), vec![json!({"_id": "b"})]);
        assert_eq!(
            db.rows("SELECT COUNT(*) FROM c", json!({})),
            vec![json!({"count": 1})]
        );
        let state = db.store.get(&coll("c"), &id("a")).unwrap().unwrap();
        assert!(
            state.is_deleted(),
            "[{}] the tombstone is stored and replicated",
            db.name
        );
        assert_eq!(db.engine.get("c", &id("a")).unwrap(), None);
        // Deleting again finds nothing; UPDATE does not resurrect it.
        assert!(
            db.run("DELETE FROM c WHERE _id = 'a'", json!({}))
                .ids()
                .is_empty()
        );
        assert!(
            db.run("UPDATE c SET x = 1 WHERE _id = 'a'", json!({}))
                .ids()
                .is_empty()
        );
        // A new insert with the same id is a new document: the old fields stay gone.
        db.run("INSERT INTO c DOCUMENTS ({_id: 'a', new: 2})", json!({}));
        assert_eq!(
            db.all("c"),
            vec![json!({"_id": "a", "new": 2}), json!({"_id": "b"})]
        );
        // DELETE without WHERE deletes everything.
        assert_eq!(db.run("DELETE FROM c", json!({})).ids().len(), 2);
        assert!(db.all("c").is_empty());
    }
}

#[test]
fn evict_removes_local_copies_without_a_tombstone() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', k: 1}), ({_id: 'b', k: 2}), ({_id: 'c', k: 1})",
            json!({}),
        );
        db.run("DELETE FROM c WHERE _id = 'c'", json!({}));
        let version = db.store.version();
        let r = db.run("EVICT FROM c WHERE k = 1", json!({}));
        assert_eq!(
            r.ids(),
            &[json!("a")],
            "[{}] only live matching documents",
            db.name
        );
        assert_eq!(db.store.get(&coll("c"), &id("a")).unwrap(), None);
        assert!(db.store.is_evicted(&coll("c"), &id("a")).unwrap());
        assert_eq!(db.store.version(), version, "EVICT is not a write");
        assert_eq!(db.all("c"), vec![json!({"_id": "b", "k": 2})]);
        // Without WHERE, tombstones go too.
        let r = db.run("EVICT FROM c", json!({}));
        assert_eq!(r.ids(), &[json!("b"), json!("c")]);
        assert_eq!(db.store.scan(&coll("c"), None, 10).unwrap(), vec![]);
        // It is local only: no delta carries it.
        assert!(db.store.delta_since(&version).unwrap().changes.is_empty());
    }
}

#[test]
fn null_missing_and_nested_paths_follow_the_query_language() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS (:a), (:b), (:c), (:d)",
            json!({
                "a": {"_id": "a", "v": null, "o": {"p": {"q": 1}}},
                "b": {"_id": "b", "v": 1, "o": {"p": 5}},
                "c": {"_id": "c", "o": null},
                "d": {"_id": "d", "v": [1, 2], "o": {"p": {"q": 2}}},
            }),
        );
        let ids = |sql: &str| -> Vec<Value> {
            db.rows(sql, json!({}))
                .into_iter()
                .map(|r| r["_id"].clone())
                .collect()
        };
        assert_eq!(ids("SELECT _id FROM c WHERE v IS NULL"), vec![json!("a")]);
        assert_eq!(
            ids("SELECT _id FROM c WHERE v IS MISSING"),
            vec![json!("c")]
        );
        assert_eq!(
            ids("SELECT _id FROM c WHERE v IS NOT NULL"),
            vec![json!("b"), json!("c"), json!("d")]
        );
        assert_eq!(
            ids("SELECT _id FROM c WHERE o.p.q >= 1"),
            vec![json!("a"), json!("d")]
        );
        assert_eq!(
            ids("SELECT _id FROM c WHERE o.p.q IS MISSING"),
            vec![json!("b"), json!("c")]
        );
        assert_eq!(ids("SELECT _id FROM c WHERE v = [1, 2]"), vec![json!("d")]);
        assert_eq!(
            ids("SELECT _id FROM c WHERE NOT (v = 1)"),
            vec![json!("d")],
            "unknown stays unknown"
        );
        assert_eq!(
            ids("SELECT _id FROM c WHERE o.p IN (5, 6)"),
            vec![json!("b")]
        );
        assert_eq!(
            ids("SELECT _id FROM c WHERE _id LIKE '_'"),
            vec![json!("a"), json!("b"), json!("c"), json!("d")]
        );
        // Projection keeps NULL and leaves MISSING out.
        assert_eq!(
            db.rows(
                "SELECT v, o.p.q AS q FROM c WHERE _id IN ('a', 'c')",
                json!({})
            ),
            vec![json!({"v": null, "q": 1}), json!({})]
        );
    }
}

#[test]
fn order_by_limit_offset_and_count() {
    for db in backends() {
        for i in 0..10 {
            db.run(
                "INSERT INTO c DOCUMENTS (:d)",
                json!({"d": {"_id": format!("d{i}"), "n": i % 4, "i": i}}),
            );
        }
        assert_eq!(
            db.rows(
                "SELECT i FROM c ORDER BY n DESC, i LIMIT 3 OFFSET 1",
                json!({})
            ),
            vec![json!({"i": 7}), json!({"i": 2}), json!({"i": 6})]
        );
        assert_eq!(
            db.rows("SELECT i FROM c LIMIT 2 OFFSET 8", json!({})),
            vec![json!({"i": 8}), json!({"i": 9})]
        );
        assert_eq!(
            db.rows("SELECT i FROM c LIMIT :n", json!({"n": 0})),
            Vec::<Value>::new()
        );
        assert_eq!(
            db.rows("SELECT COUNT(*) AS k FROM c WHERE n = 1", json!({})),
            vec![json!({"k": 3})]
        );
        assert_eq!(
            db.rows("SELECT COUNT(*) FROM nothing", json!({})),
            vec![json!({"count": 0})]
        );
    }
}

#[test]
fn create_and_drop_index() {
    for db in backends() {
        let r = db.run("CREATE INDEX by_n ON c (n)", json!({}));
        assert_eq!(
            r.outcome,
            Outcome::Index {
                name: "by_n".to_owned(),
                changed: true
            }
        );
        let err = db.fail("CREATE INDEX by_n ON c (m)", json!({}));
        assert_eq!(
            err.to_string(),
            "an index named 'by_n' already exists (on 'c')"
        );
        let r = db.run("CREATE INDEX IF NOT EXISTS by_n ON c (m)", json!({}));
        assert_eq!(
            r.outcome,
            Outcome::Index {
                name: "by_n".to_owned(),
                changed: false
            }
        );
        assert_eq!(
            r.warnings.len(),
            1,
            "a different definition is worth a warning"
        );
        let err = db.fail("DROP INDEX by_n ON other", json!({}));
        assert_eq!(err.to_string(), "no index named 'by_n' on 'other'");
        assert!(
            db.run("DROP INDEX IF EXISTS nope ON c", json!({}))
                .warnings
                .is_empty()
        );
        let r = db.run("DROP INDEX by_n ON c", json!({}));
        assert_eq!(
            r.outcome,
            Outcome::Index {
                name: "by_n".to_owned(),
                changed: true
            }
        );
        assert!(db.store.indexes().is_empty());
    }
}

#[test]
fn results_serialise_as_the_api_answers() {
    let db = Db::memory();
    let r = db.run("INSERT INTO c DOCUMENTS ({_id: 'a', n: 1})", json!({}));
    assert_eq!(r.to_json(), json!({"kind": "mutated", "ids": ["a"]}));
    let r = db.run("SELECT COUNT(*) FROM c", json!({}));
    assert_eq!(
        r.to_json(),
        json!({"kind": "documents", "documents": [{"count": 1}]})
    );
    let r = db.run("EXPLAIN SELECT * FROM c WHERE n = 1", json!({}));
    assert_eq!(r.to_json()["kind"], "plan");
    assert_eq!(r.to_json()["plan"]["plan"], "full_scan");
}

// ---- transactions ----------------------------------------------------------------------

#[test]
fn a_failing_statement_leaves_no_trace_of_the_earlier_ones() {
    for db in backends() {
        db.run("INSERT INTO c DOCUMENTS ({_id: 'taken'})", json!({}));
        let version = db.store.version();
        let err = db
            .engine
            .execute_transaction(
                "INSERT INTO c DOCUMENTS ({_id: 'one'});
                 UPDATE c SET touched = true;
                 INSERT INTO c DOCUMENTS ({_id: 'taken'})",
                &p(json!({})),
            )
            .unwrap_err();
        assert!(matches!(err, EngineError::IdConflict { .. }), "{err:?}");
        assert_eq!(db.all("c"), vec![json!({"_id": "taken"})], "[{}]", db.name);
        assert_eq!(db.store.version(), version);
        // A bind error in a later statement fails before anything runs.
        let err = db
            .engine
            .execute_transaction(
                "INSERT INTO c DOCUMENTS ({_id: 'two'}); SELECT * FROM c LIMIT :n",
                &p(json!({})),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown parameter :n");
        assert_eq!(db.all("c").len(), 1);
    }
}

#[test]
fn later_statements_see_the_effects_of_earlier_ones() {
    for db in backends() {
        db.run("CREATE INDEX by_k ON c (k)", json!({}));
        db.run("INSERT INTO c DOCUMENTS ({_id: 'old', k: 1})", json!({}));
        let results = db
            .engine
            .execute_transaction(
                "INSERT INTO c DOCUMENTS ({_id: 'a', k: 1, n: 1});
                 UPDATE c SET n = n + 10 WHERE k = 1;
                 DELETE FROM c WHERE _id = 'old';
                 INSERT INTO c DOCUMENTS ({_id: 'a', k: 2}) ON ID CONFLICT DO UPDATE;
                 SELECT _id, k, n FROM c WHERE k = 2;
                 SELECT COUNT(*) FROM c WHERE k = 1",
                &p(json!({})),
            )
            .unwrap();
        assert_eq!(results.len(), 6);
        assert_eq!(results[1].ids(), &[json!("a"), json!("old")]);
        assert_eq!(
            results[4].documents(),
            &[json!({"_id": "a", "k": 2, "n": 11})],
            "[{}]",
            db.name
        );
        assert_eq!(results[5].documents(), &[json!({"count": 0})]);
        assert_eq!(db.all("c"), vec![json!({"_id": "a", "k": 2, "n": 11})]);
        // One write (dot) per document written: 1 insert + 2 updates + 1 delete + 1 update.
        assert_eq!(db.store.version().get(ACTOR), 1 + 5);
    }
}

#[test]
fn evict_and_index_changes_run_only_on_their_own() {
    let db = Db::memory();
    for script in [
        "INSERT INTO c DOCUMENTS ({_id: 'a'}); EVICT FROM c",
        "CREATE INDEX i ON c (a); INSERT INTO c DOCUMENTS ({_id: 'a'})",
        "SELECT * FROM c; DROP INDEX i ON c",
    ] {
        let err = db
            .engine
            .execute_transaction(script, &p(json!({})))
            .unwrap_err();
        assert!(
            matches!(err, EngineError::NotTransactional { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("run it on its own"), "{err}");
    }
    assert!(db.all("c").is_empty());
    let err = db.engine.execute_transaction("  ", &p(json!({})));
    assert!(err.is_err());
}

// ---- the write path: dots, deltas, clock ---------------------------------------------

#[test]
fn local_writes_are_deltas_a_reference_replica_merges_to_the_same_documents() {
    for db in backends() {
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', n: 1, o: {x: 1}})",
            json!({}),
        );
        db.run("UPDATE c SET o.y = 2 APPLY n INCREMENT BY 4", json!({}));
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'b'}), ({_id: 'gone'})",
            json!({}),
        );
        db.run("DELETE FROM c WHERE _id = 'gone'", json!({}));
        assert_eq!(
            db.store.version(),
            [(ACTOR, 5)].into_iter().collect::<VersionVector>()
        );
        let mut replica = Replica::new(ActorId::from_u64(99));
        let delta = db.store.delta_since(&VersionVector::new()).unwrap();
        assert!(replica.apply(&delta, 0));
        for name in ["a", "b", "gone"] {
            assert_eq!(
                replica.get(&coll("c"), &id(name)),
                db.engine.get("c", &id(name)).unwrap(),
                "{name}"
            );
        }
        assert_eq!(replica.version(), &db.store.version());
    }
}

#[test]
fn the_clock_resumes_after_a_restart_and_stamps_keep_growing() {
    let dir = tempfile::TempDir::new().unwrap();
    let stamp_of = |store: &dyn Store, name: &str| -> Hlc {
        store.get(&coll("c"), &id(name)).unwrap().unwrap().max_hlc()
    };
    let first = {
        let store: Arc<dyn Store> =
            Arc::new(RocksStore::open(dir.path(), &RocksOptions::default()).unwrap());
        let engine = Engine::open(Arc::clone(&store), ACTOR, EngineOptions::default()).unwrap();
        for i in 0..20 {
            engine
                .execute(
                    "INSERT INTO c DOCUMENTS (:d)",
                    &p(json!({"d": {"_id": format!("d{i}")}})),
                )
                .unwrap();
        }
        stamp_of(&*store, "d19")
    };
    let store: Arc<dyn Store> =
        Arc::new(RocksStore::open(dir.path(), &RocksOptions::default()).unwrap());
    let engine = Engine::open(Arc::clone(&store), ACTOR, EngineOptions::default()).unwrap();
    assert!(engine.clock_last() >= first);
    engine
        .execute("INSERT INTO c DOCUMENTS ({_id: 'after'})", &p(json!({})))
        .unwrap();
    assert!(stamp_of(&*store, "after") > first);
    assert_eq!(
        store.version().get(ACTOR),
        21,
        "sequence numbers continue too"
    );
}

#[test]
fn a_remote_stamp_far_in_the_future_is_stored_but_does_not_move_the_clock() {
    for db in backends() {
        let mut peer = Replica::new(ActorId::from_u64(7));
        let year_2099 = 4_070_908_800_000;
        let delta = peer
            .insert(&coll("c"), &id("future"), &json!({"v": 1}), year_2099)
            .unwrap();
        let applied = db.engine.apply_remote(&delta).unwrap();
        assert_eq!(applied.quarantined, 1);
        assert!(applied.advanced);
        assert_eq!(applied.changed, vec![(coll("c"), id("future"))]);
        assert!(db.engine.clock_last().physical_ms() < year_2099);
        // A local edit of that document still wins over it (causal overwrite).
        db.run("UPDATE c SET v = 2 WHERE _id = 'future'", json!({}));
        assert_eq!(db.rows("SELECT v FROM c", json!({})), vec![json!({"v": 2})]);
        // A later local write elsewhere is stamped by our own clock, not 2099.
        db.run("INSERT INTO c DOCUMENTS ({_id: 'now'})", json!({}));
        let stamp = db
            .store
            .get(&coll("c"), &id("now"))
            .unwrap()
            .unwrap()
            .max_hlc();
        assert!(stamp.physical_ms() < year_2099);
    }
}

// ---- bad input -------------------------------------------------------------------------

#[test]
fn a_malformed_statement_reports_line_and_column() {
    let db = Db::rocks();
    let err = db.fail("SELECT *\nFROM c WHERE a = = 1", json!({}));
    let EngineError::Query(QueryError::Unexpected { at, .. }) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((at.line, at.column), (2, 18));
    assert!(
        err.to_string().starts_with("line 2, column 18: expected"),
        "{err}"
    );
    let err = db
        .engine
        .execute_transaction(
            "INSERT INTO c DOCUMENTS ({_id: 'a'});\nDELETE c",
            &p(json!({})),
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("line 2, column 8"), "{err}");
    let err = db.fail("UPDATE c SET _id = 'x'", json!({}));
    assert!(err.to_string().contains("_id cannot be changed"), "{err}");
    let err = db.fail("SELECT * FROM __system", json!({}));
    assert!(err.to_string().contains("reserved"), "{err}");
    assert!(db.all("c").is_empty());
}

#[test]
fn parameters_of_the_wrong_type_are_refused() {
    let db = Db::rocks();
    let cases = [
        (
            "SELECT * FROM c LIMIT :n",
            json!({"n": -1}),
            "LIMIT parameter :n must be a non-negative integer, found number -1",
        ),
        (
            "SELECT * FROM c WHERE a IN :xs",
            json!({"xs": 3}),
            "IN parameter :xs must be an array, found number 3",
        ),
        (
            "INSERT INTO c DOCUMENTS (:d)",
            json!({"d": [1]}),
            "INSERT document 1 must be an object, found an array",
        ),
        (
            "UPDATE c APPLY n INCREMENT BY :by",
            json!({"by": "1"}),
            "APPLY n INCREMENT BY must be a number, found string '1'",
        ),
        (
            "SELECT * FROM c WHERE a = :missing",
            json!({}),
            "unknown parameter :missing",
        ),
    ];
    for (sql, params, message) in cases {
        assert_eq!(db.fail(sql, params).to_string(), message, "{sql}");
    }
    assert_eq!(db.store.version(), VersionVector::new());
}

#[test]
fn invalid_ids_are_refused_and_nothing_of_the_statement_is_written() {
    for db in backends() {
        let long = "x".repeat(300);
        let cases = [
            (json!(5), IdError::WrongType("a number")),
            (json!(""), IdError::Empty),
            (json!({}), IdError::Empty),
            (json!({"f": 1.5}), IdError::FloatInId),
            (json!(long), IdError::TooLong(302)),
        ];
        for (bad, expected) in cases {
            let err = db.fail(
                "INSERT INTO c DOCUMENTS ({_id: 'fine'}), (:d)",
                json!({"d": {"_id": bad, "v": 1}}),
            );
            match &err {
                EngineError::InvalidId { number: 2, source } => assert_eq!(*source, expected),
                other => panic!("{other:?}"),
            }
            assert!(
                err.to_string()
                    .starts_with("INSERT document 2: invalid _id: "),
                "{err}"
            );
        }
        assert!(db.all("c").is_empty(), "[{}]", db.name);
        assert_eq!(db.store.version(), VersionVector::new());
    }
}

#[test]
fn oversized_documents_are_refused_and_large_ones_draw_a_warning() {
    for db in backends() {
        let huge = "x".repeat(5 * 1024 * 1024 + 10);
        let err = db.fail(
            "INSERT INTO c DOCUMENTS ({_id: 'small'}), (:d)",
            json!({"d": {"_id": "huge", "blob": huge}}),
        );
        assert!(
            matches!(err, EngineError::Store(StoreError::DocumentTooLarge { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("the limit is 5242880: nothing was written"),
            "{err}"
        );
        assert!(db.all("c").is_empty(), "[{}]", db.name);
        assert_eq!(db.store.version(), VersionVector::new());

        // Growing a document past the limit by UPDATE fails the same way.
        let big = "y".repeat(3 * 1024 * 1024);
        let r = db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'big', a: :s})",
            json!({"s": big}),
        );
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert!(
            r.warnings[0].contains("above the 256 KiB advised"),
            "{}",
            r.warnings[0]
        );
        let err = db.fail("UPDATE c SET b = :s WHERE _id = 'big'", json!({"s": big}));
        assert!(
            matches!(err, EngineError::Store(StoreError::DocumentTooLarge { .. })),
            "{err:?}"
        );
        assert_eq!(db.rows("SELECT b FROM c", json!({})), vec![json!({})]);
    }
}

#[test]
fn observing_anything_but_a_select_is_refused() {
    let db = Db::memory();
    let err = db
        .engine
        .observe("DELETE FROM c", &p(json!({})))
        .unwrap_err();
    assert_eq!(err.to_string(), "only a SELECT can be observed, not DELETE");
}

#[test]
fn the_engine_and_observers_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shareable::<Engine>();
    shareable::<Arc<Engine>>();
    movable::<trellis_node::engine::Observer>();
}
