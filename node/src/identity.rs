//! The node's identity: an Ed25519 key made on first start and kept in the data
//! directory (`identity.key`, readable by its owner only). The actor id every write of
//! this node carries is derived from its public key ([`ActorId::from_public_key`]).
//!
//! The file is text: a header line, then the 32-byte secret key in hex. It is written
//! to a temporary file with mode 0600, fsynced, and renamed into place, so a crash
//! never leaves half a key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use trellis_common::ids::ActorId;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "identity.key";
const HEADER: &str = "trellis-node ed25519 secret key v1";

/// Why the identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("identity key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a key this build wrote.
    #[error(
        "identity key {path} is not a trellis-node key: {reason} (move it away to make a new identity; peers will see a new node)"
    )]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("cannot make a key: the system random source failed: {0}")]
    Random(String),
}

/// A node's key pair.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("actor", &self.actor())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random key.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The identity kept in `data_dir`, made (and saved) when there is none. The
    /// boolean says whether it was made now.
    pub fn load_or_create(data_dir: &Path) -> Result<(Self, bool), IdentityError> {
        let path = data_dir.join(KEY_FILE);
        match Self::load(&path) {
            Ok(identity) => Ok((identity, false)),
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let identity = Self::generate()?;
                identity.save(&path)?;
                tracing::info!(actor = %identity.actor(), path = %path.display(), "made a new node identity");
                Ok((identity, true))
            }
            Err(other) => Err(other),
        }
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let malformed = |reason: &str| IdentityError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let text = fs::read_to_string(path).map_err(io)?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(malformed("the first line is not the expected header"));
        }
        let hex = lines.next().unwrap_or("").trim();
        let secret = decode_hex32(hex).ok_or_else(|| malformed("the key is not 64 hex digits"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "the identity key is readable by other users: chmod 600 it");
            }
        }
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Writes the key file atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("key.tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        let hex = hex::encode(self.key.to_bytes());
        file.write_all(format!("{HEADER}\n{hex}\n").as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent()
            && let Ok(dir) = fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key in hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// The actor id of this node.
    pub fn actor(&self) -> ActorId {
        ActorId::from_public_key(&self.public_key())
    }

    /// The signing key (for the mesh handshake).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_loaded_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(first.actor(), ActorId::from_public_key(&first.public_key()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), "hello\n").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains(KEY_FILE));
    }
}
