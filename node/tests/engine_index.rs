//! The planner: EXPLAIN shows when an index (or a point read by `_id`) is used, index
//! scans see a transaction's own writes, and a property test checks that random
//! equality, IN and range queries give the same rows with and without indexes, on
//! random documents that were also updated and deleted (so the indexes had to follow).

mod engine_support;

use engine_support::{Db, backends, p};
use proptest::prelude::*;
use serde_json::{Value, json};

fn plan(db: &Db, sql: &str, params: Value) -> Value {
    db.run(&format!("EXPLAIN {sql}"), params).to_json()["plan"].clone()
}

#[test]
fn explain_shows_whether_an_index_is_used() {
    for db in backends() {
        for i in 0..20 {
            db.run("INSERT INTO cars DOCUMENTS (:d)", json!({"d": {"_id": format!("c{i}"), "color": if i % 4 == 0 { "red" } else { "blue" }, "hp": i * 10}}));
        }
        let q = "SELECT _id FROM cars WHERE color = 'red' AND hp > 50";
        let without = db.rows(q, json!({}));
        assert_eq!(
            plan(&db, q, json!({})),
            json!({"plan": "full_scan", "collection": "cars", "reason": "no index on color, hp in 'cars'"})
        );

        db.run("CREATE INDEX cars_color ON cars (color)", json!({}));
        assert_eq!(
            plan(&db, q, json!({})),
            json!({"plan": "index_scan", "collection": "cars", "index": "cars_color", "path": "color",
                   "predicate": {"op": "eq", "value": "red"}}),
            "[{}]",
            db.name
        );
        assert_eq!(db.rows(q, json!({})), without, "same rows with the index");
        assert_eq!(
            without,
            vec![
                json!({"_id": "c12"}),
                json!({"_id": "c16"}),
                json!({"_id": "c8"})
            ]
        );

        db.run("CREATE INDEX cars_hp ON cars (hp)", json!({}));
        let range = "SELECT _id FROM cars WHERE hp >= :lo AND hp < :hi AND color != 'green'";
        assert_eq!(
            plan(&db, range, json!({"lo": 30, "hi": 60})),
            json!({"plan": "index_scan", "collection": "cars", "index": "cars_hp", "path": "hp",
                   "predicate": {"op": "range", "lower": {"value": 30, "inclusive": true}, "upper": {"value": 60, "inclusive": false}}})
        );
        assert_eq!(
            db.rows(range, json!({"lo": 30, "hi": 60})),
            vec![
                json!({"_id": "c3"}),
                json!({"_id": "c4"}),
                json!({"_id": "c5"})
            ]
        );
        assert_eq!(
            plan(
                &db,
                "SELECT * FROM cars WHERE color IN ('red', 'red', 'x')",
                json!({})
            )["predicate"],
            json!({"op": "in", "values": ["red", "x"]})
        );
        // An OR cannot use the index.
        assert_eq!(
            plan(
                &db,
                "SELECT * FROM cars WHERE color = 'red' OR hp = 1",
                json!({})
            )["plan"],
            "full_scan"
        );
        // `_id` equality reads the documents directly.
        assert_eq!(
            plan(
                &db,
                "SELECT * FROM cars WHERE _id IN :ids AND color = 'red'",
                json!({"ids": ["c4", "c1", 7]})
            ),
            json!({"plan": "id_lookup", "collection": "cars", "ids": ["c1", "c4"]})
        );
        assert_eq!(
            db.rows(
                "SELECT _id FROM cars WHERE _id IN :ids AND color = 'red'",
                json!({"ids": ["c4", "c1", 7]})
            ),
            vec![json!({"_id": "c4"})]
        );

        db.run("DROP INDEX cars_color ON cars", json!({}));
        assert_eq!(
            plan(&db, q, json!({}))["index"],
            "cars_hp",
            "the range is next best"
        );
        db.run("DROP INDEX cars_hp ON cars", json!({}));
        assert_eq!(plan(&db, q, json!({}))["plan"], "full_scan");
        assert_eq!(db.rows(q, json!({})), without);
    }
}

#[test]
fn update_delete_and_evict_use_the_index_and_see_the_same_documents() {
    for db in backends() {
        db.run("CREATE INDEX k ON c (k)", json!({}));
        for i in 0..30 {
            db.run(
                "INSERT INTO c DOCUMENTS (:d)",
                json!({"d": {"_id": format!("d{i:02}"), "k": i % 3}}),
            );
        }
        assert_eq!(
            db.run("UPDATE c SET k = 10 WHERE k = 1", json!({}))
                .ids()
                .len(),
            10
        );
        assert!(db.rows("SELECT * FROM c WHERE k = 1", json!({})).is_empty());
        assert_eq!(
            db.run("DELETE FROM c WHERE k IN (10)", json!({}))
                .ids()
                .len(),
            10
        );
        assert_eq!(
            db.run("EVICT FROM c WHERE k >= 2", json!({})).ids().len(),
            10
        );
        assert_eq!(
            db.rows("SELECT COUNT(*) FROM c WHERE k < 100", json!({})),
            vec![json!({"count": 10})],
            "[{}]",
            db.name
        );
    }
}

#[test]
fn index_scans_inside_a_transaction_see_its_uncommitted_writes() {
    for db in backends() {
        db.run("CREATE INDEX k ON c (k)", json!({}));
        db.run(
            "INSERT INTO c DOCUMENTS ({_id: 'a', k: 1}), ({_id: 'b', k: 1})",
            json!({}),
        );
        let results = db
            .engine
            .execute_transaction(
                "UPDATE c SET k = 5 WHERE _id = 'a';
                 INSERT INTO c DOCUMENTS ({_id: 'new', k: 5});
                 SELECT _id FROM c WHERE k = 5;
                 SELECT _id FROM c WHERE k = 1;
                 DELETE FROM c WHERE k = 5;
                 SELECT COUNT(*) FROM c WHERE k = 5",
                &p(json!({})),
            )
            .unwrap();
        assert_eq!(
            results[2].documents(),
            &[json!({"_id": "a"}), json!({"_id": "new"})],
            "[{}]",
            db.name
        );
        assert_eq!(results[3].documents(), &[json!({"_id": "b"})]);
        assert_eq!(results[4].ids(), &[json!("a"), json!("new")]);
        assert_eq!(results[5].documents(), &[json!({"count": 0})]);
        assert_eq!(db.all("c"), vec![json!({"_id": "b", "k": 1})]);
    }
}

// ---- property: the same rows with and without an index ---------------------------------

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-3i64..4).prop_map(Value::from),
        (-3i64..4).prop_map(|i| json!(i as f64 + 0.5)),
        Just(json!(1.0)),
        "[a-d]{0,2}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(json!([1, "a"])),
        Just(json!({"x": 1})),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        (-3i64..4).prop_map(|i| json!(i as f64 - 0.5)),
        "[a-d]{0,2}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

/// A document with `a` and `o.p` each possibly missing.
fn document() -> impl Strategy<Value = (Option<Value>, Option<Value>)> {
    (proptest::option::of(value()), proptest::option::of(value()))
}

#[derive(Debug, Clone)]
enum Query {
    Eq(Value),
    EqFlipped(Value),
    In(Vec<Value>),
    Range(&'static str, Value),
    Between(&'static str, Value, &'static str, Value),
}

fn query() -> impl Strategy<Value = Query> {
    let lower = prop_oneof![Just(">"), Just(">=")];
    let upper = prop_oneof![Just("<"), Just("<=")];
    let op = prop_oneof![Just("<"), Just("<="), Just(">"), Just(">=")];
    prop_oneof![
        value().prop_map(Query::Eq),
        value().prop_map(Query::EqFlipped),
        proptest::collection::vec(value(), 0..4).prop_map(Query::In),
        (op, scalar()).prop_map(|(o, v)| Query::Range(o, v)),
        (lower, scalar(), upper, scalar()).prop_map(|(l, a, u, b)| Query::Between(l, a, u, b)),
    ]
}

impl Query {
    fn sql(&self, path: &str) -> (String, Value) {
        match self {
            Query::Eq(v) => (format!("{path} = :v"), json!({"v": v})),
            Query::EqFlipped(v) => (format!(":v = {path}"), json!({"v": v})),
            Query::In(vs) => (format!("{path} IN :vs"), json!({"vs": vs})),
            Query::Range(op, v) => (format!("{path} {op} :v"), json!({"v": v})),
            Query::Between(l, a, u, b) => (
                format!("{path} {l} :a AND {path} {u} :b"),
                json!({"a": a, "b": b}),
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn indexed_and_full_scan_queries_return_the_same_rows(
        docs in proptest::collection::vec(document(), 1..30),
        updates in proptest::collection::vec((0usize..30, proptest::option::of(value())), 0..8),
        deletes in proptest::collection::vec(0usize..30, 0..4),
        queries in proptest::collection::vec((query(), any::<bool>(), proptest::option::of(0u64..5)), 1..8),
    ) {
        // The indexed engine on RocksDB, the plain one in memory: this also compares
        // the backends.
        let indexed = Db::rocks();
        let plain = Db::memory();
        indexed.run("CREATE INDEX ia ON c (a)", json!({}));
        indexed.run("CREATE INDEX iop ON c (o.p)", json!({}));
        let mut params = serde_json::Map::new();
        let mut script = Vec::new();
        for (i, (a, op)) in docs.iter().enumerate() {
            let mut doc = json!({"_id": format!("d{i:02}")});
            if let Some(a) = a { doc["a"] = a.clone(); }
            if let Some(op) = op { doc["o"] = json!({"p": op}); }
            params.insert(format!("d{i}"), doc);
            script.push(format!("INSERT INTO c DOCUMENTS (:d{i})"));
        }
        for (j, (target, a)) in updates.iter().enumerate() {
            let set = match a {
                Some(a) => { params.insert(format!("u{j}"), a.clone()); format!("SET a = :u{j}") }
                None => "UNSET a".to_owned(),
            };
            script.push(format!("UPDATE c {set} WHERE _id = 'd{target:02}'"));
        }
        for target in &deletes {
            script.push(format!("DELETE FROM c WHERE _id = 'd{target:02}'"));
        }
        let script = script.join(";\n");
        for db in [&indexed, &plain] {
            db.engine.execute_transaction(&script, &params).unwrap();
        }
        prop_assert_eq!(indexed.all("c"), plain.all("c"));

        for (q, nested, limit) in queries {
            let path = if nested { "o.p" } else { "a" };
            let (filter, params) = q.sql(path);
            let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
            for sql in [
                format!("SELECT * FROM c WHERE {filter}{limit}"),
                format!("SELECT _id, a FROM c WHERE {filter} ORDER BY a DESC, _id{limit}"),
                format!("SELECT COUNT(*) FROM c WHERE {filter}"),
            ] {
                let with = indexed.rows(&sql, params.clone());
                let without = plain.rows(&sql, params.clone());
                prop_assert_eq!(&with, &without, "{} with {}", sql, params);
            }
            // `a = NULL` is never true: nothing for an index to look up.
            let indexable = !matches!(&q, Query::Eq(Value::Null) | Query::EqFlipped(Value::Null));
            let expected = if indexable { "index_scan" } else { "full_scan" };
            let plan = indexed.run(&format!("EXPLAIN SELECT * FROM c WHERE {filter}"), params.clone()).to_json();
            prop_assert_eq!(&plan["plan"]["plan"], expected, "{}", plan);
            let plan = plain.run(&format!("EXPLAIN SELECT * FROM c WHERE {filter}"), params.clone()).to_json();
            prop_assert_eq!(&plan["plan"]["plan"], "full_scan", "{}", plan);
        }
    }
}
