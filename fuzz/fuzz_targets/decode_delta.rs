//! Arbitrary bytes into the delta decoder: it must return an error or a value that
//! re-encodes to the same bytes, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_common::codec::{decode_delta, encode_delta};

fuzz_target!(|data: &[u8]| {
    if let Ok(delta) = decode_delta(data) {
        assert_eq!(encode_delta(&delta), data, "decoding must be canonical");
        for change in &delta.changes {
            let _ = change.state.to_json(&change.id);
        }
    }
});
