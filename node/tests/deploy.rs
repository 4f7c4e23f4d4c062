//! The files in `deploy/` that the node reads must stay valid as the configuration grows.

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use trellis_node::config::{Config, DurabilityConfig};

#[test]
fn the_raspberry_pi_example_config_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/pi/node.toml");
    // The file alone, without the environment, as systemd starts the node.
    let config = Config::from_figment(&Figment::new().merge(Toml::file_exact(&file)))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(config.data_dir, Path::new("/var/lib/trellis"));
    assert_eq!(config.api.listen, "127.0.0.1:4680");
    assert_eq!(config.store.durability, DurabilityConfig::Sync);
    assert!(config.listen_addr().is_ok());
}
