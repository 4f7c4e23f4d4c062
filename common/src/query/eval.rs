//! Evaluation of (bound) expressions on one JSON document: paths, literals, arithmetic and
//! predicates under three-valued logic. Never fails and never panics; an unbound parameter
//! evaluates to MISSING, so bind statements first.

use serde_json::{Map, Number, Value};

use super::ast::{ArithOp, CompareOp, Expr, InList, IsTest};
use super::compare::compare;
use super::like::like;
use super::value::{Datum, Truth};

/// The value of `expr` on `doc`. Predicates give `true`, `false` or `null` (unknown);
/// paths that do not exist give MISSING.
pub fn eval<'a>(expr: &'a Expr, doc: &'a Value) -> Datum<'a> {
    match expr {
        Expr::Literal(v) => Datum::borrowed(v),
        Expr::Param(_) => Datum::Missing,
        Expr::Path(path) => path.lookup(doc).map_or(Datum::Missing, Datum::borrowed),
        Expr::Object(entries) => {
            // A field whose value is MISSING is left out.
            let object: Map<String, Value> = entries
                .iter()
                .filter_map(|(k, e)| Some((k.clone(), eval(e, doc).into_value()?)))
                .collect();
            Datum::owned(Value::Object(object))
        }
        Expr::Array(items) => Datum::owned(Value::Array(
            items
                .iter()
                .map(|e| eval(e, doc).into_value().unwrap_or(Value::Null))
                .collect(),
        )),
        Expr::Neg(e) => negate(&eval(e, doc)),
        Expr::Arith { op, left, right } => arith(*op, &eval(left, doc), &eval(right, doc)),
        Expr::Not(_)
        | Expr::And(_)
        | Expr::Or(_)
        | Expr::Compare { .. }
        | Expr::In { .. }
        | Expr::Like { .. }
        | Expr::Is { .. } => truth(expr, doc).into_datum(),
    }
}

/// The truth of `expr` used as a condition on `doc`.
pub fn truth(expr: &Expr, doc: &Value) -> Truth {
    match expr {
        Expr::Not(e) => !truth(e, doc),
        Expr::And(operands) => {
            let mut acc = Truth::True;
            for e in operands {
                acc = acc.and(truth(e, doc));
                if acc == Truth::False {
                    break;
                }
            }
            acc
        }
        Expr::Or(operands) => {
            let mut acc = Truth::False;
            for e in operands {
                acc = acc.or(truth(e, doc));
                if acc == Truth::True {
                    break;
                }
            }
            acc
        }
        Expr::Compare { op, left, right } => compare(*op, &eval(left, doc), &eval(right, doc)),
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let found = match list {
                InList::Exprs(items) => in_list(&eval(expr, doc), items, doc),
                InList::Param(_) => Truth::Unknown,
            };
            if *negated { !found } else { found }
        }
        Expr::Like {
            expr,
            pattern,
            negated,
        } => {
            let found = like_truth(&eval(expr, doc), &eval(pattern, doc));
            if *negated { !found } else { found }
        }
        Expr::Is {
            expr,
            test,
            negated,
        } => {
            let value = eval(expr, doc);
            let hit = match test {
                IsTest::Null => value.is_null(),
                IsTest::Missing => value.is_missing(),
            };
            Truth::from(hit != *negated)
        }
        Expr::Literal(_)
        | Expr::Param(_)
        | Expr::Path(_)
        | Expr::Object(_)
        | Expr::Array(_)
        | Expr::Neg(_)
        | Expr::Arith { .. } => Truth::of(&eval(expr, doc)),
    }
}

/// Whether `doc` passes `filter` (no filter passes everything): only TRUE passes.
pub fn matches(filter: Option<&Expr>, doc: &Value) -> bool {
    filter.is_none_or(|f| truth(f, doc).is_true())
}

/// SQL IN: TRUE when an item equals the value; otherwise UNKNOWN when the value or an item
/// is NULL/MISSING (or otherwise incomparable), FALSE when none matches.
fn in_list(value: &Datum<'_>, items: &[Expr], doc: &Value) -> Truth {
    items.iter().fold(Truth::False, |acc, item| {
        if acc.is_true() {
            acc
        } else {
            acc.or(compare(CompareOp::Eq, value, &eval(item, doc)))
        }
    })
}

/// LIKE: unknown when either side is NULL/MISSING or the pattern is not a string; false
/// when the value is not a string.
fn like_truth(value: &Datum<'_>, pattern: &Datum<'_>) -> Truth {
    match (value.as_value(), pattern.as_value()) {
        (Some(Value::String(text)), Some(Value::String(pattern))) => {
            Truth::from(like(text, pattern))
        }
        (Some(v), Some(Value::String(_))) if !v.is_null() => Truth::False,
        _ => Truth::Unknown,
    }
}

/// A number as an exact integer when it is one, a float otherwise.
#[derive(Debug, Clone, Copy)]
enum Operand {
    Int(i128),
    Float(f64),
}

fn operand(datum: &Datum<'_>) -> Option<Operand> {
    let Some(Value::Number(n)) = datum.as_value() else {
        return None;
    };
    Some(if let Some(i) = n.as_i64() {
        Operand::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Operand::Int(i128::from(u))
    } else {
        Operand::Float(n.as_f64()?)
    })
}

fn float(o: Operand) -> f64 {
    match o {
        Operand::Int(i) => i as f64,
        Operand::Float(f) => f,
    }
}

/// An integer result as a JSON number, falling back to a float beyond `i64`/`u64`.
fn from_int(i: i128) -> Value {
    if let Ok(i) = i64::try_from(i) {
        Value::from(i)
    } else if let Ok(u) = u64::try_from(i) {
        Value::from(u)
    } else {
        from_float(i as f64)
    }
}

/// A float result as a JSON number; NULL when not finite.
fn from_float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn negate(datum: &Datum<'_>) -> Datum<'static> {
    Datum::owned(match operand(datum) {
        Some(Operand::Int(i)) => from_int(-i),
        Some(Operand::Float(f)) => from_float(-f),
        None => Value::Null,
    })
}

/// `left op right` on numbers; NULL when an operand is not a number, on division by zero
/// and on overflow of floats. Integer arithmetic is exact and falls back to floats.
fn arith(op: ArithOp, left: &Datum<'_>, right: &Datum<'_>) -> Datum<'static> {
    let (Some(a), Some(b)) = (operand(left), operand(right)) else {
        return Datum::owned(Value::Null);
    };
    let value = match (op, a, b) {
        (ArithOp::Add, Operand::Int(x), Operand::Int(y)) => from_int(x + y),
        (ArithOp::Sub, Operand::Int(x), Operand::Int(y)) => from_int(x - y),
        (ArithOp::Mul, Operand::Int(x), Operand::Int(y)) => x
            .checked_mul(y)
            .map_or_else(|| from_float(x as f64 * y as f64), from_int),
        (ArithOp::Div, _, _) if float(b) == 0.0 => Value::Null,
        (ArithOp::Div, Operand::Int(x), Operand::Int(y)) if x % y == 0 => from_int(x / y),
        (ArithOp::Add, a, b) => from_float(float(a) + float(b)),
        (ArithOp::Sub, a, b) => from_float(float(a) - float(b)),
        (ArithOp::Mul, a, b) => from_float(float(a) * float(b)),
        (ArithOp::Div, a, b) => from_float(float(a) / float(b)),
    };
    Datum::owned(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_expression;
    use serde_json::json;

    fn value(src: &str, doc: &Value) -> Option<Value> {
        eval(&parse_expression(src).unwrap(), doc).into_value()
    }

    #[test]
    fn integer_arithmetic_is_exact_and_widens_to_floats() {
        let doc = json!({"a": 7, "big": i64::MAX});
        assert_eq!(value("a + 1", &doc), Some(json!(8)));
        assert_eq!(value("a - 10", &doc), Some(json!(-3)));
        assert_eq!(value("a * 2", &doc), Some(json!(14)));
        assert_eq!(value("a / 7", &doc), Some(json!(1)));
        assert_eq!(value("a / 2", &doc), Some(json!(3.5)));
        assert_eq!(value("a * 0.5", &doc), Some(json!(3.5)));
        assert_eq!(
            value("big + 1", &doc),
            Some(json!(9_223_372_036_854_775_808_u64))
        );
        assert_eq!(
            value("big * big * big", &doc)
                .and_then(|v| v.as_f64())
                .map(f64::is_finite),
            Some(true)
        );
        assert_eq!(value("-a", &doc), Some(json!(-7)));
    }

    #[test]
    fn arithmetic_on_non_numbers_or_by_zero_is_null() {
        let doc = json!({"s": "x", "n": null});
        assert_eq!(value("s + 1", &doc), Some(Value::Null));
        assert_eq!(value("n + 1", &doc), Some(Value::Null));
        assert_eq!(value("nope + 1", &doc), Some(Value::Null));
        assert_eq!(value("1 / 0", &doc), Some(Value::Null));
        assert_eq!(value("1.5 / 0.0", &doc), Some(Value::Null));
        assert_eq!(value("-s", &doc), Some(Value::Null));
    }

    #[test]
    fn object_literals_drop_missing_fields_and_arrays_keep_them_as_null() {
        let doc = json!({"a": 1});
        assert_eq!(value("{x: a, y: b}", &doc), Some(json!({"x": 1})));
        assert_eq!(value("[a, b]", &doc), Some(json!([1, null])));
    }

    #[test]
    fn unbound_parameter_is_missing() {
        assert_eq!(value(":p", &json!({})), None);
        assert_eq!(
            truth(&parse_expression(":p IS MISSING").unwrap(), &json!({})),
            Truth::True
        );
    }

    #[test]
    fn non_boolean_conditions_are_unknown() {
        let doc = json!({"b": true, "n": 1});
        assert_eq!(truth(&parse_expression("b").unwrap(), &doc), Truth::True);
        assert_eq!(truth(&parse_expression("n").unwrap(), &doc), Truth::Unknown);
        assert_eq!(
            truth(&parse_expression("zz").unwrap(), &doc),
            Truth::Unknown
        );
    }
}
