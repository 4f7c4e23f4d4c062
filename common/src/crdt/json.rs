//! Turning JSON inserts and updates into deltas ([`DocState`] fragments).

use serde_json::{Map, Value};

use super::doc::{Counter, CounterPart, DocState, Entry, EntryKind, Path};
use super::value::Leaf;
use super::{Dot, Stamp};
use crate::clock::Hlc;

/// Deepest field path accepted, counted in keys from the root.
pub const MAX_PATH_DEPTH: usize = 64;

/// Why a write could not be turned into a delta.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonError {
    #[error("a document must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("_id cannot be changed (it is the document's identity)")]
    IdImmutable,
    #[error("a field path must name at least one key")]
    EmptyPath,
    #[error("field '{path}' is nested {depth} levels deep, the limit is {MAX_PATH_DEPTH}")]
    TooDeep { path: String, depth: usize },
    #[error("cannot apply INCREMENT to '{path}': it holds {found}, not a number")]
    NotANumber { path: String, found: &'static str },
    #[error("'{path}': {what} must be a finite number")]
    NotFinite { path: String, what: &'static str },
}

/// Who is writing and when: the stamp and dot every entry of one write carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteContext {
    /// Must be greater than [`DocState::max_hlc`] of the document written (see
    /// [`WriteContext::for_document`]).
    pub stamp: Stamp,
    /// The write's dot; `dot.actor == stamp.actor`.
    pub dot: Dot,
}

impl WriteContext {
    /// The context for a write of `dot` to `current`, with `now` from the writer's
    /// clock raised past everything in the document, so the write supersedes all the
    /// writer has seen of it even when another device's clock ran ahead.
    pub fn for_document(current: &DocState, now: Hlc, dot: Dot) -> Self {
        Self {
            stamp: Stamp {
                hlc: now.after(current.max_hlc()),
                actor: dot.actor,
            },
            dot,
        }
    }

    fn entry(&self, kind: EntryKind) -> Entry {
        Entry {
            stamp: self.stamp,
            seq: self.dot.seq,
            kind,
        }
    }
}

/// One change to fields of an existing document (the `SET` / `UNSET` / `APPLY` of an
/// `UPDATE`).
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Writes a value (an object becomes a map merged key by key with later writes).
    Set(Path, Value),
    /// Removes a field.
    Unset(Path),
    /// Adds to a counter (a number field becomes a counter starting from its value).
    Increment(Path, f64),
    /// Sets a counter to a value, superseding concurrent increments.
    Restart(Path, f64),
}

impl DocState {
    /// The delta that inserts a document with the fields of `body` (its `_id` key, if
    /// any, is skipped: the id is the document's key). A document inserted again after
    /// a delete starts afresh: fields of the deleted version do not come back.
    pub fn insert_delta(ctx: WriteContext, body: &Value) -> Result<DocState, JsonError> {
        let Value::Object(fields) = body else {
            return Err(JsonError::NotAnObject(crate::ids::json_type_name(body)));
        };
        let mut out = Vec::with_capacity(fields.len() + 1);
        out.push((Path::root(), ctx.entry(EntryKind::Map)));
        for (key, value) in fields.iter().filter(|(k, _)| k.as_str() != "_id") {
            flatten(ctx, Path::root().child(key), value, &mut out)?;
        }
        // One write, one stamp: no entry can hide another, and object keys are unique,
        // so ordering them is all the normalisation needed.
        Ok(DocState::from_unique_entries_of_one_write(out))
    }

    /// The delta that deletes the document: one tombstone entry at the root.
    pub fn delete_delta(ctx: WriteContext) -> DocState {
        DocState::from_entries([(Path::root(), ctx.entry(EntryKind::Deleted))])
    }

    /// The delta for `mutations` applied to this (current) state, in order.
    pub fn update_delta(
        &self,
        ctx: WriteContext,
        mutations: &[Mutation],
    ) -> Result<DocState, JsonError> {
        let mut delta = DocState::new();
        for mutation in mutations {
            let mut out = Vec::new();
            match mutation {
                Mutation::Set(path, value) => {
                    check_field_path(path)?;
                    flatten(ctx, path.clone(), value, &mut out)?;
                }
                Mutation::Unset(path) => {
                    check_field_path(path)?;
                    out.push((path.clone(), ctx.entry(EntryKind::Unset)));
                }
                Mutation::Restart(path, value) => {
                    check_field_path(path)?;
                    check_finite(path, *value, "RESTART WITH")?;
                    let counter = Counter {
                        base: *value,
                        parts: Default::default(),
                    };
                    out.push((path.clone(), ctx.entry(EntryKind::Counter(counter))));
                }
                Mutation::Increment(path, by) => {
                    check_field_path(path)?;
                    check_finite(path, *by, "INCREMENT BY")?;
                    // Earlier mutations of the same update count: read through them.
                    let mut current = self.clone();
                    crate::crdt::Crdt::merge(&mut current, &delta);
                    out.push((path.clone(), current.increment_entry(ctx, path, *by)?));
                }
            }
            for (path, entry) in out {
                delta.merge_entry(&path, &entry);
            }
        }
        Ok(delta)
    }

    fn increment_entry(&self, ctx: WriteContext, path: &Path, by: f64) -> Result<Entry, JsonError> {
        let me = ctx.dot.actor;
        let has_children = self
            .value_at(path.segments())
            .is_some_and(|v| v.is_object());
        if let (Some(existing), false) = (self.get(path.segments()), has_children)
            && let EntryKind::Counter(counter) = &existing.kind
        {
            let total = counter.parts.get(&me).map_or(0.0, |p| p.total) + by;
            let part = CounterPart {
                seq: ctx.dot.seq,
                total,
            };
            return Ok(Entry {
                stamp: existing.stamp,
                seq: existing.seq,
                kind: EntryKind::Counter(Counter {
                    base: counter.base,
                    parts: [(me, part)].into(),
                }),
            });
        }
        let base = match self.value_at(path.segments()) {
            None | Some(Value::Null) => 0.0,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(other) => {
                return Err(JsonError::NotANumber {
                    path: path.to_string(),
                    found: crate::ids::json_type_name(&other),
                });
            }
        };
        let part = CounterPart {
            seq: ctx.dot.seq,
            total: by,
        };
        let counter = EntryKind::Counter(Counter {
            base,
            parts: [(me, part)].into(),
        });
        // The counter takes the stamp and dot of the entry it converts (the number, or
        // the nearest ancestor when the field is missing), not a new one: replicas that
        // increment the same plain number concurrently then create the *same* counter,
        // and their increments add up instead of one conversion superseding the other.
        Ok(match self.origin_of(path) {
            Some(origin) => Entry {
                stamp: origin.stamp,
                seq: origin.seq,
                kind: counter,
            },
            None => ctx.entry(counter),
        })
    }

    /// The entry at `path`, else at its nearest ancestor.
    fn origin_of(&self, path: &Path) -> Option<&Entry> {
        let segments = path.segments();
        (0..=segments.len())
            .rev()
            .find_map(|depth| self.get(&segments[..depth]))
    }
}

fn check_field_path(path: &Path) -> Result<(), JsonError> {
    match path.segments().first() {
        None => Err(JsonError::EmptyPath),
        Some(first) if first == "_id" => Err(JsonError::IdImmutable),
        Some(_) => check_depth(path),
    }
}

fn check_depth(path: &Path) -> Result<(), JsonError> {
    if path.len() > MAX_PATH_DEPTH {
        return Err(JsonError::TooDeep {
            path: path.to_string(),
            depth: path.len(),
        });
    }
    Ok(())
}

fn check_finite(path: &Path, value: f64, what: &'static str) -> Result<(), JsonError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(JsonError::NotFinite {
            path: path.to_string(),
            what,
        })
    }
}

/// Entries for writing `value` at `path`: a leaf, or a map marker and its fields.
fn flatten(
    ctx: WriteContext,
    path: Path,
    value: &Value,
    out: &mut Vec<(Path, Entry)>,
) -> Result<(), JsonError> {
    check_depth(&path)?;
    match value {
        Value::Object(fields) => {
            // The children first, from the borrowed path; the map marker then takes it.
            // Order does not matter: `insert_delta` sorts, `update_delta` merges entry
            // by entry, and entries of one write never hide each other.
            flatten_fields(ctx, &path, fields, out)?;
            out.push((path, ctx.entry(EntryKind::Map)));
            Ok(())
        }
        leaf => {
            let leaf = Leaf::from_json(leaf).expect("objects are handled above");
            out.push((path, ctx.entry(EntryKind::Value(leaf))));
            Ok(())
        }
    }
}

fn flatten_fields(
    ctx: WriteContext,
    parent: &Path,
    fields: &Map<String, Value>,
    out: &mut Vec<(Path, Entry)>,
) -> Result<(), JsonError> {
    for (key, value) in fields {
        flatten(ctx, parent.child(key), value, out)?;
    }
    Ok(())
}
