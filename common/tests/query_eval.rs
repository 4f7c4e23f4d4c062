//! Evaluating the query language: three-valued logic with NULL and MISSING, every operator,
//! ordering, LIMIT/OFFSET, parameter binding and the planner helpers.

use std::cmp::Ordering;

use serde_json::{Value, json};
use trellis_common::query::{
    Datum, Expr, IndexPredicate, Mutation, Params, Path, QueryError, RangeOp, Select, Statement,
    Truth, compare_documents, conjuncts, eval, index_predicate, parse, parse_expression, truth,
    validate_collection_name,
};

fn params(v: Value) -> Params {
    serde_json::from_value(v).unwrap()
}

fn bound_select(src: &str, p: Value) -> Select {
    match parse(src).unwrap().bind(&params(p)).unwrap() {
        Statement::Select(s) => s,
        other => panic!("not a select: {other:?}"),
    }
}

/// Runs `SELECT ... FROM c <rest>` over `docs`.
fn run(src: &str, p: Value, docs: &[Value]) -> Vec<Value> {
    bound_select(src, p).run(docs).unwrap()
}

fn truth_of(condition: &str, doc: &Value) -> Truth {
    truth(&parse_expression(condition).unwrap(), doc)
}

fn bind_error(src: &str, p: Value) -> String {
    parse(src)
        .unwrap()
        .bind(&params(p))
        .unwrap_err()
        .to_string()
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r["_id"].as_i64().unwrap()).collect()
}

// ---- NULL and MISSING ----------------------------------------------------------------------

#[test]
fn is_missing_differs_from_is_null() {
    let with_null = json!({"a": null});
    let without = json!({});
    assert_eq!(truth_of("a IS NULL", &with_null), Truth::True);
    assert_eq!(truth_of("a IS MISSING", &with_null), Truth::False);
    assert_eq!(truth_of("a IS NULL", &without), Truth::False);
    assert_eq!(truth_of("a IS MISSING", &without), Truth::True);
    assert_eq!(truth_of("a IS NOT NULL", &without), Truth::True);
    assert_eq!(truth_of("a IS NOT MISSING", &with_null), Truth::True);
    assert_eq!(truth_of("a IS NOT NULL", &json!({"a": 0})), Truth::True);
}

#[test]
fn missing_path_evaluates_to_missing_not_null() {
    let doc = json!({"a": {"b": null}});
    let e = parse_expression("a.c").unwrap();
    assert_eq!(eval(&e, &doc), Datum::Missing);
    let e = parse_expression("a.b").unwrap();
    assert!(eval(&e, &doc).is_null());
}

#[test]
fn comparisons_with_null_or_missing_are_unknown() {
    let doc = json!({"n": null});
    for condition in [
        "n = 1",
        "n != 1",
        "n < 1",
        "n = NULL",
        "NULL = NULL",
        "m = 1",
        "m != 1",
        "m >= 1",
        "m = n",
    ] {
        assert_eq!(truth_of(condition, &doc), Truth::Unknown, "{condition}");
    }
}

#[test]
fn not_of_unknown_stays_unknown_so_where_drops_the_document() {
    let docs = [
        json!({"_id": 1, "a": 1}),
        json!({"_id": 2}),
        json!({"_id": 3, "a": 2}),
    ];
    assert_eq!(
        ids(&run("SELECT * FROM c WHERE a = 1", json!({}), &docs)),
        vec![1]
    );
    assert_eq!(
        ids(&run("SELECT * FROM c WHERE NOT a = 1", json!({}), &docs)),
        vec![3]
    );
    assert_eq!(
        ids(&run("SELECT * FROM c WHERE a != 1", json!({}), &docs)),
        vec![3]
    );
}

#[test]
fn and_or_follow_three_valued_logic() {
    let doc = json!({"a": 1});
    assert_eq!(truth_of("a = 1 AND b = 1", &doc), Truth::Unknown);
    assert_eq!(truth_of("a = 2 AND b = 1", &doc), Truth::False);
    assert_eq!(truth_of("a = 1 OR b = 1", &doc), Truth::True);
    assert_eq!(truth_of("a = 2 OR b = 1", &doc), Truth::Unknown);
    assert_eq!(truth_of("NOT (a = 2 OR b = 1)", &doc), Truth::Unknown);
    assert_eq!(truth_of("a = 1 OR b IS MISSING", &doc), Truth::True);
}

#[test]
fn predicates_as_values_are_booleans_or_null() {
    let doc = json!({"a": 1});
    assert_eq!(
        eval(&parse_expression("a = 1").unwrap(), &doc).into_value(),
        Some(json!(true))
    );
    assert_eq!(
        eval(&parse_expression("a = 2").unwrap(), &doc).into_value(),
        Some(json!(false))
    );
    assert_eq!(
        eval(&parse_expression("b = 2").unwrap(), &doc).into_value(),
        Some(Value::Null)
    );
}

// ---- comparison operators ------------------------------------------------------------------

#[test]
fn every_comparison_operator_on_numbers() {
    let doc = json!({"x": 2});
    for (condition, expected) in [
        ("x = 2", true),
        ("x == 2.0", true),
        ("x != 2", false),
        ("x <> 3", true),
        ("x < 2.5", true),
        ("x <= 2", true),
        ("x > 2", false),
        ("x >= 1.999", true),
        ("3 > x", true),
    ] {
        assert_eq!(
            truth_of(condition, &doc),
            Truth::from(expected),
            "{condition}"
        );
    }
}

#[test]
fn strings_compare_by_bytes_and_booleans_false_before_true() {
    let doc = json!({"s": "apple", "t": true});
    assert_eq!(truth_of("s < 'banana'", &doc), Truth::True);
    assert_eq!(truth_of("s > 'Zebra'", &doc), Truth::True);
    assert_eq!(truth_of("s >= 'apple'", &doc), Truth::True);
    assert_eq!(truth_of("t > false", &doc), Truth::True);
    assert_eq!(truth_of("t = true", &doc), Truth::True);
}

#[test]
fn different_types_are_unequal_and_unordered() {
    let doc = json!({"n": 1, "s": "1"});
    assert_eq!(truth_of("n = s", &doc), Truth::False);
    assert_eq!(truth_of("n != s", &doc), Truth::True);
    assert_eq!(truth_of("n < s", &doc), Truth::Unknown);
    assert_eq!(truth_of("n = true", &doc), Truth::False);
    assert_eq!(truth_of("n >= true", &doc), Truth::Unknown);
}

#[test]
fn arrays_and_objects_compare_structurally() {
    let doc = json!({"tags": ["a", "b"], "pos": {"x": 1, "y": 2}});
    assert_eq!(truth_of("tags = ['a', 'b']", &doc), Truth::True);
    assert_eq!(truth_of("tags = ['b', 'a']", &doc), Truth::False);
    assert_eq!(truth_of("tags != ['a']", &doc), Truth::True);
    assert_eq!(truth_of("pos = {y: 2, x: 1.0}", &doc), Truth::True);
    assert_eq!(truth_of("pos = {x: 1}", &doc), Truth::False);
    assert_eq!(truth_of("tags < ['z']", &doc), Truth::Unknown);
}

#[test]
fn nested_paths_reach_into_objects_only() {
    let doc = json!({"engine": {"spec": {"hp": 300}}, "list": [{"hp": 1}]});
    assert_eq!(truth_of("engine.spec.hp >= 300", &doc), Truth::True);
    assert_eq!(truth_of("engine.spec.hp.x IS MISSING", &doc), Truth::True);
    assert_eq!(truth_of("list.hp IS MISSING", &doc), Truth::True);
    assert_eq!(truth_of("engine.spec = {hp: 300}", &doc), Truth::True);
}

#[test]
fn arithmetic_in_conditions() {
    let doc = json!({"price": 10, "qty": 3});
    assert_eq!(truth_of("price * qty = 30", &doc), Truth::True);
    assert_eq!(truth_of("price / 4 = 2.5", &doc), Truth::True);
    assert_eq!(truth_of("price - qty * 2 + -1 = 3", &doc), Truth::True);
    assert_eq!(truth_of("price + nope = 10", &doc), Truth::Unknown);
}

// ---- LIKE ----------------------------------------------------------------------------------

#[test]
fn like_matches_percent_and_underscore() {
    let doc = json!({"name": "Jonathan", "n": 5, "z": null});
    assert_eq!(truth_of("name LIKE 'Jo%'", &doc), Truth::True);
    assert_eq!(truth_of("name LIKE '%than'", &doc), Truth::True);
    assert_eq!(truth_of("name LIKE 'J_nathan'", &doc), Truth::True);
    assert_eq!(truth_of("name LIKE 'jo%'", &doc), Truth::False);
    assert_eq!(truth_of("name NOT LIKE 'X%'", &doc), Truth::True);
    assert_eq!(truth_of("n LIKE '5'", &doc), Truth::False);
    assert_eq!(truth_of("z LIKE '%'", &doc), Truth::Unknown);
    assert_eq!(truth_of("nope NOT LIKE '%'", &doc), Truth::Unknown);
}

#[test]
fn like_pattern_from_parameter() {
    let docs = [json!({"_id": 1, "s": "abc"}), json!({"_id": 2, "s": "xbc"})];
    assert_eq!(
        ids(&run(
            "SELECT * FROM c WHERE s LIKE :p",
            json!({"p": "a%"}),
            &docs
        )),
        vec![1]
    );
}

// ---- IN ------------------------------------------------------------------------------------

#[test]
fn in_list_and_not_in() {
    let doc = json!({"c": "red", "n": 2});
    assert_eq!(truth_of("c IN ('red', 'blue')", &doc), Truth::True);
    assert_eq!(truth_of("c IN ('green')", &doc), Truth::False);
    assert_eq!(truth_of("n IN (1.0, 2.0)", &doc), Truth::True);
    assert_eq!(truth_of("c NOT IN ('green', 'blue')", &doc), Truth::True);
    assert_eq!(truth_of("c IN ()", &doc), Truth::False);
}

#[test]
fn in_with_null_item_or_missing_value_is_unknown_unless_found() {
    let doc = json!({"c": "red"});
    assert_eq!(truth_of("c IN ('red', NULL)", &doc), Truth::True);
    assert_eq!(truth_of("c IN ('blue', NULL)", &doc), Truth::Unknown);
    assert_eq!(truth_of("c NOT IN ('blue', NULL)", &doc), Truth::Unknown);
    assert_eq!(truth_of("nope IN ('red')", &doc), Truth::Unknown);
    assert_eq!(truth_of("nope NOT IN ('red')", &doc), Truth::Unknown);
}

#[test]
fn in_with_array_parameter() {
    let docs = [
        json!({"_id": 1, "c": "red"}),
        json!({"_id": 2, "c": "blue"}),
        json!({"_id": 3, "c": "green"}),
        json!({"_id": 4}),
    ];
    let p = json!({"cs": ["red", "green"]});
    assert_eq!(
        ids(&run("SELECT * FROM c WHERE c IN :cs", p.clone(), &docs)),
        vec![1, 3]
    );
    assert_eq!(
        ids(&run("SELECT * FROM c WHERE c NOT IN :cs", p, &docs)),
        vec![2]
    );
}

// ---- ORDER BY, LIMIT, OFFSET, projections --------------------------------------------------

#[test]
fn order_by_mixed_types_puts_missing_then_null_booleans_numbers_strings_arrays_objects() {
    let docs = [
        json!({"_id": 1, "v": {"a": 1}}),
        json!({"_id": 2, "v": "b"}),
        json!({"_id": 3, "v": [1]}),
        json!({"_id": 4, "v": 2.5}),
        json!({"_id": 5}),
        json!({"_id": 6, "v": true}),
        json!({"_id": 7, "v": null}),
        json!({"_id": 8, "v": 1}),
        json!({"_id": 9, "v": "a"}),
        json!({"_id": 10, "v": false}),
    ];
    assert_eq!(
        ids(&run("SELECT * FROM c ORDER BY v", json!({}), &docs)),
        vec![5, 7, 10, 6, 8, 4, 9, 2, 3, 1]
    );
    assert_eq!(
        ids(&run("SELECT * FROM c ORDER BY v DESC", json!({}), &docs)),
        vec![1, 3, 2, 9, 4, 8, 6, 10, 7, 5]
    );
}

#[test]
fn order_by_several_keys() {
    let docs = [
        json!({"_id": 1, "make": "b", "year": 2001}),
        json!({"_id": 2, "make": "a", "year": 1999}),
        json!({"_id": 3, "make": "b", "year": 2010}),
        json!({"_id": 4, "make": "a", "year": 2005}),
    ];
    assert_eq!(
        ids(&run(
            "SELECT * FROM c ORDER BY make ASC, year DESC",
            json!({}),
            &docs
        )),
        vec![4, 2, 3, 1]
    );
    let select = bound_select("SELECT * FROM c ORDER BY make, year DESC", json!({}));
    assert_eq!(
        compare_documents(&select.order_by, &docs[0], &docs[2]),
        Ordering::Greater
    );
}

#[test]
fn limit_and_offset_from_literals_and_parameters() {
    let docs: Vec<Value> = (1..=10).map(|i| json!({"_id": i})).collect();
    assert_eq!(
        ids(&run(
            "SELECT * FROM c ORDER BY _id LIMIT 3 OFFSET 2",
            json!({}),
            &docs
        )),
        vec![3, 4, 5]
    );
    assert_eq!(
        ids(&run(
            "SELECT * FROM c ORDER BY _id DESC LIMIT :n OFFSET :skip",
            json!({"n": 2, "skip": 1}),
            &docs
        )),
        vec![9, 8]
    );
    assert!(run("SELECT * FROM c LIMIT 0", json!({}), &docs).is_empty());
    assert!(run("SELECT * FROM c OFFSET 20", json!({}), &docs).is_empty());
}

#[test]
fn count_star_counts_matches() {
    let docs = [json!({"a": 1}), json!({"a": 2}), json!({"b": 1})];
    assert_eq!(
        run(
            "SELECT COUNT(*) FROM c WHERE a IS NOT MISSING",
            json!({}),
            &docs
        ),
        vec![json!({"count": 2})]
    );
    assert_eq!(
        run("SELECT COUNT(*) AS total FROM c", json!({}), &docs),
        vec![json!({"total": 3})]
    );
    assert_eq!(
        run("SELECT COUNT(*) FROM c WHERE a = 99", json!({}), &docs),
        vec![json!({"count": 0})]
    );
}

#[test]
fn projection_selects_fields_by_path_with_aliases() {
    let docs = [json!({"_id": 1, "make": "x", "engine": {"hp": 90}, "n": null})];
    assert_eq!(
        run(
            "SELECT _id, engine.hp AS power, n, gone FROM c",
            json!({}),
            &docs
        ),
        vec![json!({"_id": 1, "power": 90, "n": null})]
    );
    assert_eq!(
        run("SELECT engine.hp FROM c", json!({}), &docs),
        vec![json!({"engine.hp": 90})]
    );
    assert_eq!(run("SELECT * FROM c", json!({}), &docs), docs.to_vec());
}

// ---- binding -------------------------------------------------------------------------------

#[test]
fn unknown_parameter_is_named() {
    assert_eq!(
        bind_error("SELECT * FROM c WHERE a = :x", json!({})),
        "unknown parameter :x"
    );
    assert_eq!(
        parse("SELECT * FROM c LIMIT :n")
            .unwrap()
            .bind(&Params::new()),
        Err(QueryError::UnknownParameter {
            name: "n".to_owned()
        })
    );
}

#[test]
fn limit_parameter_must_be_a_non_negative_integer() {
    assert_eq!(
        bind_error("SELECT * FROM c LIMIT :n", json!({"n": -1})),
        "LIMIT parameter :n must be a non-negative integer, found number -1"
    );
    assert_eq!(
        bind_error("SELECT * FROM c OFFSET :n", json!({"n": 1.5})),
        "OFFSET parameter :n must be a non-negative integer, found number 1.5"
    );
    assert_eq!(
        bind_error("SELECT * FROM c LIMIT :n", json!({"n": "3"})),
        "LIMIT parameter :n must be a non-negative integer, found string '3'"
    );
}

#[test]
fn in_parameter_must_be_an_array() {
    assert_eq!(
        bind_error("SELECT * FROM c WHERE a IN :xs", json!({"xs": "red"})),
        "IN parameter :xs must be an array, found string 'red'"
    );
}

#[test]
fn insert_documents_must_be_objects() {
    assert_eq!(
        bind_error(
            "INSERT INTO c DOCUMENTS (:a), (:b)",
            json!({"a": {}, "b": [1]})
        ),
        "INSERT document 2 must be an object, found an array"
    );
    assert_eq!(
        bind_error("INSERT INTO c DOCUMENTS (x.y)", json!({})),
        "INSERT document 1 must be an object, found an expression that is not constant"
    );
}

#[test]
fn insert_binding_builds_documents_from_literals_and_parameters() {
    let statement =
        parse(r#"INSERT INTO c DOCUMENTS (:doc), ({"_id": :id, "n": [1, :n], "s": "x"})"#)
            .unwrap()
            .bind(&params(json!({"doc": {"a": 1}, "id": "k", "n": 2})))
            .unwrap();
    let Statement::Insert(insert) = statement else {
        panic!("not an insert");
    };
    let docs: Vec<&Value> = insert
        .documents
        .iter()
        .filter_map(Expr::as_literal)
        .collect();
    assert_eq!(
        docs,
        vec![
            &json!({"a": 1}),
            &json!({"_id": "k", "n": [1, 2], "s": "x"})
        ]
    );
}

#[test]
fn counter_amounts_must_be_numbers() {
    assert_eq!(
        bind_error("UPDATE c APPLY n INCREMENT BY :by", json!({"by": "1"})),
        "APPLY n INCREMENT BY must be a number, found string '1'"
    );
    assert_eq!(
        bind_error("UPDATE c APPLY a.b RESTART WITH NULL", json!({})),
        "APPLY a.b RESTART WITH must be a number, found null"
    );
}

#[test]
fn update_values_are_bound_and_evaluate_against_the_document() {
    let statement = parse(
        "UPDATE c SET total = price * :qty, tag = :t APPLY n INCREMENT BY :by WHERE _id = :id",
    )
    .unwrap()
    .bind(&params(json!({"qty": 3, "t": "x", "by": 2, "id": "k"})))
    .unwrap();
    let Statement::Update(update) = statement else {
        panic!("not an update");
    };
    let doc = json!({"_id": "k", "price": 5});
    assert!(trellis_common::query::matches(update.filter.as_ref(), &doc));
    let values: Vec<Option<Value>> = update
        .mutations
        .iter()
        .map(|m| match m {
            Mutation::Set(_, e) | Mutation::Increment(_, e) | Mutation::Restart(_, e) => {
                eval(e, &doc).into_value()
            }
            Mutation::Unset(_) => None,
        })
        .collect();
    assert_eq!(
        values,
        vec![Some(json!(15)), Some(json!("x")), Some(json!(2))]
    );
}

#[test]
fn binding_leaves_index_statements_alone() {
    let statement = parse("CREATE INDEX i ON c (a)").unwrap();
    assert_eq!(statement.bind(&Params::new()).unwrap(), statement);
}

// ---- planner helpers -----------------------------------------------------------------------

#[test]
fn index_predicates_are_found_among_bound_conjuncts() {
    let select = bound_select(
        "SELECT * FROM c WHERE color = :c AND year IN :ys AND (miles >= :lo) AND name LIKE 'a%' AND :hi > miles",
        json!({"c": "red", "ys": [2001, null, 2002], "lo": 10, "hi": 20}),
    );
    let filter = select.filter.unwrap();
    let found: Vec<IndexPredicate<'_>> = conjuncts(&filter)
        .into_iter()
        .filter_map(index_predicate)
        .collect();
    let color = Path::new(["color"]);
    let year = Path::new(["year"]);
    let miles = Path::new(["miles"]);
    assert_eq!(
        found,
        vec![
            IndexPredicate::Eq {
                path: &color,
                value: &json!("red")
            },
            IndexPredicate::In {
                path: &year,
                values: vec![&json!(2001), &json!(2002)]
            },
            IndexPredicate::Range {
                path: &miles,
                op: RangeOp::Ge,
                bound: &json!(10)
            },
            IndexPredicate::Range {
                path: &miles,
                op: RangeOp::Lt,
                bound: &json!(20)
            },
        ]
    );
}

#[test]
fn collection_names_are_validated_publicly() {
    assert!(validate_collection_name("cars").is_ok());
    assert_eq!(
        validate_collection_name("").unwrap_err().to_string(),
        "invalid collection name '': must not be empty"
    );
}
