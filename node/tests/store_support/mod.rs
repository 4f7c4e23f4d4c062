//! What the store test suites share.

#![allow(dead_code, unreachable_pub)]

use trellis_node::store::{RocksStore, cf, keys};

/// Rewrites every index run of `store` in format 4's layout, each entry's collection and
/// id written whole.
pub fn rewrite_runs_as_format_4(store: &RocksStore) {
    for key in store.raw_keys(cf::LSNS).unwrap() {
        let value = store.raw_get(cf::LSNS, &key).unwrap().unwrap();
        let (_, first) = keys::split_lsn_key(&key).unwrap();
        let mut old = Vec::new();
        for (lsn, id) in keys::decode_lsn_run(first, &value).unwrap() {
            old = postcard::to_extend(&(lsn - first, id.as_canonical()), old).unwrap();
        }
        store.raw_put(cf::LSNS, &key, &old).unwrap();
    }
    for key in store.raw_keys(cf::CHANGES).unwrap() {
        let value = store.raw_get(cf::CHANGES, &key).unwrap().unwrap();
        let mut old = Vec::new();
        for e in keys::decode_change_run(&value).unwrap() {
            let entry = (e.seq, e.collection.as_str(), e.id.as_canonical());
            old = postcard::to_extend(&entry, old).unwrap();
        }
        store.raw_put(cf::CHANGES, &key, &old).unwrap();
    }
}
