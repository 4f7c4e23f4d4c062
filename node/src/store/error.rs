//! [`StoreError`]: everything that can go wrong in the store, worded for the person who
//! has to act on it.

use trellis_common::ids::{CollectionName, DocId};

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed. Nothing is written when an operation fails.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory was written by a newer Trellis.
    #[error("store format {found} is newer than this build ({supported}): upgrade trellis-node")]
    NewerFormat {
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A stored document could not be decoded.
    #[error("stored document {id} in collection '{collection}' is corrupt: {reason}")]
    Corrupt {
        /// The collection, as far as the key could be read.
        collection: String,
        /// The id, as far as the key could be read.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored value other than a document (a key, the version vector, an index
    /// definition, the format version) could not be read.
    #[error("store {what} is corrupt: {reason}")]
    CorruptMeta {
        /// Which value.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A write would make a document larger than the limit; nothing of the batch was
    /// written.
    #[error(
        "document {id} in collection '{collection}' would be {size} bytes stored, the limit is {limit}: nothing was written"
    )]
    DocumentTooLarge {
        /// The document's collection.
        collection: CollectionName,
        /// The document's id.
        id: DocId,
        /// Its encoded size after the write.
        size: usize,
        /// [`crate::store::MAX_DOC_BYTES`].
        limit: usize,
    },
    /// An index name that is not `[A-Za-z0-9_-]{1,64}`, or a definition with an empty
    /// path.
    #[error("invalid index definition: {0}")]
    InvalidIndex(String),
    /// `create_index` with a name already used by a different definition.
    #[error("an index named '{0}' already exists with a different definition")]
    IndexExists(String),
    /// An index that does not exist.
    #[error("no index named '{0}'")]
    UnknownIndex(String),
    /// A blob or chunk failed verification against its hash.
    #[error("attachment {hash} is corrupt: {reason}")]
    BlobCorrupt {
        /// The blob's hash (hex).
        hash: String,
        /// What failed.
        reason: String,
    },
    /// A chunk or a byte range outside a blob, or a chunk of the wrong size.
    #[error("attachment {hash}: {reason}")]
    BlobRange {
        /// The blob's hash (hex).
        hash: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error outside the storage engine (creating the data directory, reading
    /// an attachment's source).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The storage engine failed (disk full, permissions, I/O error, lock held by another
    /// process...). The message is the engine's.
    #[error("storage engine: {0}")]
    Backend(String),
}

impl StoreError {
    pub(crate) fn corrupt_doc(
        collection: &CollectionName,
        id: &DocId,
        reason: impl ToString,
    ) -> Self {
        Self::Corrupt {
            collection: collection.to_string(),
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn corrupt_meta(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::CorruptMeta {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
