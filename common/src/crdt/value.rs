//! Leaf values: what a last-writer-wins register holds.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// A JSON value that is not an object. Arrays are leaves too (replaced whole; a
/// mergeable list type is on the roadmap) and are kept as their JSON text, which bounds
/// nesting through `serde_json`'s recursion limit when decoding untrusted input.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Leaf {
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A finite floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// An array, as compact JSON text.
    Array(String),
}

impl Leaf {
    /// The leaf for a non-object JSON value; `None` for objects, which are maps.
    pub fn from_json(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Null => Leaf::Null,
            Value::Bool(b) => Leaf::Bool(*b),
            Value::Number(n) => number_leaf(n),
            Value::String(s) => Leaf::Str(s.clone()),
            Value::Array(_) => Leaf::Array(value.to_string()),
            Value::Object(_) => return None,
        })
    }

    /// The JSON value. An array that does not parse (only possible from a corrupt peer
    /// that got past decoding) reads as `null` rather than failing a whole query.
    pub fn to_json(&self) -> Value {
        match self {
            Leaf::Null => Value::Null,
            Leaf::Bool(b) => Value::Bool(*b),
            Leaf::Int(i) => Value::from(*i),
            Leaf::UInt(u) => Value::from(*u),
            Leaf::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Leaf::Str(s) => Value::String(s.clone()),
            Leaf::Array(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        }
    }
}

fn number_leaf(n: &Number) -> Leaf {
    if let Some(i) = n.as_i64() {
        Leaf::Int(i)
    } else if let Some(u) = n.as_u64() {
        Leaf::UInt(u)
    } else {
        Leaf::Float(n.as_f64().unwrap_or(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_round_trip_through_json() {
        for value in [
            json!(null),
            json!(true),
            json!(-7),
            json!(u64::MAX),
            json!(2.5),
            json!("text"),
            json!([1, {"a": [2]}, "x"]),
        ] {
            assert_eq!(Leaf::from_json(&value).unwrap().to_json(), value);
        }
        assert_eq!(Leaf::from_json(&json!({"a": 1})), None);
    }
}
