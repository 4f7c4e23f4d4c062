//! [`QueryResult`]: what one statement gives back. It is the answer the API serialises,
//! so it holds only JSON and plain data.

use serde::Serialize;
use serde_json::Value;

use super::plan::Plan;

/// The result of one statement.
///
/// Serialised flat: `{"kind": "documents", "documents": [...]}`,
/// `{"kind": "mutated", "ids": [...]}`, `{"kind": "plan", "plan": {...}}`,
/// `{"kind": "index", "name": ..., "changed": true}`, plus `"warnings": [...]` when there
/// are any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryResult {
    /// What the statement produced.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Things the caller should know that did not fail the statement (a document stored
    /// above 256 KiB, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What a statement produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// SELECT: the projected rows, in order; `COUNT(*)` gives one `{"count": n}` row.
    Documents {
        /// The rows.
        documents: Vec<Value>,
    },
    /// INSERT, UPDATE, DELETE, EVICT: the `_id`s of the documents written or removed,
    /// in the order they were.
    Mutated {
        /// The ids, as JSON (`"a"` or `{"k": 1}`).
        ids: Vec<Value>,
    },
    /// EXPLAIN: how the SELECT would run.
    Plan {
        /// The plan.
        plan: Box<Plan>,
    },
    /// CREATE INDEX or DROP INDEX.
    Index {
        /// The index name.
        name: String,
        /// Whether the statement created or dropped it (false: `IF NOT EXISTS` /
        /// `IF EXISTS` found nothing to do).
        changed: bool,
    },
}

impl QueryResult {
    pub(crate) fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            warnings: Vec::new(),
        }
    }

    /// The rows of a SELECT (empty for other statements).
    pub fn documents(&self) -> &[Value] {
        match &self.outcome {
            Outcome::Documents { documents } => documents,
            _ => &[],
        }
    }

    /// The ids written by INSERT / UPDATE / DELETE / EVICT (empty for other statements).
    pub fn ids(&self) -> &[Value] {
        match &self.outcome {
            Outcome::Mutated { ids } => ids,
            _ => &[],
        }
    }

    /// The plan of an EXPLAIN.
    pub fn plan(&self) -> Option<&Plan> {
        match &self.outcome {
            Outcome::Plan { plan } => Some(plan.as_ref()),
            _ => None,
        }
    }

    /// The result as the JSON the API sends.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
