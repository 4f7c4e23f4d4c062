//! The Trellis node: the store, the engine, the mesh links and the local API. The
//! `trellis-node` binary (`main.rs`) is a thin shell around this library.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod engine;
pub mod fetch;
pub mod identity;
pub mod memory;
pub mod net;
pub mod node;
pub mod store;
pub mod sync;
