//! Syntax tree of the query language: statements, expressions and field paths. Plain data;
//! parsing lives in `parser`, parameter binding in `bind`, evaluation in `eval`.

use serde::Serialize;
use serde_json::Value;

/// A field path `a.b.c`: the object keys from the document root. `_id` is an ordinary
/// root. The same type as the document model's path, so an UPDATE's targets become
/// [`crate::crdt::Mutation`]s without conversion.
pub use crate::crdt::Path;

/// One statement of the language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Statement {
    /// `SELECT ... FROM c ...`
    Select(Select),
    /// `INSERT INTO c DOCUMENTS (...), ...`
    Insert(Insert),
    /// `UPDATE c SET ... UNSET ... APPLY ... [WHERE ...]`
    Update(Update),
    /// `DELETE FROM c [WHERE ...]`: deletes and syncs the tombstones.
    Delete(Removal),
    /// `EVICT FROM c [WHERE ...]`: drops local copies only.
    Evict(Removal),
    /// `CREATE INDEX [IF NOT EXISTS] i ON c (path)`
    CreateIndex(CreateIndex),
    /// `DROP INDEX [IF EXISTS] i ON c`
    DropIndex(DropIndex),
    /// `EXPLAIN SELECT ...`: the plan instead of the rows.
    Explain(Select),
}

impl Statement {
    /// The collection the statement works on.
    pub fn collection(&self) -> &str {
        match self {
            Statement::Select(s) | Statement::Explain(s) => &s.collection,
            Statement::Insert(i) => &i.collection,
            Statement::Update(u) => &u.collection,
            Statement::Delete(r) | Statement::Evict(r) => &r.collection,
            Statement::CreateIndex(c) => &c.collection,
            Statement::DropIndex(d) => &d.collection,
        }
    }
}

/// `SELECT projection FROM collection [WHERE filter] [ORDER BY ...] [LIMIT n] [OFFSET n]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Select {
    /// What each result row holds.
    pub projection: Projection,
    /// The collection read.
    pub collection: String,
    /// Keeps a document only when it evaluates to TRUE.
    pub filter: Option<Expr>,
    /// Sort keys, most significant first.
    pub order_by: Vec<OrderKey>,
    /// At most this many rows.
    pub limit: Option<Amount>,
    /// Rows skipped before the first one returned.
    pub offset: Option<Amount>,
}

/// What a SELECT returns per row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Projection {
    /// `*`: whole documents.
    All,
    /// `COUNT(*) [AS alias]`: one row with the number of matches.
    Count {
        /// The key of the count in the row; `count` when absent.
        alias: Option<String>,
    },
    /// `a.b [AS x], c`: an object per document with the listed fields.
    Fields(Vec<Field>),
}

/// One projected field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// Where the value comes from.
    pub path: Path,
    /// The key in the row; the dotted path when absent.
    pub alias: Option<String>,
}

impl Field {
    /// The key this field has in a result row.
    pub fn output_key(&self) -> String {
        self.alias.clone().unwrap_or_else(|| self.path.dotted())
    }
}

/// One `ORDER BY` key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderKey {
    /// The value sorted on.
    pub expr: Expr,
    /// `DESC`; ascending otherwise.
    pub descending: bool,
}

/// A LIMIT or OFFSET: a literal, or a parameter until the statement is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Amount {
    /// A known count.
    Value(u64),
    /// `:name`, resolved by binding.
    Param(String),
}

impl Amount {
    /// The count, once known.
    pub fn value(&self) -> Option<u64> {
        match self {
            Amount::Value(n) => Some(*n),
            Amount::Param(_) => None,
        }
    }
}

/// `INSERT INTO collection DOCUMENTS (doc), ... [ON ID CONFLICT ...]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Insert {
    /// The collection written.
    pub collection: String,
    /// One expression per document; after binding each is an object literal.
    pub documents: Vec<Expr>,
    /// What to do when a document with the same `_id` exists.
    pub on_conflict: OnConflict,
}

/// `ON ID CONFLICT` policy of an INSERT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum OnConflict {
    /// `FAIL` (the default): the statement fails.
    #[default]
    Fail,
    /// `DO NOTHING`: the existing document is kept.
    DoNothing,
    /// `DO UPDATE`: the new fields are written over the existing document.
    DoUpdate,
}

/// `UPDATE collection <mutations> [WHERE filter]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    /// The collection written.
    pub collection: String,
    /// The changes, in the order written; never empty.
    pub mutations: Vec<Mutation>,
    /// Only documents for which it is TRUE change.
    pub filter: Option<Expr>,
}

/// One change made by an UPDATE.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Mutation {
    /// `SET path = expr`
    Set(Path, Expr),
    /// `UNSET path`
    Unset(Path),
    /// `APPLY path INCREMENT BY expr`: a counter increment.
    Increment(Path, Expr),
    /// `APPLY path RESTART WITH expr`: sets a counter.
    Restart(Path, Expr),
}

impl Mutation {
    /// The field changed.
    pub fn path(&self) -> &Path {
        match self {
            Mutation::Set(p, _)
            | Mutation::Unset(p)
            | Mutation::Increment(p, _)
            | Mutation::Restart(p, _) => p,
        }
    }
}

/// The target of a DELETE or EVICT.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    /// The collection.
    pub collection: String,
    /// Only documents for which it is TRUE go; all when absent.
    pub filter: Option<Expr>,
}

/// `CREATE INDEX [IF NOT EXISTS] name ON collection (path)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateIndex {
    /// Index name, unique per collection.
    pub name: String,
    /// The collection indexed.
    pub collection: String,
    /// The field indexed.
    pub path: Path,
    /// `IF NOT EXISTS`: no error when the index exists.
    pub if_not_exists: bool,
}

/// `DROP INDEX [IF EXISTS] name ON collection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropIndex {
    /// Index name.
    pub name: String,
    /// Its collection.
    pub collection: String,
    /// `IF EXISTS`: no error when there is no such index.
    pub if_exists: bool,
}

/// An expression. Predicates and values share one type; evaluation gives booleans, NULL
/// (unknown) or MISSING.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Expr {
    /// A constant: from the text, or a bound parameter.
    Literal(Value),
    /// `:name`, replaced by a literal when the statement is bound.
    Param(String),
    /// A field of the document.
    Path(Path),
    /// `{key: expr, ...}`; becomes a literal when every value is constant.
    Object(Vec<(String, Expr)>),
    /// `[expr, ...]`; becomes a literal when every item is constant.
    Array(Vec<Expr>),
    /// `NOT expr`
    Not(Box<Expr>),
    /// `a AND b AND ...`, flattened (at least two operands).
    And(Vec<Expr>),
    /// `a OR b OR ...`, flattened (at least two operands).
    Or(Vec<Expr>),
    /// `left op right`
    Compare {
        /// The operator.
        op: CompareOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `left op right` on numbers.
    Arith {
        /// The operator.
        op: ArithOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `-expr`
    Neg(Box<Expr>),
    /// `expr [NOT] IN (list)` or `expr [NOT] IN :param`.
    In {
        /// The value looked for.
        expr: Box<Expr>,
        /// The candidates.
        list: InList,
        /// `NOT IN`.
        negated: bool,
    },
    /// `expr [NOT] LIKE pattern`, `%` any run of characters, `_` one character.
    Like {
        /// The string matched.
        expr: Box<Expr>,
        /// The pattern.
        pattern: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `expr IS [NOT] NULL` or `expr IS [NOT] MISSING`; never unknown.
    Is {
        /// The value tested.
        expr: Box<Expr>,
        /// NULL or MISSING.
        test: IsTest,
        /// `IS NOT`.
        negated: bool,
    },
}

impl Expr {
    /// The constant, if this is a literal.
    pub fn as_literal(&self) -> Option<&Value> {
        match self {
            Expr::Literal(v) => Some(v),
            _ => None,
        }
    }

    /// The path, if this is a bare field reference.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Expr::Path(p) => Some(p),
            _ => None,
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum CompareOp {
    /// `=` (also `==`)
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub fn flip(self) -> Self {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            CompareOp::Eq | CompareOp::Ne => self,
        }
    }

    /// Whether `a op b` holds when `a.cmp(b)` is `ordering`.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            CompareOp::Eq => ordering == Equal,
            CompareOp::Ne => ordering != Equal,
            CompareOp::Lt => ordering == Less,
            CompareOp::Le => ordering != Greater,
            CompareOp::Gt => ordering == Greater,
            CompareOp::Ge => ordering != Less,
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// The right side of IN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum InList {
    /// `(a, b, ...)` or `[a, b, ...]`.
    Exprs(Vec<Expr>),
    /// `:name`, an array parameter; binding turns it into [`InList::Exprs`].
    Param(String),
}

/// What IS tests for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum IsTest {
    /// JSON null (not an absent field).
    Null,
    /// An absent field (not JSON null).
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_walks_objects_only() {
        let doc = json!({"a": {"b": [1, 2]}, "n": null});
        assert_eq!(Path::new(["a", "b"]).lookup(&doc), Some(&json!([1, 2])));
        assert_eq!(Path::new(["n"]).lookup(&doc), Some(&Value::Null));
        assert_eq!(Path::new(["a", "b", "0"]).lookup(&doc), None);
        assert_eq!(Path::new(["n", "x"]).lookup(&doc), None);
        assert_eq!(Path::new(["zz"]).lookup(&doc), None);
    }

    #[test]
    fn path_display_quotes_odd_segments() {
        assert_eq!(Path::new(["a", "b c", "x`y"]).to_string(), "a.`b c`.`x``y`");
        assert_eq!(Path::new(["a", "b c"]).dotted(), "a.b c");
    }

    #[test]
    fn flipped_operator_keeps_meaning() {
        use std::cmp::Ordering::*;
        for op in [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Lt,
            CompareOp::Le,
            CompareOp::Gt,
            CompareOp::Ge,
        ] {
            for ord in [Less, Equal, Greater] {
                assert_eq!(
                    op.holds(ord),
                    op.flip().holds(ord.reverse()),
                    "{op:?} {ord:?}"
                );
            }
        }
    }
}
