//! Tombstones back from the audit log: for a restore of schema `esq`
//! itself (a whole-database backup older than some forgets), which would
//! otherwise take those tombstones with it. Every forget's audit record
//! carries what its tombstone holds — the keyed hash, and the key sealed
//! (or as it is, where the catalog does not mark it PII) — so `esq forget
//! --reapply --audit FILE…` re-creates each tombstone the table lacks,
//! with its receipt rebuilt from the record (Ed25519 is deterministic:
//! the same fields signed by the same key give the same signature), then
//! deletes the rows as any reapply does.
//!
//! Only a log whose chain verifies is read, and a sealed key must open
//! with esq's own key: whoever can edit the log cannot make esq delete
//! someone else's rows with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine as _;

use super::forget::ForgetError;
use super::receipt::Receipt;
use super::subject::SubjectKeys;
use super::Maintenance;
use crate::audit::record::hash_line;
use crate::audit::verify::verify_files;
use crate::signing::SigningKey;

/// The part of a forget's audit detail that re-creates its tombstone.
pub fn tombstone_detail(sealed: Option<&[u8]>, plain: Option<&str>) -> serde_json::Value {
    match (sealed, plain) {
        (Some(sealed), _) => serde_json::json!({
            "subject_sealed": base64::engine::general_purpose::STANDARD.encode(sealed)
        }),
        (None, Some(plain)) => serde_json::json!({ "subject_key": plain }),
        (None, None) => serde_json::Value::Null,
    }
}

/// One forget as its audit record tells it.
struct Recorded {
    receipt: Receipt,
    plain: Option<String>,
    sealed: Option<Vec<u8>>,
}

/// Re-creates the tombstones of `files`' forgets that `esq.tombstones`
/// lacks; how many, per dataset. The files' chain must verify: these
/// tombstones are kept, and `--reapply` deletes their rows.
pub async fn recover(
    maintenance: &Maintenance,
    files: &[PathBuf],
    keys: &SubjectKeys,
    signing: &SigningKey,
) -> Result<BTreeMap<String, usize>, ForgetError> {
    let bad = |message: String| ForgetError::BadInput {
        field: "audit",
        message,
    };
    if let Some(problem) = chain_problem(files).map_err(bad)? {
        return Err(bad(format!(
            "the audit log does not verify ({problem}): no tombstone is taken from it"
        )));
    }
    persist(maintenance, found(files, keys).map_err(bad)?, signing).await
}

/// Why `files` do not chain (`None`: they verify).
pub fn chain_problem(files: &[PathBuf]) -> Result<Option<String>, String> {
    let report = verify_files(files).map_err(|err| err.to_string())?;
    Ok(report.problem.map(|problem| {
        format!(
            "{} line {}: {}",
            problem.at.file.display(),
            problem.at.line,
            problem.what
        )
    }))
}

/// A forget whose key opens with esq's key and matches its hash.
pub struct Found {
    receipt: Receipt,
    plain: Option<String>,
    sealed: Option<Vec<u8>>,
    /// The key (opened when sealed).
    pub key: String,
}

impl Found {
    pub fn dataset(&self) -> &str {
        &self.receipt.dataset
    }
}

/// The forgets of `files` whose keys check out (a record that does not is
/// skipped with a warning: it cannot have come from this esq's forget).
pub fn found(files: &[PathBuf], keys: &SubjectKeys) -> Result<Vec<Found>, String> {
    checked(forgets(files)?, keys)
}

fn checked(recorded: Vec<Recorded>, keys: &SubjectKeys) -> Result<Vec<Found>, String> {
    let mut checked = Vec::new();
    for Recorded {
        receipt,
        plain,
        sealed,
    } in recorded
    {
        let key = match (&sealed, &plain) {
            (Some(sealed), _) => keys.open(&receipt.dataset, sealed).ok(),
            (None, plain) => plain.clone(),
        };
        match key {
            Some(key) if keys.hash(&receipt.dataset, &key) == receipt.subject_hash => {
                checked.push(Found {
                    receipt,
                    plain,
                    sealed,
                    key,
                })
            }
            _ => tracing::warn!(
                receipt = receipt.receipt_id,
                "a forget record's key does not match its subject hash under this esq's key: skipped"
            ),
        }
    }
    Ok(checked)
}

/// Inserts the tombstones `esq.tombstones` lacks, each with its receipt
/// signed again (the same signature: Ed25519 is deterministic).
pub async fn persist(
    maintenance: &Maintenance,
    found: Vec<Found>,
    signing: &SigningKey,
) -> Result<BTreeMap<String, usize>, ForgetError> {
    let mut recovered = BTreeMap::new();
    for Found {
        mut receipt,
        plain,
        sealed,
        ..
    } in found
    {
        receipt.sign(signing);
        let stored = serde_json::to_string(&receipt)
            .map_err(|err| ForgetError::NotSetUp(format!("serialising a receipt: {err}")))?;
        let inserted = maintenance
            .client
            .execute(
                "INSERT INTO esq.tombstones (dataset, subject_hash, subject_key, subject_sealed, receipt) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb) ON CONFLICT DO NOTHING",
                &[&receipt.dataset, &receipt.subject_hash, &plain, &sealed, &stored],
            )
            .await
            .map_err(|e| ForgetError::database("re-creating a tombstone", e))?;
        if inserted > 0 {
            *recovered.entry(receipt.dataset.clone()).or_insert(0) += 1;
        }
    }
    Ok(recovered)
}

/// The forgets `files` record (allowed, not rolled back afterwards).
fn forgets(files: &[PathBuf]) -> Result<Vec<Recorded>, String> {
    forgets_honouring(files, true)
}

/// As [`found`], for a log whose chain does not verify: a `rolled_back`
/// record there may be forged to un-hide someone, so every forget counts.
pub fn found_unverified(files: &[PathBuf], keys: &SubjectKeys) -> Result<Vec<Found>, String> {
    checked(forgets_honouring(files, false)?, keys)
}

fn forgets_honouring(files: &[PathBuf], rollbacks: bool) -> Result<Vec<Recorded>, String> {
    let mut found = Vec::new();
    let mut rolled_back = BTreeSet::new();
    for path in files {
        let bytes =
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if record["kind"] != "forget" {
                continue;
            }
            let detail = &record["detail"];
            if detail["action"] == "rolled_back" {
                if let Some(id) = detail["receipt_id"].as_str() {
                    rolled_back.insert(id.to_string());
                }
                continue;
            }
            if record["outcome"] != "allow" || detail["action"] != "forget" {
                continue;
            }
            if let Some(recorded) = recorded(&record, line) {
                found.push(recorded);
            }
        }
    }
    if rollbacks {
        found.retain(|r| !rolled_back.contains(&r.receipt.receipt_id));
    }
    Ok(found)
}

fn recorded(record: &serde_json::Value, line: &[u8]) -> Option<Recorded> {
    let detail = &record["detail"];
    let text = |value: &serde_json::Value| value.as_str().map(str::to_string);
    let sealed = match detail["subject_sealed"].as_str() {
        Some(encoded) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?,
        ),
        None => None,
    };
    let plain = text(&detail["subject_key"]);
    if sealed.is_none() && plain.is_none() {
        return None; // a forget recorded before tombstones were kept in the log
    }
    let receipt = Receipt {
        receipt_id: text(&detail["receipt_id"])?,
        dataset: text(&record["dataset"])?,
        subject_hash: text(&detail["subject_hash"])?,
        rows_deleted: serde_json::from_value(detail["rows_deleted"].clone()).ok()?,
        requested_by: text(&detail["requested_by"])?,
        reason: text(&detail["reason"])?,
        at: text(&detail["at"])?,
        audit_seq: record["seq"].as_u64()?,
        audit_hash: hash_line(line),
        key_id: String::new(),
        signature: String::new(),
        status: None,
    };
    Some(Recorded {
        receipt,
        plain,
        sealed,
    })
}
