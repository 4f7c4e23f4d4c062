//! Predicate analysis for the planner: splitting a filter into its AND-ed parts and
//! recognising the `path op constant` shapes an index on `path` can answer.

use serde_json::Value;

use super::ast::{CompareOp, Expr, InList, Path};

/// The AND-ed parts of `expr`, nested ANDs flattened: `a AND (b AND c)` gives `[a, b, c]`;
/// anything else gives `[expr]`.
pub fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    let mut parts = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match e {
            Expr::And(operands) => stack.extend(operands.iter().rev()),
            other => parts.push(other),
        }
    }
    parts
}

/// The bound side of a range predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeOp {
    /// `path < bound`
    Lt,
    /// `path <= bound`
    Le,
    /// `path > bound`
    Gt,
    /// `path >= bound`
    Ge,
}

/// A predicate on one path that an index on that path can answer. Only documents whose
/// value satisfies it match; the value compared is never NULL (those predicates are never
/// TRUE and are not returned).
#[derive(Debug, Clone, PartialEq)]
pub enum IndexPredicate<'a> {
    /// `path = value` (either side order). `value` may be an array or object, compared
    /// structurally.
    Eq {
        /// The field.
        path: &'a Path,
        /// The constant.
        value: &'a Value,
    },
    /// `path IN (values)`: NULL items are dropped, as they never match; an empty list
    /// matches nothing.
    In {
        /// The field.
        path: &'a Path,
        /// The constants.
        values: Vec<&'a Value>,
    },
    /// `path op bound` with a number, string or boolean bound. It matches only values of
    /// the bound's own type (`a > 5` matches no string), so a range scan must stay within
    /// that type.
    Range {
        /// The field.
        path: &'a Path,
        /// The direction.
        op: RangeOp,
        /// The constant.
        bound: &'a Value,
    },
}

impl IndexPredicate<'_> {
    /// The field the predicate constrains.
    pub fn path(&self) -> &Path {
        match self {
            IndexPredicate::Eq { path, .. }
            | IndexPredicate::In { path, .. }
            | IndexPredicate::Range { path, .. } => path,
        }
    }
}

/// Recognises `path = const`, `const = path`, `path IN (consts)` and `path <op> const` in
/// a bound expression; `None` for anything else (use it with [`conjuncts`]).
pub fn index_predicate(expr: &Expr) -> Option<IndexPredicate<'_>> {
    match expr {
        Expr::Compare { op, left, right } => {
            let (path, op, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Path(p), Expr::Literal(v)) => (p, *op, v),
                (Expr::Literal(v), Expr::Path(p)) => (p, op.flip(), v),
                _ => return None,
            };
            if value.is_null() {
                return None;
            }
            let range = |op| {
                let scalar = value.is_number() || value.is_string() || value.is_boolean();
                scalar.then_some(IndexPredicate::Range {
                    path,
                    op,
                    bound: value,
                })
            };
            match op {
                CompareOp::Eq => Some(IndexPredicate::Eq { path, value }),
                CompareOp::Ne => None,
                CompareOp::Lt => range(RangeOp::Lt),
                CompareOp::Le => range(RangeOp::Le),
                CompareOp::Gt => range(RangeOp::Gt),
                CompareOp::Ge => range(RangeOp::Ge),
            }
        }
        Expr::In {
            expr,
            list: InList::Exprs(items),
            negated: false,
        } => {
            let path = expr.as_path()?;
            let values = items
                .iter()
                .map(Expr::as_literal)
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .filter(|v| !v.is_null())
                .collect();
            Some(IndexPredicate::In { path, values })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_expression;
    use serde_json::json;

    #[test]
    fn conjuncts_flatten_nested_ands_in_order() {
        let e = parse_expression("a = 1 AND (b = 2 AND (c = 3 OR d = 4)) AND e = 5").unwrap();
        let parts = conjuncts(&e);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], &parse_expression("a = 1").unwrap());
        assert_eq!(parts[1], &parse_expression("b = 2").unwrap());
        assert!(matches!(parts[2], Expr::Or(_)));
        assert_eq!(parts[3], &parse_expression("e = 5").unwrap());
        let single = parse_expression("a = 1 OR b = 2").unwrap();
        assert_eq!(conjuncts(&single), vec![&single]);
    }

    #[test]
    fn flipped_constant_comparison_is_a_range() {
        let e = parse_expression("5 < a.b").unwrap();
        let p = index_predicate(&e).unwrap();
        assert_eq!(p.path(), &Path::new(["a", "b"]));
        assert_eq!(
            p,
            IndexPredicate::Range {
                path: &Path::new(["a", "b"]),
                op: RangeOp::Gt,
                bound: &json!(5)
            }
        );
    }

    #[test]
    fn null_and_container_bounds_are_not_indexable() {
        for src in [
            "a = NULL",
            "a < [1]",
            "a != 1",
            "NOT a = 1",
            "a = b",
            "a NOT IN (1)",
            "a IN (1, b)",
        ] {
            let e = parse_expression(src).unwrap();
            assert_eq!(index_predicate(&e), None, "{src}");
        }
    }

    #[test]
    fn in_list_drops_nulls() {
        let e = parse_expression("a IN (1, NULL, 'x')").unwrap();
        assert_eq!(
            index_predicate(&e),
            Some(IndexPredicate::In {
                path: &Path::new(["a"]),
                values: vec![&json!(1), &json!("x")]
            })
        );
    }
}
