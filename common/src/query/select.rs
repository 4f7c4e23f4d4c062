//! Shaping SELECT results: projections, the COUNT(*) row, ORDER BY sorting, and an
//! in-memory SELECT over candidate documents (filter, sort, offset, limit, project).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::ast::{Amount, OrderKey, Projection, Select};
use super::error::QueryError;
use super::eval::{eval, matches};
use super::value::Datum;

impl Projection {
    /// The row for `doc`: the whole document for `*`, an object with the listed fields
    /// (missing ones left out, NULL kept) for a field list, and `None` for `COUNT(*)`,
    /// which is an aggregate (see [`Projection::count_row`]).
    pub fn apply(&self, doc: &Value) -> Option<Value> {
        match self {
            Projection::All => Some(doc.clone()),
            Projection::Count { .. } => None,
            Projection::Fields(fields) => {
                let row: Map<String, Value> = fields
                    .iter()
                    .filter_map(|f| Some((f.output_key(), f.path.lookup(doc)?.clone())))
                    .collect();
                Some(Value::Object(row))
            }
        }
    }

    /// Whether this is `COUNT(*)`.
    pub fn is_count(&self) -> bool {
        matches!(self, Projection::Count { .. })
    }

    /// The single row of a `COUNT(*)` over `count` matches, `{"count": n}` (or the alias);
    /// `None` for other projections.
    pub fn count_row(&self, count: u64) -> Option<Value> {
        let Projection::Count { alias } = self else {
            return None;
        };
        let key = alias.clone().unwrap_or_else(|| "count".to_owned());
        let mut row = Map::new();
        row.insert(key, Value::from(count));
        Some(Value::Object(row))
    }
}

/// Orders two sort-key tuples evaluated from the same `keys`.
fn keys_cmp(keys: &[OrderKey], a: &[Datum<'_>], b: &[Datum<'_>]) -> Ordering {
    keys.iter()
        .zip(a.iter().zip(b))
        .map(|(key, (x, y))| {
            let ordering = x.total_cmp(y);
            if key.descending {
                ordering.reverse()
            } else {
                ordering
            }
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Compares two documents by `keys` with the total order of [`Datum::total_cmp`] (MISSING
/// first when ascending, last when descending).
pub fn compare_documents(keys: &[OrderKey], a: &Value, b: &Value) -> Ordering {
    let a: Vec<_> = keys.iter().map(|k| eval(&k.expr, a)).collect();
    let b: Vec<_> = keys.iter().map(|k| eval(&k.expr, b)).collect();
    keys_cmp(keys, &a, &b)
}

/// Sorts `docs` by `keys`, stably (ties keep their order), evaluating each key once per
/// document.
pub fn sort_documents(keys: &[OrderKey], docs: &mut [&Value]) {
    if keys.is_empty() {
        return;
    }
    let mut keyed: Vec<(Vec<Datum<'_>>, &Value)> = docs
        .iter()
        .map(|&doc| (keys.iter().map(|k| eval(&k.expr, doc)).collect(), doc))
        .collect();
    keyed.sort_by(|a, b| keys_cmp(keys, &a.0, &b.0));
    for (slot, (_, doc)) in docs.iter_mut().zip(keyed) {
        *slot = doc;
    }
}

fn amount(amount: Option<&Amount>) -> Result<Option<usize>, QueryError> {
    match amount {
        None => Ok(None),
        Some(Amount::Value(n)) => Ok(Some(usize::try_from(*n).unwrap_or(usize::MAX))),
        Some(Amount::Param(name)) => Err(QueryError::UnknownParameter { name: name.clone() }),
    }
}

impl Select {
    /// Whether `doc` passes the WHERE clause.
    pub fn matches(&self, doc: &Value) -> bool {
        matches(self.filter.as_ref(), doc)
    }

    /// Runs this (bound) select over candidate documents of its collection: filter, sort,
    /// OFFSET, LIMIT, projection. `COUNT(*)` gives one row counting every match, to which
    /// OFFSET and LIMIT then apply, as in SQL.
    ///
    /// Fails only when LIMIT or OFFSET is a parameter that was not bound.
    pub fn run<'d>(
        &self,
        docs: impl IntoIterator<Item = &'d Value>,
    ) -> Result<Vec<Value>, QueryError> {
        let limit = amount(self.limit.as_ref())?.unwrap_or(usize::MAX);
        let offset = amount(self.offset.as_ref())?.unwrap_or(0);
        let mut rows: Vec<&Value> = docs.into_iter().filter(|d| self.matches(d)).collect();
        if let Some(row) = self.projection.count_row(rows.len() as u64) {
            return Ok(std::iter::once(row).skip(offset).take(limit).collect());
        }
        sort_documents(&self.order_by, &mut rows);
        Ok(rows
            .into_iter()
            .skip(offset)
            .take(limit)
            .filter_map(|doc| self.projection.apply(doc))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{Statement, parse};
    use serde_json::json;

    fn select(src: &str) -> Select {
        match parse(src).unwrap() {
            Statement::Select(s) => s,
            other => panic!("not a select: {other:?}"),
        }
    }

    #[test]
    fn field_projection_uses_aliases_and_skips_missing_fields() {
        let p = select("SELECT a.b AS x, c, d FROM t").projection;
        let row = p.apply(&json!({"a": {"b": 1}, "c": null})).unwrap();
        assert_eq!(row, json!({"x": 1, "c": null}));
    }

    #[test]
    fn count_row_uses_alias_or_count() {
        assert_eq!(
            select("SELECT COUNT(*) FROM t").projection.count_row(3),
            Some(json!({"count": 3}))
        );
        assert_eq!(
            select("SELECT COUNT(*) AS n FROM t")
                .projection
                .count_row(3),
            Some(json!({"n": 3}))
        );
        assert_eq!(select("SELECT * FROM t").projection.count_row(3), None);
    }

    #[test]
    fn sort_is_stable_for_ties() {
        let docs = [
            json!({"k": 1, "i": 0}),
            json!({"k": 0, "i": 1}),
            json!({"k": 1, "i": 2}),
        ];
        let s = select("SELECT i FROM t ORDER BY k DESC");
        assert_eq!(
            s.run(&docs).unwrap(),
            vec![json!({"i": 0}), json!({"i": 2}), json!({"i": 1})]
        );
    }

    #[test]
    fn unbound_limit_is_reported() {
        let s = select("SELECT * FROM t LIMIT :n");
        assert_eq!(
            s.run(&[]).unwrap_err(),
            QueryError::UnknownParameter {
                name: "n".to_owned()
            }
        );
    }
}
