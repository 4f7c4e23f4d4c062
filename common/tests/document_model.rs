//! Example-based tests of the document model's semantics, one behaviour each.

use serde_json::{Value, json};
use trellis_common::crdt::{DocState, Mutation, Path};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::replica::Replica;

const T: u64 = 1_790_000_000_000;

fn cars() -> CollectionName {
    CollectionName::new("cars").unwrap()
}

fn id() -> DocId {
    DocId::from_string("car-1").unwrap()
}

fn pair() -> (Replica, Replica) {
    (
        Replica::new(ActorId::from_u64(1)),
        Replica::new(ActorId::from_u64(2)),
    )
}

fn set(path: &str, value: Value) -> Mutation {
    Mutation::Set(Path::parse_dotted(path), value)
}

fn sync(a: &mut Replica, b: &mut Replica) {
    a.merge_replica(b, T);
    b.merge_replica(a, T);
}

#[test]
fn insert_materialises_the_body_with_its_id() {
    let (mut a, _) = pair();
    a.insert(
        &cars(),
        &id(),
        &json!({"_id": "ignored", "color": "blue", "engine": {"hp": 90}}),
        T,
    )
    .unwrap();
    assert_eq!(
        a.get(&cars(), &id()),
        Some(json!({"_id": "car-1", "color": "blue", "engine": {"hp": 90}}))
    );
}

#[test]
fn concurrent_edits_of_different_keys_both_survive() {
    let (mut a, mut b) = pair();
    a.insert(
        &cars(),
        &id(),
        &json!({"engine": {"hp": 90, "fuel": "diesel"}}),
        T,
    )
    .unwrap();
    sync(&mut a, &mut b);
    a.update(&cars(), &id(), &[set("engine.hp", json!(110))], T + 5)
        .unwrap();
    b.update(
        &cars(),
        &id(),
        &[set("engine.fuel", json!("electric"))],
        T + 5,
    )
    .unwrap();
    sync(&mut a, &mut b);
    let expected = json!({"_id": "car-1", "engine": {"fuel": "electric", "hp": 110}});
    assert_eq!(a.get(&cars(), &id()), Some(expected.clone()));
    assert_eq!(b.get(&cars(), &id()), Some(expected));
}

#[test]
fn concurrent_writes_to_one_field_keep_the_later_one() {
    let (mut a, mut b) = pair();
    a.insert(&cars(), &id(), &json!({"color": "blue"}), T)
        .unwrap();
    sync(&mut a, &mut b);
    a.update(&cars(), &id(), &[set("color", json!("red"))], T + 10)
        .unwrap();
    b.update(&cars(), &id(), &[set("color", json!("green"))], T + 20)
        .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.get(&cars(), &id()).unwrap()["color"], "green");
    assert_eq!(b.get(&cars(), &id()).unwrap()["color"], "green");
}

#[test]
fn equal_clocks_are_ordered_by_actor() {
    let (mut a, mut b) = pair();
    a.insert(&cars(), &id(), &json!({"color": "blue"}), T)
        .unwrap();
    sync(&mut a, &mut b);
    a.update(&cars(), &id(), &[set("color", json!("red"))], T + 10)
        .unwrap();
    b.update(&cars(), &id(), &[set("color", json!("green"))], T + 10)
        .unwrap();
    sync(&mut a, &mut b);
    // Actor 2 sorts after actor 1.
    assert_eq!(a.get(&cars(), &id()).unwrap()["color"], "green");
}

#[test]
fn a_write_supersedes_a_value_from_a_clock_far_in_the_future() {
    let (mut a, mut b) = pair();
    let year_2099 = 4_070_908_800_000;
    a.insert(&cars(), &id(), &json!({"color": "blue"}), year_2099)
        .unwrap();
    sync(&mut a, &mut b);
    // b's clock is right; it sees the value and changes it: it must win.
    b.update(&cars(), &id(), &[set("color", json!("red"))], T)
        .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.get(&cars(), &id()).unwrap()["color"], "red");
    // And b's own clock was not dragged to 2099 by what it saw.
    let other = DocId::from_string("car-2").unwrap();
    b.insert(&cars(), &other, &json!({}), T + 1).unwrap();
    let stamp = b.state(&cars(), &other).unwrap().max_hlc();
    assert_eq!(stamp.physical_ms(), T + 1);
}

#[test]
fn concurrent_increments_add_up() {
    let (mut a, mut b) = pair();
    a.insert(&cars(), &id(), &json!({"km": 100}), T).unwrap();
    sync(&mut a, &mut b);
    let inc = |n: f64| [Mutation::Increment(Path::parse_dotted("km"), n)];
    a.update(&cars(), &id(), &inc(5.0), T + 1).unwrap();
    a.update(&cars(), &id(), &inc(2.0), T + 2).unwrap();
    b.update(&cars(), &id(), &inc(10.0), T + 1).unwrap();
    sync(&mut a, &mut b);
    // Both turned the same plain number into a counter: the increments add up.
    assert_eq!(a.get(&cars(), &id()).unwrap()["km"], 117);
    assert_eq!(b.get(&cars(), &id()).unwrap()["km"], 117);

    // Once a counter exists on both sides, concurrent increments all count.
    let (mut a, mut b) = pair();
    a.insert(&cars(), &id(), &json!({}), T).unwrap();
    a.update(
        &cars(),
        &id(),
        &[Mutation::Restart(Path::parse_dotted("km"), 100.0)],
        T,
    )
    .unwrap();
    sync(&mut a, &mut b);
    a.update(&cars(), &id(), &inc(5.0), T + 1).unwrap();
    a.update(&cars(), &id(), &inc(2.0), T + 2).unwrap();
    b.update(&cars(), &id(), &inc(10.0), T + 1).unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.get(&cars(), &id()).unwrap()["km"], 117);
    assert_eq!(b.get(&cars(), &id()).unwrap()["km"], 117);
}

#[test]
fn restart_supersedes_concurrent_increments_and_converges() {
    let (mut a, mut b) = pair();
    a.insert(&cars(), &id(), &json!({}), T).unwrap();
    a.update(
        &cars(),
        &id(),
        &[Mutation::Restart(Path::parse_dotted("n"), 1.0)],
        T,
    )
    .unwrap();
    sync(&mut a, &mut b);
    a.update(
        &cars(),
        &id(),
        &[Mutation::Increment(Path::parse_dotted("n"), 4.0)],
        T + 1,
    )
    .unwrap();
    b.update(
        &cars(),
        &id(),
        &[Mutation::Restart(Path::parse_dotted("n"), 50.0)],
        T + 2,
    )
    .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.get(&cars(), &id()).unwrap()["n"], 50);
    assert_eq!(b.get(&cars(), &id()).unwrap()["n"], 50);
}

#[test]
fn unset_removes_a_field_everywhere() {
    let (mut a, mut b) = pair();
    a.insert(&cars(), &id(), &json!({"color": "blue", "note": "dent"}), T)
        .unwrap();
    sync(&mut a, &mut b);
    b.update(
        &cars(),
        &id(),
        &[Mutation::Unset(Path::parse_dotted("note"))],
        T + 1,
    )
    .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(
        a.get(&cars(), &id()),
        Some(json!({"_id": "car-1", "color": "blue"}))
    );
}

#[test]
fn replacing_an_object_drops_its_old_keys_but_keeps_newer_concurrent_ones() {
    let (mut a, mut b) = pair();
    a.insert(
        &cars(),
        &id(),
        &json!({"engine": {"hp": 90, "fuel": "diesel"}}),
        T,
    )
    .unwrap();
    sync(&mut a, &mut b);
    a.update(&cars(), &id(), &[set("engine", json!({"kw": 80}))], T + 10)
        .unwrap();
    b.update(&cars(), &id(), &[set("engine.serial", json!("X1"))], T + 20)
        .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(
        a.get(&cars(), &id()).unwrap()["engine"],
        json!({"kw": 80, "serial": "X1"})
    );
}

#[test]
fn delete_wins_over_a_concurrent_update_and_reinsert_starts_afresh() {
    let (mut a, mut b) = pair();
    a.insert(&cars(), &id(), &json!({"color": "blue", "km": 1}), T)
        .unwrap();
    sync(&mut a, &mut b);
    a.delete(&cars(), &id(), T + 10);
    b.update(&cars(), &id(), &[set("color", json!("red"))], T + 20)
        .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(a.get(&cars(), &id()), None);
    assert_eq!(b.get(&cars(), &id()), None);
    b.insert(&cars(), &id(), &json!({"color": "white"}), T + 30)
        .unwrap();
    sync(&mut a, &mut b);
    assert_eq!(
        a.get(&cars(), &id()),
        Some(json!({"_id": "car-1", "color": "white"}))
    );
}

#[test]
fn an_update_of_a_document_never_inserted_here_does_not_make_it_exist() {
    let state = DocState::new();
    assert_eq!(state.to_json(&id()), None);
    let (mut a, _) = pair();
    a.update(&cars(), &id(), &[set("color", json!("red"))], T)
        .unwrap();
    assert_eq!(a.get(&cars(), &id()), None);
}

#[test]
fn bad_writes_are_refused_with_a_clear_error() {
    let (mut a, _) = pair();
    let err = a.insert(&cars(), &id(), &json!([1, 2]), T).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a document must be a JSON object, found an array"
    );
    a.insert(&cars(), &id(), &json!({"name": "x"}), T).unwrap();
    let err = a
        .update(&cars(), &id(), &[set("_id", json!("y"))], T)
        .unwrap_err();
    assert!(err.to_string().contains("_id cannot be changed"), "{err}");
    let err = a
        .update(
            &cars(),
            &id(),
            &[Mutation::Increment(Path::parse_dotted("name"), 1.0)],
            T,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot apply INCREMENT to 'name': it holds a string, not a number"
    );
    let deep = (0..70)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(".");
    let err = a
        .update(&cars(), &id(), &[set(&deep, json!(1))], T)
        .unwrap_err();
    assert!(err.to_string().contains("the limit is 64"), "{err}");
    assert_eq!(
        a.get(&cars(), &id()),
        Some(json!({"_id": "car-1", "name": "x"}))
    );
}
