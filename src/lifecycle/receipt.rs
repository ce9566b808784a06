//! Deletion receipts: what a forget hands back as proof (DESIGN 3.8), and
//! how anyone holding esq's public key checks one.
//!
//! A receipt names the subject only by its keyed hash, says how many rows
//! each dataset lost, and cites the audit record of the forget by `seq`
//! and line hash, so the receipt and the hash-chained log vouch for each
//! other. The Ed25519 signature covers a canonical serialisation of every
//! field but `signature` and `status` (see [`Receipt::signed_bytes`]):
//! `status` says what this request found (`forgotten` or
//! `already_forgotten`), not what was done, so the same signed receipt can
//! be handed out again. Parsing refuses unknown fields, so nothing can be
//! added to a receipt without breaking it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::record::{hash_line, Link};
use crate::audit::verify::verify_files;
use crate::signing::{PublicKey, SigningKey};

/// What the signature covers starts with this, so a receipt's signature
/// can never pass for a checkpoint's or a seal's.
const DOMAIN: &[u8] = b"esq deletion receipt v1\n";

/// `status` of a receipt handed out by the forget that made it.
pub const FORGOTTEN: &str = "forgotten";
/// `status` of a receipt handed out again: nothing was deleted this time.
pub const ALREADY_FORGOTTEN: &str = "already_forgotten";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// `R-` and 32 hex digits, unique per forget.
    pub receipt_id: String,
    pub dataset: String,
    /// The subject's keyed hash ([`super::SubjectKeys::hash`]), never the key.
    pub subject_hash: String,
    /// Rows deleted per dataset (the subject's and every linked one).
    pub rows_deleted: BTreeMap<String, u64>,
    pub requested_by: String,
    pub reason: String,
    /// When it was forgotten (RFC 3339, UTC).
    pub at: String,
    /// The forget's audit record: its `seq` …
    pub audit_seq: u64,
    /// … and the hex SHA-256 of its line.
    pub audit_hash: String,
    /// The signing key's id ([`PublicKey::id`]).
    pub key_id: String,
    /// Base64 Ed25519 signature of [`Receipt::signed_bytes`].
    pub signature: String,
    /// Not signed: `forgotten` or `already_forgotten`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The signed part, in a fixed order (`rows_deleted` sorted by dataset).
#[derive(Serialize)]
struct Signed<'a> {
    receipt_id: &'a str,
    dataset: &'a str,
    subject_hash: &'a str,
    rows_deleted: &'a BTreeMap<String, u64>,
    requested_by: &'a str,
    reason: &'a str,
    at: &'a str,
    audit_seq: u64,
    audit_hash: &'a str,
    key_id: &'a str,
}

/// Why a receipt is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a receipt: {0}")]
    Malformed(String),
    #[error("the receipt names key {receipt}, the public key given is {given}")]
    OtherKey { receipt: String, given: String },
    #[error("the signature does not verify with key {0}: the receipt was changed or not made by this key")]
    BadSignature(String),
    #[error("the audit files do not chain: {0}")]
    Chain(String),
    #[error("the audit files given do not hold record {0}")]
    NoRecord(u64),
    #[error(
        "audit record {seq} has hash {found}, the receipt cites {cited}: the record was changed"
    )]
    OtherHash {
        seq: u64,
        found: String,
        cited: String,
    },
    #[error("audit record {seq} is not the forget of this receipt: {why}")]
    NotThisForget { seq: u64, why: String },
}

impl Receipt {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let signed = Signed {
            receipt_id: &self.receipt_id,
            dataset: &self.dataset,
            subject_hash: &self.subject_hash,
            rows_deleted: &self.rows_deleted,
            requested_by: &self.requested_by,
            reason: &self.reason,
            at: &self.at,
            audit_seq: self.audit_seq,
            audit_hash: &self.audit_hash,
            key_id: &self.key_id,
        };
        let mut bytes = DOMAIN.to_vec();
        // Serialising strings, integers and a string-keyed map cannot fail.
        bytes.extend(serde_json::to_vec(&signed).unwrap_or_default());
        bytes
    }

    /// Sets `key_id` and `signature`.
    pub fn sign(&mut self, key: &SigningKey) {
        self.key_id = key.public().id().to_string();
        self.signature = key.sign(&self.signed_bytes());
    }

    /// Reads a receipt (as `esq forget --json` or the HTTP door printed it).
    pub fn parse(text: &str) -> Result<Receipt, ReceiptError> {
        serde_json::from_str(text).map_err(|err| ReceiptError::Malformed(err.to_string()))
    }

    pub fn read(path: &Path) -> Result<Receipt, ReceiptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReceiptError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Receipt::parse(&text)
    }

    /// Checks the signature with `key`.
    pub fn verify(&self, key: &PublicKey) -> Result<(), ReceiptError> {
        if self.key_id != key.id() {
            return Err(ReceiptError::OtherKey {
                receipt: self.key_id.clone(),
                given: key.id().to_string(),
            });
        }
        key.verify(&self.signed_bytes(), &self.signature)
            .map_err(|_| ReceiptError::BadSignature(key.id().to_string()))
    }

    /// Checks that the audit files chain and hold, at `audit_seq`, exactly
    /// the record this receipt cites: its line hash is `audit_hash`, and it
    /// is the forget of this receipt (kind `forget`, same dataset,
    /// `receipt_id` and `subject_hash`).
    pub fn verify_audit(&self, files: &[PathBuf]) -> Result<(), ReceiptError> {
        let report = verify_files(files).map_err(|err| ReceiptError::Chain(err.to_string()))?;
        if let Some(problem) = &report.problem {
            return Err(ReceiptError::Chain(format!(
                "{} line {}: {}",
                problem.at.file.display(),
                problem.at.line,
                problem.what
            )));
        }
        let line = find_record(files, self.audit_seq)?;
        let found = hash_line(&line);
        if found != self.audit_hash {
            return Err(ReceiptError::OtherHash {
                seq: self.audit_seq,
                found,
                cited: self.audit_hash.clone(),
            });
        }
        let record: serde_json::Value =
            serde_json::from_slice(&line).map_err(|err| ReceiptError::NotThisForget {
                seq: self.audit_seq,
                why: err.to_string(),
            })?;
        let detail = &record["detail"];
        let checks = [
            ("kind", &record["kind"], "forget"),
            ("outcome", &record["outcome"], "allow"),
            ("dataset", &record["dataset"], self.dataset.as_str()),
            ("detail.receipt_id", &detail["receipt_id"], &self.receipt_id),
            (
                "detail.subject_hash",
                &detail["subject_hash"],
                &self.subject_hash,
            ),
        ];
        for (name, value, expected) in checks {
            if value.as_str() != Some(expected) {
                return Err(ReceiptError::NotThisForget {
                    seq: self.audit_seq,
                    why: format!("its {name} is {value}, not {expected:?}"),
                });
            }
        }
        Ok(())
    }
}

/// The line of record `seq` in `files`.
fn find_record(files: &[PathBuf], seq: u64) -> Result<Vec<u8>, ReceiptError> {
    for path in files {
        let bytes = std::fs::read(path).map_err(|source| ReceiptError::Read {
            path: path.clone(),
            source,
        })?;
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(link) = serde_json::from_slice::<Link>(line) else {
                continue;
            };
            if link.seq == seq {
                return Ok(line.to_vec());
            }
        }
    }
    Err(ReceiptError::NoRecord(seq))
}

/// `R-` and 32 random hex digits.
pub fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("R-{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(key: &SigningKey) -> Receipt {
        let mut receipt = Receipt {
            receipt_id: "R-00".into(),
            dataset: "burial_2024".into(),
            subject_hash: "ab".repeat(32),
            rows_deleted: BTreeMap::from([("burial_2024".into(), 1), ("staff_notes".into(), 2)]),
            requested_by: "family".into(),
            reason: "GDPR art. 17".into(),
            at: "2026-11-25T18:00:00Z".into(),
            audit_seq: 7,
            audit_hash: "cd".repeat(32),
            key_id: String::new(),
            signature: String::new(),
            status: Some(FORGOTTEN.into()),
        };
        receipt.sign(key);
        receipt
    }

    #[test]
    fn a_signed_receipt_verifies_and_any_change_breaks_it() {
        let key = SigningKey::generate();
        let signed = receipt(&key);
        assert!(signed.verify(key.public()).is_ok());
        let text = serde_json::to_string(&signed).unwrap();
        let again = Receipt::parse(&text).unwrap();
        assert!(again.verify(key.public()).is_ok());
        let mut status = again.clone();
        status.status = Some(ALREADY_FORGOTTEN.into());
        assert!(status.verify(key.public()).is_ok(), "status is not signed");
        let mut rows = again.clone();
        rows.rows_deleted.insert("staff_notes".into(), 3);
        assert!(rows.verify(key.public()).is_err());
        let mut reason = again.clone();
        reason.reason.push(' ');
        assert!(reason.verify(key.public()).is_err());
        let tampered = text.replace("\"audit_seq\":7", "\"audit_seq\":8");
        assert!(Receipt::parse(&tampered)
            .unwrap()
            .verify(key.public())
            .is_err());
        let added = text.replacen('{', "{\"extra\":1,", 1);
        assert!(Receipt::parse(&added).is_err());
        let other = SigningKey::generate();
        assert!(signed.verify(other.public()).is_err());
    }

    #[test]
    fn ids_are_fresh() {
        let a = new_id().unwrap();
        assert_eq!(a.len(), 34);
        assert_ne!(a, new_id().unwrap());
    }
}
