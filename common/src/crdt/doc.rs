//! [`DocState`]: one document as a map from field path to the latest entry written there.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::value::Leaf;
use super::{Crdt, Dot, Stamp, VersionVector};
use crate::clock::Hlc;
use crate::ids::{ActorId, DocId};

/// A field path: the keys from the document root, e.g. `["engine", "temp"]` for
/// `engine.temp`. The empty path is the document itself.
///
/// Paths sort segment by segment, so an ancestor sorts right before its descendants
/// and a subtree is one contiguous range of a [`DocState`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Path(Vec<String>);

impl Path {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// A path from its segments: `Path::new(["a", "b"])` is `a.b`.
    pub fn new<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(segments.into_iter().map(Into::into).collect())
    }

    /// Parses `a.b.c` (no quoting: use [`Path::new`] for keys that contain dots).
    pub fn parse_dotted(dotted: &str) -> Self {
        Self(dotted.split('.').map(str::to_owned).collect())
    }

    /// The segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether this is the root.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path of a child key.
    pub fn child(&self, key: &str) -> Self {
        let mut segments = Vec::with_capacity(self.0.len() + 1);
        segments.extend(self.0.iter().cloned());
        segments.push(key.to_owned());
        Self(segments)
    }

    /// Whether `self` is `other` or one of its descendants.
    pub fn starts_with(&self, other: &[String]) -> bool {
        self.0.starts_with(other)
    }

    /// Whether the path starts at `_id` (the query language treats it as an ordinary root).
    pub fn is_id(&self) -> bool {
        self.0.first().is_some_and(|s| s == "_id")
    }

    /// The value at this path in a materialised JSON document, or `None` when it is
    /// missing (a key is absent, or a value on the way is not an object). The root is the
    /// document itself.
    pub fn lookup<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        self.0
            .iter()
            .try_fold(doc, |value, key| value.as_object()?.get(key))
    }

    /// The segments joined with dots, unquoted: the default key of a projected field.
    pub fn dotted(&self) -> String {
        self.0.join(".")
    }
}

impl Borrow<[String]> for Path {
    fn borrow(&self) -> &[String] {
        &self.0
    }
}

/// Dotted, with backticks around segments that are not plain identifiers (the query
/// language's spelling, so a path in a message can be pasted back into a query).
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let plain = segment.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if plain {
                f.write_str(segment)?;
            } else {
                write!(f, "`{}`", segment.replace('`', "``"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Path({self})")
    }
}

/// What a write left at a path.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum EntryKind {
    /// An object was written here; its keys are entries at child paths. At the root,
    /// this is the insert that makes the document exist.
    Map,
    /// A scalar or an array.
    Value(Leaf),
    /// The field was removed (`UNSET`).
    Unset,
    /// The whole document was deleted (only at the root): the compact tombstone.
    Deleted,
    /// A counter (`APPLY f INCREMENT BY n` / `RESTART WITH n`).
    Counter(Counter),
}

impl EntryKind {
    /// A rank used only to break ties between different kinds under the same stamp,
    /// which honest writers never produce; it keeps merge deterministic anyway.
    fn rank(&self) -> u8 {
        match self {
            EntryKind::Map => 0,
            EntryKind::Value(_) => 1,
            EntryKind::Unset => 2,
            EntryKind::Deleted => 3,
            EntryKind::Counter(_) => 4,
        }
    }
}

/// A counter: a base set by its last `RESTART WITH` (or by the value it was created
/// from) plus each actor's running total of increments since then.
///
/// Each actor only ever raises its own part's sequence number, so parts merge by
/// keeping the higher sequence. A restart starts a new entry (a new stamp), which wins
/// over the old one as a register does: increments made concurrently with a restart
/// are superseded by it.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    /// The value at the restart.
    pub base: f64,
    /// Per actor, its increments since the restart.
    pub parts: BTreeMap<ActorId, CounterPart>,
}

/// One actor's increments of a counter.
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
pub struct CounterPart {
    /// The sequence number of the actor's latest increment (its dot).
    pub seq: u64,
    /// The sum of the actor's increments.
    pub total: f64,
}

impl Counter {
    /// The counter's value: the base plus every actor's total, summed in actor order so
    /// that every replica computes the same float.
    pub fn value(&self) -> f64 {
        self.parts
            .values()
            .fold(self.base, |sum, part| sum + part.total)
    }

    fn merge_parts(&mut self, other: &Counter) {
        if other.base > self.base {
            self.base = other.base;
        }
        for (actor, theirs) in &other.parts {
            let mine = self.parts.entry(*actor).or_insert(*theirs);
            let newer = (theirs.seq, theirs.total) > (mine.seq, mine.total);
            if newer {
                *mine = *theirs;
            }
        }
    }
}

/// The latest write at one path.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Orders this write against others at the same path and its ancestors.
    pub stamp: Stamp,
    /// The writer's sequence number: with `stamp.actor`, the write's [`Dot`].
    pub seq: u64,
    /// What was written.
    pub kind: EntryKind,
}

impl Entry {
    /// The dot of the write that made this entry.
    pub fn dot(&self) -> Dot {
        Dot {
            actor: self.stamp.actor,
            seq: self.seq,
        }
    }

    /// Register merge: the greater stamp wins; the same write merges counter parts.
    /// Returns whether `self` changed.
    fn merge_from(&mut self, other: &Entry) -> bool {
        use std::cmp::Ordering;
        match (self.stamp, self.seq).cmp(&(other.stamp, other.seq)) {
            Ordering::Greater => false,
            Ordering::Less => {
                *self = other.clone();
                true
            }
            Ordering::Equal => match (&mut self.kind, &other.kind) {
                (EntryKind::Counter(mine), EntryKind::Counter(theirs)) => {
                    let before = mine.clone();
                    mine.merge_parts(theirs);
                    *mine != before
                }
                (mine, theirs) if *mine == *theirs => false,
                (mine, theirs) => {
                    if tie_break_key(theirs) > tie_break_key(mine) {
                        *mine = theirs.clone();
                        true
                    } else {
                        false
                    }
                }
            },
        }
    }
}

fn tie_break_key(kind: &EntryKind) -> (u8, Vec<u8>) {
    (kind.rank(), postcard::to_stdvec(kind).unwrap_or_default())
}

/// One document: for each path, the latest entry written there.
///
/// Invariant (kept by every constructor and by merge): no entry is *hidden*, i.e. no
/// entry has a stamp lower than an entry at one of its ancestors. Writing a path
/// (a value, an object, an unset, a delete) supersedes everything older below it, so
/// hidden entries are dropped at once; this keeps tombstones compact and makes equal
/// documents equal as values.
///
/// Reading rules ([`DocState::to_json`]): the document exists when its root entry is an
/// insert ([`EntryKind::Map`]); a delete at the root wins over any field written after
/// it until a new insert. A path with entries below it reads as an object (a newer
/// write below a value turns it back into an object: add-wins).
#[derive(Clone, Default, PartialEq, Debug, Serialize, Deserialize)]
pub struct DocState {
    entries: BTreeMap<Path, Entry>,
}

impl DocState {
    /// An empty state: nothing known about the document.
    pub const fn new() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }

    /// An empty state, shared: for a hot path that needs a reference to one (a batch of
    /// inserts would otherwise make and drop one per document).
    pub fn empty() -> &'static Self {
        static EMPTY: DocState = DocState::new();
        &EMPTY
    }

    /// A state from entries, in any order; hidden entries are dropped.
    pub fn from_entries(entries: impl IntoIterator<Item = (Path, Entry)>) -> Self {
        let mut state = Self::new();
        for (path, entry) in entries {
            state.merge_entry(&path, &entry);
        }
        state
    }

    /// A state from entries that are already in strictly increasing path order, checked
    /// in one pass: `None` when they are out of order or when one is hidden by an
    /// ancestor (which a normalised state never holds). This is the fast path for
    /// decoding, where [`DocState::from_entries`] would merge entry by entry.
    pub fn from_sorted_entries(entries: Vec<(Path, Entry)>) -> Option<Self> {
        let ordered = entries.windows(2).all(|w| w[0].0 < w[1].0);
        if !ordered {
            return None;
        }
        // Stack of (ancestor path, greatest stamp on the chain down to it).
        let mut chain: Vec<(&Path, Stamp)> = Vec::new();
        for (path, entry) in &entries {
            while chain
                .last()
                .is_some_and(|(ancestor, _)| !path.starts_with(ancestor.segments()))
            {
                chain.pop();
            }
            let bound = chain.last().map(|(_, stamp)| *stamp);
            if bound.is_some_and(|bound| entry.stamp < bound) {
                return None;
            }
            chain.push((path, bound.map_or(entry.stamp, |b| b.max(entry.stamp))));
        }
        Some(Self {
            entries: entries.into_iter().collect(),
        })
    }

    /// A state from the entries of one write (all with the same stamp, so none can
    /// hide another) at distinct paths, in any order: no check, one sort. Of entries
    /// sharing a path only one is kept, so a caller that cannot trust its paths to be
    /// distinct compares [`DocState::len`] with the number of entries.
    pub(crate) fn from_unique_entries_of_one_write(entries: Vec<(Path, Entry)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].1.stamp == w[1].1.stamp));
        let entries: BTreeMap<Path, Entry> = entries.into_iter().collect();
        Self { entries }
    }

    /// The entries in path order.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &Entry)> {
        self.entries.iter()
    }

    /// The entry at `path`.
    pub fn get(&self, path: &[String]) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is known about the document.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the document exists (inserted and not deleted since).
    pub fn is_live(&self) -> bool {
        matches!(self.root_kind(), Some(EntryKind::Map))
    }

    /// Whether the document is deleted (its root holds the tombstone).
    pub fn is_deleted(&self) -> bool {
        matches!(self.root_kind(), Some(EntryKind::Deleted))
    }

    fn root_kind(&self) -> Option<&EntryKind> {
        self.entries.get(&[][..]).map(|e| &e.kind)
    }

    /// The greatest hybrid timestamp in the document: a new write must be stamped
    /// after it to supersede what its writer has seen (see [`crate::clock`]).
    pub fn max_hlc(&self) -> Hlc {
        self.entries
            .values()
            .map(|e| e.stamp.hlc)
            .max()
            .unwrap_or(Hlc::ZERO)
    }

    /// Every write this state holds: entry dots and counter-increment dots.
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.entries.values().flat_map(|entry| {
            let parts = match &entry.kind {
                EntryKind::Counter(counter) => {
                    Some(counter.parts.iter().map(|(actor, part)| Dot {
                        actor: *actor,
                        seq: part.seq,
                    }))
                }
                _ => None,
            };
            std::iter::once(entry.dot()).chain(parts.into_iter().flatten())
        })
    }

    /// The part of this state that a replica whose version vector is `seen` lacks:
    /// every entry made by a write it has not seen, and of counters only the parts it
    /// has not seen. Merging the result into such a replica gives the same state as
    /// merging all of `self`.
    pub fn delta_since(&self, seen: &VersionVector) -> DocState {
        let mut delta = DocState::new();
        for (path, entry) in &self.entries {
            if !seen.contains(entry.dot()) {
                delta.entries.insert(path.clone(), entry.clone());
                continue;
            }
            if let EntryKind::Counter(counter) = &entry.kind {
                let unseen: BTreeMap<ActorId, CounterPart> = counter
                    .parts
                    .iter()
                    .filter(|(actor, part)| {
                        !seen.contains(Dot {
                            actor: **actor,
                            seq: part.seq,
                        })
                    })
                    .map(|(actor, part)| (*actor, *part))
                    .collect();
                if !unseen.is_empty() {
                    let kind = EntryKind::Counter(Counter {
                        base: counter.base,
                        parts: unseen,
                    });
                    delta.entries.insert(
                        path.clone(),
                        Entry {
                            stamp: entry.stamp,
                            seq: entry.seq,
                            kind,
                        },
                    );
                }
            }
        }
        delta
    }

    /// Merges one entry, keeping the no-hidden-entries invariant. Returns whether the
    /// state changed.
    pub fn merge_entry(&mut self, path: &Path, entry: &Entry) -> bool {
        if self
            .ancestor_bound(path)
            .is_some_and(|bound| entry.stamp < bound)
        {
            return false;
        }
        let changed = match self.entries.get_mut(path) {
            Some(existing) => existing.merge_from(entry),
            None => {
                self.entries.insert(path.clone(), entry.clone());
                true
            }
        };
        if changed {
            let stamp = self.entries[path].stamp;
            self.drop_hidden_below(path, stamp);
        }
        changed
    }

    /// The greatest stamp among the entries at strict ancestors of `path`.
    fn ancestor_bound(&self, path: &Path) -> Option<Stamp> {
        let segments = path.segments();
        (0..segments.len())
            .filter_map(|depth| self.entries.get(&segments[..depth]))
            .map(|e| e.stamp)
            .max()
    }

    /// Removes descendants of `path` stamped before `stamp`.
    fn drop_hidden_below(&mut self, path: &Path, stamp: Stamp) {
        let hidden: Vec<Path> = self
            .entries
            .range::<Path, _>((std::ops::Bound::Excluded(path), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(path.segments()))
            .filter(|(_, e)| e.stamp < stamp)
            .map(|(p, _)| p.clone())
            .collect();
        for p in hidden {
            self.entries.remove(&p);
        }
    }

    /// The document as JSON with its `_id`, or `None` when it does not exist (never
    /// inserted here, or deleted).
    pub fn to_json(&self, id: &DocId) -> Option<Value> {
        if !self.is_live() {
            return None;
        }
        let entries: Vec<(&Path, &Entry)> = self.entries.iter().collect();
        let mut object = match build(&entries, 0) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        object.shift_insert(0, "_id".to_owned(), id.to_json());
        Some(Value::Object(object))
    }

    /// The materialised value at `path` (ignoring whether the document is live).
    pub fn value_at(&self, path: &[String]) -> Option<Value> {
        let entries: Vec<(&Path, &Entry)> = self
            .entries
            .range::<[String], _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(path))
            .collect();
        if entries.is_empty() {
            return None;
        }
        build(&entries, path.len())
    }
}

/// Builds the value of the node at `depth` from its entries (the node's own entry, if
/// any, first, then its descendants in path order).
fn build(entries: &[(&Path, &Entry)], depth: usize) -> Option<Value> {
    let (own, below) = match entries.first() {
        Some((path, entry)) if path.len() == depth => (Some(*entry), &entries[1..]),
        _ => (None, entries),
    };
    let mut object = Map::new();
    let mut start = 0;
    while start < below.len() {
        let key = &below[start].0.segments()[depth];
        let end = start
            + below[start..]
                .iter()
                .take_while(|(p, _)| &p.segments()[depth] == key)
                .count();
        if let Some(value) = build(&below[start..end], depth + 1) {
            object.insert(key.clone(), value);
        }
        start = end;
    }
    if !object.is_empty() {
        return Some(Value::Object(object));
    }
    match own.map(|e| &e.kind) {
        Some(EntryKind::Value(leaf)) => Some(leaf.to_json()),
        Some(EntryKind::Counter(counter)) => Some(counter_json(counter.value())),
        Some(EntryKind::Map) => Some(Value::Object(Map::new())),
        Some(EntryKind::Unset | EntryKind::Deleted) | None => None,
    }
}

/// Counters read as integers while their value is integral (and exactly representable).
fn counter_json(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() <= EXACT {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

impl Crdt for DocState {
    fn merge(&mut self, other: &Self) {
        if self.entries.is_empty() {
            // Both states are normalised: merging into nothing is a copy.
            self.entries = other.entries.clone();
            return;
        }
        // Path order visits ancestors first, so a newer ancestor in `other` is in place
        // before its older descendants are considered.
        for (path, entry) in &other.entries {
            self.merge_entry(path, entry);
        }
    }
}
