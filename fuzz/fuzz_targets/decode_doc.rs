//! Arbitrary bytes into the document decoder: an error or a value that survives a re-encode, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_common::codec::{decode_doc, encode_doc};
use trellis_common::ids::DocId;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = decode_doc(data) {
        let again = decode_doc(&encode_doc(&state)).expect("re-encoded document decodes");
        assert_eq!(again, state, "a decoded document must survive a re-encode");
        let _ = state.to_json(&DocId::from_string("fuzz").expect("valid id"));
    }
});
