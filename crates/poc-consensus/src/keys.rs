//! Validator key files: the ed25519 private key as 64 hex characters on one line.

use std::path::Path;

use commonware_codec::{DecodeExt, Encode};
use commonware_cryptography::{Signer, ed25519};

/// Key file problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Contents.
    #[error("{0}: not a validator key (expected 64 hex characters of an ed25519 private key)")]
    Format(String),
}

/// A fresh random key (from the OS's random source).
pub fn generate() -> std::io::Result<ed25519::PrivateKey> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(ed25519::PrivateKey::decode(seed.to_vec()).expect("any 32 bytes are an ed25519 seed"))
}

/// The hex form of a public key.
pub fn public_hex(k: &ed25519::PrivateKey) -> String {
    hex::encode(k.public_key().as_ref())
}

/// Parses a public key from hex.
pub fn parse_public(s: &str) -> Option<ed25519::PublicKey> {
    let b = hex::decode(s.trim()).ok()?;
    ed25519::PublicKey::decode(b).ok()
}

/// Writes a key file readable only by its owner.
pub fn write(path: &Path, k: &ed25519::PrivateKey) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let text = hex::encode(k.encode()) + "\n";
    std::fs::write(path, text).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Reads a key file.
pub fn read(path: &Path) -> Result<ed25519::PrivateKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let bytes =
        hex::decode(text.trim()).map_err(|_| KeyError::Format(path.display().to_string()))?;
    ed25519::PrivateKey::decode(bytes).map_err(|_| KeyError::Format(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = generate().unwrap();
        let p = dir.path().join("v.key");
        write(&p, &k).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(public_hex(&back), public_hex(&k));
        assert_eq!(parse_public(&public_hex(&k)), Some(k.public_key()));
        std::fs::write(&p, "zz\n").unwrap();
        assert!(matches!(read(&p), Err(KeyError::Format(_))));
        assert!(parse_public("abcd").is_none());
    }
}
