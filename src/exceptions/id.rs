//! Exception ids: `X-` followed by 96 random bits in base64url. Unlike a
//! ticket an id grants nothing by itself (only its requester can use it,
//! only stewards decide it), so it is stored as it is; it is random so that
//! ids say nothing about how many exceptions there are.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

pub const PREFIX: &str = "X-";
const RANDOM_BYTES: usize = 12;
const ENCODED_LEN: usize = 16;

/// A new id.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// `text` (trimmed) when it is shaped like an exception id.
pub fn parse(text: &str) -> Option<&str> {
    let text = text.trim();
    let body = text.strip_prefix(PREFIX)?;
    let decoded = URL_SAFE_NO_PAD.decode(body).ok()?;
    (body.len() == ENCODED_LEN && decoded.len() == RANDOM_BYTES).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = generate().unwrap_or_default();
        let b = generate().unwrap_or_default();
        assert_ne!(a, b);
        assert_eq!(parse(&a), Some(a.as_str()));
        assert_eq!(parse(&format!(" {b}\n")), Some(b.as_str()));
        for bad in [
            "",
            "X-",
            "T-AAAAAAAAAAAAAAAA",
            "X-AAAAAAAAAAAAAAA",
            "X-AAAAAAAAAAAAAAAAA",
            "X-AAAAAAAAAAAAAA*A",
            "X-AAAAAAAAAAAAAAAA/approve",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
