//! [`EngineError`]: every way a statement, a transaction or a remote delta can fail in
//! the engine, worded for the person who wrote the statement. A failed call writes
//! nothing.

use trellis_common::crdt::JsonError;
use trellis_common::ids::{CollectionName, DocId, IdError};
use trellis_common::query::QueryError;

use crate::store::StoreError;

/// Why the engine refused or failed a call. Nothing of the call was written.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The statement does not parse or bind (the message carries line and column for
    /// syntax errors).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The store failed or refused the write (e.g. a document above 5 MiB).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A write could not be turned into a CRDT delta (e.g. `INCREMENT` of a string).
    #[error("document {id} in '{collection}': {source}")]
    Document {
        /// The collection written.
        collection: CollectionName,
        /// The document written.
        id: DocId,
        /// What is wrong with the write.
        source: JsonError,
    },
    /// An INSERT document whose body is not a JSON object.
    #[error("INSERT document {number}: {source}")]
    Body {
        /// The document's position in the INSERT, from 1.
        number: usize,
        /// What is wrong.
        source: JsonError,
    },
    /// An `_id` that is not a valid document id.
    #[error("INSERT document {number}: invalid _id: {source}")]
    InvalidId {
        /// The document's position in the INSERT, from 1.
        number: usize,
        /// Which rule the id breaks.
        source: IdError,
    },
    /// A collection name the store does not accept.
    #[error("invalid collection name: {0}")]
    InvalidCollection(IdError),
    /// `INSERT ... ON ID CONFLICT FAIL` (the default) met a live document.
    #[error(
        "a document with _id {id} already exists in '{collection}' (use ON ID CONFLICT DO NOTHING or DO UPDATE)"
    )]
    IdConflict {
        /// The collection.
        collection: CollectionName,
        /// The id that exists.
        id: DocId,
    },
    /// A value of the wrong type met while executing (a per-document expression).
    #[error("{context} must be {expected}, found {found}")]
    WrongType {
        /// Where, e.g. `APPLY n INCREMENT BY for document x`.
        context: String,
        /// The type needed.
        expected: &'static str,
        /// The value found, described.
        found: String,
    },
    /// `CREATE INDEX` of a name already taken (without `IF NOT EXISTS`).
    #[error("an index named '{name}' already exists (on '{collection}')")]
    IndexExists {
        /// The index name.
        name: String,
        /// The collection of the existing index.
        collection: CollectionName,
    },
    /// `DROP INDEX` of an index that does not exist on that collection.
    #[error("no index named '{name}' on '{collection}'")]
    UnknownIndex {
        /// The index name.
        name: String,
        /// The collection named in the statement.
        collection: CollectionName,
    },
    /// A statement that cannot be part of a multi-statement transaction.
    #[error("{statement} cannot be part of a transaction with other statements: run it on its own")]
    NotTransactional {
        /// `EVICT`, `CREATE INDEX` or `DROP INDEX`.
        statement: &'static str,
    },
    /// `observe` of something other than a SELECT.
    #[error("only a SELECT can be observed, not {statement}")]
    NotObservable {
        /// The statement given.
        statement: &'static str,
    },
    /// A transaction without statements.
    #[error("the transaction has no statement")]
    EmptyTransaction,
}
