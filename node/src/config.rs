//! The node's configuration: TOML, then `TRELLIS_...` environment variables on top,
//! with a default for everything, so `trellis-node run` works with no file at all.
//!
//! ```toml
//! data_dir = "/var/lib/trellis"      # TRELLIS_DATA_DIR
//!
//! [api]
//! listen = "127.0.0.1:4680"          # TRELLIS_API__LISTEN
//! token = "a long random secret"     # TRELLIS_API__TOKEN; required off loopback
//! max_body_bytes = 8388608           # TRELLIS_API__MAX_BODY_BYTES
//! max_attachment_bytes = 268435456   # TRELLIS_API__MAX_ATTACHMENT_BYTES
//!
//! [store]
//! durability = "sync"                # or "buffered"; TRELLIS_STORE__DURABILITY
//!
//! [mesh]
//! enabled = true                     # TRELLIS_MESH__ENABLED
//! listen = ["/ip4/0.0.0.0/tcp/4681", "/ip4/0.0.0.0/udp/4681/quic-v1"]
//! peers = ["/ip4/10.0.0.2/tcp/4681"] # static peers, dialled and redialled
//! mdns = true                        # discover peers on the LAN
//! subscriptions = ["SELECT * FROM cars WHERE color = 'blue'"]
//! ```
//!
//! Lists in the environment are TOML arrays:
//! `TRELLIS_MESH__PEERS='["/ip4/10.0.0.2/tcp/4681"]'`.
//!
//! Environment variables name a key with `TRELLIS_`, then the path in upper case with
//! `__` between levels. [`Config::validate`] checks what types cannot; its errors and
//! the parse errors name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::api::{DEFAULT_MAX_ATTACHMENT_BYTES, DEFAULT_MAX_BODY_BYTES};
use crate::store::Durability;

/// The default API address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4680";
/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./trellis-data";
/// The shortest API token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store and the identity key live (created if missing).
    pub data_dir: PathBuf,
    /// The local HTTP and WebSocket API.
    pub api: ApiConfig,
    /// The document store.
    pub store: StoreConfig,
    /// Peer-to-peer sync.
    pub mesh: MeshSettings,
}

/// `[mesh]`: the libp2p links and what this node asks its peers for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshSettings {
    /// Whether the node joins the mesh at all.
    pub enabled: bool,
    /// libp2p multiaddrs to listen on (TCP and QUIC).
    pub listen: Vec<String>,
    /// Peers to dial at start and keep redialling (multiaddrs, `/p2p/<id>` optional).
    pub peers: Vec<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// What this node asks its peers for: `SELECT`s without parameters (documents of
    /// a collection, optionally narrowed by `WHERE`). Subscriptions added through the
    /// API are kept in the store and added to these.
    pub subscriptions: Vec<String>,
}

/// The default mesh port (TCP and QUIC).
pub const DEFAULT_MESH_PORT: u16 = 4681;

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_MESH_PORT}"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_MESH_PORT}/quic-v1"),
            ],
            peers: Vec::new(),
            mdns: true,
            subscriptions: Vec::new(),
        }
    }
}

impl MeshSettings {
    /// The listen addresses, parsed. Call after [`Config::validate`].
    pub fn listen_addrs(&self) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
        parse_multiaddrs("mesh.listen", &self.listen)
    }

    /// The static peers, parsed. Call after [`Config::validate`].
    pub fn peer_addrs(&self) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
        parse_multiaddrs("mesh.peers", &self.peers)
    }
}

fn parse_multiaddrs(
    key: &'static str,
    addrs: &[String],
) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
    addrs
        .iter()
        .map(|text| {
            text.parse().map_err(|e| ConfigError::Invalid {
                key,
                problem: format!(
                    "'{text}' is not a libp2p multiaddr ({e}); write e.g. /ip4/10.0.0.2/tcp/{DEFAULT_MESH_PORT}"
                ),
            })
        })
        .collect()
}

/// `[api]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` to listen on; loopback by default.
    pub listen: String,
    /// Bearer token every route but `/v1/health` requires; mandatory when `listen` is
    /// not a loopback address.
    pub token: Option<String>,
    /// Largest JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest attachment upload, in bytes.
    pub max_attachment_bytes: usize,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_attachment_bytes", &self.max_attachment_bytes)
            .finish()
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sync` (fsync before acknowledging a write) or `buffered`.
    pub durability: DurabilityConfig,
}

/// [`Durability`] as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityConfig {
    /// See [`Durability::Sync`].
    #[default]
    Sync,
    /// See [`Durability::Buffered`].
    Buffered,
}

impl From<DurabilityConfig> for Durability {
    fn from(value: DurabilityConfig) -> Self {
        match value {
            DurabilityConfig::Sync => Self::Sync,
            DurabilityConfig::Buffered => Self::Buffered,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            api: ApiConfig::default(),
            store: StoreConfig::default(),
            mesh: MeshSettings::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_attachment_bytes: DEFAULT_MAX_ATTACHMENT_BYTES,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: DurabilityConfig::Sync,
        }
    }
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, not TOML, or a value has the wrong type or an unknown key
    /// (figment's message names the key and where it came from).
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    /// A value that parses but cannot work.
    #[error("configuration key '{key}': {problem}")]
    Invalid {
        /// The key, e.g. `api.listen`.
        key: &'static str,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// The top-level keys, to pick the environment variables meant for the config out of
/// every `TRELLIS_...` one.
const SECTIONS: [&str; 4] = ["data_dir", "api", "store", "mesh"];

impl Config {
    /// The layers: defaults, then the file (when given), then the environment.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("TRELLIS_").split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            SECTIONS.iter().any(|s| key.starts_with(s))
        }))
    }

    /// Loads and validates the configuration from `file` (optional) and the
    /// environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(&Self::figment(file))
    }

    /// Extracts and validates a configuration.
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Self = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The API address. Call after [`Config::validate`].
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.api.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "api.listen",
            problem: format!(
                "'{}' is not an address with a port, like {DEFAULT_LISTEN} or [::1]:4680",
                self.api.listen
            ),
        })
    }

    /// Checks what the types cannot say.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                problem: "must not be empty".to_owned(),
            });
        }
        let addr = self.listen_addr()?;
        match &self.api.token {
            Some(token) if token.trim().len() < MIN_TOKEN_LEN => {
                return Err(ConfigError::Invalid {
                    key: "api.token",
                    problem: format!(
                        "must be at least {MIN_TOKEN_LEN} characters (use `openssl rand -hex 32`)"
                    ),
                });
            }
            None if !addr.ip().is_loopback() => {
                return Err(ConfigError::Invalid {
                    key: "api.token",
                    problem: format!(
                        "api.listen = '{addr}' is reachable from other machines: set api.token (TRELLIS_API__TOKEN) or listen on 127.0.0.1"
                    ),
                });
            }
            _ => {}
        }
        if self.api.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "api.max_body_bytes",
                problem: format!("{} is too small: at least 1024", self.api.max_body_bytes),
            });
        }
        if self.api.max_attachment_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "api.max_attachment_bytes",
                problem: "must be greater than 0".to_owned(),
            });
        }
        self.mesh.listen_addrs()?;
        self.mesh.peer_addrs()?;
        if self.mesh.enabled && self.mesh.listen.is_empty() && self.mesh.peers.is_empty() {
            return Err(ConfigError::Invalid {
                key: "mesh.listen",
                problem: "the mesh is enabled but neither listens nor has peers to dial".to_owned(),
            });
        }
        for query in &self.mesh.subscriptions {
            trellis_common::sync::Subscription::parse(query).map_err(|e| ConfigError::Invalid {
                key: "mesh.subscriptions",
                problem: e.to_string(),
            })?;
        }
        Ok(())
    }
}
