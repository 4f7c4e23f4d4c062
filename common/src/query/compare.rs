//! Comparing values: the predicate semantics of `= != < <= > >=` (NULL and MISSING give
//! unknown, different types are unequal and unordered), structural equality, and the
//! total order used by ORDER BY.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::ast::CompareOp;
use super::value::{Datum, Truth};

/// `left op right` under the predicate rules:
/// - a NULL or MISSING operand makes every comparison unknown;
/// - numbers compare numerically (integers and floats mixed), strings by bytes, booleans
///   `false < true`;
/// - arrays and objects are equal when structurally equal, and unordered;
/// - values of different types are unequal (`=` false, `!=` true) and unordered.
pub fn compare(op: CompareOp, left: &Datum<'_>, right: &Datum<'_>) -> Truth {
    let (Some(a), Some(b)) = (left.as_value(), right.as_value()) else {
        return Truth::Unknown;
    };
    if a.is_null() || b.is_null() {
        return Truth::Unknown;
    }
    let ordering = match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some(number_cmp(x, y)),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match (ordering, op) {
        (Some(ordering), _) => Truth::from(op.holds(ordering)),
        (None, CompareOp::Eq) => Truth::from(json_eq(a, b)),
        (None, CompareOp::Ne) => Truth::from(!json_eq(a, b)),
        (None, _) => Truth::Unknown,
    }
}

/// Structural equality with numeric comparison of numbers (`1 = 1.0`) and key order
/// ignored in objects.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Ordering::Equal,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => false,
    }
}

/// A number as an exact integer when it is one, a float otherwise.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i128::from(i))
    } else if let Some(u) = n.as_u64() {
        Num::Int(i128::from(u))
    } else {
        Num::Float(n.as_f64().unwrap_or(0.0))
    }
}

/// 2^64 and -2^63: every JSON integer lies in between.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

/// Exact comparison of an integer with a float.
fn int_float_cmp(i: i128, f: f64) -> Ordering {
    let floor = f.floor();
    if floor >= TWO_POW_64 {
        return Ordering::Less;
    }
    if floor < MINUS_TWO_POW_63 {
        return Ordering::Greater;
    }
    // Exact: `floor` is integral and within range.
    let whole = floor as i128;
    match i.cmp(&whole) {
        Ordering::Equal if f > floor => Ordering::Less,
        ordering => ordering,
    }
}

/// Numeric order of two JSON numbers, exact across integers and floats.
pub(crate) fn number_cmp(a: &Number, b: &Number) -> Ordering {
    match (num(a), num(b)) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Num::Int(x), Num::Float(y)) => int_float_cmp(x, y),
        (Num::Float(x), Num::Int(y)) => int_float_cmp(y, x).reverse(),
    }
}

/// Rank of a datum's type in the ORDER BY order.
fn rank(datum: &Datum<'_>) -> u8 {
    match datum.as_value() {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Number(_)) => 3,
        Some(Value::String(_)) => 4,
        Some(Value::Array(_)) => 5,
        Some(Value::Object(_)) => 6,
    }
}

impl Datum<'_> {
    /// The total order of ORDER BY: MISSING < NULL < booleans < numbers < strings < arrays
    /// < objects; within a type, the natural order (arrays element by element, objects by
    /// their entries sorted by key). Consistent with [`json_eq`]: equal values compare
    /// `Equal`.
    pub fn total_cmp(&self, other: &Datum<'_>) -> Ordering {
        match (self.as_value(), other.as_value()) {
            (Some(a), Some(b)) => value_total_cmp(a, b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// [`Datum::total_cmp`] on two present values.
pub fn value_total_cmp(a: &Value, b: &Value) -> Ordering {
    let by_rank = rank(&Datum::borrowed(a)).cmp(&rank(&Datum::borrowed(b)));
    if by_rank != Ordering::Equal {
        return by_rank;
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(x, y)| value_total_cmp(x, y))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Object(x), Value::Object(y)) => {
            let mut x: Vec<_> = x.iter().collect();
            let mut y: Vec<_> = y.iter().collect();
            x.sort_by(|a, b| a.0.cmp(b.0));
            y.sort_by(|a, b| a.0.cmp(b.0));
            x.iter()
                .zip(&y)
                .map(|((xk, xv), (yk, yv))| xk.cmp(yk).then_with(|| value_total_cmp(xv, yv)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| x.len().cmp(&y.len()))
        }
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(v: Value) -> Datum<'static> {
        Datum::owned(v)
    }

    fn cmp(op: CompareOp, a: Value, b: Value) -> Truth {
        compare(op, &d(a), &d(b))
    }

    #[test]
    fn integers_and_floats_compare_numerically() {
        assert_eq!(cmp(CompareOp::Eq, json!(1), json!(1.0)), Truth::True);
        assert_eq!(cmp(CompareOp::Lt, json!(1), json!(1.5)), Truth::True);
        assert_eq!(cmp(CompareOp::Gt, json!(-1), json!(-1.5)), Truth::True);
        assert_eq!(
            cmp(CompareOp::Lt, json!(u64::MAX), json!(1e300)),
            Truth::True
        );
        assert_eq!(
            cmp(CompareOp::Gt, json!(i64::MIN), json!(-1e300)),
            Truth::True
        );
        // 2^53 + 1 is not representable as f64; the comparison stays exact.
        assert_eq!(
            cmp(
                CompareOp::Gt,
                json!(9_007_199_254_740_993_i64),
                json!(9_007_199_254_740_992.0)
            ),
            Truth::True
        );
    }

    #[test]
    fn different_types_are_unequal_and_unordered() {
        assert_eq!(cmp(CompareOp::Eq, json!(1), json!("1")), Truth::False);
        assert_eq!(cmp(CompareOp::Ne, json!(1), json!("1")), Truth::True);
        assert_eq!(cmp(CompareOp::Lt, json!(1), json!("1")), Truth::Unknown);
        assert_eq!(cmp(CompareOp::Ge, json!(true), json!(1)), Truth::Unknown);
    }

    #[test]
    fn null_operands_make_comparisons_unknown() {
        for op in [CompareOp::Eq, CompareOp::Ne, CompareOp::Lt] {
            assert_eq!(cmp(op, Value::Null, Value::Null), Truth::Unknown);
            assert_eq!(compare(op, &Datum::Missing, &d(json!(1))), Truth::Unknown);
        }
    }

    #[test]
    fn containers_are_equal_structurally_but_unordered() {
        assert_eq!(
            cmp(
                CompareOp::Eq,
                json!({"a": 1, "b": [1, 2]}),
                json!({"b": [1.0, 2], "a": 1})
            ),
            Truth::True
        );
        assert_eq!(cmp(CompareOp::Ne, json!([1]), json!([1, 2])), Truth::True);
        assert_eq!(
            cmp(CompareOp::Lt, json!([1]), json!([1, 2])),
            Truth::Unknown
        );
    }

    #[test]
    fn total_order_ranks_types() {
        let ordered = [
            Datum::Missing,
            d(Value::Null),
            d(json!(false)),
            d(json!(true)),
            d(json!(-1.5)),
            d(json!(2)),
            d(json!("")),
            d(json!("a")),
            d(json!([])),
            d(json!([1])),
            d(json!({})),
            d(json!({"a": 1})),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(a.total_cmp(b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn total_order_ignores_object_key_order() {
        assert_eq!(
            value_total_cmp(&json!({"a": 1, "b": 2}), &json!({"b": 2, "a": 1})),
            Ordering::Equal
        );
        assert_eq!(
            value_total_cmp(&json!({"a": 1, "b": 2}), &json!({"a": 1, "c": 0})),
            Ordering::Less
        );
    }
}
