//! The node configuration: defaults with no file, TOML, `TRELLIS_...` environment
//! overrides, and `validate` errors that name the key. Environment changes run inside
//! `figment::Jail`, which restores the environment and serialises the tests using it.

// `Jail` closures return `figment::Error`, which is large; that is figment's API.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use figment::Jail;
use trellis_node::config::{Config, ConfigError, DurabilityConfig};

fn invalid_key(result: Result<Config, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn defaults_work_without_a_file() {
    Jail::expect_with(|_jail| {
        let config = Config::load(None).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.data_dir, PathBuf::from("./trellis-data"));
        assert_eq!(config.api.listen, "127.0.0.1:4680");
        assert_eq!(config.api.token, None);
        assert_eq!(config.store.durability, DurabilityConfig::Sync);
        config.validate().unwrap();
        Ok(())
    });
}

#[test]
fn a_toml_file_sets_values_and_the_environment_overrides_it() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "node.toml",
            r#"
            data_dir = "/srv/trellis"
            [api]
            listen = "127.0.0.1:5000"
            [store]
            durability = "buffered"
            "#,
        )?;
        let config = Config::load(Some(Path::new("node.toml"))).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/trellis"));
        assert_eq!(config.api.listen, "127.0.0.1:5000");
        assert_eq!(config.store.durability, DurabilityConfig::Buffered);

        jail.set_env("TRELLIS_API__LISTEN", "127.0.0.1:6000");
        jail.set_env("TRELLIS_DATA_DIR", "/data/elsewhere");
        jail.set_env("TRELLIS_UNRELATED", "ignored");
        let config = Config::load(Some(Path::new("node.toml"))).unwrap();
        assert_eq!(config.api.listen, "127.0.0.1:6000");
        assert_eq!(config.data_dir, PathBuf::from("/data/elsewhere"));
        assert_eq!(config.store.durability, DurabilityConfig::Buffered);
        Ok(())
    });
}

#[test]
fn validate_names_the_key_and_the_problem() {
    Jail::expect_with(|jail| {
        jail.set_env("TRELLIS_API__LISTEN", "0.0.0.0:4680");
        let err = Config::load(None);
        assert_eq!(invalid_key(err), "api.token");
        let message = Config::load(None).unwrap_err().to_string();
        assert!(
            message.contains("api.token") && message.contains("0.0.0.0:4680"),
            "{message}"
        );

        jail.set_env("TRELLIS_API__TOKEN", "short");
        assert_eq!(invalid_key(Config::load(None)), "api.token");

        jail.set_env("TRELLIS_API__TOKEN", "a-long-enough-secret-token");
        Config::load(None).unwrap();

        jail.set_env("TRELLIS_API__LISTEN", "localhost");
        let message = Config::load(None).unwrap_err().to_string();
        assert!(message.contains("api.listen"), "{message}");
        Ok(())
    });
}

#[test]
fn type_errors_and_unknown_keys_name_the_key() {
    Jail::expect_with(|jail| {
        jail.create_file("bad.toml", "[store]\ndurability = \"sometimes\"\n")?;
        let message = Config::load(Some(Path::new("bad.toml")))
            .unwrap_err()
            .to_string();
        assert!(message.contains("durability"), "{message}");

        jail.create_file("typo.toml", "[api]\nlisten_on = \"127.0.0.1:1\"\n")?;
        let message = Config::load(Some(Path::new("typo.toml")))
            .unwrap_err()
            .to_string();
        assert!(message.contains("listen_on"), "{message}");

        let message = Config::load(Some(Path::new("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(message.contains("missing.toml"), "{message}");

        jail.set_env("TRELLIS_API__MAX_BODY_BYTES", "10");
        assert_eq!(invalid_key(Config::load(None)), "api.max_body_bytes");
        Ok(())
    });
}

#[test]
fn the_mesh_section_parses_from_toml_and_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "mesh.toml",
            "[mesh]\nmdns = false\npeers = [\"/ip4/10.0.0.2/tcp/4681\"]\n\
             subscriptions = [\"SELECT * FROM cars WHERE color = 'blue'\"]\n",
        )?;
        let config = Config::load(Some(Path::new("mesh.toml"))).unwrap();
        assert!(!config.mesh.mdns);
        assert_eq!(config.mesh.peer_addrs().unwrap().len(), 1);
        assert_eq!(
            config.mesh.subscriptions,
            vec!["SELECT * FROM cars WHERE color = 'blue'".to_owned()]
        );
        // Lists in the environment are TOML arrays, strings in double quotes.
        jail.set_env(
            "TRELLIS_MESH__LISTEN",
            r#"["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]"#,
        );
        jail.set_env(
            "TRELLIS_MESH__SUBSCRIPTIONS",
            r#"["SELECT * FROM cars WHERE color = 'red'"]"#,
        );
        let config = Config::load(Some(Path::new("mesh.toml"))).unwrap();
        assert_eq!(config.mesh.listen_addrs().unwrap().len(), 2);
        assert_eq!(
            config.mesh.subscriptions,
            vec!["SELECT * FROM cars WHERE color = 'red'".to_owned()]
        );
        Ok(())
    });
}

#[test]
fn bad_mesh_settings_name_the_key() {
    Jail::expect_with(|jail| {
        jail.set_env("TRELLIS_MESH__PEERS", r#"["10.0.0.2:4681"]"#);
        let message = Config::load(None).unwrap_err().to_string();
        assert!(
            message.contains("mesh.peers") && message.contains("10.0.0.2:4681"),
            "{message}"
        );
        jail.set_env("TRELLIS_MESH__PEERS", "[]");
        jail.set_env("TRELLIS_MESH__SUBSCRIPTIONS", r#"["DELETE FROM cars"]"#);
        assert_eq!(invalid_key(Config::load(None)), "mesh.subscriptions");
        jail.set_env(
            "TRELLIS_MESH__SUBSCRIPTIONS",
            r#"["SELECT * FROM cars WHERE a = :p"]"#,
        );
        assert_eq!(invalid_key(Config::load(None)), "mesh.subscriptions");
        jail.set_env("TRELLIS_MESH__SUBSCRIPTIONS", "[]");
        jail.set_env("TRELLIS_MESH__LISTEN", "[]");
        assert_eq!(invalid_key(Config::load(None)), "mesh.listen");
        jail.set_env("TRELLIS_MESH__ENABLED", "false");
        Config::load(None).unwrap();
        Ok(())
    });
}
