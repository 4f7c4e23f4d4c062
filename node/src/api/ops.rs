//! What the API routes do, as plain synchronous functions over an [`Engine`]: the
//! routes call them on the blocking pool, and the CLI calls them directly when it works
//! on a data directory instead of a running node.

use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value, json};
use trellis_common::ids::{CollectionName, DocId};
use trellis_common::query::{Params, Statement, parse_script};

use super::ApiError;
use super::metrics;
use crate::engine::{Engine, QueryResult};

/// Default page size of a document listing.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page size of a document listing.
pub const MAX_PAGE: usize = 1000;

/// What `/v1/execute` answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed {
    /// One statement run on its own: its result.
    One(QueryResult),
    /// A transaction: one result per statement.
    Many(Vec<QueryResult>),
}

impl Executed {
    /// The response body: the result itself, or `{"results": [...]}` for a
    /// transaction.
    pub fn to_json(&self) -> Value {
        match self {
            Self::One(result) => result.to_json(),
            Self::Many(results) => {
                json!({ "results": results.iter().map(QueryResult::to_json).collect::<Vec<_>>() })
            }
        }
    }
}

/// Runs a statement, or a script of several as one transaction (also one statement
/// when `transaction` is set).
pub fn execute(
    engine: &Engine,
    query: &str,
    args: &Params,
    transaction: bool,
) -> Result<Executed, ApiError> {
    let statements = parse_script(query)?;
    let writes = statements.iter().any(|s| {
        matches!(
            s,
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
        )
    });
    let kind = if writes { "write" } else { "read" };
    let started = Instant::now();
    let out = match statements.as_slice() {
        [only] if !transaction => Executed::One(engine.execute_statement(only, args)?),
        _ => Executed::Many(engine.execute_statements(&statements, args)?),
    };
    metrics::query_took(kind, started.elapsed());
    if writes {
        let written = match &out {
            Executed::One(r) => r.ids().len(),
            Executed::Many(rs) => rs.iter().map(|r| r.ids().len()).sum(),
        };
        metrics::documents_written(written);
    }
    Ok(out)
}

/// A collection name from a URL, or 400.
pub fn collection(name: &str) -> Result<CollectionName, ApiError> {
    CollectionName::new(name)
        .map_err(|e| ApiError::BadRequest(format!("invalid collection name: {e}")))
}

/// A document id from a URL segment: a JSON object (`{"k":1}`) is an object id,
/// anything else a string id.
pub fn doc_id(segment: &str) -> Result<DocId, ApiError> {
    let parsed = if segment.starts_with('{') {
        serde_json::from_str::<Value>(segment)
            .ok()
            .filter(Value::is_object)
    } else {
        None
    };
    let value = parsed.unwrap_or_else(|| Value::String(segment.to_owned()));
    DocId::from_json(&value).map_err(|e| ApiError::BadRequest(format!("invalid _id: {e}")))
}

/// Quotes an identifier for the query language.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn not_found(collection: &CollectionName, id: &DocId) -> ApiError {
    ApiError::NotFound(format!("no document {id} in '{collection}'"))
}

/// A document, or 404.
pub fn get_doc(
    engine: &Engine,
    collection: &CollectionName,
    id: &DocId,
) -> Result<Value, ApiError> {
    engine
        .get(collection.as_str(), id)?
        .ok_or_else(|| not_found(collection, id))
}

fn checked_body(id: &DocId, body: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(given) = body.get("_id") {
        let given = DocId::from_json(given)
            .map_err(|e| ApiError::InvalidDocument(format!("invalid _id: {e}")))?;
        if given != *id {
            return Err(ApiError::BadRequest(format!(
                "the body's _id {given} differs from the URL's {id}"
            )));
        }
    }
    body.insert("_id".to_owned(), id.to_json());
    Ok(())
}

/// Inserts a document, or sets the given fields of the existing one (an upsert).
/// Returns whether it was created and the document as stored.
pub fn put_doc(
    engine: &Engine,
    collection: &CollectionName,
    id: &DocId,
    mut body: Map<String, Value>,
) -> Result<(bool, Value), ApiError> {
    checked_body(id, &mut body)?;
    let existed = engine.get(collection.as_str(), id)?.is_some();
    let statement = format!(
        "INSERT INTO {} DOCUMENTS (:d) ON ID CONFLICT DO UPDATE",
        quote(collection.as_str())
    );
    let mut params = Params::new();
    params.insert("d".to_owned(), Value::Object(body));
    execute(engine, &statement, &params, false)?;
    Ok((!existed, get_doc(engine, collection, id)?))
}

/// Flattens a JSON merge patch into SET and UNSET paths: nested objects merge key by
/// key, `null` unsets.
fn flatten(
    prefix: &mut Vec<String>,
    patch: &Map<String, Value>,
    set: &mut Vec<(String, Value)>,
    unset: &mut Vec<String>,
) {
    for (key, value) in patch {
        prefix.push(key.clone());
        let path = prefix
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(".");
        match value {
            Value::Null => unset.push(path),
            Value::Object(inner) if !inner.is_empty() => flatten(prefix, inner, set, unset),
            other => set.push((path, other.clone())),
        }
        prefix.pop();
    }
}

/// Applies a JSON merge patch (RFC 7396: nested objects merge, `null` removes) to a
/// document. Returns the document after, or 404.
pub fn patch_doc(
    engine: &Engine,
    collection: &CollectionName,
    id: &DocId,
    mut patch: Map<String, Value>,
) -> Result<Value, ApiError> {
    if let Some(given) = patch.remove("_id")
        && DocId::from_json(&given).ok().as_ref() != Some(id)
    {
        return Err(ApiError::BadRequest(
            "_id cannot be changed: a document's id is immutable".to_owned(),
        ));
    }
    let (mut set, mut unset) = (Vec::new(), Vec::new());
    flatten(&mut Vec::new(), &patch, &mut set, &mut unset);
    if set.is_empty() && unset.is_empty() {
        return get_doc(engine, collection, id);
    }
    let mut params = Params::new();
    params.insert("id".to_owned(), id.to_json());
    let mut statement = format!("UPDATE {}", quote(collection.as_str()));
    if !set.is_empty() {
        let clauses: Vec<String> = set
            .into_iter()
            .enumerate()
            .map(|(i, (path, value))| {
                params.insert(format!("p{i}"), value);
                format!("{path} = :p{i}")
            })
            .collect();
        statement.push_str(" SET ");
        statement.push_str(&clauses.join(", "));
    }
    if !unset.is_empty() {
        statement.push_str(" UNSET ");
        statement.push_str(&unset.join(", "));
    }
    statement.push_str(" WHERE _id = :id");
    match execute(engine, &statement, &params, false)? {
        Executed::One(result) if !result.ids().is_empty() => get_doc(engine, collection, id),
        _ => Err(not_found(collection, id)),
    }
}

/// Deletes a document (leaving a tombstone that syncs). 404 when there is none.
pub fn delete_doc(
    engine: &Engine,
    collection: &CollectionName,
    id: &DocId,
) -> Result<(), ApiError> {
    let statement = format!("DELETE FROM {} WHERE _id = :id", quote(collection.as_str()));
    let mut params = Params::new();
    params.insert("id".to_owned(), id.to_json());
    match execute(engine, &statement, &params, false)? {
        Executed::One(result) if !result.ids().is_empty() => Ok(()),
        _ => Err(not_found(collection, id)),
    }
}

/// A page of documents in id order.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Page {
    /// The documents, whole, in id order.
    #[schema(value_type = Vec<Object>)]
    pub documents: Vec<Value>,
    /// Pass as `after` to get the next page; absent on the last page. Opaque.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Up to `limit` live documents with ids after the cursor `after` (a `next` of a
/// previous page).
pub fn list_docs(
    engine: &Engine,
    collection: &CollectionName,
    after: Option<&str>,
    limit: usize,
) -> Result<Page, ApiError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    let mut cursor = after
        .map(|a| {
            DocId::from_canonical(a).map_err(|_| {
                ApiError::BadRequest(format!(
                    "after '{a}' is not a cursor: pass the 'next' of the previous page"
                ))
            })
        })
        .transpose()?;
    let mut documents = Vec::new();
    let mut last = None;
    loop {
        let want = limit - documents.len();
        let batch = engine.store().scan(collection, cursor.as_ref(), want)?;
        let exhausted = batch.len() < want;
        for (id, state) in batch {
            if let Some(doc) = state.to_json(&id) {
                documents.push(doc);
                last = Some(id.clone());
            }
            cursor = Some(id);
        }
        if exhausted {
            return Ok(Page {
                documents,
                next: None,
            });
        }
        if documents.len() == limit {
            return Ok(Page {
                documents,
                next: last.map(|id| id.as_canonical().to_owned()),
            });
        }
    }
}

/// The collections holding at least one stored document, by name.
pub fn collections(engine: &Engine) -> Result<Vec<String>, ApiError> {
    Ok(engine
        .store()
        .collections()?
        .into_iter()
        .map(String::from)
        .collect())
}
