//! The commands of the `trellis-node` binary other than `run` and `demo`: `query`,
//! `status`, `peers`, `fetch`, `keygen`, `export`, `import`. Each works against a running node's API (the
//! default: the address in the configuration) or directly on a data directory
//! (`--data-dir`, only while no node runs on it). This is the binary's edge: errors
//! are `anyhow`, worded for the person at the terminal.

use std::io::{BufRead, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use trellis_common::query::Params;

use crate::api::ops;
use crate::client::{ApiClient, encode_component};
use crate::config::Config;
use crate::engine::Engine;
use crate::identity::Identity;
use crate::node;

/// Documents per INSERT when importing.
pub const IMPORT_BATCH: usize = 500;
/// Documents per page when exporting.
pub const EXPORT_PAGE: usize = 500;

/// Where a command runs.
#[derive(Debug)]
pub enum Target {
    /// A running node's API.
    Api(ApiClient),
    /// A data directory opened in this process.
    Local {
        /// The engine on it.
        engine: Arc<Engine>,
        /// The directory.
        data_dir: PathBuf,
    },
}

/// Where to run a command, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct TargetArgs {
    /// The configuration file (for the API address and token, or the durability).
    pub config: Option<PathBuf>,
    /// Work on this data directory instead of a running node.
    pub data_dir: Option<PathBuf>,
    /// The API URL (default: from the configuration's `api.listen`).
    pub api: Option<String>,
}

impl Target {
    /// Resolves the target: `--data-dir` opens the directory; otherwise the API named
    /// by `--api`, or by the configuration.
    pub fn resolve(args: &TargetArgs) -> anyhow::Result<Self> {
        let config = Config::load(args.config.as_deref())?;
        if let Some(data_dir) = &args.data_dir {
            let (engine, _) = node::open_engine(data_dir, &config)
                .with_context(|| format!("opening data directory {}", data_dir.display()))?;
            return Ok(Self::Local {
                engine,
                data_dir: data_dir.clone(),
            });
        }
        let base = match &args.api {
            Some(url) => url.clone(),
            None => api_url(config.listen_addr()?),
        };
        Ok(Self::Api(ApiClient::new(&base, config.api.token.clone())?))
    }

    async fn execute(&self, query: &str, args: Params, transaction: bool) -> anyhow::Result<Value> {
        match self {
            Self::Api(client) => Ok(client
                .post(
                    "/v1/execute",
                    &json!({ "query": query, "args": args, "transaction": transaction }),
                )
                .await?),
            Self::Local { engine, .. } => {
                Ok(ops::execute(engine, query, &args, transaction)?.to_json())
            }
        }
    }

    async fn page(
        &self,
        collection: &str,
        after: Option<&str>,
    ) -> anyhow::Result<(Vec<Value>, Option<String>)> {
        match self {
            Self::Api(client) => {
                let mut path = format!(
                    "/v1/collections/{}/docs?limit={EXPORT_PAGE}",
                    encode_component(collection)
                );
                if let Some(after) = after {
                    path.push_str(&format!("&after={}", encode_component(after)));
                }
                let page = client.get(&path).await?;
                let documents = page["documents"].as_array().cloned().unwrap_or_default();
                let next = page["next"].as_str().map(str::to_owned);
                Ok((documents, next))
            }
            Self::Local { engine, .. } => {
                let c = ops::collection(collection)?;
                let page = ops::list_docs(engine, &c, after, EXPORT_PAGE)?;
                Ok((page.documents, page.next))
            }
        }
    }
}

/// The URL of an API listening on `addr` (loopback when it listens on every address).
pub fn api_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// `trellis-node query`: runs a statement (or a `;`-separated transaction) and prints
/// the result as JSON.
pub async fn query(target: &Target, statement: &str, args: Option<&str>) -> anyhow::Result<Value> {
    let args: Params = match args {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => bail!("--args must be a JSON object, like '{{\"name\": \"value\"}}'"),
            Err(e) => bail!("--args is not JSON: {e}"),
        },
    };
    target.execute(statement, args, false).await
}

/// `trellis-node status`.
pub async fn status(target: &Target) -> anyhow::Result<Value> {
    match target {
        Target::Api(client) => Ok(client.get("/v1/status").await?),
        Target::Local { engine, data_dir } => Ok(json!({
            "actor": engine.actor().to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "data_dir": data_dir.display().to_string(),
            "version_vector_size": engine.version().len(),
            "collections": ops::collections(engine)?.len(),
        })),
    }
}

/// `trellis-node peers`: the running node's presence (`GET /v1/presence`).
pub async fn peers(target: &Target) -> anyhow::Result<Value> {
    match target {
        Target::Api(client) => Ok(client.get("/v1/presence").await?),
        Target::Local { data_dir, .. } => bail!(
            "peers are known only to a running node; drop --data-dir {} and ask its API",
            data_dir.display()
        ),
    }
}

/// `trellis-node fetch`: fetches an attachment from the running node's peers, with a
/// progress bar on a terminal; answers the final progress. `attachment` is the token
/// (as JSON) or the hash, with `len` when it is the hash.
pub async fn fetch(target: &Target, attachment: &str, len: Option<u64>) -> anyhow::Result<Value> {
    let Target::Api(client) = target else {
        bail!("fetching from peers needs the running node: drop --data-dir and ask its API");
    };
    let (hash, len) = match serde_json::from_str::<Value>(attachment) {
        Ok(token @ Value::Object(_)) => {
            let hash = token[crate::store::blobs::ATTACHMENT_KEY]
                .as_str()
                .context("the token has no '_attachment' hash")?
                .to_owned();
            let len = token["len"].as_u64().context("the token has no 'len'")?;
            (hash, len)
        }
        _ => (
            attachment.to_owned(),
            len.context("give the attachment's length with --len, or pass its whole token")?,
        ),
    };
    let path = format!("/v1/attachments/{}/fetch", encode_component(&hash));
    let mut progress = client.post(&path, &json!({ "len": len })).await?;
    let bar = indicatif::ProgressBar::new(len).with_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    )?);
    loop {
        let chunks = progress["chunks_stored"].as_u64().unwrap_or(0);
        bar.set_position((chunks * crate::store::blobs::CHUNK_SIZE as u64).min(len));
        match progress["state"].as_str() {
            Some("running") => {}
            Some("complete") => break,
            _ => {
                bar.abandon();
                bail!(
                    "fetching {hash} failed: {}",
                    progress["error"].as_str().unwrap_or("unknown reason")
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        progress = client.get(&path).await?;
    }
    bar.finish_and_clear();
    Ok(progress)
}

/// `trellis-node keygen`: makes the node's identity key in `data_dir` if there is none,
/// and describes it.
pub fn keygen(data_dir: &Path) -> anyhow::Result<Value> {
    let (identity, created) = Identity::load_or_create(data_dir)?;
    Ok(json!({
        "actor": identity.actor().to_string(),
        "public_key": identity.public_key_hex(),
        "key_file": data_dir.join(crate::identity::KEY_FILE).display().to_string(),
        "created": created,
    }))
}

/// `trellis-node export`: writes every document of a collection to `out`, one JSON
/// object a line, in id order. Returns how many.
pub async fn export(
    target: &Target,
    collection: &str,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let mut out = BufWriter::new(out);
    let mut after: Option<String> = None;
    let mut count = 0;
    loop {
        let (documents, next) = target.page(collection, after.as_deref()).await?;
        for doc in &documents {
            serde_json::to_writer(&mut out, doc)?;
            out.write_all(b"\n")?;
        }
        count += documents.len();
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.flush()?;
    Ok(count)
}

/// `trellis-node import`: reads JSON lines (one document each; blank lines skipped)
/// and upserts them into a collection (`ON ID CONFLICT DO UPDATE`), in batches.
/// Returns how many.
pub async fn import(
    target: &Target,
    collection: &str,
    input: &mut dyn BufRead,
) -> anyhow::Result<usize> {
    let collection = ops::collection(collection)?;
    let statement_for = |n: usize| {
        let docs: Vec<String> = (0..n).map(|i| format!("(:d{i})")).collect();
        format!(
            "INSERT INTO `{collection}` DOCUMENTS {} ON ID CONFLICT DO UPDATE",
            docs.join(", ")
        )
    };
    // Drawn only when standard error is a terminal.
    let progress = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} imported {pos} documents ({per_sec})")?,
    );
    let mut batch = Map::new();
    let mut count = 0;
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = input.read_line(&mut line)?;
        if read > 0 {
            number += 1;
            let text = line.trim();
            if !text.is_empty() {
                let doc: Value = serde_json::from_str(text)
                    .with_context(|| format!("line {number} is not a JSON document"))?;
                if !doc.is_object() {
                    bail!("line {number} is not a JSON object");
                }
                batch.insert(format!("d{}", batch.len()), doc);
            }
        }
        if batch.len() == IMPORT_BATCH || (read == 0 && !batch.is_empty()) {
            let n = batch.len();
            target
                .execute(&statement_for(n), std::mem::take(&mut batch), false)
                .await
                .with_context(|| format!("importing the documents before line {}", number + 1))?;
            count += n;
            progress.set_position(count as u64);
        }
        if read == 0 {
            break;
        }
    }
    progress.finish_and_clear();
    Ok(count)
}
