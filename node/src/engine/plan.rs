//! The planner: how a statement with a WHERE clause finds its candidate documents, and
//! the [`Plan`] that `EXPLAIN` shows.
//!
//! It looks at the AND-ed parts of the bound filter ([`conjuncts`]) for a predicate an
//! index can answer ([`index_predicate`]): `_id = c` / `_id IN (...)` become point reads,
//! `path = c`, `path IN (...)` and `path <op> c` on an indexed path become index scans,
//! anything else a full scan of the collection. A plan only narrows the candidates:
//! the executor re-checks the whole WHERE on every materialised document, so a
//! statement returns the same documents whichever plan runs it.
//!
//! Preference, most selective first: id lookup, then index equality, `IN`, a range
//! bounded on both sides (two predicates on one path combined), a one-sided range.

use std::ops::Bound;

use serde::Serialize;
use serde_json::Value;
use trellis_common::ids::{CollectionName, DocId, IdError};
use trellis_common::query::{Expr, IndexPredicate, Path, RangeOp, conjuncts, index_predicate};

use crate::store::IndexDef;

/// How a statement reads its candidate documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum Plan {
    /// Point reads of the documents named by `_id = c` or `_id IN (...)`.
    IdLookup {
        /// The collection read.
        collection: String,
        /// The ids read (an id no document can have is left out).
        ids: Vec<Value>,
        /// The same, as document ids.
        #[serde(skip)]
        doc_ids: Vec<DocId>,
    },
    /// A scan of a secondary index.
    IndexScan {
        /// The collection read.
        collection: String,
        /// The index used.
        index: String,
        /// Its field path.
        path: String,
        /// What the scan looks for.
        predicate: ScanPredicate,
    },
    /// Every document of the collection.
    FullScan {
        /// The collection read.
        collection: String,
        /// Why no index is used.
        reason: String,
    },
}

/// The part of the WHERE clause an index scan answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ScanPredicate {
    /// `path = value`.
    Eq {
        /// The value looked up.
        value: Value,
    },
    /// `path IN (values)` (NULLs dropped: they never match).
    In {
        /// The values looked up.
        values: Vec<Value>,
    },
    /// `path > / >= lower AND path < / <= upper`, one side possibly open. Only values of
    /// the bound's type are scanned (`a > 5` matches no string).
    Range {
        /// The lower bound, if any.
        lower: Option<RangeBound>,
        /// The upper bound, if any.
        upper: Option<RangeBound>,
    },
}

/// One side of a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RangeBound {
    /// The bound.
    pub value: Value,
    /// Whether the bound itself matches (`>=`, `<=`).
    pub inclusive: bool,
}

impl Plan {
    /// The plan's name: `id_lookup`, `index_scan` or `full_scan`.
    pub fn name(&self) -> &'static str {
        match self {
            Plan::IdLookup { .. } => "id_lookup",
            Plan::IndexScan { .. } => "index_scan",
            Plan::FullScan { .. } => "full_scan",
        }
    }

    /// The index an index scan uses.
    pub fn index(&self) -> Option<&str> {
        match self {
            Plan::IndexScan { index, .. } => Some(index),
            _ => None,
        }
    }

    /// The plan as JSON, as EXPLAIN answers it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl ScanPredicate {
    /// The index-scan ranges that cover every value the predicate can match, in the
    /// order of the index value encoding.
    pub(crate) fn ranges(&self) -> Vec<(Bound<Value>, Bound<Value>)> {
        match self {
            ScanPredicate::Eq { value } => {
                vec![(
                    Bound::Included(value.clone()),
                    Bound::Included(value.clone()),
                )]
            }
            ScanPredicate::In { values } => values
                .iter()
                .map(|v| (Bound::Included(v.clone()), Bound::Included(v.clone())))
                .collect(),
            ScanPredicate::Range { lower, upper } => {
                let Some(typed) = lower.as_ref().or(upper.as_ref()) else {
                    return Vec::new();
                };
                let (floor, ceiling) = type_range(&typed.value);
                let side = |b: &Option<RangeBound>, open: Bound<Value>| match b {
                    Some(RangeBound {
                        value,
                        inclusive: true,
                    }) => Bound::Included(value.clone()),
                    Some(RangeBound {
                        value,
                        inclusive: false,
                    }) => Bound::Excluded(value.clone()),
                    None => open,
                };
                vec![(side(lower, floor), side(upper, ceiling))]
            }
        }
    }
}

/// Bounds enclosing every value of `value`'s type in the index order `null < false <
/// true < numbers < strings < arrays < objects`.
fn type_range(value: &Value) -> (Bound<Value>, Bound<Value>) {
    match value {
        Value::Bool(_) => (
            Bound::Included(Value::Bool(false)),
            Bound::Included(Value::Bool(true)),
        ),
        Value::Number(_) => (
            Bound::Excluded(Value::Bool(true)),
            Bound::Excluded(Value::String(String::new())),
        ),
        Value::String(_) => (
            Bound::Included(Value::String(String::new())),
            Bound::Excluded(Value::Array(Vec::new())),
        ),
        // Range predicates only have scalar bounds; anything else scans everything.
        _ => (Bound::Unbounded, Bound::Unbounded),
    }
}

/// A candidate access path and how much we like it (lower is better).
struct Candidate {
    rank: u8,
    plan: Plan,
}

/// Plans the read of `collection` under the bound `filter`, with the collection's
/// `indexes` available.
pub(crate) fn plan(
    collection: &CollectionName,
    filter: Option<&Expr>,
    indexes: &[IndexDef],
) -> Plan {
    let name = collection.as_str().to_owned();
    let Some(filter) = filter else {
        return Plan::FullScan {
            collection: name,
            reason: "no WHERE clause".to_owned(),
        };
    };
    let predicates: Vec<IndexPredicate<'_>> = conjuncts(filter)
        .into_iter()
        .filter_map(index_predicate)
        .collect();
    let mut best: Option<Candidate> = None;
    let mut consider = |candidate: Candidate| {
        if best.as_ref().is_none_or(|b| candidate.rank < b.rank) {
            best = Some(candidate);
        }
    };
    for (i, predicate) in predicates.iter().enumerate() {
        if let Some(plan) = id_lookup(&name, predicate) {
            consider(Candidate { rank: 0, plan });
            continue;
        }
        let Some(index) = usable_index(indexes, collection, predicate.path()) else {
            continue;
        };
        let (rank, scan) = match predicate {
            IndexPredicate::Eq { value, .. } => (
                1,
                ScanPredicate::Eq {
                    value: (*value).clone(),
                },
            ),
            IndexPredicate::In { values, .. } => (
                2,
                ScanPredicate::In {
                    values: dedup(values),
                },
            ),
            IndexPredicate::Range { path, op, bound } => {
                let this = range_bound(*op, bound);
                // Another range on the same path, the other way, of the same type.
                let other = predicates.iter().skip(i + 1).find_map(|p| match p {
                    IndexPredicate::Range {
                        path: p2,
                        op: op2,
                        bound: b2,
                    } if p2 == path && is_lower(*op2) != is_lower(*op) && same_type(b2, bound) => {
                        Some(range_bound(*op2, b2))
                    }
                    _ => None,
                });
                let rank = if other.is_some() { 3 } else { 4 };
                let (lower, upper) = if is_lower(*op) {
                    (Some(this), other)
                } else {
                    (other, Some(this))
                };
                (rank, ScanPredicate::Range { lower, upper })
            }
        };
        consider(Candidate {
            rank,
            plan: Plan::IndexScan {
                collection: name.clone(),
                index: index.name.clone(),
                path: predicate.path().to_string(),
                predicate: scan,
            },
        });
    }
    match best {
        Some(candidate) => candidate.plan,
        None => Plan::FullScan {
            reason: if predicates.is_empty() {
                "the WHERE clause has no equality, IN or range predicate on a field".to_owned()
            } else {
                let paths: Vec<String> = predicates.iter().map(|p| p.path().to_string()).collect();
                format!("no index on {} in '{name}'", paths.join(", "))
            },
            collection: name,
        },
    }
}

/// The index on exactly `path` in `collection`. Indexes below `_id` are never used:
/// documents do not store their id as a field, so such an index would be incomplete.
fn usable_index<'i>(
    indexes: &'i [IndexDef],
    collection: &CollectionName,
    path: &Path,
) -> Option<&'i IndexDef> {
    if path.is_id() && path.len() > 1 {
        return None;
    }
    indexes
        .iter()
        .find(|def| def.collection == *collection && def.path.as_slice() == path.segments())
}

/// `_id = c` or `_id IN (...)` as point reads. Values no id can equal are dropped;
/// a value that cannot be turned into an id but might still equal one (an object with
/// a float, which ids refuse) makes the predicate unusable.
fn id_lookup(collection: &str, predicate: &IndexPredicate<'_>) -> Option<Plan> {
    let values: Vec<&Value> = match predicate {
        IndexPredicate::Eq { path, value } if is_id(path) => vec![value],
        IndexPredicate::In { path, values } if is_id(path) => values.clone(),
        _ => return None,
    };
    let mut doc_ids: Vec<DocId> = Vec::new();
    for value in values {
        match DocId::from_json(value) {
            Ok(id) => doc_ids.push(id),
            Err(IdError::FloatInId) => return None,
            Err(_) => {}
        }
    }
    doc_ids.sort();
    doc_ids.dedup();
    Some(Plan::IdLookup {
        collection: collection.to_owned(),
        ids: doc_ids.iter().map(DocId::to_json).collect(),
        doc_ids,
    })
}

fn is_id(path: &Path) -> bool {
    path.len() == 1 && path.is_id()
}

fn is_lower(op: RangeOp) -> bool {
    matches!(op, RangeOp::Gt | RangeOp::Ge)
}

fn range_bound(op: RangeOp, bound: &Value) -> RangeBound {
    RangeBound {
        value: bound.clone(),
        inclusive: matches!(op, RangeOp::Ge | RangeOp::Le),
    }
}

fn same_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn dedup(values: &[&Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(values.len());
    for v in values {
        if !out.iter().any(|o| trellis_common::query::json_eq(o, v)) {
            out.push((*v).clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_common::query::{Params, Statement, parse};

    fn filter(src: &str) -> Expr {
        match parse(&format!("SELECT * FROM c WHERE {src}"))
            .unwrap()
            .bind(&Params::new())
            .unwrap()
        {
            Statement::Select(s) => s.filter.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn plan_of(src: &str, indexed: &[&str]) -> Plan {
        let c = CollectionName::new("c").unwrap();
        let indexes: Vec<IndexDef> = indexed
            .iter()
            .map(|p| {
                IndexDef::new(
                    &format!("i_{}", p.replace('.', "_")),
                    c.clone(),
                    Path::parse_dotted(p).segments().to_vec(),
                )
                .unwrap()
            })
            .collect();
        plan(&c, Some(&filter(src)), &indexes)
    }

    #[test]
    fn equality_on_an_indexed_path_scans_the_index() {
        let p = plan_of("x = 1 AND a.b = 'k'", &["a.b"]);
        assert_eq!(p.index(), Some("i_a_b"));
        assert_eq!(
            p.to_json(),
            serde_json::json!({"plan": "index_scan", "collection": "c", "index": "i_a_b", "path": "a.b",
                "predicate": {"op": "eq", "value": "k"}})
        );
    }

    #[test]
    fn without_a_usable_index_the_plan_is_a_full_scan_that_says_why() {
        let p = plan_of("x = 1 OR a = 2", &["a"]);
        assert_eq!(p.name(), "full_scan");
        let p = plan_of("x = 1", &["a"]);
        assert_eq!(
            p,
            Plan::FullScan {
                collection: "c".to_owned(),
                reason: "no index on x in 'c'".to_owned()
            }
        );
    }

    #[test]
    fn id_equality_is_a_point_read_and_beats_an_index() {
        let p = plan_of("a = 1 AND _id IN ('b', 'a', 5, 'a')", &["a"]);
        assert_eq!(p.name(), "id_lookup");
        assert_eq!(p.to_json()["ids"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn two_sided_ranges_combine_and_stay_within_the_type() {
        let p = plan_of("n > 2 AND n <= 5", &["n"]);
        let Plan::IndexScan { predicate, .. } = &p else {
            panic!("{p:?}")
        };
        assert_eq!(
            predicate.ranges(),
            vec![(
                Bound::Excluded(serde_json::json!(2)),
                Bound::Included(serde_json::json!(5))
            )]
        );
        let p = plan_of("n >= 'm'", &["n"]);
        let Plan::IndexScan { predicate, .. } = &p else {
            panic!("{p:?}")
        };
        assert_eq!(
            predicate.ranges(),
            vec![(
                Bound::Included(serde_json::json!("m")),
                Bound::Excluded(serde_json::json!([]))
            )]
        );
    }

    #[test]
    fn equality_is_preferred_over_a_range() {
        let p = plan_of("n > 2 AND k = 1", &["n", "k"]);
        assert_eq!(p.index(), Some("i_k"));
    }
}
