//! Right-to-delete (DESIGN 3.8): one subject's rows, in its dataset and in
//! every dataset linked to it, deleted in one transaction as the
//! maintenance role, with a tombstone that hides the subject from every
//! answer from then on and a signed receipt that proves it.
//!
//! The order inside the transaction is what makes the receipt worth
//! something: the rows are deleted, the audit record of the forget is
//! written durably (so the receipt can cite its `seq` and line hash), the
//! receipt is signed and stored in the tombstone, and only then does the
//! transaction commit. Anything failing before the commit leaves nothing
//! behind — no rows deleted, no tombstone, no receipt — and a commit that
//! fails after the audit record gets a second record saying so. A subject
//! is forgotten once: an advisory lock on (dataset, subject hash) makes a
//! second forget wait for the first, then hand back its receipt with
//! `"status":"already_forgotten"`.
//!
//! Keys are compared as PostgreSQL sees them: the key is cast to the
//! column's type and back to text, so ` 042` and `42` are one subject of
//! a `bigint` key, and the tombstone keeps the canonical text.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;
use tokio_postgres::Client;

use super::metrics::ForgetLabels;
use super::receipt::{self, Receipt, ALREADY_FORGOTTEN, FORGOTTEN};
use super::tombstones::any_of;
use super::{Maintenance, MaintenanceError, SubjectKeys};
use crate::app::App;
use crate::audit::{fingerprint, record_durably, AuditError, AuditEvent, AuditKind};
use crate::catalog::{Dataset, TableName};
use crate::metrics::{Door, Outcome};
use crate::signing::SigningKey;

/// Longest reason or requester kept (characters).
const MAX_TEXT: usize = 2000;
/// Longest subject key accepted (characters).
const MAX_KEY: usize = 512;

/// What to forget, as the CLI and the HTTP door receive it.
#[derive(Debug, Clone)]
pub struct Request {
    pub dataset: String,
    pub subject: String,
    pub reason: String,
    pub requested_by: String,
}

/// Who asks, for the audit record.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user: &'a str,
    pub roles: &'a [String],
    pub door: Door,
    pub client: Option<SocketAddr>,
}

/// Why nothing was forgotten. Messages are for the operator (CLI, log);
/// the HTTP door shows only [`ForgetError::BadInput`]'s.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// The request itself is wrong; the message quotes no value.
    #[error("{field}: {message}")]
    BadInput {
        field: &'static str,
        message: String,
    },
    /// No maintenance role, it cannot connect, or schema `esq` is old.
    #[error(transparent)]
    Maintenance(MaintenanceError),
    /// esq has no key to name subjects or sign receipts.
    #[error("{0}")]
    NotSetUp(String),
    /// The maintenance role lacks a privilege (SQLSTATE 42501).
    #[error("the maintenance role may not {what}: {detail} (see docs/lifecycle.md for its grants); nothing was deleted")]
    Privilege { what: String, detail: String },
    #[error("the database failed while {what}: {detail}; nothing was deleted")]
    Database { what: String, detail: String },
    #[error("the audit log cannot record the forget ({0}); nothing was deleted")]
    Audit(AuditError),
    /// The audit record was written, then the transaction did not commit.
    #[error("the forget was rolled back after its audit record {audit_seq} ({detail}); nothing was deleted")]
    RolledBack { audit_seq: u64, detail: String },
}

impl ForgetError {
    /// A word for the audit record and the metrics (no values).
    pub fn category(&self) -> &'static str {
        match self {
            ForgetError::BadInput { .. } => "bad_input",
            ForgetError::Maintenance(MaintenanceError::NotMigrated { .. }) => "not_migrated",
            ForgetError::Maintenance(_) => "maintenance_unavailable",
            ForgetError::NotSetUp(_) => "not_set_up",
            ForgetError::Privilege { .. } => "privilege",
            ForgetError::Database { .. } => "database",
            ForgetError::Audit(_) => "audit",
            ForgetError::RolledBack { .. } => "rolled_back",
        }
    }

    fn bad(field: &'static str, message: impl Into<String>) -> ForgetError {
        ForgetError::BadInput {
            field,
            message: message.into(),
        }
    }

    /// A database error while doing `what`: a missing privilege, or else.
    pub(super) fn database(what: &str, err: tokio_postgres::Error) -> ForgetError {
        let privilege = MaintenanceError::code(&err) == Some("42501");
        let detail = MaintenanceError::database(err).to_string();
        if privilege {
            ForgetError::Privilege {
                what: what.to_string(),
                detail,
            }
        } else {
            ForgetError::Database {
                what: what.to_string(),
                detail,
            }
        }
    }
}

/// What a forget hands back: the receipt, with its `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Forgotten {
    #[serde(flatten)]
    pub receipt: Receipt,
    /// Canonical key, for [`super::Tombstones::add`] only (never shown).
    #[serde(skip)]
    key: String,
}

impl Forgotten {
    pub fn already(&self) -> bool {
        self.receipt.status.as_deref() == Some(ALREADY_FORGOTTEN)
    }
}

/// Forgets `request`'s subject (see the module doc); audits the outcome.
pub async fn forget(
    app: &App,
    caller: Caller<'_>,
    request: &Request,
) -> Result<Forgotten, ForgetError> {
    let result = run(app, caller, request).await;
    let outcome = match &result {
        Ok(done) if done.already() => ALREADY_FORGOTTEN,
        Ok(_) => FORGOTTEN,
        Err(ForgetError::BadInput { .. }) => "bad_input",
        Err(_) => "failed",
    };
    app.lifecycle_metrics
        .forgets
        .get_or_create(&ForgetLabels {
            outcome: outcome.to_string(),
        })
        .inc();
    match &result {
        Ok(done) => {
            app.tombstones.add(&request.dataset, &done.key);
            if done.already() {
                let detail = serde_json::json!({
                    "action": "forget",
                    "status": ALREADY_FORGOTTEN,
                    "receipt_id": done.receipt.receipt_id,
                    "subject_hash": done.receipt.subject_hash,
                });
                audit_other(app, caller, Some(&request.dataset), Outcome::allow, detail).await;
            }
        }
        Err(err @ (ForgetError::Audit(_) | ForgetError::RolledBack { .. })) => {
            tracing::error!(dataset = request.dataset, %err, "right-to-delete failed");
        }
        Err(err) => {
            tracing::warn!(dataset = request.dataset, %err, "right-to-delete refused");
            let detail = serde_json::json!({"action": "forget", "error": err.category()});
            audit_other(app, caller, Some(&request.dataset), Outcome::deny, detail).await;
        }
    }
    result
}

/// Records a forget's other outcomes (best effort: the caller sees the
/// outcome either way, and a failing log is logged).
pub async fn audit_other(
    app: &App,
    caller: Caller<'_>,
    dataset: Option<&str>,
    outcome: Outcome,
    detail: serde_json::Value,
) {
    let lookup = detail["action"] == "subject_lookup";
    let mut event = AuditEvent {
        dataset,
        outcome,
        detail: Some(detail),
        ..event(caller, dataset.unwrap_or(""))
    };
    if lookup {
        event.kind = AuditKind::SubjectLookup;
    }
    if let Err(err) = record_durably(&*app.audit, &event).await {
        tracing::error!(%err, "a right-to-delete event could not be audited");
    }
}

fn event<'a>(caller: Caller<'a>, dataset: &str) -> AuditEvent<'a> {
    AuditEvent {
        roles: caller.roles,
        client: caller.client,
        fingerprint: fingerprint(&format!("forget {dataset}")),
        ..AuditEvent::event(AuditKind::Forget, caller.door, caller.user)
    }
}

async fn run(app: &App, caller: Caller<'_>, request: &Request) -> Result<Forgotten, ForgetError> {
    let reason = text("reason", &request.reason)?;
    let requested_by = text("requested_by", &request.requested_by)?;
    check_key(&request.subject)?;
    let bundle = app.bundle();
    let dataset = subject_dataset(&bundle.catalog, &request.dataset)?;
    let (keys, signing) = secrets(app)?;
    let mut maintenance = Maintenance::connect_current(&app.config)
        .await
        .map_err(ForgetError::Maintenance)?;
    let key = canonical_key(&maintenance.client, dataset, &request.subject).await?;
    let subject_hash = keys.hash(&dataset.id, &key);
    let targets = targets(&bundle.catalog, dataset)?;

    let tx = maintenance
        .client
        .transaction()
        .await
        .map_err(|e| ForgetError::database("starting a transaction", e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(&dataset.id, &subject_hash)],
    )
    .await
    .map_err(|e| ForgetError::database("taking the subject's lock", e))?;
    if let Some(mut stored) = stored_receipt(&tx, &dataset.id, &subject_hash).await? {
        stored.status = Some(ALREADY_FORGOTTEN.into());
        return Ok(Forgotten {
            receipt: stored,
            key,
        });
    }
    let mut rows_deleted = BTreeMap::new();
    for (id, table, field) in &targets {
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            table.quoted(),
            any_of(field, [&key])
        );
        let deleted = tx
            .execute(&sql, &[])
            .await
            .map_err(|e| ForgetError::database(&format!("deleting from {table}"), e))?;
        *rows_deleted.entry(id.clone()).or_insert(0) += deleted;
    }
    // Exports already delivered still hold the subject: the consent
    // ledger says so (the subject lookup lists them).
    let exports = crate::exports::ledger::mark_forgotten(&tx, &dataset.id, &subject_hash)
        .await
        .map_err(|e| ForgetError::database("marking the exports that held the subject", e))?;

    let receipt_id = receipt::new_id()
        .map_err(|err| ForgetError::NotSetUp(format!("no randomness for a receipt id: {err}")))?;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // What the tombstone keeps of the key, also in the audit record, so a
    // restore of schema esq cannot lose the tombstone (see [`super::recover`]).
    let pii = dataset
        .subject_key
        .as_deref()
        .and_then(|field| dataset.field(field))
        .is_none_or(|field| field.pii);
    let (plain, sealed) = if pii {
        (None, Some(keys.seal(&dataset.id, &key)))
    } else {
        (Some(key.as_str()), None)
    };
    let mut detail = serde_json::json!({
        "action": "forget",
        "receipt_id": receipt_id,
        "subject_hash": subject_hash,
        "rows_deleted": rows_deleted,
        "requested_by": requested_by,
        "reason": reason,
        "at": at,
        "exports_holding": exports,
    });
    if let (Some(detail), serde_json::Value::Object(kept)) = (
        detail.as_object_mut(),
        super::recover::tombstone_detail(sealed.as_deref(), plain),
    ) {
        detail.extend(kept);
    }
    let audited = AuditEvent {
        dataset: Some(&dataset.id),
        rows: Some(rows_deleted.values().sum()),
        detail: Some(detail),
        ..event(caller, &dataset.id)
    };
    let (audit_seq, audit_hash) = app
        .audit
        .record_cited(&audited)
        .await
        .map_err(ForgetError::Audit)?;
    let mut receipt = Receipt {
        receipt_id,
        dataset: dataset.id.clone(),
        subject_hash,
        rows_deleted,
        requested_by,
        reason,
        at,
        audit_seq,
        audit_hash,
        key_id: String::new(),
        signature: String::new(),
        status: None,
    };
    receipt.sign(signing);

    let committed = async {
        let stored = serde_json::to_string(&receipt)
            .map_err(|err| format!("serialising the receipt: {err}"))?;
        tx.execute(
            "INSERT INTO esq.tombstones (dataset, subject_hash, subject_key, subject_sealed, receipt) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb)",
            &[&dataset.id, &receipt.subject_hash, &plain, &sealed, &stored],
        )
        .await
        .map_err(|e| ForgetError::database("writing the tombstone", e).to_string())?;
        tx.commit()
            .await
            .map_err(|e| ForgetError::database("committing", e).to_string())
    }
    .await;
    if let Err(detail) = committed {
        let rolled_back = serde_json::json!({
            "action": "rolled_back",
            "receipt_id": receipt.receipt_id,
            "subject_hash": receipt.subject_hash,
            "audit_seq": audit_seq,
        });
        audit_other(app, caller, Some(&dataset.id), Outcome::deny, rolled_back).await;
        return Err(ForgetError::RolledBack { audit_seq, detail });
    }
    receipt.status = Some(FORGOTTEN.into());
    Ok(Forgotten { receipt, key })
}

/// A reason or requester: trimmed, not empty, no control characters.
fn text(field: &'static str, value: &str) -> Result<String, ForgetError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_TEXT {
        return Err(ForgetError::bad(
            field,
            format!("required: 1 to {MAX_TEXT} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() || misleads(c)) {
        return Err(ForgetError::bad(
            field,
            "must not contain control or text-direction characters",
        ));
    }
    Ok(value.to_string())
}

/// Characters that make a receipt read differently from what is signed:
/// text-direction controls (`evil` shown as `live`), invisible format
/// characters (zero-width space, soft hyphen, byte-order mark, tags) and
/// line or paragraph separators (a second, fake line), and private-use
/// characters (anything a font may draw).
pub(crate) fn misleads(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
            | '\u{061C}'
            | '\u{0600}'..='\u{0605}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
            | '\u{E000}'..='\u{F8FF}'
            | '\u{F0000}'..='\u{10FFFF}'
    )
}

/// A subject key as given: not empty, no control characters.
pub(super) fn check_key(key: &str) -> Result<(), ForgetError> {
    if key.is_empty() || key.chars().count() > MAX_KEY {
        return Err(ForgetError::bad(
            "subject",
            format!("required: the subject's key, 1 to {MAX_KEY} characters"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(ForgetError::bad(
            "subject",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The dataset, which must hold subjects (a `subject_key`).
pub fn subject_dataset<'c>(
    catalog: &'c crate::catalog::Catalog,
    id: &str,
) -> Result<&'c Dataset, ForgetError> {
    let dataset = catalog
        .dataset(id)
        .ok_or_else(|| ForgetError::bad("dataset", "no such dataset in the catalog"))?;
    if dataset.subject_key.is_none() {
        return Err(ForgetError::bad(
            "dataset",
            "this dataset has no subject_key: it holds no subjects to forget",
        ));
    }
    Ok(dataset)
}

/// The subject-hash key and the signing key: without them nothing can be
/// forgotten (no tombstone name, no receipt).
pub(super) fn secrets(app: &App) -> Result<(&SubjectKeys, &SigningKey), ForgetError> {
    let keys = app.subject_keys.as_deref().ok_or_else(|| {
        ForgetError::NotSetUp(super::subject::SubjectKeyError::Missing.to_string())
    })?;
    let signing = app.signing.as_deref().ok_or_else(|| {
        ForgetError::NotSetUp(
            "right-to-delete signs its receipts: set [signing] key_file (esq keys generate)".into(),
        )
    })?;
    Ok((keys, signing))
}

/// Where the subject's rows are: linked datasets first (their rows may
/// refer to the subject's), then the subject's own.
fn targets(
    catalog: &crate::catalog::Catalog,
    dataset: &Dataset,
) -> Result<Vec<(String, TableName, String)>, ForgetError> {
    let mut targets = Vec::new();
    for link in &dataset.links {
        let linked = catalog.dataset(&link.dataset).ok_or_else(|| {
            ForgetError::NotSetUp(format!(
                "dataset {} links {}, which is not in the catalog",
                dataset.id, link.dataset
            ))
        })?;
        targets.push((linked.id.clone(), linked.table.clone(), link.field.clone()));
    }
    if let Some(key) = &dataset.subject_key {
        targets.push((dataset.id.clone(), dataset.table.clone(), key.clone()));
    }
    Ok(targets)
}

/// The key as PostgreSQL reads it for the subject key's column: cast to
/// the column's type (without a length limit, which would truncate) and
/// back to text. A key the type refuses is bad input.
pub async fn canonical_key(
    client: &Client,
    dataset: &Dataset,
    key: &str,
) -> Result<String, ForgetError> {
    check_key(key)?;
    let field = dataset.subject_key.as_deref().unwrap_or_default();
    let table = dataset.table.quoted();
    let row = client
        .query_opt(
            "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table, &field],
        )
        .await
        .map_err(|e| ForgetError::database("reading the subject key's type", e))?;
    let Some(row) = row else {
        return Err(ForgetError::Database {
            what: "reading the subject key's type".into(),
            detail: format!("{table} has no column {field:?}"),
        });
    };
    let type_name: String = row.get(0);
    let cast = format!("SELECT $1::text::{type_name}::text");
    match client.query_one(&cast, &[&key]).await {
        Ok(row) => {
            let canonical: Option<String> = row.get(0);
            canonical
                .filter(|k| !k.is_empty() && !k.chars().any(char::is_control))
                .ok_or_else(|| ForgetError::bad("subject", "not a valid key of this dataset"))
        }
        Err(err) if MaintenanceError::code(&err).is_some_and(|c| c.starts_with("22")) => {
            tracing::info!(
                dataset = dataset.id,
                type_name,
                "a subject key its column's type refuses"
            );
            Err(ForgetError::bad(
                "subject",
                format!("not a valid key of this dataset (its subject key is of type {type_name})"),
            ))
        }
        Err(err) => Err(ForgetError::database("reading the subject key", err)),
    }
}

/// The receipt kept in the subject's tombstone, if it has one.
async fn stored_receipt(
    client: &impl tokio_postgres::GenericClient,
    dataset: &str,
    subject_hash: &str,
) -> Result<Option<Receipt>, ForgetError> {
    Ok(super::lookup::tombstone(client, dataset, subject_hash)
        .await?
        .map(|found| found.receipt))
}

/// The advisory lock of one subject's forget (every esq computes the same).
fn lock_key(dataset: &str, subject_hash: &str) -> i64 {
    super::lock_key(&format!("esq forget\0{dataset}\0{subject_hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_keys_are_checked_without_echoing_them() {
        assert_eq!(text("reason", "  GDPR  ").unwrap(), "GDPR");
        for bad in [
            "",
            "   ",
            "a\nb",
            "a\u{0}b",
            "\u{202E} evil",
            "a\u{3164}b",
            "a\u{E0100}b",
            "ok\u{2028}status: revoked",
            "a\u{200B}b",
            "\u{FEFF}x",
            "soft\u{00AD}hyphen",
            "tag\u{E0041}",
        ] {
            let err = text("reason", bad).unwrap_err().to_string();
            assert!(err.starts_with("reason: "), "{err}");
        }
        assert!(check_key("42").is_ok());
        assert!(check_key("").is_err());
        let err = check_key("4\u{7}2").unwrap_err().to_string();
        assert!(!err.contains('\u{7}'), "{err}");
        assert!(check_key(&"9".repeat(MAX_KEY + 1)).is_err());
    }

    #[test]
    fn lock_keys_name_one_subject_of_one_dataset() {
        assert_eq!(lock_key("d", "h"), lock_key("d", "h"));
        assert_ne!(lock_key("d", "h"), lock_key("d", "g"));
        assert_ne!(lock_key("d", "h"), lock_key("e", "h"));
    }
}
