//! esq's Ed25519 key (`[signing] key_file`): it signs audit checkpoints,
//! seals and deletion receipts, so that anyone holding the public key can
//! check them and nobody without the private key can make one.
//!
//! Keys are PEM files: the private key as PKCS#8 v1 (which `openssl pkey`
//! reads too), the public key as SubjectPublicKeyInfo. A key is named by its
//! [`PublicKey::id`], the first 8 bytes of the SHA-256 of the raw public key
//! in hex, so a signature says which key made it. Signatures travel as
//! base64 text.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer;
use sha2::{Digest, Sha256};

/// Why a key could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 {kind} key in PEM form (make one with `esq keys generate`)")]
    Format { path: PathBuf, kind: &'static str },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// A signature that does not verify (or is not a signature at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signature does not verify with key {key_id}")]
pub struct BadSignature {
    pub key_id: String,
}

/// The private key. Its `Debug` shows only the key id.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.public.id)
            .finish_non_exhaustive()
    }
}

/// The public key: verifies what the private key signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: String,
}

impl SigningKey {
    /// A new random key (from the operating system's generator).
    pub fn generate() -> SigningKey {
        SigningKey::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> SigningKey {
        let public = PublicKey::from_dalek(key.verifying_key());
        SigningKey { key, public }
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let text = read(path)?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(text.trim()).map_err(|_| {
            KeyError::Format {
                path: path.to_path_buf(),
                kind: "private",
            }
        })?;
        warn_if_readable_by_others(path);
        Ok(SigningKey::from_dalek(key))
    }

    /// Writes the private key to `path` (mode 0600; an existing file is
    /// never overwritten) and the public key to `path.pub`.
    pub fn write(&self, path: &Path) -> Result<PathBuf, KeyError> {
        let failed = |path: &Path, reason: String| KeyError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let pair = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        let pem = pair
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| failed(path, e.to_string()))?;
        create_new(path, pem.as_bytes(), 0o600).map_err(|e| failed(path, e))?;
        let public_path = public_path_for(path);
        create_new(&public_path, self.public.to_pem().as_bytes(), 0o644)
            .map_err(|e| failed(&public_path, e))?;
        Ok(public_path)
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// A 32-byte secret for another purpose (`label` names it), derived
    /// from this key with HMAC-SHA256: one key file to keep, and nothing
    /// derived reveals the key or another label's secret.
    pub fn derive_secret(&self, label: &str) -> [u8; 32] {
        use hmac::Mac;
        let mut mac =
            <hmac::Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&self.key.to_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The base64 Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(message).to_bytes())
    }
}

impl PublicKey {
    fn from_dalek(key: ed25519_dalek::VerifyingKey) -> PublicKey {
        let digest = Sha256::digest(key.as_bytes());
        PublicKey {
            key,
            id: hex::encode(&digest[..8]),
        }
    }

    /// Reads a public key PEM, or the public half of a private key PEM.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read(path)?;
        let text = text.trim();
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
            return Ok(PublicKey::from_dalek(key));
        }
        ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map(|key| PublicKey::from_dalek(key.verifying_key()))
            .map_err(|_| KeyError::Format {
                path: path.to_path_buf(),
                kind: "public",
            })
    }

    /// The key as a SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The key's name: hex of the first 8 bytes of its SHA-256.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks a base64 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), BadSignature> {
        let bad = || BadSignature {
            key_id: self.id.clone(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| bad())?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| bad())?;
        self.key
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
            .map_err(|_| bad())
    }
}

/// `key.pem` → `key.pem.pub`.
pub fn public_path_for(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                "the file exists; esq never overwrites a key (remove it first)".to_string()
            }
            _ => e.to_string(),
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| e.to_string())
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the signing key is readable by other users: chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_signs_what_its_public_half_verifies() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::Write {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        let path = dir.path().join("esq.key");
        let key = SigningKey::generate();
        let public_path = key.write(&path)?;
        assert!(
            key.write(&path).is_err(),
            "an existing key is never overwritten"
        );

        let loaded = SigningKey::load(&path)?;
        let public = PublicKey::load(&public_path)?;
        assert_eq!(loaded.public(), key.public());
        assert_eq!(public.id(), key.public().id());
        assert_eq!(PublicKey::load(&path)?.id(), key.public().id());

        let signature = loaded.sign(b"checkpoint 42");
        assert_eq!(public.verify(b"checkpoint 42", &signature), Ok(()));
        assert!(public.verify(b"checkpoint 43", &signature).is_err());
        assert!(public.verify(b"checkpoint 42", "not base64!").is_err());
        let other = SigningKey::generate();
        assert!(other.public().verify(b"checkpoint 42", &signature).is_err());
        Ok(())
    }

    #[test]
    fn garbage_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("bad.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let error = SigningKey::load(&path).map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("bad.pem"), "{error}");
        assert!(PublicKey::load(&dir.path().join("missing")).is_err());
    }
}
