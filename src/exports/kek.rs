//! Key-encryption keys (KEKs). Every export bundle is sealed under a fresh
//! [`DataKey`]; only that data key, wrapped by the KEK, travels with the
//! bundle. Rotating the KEK therefore re-wraps 60 bytes per bundle instead
//! of re-encrypting gigabytes, and a leaked bundle is worthless without the
//! KEK, which never leaves the host (or, later, the KMS).
//!
//! [`Kek`] is the seam: [`FileKek`] keeps the key in a local file (base64
//! of 32 random bytes, mode 0600, `esq kek generate --out F`), and a KMS
//! (AWS KMS `Encrypt`/`Decrypt`, Vault transit, an HSM) could implement the
//! same trait later, wrapping and unwrapping remotely without esq ever
//! holding the KEK. The envelope only relies on the trait: a stable
//! [`Kek::id`], and authenticated wrapping bound to caller-given associated
//! data.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

pub use super::envelope::BundleError;

/// Length of data keys and KEKs (AES-256).
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length in a wrapped key.
const WRAP_NONCE_LEN: usize = 12;
/// nonce ‖ encrypted data key ‖ GCM tag.
pub const WRAPPED_LEN: usize = WRAP_NONCE_LEN + KEY_LEN + 16;
/// A KEK file is one line of base64; anything much larger is not one.
const MAX_KEK_FILE: u64 = 1024;

/// A bundle's own AES-256 key: random, used once, zeroed when dropped.
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> DataKey {
        let mut key = [0u8; KEY_LEN];
        rand_core::OsRng.fill_bytes(&mut key);
        DataKey(key)
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<DataKey> {
        let key: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(DataKey(key))
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A data key encrypted under a KEK, as stored in a bundle's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The [`Kek::id`] of the KEK that wrapped it.
    pub kek_id: String,
    /// For [`FileKek`]: nonce ‖ AES-256-GCM(data key) ‖ tag.
    pub bytes: Vec<u8>,
}

/// A key-encryption key: wraps and unwraps data keys.
pub trait Kek: Send + Sync {
    /// Stable id of this KEK (e.g. `file:` + 16 hex digits of a hash of a
    /// hash of the key — never reveals the key). Bundles name it so that a
    /// wrong key is reported as such.
    fn id(&self) -> &str;
    /// Encrypts `key`; `aad` is authenticated and must be given again to
    /// [`Kek::unwrap`].
    fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<WrappedKey, BundleError>;
    /// Decrypts a key [`Kek::wrap`] made under the same `aad`; anything else
    /// (another KEK, altered bytes or `aad`) is an error.
    fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey, BundleError>;
}

/// A KEK kept in a local file.
pub struct FileKek {
    key: DataKey,
    id: String,
    path: PathBuf,
}

impl std::fmt::Debug for FileKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKek")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileKek {
    /// Reads a KEK file written by [`FileKek::generate`] (base64 of 32
    /// random bytes, one line). Refuses a file that group or others may
    /// read or write (as ssh does with private keys), and anything that is
    /// not exactly 32 bytes of base64.
    pub fn load(path: &Path) -> Result<FileKek, BundleError> {
        use std::os::unix::fs::PermissionsExt;
        let bad = |reason: String| BundleError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let io = |source| BundleError::io("read the KEK file", path, source);
        let mut file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "its mode is {mode:03o}: group and others may access it; \
                 run `chmod 600 {}` (esq refuses a key others can read)",
                path.display()
            )));
        }
        let mut text = Zeroizing::new(String::new());
        (&mut file)
            .take(MAX_KEK_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|_| bad("not a KEK file (not text)".into()))?;
        if text.len() as u64 > MAX_KEK_FILE {
            return Err(bad("too large to be a KEK file".into()));
        }
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| bad("not a KEK file: expected one line of base64".into()))?,
        );
        let key = DataKey::from_slice(&bytes).ok_or_else(|| {
            bad(format!(
                "not a KEK file: expected {KEY_LEN} bytes of base64 (make one with `esq kek generate --out FILE`)"
            ))
        })?;
        Ok(FileKek::from_key(key, path))
    }

    /// Writes a fresh KEK to `out` (mode 0600) and returns it. An existing
    /// file is never overwritten.
    pub fn generate(out: &Path) -> Result<FileKek, BundleError> {
        let key = DataKey::generate();
        let mut line = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.0));
        line.push('\n');
        let mut file = super::package::create_private(out)?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| BundleError::io("write the KEK file", out, source))?;
        Ok(FileKek::from_key(key, out))
    }

    fn from_key(key: DataKey, path: &Path) -> FileKek {
        let inner = Sha256::digest(key.0);
        let mut outer = Sha256::new();
        outer.update(b"esq kek id v1\0");
        outer.update(inner);
        let id = format!("file:{}", &hex::encode(outer.finalize())[..16]);
        FileKek {
            key,
            id,
            path: path.to_path_buf(),
        }
    }

    /// The file this KEK was read from or written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Kek for FileKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<WrappedKey, BundleError> {
        let mut nonce = [0u8; WRAP_NONCE_LEN];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .key
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &key.0, aad })
            .map_err(|_| BundleError::Crypto("wrapping the data key failed"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(WrappedKey {
            kek_id: self.id.clone(),
            bytes,
        })
    }

    fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<DataKey, BundleError> {
        let refused = || BundleError::Unwrap {
            kek_id: self.id.clone(),
        };
        if wrapped.kek_id != self.id || wrapped.bytes.len() != WRAPPED_LEN {
            return Err(refused());
        }
        let (nonce, sealed) = wrapped.bytes.split_at(WRAP_NONCE_LEN);
        let plain = Zeroizing::new(
            self.key
                .cipher()
                .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
                .map_err(|_| refused())?,
        );
        DataKey::from_slice(&plain).ok_or_else(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_generated_kek_loads_and_unwraps_what_it_wrapped() -> Result<(), BundleError> {
        let dir = dir();
        let path = dir.path().join("kek");
        let kek = FileKek::generate(&path)?;
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        assert!(
            FileKek::generate(&path).is_err(),
            "an existing file is never overwritten"
        );
        let loaded = FileKek::load(&path)?;
        assert_eq!(loaded.id(), kek.id());
        assert!(kek.id().starts_with("file:") && kek.id().len() == 21);

        let key = DataKey::generate();
        let wrapped = kek.wrap(&key, b"job E-1")?;
        assert_eq!(wrapped.bytes.len(), WRAPPED_LEN);
        let back = loaded.unwrap(&wrapped, b"job E-1")?;
        assert_eq!(back.0, key.0);

        // Another aad, another KEK, a flipped bit: refused.
        assert!(loaded.unwrap(&wrapped, b"job E-2").is_err());
        let other = FileKek::generate(&dir.path().join("other"))?;
        assert_ne!(other.id(), kek.id());
        let relabelled = WrappedKey {
            kek_id: other.id().to_string(),
            ..wrapped.clone()
        };
        assert!(other.unwrap(&relabelled, b"job E-1").is_err());
        for i in 0..wrapped.bytes.len() {
            let mut bad = wrapped.clone();
            bad.bytes[i] ^= 0x01;
            assert!(loaded.unwrap(&bad, b"job E-1").is_err(), "byte {i}");
        }
        Ok(())
    }

    #[test]
    fn a_kek_others_can_read_is_refused_naming_the_file() -> Result<(), BundleError> {
        let dir = dir();
        let path = dir.path().join("kek");
        FileKek::generate(&path)?;
        for mode in [0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("{e}"));
            let err = FileKek::load(&path).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("chmod 600"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn bad_kek_files_are_refused_without_echoing_them() {
        let dir = dir();
        let cases: [(&str, &[u8]); 5] = [
            ("short", b"c2hvcnQ=\n"),
            ("not-base64", b"this is not base64 at all!!\n"),
            ("two-lines", b"AAAA\nAAAA\n"),
            ("empty", b""),
            ("binary", &[0xff, 0xfe, 0x00, 0x01]),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("{e}"));
            let err = FileKek::load(&path).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("not a KEK file"), "{name}: {err}");
            assert!(!err.contains("c2hvcnQ") && !err.contains("AAAA"), "{err}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'A'; 4096]).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(FileKek::load(&big).is_err());
        assert!(FileKek::load(&dir.path().join("missing")).is_err());
    }
}
