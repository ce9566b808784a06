//! What a tombstone keeps of a person, and no more.
//!
//! Every tombstone is named by a keyed hash of the subject key
//! (HMAC-SHA256 over the dataset id and the key): receipts, the audit log
//! and subject lookups carry only that. To hide and re-delete rows that a
//! restored backup brings back, esq must also recognise the key itself in
//! the table. Where the catalog does not mark the key as PII the tombstone
//! keeps it as it is; where it does, the tombstone keeps it sealed
//! (AES-256-GCM, bound to the dataset), so a copy of schema `esq` — a
//! backup, a replica, a curious administrator — does not say who asked to
//! be forgotten. Both secrets derive from `lifecycle.subject_key_file`, or
//! from the signing key when none is set.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::Mac;
use sha2::Sha256;

use crate::config::Config;
use crate::signing::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum SubjectKeyError {
    #[error("lifecycle.subject_key_file: cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "lifecycle.subject_key_file: {path} holds {len} bytes; it needs at least 32 random bytes"
    )]
    Short {
        path: std::path::PathBuf,
        len: usize,
    },
    #[error("right-to-delete needs a key for subject hashes: set [signing] key_file (esq keys generate) or lifecycle.subject_key_file")]
    Missing,
}

/// A tombstone's sealed subject key could not be opened (another key, or
/// edited): it cannot be hidden by value, only by its hash.
#[derive(Debug, thiserror::Error)]
#[error("a sealed subject key does not open with this esq's key")]
pub struct SealBroken;

/// The two secrets: one names subjects, one seals their keys.
pub struct SubjectKeys {
    hash_key: [u8; 32],
    seal: Aes256Gcm,
}

impl std::fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKeys(…)")
    }
}

const NONCE_BYTES: usize = 12;
/// Sealed keys are padded to a multiple of this, so a sealed key's length
/// does not tell the key's length (keys hold no NUL: PostgreSQL text
/// cannot).
const PAD_TO: usize = 64;

impl SubjectKeys {
    /// From `lifecycle.subject_key_file`, else from the signing key.
    pub fn from_config(
        config: &Config,
        signing: Option<&SigningKey>,
    ) -> Result<SubjectKeys, SubjectKeyError> {
        if let Some(path) = &config.lifecycle.subject_key_file {
            let bytes = std::fs::read(path).map_err(|source| SubjectKeyError::Read {
                path: path.clone(),
                source,
            })?;
            if bytes.len() < 32 {
                return Err(SubjectKeyError::Short {
                    path: path.clone(),
                    len: bytes.len(),
                });
            }
            return Ok(SubjectKeys::from_secret(&bytes));
        }
        let signing = signing.ok_or(SubjectKeyError::Missing)?;
        Ok(SubjectKeys::from_secret(
            &signing.derive_secret("esq lifecycle subject keys v1"),
        ))
    }

    pub fn from_secret(secret: &[u8]) -> SubjectKeys {
        let derive = |label: &str| -> [u8; 32] {
            let mut mac = hmac(secret);
            mac.update(label.as_bytes());
            mac.finalize().into_bytes().into()
        };
        let seal_key = derive("seal");
        SubjectKeys {
            hash_key: derive("hash"),
            seal: Aes256Gcm::new((&seal_key).into()),
        }
    }

    /// The subject's name in tombstones, receipts and the audit log: hex
    /// HMAC-SHA256 of `dataset` (length-prefixed) and the key's canonical
    /// text.
    pub fn hash(&self, dataset: &str, key: &str) -> String {
        let mut mac = hmac(&self.hash_key);
        mac.update(&(dataset.len() as u64).to_be_bytes());
        mac.update(dataset.as_bytes());
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The key sealed for `dataset`: nonce then ciphertext.
    pub fn seal(&self, dataset: &str, key: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        if getrandom::fill(&mut nonce).is_err() {
            // No randomness: derive the nonce from the key's hash (one key,
            // one nonce, so it is still never reused for another text).
            let hash = self.hash(dataset, key);
            nonce.copy_from_slice(&hex::decode(&hash[..NONCE_BYTES * 2]).unwrap_or_default());
        }
        let mut padded = key.as_bytes().to_vec();
        padded.resize(padded.len().div_ceil(PAD_TO).max(1) * PAD_TO, 0);
        let payload = Payload {
            msg: &padded,
            aad: dataset.as_bytes(),
        };
        let mut out = nonce.to_vec();
        // Encryption into a Vec fails only past 64 GiB.
        out.extend(
            self.seal
                .encrypt(Nonce::from_slice(&nonce), payload)
                .unwrap_or_default(),
        );
        out
    }

    /// The key a [`SubjectKeys::seal`] sealed for `dataset`.
    pub fn open(&self, dataset: &str, sealed: &[u8]) -> Result<String, SealBroken> {
        if sealed.len() < NONCE_BYTES {
            return Err(SealBroken);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let plain = self
            .seal
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: dataset.as_bytes(),
                },
            )
            .map_err(|_| SealBroken)?;
        let end = plain.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        String::from_utf8(plain[..end].to_vec()).map_err(|_| SealBroken)
    }
}

fn hmac(key: &[u8]) -> hmac::Hmac<Sha256> {
    <hmac::Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_bound_to_the_dataset() {
        let keys = SubjectKeys::from_secret(&[7; 32]);
        let other = SubjectKeys::from_secret(&[8; 32]);
        assert_eq!(
            keys.hash("burial_2024", "42"),
            keys.hash("burial_2024", "42")
        );
        assert_ne!(
            keys.hash("burial_2024", "42"),
            other.hash("burial_2024", "42")
        );
        assert_ne!(
            keys.hash("burial_2024", "42"),
            keys.hash("staff_notes", "42")
        );
        assert_ne!(keys.hash("a", "b\u{0}c"), keys.hash("a\u{0}b", "c"));
        assert_eq!(keys.hash("d", "k").len(), 64);
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_key_and_dataset() {
        let keys = SubjectKeys::from_secret(&[7; 32]);
        let sealed = keys.seal("burial_2024", "1234567");
        assert!(!sealed.windows(7).any(|w| w == b"1234567"));
        assert_eq!(keys.open("burial_2024", &sealed).unwrap(), "1234567");
        assert!(keys.open("staff_notes", &sealed).is_err());
        assert!(SubjectKeys::from_secret(&[8; 32])
            .open("burial_2024", &sealed)
            .is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(keys.open("burial_2024", &flipped).is_err());
        assert_ne!(keys.seal("burial_2024", "1234567"), sealed, "fresh nonce");
        assert_eq!(
            keys.seal("burial_2024", "5").len(),
            keys.seal("burial_2024", "12345678901234").len(),
            "a sealed key's length does not tell the key's"
        );
        let long = "k".repeat(100);
        assert_eq!(keys.open("d", &keys.seal("d", &long)).unwrap(), long);
    }
}
