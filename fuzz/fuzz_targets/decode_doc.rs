//! Arbitrary bytes into the document decoder: an error or a canonical value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_common::codec::{decode_doc, encode_doc};
use trellis_common::ids::DocId;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = decode_doc(data) {
        assert_eq!(encode_doc(&state), data, "decoding must be canonical");
        let _ = state.to_json(&DocId::from_string("fuzz").expect("valid id"));
    }
});
