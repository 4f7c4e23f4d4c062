//! Trellis core without I/O: identifiers, the hybrid logical clock, the CRDT document
//! model, version vectors and deltas, the versioned wire codec, and an in-memory
//! reference replica. Nothing here touches a socket, a file or a runtime: the node and
//! the gateway bring the I/O.

pub mod clock;
pub mod codec;
pub mod crdt;
pub mod delta;
pub mod ids;
pub mod query;
pub mod replica;
pub mod sync;
