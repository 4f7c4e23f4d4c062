//! Checking a WHERE clause against a stored document without materialising all of it.
//!
//! The evaluator reads a document only through the paths the expression names. A
//! [`Probe`] collects those paths once per statement and builds, per candidate, a
//! JSON object holding just the values at them (read straight from the CRDT state with
//! [`DocState::value_at`]); the filter gives the same answer on it as on the whole
//! document. Only the documents that pass are then materialised whole. A full scan
//! thus pays for the fields the filter reads, not for every field of every document.

use serde_json::{Map, Value};
use trellis_common::crdt::{DocState, Path};
use trellis_common::ids::DocId;
use trellis_common::query::{Expr, InList, matches};

/// The paths a filter reads, reduced to those no other one contains.
#[derive(Debug)]
pub(crate) struct Probe<'f> {
    filter: Option<&'f Expr>,
    /// `None`: read the whole document (the filter names the document root).
    paths: Option<Vec<Path>>,
}

impl<'f> Probe<'f> {
    pub(crate) fn new(filter: Option<&'f Expr>) -> Self {
        let mut paths = Vec::new();
        if let Some(filter) = filter {
            collect(filter, &mut paths);
        }
        let paths = if paths.iter().any(Path::is_empty) {
            None
        } else {
            // Shorter paths first; drop any path inside one already kept.
            paths.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            let mut kept: Vec<Path> = Vec::new();
            for path in paths {
                if !kept.iter().any(|k| path.starts_with(k.segments())) {
                    kept.push(path);
                }
            }
            Some(kept)
        };
        Self { filter, paths }
    }

    /// The document as JSON if it exists and passes the filter.
    pub(crate) fn check(&self, id: &DocId, state: &DocState) -> Option<Value> {
        if !state.is_live() {
            return None;
        }
        let Some(filter) = self.filter else {
            return state.to_json(id);
        };
        if let Some(paths) = &self.paths {
            let partial = partial_document(id, state, paths);
            if !matches(Some(filter), &partial) {
                return None;
            }
            return state.to_json(id);
        }
        state.to_json(id).filter(|doc| matches(Some(filter), doc))
    }
}

/// An object with the values at `paths` (and the objects leading to them).
fn partial_document(id: &DocId, state: &DocState, paths: &[Path]) -> Value {
    let mut root = Map::new();
    for path in paths {
        let segments = path.segments();
        let value = if segments[0] == "_id" {
            let id = id.to_json();
            match segments.len() {
                1 => Some(id),
                _ => Path::new(segments[1..].iter().map(String::as_str))
                    .lookup(&id)
                    .cloned(),
            }
        } else {
            state.value_at(segments)
        };
        if let Some(value) = value {
            insert_at(&mut root, segments, value);
        }
    }
    Value::Object(root)
}

fn insert_at(object: &mut Map<String, Value>, segments: &[String], value: Value) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut at = object;
    for key in parents {
        let slot = at
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner) = slot else {
            // Not reached: kept paths never lie inside one another.
            return;
        };
        at = inner;
    }
    at.insert(last.clone(), value);
}

/// Every path `expr` reads.
fn collect(expr: &Expr, out: &mut Vec<Path>) {
    match expr {
        Expr::Path(path) => out.push(path.clone()),
        Expr::Literal(_) | Expr::Param(_) => {}
        Expr::Object(entries) => entries.iter().for_each(|(_, e)| collect(e, out)),
        Expr::Array(items) | Expr::And(items) | Expr::Or(items) => {
            items.iter().for_each(|e| collect(e, out));
        }
        Expr::Not(e) | Expr::Neg(e) | Expr::Is { expr: e, .. } => collect(e, out),
        Expr::Compare { left, right, .. } | Expr::Arith { left, right, .. } => {
            collect(left, out);
            collect(right, out);
        }
        Expr::Like { expr, pattern, .. } => {
            collect(expr, out);
            collect(pattern, out);
        }
        Expr::In { expr, list, .. } => {
            collect(expr, out);
            if let InList::Exprs(items) = list {
                items.iter().for_each(|e| collect(e, out));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use trellis_common::clock::Hlc;
    use trellis_common::crdt::{Dot, Stamp, WriteContext};
    use trellis_common::ids::ActorId;
    use trellis_common::query::parse_expression;

    fn state(body: &Value) -> DocState {
        let actor = ActorId::from_u64(1);
        let ctx = WriteContext {
            stamp: Stamp {
                hlc: Hlc::new(1, 0),
                actor,
            },
            dot: Dot { actor, seq: 1 },
        };
        DocState::insert_delta(ctx, body).unwrap()
    }

    #[test]
    fn the_probe_agrees_with_the_whole_document() {
        let id = DocId::from_json(&json!({"site": "n", "k": 1})).unwrap();
        let body = json!({"a": {"b": 1, "c": [1, 2]}, "s": "x", "n": null, "o": {}});
        let st = state(&body);
        let whole = st.to_json(&id).unwrap();
        for src in [
            "a.b = 1",
            "a.b = 1 AND a = {b: 1, c: [1, 2]}",
            "a.c = [1, 2] OR zz IS MISSING",
            "n IS NULL AND s LIKE 'x%'",
            "_id.site = 'n' AND _id = {k: 1, site: 'n'}",
            "a.b.x IS MISSING",
            "o IS NOT MISSING AND o.p IS MISSING",
            "s IN (a.b, 'x')",
            "a.b + 1 = 2",
            "nope = 1",
        ] {
            let e = parse_expression(src).unwrap();
            let probe = Probe::new(Some(&e));
            assert_eq!(
                probe.check(&id, &st).is_some(),
                matches(Some(&e), &whole),
                "{src}"
            );
        }
        assert_eq!(Probe::new(None).check(&id, &st), Some(whole));
    }
}
