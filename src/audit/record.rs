//! The line format. A record is one JSON object on one line:
//! `{"seq":N,"prev":"<hex sha256>","time":"<RFC 3339>","bundle":"<hex>","kind":…,<the event's fields>}`.
//! `seq` numbers records from 1, across rotated files; `prev` is the hex
//! SHA-256 of the previous record's exact line bytes (without the newline),
//! [`GENESIS`] for the first record. Changing, removing, inserting or
//! reordering a line therefore breaks `seq` or `prev` of the line after it.
//!
//! `bundle` is the hash of the configuration bundle (catalog, policies,
//! users; see [`crate::bundle`]) in force when the record was queued, so a
//! record says which rules decided it; it is absent before a bundle is set.
//! Verification reads only `seq` and `prev` (and hashes the whole line), so
//! it does not depend on `bundle` or any other field.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

/// The `prev` of record 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The line of record `seq` (without the newline). `event` is the
/// serialized [`super::AuditEvent`]: a JSON object, whose fields follow
/// `seq`, `prev`, `time` and `bundle` (left out when empty).
pub fn compose(seq: u64, prev: &str, time: &DateTime<Utc>, bundle: &str, event: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(event.len() + 240);
    line.extend_from_slice(b"{\"seq\":");
    line.extend_from_slice(seq.to_string().as_bytes());
    line.extend_from_slice(b",\"prev\":\"");
    line.extend_from_slice(prev.as_bytes());
    line.extend_from_slice(b"\",\"time\":\"");
    line.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::Micros, true).as_bytes());
    line.push(b'"');
    if !bundle.is_empty() {
        line.extend_from_slice(b",\"bundle\":");
        // A hex hash needs no escaping; anything else gets it all the same.
        match serde_json::to_vec(bundle) {
            Ok(quoted) => line.extend_from_slice(&quoted),
            Err(_) => line.extend_from_slice(b"null"),
        }
    }
    // `event` is `{…}` from serde_json; an empty object has nothing to add.
    match event.get(1..) {
        Some(rest) if rest != b"}" && !rest.is_empty() => {
            line.push(b',');
            line.extend_from_slice(rest);
        }
        _ => line.push(b'}'),
    }
    line
}

/// The hex SHA-256 of a record's line, which the next record's `prev` holds.
pub fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The two fields the chain is made of, read back from a line.
#[derive(Debug, serde::Deserialize)]
pub struct Link {
    pub seq: u64,
    pub prev: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_the_chain_first() {
        let time = DateTime::parse_from_rfc3339("2026-11-25T18:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let line = compose(
            7,
            GENESIS,
            &time,
            "ab12",
            br#"{"kind":"decision","rows":3}"#,
        );
        let text = String::from_utf8(line.clone()).unwrap_or_default();
        assert!(text.starts_with(r#"{"seq":7,"prev":"000"#), "{text}");
        assert!(
            text.contains(r#"00.000000Z","bundle":"ab12","kind""#),
            "the bundle follows the time: {text}"
        );
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        assert_eq!(value["seq"], 7);
        assert_eq!(value["rows"], 3);
        assert_eq!(value["time"], "2026-11-25T18:00:00.000000Z");
        assert_eq!(value["bundle"], "ab12");
        let empty = compose(1, GENESIS, &time, "", b"{}");
        assert!(serde_json::from_slice::<serde_json::Value>(&empty).is_ok());
        assert!(!String::from_utf8_lossy(&empty).contains("bundle"));
        let odd = compose(2, GENESIS, &time, "a\"b", b"{}");
        let value: serde_json::Value = serde_json::from_slice(&odd).unwrap_or_default();
        assert_eq!(value["bundle"], "a\"b");
        assert_ne!(hash_line(&line), hash_line(&empty));
        assert_eq!(hash_line(b"").len(), 64);
    }
}
