//! Ticket ids: `T-` followed by 192 bits from the operating system's CSPRNG
//! in base64url. Stores keep only the SHA-256 of an id, so a leaked store
//! (or audit log) does not leak usable tickets.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "T-";
/// Random bytes per id: 192 bits, well above the 128 the design asks for.
pub const RANDOM_BYTES: usize = 24;
const ENCODED_LEN: usize = 32; // 24 bytes in base64url without padding

/// A bearer ticket id as handed to the user. Never logged, never stored.
/// Carries its hash, computed once (every statement looks it up).
#[derive(Clone, PartialEq, Eq)]
pub struct TicketId {
    text: String,
    hash: TicketHash,
}

/// The SHA-256 of a ticket id: the key stores and audit records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketHash(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a ticket: tickets look like T- followed by 32 characters of base64url")]
pub struct MalformedTicket;

impl TicketId {
    pub fn generate() -> Result<TicketId, getrandom::Error> {
        let mut bytes = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(TicketId::new(format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// Checks the shape of a presented ticket before any lookup.
    pub fn parse(text: &str) -> Result<TicketId, MalformedTicket> {
        let body = text.strip_prefix(PREFIX).ok_or(MalformedTicket)?;
        let decoded = URL_SAFE_NO_PAD.decode(body).map_err(|_| MalformedTicket)?;
        if body.len() != ENCODED_LEN || decoded.len() != RANDOM_BYTES {
            return Err(MalformedTicket);
        }
        Ok(TicketId::new(text.to_string()))
    }

    fn new(text: String) -> TicketId {
        let hash = TicketHash(Sha256::digest(text.as_bytes()).into());
        TicketId { text, hash }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn hash(&self) -> TicketHash {
        self.hash
    }
}

impl std::fmt::Debug for TicketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketId({})", self.hash())
    }
}

impl std::fmt::Display for TicketHash {
    /// The first 16 hex digits: enough to correlate logs, useless as a ticket.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl TicketHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_have_the_contract_shape_and_round_trip() {
        let id = TicketId::generate().expect("random source");
        assert!(id.as_str().starts_with("T-"));
        assert_eq!(id.as_str().len(), 2 + ENCODED_LEN);
        assert_eq!(TicketId::parse(id.as_str()), Ok(id.clone()));
    }

    #[test]
    fn ids_carry_at_least_128_bits_of_fresh_randomness() {
        const { assert!(RANDOM_BYTES * 8 >= 128) };
        let ids: HashSet<String> = (0..10_000)
            .map(|_| TicketId::generate().expect("random source").text)
            .collect();
        assert_eq!(ids.len(), 10_000, "no collisions");
        // Every bit position must vary across ids: a constant or counter-like
        // generator would leave positions fixed.
        let mut ones = [0u32; RANDOM_BYTES * 8];
        for id in &ids {
            let bytes = URL_SAFE_NO_PAD.decode(&id[2..]).expect("base64url");
            for (i, slot) in ones.iter_mut().enumerate() {
                *slot += u32::from((bytes[i / 8] >> (i % 8)) & 1);
            }
        }
        for (bit, count) in ones.iter().enumerate() {
            assert!(
                (4_500..=5_500).contains(count),
                "bit {bit} set in {count} of 10000 ids"
            );
        }
    }

    #[test]
    fn hash_is_sha256_of_the_id_and_display_never_shows_the_id() {
        let id = TicketId::generate().expect("random source");
        let expected: [u8; 32] = Sha256::digest(id.as_str().as_bytes()).into();
        assert_eq!(id.hash(), TicketHash(expected));
        assert!(!format!("{id:?}").contains(&id.as_str()[2..]));
        assert_eq!(id.hash().to_string().len(), 16);
    }

    #[test]
    fn malformed_tickets_are_rejected() {
        for bad in [
            "",
            "T-",
            "X-abc",
            "T-short",
            &format!("T-{}", "!".repeat(32)),
        ] {
            assert_eq!(TicketId::parse(bad), Err(MalformedTicket), "{bad:?}");
        }
    }
}
