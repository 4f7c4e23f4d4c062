//! Property tests of the document model: the CRDT laws, convergence under any delivery
//! order, delta extraction, and deletes that stay deleted.

use proptest::prelude::*;
use serde_json::{Value, json};
use trellis_common::crdt::{Crdt, DocState, Mutation, Path, VersionVector};
use trellis_common::delta::Delta;
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::replica::Replica;

const WALL_START: u64 = 1_790_000_000_000;

#[derive(Debug, Clone)]
enum Action {
    Insert(Value),
    Set(Vec<String>, Value),
    Unset(Vec<String>),
    Increment(Vec<String>, i32),
    Restart(Vec<String>, i32),
    Delete,
    /// Pull everything this replica lacks from another replica.
    SyncFrom(usize),
}

#[derive(Debug, Clone)]
struct Op {
    replica: usize,
    doc: u8,
    action: Action,
    /// Milliseconds the replica's wall clock moves on before the op.
    advance_ms: u64,
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned)
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..=3)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "[xyz]{0,3}".prop_map(Value::from),
        prop::collection::vec(0u8..3, 0..3).prop_map(|v| json!(v)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 8, 3, |inner| {
        prop::collection::btree_map(key(), inner, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

fn body() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), value(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn action(replicas: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => body().prop_map(Action::Insert),
        4 => (path(), value()).prop_map(|(p, v)| Action::Set(p, v)),
        1 => path().prop_map(Action::Unset),
        2 => (path(), -3i32..4).prop_map(|(p, n)| Action::Increment(p, n)),
        1 => (path(), -3i32..4).prop_map(|(p, n)| Action::Restart(p, n)),
        1 => Just(Action::Delete),
        2 => (0..replicas).prop_map(Action::SyncFrom),
    ]
}

fn history() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (2usize..=5).prop_flat_map(|replicas| {
        let op = (0..replicas, 0u8..3, action(replicas), 0u64..3).prop_map(
            |(replica, doc, action, advance_ms)| Op {
                replica,
                doc,
                action,
                advance_ms,
            },
        );
        (Just(replicas), prop::collection::vec(op, 1..40))
    })
}

fn collection() -> CollectionName {
    CollectionName::new("things").unwrap()
}

fn doc_id(n: u8) -> DocId {
    DocId::from_string(format!("doc-{n}")).unwrap()
}

/// Runs a history; returns the replicas and every delta any replica produced or
/// received, in order.
fn run(replicas: usize, ops: &[Op]) -> (Vec<Replica>, Vec<Delta>) {
    let mut nodes: Vec<Replica> = (0..replicas)
        .map(|i| Replica::new(ActorId::from_u64(i as u64 + 1)))
        .collect();
    // Replica 1's wall clock runs an hour ahead: conflicts must still converge.
    let mut walls: Vec<u64> = (0..replicas)
        .map(|i| WALL_START + if i == 1 { 3_600_000 } else { 0 })
        .collect();
    let mut log = Vec::new();
    let c = collection();
    for op in ops {
        walls[op.replica] += op.advance_ms;
        let wall = walls[op.replica];
        let id = doc_id(op.doc);
        let node = &mut nodes[op.replica];
        let produced = match &op.action {
            Action::Insert(body) => node.insert(&c, &id, body, wall).ok(),
            Action::Set(p, v) => update(
                node,
                &id,
                Mutation::Set(Path::new(p.clone()), v.clone()),
                wall,
            ),
            Action::Unset(p) => update(node, &id, Mutation::Unset(Path::new(p.clone())), wall),
            Action::Increment(p, n) => update(
                node,
                &id,
                Mutation::Increment(Path::new(p.clone()), f64::from(*n)),
                wall,
            ),
            Action::Restart(p, n) => update(
                node,
                &id,
                Mutation::Restart(Path::new(p.clone()), f64::from(*n)),
                wall,
            ),
            Action::Delete => Some(node.delete(&c, &id, wall)),
            Action::SyncFrom(from) => {
                let seen = nodes[op.replica].version().clone();
                let delta = nodes[*from].delta_since(&seen);
                nodes[op.replica].apply(&delta, wall);
                None
            }
        };
        log.extend(produced);
    }
    (nodes, log)
}

fn update(node: &mut Replica, id: &DocId, mutation: Mutation, wall: u64) -> Option<Delta> {
    node.update(&collection(), id, &[mutation], wall).ok()
}

/// Everything a replica holds, for comparison.
fn snapshot(replica: &Replica) -> Vec<(DocId, DocState, Option<Value>)> {
    replica
        .states()
        .map(|((_, id), state)| (id.clone(), state.clone(), state.to_json(id)))
        .collect()
}

fn fresh(n: u64) -> Replica {
    Replica::new(ActorId::from_u64(100 + n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent((replicas, ops) in history()) {
        let (nodes, _) = run(replicas, &ops);
        for doc in 0..3u8 {
            let states: Vec<DocState> = nodes
                .iter()
                .map(|n| n.state(&collection(), &doc_id(doc)).cloned().unwrap_or_default())
                .collect();
            for a in &states {
                let mut aa = a.clone();
                aa.merge(a);
                prop_assert_eq!(&aa, a);
                for b in &states {
                    let mut ab = a.clone();
                    ab.merge(b);
                    let mut ba = b.clone();
                    ba.merge(a);
                    prop_assert_eq!(&ab, &ba);
                    for c in &states {
                        let mut ab_c = ab.clone();
                        ab_c.merge(c);
                        let mut bc = b.clone();
                        bc.merge(c);
                        let mut a_bc = a.clone();
                        a_bc.merge(&bc);
                        prop_assert_eq!(ab_c, a_bc);
                    }
                }
            }
        }
    }

    #[test]
    fn replicas_converge_whatever_the_delivery_order_duplication_or_batching(
        (replicas, ops) in history(),
        order_seed in any::<u64>(),
        batch in 1usize..5,
    ) {
        let (_, log) = run(replicas, &ops);
        // Reference: every delta once, in order.
        let mut reference = fresh(0);
        for delta in &log {
            reference.apply(delta, WALL_START);
        }
        // Shuffled, with every third delta delivered twice, in batches merged first.
        let mut shuffled: Vec<&Delta> = log.iter().chain(log.iter().step_by(3)).collect();
        let mut rng = order_seed;
        for i in (1..shuffled.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let mut other = fresh(1);
        for chunk in shuffled.chunks(batch) {
            let mut merged: Vec<Delta> = chunk.iter().map(|d| (*d).clone()).collect();
            // A batch: the documents' fragments merged into one delta per document.
            let mut first = merged.remove(0);
            for d in merged {
                for change in d.changes {
                    match first.changes.iter_mut().find(|c| c.id == change.id) {
                        Some(existing) => existing.state.merge(&change.state),
                        None => first.changes.push(change),
                    }
                }
            }
            first.since = VersionVector::new();
            first.until = VersionVector::new();
            other.apply(&first, WALL_START);
        }
        prop_assert_eq!(snapshot(&reference), snapshot(&other));
    }

    #[test]
    fn synced_replicas_end_identical((replicas, ops) in history()) {
        let (mut nodes, _) = run(replicas, &ops);
        // Gossip in a ring until nobody learns anything: at most 2 rounds for a ring.
        for _ in 0..2 {
            for i in 0..replicas {
                let j = (i + 1) % replicas;
                let seen = nodes[j].version().clone();
                let delta = nodes[i].delta_since(&seen);
                nodes[j].apply(&delta, WALL_START);
            }
        }
        let first = snapshot(&nodes[0]);
        for node in &nodes[1..] {
            prop_assert_eq!(&snapshot(node), &first);
            prop_assert_eq!(node.version(), nodes[0].version());
        }
    }

    #[test]
    fn delta_since_a_version_equals_a_full_merge((replicas, ops) in history()) {
        let (nodes, _) = run(replicas, &ops);
        for receiver in &nodes {
            for sender in &nodes {
                let mut by_delta = receiver.clone();
                by_delta.apply(&sender.delta_since(receiver.version()), WALL_START);
                let mut by_full = receiver.clone();
                by_full.merge_replica(sender, WALL_START);
                prop_assert_eq!(snapshot(&by_delta), snapshot(&by_full));
                prop_assert_eq!(by_delta.version(), by_full.version());
            }
        }
    }

    #[test]
    fn a_deleted_document_stays_deleted_when_a_stale_replica_merges_back(
        body in body(),
        edits in prop::collection::vec((path(), value()), 0..5),
    ) {
        let c = collection();
        let id = doc_id(0);
        let mut a = Replica::new(ActorId::from_u64(1));
        let mut stale = Replica::new(ActorId::from_u64(2));
        a.insert(&c, &id, &body, WALL_START).unwrap();
        stale.merge_replica(&a, WALL_START);
        // The stale replica edits its copy, then goes away before the delete.
        for (p, v) in &edits {
            let _ = stale.update(&c, &id, &[Mutation::Set(Path::new(p.clone()), v.clone())], WALL_START + 1);
        }
        let old = stale.clone();
        let mut late = a.clone();
        late.merge_replica(&old, WALL_START + 2);
        late.delete(&c, &id, WALL_START + 10);
        // The stale replica comes back with everything it had.
        late.merge_replica(&old, WALL_START + 20);
        prop_assert_eq!(late.get(&c, &id), None);
        let tombstone = late.state(&c, &id).unwrap();
        prop_assert!(tombstone.is_deleted());
        prop_assert_eq!(tombstone.len(), 1, "the tombstone is one entry: {:?}", tombstone);
        stale.merge_replica(&late, WALL_START + 30);
        prop_assert_eq!(stale.get(&c, &id), None);
    }

    #[test]
    fn version_vector_merge_obeys_the_laws(
        a in prop::collection::btree_map(0u64..4, 0u64..5, 0..4),
        b in prop::collection::btree_map(0u64..4, 0u64..5, 0..4),
        c in prop::collection::btree_map(0u64..4, 0u64..5, 0..4),
    ) {
        let vv = |m: &std::collections::BTreeMap<u64, u64>| -> VersionVector {
            m.iter().map(|(k, v)| (ActorId::from_u64(*k), *v)).collect()
        };
        let (a, b, c) = (vv(&a), vv(&b), vv(&c));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        prop_assert_eq!(&ab, &ba);
        let mut ab_c = ab.clone();
        ab_c.merge(&c);
        let mut bc = b.clone();
        bc.merge(&c);
        let mut a_bc = a.clone();
        a_bc.merge(&bc);
        prop_assert_eq!(ab_c, a_bc);
        let mut aa = a.clone();
        aa.merge(&a);
        prop_assert_eq!(aa, a);
    }
}
