//! SCRAM-SHA-256 verifiers in PostgreSQL's own format
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), the only
//! password form esq keeps. Made by `postgres-protocol` (the maintained
//! implementation used by rust-postgres); esq only parses and checks them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Iterations below this are refused: PostgreSQL's own default is 4096.
pub const MIN_ITERATIONS: u32 = 4096;

/// A parsed verifier: enough to run the server side of SCRAM-SHA-256,
/// never enough to log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramVerifier(iterations={})", self.iterations)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("not a SCRAM-SHA-256 verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (make one with `esq passwd`)")]
    Shape,
    #[error("SCRAM verifier iteration count must be a number of at least {MIN_ITERATIONS}")]
    Iterations,
    #[error("SCRAM verifier {0} is not valid base64 of the right length")]
    Encoding(&'static str),
}

impl ScramVerifier {
    /// Makes a verifier for `password` with a fresh random salt.
    pub fn generate(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }

    pub fn parse(text: &str) -> Result<ScramVerifier, ScramError> {
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::Shape)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramError::Shape)?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramError::Shape)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(ScramError::Shape)?;
        let iterations: u32 = iterations.parse().map_err(|_| ScramError::Iterations)?;
        if iterations < MIN_ITERATIONS {
            return Err(ScramError::Iterations);
        }
        let salt = STANDARD
            .decode(salt)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::Encoding("salt"))?;
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key).ok_or(ScramError::Encoding("StoredKey"))?,
            server_key: decode_key(server_key).ok_or(ScramError::Encoding("ServerKey"))?,
        })
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_verifiers_parse_and_differ_by_salt() {
        let a = ScramVerifier::generate("correct horse");
        let b = ScramVerifier::generate("correct horse");
        assert_ne!(a, b, "each verifier gets its own salt");
        let parsed = ScramVerifier::parse(&a).expect("a generated verifier parses");
        assert_eq!(parsed.iterations, 4096);
        assert_eq!(parsed.salt.len(), 16);
        assert!(!a.contains("correct horse"));
    }

    #[test]
    fn malformed_verifiers_are_rejected_with_the_reason() {
        assert_eq!(ScramVerifier::parse("hunter2"), Err(ScramError::Shape));
        assert_eq!(
            ScramVerifier::parse("md5abcdef0123456789abcdef0123456789"),
            Err(ScramError::Shape)
        );
        let good = ScramVerifier::generate("pw");
        let weak = good.replacen("4096", "1000", 1);
        assert_eq!(ScramVerifier::parse(&weak), Err(ScramError::Iterations));
        let (head, _) = good.rsplit_once(':').expect("verifier has keys");
        assert_eq!(
            ScramVerifier::parse(&format!("{head}:c2hvcnQ=")),
            Err(ScramError::Encoding("ServerKey"))
        );
    }
}
