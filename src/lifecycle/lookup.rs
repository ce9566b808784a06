//! The subject lookup (DSAR): what esq knows of one subject — its keyed
//! hash, its tombstone with the receipt, and the exports (consent
//! ledger entries) that contained it. It reads schema `esq` as the maintenance role and
//! shows no key: the caller (a privacy officer) gave it.

use serde::Serialize;

use super::forget::{canonical_key, check_key, secrets, subject_dataset, ForgetError};
use super::receipt::Receipt;
use super::Maintenance;
use crate::app::App;

/// A tombstone as the subject lookup shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Tombstone {
    pub forgotten_at: String,
    pub receipt: Receipt,
}

/// The tombstone of (dataset, subject hash), if any.
pub async fn tombstone(
    client: &impl tokio_postgres::GenericClient,
    dataset: &str,
    subject_hash: &str,
) -> Result<Option<Tombstone>, ForgetError> {
    let row = client
        .query_opt(
            "SELECT receipt::text, \
                    to_char(forgotten_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM esq.tombstones WHERE dataset = $1 AND subject_hash = $2",
            &[&dataset, &subject_hash],
        )
        .await
        .map_err(|e| ForgetError::database("reading the tombstone", e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.get(0);
    let receipt = Receipt::parse(&text).map_err(|err| ForgetError::Database {
        what: "reading the tombstone".into(),
        detail: format!("its receipt is not a receipt: {err}"),
    })?;
    Ok(Some(Tombstone {
        forgotten_at: row.get(1),
        receipt,
    }))
}

/// What esq knows of one subject (DSAR): only its hash, its tombstone and
/// receipts, and the exports that held it.
#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub dataset: String,
    pub subject_hash: String,
    /// Whether esq hides the subject now: also when only its memory holds
    /// the tombstone (recovered from a log that did not verify).
    pub hidden: bool,
    pub tombstone: Option<Tombstone>,
    pub receipts: Vec<Receipt>,
    pub exports: Vec<crate::exports::ledger::Entry>,
}

/// Looks a subject up (the caller audits the lookup).
pub async fn lookup(app: &App, dataset: &str, subject: &str) -> Result<Subject, ForgetError> {
    check_key(subject)?;
    let bundle = app.bundle();
    let dataset = subject_dataset(&bundle.catalog, dataset)?;
    let (keys, _) = secrets(app)?;
    let maintenance = Maintenance::connect_current(&app.config)
        .await
        .map_err(ForgetError::Maintenance)?;
    let key = canonical_key(&maintenance.client, dataset, subject).await?;
    let subject_hash = keys.hash(&dataset.id, &key);
    let tombstone = tombstone(&maintenance.client, &dataset.id, &subject_hash).await?;
    let receipts = tombstone.iter().map(|t| t.receipt.clone()).collect();
    let exports = crate::exports::ledger::holding(&maintenance.client, &dataset.id, &subject_hash)
        .await
        .map_err(|err| ForgetError::Database {
            what: "reading the consent ledger".into(),
            detail: err.to_string(),
        })?;
    let hidden = tombstone.is_some() || app.tombstones.keys(&dataset.id).contains(&key);
    Ok(Subject {
        dataset: dataset.id.clone(),
        subject_hash,
        hidden,
        tombstone,
        receipts,
        exports,
    })
}
