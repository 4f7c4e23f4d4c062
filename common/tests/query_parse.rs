//! Parsing the query language: every statement, every operator, error positions, and no
//! panic on any input.

use proptest::prelude::*;
use serde_json::json;
use trellis_common::query::{
    Amount, ArithOp, CompareOp, CreateIndex, DropIndex, Expr, Field, InList, Insert, IsTest,
    Mutation, OnConflict, OrderKey, Params, Path, Position, Projection, QueryError, Removal,
    Select, Statement, Update, parse, parse_expression, parse_script,
};

fn path(dotted: &str) -> Expr {
    Expr::Path(Path::new(dotted.split('.')))
}

fn lit(v: serde_json::Value) -> Expr {
    Expr::Literal(v)
}

fn param(name: &str) -> Expr {
    Expr::Param(name.to_owned())
}

fn cmp(op: CompareOp, left: Expr, right: Expr) -> Expr {
    Expr::Compare {
        op,
        left: Box::new(left),
        right: Box::new(right),
    }
}

fn select(src: &str) -> Select {
    match parse(src).unwrap() {
        Statement::Select(s) => s,
        other => panic!("not a select: {other:?}"),
    }
}

fn expr(src: &str) -> Expr {
    parse_expression(src).unwrap()
}

fn error(src: &str) -> String {
    parse(src).unwrap_err().to_string()
}

// ---- SELECT ------------------------------------------------------------------------------

#[test]
fn select_with_every_clause() {
    let s =
        select("SELECT * FROM cars WHERE color = 'red' ORDER BY year DESC, make LIMIT 10 OFFSET 5");
    assert_eq!(
        s,
        Select {
            projection: Projection::All,
            collection: "cars".to_owned(),
            filter: Some(cmp(CompareOp::Eq, path("color"), lit(json!("red")))),
            order_by: vec![
                OrderKey {
                    expr: path("year"),
                    descending: true
                },
                OrderKey {
                    expr: path("make"),
                    descending: false
                },
            ],
            limit: Some(Amount::Value(10)),
            offset: Some(Amount::Value(5)),
        }
    );
}

#[test]
fn select_minimal_has_no_optional_clauses() {
    let s = select("SELECT * FROM cars");
    assert_eq!(s.filter, None);
    assert!(s.order_by.is_empty());
    assert_eq!((s.limit, s.offset), (None, None));
}

#[test]
fn select_field_list_with_nested_paths_and_aliases() {
    let s = select("SELECT make, engine.hp AS power, `odd key`.x FROM cars");
    assert_eq!(
        s.projection,
        Projection::Fields(vec![
            Field {
                path: Path::new(["make"]),
                alias: None
            },
            Field {
                path: Path::new(["engine", "hp"]),
                alias: Some("power".to_owned())
            },
            Field {
                path: Path::new(["odd key", "x"]),
                alias: None
            },
        ])
    );
}

#[test]
fn select_count_star_with_and_without_alias() {
    assert_eq!(
        select("SELECT COUNT(*) FROM cars").projection,
        Projection::Count { alias: None }
    );
    assert_eq!(
        select("select count ( * ) as n from cars").projection,
        Projection::Count {
            alias: Some("n".to_owned())
        }
    );
}

#[test]
fn limit_and_offset_accept_parameters() {
    let s = select("SELECT * FROM c LIMIT :n OFFSET :skip");
    assert_eq!(s.limit, Some(Amount::Param("n".to_owned())));
    assert_eq!(s.offset, Some(Amount::Param("skip".to_owned())));
}

#[test]
fn order_by_accepts_asc_and_expressions() {
    let s = select("SELECT * FROM c ORDER BY a.b ASC, price * qty DESC");
    assert_eq!(s.order_by[0].expr, path("a.b"));
    assert!(!s.order_by[0].descending);
    assert!(matches!(
        s.order_by[1].expr,
        Expr::Arith {
            op: ArithOp::Mul,
            ..
        }
    ));
    assert!(s.order_by[1].descending);
}

#[test]
fn keywords_are_case_insensitive() {
    assert_eq!(
        parse("sElEcT * fRoM cars wHeRe a Is NoT nUlL oRdEr By a LiMiT 1").unwrap(),
        parse("SELECT * FROM cars WHERE a IS NOT NULL ORDER BY a LIMIT 1").unwrap()
    );
}

#[test]
fn explain_wraps_a_select() {
    assert_eq!(
        parse("EXPLAIN SELECT * FROM c WHERE a = 1").unwrap(),
        Statement::Explain(select("SELECT * FROM c WHERE a = 1"))
    );
}

// ---- INSERT ------------------------------------------------------------------------------

#[test]
fn insert_documents_defaults_to_fail_on_conflict() {
    assert_eq!(
        parse("INSERT INTO cars DOCUMENTS (:doc)").unwrap(),
        Statement::Insert(Insert {
            collection: "cars".to_owned(),
            documents: vec![param("doc")],
            on_conflict: OnConflict::Fail,
        })
    );
}

#[test]
fn insert_accepts_several_documents_and_json_objects() {
    let Statement::Insert(insert) = parse(
        r#"INSERT INTO cars DOCUMENTS (:a), ({"_id": "x", "tags": ["a", 'b'], "n": -1.5, "ok": true, "v": :v})"#,
    )
    .unwrap() else {
        panic!("not an insert");
    };
    assert_eq!(insert.documents.len(), 2);
    assert_eq!(
        insert.documents[1],
        Expr::Object(vec![
            ("_id".to_owned(), lit(json!("x"))),
            (
                "tags".to_owned(),
                Expr::Array(vec![lit(json!("a")), lit(json!("b"))])
            ),
            ("n".to_owned(), lit(json!(-1.5))),
            ("ok".to_owned(), lit(json!(true))),
            ("v".to_owned(), param("v")),
        ])
    );
}

#[test]
fn insert_on_id_conflict_policies() {
    let policy = |src: &str| match parse(src).unwrap() {
        Statement::Insert(i) => i.on_conflict,
        other => panic!("not an insert: {other:?}"),
    };
    let base = "INSERT INTO c DOCUMENTS (:d) ON ID CONFLICT";
    assert_eq!(policy(&format!("{base} FAIL")), OnConflict::Fail);
    assert_eq!(policy(&format!("{base} DO NOTHING")), OnConflict::DoNothing);
    assert_eq!(policy(&format!("{base} do update")), OnConflict::DoUpdate);
}

// ---- UPDATE ------------------------------------------------------------------------------

#[test]
fn update_clauses_come_in_any_order_and_repeat() {
    let statement = parse(
        "UPDATE cars SET color = 'blue', a.b = :x APPLY miles INCREMENT BY 10 UNSET old, tmp \
         SET n = n + 1 APPLY laps RESTART WITH 0 WHERE _id = :id",
    )
    .unwrap();
    assert_eq!(
        statement,
        Statement::Update(Update {
            collection: "cars".to_owned(),
            mutations: vec![
                Mutation::Set(Path::new(["color"]), lit(json!("blue"))),
                Mutation::Set(Path::new(["a", "b"]), param("x")),
                Mutation::Increment(Path::new(["miles"]), lit(json!(10))),
                Mutation::Unset(Path::new(["old"])),
                Mutation::Unset(Path::new(["tmp"])),
                Mutation::Set(
                    Path::new(["n"]),
                    Expr::Arith {
                        op: ArithOp::Add,
                        left: Box::new(path("n")),
                        right: Box::new(lit(json!(1))),
                    }
                ),
                Mutation::Restart(Path::new(["laps"]), lit(json!(0))),
            ],
            filter: Some(cmp(CompareOp::Eq, path("_id"), param("id"))),
        })
    );
}

#[test]
fn update_needs_at_least_one_change() {
    assert_eq!(
        error("UPDATE cars WHERE a = 1"),
        "line 1, column 13: expected SET, UNSET or APPLY, found 'WHERE'"
    );
}

#[test]
fn update_cannot_change_the_id() {
    assert_eq!(
        error("UPDATE cars SET _id = 'x'"),
        "line 1, column 17: _id cannot be changed"
    );
    assert_eq!(
        error("UPDATE cars UNSET a, _id.k"),
        "line 1, column 22: _id cannot be changed"
    );
}

#[test]
fn apply_needs_increment_or_restart() {
    assert_eq!(
        error("UPDATE c APPLY n BY 1"),
        "line 1, column 18: expected INCREMENT BY or RESTART WITH, found 'BY'"
    );
}

// ---- DELETE, EVICT, indexes ---------------------------------------------------------------

#[test]
fn delete_and_evict_with_and_without_filter() {
    assert_eq!(
        parse("DELETE FROM cars").unwrap(),
        Statement::Delete(Removal {
            collection: "cars".to_owned(),
            filter: None
        })
    );
    assert_eq!(
        parse("EVICT FROM cars WHERE sold = true").unwrap(),
        Statement::Evict(Removal {
            collection: "cars".to_owned(),
            filter: Some(cmp(CompareOp::Eq, path("sold"), lit(json!(true)))),
        })
    );
}

#[test]
fn create_and_drop_index() {
    assert_eq!(
        parse("CREATE INDEX by_color ON cars (paint.color)").unwrap(),
        Statement::CreateIndex(CreateIndex {
            name: "by_color".to_owned(),
            collection: "cars".to_owned(),
            path: Path::new(["paint", "color"]),
            if_not_exists: false,
        })
    );
    assert_eq!(
        parse("create index if not exists by_color on cars (color)").unwrap(),
        Statement::CreateIndex(CreateIndex {
            name: "by_color".to_owned(),
            collection: "cars".to_owned(),
            path: Path::new(["color"]),
            if_not_exists: true,
        })
    );
    assert_eq!(
        parse("DROP INDEX IF EXISTS by_color ON cars").unwrap(),
        Statement::DropIndex(DropIndex {
            name: "by_color".to_owned(),
            collection: "cars".to_owned(),
            if_exists: true,
        })
    );
    assert!(matches!(
        parse("DROP INDEX i ON c").unwrap(),
        Statement::DropIndex(DropIndex {
            if_exists: false,
            ..
        })
    ));
}

#[test]
fn statement_reports_its_collection() {
    for (src, collection) in [
        ("SELECT * FROM a", "a"),
        ("INSERT INTO b DOCUMENTS (:d)", "b"),
        ("UPDATE c SET x = 1", "c"),
        ("DELETE FROM d", "d"),
        ("EVICT FROM e", "e"),
        ("CREATE INDEX i ON f (x)", "f"),
        ("DROP INDEX i ON g", "g"),
        ("EXPLAIN SELECT * FROM h", "h"),
    ] {
        assert_eq!(parse(src).unwrap().collection(), collection);
    }
}

// ---- scripts -------------------------------------------------------------------------------

#[test]
fn script_splits_on_semicolons_and_skips_empty_statements() {
    let statements = parse_script(
        "INSERT INTO c DOCUMENTS (:d);\n UPDATE c SET n = 1 WHERE _id = :id;; DELETE FROM c WHERE n > 3;",
    )
    .unwrap();
    assert_eq!(statements.len(), 3);
    assert!(matches!(statements[0], Statement::Insert(_)));
    assert!(matches!(statements[1], Statement::Update(_)));
    assert!(matches!(statements[2], Statement::Delete(_)));
    assert_eq!(parse_script("  ; ").unwrap(), vec![]);
}

#[test]
fn script_error_points_into_the_right_line() {
    assert_eq!(
        parse_script("SELECT * FROM a;\nSELECT * FORM b")
            .unwrap_err()
            .to_string(),
        "line 2, column 10: expected FROM, found 'FORM'"
    );
}

#[test]
fn single_statement_parse_rejects_a_second_one() {
    assert_eq!(
        error("SELECT * FROM a; SELECT * FROM b"),
        "line 1, column 18: expected ';' or end of input, found 'SELECT'"
    );
    assert!(parse("SELECT * FROM a;").is_ok());
}

// ---- expressions ---------------------------------------------------------------------------

#[test]
fn every_comparison_operator() {
    for (text, op) in [
        ("=", CompareOp::Eq),
        ("==", CompareOp::Eq),
        ("!=", CompareOp::Ne),
        ("<>", CompareOp::Ne),
        ("<", CompareOp::Lt),
        ("<=", CompareOp::Le),
        (">", CompareOp::Gt),
        (">=", CompareOp::Ge),
    ] {
        assert_eq!(
            expr(&format!("a.b {text} 3")),
            cmp(op, path("a.b"), lit(json!(3))),
            "{text}"
        );
    }
}

#[test]
fn in_with_list_array_and_parameter() {
    let list = |e: Expr| match e {
        Expr::In { list, negated, .. } => (list, negated),
        other => panic!("not IN: {other:?}"),
    };
    assert_eq!(
        list(expr("a IN (1, 'x', :p)")),
        (
            InList::Exprs(vec![lit(json!(1)), lit(json!("x")), param("p")]),
            false
        )
    );
    assert_eq!(
        list(expr("a IN [1, 2]")),
        (InList::Exprs(vec![lit(json!(1)), lit(json!(2))]), false)
    );
    assert_eq!(
        list(expr("a NOT IN :colors")),
        (InList::Param("colors".to_owned()), true)
    );
    assert_eq!(list(expr("a IN ()")), (InList::Exprs(vec![]), false));
}

#[test]
fn like_and_not_like() {
    assert_eq!(
        expr("name LIKE 'J%n_'"),
        Expr::Like {
            expr: Box::new(path("name")),
            pattern: Box::new(lit(json!("J%n_"))),
            negated: false
        }
    );
    assert!(matches!(
        expr("name NOT LIKE :p"),
        Expr::Like { negated: true, .. }
    ));
}

#[test]
fn is_null_and_is_missing_with_negations() {
    for (src, test, negated) in [
        ("a IS NULL", IsTest::Null, false),
        ("a IS NOT NULL", IsTest::Null, true),
        ("a IS MISSING", IsTest::Missing, false),
        ("a IS NOT MISSING", IsTest::Missing, true),
    ] {
        assert_eq!(
            expr(src),
            Expr::Is {
                expr: Box::new(path("a")),
                test,
                negated
            },
            "{src}"
        );
    }
}

#[test]
fn literals_of_every_kind() {
    assert_eq!(expr("TRUE"), lit(json!(true)));
    assert_eq!(expr("false"), lit(json!(false)));
    assert_eq!(expr("null"), lit(json!(null)));
    assert_eq!(expr("42"), lit(json!(42)));
    assert_eq!(expr("-42"), lit(json!(-42)));
    assert_eq!(expr("2.5e2"), lit(json!(250.0)));
    assert_eq!(expr("-0.5"), lit(json!(-0.5)));
    assert_eq!(expr("'it''s'"), lit(json!("it's")));
    assert_eq!(expr(":p"), param("p"));
    assert_eq!(expr("{}"), Expr::Object(vec![]));
    assert_eq!(expr("[]"), Expr::Array(vec![]));
}

#[test]
fn quoted_identifiers_may_be_keywords_or_contain_anything() {
    assert_eq!(
        expr("`select`.\"a b\" = 1"),
        cmp(
            CompareOp::Eq,
            Expr::Path(Path::new(["select", "a b"])),
            lit(json!(1))
        )
    );
    assert_eq!(select("SELECT * FROM `my-cars`").collection, "my-cars");
    assert_eq!(select("SELECT * FROM \"order\"").collection, "order");
}

#[test]
fn id_is_an_ordinary_path_root() {
    assert_eq!(
        expr("_id.site = 'x'"),
        cmp(CompareOp::Eq, path("_id.site"), lit(json!("x")))
    );
}

#[test]
fn precedence_or_and_not_comparison_additive_multiplicative_unary() {
    assert_eq!(
        expr("NOT a = 1 + 2 * -b OR c"),
        Expr::Or(vec![
            Expr::Not(Box::new(cmp(
                CompareOp::Eq,
                path("a"),
                Expr::Arith {
                    op: ArithOp::Add,
                    left: Box::new(lit(json!(1))),
                    right: Box::new(Expr::Arith {
                        op: ArithOp::Mul,
                        left: Box::new(lit(json!(2))),
                        right: Box::new(Expr::Neg(Box::new(path("b")))),
                    }),
                }
            ))),
            path("c"),
        ])
    );
    assert_eq!(
        expr("(a OR b) AND c"),
        Expr::And(vec![Expr::Or(vec![path("a"), path("b")]), path("c")])
    );
    assert_eq!(
        expr("a - b - c"),
        Expr::Arith {
            op: ArithOp::Sub,
            left: Box::new(Expr::Arith {
                op: ArithOp::Sub,
                left: Box::new(path("a")),
                right: Box::new(path("b")),
            }),
            right: Box::new(path("c")),
        }
    );
}

// ---- errors with positions -----------------------------------------------------------------

#[test]
fn missing_from_names_position_expected_and_found() {
    let err = parse("SELECT name, age AS years WHERE x = 1").unwrap_err();
    assert_eq!(
        err,
        QueryError::Unexpected {
            at: Position {
                line: 1,
                column: 27
            },
            expected: "FROM".to_owned(),
            found: "'WHERE'".to_owned(),
        }
    );
    assert_eq!(
        err.to_string(),
        "line 1, column 27: expected FROM, found 'WHERE'"
    );
}

#[test]
fn unknown_statement_lists_the_statements() {
    assert_eq!(
        error("SELEC * FROM c"),
        "line 1, column 1: expected a statement (SELECT, INSERT, UPDATE, DELETE, EVICT, \
         CREATE INDEX, DROP INDEX or EXPLAIN), found 'SELEC'"
    );
    assert_eq!(
        error(""),
        "line 1, column 1: expected a statement (SELECT, INSERT, UPDATE, DELETE, EVICT, \
         CREATE INDEX, DROP INDEX or EXPLAIN), found end of input"
    );
}

#[test]
fn truncated_query_reports_end_of_input() {
    assert_eq!(
        error("SELECT * FROM c WHERE a ="),
        "line 1, column 26: expected an expression, found end of input"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE a = 1 AND"),
        "line 1, column 32: expected an expression, found end of input"
    );
}

#[test]
fn positions_count_lines_and_characters() {
    assert_eq!(
        error("SELECT *\n  FROM cars\n  WHERE é = 1"),
        "line 3, column 9: unexpected character 'é'"
    );
    assert_eq!(
        error("SELECT *\nFROM cars\nWHERE a = 'x\n"),
        "line 3, column 11: unterminated string literal"
    );
}

#[test]
fn reserved_word_cannot_be_an_unquoted_path() {
    assert_eq!(
        error("SELECT * FROM c WHERE from = 1"),
        "line 1, column 23: expected an expression, found 'from'"
    );
    assert_eq!(
        error("SELECT FROM c"),
        "line 1, column 8: expected '*', COUNT(*) or a path, found 'FROM'"
    );
}

#[test]
fn invalid_collection_name_is_located_and_explained() {
    assert_eq!(
        error("SELECT * FROM __system"),
        "line 1, column 15: invalid collection name '__system': names starting with '__' are reserved"
    );
    assert_eq!(
        error("SELECT * FROM `a.b`"),
        "line 1, column 15: invalid collection name 'a.b': may only contain ASCII letters, \
         digits, '_' and '-', found '.'"
    );
    assert_eq!(
        error("SELECT * FROM 'cars'"),
        "line 1, column 15: expected a collection name, found string 'cars'"
    );
    assert_eq!(
        error("CREATE INDEX `1x` ON c (a)"),
        "line 1, column 14: invalid index name '1x': must start with an ASCII letter or '_'"
    );
}

#[test]
fn limit_must_be_a_non_negative_integer_literal_or_parameter() {
    assert_eq!(
        error("SELECT * FROM c LIMIT -1"),
        "line 1, column 23: expected a non-negative integer or a parameter, found '-'"
    );
    assert_eq!(
        error("SELECT * FROM c LIMIT 1.5"),
        "line 1, column 23: expected a non-negative integer or a parameter, found '1.5'"
    );
    assert_eq!(
        error("SELECT * FROM c OFFSET 'x'"),
        "line 1, column 24: expected a non-negative integer or a parameter, found string 'x'"
    );
}

#[test]
fn malformed_operators_and_lists_are_located() {
    assert_eq!(
        error("SELECT * FROM c WHERE a IS 1"),
        "line 1, column 28: expected NOT, NULL or MISSING, found '1'"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE a IS NOT 1"),
        "line 1, column 32: expected NULL or MISSING, found '1'"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE a NOT = 1"),
        "line 1, column 29: expected IN or LIKE, found '='"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE a IN 1"),
        "line 1, column 28: expected '(', '[' or a parameter, found '1'"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE a IN (1 2)"),
        "line 1, column 31: expected ',' or ')', found '2'"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE (a = 1"),
        "line 1, column 29: expected ')', found end of input"
    );
    assert_eq!(
        error("INSERT INTO c DOCUMENTS ({a 1})"),
        "line 1, column 29: expected ':', found '1'"
    );
    assert_eq!(
        error("INSERT INTO c DOCUMENTS (:d) ON ID CONFLICT DO"),
        "line 1, column 47: expected NOTHING or UPDATE, found end of input"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE a.  = 1"),
        "line 1, column 27: expected a field name after '.', found '='"
    );
}

#[test]
fn bad_numbers_are_located() {
    assert_eq!(
        error("SELECT * FROM c WHERE a = 1e999"),
        "line 1, column 27: number 1e999 is out of range"
    );
    assert_eq!(
        error("SELECT * FROM c WHERE a = 12ab"),
        "line 1, column 27: invalid number '12ab'"
    );
}

#[test]
fn statements_serialize_to_json() {
    let value = serde_json::to_value(parse("SELECT a AS b FROM c WHERE x IN :xs LIMIT 2").unwrap())
        .unwrap();
    assert_eq!(value["Select"]["collection"], json!("c"));
    assert_eq!(
        value["Select"]["projection"],
        json!({"Fields": [{"path": ["a"], "alias": "b"}]})
    );
    assert_eq!(value["Select"]["limit"], json!({"Value": 2}));
}

#[test]
fn expressions_at_the_nesting_limit_parse_and_evaluate() {
    let depth = trellis_common::query::MAX_NESTING - 1;
    let src = format!(
        "{}a = 1{}",
        "(NOT ".repeat(depth / 2),
        ")".repeat(depth / 2)
    );
    let e = parse_expression(&src).unwrap();
    let _ = trellis_common::query::truth(&e, &json!({"a": 1}));
    let too_deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    assert!(parse_expression(&too_deep).is_err());
}

// ---- no panic on any input -------------------------------------------------------------

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "INSERT",
    "INTO",
    "DOCUMENTS",
    "UPDATE",
    "SET",
    "UNSET",
    "APPLY",
    "INCREMENT",
    "BY",
    "RESTART",
    "WITH",
    "DELETE",
    "EVICT",
    "FROM",
    "WHERE",
    "ORDER",
    "ASC",
    "DESC",
    "LIMIT",
    "OFFSET",
    "COUNT",
    "AS",
    "CREATE",
    "DROP",
    "INDEX",
    "IF",
    "NOT",
    "EXISTS",
    "ON",
    "ID",
    "CONFLICT",
    "DO",
    "NOTHING",
    "FAIL",
    "EXPLAIN",
    "AND",
    "OR",
    "IN",
    "LIKE",
    "IS",
    "NULL",
    "MISSING",
    "TRUE",
    "FALSE",
    "a",
    "b.c",
    "_id",
    "`q`",
    "\"d\"",
    "'s'",
    "''",
    "'",
    "`",
    "\"",
    ":p",
    ":",
    "0",
    "-1",
    "1.5",
    "1e9",
    "99999999999999999999",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    ";",
    "*",
    "+",
    "-",
    "/",
    "=",
    "==",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "!",
    "é",
    "\n",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|parts| parts.join(" "))
}

/// Random well-formed expressions, every operand parenthesised.
fn expression() -> impl Strategy<Value = String> {
    let atom = prop::sample::select(vec![
        "a", "b.c", "_id", "q", "d", "1", "-2.5", "'x'", "NULL", "TRUE", ":p", "[1, 'a']", "{k: 1}",
    ])
    .prop_map(str::to_owned);
    atom.prop_recursive(4, 32, 2, |inner| {
        let unary = prop::sample::select(vec![
            "NOT ({})",
            "-({})",
            "({}) IS NULL",
            "({}) IS NOT MISSING",
            "({}) LIKE 'a%'",
            "({}) NOT IN :p",
            "({}) IN (1, 'a', NULL)",
        ]);
        let binary = prop::sample::select(vec![
            "AND", "OR", "=", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/",
        ]);
        prop_oneof![
            (unary, inner.clone()).prop_map(|(form, e)| form.replace("{}", &e)),
            (inner.clone(), binary, inner).prop_map(|(l, op, r)| format!("({l}) {op} ({r})")),
        ]
    })
}

proptest! {
    #[test]
    fn well_formed_selects_parse_bind_and_run(filter in expression(), key in expression()) {
        let src = format!("SELECT * FROM c WHERE {filter} ORDER BY {key} DESC LIMIT :n");
        let params: Params = serde_json::from_value(json!({"p": [1, "a", null], "n": 5})).unwrap();
        let statement = parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        let Statement::Select(select) = statement.bind(&params).unwrap() else {
            return Err(TestCaseError::fail("not a select"));
        };
        let docs = [json!({}), json!({"a": 1, "b": {"c": "x"}, "_id": null, "q": [1], "d": true})];
        prop_assert!(select.run(&docs).unwrap().len() <= 2);
    }

    #[test]
    fn not_inverts_truth_and_excluded_middle_is_never_false(e in expression()) {
        use trellis_common::query::{Truth, truth};
        let params: Params = serde_json::from_value(json!({"p": [1, "a", null]})).unwrap();
        let e = parse_expression(&e).unwrap().bind(&params).unwrap();
        let negated = Expr::Not(Box::new(e.clone()));
        let either = Expr::Or(vec![e.clone(), negated.clone()]);
        for doc in [json!({}), json!({"a": 1, "b": {"c": "x"}, "q": [1], "d": true})] {
            prop_assert_eq!(truth(&negated, &doc), !truth(&e, &doc));
            prop_assert_ne!(truth(&either, &doc), Truth::False);
        }
    }

    #[test]
    fn parser_never_panics_on_random_text(src in "\\PC{0,80}") {
        let _ = parse(&src);
        let _ = parse_script(&src);
        let _ = parse_expression(&src);
    }

    #[test]
    fn parser_never_panics_on_token_soup(src in token_soup()) {
        let _ = parse(&src);
        let _ = parse_script(&src);
        let _ = parse_expression(&src);
    }

    #[test]
    fn binding_and_evaluating_whatever_parses_never_panics(src in token_soup()) {
        let Ok(statements) = parse_script(&src) else { return Ok(()) };
        let params: Params = serde_json::from_value(json!({"p": [1, "a", null]})).unwrap();
        let docs = [json!({}), json!({"a": 1, "b": {"c": "x"}, "_id": null, "q": [1], "d": true})];
        for statement in statements {
            let Ok(Statement::Select(select)) = statement.bind(&params) else { continue };
            let _ = select.run(&docs);
        }
    }

    #[test]
    fn parse_errors_point_inside_the_text(src in token_soup()) {
        if let Err(QueryError::Unexpected { at, .. } | QueryError::Invalid { at, .. }) = parse(&src) {
            let lines: Vec<&str> = src.split('\n').collect();
            prop_assert!(at.line >= 1 && at.line <= lines.len());
            prop_assert!(at.column >= 1 && at.column <= lines[at.line - 1].chars().count() + 1);
        }
    }
}
