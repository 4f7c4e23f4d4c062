//! [`Node`]: a running trellis-node: the store, the identity, the engine and the
//! tasks that serve them (the local API and the mesh), as a handle that is cheap to
//! clone.
//!
//! [`Node::spawn`] opens everything and starts one task per concern in a `JoinSet`,
//! each watching the node's `CancellationToken`. [`Node::shutdown`] stops them in
//! order: the API stops accepting connections and tells the live sockets to close
//! (both watch the token), the mesh says goodbye to its peers and stops, in-flight
//! requests finish, the tasks are drained, and the store closes when the last handle to
//! the engine goes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiOptions, ApiState};
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::identity::{Identity, IdentityError};
use crate::store::{RocksOptions, RocksStore, Store, StoreError};
use crate::sync::{self, SyncError, SyncHandle};

/// The store's directory inside the data directory.
pub const STORE_DIR: &str = "store";

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity key could not be read or made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The store could not be opened.
    #[error(
        "cannot open the store in {path}: {source} (is another trellis-node using this data directory?)"
    )]
    Store {
        /// The store directory.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The API address could not be bound.
    #[error("cannot listen on {addr} (api.listen): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The mesh could not start.
    #[error("cannot start the mesh: {0}")]
    Mesh(SyncError),
    /// A task of the node failed.
    #[error("{0}")]
    Task(String),
}

/// Opens the store, the identity and the engine of a data directory (what `run` does
/// before serving, and what the CLI does for `--data-dir`).
pub fn open_engine(data_dir: &Path, config: &Config) -> Result<(Arc<Engine>, Identity), NodeError> {
    let (identity, _) = Identity::load_or_create(data_dir)?;
    let path = data_dir.join(STORE_DIR);
    let options = RocksOptions {
        durability: config.store.durability.into(),
        ..RocksOptions::default()
    };
    let store: Arc<dyn Store> = Arc::new(
        RocksStore::open(&path, &options).map_err(|source| NodeError::Store { path, source })?,
    );
    let engine = Engine::open(store, identity.actor(), EngineOptions::default())?;
    Ok((Arc::new(engine), identity))
}

/// A running node. Clones share it.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    engine: Arc<Engine>,
    identity: Identity,
    api_addr: SocketAddr,
    sync: Option<SyncHandle>,
    cancel: CancellationToken,
    tasks: Mutex<Option<JoinSet<Result<(), NodeError>>>>,
}

impl Node {
    /// Validates the configuration, opens the data directory and starts serving.
    pub async fn spawn(config: Config) -> Result<Self, NodeError> {
        config.validate()?;
        let addr = config.listen_addr()?;
        let data_dir = config.data_dir.clone();
        let open_config = config.clone();
        let (engine, identity) =
            tokio::task::spawn_blocking(move || open_engine(&data_dir, &open_config))
                .await
                .map_err(|e| NodeError::Task(format!("opening the store failed: {e}")))??;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { addr, source })?;

        let sync = if config.mesh.enabled {
            let net = sync::net_config(&config.mesh)?;
            let sync = sync::start(Arc::clone(&engine), &identity, &config.mesh, net)
                .await
                .map_err(NodeError::Mesh)?;
            Some(sync)
        } else {
            None
        };

        let cancel = CancellationToken::new();
        let state = ApiState::new(
            Arc::clone(&engine),
            ApiOptions {
                token: config.api.token.clone(),
                max_body_bytes: config.api.max_body_bytes,
                max_attachment_bytes: config.api.max_attachment_bytes,
                data_dir: Some(config.data_dir.clone()),
            },
            cancel.clone(),
        )
        .with_sync(sync.clone());
        let mut tasks = JoinSet::new();
        let api_cancel = cancel.clone();
        tasks.spawn(async move {
            axum::serve(listener, api::app(state))
                .with_graceful_shutdown(api_cancel.cancelled_owned())
                .await
                .map_err(|e| NodeError::Task(format!("the API server failed: {e}")))
        });
        let upkeep_cancel = cancel.clone();
        tasks.spawn(async move {
            // Prometheus histograms need periodic upkeep to stay bounded.
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = upkeep_cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => api::metrics::handle().run_upkeep(),
                }
            }
        });
        tracing::info!(
            actor = %identity.actor(),
            api = %api_addr,
            data_dir = %config.data_dir.display(),
            "trellis-node is running"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                engine,
                identity,
                api_addr,
                sync,
                cancel,
                tasks: Mutex::new(Some(tasks)),
            }),
        })
    }

    /// The address the API listens on (the real port when the config said `:0`).
    pub fn api_addr(&self) -> SocketAddr {
        self.inner.api_addr
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The mesh, when enabled.
    pub fn sync(&self) -> Option<&SyncHandle> {
        self.inner.sync.as_ref()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Cancelled when the node shuts down.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// Stops the node (see the module documentation) and waits for its tasks. Later
    /// calls return at once.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.inner.cancel.cancel();
        let Some(mut tasks) = self.inner.tasks.lock().take() else {
            return Ok(());
        };
        if let Some(sync) = &self.inner.sync {
            sync.shutdown().await;
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.map_err(|e| NodeError::Task(format!("a node task panicked: {e}")));
            if let Err(err) | Ok(Err(err)) = result
                && first_error.is_none()
            {
                first_error = Some(err);
            }
        }
        tracing::info!("trellis-node stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Runs a node until SIGINT or SIGTERM, then shuts it down.
pub async fn run(config: Config) -> Result<(), NodeError> {
    let node = Node::spawn(config).await?;
    tokio::select! {
        () = wait_for_signal() => tracing::info!("shutting down"),
        () = node.cancelled() => {}
    }
    node.shutdown().await
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM (systemd, docker stop, kill).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; only Ctrl-C stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
