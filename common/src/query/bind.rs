//! Parameter binding: replaces every `:name` with its value, folds constant sub-expressions
//! and checks the types the statement needs (LIMIT counts, IN arrays, INSERT objects...).

use serde_json::{Map, Value};

use super::ast::{
    Amount, Expr, InList, Insert, Mutation, OrderKey, Removal, Select, Statement, Update,
};
use super::error::{QueryError, describe};
use super::eval::eval;

/// Parameter values by name, without the leading colon: `{"doc": {...}, "n": 10}`.
pub type Params = Map<String, Value>;

impl Statement {
    /// The statement with every parameter replaced by its value and constants folded.
    ///
    /// Fails on a parameter missing from `params` and on a value of the wrong type: LIMIT
    /// and OFFSET need a non-negative integer, `IN :p` an array, an INSERT document an
    /// object, a LIKE pattern a string, INCREMENT BY and RESTART WITH a number.
    pub fn bind(&self, params: &Params) -> Result<Statement, QueryError> {
        Ok(match self {
            Statement::Select(s) => Statement::Select(bind_select(s, params)?),
            Statement::Explain(s) => Statement::Explain(bind_select(s, params)?),
            Statement::Insert(i) => Statement::Insert(bind_insert(i, params)?),
            Statement::Update(u) => Statement::Update(bind_update(u, params)?),
            Statement::Delete(r) => Statement::Delete(bind_removal(r, params)?),
            Statement::Evict(r) => Statement::Evict(bind_removal(r, params)?),
            Statement::CreateIndex(_) | Statement::DropIndex(_) => self.clone(),
        })
    }
}

impl Select {
    /// The select with parameters bound; see [`Statement::bind`].
    pub fn bind(&self, params: &Params) -> Result<Select, QueryError> {
        bind_select(self, params)
    }
}

impl Expr {
    /// The expression with parameters replaced by their values and constant objects,
    /// arrays, negations and arithmetic folded into literals.
    pub fn bind(&self, params: &Params) -> Result<Expr, QueryError> {
        bind_expr(self, params)
    }

    /// Whether no parameter is left to bind.
    pub fn is_bound(&self) -> bool {
        match self {
            Expr::Param(_) => false,
            Expr::Literal(_) | Expr::Path(_) => true,
            Expr::Object(entries) => entries.iter().all(|(_, e)| e.is_bound()),
            Expr::Array(items) | Expr::And(items) | Expr::Or(items) => {
                items.iter().all(Expr::is_bound)
            }
            Expr::Not(e) | Expr::Neg(e) | Expr::Is { expr: e, .. } => e.is_bound(),
            Expr::Compare { left, right, .. } | Expr::Arith { left, right, .. } => {
                left.is_bound() && right.is_bound()
            }
            Expr::Like { expr, pattern, .. } => expr.is_bound() && pattern.is_bound(),
            Expr::In { expr, list, .. } => {
                expr.is_bound()
                    && match list {
                        InList::Exprs(items) => items.iter().all(Expr::is_bound),
                        InList::Param(_) => false,
                    }
            }
        }
    }
}

fn param<'p>(params: &'p Params, name: &str) -> Result<&'p Value, QueryError> {
    params
        .get(name)
        .ok_or_else(|| QueryError::UnknownParameter {
            name: name.to_owned(),
        })
}

fn bind_select(select: &Select, params: &Params) -> Result<Select, QueryError> {
    Ok(Select {
        projection: select.projection.clone(),
        collection: select.collection.clone(),
        filter: bind_opt(select.filter.as_ref(), params)?,
        order_by: select
            .order_by
            .iter()
            .map(|key| {
                Ok(OrderKey {
                    expr: bind_expr(&key.expr, params)?,
                    descending: key.descending,
                })
            })
            .collect::<Result<_, QueryError>>()?,
        limit: bind_amount(select.limit.as_ref(), "LIMIT", params)?,
        offset: bind_amount(select.offset.as_ref(), "OFFSET", params)?,
    })
}

fn bind_amount(
    amount: Option<&Amount>,
    clause: &str,
    params: &Params,
) -> Result<Option<Amount>, QueryError> {
    match amount {
        None => Ok(None),
        Some(Amount::Value(n)) => Ok(Some(Amount::Value(*n))),
        Some(Amount::Param(name)) => {
            let value = param(params, name)?;
            value
                .as_u64()
                .map(|n| Some(Amount::Value(n)))
                .ok_or_else(|| QueryError::WrongType {
                    context: format!("{clause} parameter :{name}"),
                    expected: "a non-negative integer",
                    found: describe(value),
                })
        }
    }
}

fn bind_insert(insert: &Insert, params: &Params) -> Result<Insert, QueryError> {
    let documents = insert
        .documents
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let bound = bind_expr(doc, params)?;
            match &bound {
                Expr::Literal(Value::Object(_)) => Ok(bound),
                other => Err(QueryError::WrongType {
                    context: format!("INSERT document {}", i + 1),
                    expected: "an object",
                    found: describe_expr(other),
                }),
            }
        })
        .collect::<Result<_, QueryError>>()?;
    Ok(Insert {
        collection: insert.collection.clone(),
        documents,
        on_conflict: insert.on_conflict,
    })
}

fn bind_update(update: &Update, params: &Params) -> Result<Update, QueryError> {
    let mutations = update
        .mutations
        .iter()
        .map(|m| {
            Ok(match m {
                Mutation::Set(p, e) => Mutation::Set(p.clone(), bind_expr(e, params)?),
                Mutation::Unset(p) => Mutation::Unset(p.clone()),
                Mutation::Increment(p, e) => {
                    let e = numeric(bind_expr(e, params)?, || format!("APPLY {p} INCREMENT BY"))?;
                    Mutation::Increment(p.clone(), e)
                }
                Mutation::Restart(p, e) => {
                    let e = numeric(bind_expr(e, params)?, || format!("APPLY {p} RESTART WITH"))?;
                    Mutation::Restart(p.clone(), e)
                }
            })
        })
        .collect::<Result<_, QueryError>>()?;
    Ok(Update {
        collection: update.collection.clone(),
        mutations,
        filter: bind_opt(update.filter.as_ref(), params)?,
    })
}

/// `expr` unless it is a constant other than a number.
fn numeric(expr: Expr, context: impl FnOnce() -> String) -> Result<Expr, QueryError> {
    match &expr {
        Expr::Literal(v) if !v.is_number() => Err(QueryError::WrongType {
            context: context(),
            expected: "a number",
            found: describe(v),
        }),
        _ => Ok(expr),
    }
}

fn bind_removal(removal: &Removal, params: &Params) -> Result<Removal, QueryError> {
    Ok(Removal {
        collection: removal.collection.clone(),
        filter: bind_opt(removal.filter.as_ref(), params)?,
    })
}

fn bind_opt(expr: Option<&Expr>, params: &Params) -> Result<Option<Expr>, QueryError> {
    expr.map(|e| bind_expr(e, params)).transpose()
}

fn bind_all(exprs: &[Expr], params: &Params) -> Result<Vec<Expr>, QueryError> {
    exprs.iter().map(|e| bind_expr(e, params)).collect()
}

fn boxed(expr: &Expr, params: &Params) -> Result<Box<Expr>, QueryError> {
    bind_expr(expr, params).map(Box::new)
}

fn bind_expr(expr: &Expr, params: &Params) -> Result<Expr, QueryError> {
    Ok(match expr {
        Expr::Literal(_) | Expr::Path(_) => expr.clone(),
        Expr::Param(name) => Expr::Literal(param(params, name)?.clone()),
        Expr::Object(entries) => {
            let entries = entries
                .iter()
                .map(|(k, e)| Ok((k.clone(), bind_expr(e, params)?)))
                .collect::<Result<Vec<_>, QueryError>>()?;
            if entries.iter().all(|(_, e)| e.as_literal().is_some()) {
                let object = entries
                    .into_iter()
                    .filter_map(|(k, e)| match e {
                        Expr::Literal(v) => Some((k, v)),
                        _ => None,
                    })
                    .collect();
                Expr::Literal(Value::Object(object))
            } else {
                Expr::Object(entries)
            }
        }
        Expr::Array(items) => {
            let items = bind_all(items, params)?;
            if items.iter().all(|e| e.as_literal().is_some()) {
                let values = items
                    .into_iter()
                    .filter_map(|e| match e {
                        Expr::Literal(v) => Some(v),
                        _ => None,
                    })
                    .collect();
                Expr::Literal(Value::Array(values))
            } else {
                Expr::Array(items)
            }
        }
        Expr::Not(e) => Expr::Not(boxed(e, params)?),
        Expr::And(items) => Expr::And(bind_all(items, params)?),
        Expr::Or(items) => Expr::Or(bind_all(items, params)?),
        Expr::Compare { op, left, right } => Expr::Compare {
            op: *op,
            left: boxed(left, params)?,
            right: boxed(right, params)?,
        },
        Expr::Arith { op, left, right } => fold(Expr::Arith {
            op: *op,
            left: boxed(left, params)?,
            right: boxed(right, params)?,
        }),
        Expr::Neg(e) => fold(Expr::Neg(boxed(e, params)?)),
        Expr::In {
            expr,
            list,
            negated,
        } => Expr::In {
            expr: boxed(expr, params)?,
            list: InList::Exprs(match list {
                InList::Exprs(items) => bind_all(items, params)?,
                InList::Param(name) => match param(params, name)? {
                    Value::Array(values) => values.iter().cloned().map(Expr::Literal).collect(),
                    other => {
                        return Err(QueryError::WrongType {
                            context: format!("IN parameter :{name}"),
                            expected: "an array",
                            found: describe(other),
                        });
                    }
                },
            }),
            negated: *negated,
        },
        Expr::Like {
            expr,
            pattern,
            negated,
        } => {
            let pattern = boxed(pattern, params)?;
            if let Expr::Literal(v) = pattern.as_ref()
                && !v.is_string()
                && !v.is_null()
            {
                return Err(QueryError::WrongType {
                    context: "LIKE pattern".to_owned(),
                    expected: "a string",
                    found: describe(v),
                });
            }
            Expr::Like {
                expr: boxed(expr, params)?,
                pattern,
                negated: *negated,
            }
        }
        Expr::Is {
            expr,
            test,
            negated,
        } => Expr::Is {
            expr: boxed(expr, params)?,
            test: *test,
            negated: *negated,
        },
    })
}

/// Arithmetic whose operands are all literals, replaced by its result.
fn fold(expr: Expr) -> Expr {
    let constant = match &expr {
        Expr::Neg(e) => e.as_literal().is_some(),
        Expr::Arith { left, right, .. } => {
            left.as_literal().is_some() && right.as_literal().is_some()
        }
        _ => false,
    };
    if !constant {
        return expr;
    }
    let value = eval(&expr, &Value::Null)
        .into_value()
        .unwrap_or(Value::Null);
    Expr::Literal(value)
}

fn describe_expr(expr: &Expr) -> String {
    match expr {
        Expr::Literal(v) => describe(v),
        _ => "an expression that is not constant".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_expression;
    use serde_json::json;

    fn params(v: Value) -> Params {
        match v {
            Value::Object(map) => map,
            _ => Params::new(),
        }
    }

    #[test]
    fn constant_objects_and_arithmetic_fold_into_literals() {
        let e = parse_expression("{a: :x, b: [1, -:y, 2 * 3]}").unwrap();
        let bound = e.bind(&params(json!({"x": "s", "y": 4}))).unwrap();
        assert_eq!(bound, Expr::Literal(json!({"a": "s", "b": [1, -4, 6]})));
    }

    #[test]
    fn objects_with_paths_stay_expressions() {
        let e = parse_expression("{a: b}").unwrap();
        assert_eq!(e.bind(&Params::new()).unwrap(), e);
    }

    #[test]
    fn is_bound_sees_params_everywhere() {
        assert!(!parse_expression("a IN :xs").unwrap().is_bound());
        assert!(!parse_expression("NOT (a LIKE :p)").unwrap().is_bound());
        assert!(
            parse_expression("a IN (1, 2) AND b IS NULL")
                .unwrap()
                .is_bound()
        );
    }

    #[test]
    fn like_pattern_must_be_a_string() {
        let e = parse_expression("a LIKE :p").unwrap();
        let err = e.bind(&params(json!({"p": 3}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LIKE pattern must be a string, found number 3"
        );
    }
}
