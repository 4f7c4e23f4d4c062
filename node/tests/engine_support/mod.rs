//! Helpers shared by the engine test suites: an engine on each store backend, parameter
//! maps, and short ways to run statements.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use serde_json::{Value, json};
use tempfile::TempDir;
use trellis_common::ids::ActorId;
use trellis_common::query::Params;
use trellis_node::engine::{Engine, EngineError, EngineOptions, QueryResult};
use trellis_node::store::{MemoryStore, RocksOptions, RocksStore, Store};

pub const ACTOR: ActorId = ActorId::from_u64(0xA11CE);

/// An engine with the store it runs on (and the directory of a RocksDB one).
pub struct Db {
    pub name: &'static str,
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

impl Db {
    /// A RocksDB store in a fresh temporary directory (WAL synced, as in production).
    pub fn rocks() -> Self {
        let dir = TempDir::new().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RocksStore::open(dir.path(), &RocksOptions::default()).unwrap());
        Self::on(store, "rocksdb", Some(dir))
    }

    pub fn memory() -> Self {
        Self::on(Arc::new(MemoryStore::new()), "memory", None)
    }

    fn on(store: Arc<dyn Store>, name: &'static str, dir: Option<TempDir>) -> Self {
        let engine = Engine::open(Arc::clone(&store), ACTOR, EngineOptions::default()).unwrap();
        Self {
            name,
            engine,
            store,
            _dir: dir,
        }
    }

    /// Runs a statement that must succeed.
    pub fn run(&self, statement: &str, params: Value) -> QueryResult {
        self.engine
            .execute(statement, &p(params))
            .unwrap_or_else(|e| panic!("[{}] {statement}: {e}", self.name))
    }

    /// Runs a statement that must fail.
    pub fn fail(&self, statement: &str, params: Value) -> EngineError {
        match self.engine.execute(statement, &p(params)) {
            Ok(r) => panic!("[{}] {statement} should fail, gave {r:?}", self.name),
            Err(e) => e,
        }
    }

    /// The rows of a SELECT.
    pub fn rows(&self, statement: &str, params: Value) -> Vec<Value> {
        self.run(statement, params).documents().to_vec()
    }

    /// Every live document of a collection, whole, in id order.
    pub fn all(&self, collection: &str) -> Vec<Value> {
        self.rows(&format!("SELECT * FROM {collection}"), json!({}))
    }
}

/// Both backends: the RocksDB one first.
pub fn backends() -> Vec<Db> {
    vec![Db::rocks(), Db::memory()]
}

/// A parameter map from a JSON object.
pub fn p(value: Value) -> Params {
    match value {
        Value::Object(map) => map,
        Value::Null => Params::new(),
        other => panic!("parameters must be an object, got {other}"),
    }
}
