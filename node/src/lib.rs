//! The Trellis node: the store, the engine, the mesh links and the local API. The
//! `trellis-node` binary (`main.rs`) is a thin shell around this library.

pub mod demo;
pub mod engine;
pub mod store;
