//! The value model of evaluation: [`Datum`] (a JSON value or MISSING) and [`Truth`]
//! (SQL three-valued logic).

use std::borrow::Cow;
use std::ops::Not;

use serde_json::Value;

/// The result of evaluating an expression on a document: a JSON value, or MISSING when a
/// path does not exist. MISSING is not JSON null: `IS NULL` is false for it and
/// `IS MISSING` is false for null.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum<'a> {
    /// The path does not exist in the document.
    Missing,
    /// A value, borrowed from the document or the query when possible.
    Value(Cow<'a, Value>),
}

impl<'a> Datum<'a> {
    /// A datum owning `value`.
    pub fn owned(value: Value) -> Self {
        Datum::Value(Cow::Owned(value))
    }

    /// A datum borrowing `value`.
    pub fn borrowed(value: &'a Value) -> Self {
        Datum::Value(Cow::Borrowed(value))
    }

    /// Whether this is MISSING.
    pub fn is_missing(&self) -> bool {
        matches!(self, Datum::Missing)
    }

    /// Whether this is JSON null (MISSING is not).
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Value(v) if v.is_null())
    }

    /// The value, unless MISSING.
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Datum::Missing => None,
            Datum::Value(v) => Some(v),
        }
    }

    /// The owned value, unless MISSING.
    pub fn into_value(self) -> Option<Value> {
        match self {
            Datum::Missing => None,
            Datum::Value(v) => Some(v.into_owned()),
        }
    }
}

/// The truth of a predicate under SQL three-valued logic. Comparisons involving NULL or
/// MISSING are [`Truth::Unknown`]; WHERE keeps a document only when its filter is
/// [`Truth::True`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Truth {
    /// Holds.
    True,
    /// Does not hold.
    False,
    /// Cannot be decided (NULL or MISSING operands, incomparable types).
    Unknown,
}

impl Truth {
    /// Whether this is [`Truth::True`].
    pub fn is_true(self) -> bool {
        self == Truth::True
    }

    /// Three-valued AND: FALSE wins over UNKNOWN.
    pub fn and(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        }
    }

    /// Three-valued OR: TRUE wins over UNKNOWN.
    pub fn or(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        }
    }

    /// The truth of a value used as a condition: booleans are themselves, anything else
    /// (NULL, MISSING, numbers, ...) is unknown.
    pub fn of(datum: &Datum<'_>) -> Truth {
        match datum.as_value() {
            Some(Value::Bool(b)) => Truth::from(*b),
            _ => Truth::Unknown,
        }
    }

    /// As a value: `true`, `false` or `null`.
    pub fn into_datum<'a>(self) -> Datum<'a> {
        Datum::owned(match self {
            Truth::True => Value::Bool(true),
            Truth::False => Value::Bool(false),
            Truth::Unknown => Value::Null,
        })
    }
}

impl From<bool> for Truth {
    fn from(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }
}

/// Three-valued NOT: unknown stays unknown.
impl Not for Truth {
    type Output = Truth;

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Truth::{False, True, Unknown};

    #[test]
    fn three_valued_truth_tables() {
        let all = [True, False, Unknown];
        for a in all {
            for b in all {
                let and = a.and(b);
                let or = a.or(b);
                assert_eq!(and, b.and(a));
                assert_eq!(or, b.or(a));
                // De Morgan holds in three-valued logic.
                assert_eq!(!and, (!a).or(!b));
            }
        }
        assert_eq!(Unknown.and(False), False);
        assert_eq!(Unknown.and(True), Unknown);
        assert_eq!(Unknown.or(True), True);
        assert_eq!(Unknown.or(False), Unknown);
        assert_eq!(!Unknown, Unknown);
    }

    #[test]
    fn missing_is_neither_null_nor_a_value() {
        assert!(Datum::Missing.is_missing());
        assert!(!Datum::Missing.is_null());
        assert!(Datum::owned(Value::Null).is_null());
        assert!(!Datum::owned(Value::Null).is_missing());
        assert_eq!(Datum::Missing.into_value(), None);
    }
}
