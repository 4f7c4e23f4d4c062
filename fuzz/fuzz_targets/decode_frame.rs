//! Arbitrary bytes into the sync frame decoder (what a peer can send): it must return an
//! error or a frame that survives a re-encode unchanged, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_common::sync::frame::{decode, encode};

const MAX: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data, MAX) {
        let bytes = encode(&frame, MAX).expect("a decoded frame encodes within the limit");
        let again = decode(&bytes, MAX).expect("a re-encoded frame decodes");
        assert_eq!(again, frame, "a decoded frame must survive a re-encode");
    }
});
