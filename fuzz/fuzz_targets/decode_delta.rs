//! Arbitrary bytes into the delta decoder: it must return an error or a value that
//! survives a re-encode unchanged, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_common::codec::{decode_delta, encode_delta};

fuzz_target!(|data: &[u8]| {
    if let Ok(delta) = decode_delta(data) {
        let again = decode_delta(&encode_delta(&delta)).expect("re-encoded delta decodes");
        assert_eq!(again, delta, "a decoded delta must survive a re-encode");
        for change in &delta.changes {
            let _ = change.state.to_json(&change.id);
        }
    }
});
