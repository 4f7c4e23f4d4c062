//! Identifiers: who wrote something ([`ActorId`]), which document ([`DocId`]) and in
//! which collection ([`CollectionName`]).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest encoded `_id` accepted, in bytes of its canonical JSON form.
pub const MAX_DOC_ID_BYTES: usize = 256;
/// The longest collection name accepted, in bytes.
pub const MAX_COLLECTION_NAME_BYTES: usize = 64;

/// The identity of a writer: the first 64 bits of the BLAKE3 hash of the node's Ed25519
/// public key.
///
/// Every CRDT entry carries the actor that wrote it, so the id is kept short (a quarter of
/// the key). Forging a colliding id for a given key takes about 2^64 hash evaluations, and
/// mesh admission binds each actor id to the key that signs its handshake, so a forged
/// collision is refused before it can write.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActorId([u8; 8]);

impl ActorId {
    /// Derives the actor id of a node from its Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let hash = blake3::hash(public_key);
        let mut id = [0; 8];
        id.copy_from_slice(&hash.as_bytes()[..8]);
        Self(id)
    }

    /// An actor id from raw bytes, for decoding and tests.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(bytes)
    }

    /// An actor id from a number, for tests and simulations.
    pub const fn from_u64(n: u64) -> Self {
        Self(n.to_be_bytes())
    }

    /// The raw bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({self})")
    }
}

/// Why an `_id` or a collection name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("_id must be a string or an object, found {0}")]
    WrongType(&'static str),
    #[error("_id must not be empty")]
    Empty,
    #[error("_id is {0} bytes encoded, the limit is {MAX_DOC_ID_BYTES}")]
    TooLong(usize),
    #[error("_id object must not contain floating-point numbers (they do not compare exactly)")]
    FloatInId,
    #[error("collection name must not be empty")]
    EmptyCollection,
    #[error("collection name '{0}' is longer than {MAX_COLLECTION_NAME_BYTES} bytes")]
    CollectionTooLong(String),
    #[error(
        "collection name '{0}' is invalid: use ASCII letters, digits, '_' and '-', starting with a letter or '_'"
    )]
    CollectionChars(String),
    #[error("collection name '{0}' is reserved: names starting with '__' belong to Trellis")]
    CollectionReserved(String),
}

/// A document id: a string or a JSON object, immutable, at most [`MAX_DOC_ID_BYTES`]
/// encoded.
///
/// It is kept as its canonical JSON text (object keys sorted, no spaces) so that two
/// spellings of the same object id are the same id, and so that the bytes can serve as
/// a storage key directly.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocId(Box<str>);

impl DocId {
    /// Validates an `_id` given by a writer.
    pub fn from_json(value: &Value) -> Result<Self, IdError> {
        match value {
            Value::String(s) if s.is_empty() => return Err(IdError::Empty),
            Value::String(_) => {}
            Value::Object(map) if map.is_empty() => return Err(IdError::Empty),
            Value::Object(_) => check_no_floats(value)?,
            other => return Err(IdError::WrongType(json_type_name(other))),
        }
        let canonical = canonical_json(value);
        if canonical.len() > MAX_DOC_ID_BYTES {
            return Err(IdError::TooLong(canonical.len()));
        }
        Ok(Self(canonical.into_boxed_str()))
    }

    /// A string id: shorthand for `from_json(&Value::String(..))`.
    pub fn from_string(id: impl Into<String>) -> Result<Self, IdError> {
        Self::from_json(&Value::String(id.into()))
    }

    /// A fresh random id (UUID v4), used when a writer gives none.
    pub fn generate() -> Self {
        let text = canonical_json(&Value::String(uuid::Uuid::new_v4().to_string()));
        Self(text.into_boxed_str())
    }

    /// Rebuilds an id from its canonical encoding (as produced by [`DocId::as_canonical`]).
    pub fn from_canonical(text: &str) -> Result<Self, IdError> {
        let value: Value = serde_json::from_str(text).map_err(|_| IdError::WrongType("text"))?;
        let id = Self::from_json(&value)?;
        if &*id.0 != text {
            return Err(IdError::WrongType("non-canonical text"));
        }
        Ok(id)
    }

    /// Whether the id is a UUID string, like the ids Trellis generates.
    ///
    /// Sync takes such an id to be unique to its first writer: it is never inserted
    /// independently on two nodes, so every version of the document descends from one
    /// insert. Other ids (natural keys such as `"truck-17"` or object ids) may be, and
    /// sync keeps every version of them in sight of the nodes that may need to merge
    /// them (docs/sync.md, "Independent inserts of one id").
    pub fn is_uuid(&self) -> bool {
        self.0
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .is_some_and(|s| s.len() == 36 && uuid::Uuid::try_parse(s).is_ok())
    }

    /// The canonical JSON text, also the storage key.
    pub fn as_canonical(&self) -> &str {
        &self.0
    }

    /// The id as the JSON value users see in `_id`.
    pub fn to_json(&self) -> Value {
        // A string without escapes is its text between the quotes (no parse needed).
        if let Some(text) = self.0.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
            && !text.contains('\\')
        {
            return Value::String(text.to_owned());
        }
        serde_json::from_str(&self.0).expect("a DocId always holds valid JSON")
    }
}

impl fmt::Display for DocId {
    /// String ids print bare, object ids as their JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_json() {
            Value::String(s) => f.write_str(&s),
            _ => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({})", self.0)
    }
}

/// A validated collection name: 1 to 64 ASCII letters, digits, `_` or `-`, starting with
/// a letter or `_`; names beginning with `__` are reserved for Trellis itself.
///
/// Shared rather than copied: every document a batch writes carries its collection's
/// name through the engine and the store.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CollectionName(Arc<str>);

/// By name. Sorting a batch compares the one name its documents share with itself
/// thousands of times: the same allocation is equal without reading the bytes (as
/// `Arc`'s `==` already does).
impl Ord for CollectionName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialOrd for CollectionName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl CollectionName {
    /// Validates a collection name.
    pub fn new(name: &str) -> Result<Self, IdError> {
        if name.is_empty() {
            return Err(IdError::EmptyCollection);
        }
        if name.len() > MAX_COLLECTION_NAME_BYTES {
            return Err(IdError::CollectionTooLong(name.to_owned()));
        }
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !first_ok || !rest_ok {
            return Err(IdError::CollectionChars(name.to_owned()));
        }
        if name.starts_with("__") {
            return Err(IdError::CollectionReserved(name.to_owned()));
        }
        Ok(Self(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CollectionName {
    type Error = IdError;
    fn try_from(name: String) -> Result<Self, IdError> {
        Self::new(&name)
    }
}

impl From<CollectionName> for String {
    fn from(name: CollectionName) -> String {
        name.0.to_string()
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CollectionName({})", self.0)
    }
}

/// The JSON type name used in error messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_no_floats(value: &Value) -> Result<(), IdError> {
    match value {
        Value::Number(n) if n.is_f64() => Err(IdError::FloatInId),
        Value::Array(items) => items.iter().try_for_each(check_no_floats),
        Value::Object(map) => map.values().try_for_each(check_no_floats),
        _ => Ok(()),
    }
}

/// Bodies with at most this many fields have their `_id` found by comparing keys.
const SCANNED_FIELDS: usize = 16;

/// The `_id` field of a document body, when it is an object that has one. Most bodies
/// have a few fields, and comparing their keys costs less than hashing `_id` with the
/// map's hasher (SipHash), which every insert would pay.
pub fn id_field(body: &Value) -> Option<&Value> {
    let fields = body.as_object()?;
    if fields.len() <= SCANNED_FIELDS {
        fields
            .iter()
            .find_map(|(key, value)| (key == "_id").then_some(value))
    } else {
        fields.get("_id")
    }
}

/// Compact JSON with object keys sorted at every level.
fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    match value {
        // Already canonical: written straight, without a sorted copy (every insert of a
        // given `_id` comes here).
        // Sized for the usual case, no escapes, so that the boxed id is not copied again.
        // Most ids need no escape: quoted as they are, with no scan by the serialiser
        // and no check of its output. serde_json escapes exactly these bytes.
        Value::String(text) if !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') => {
            let mut out = String::with_capacity(text.len() + 2);
            out.push('"');
            out.push_str(text);
            out.push('"');
            out
        }
        Value::String(text) => {
            let mut out = Vec::with_capacity(text.len() + 8);
            serde_json::to_writer(&mut out, text).expect("a string serialises");
            String::from_utf8(out).expect("serde_json writes UTF-8")
        }
        other => sorted(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_ids_are_their_json_text() {
        for text in [
            "plain",
            "quote \" and \\ slash",
            "tab\tnew\nline",
            "ünïcode ✓",
            "\u{1}",
        ] {
            let id = DocId::from_json(&json!(text)).unwrap();
            assert_eq!(id.as_canonical(), json!(text).to_string());
            assert_eq!(DocId::from_canonical(id.as_canonical()).unwrap(), id);
        }
        // Every ASCII character, alone and inside a plain id: escaped exactly as
        // serde_json escapes it.
        for c in (0u8..0x80).map(char::from) {
            for text in [c.to_string(), format!("id-{c}-1")] {
                let id = DocId::from_json(&json!(text)).unwrap();
                assert_eq!(id.as_canonical(), json!(text).to_string(), "{c:?}");
            }
        }
    }

    #[test]
    fn the_id_field_is_found_in_bodies_of_any_size() {
        for fields in [
            0,
            1,
            SCANNED_FIELDS - 1,
            SCANNED_FIELDS,
            SCANNED_FIELDS + 1,
            40,
        ] {
            let others = (0..fields).map(|i| (format!("f{i}"), json!(i)));
            let without: Value = others.clone().collect();
            assert_eq!(id_field(&without), None, "{fields} fields");
            for at in [0, fields / 2, fields] {
                let mut with: Vec<(String, Value)> = others.clone().collect();
                with.insert(at, ("_id".into(), json!("x")));
                let body: Value = with.into_iter().collect();
                assert_eq!(
                    id_field(&body),
                    Some(&json!("x")),
                    "{fields} fields, at {at}"
                );
            }
        }
        assert_eq!(id_field(&json!([{"_id": 1}])), None);
        assert_eq!(id_field(&json!({"a": {"_id": 1}})), None);
    }

    #[test]
    fn object_ids_are_canonical_whatever_the_key_order() {
        let a = DocId::from_json(&json!({"site": "north", "n": 3})).unwrap();
        let b = DocId::from_json(&json!({"n": 3, "site": "north"})).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_canonical(), r#"{"n":3,"site":"north"}"#);
        assert_eq!(DocId::from_canonical(a.as_canonical()).unwrap(), a);
    }

    #[test]
    fn ids_of_the_wrong_type_or_size_are_refused() {
        assert_eq!(
            DocId::from_json(&json!(5)),
            Err(IdError::WrongType("a number"))
        );
        assert_eq!(DocId::from_json(&json!("")), Err(IdError::Empty));
        assert_eq!(
            DocId::from_json(&json!({"x": 1.5})),
            Err(IdError::FloatInId)
        );
        let long = "x".repeat(300);
        assert!(matches!(
            DocId::from_string(long),
            Err(IdError::TooLong(302))
        ));
        assert!(DocId::from_string("x".repeat(254)).is_ok());
    }

    #[test]
    fn uuid_ids_are_told_from_natural_ones() {
        assert!(DocId::generate().is_uuid());
        let uuid = DocId::from_string("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        assert!(uuid.is_uuid());
        for natural in [
            "truck-17",
            "67e55044-10b1-426f-9247-bb680e5fe0c",
            "67e55044",
        ] {
            assert!(!DocId::from_string(natural).unwrap().is_uuid(), "{natural}");
        }
        let object = DocId::from_json(&json!({"id": "67e55044-10b1-426f-9247-bb680e5fe0c8"}));
        assert!(!object.unwrap().is_uuid());
    }

    #[test]
    fn generated_ids_are_distinct_uuids() {
        let a = DocId::generate();
        assert_ne!(a, DocId::generate());
        assert_eq!(a.to_string().len(), 36);
    }

    #[test]
    fn collection_names_order_by_name_shared_or_not() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let cars = CollectionName::new("cars").unwrap();
        let shared = cars.clone();
        let separate = CollectionName::new("cars").unwrap();
        let boats = CollectionName::new("boats").unwrap();
        assert_eq!(cars.cmp(&shared), Equal);
        assert_eq!(cars.cmp(&separate), Equal);
        assert_eq!(cars.cmp(&boats), Greater);
        assert_eq!(boats.cmp(&separate), Less);
        let mut names = [separate, boats.clone(), shared, cars];
        names.sort();
        assert_eq!(
            names.iter().map(CollectionName::as_str).collect::<Vec<_>>(),
            ["boats", "cars", "cars", "cars"]
        );
    }

    #[test]
    fn collection_names_are_validated() {
        assert!(CollectionName::new("cars").is_ok());
        assert!(CollectionName::new("_drafts-2").is_ok());
        assert_eq!(CollectionName::new(""), Err(IdError::EmptyCollection));
        assert!(matches!(
            CollectionName::new("2cars"),
            Err(IdError::CollectionChars(_))
        ));
        assert!(matches!(
            CollectionName::new("ca rs"),
            Err(IdError::CollectionChars(_))
        ));
        assert!(matches!(
            CollectionName::new("__sys"),
            Err(IdError::CollectionReserved(_))
        ));
        assert!(matches!(
            CollectionName::new(&"c".repeat(65)),
            Err(IdError::CollectionTooLong(_))
        ));
    }

    #[test]
    fn actor_id_comes_from_the_public_key() {
        let a = ActorId::from_public_key(&[7; 32]);
        assert_eq!(a, ActorId::from_public_key(&[7; 32]));
        assert_ne!(a, ActorId::from_public_key(&[8; 32]));
        assert_eq!(a.to_string().len(), 16);
    }
}
