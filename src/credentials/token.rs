//! API tokens for the HTTP door. A token is 256 random bits shown once;
//! config keeps only its SHA-256, and lookups compare hashes in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const TOKEN_PREFIX: &str = "esq_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a token hash: expected 64 hexadecimal characters (the SHA-256 printed by `esq token`)"
)]
pub struct BadTokenHash;

/// A new random API token and its SHA-256 hex for the config file.
pub fn generate() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_hex(&token);
    Ok((token, hash))
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hash_hex(token: &str) -> String {
    hex::encode(hash(token))
}

pub fn parse_token_hash(text: &str) -> Result<[u8; 32], BadTokenHash> {
    let bytes = hex::decode(text.trim()).map_err(|_| BadTokenHash)?;
    bytes.try_into().map_err(|_| BadTokenHash)
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_to_what_is_printed() {
        let (token, hash) = generate().expect("random source");
        let (other, _) = generate().expect("random source");
        assert_ne!(token, other);
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(
            token.len(),
            TOKEN_PREFIX.len() + 43,
            "32 bytes in base64url"
        );
        assert_eq!(parse_token_hash(&hash), Ok(super::hash(&token)));
    }

    #[test]
    fn bad_hashes_are_rejected() {
        assert_eq!(parse_token_hash("abc"), Err(BadTokenHash));
        assert_eq!(parse_token_hash(&"z".repeat(64)), Err(BadTokenHash));
    }
}
