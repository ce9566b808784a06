//! `esq forget --reapply`: deletes again the rows of every forgotten
//! subject — what a restored backup brings back. The guard already hides
//! them from every answer (see [`super::tombstones`]); this makes the
//! database agree again.
//!
//! Tombstones are read from `esq.tombstones` (sealed keys opened with
//! esq's key), and each subject dataset's rows, and the rows of the
//! datasets linked to it, are deleted in short batches, each its own
//! transaction (`lifecycle.purge_batch_rows`, with
//! `lifecycle.purge_batch_pause` between them), so a large restore never
//! holds locks for long. One audit record says what was deleted, also
//! when a batch failed half-way (rows deleted before stay deleted: they
//! were forgotten already).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::forget::{subject_dataset, Caller, ForgetError};
use super::tombstones::{any_of, load};
use super::{Maintenance, MaintenanceError};
use crate::app::App;
use crate::audit::{fingerprint, record_durably, AuditEvent, AuditKind};
use crate::metrics::Outcome;

/// Keys in one `DELETE` condition at most.
const KEYS_PER_STATEMENT: usize = 1000;

/// What a reapply did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reapplied {
    /// Tombstones applied, per subject dataset.
    pub subjects: BTreeMap<String, usize>,
    /// Rows deleted, per dataset.
    pub rows_deleted: BTreeMap<String, u64>,
    pub batches: u64,
    /// Subject datasets with tombstones this esq's key cannot open: their
    /// rows could not be found (the guard refuses those datasets).
    pub unreadable: Vec<String>,
    /// Tombstones of datasets no longer in the catalog (left alone).
    pub not_in_catalog: Vec<String>,
    /// Tombstones re-created from the audit log (`--audit`), per dataset.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub recovered: BTreeMap<String, usize>,
    /// The audit record of this run.
    pub audit_seq: Option<u64>,
}

/// Reapplies every tombstone (of `only`'s subjects when given), after
/// re-creating from `audit` (audit log files, may be empty) the
/// tombstones `esq.tombstones` lacks (see [`super::recover`]).
pub async fn reapply(
    app: &App,
    caller: Caller<'_>,
    only: Option<&str>,
    audit: &[std::path::PathBuf],
) -> Result<Reapplied, ForgetError> {
    let bundle = app.bundle();
    if let Some(id) = only {
        subject_dataset(&bundle.catalog, id)?;
    }
    let keys = app.subject_keys.as_deref().ok_or_else(|| {
        ForgetError::NotSetUp(super::subject::SubjectKeyError::Missing.to_string())
    })?;
    let maintenance = Maintenance::connect_current(&app.config)
        .await
        .map_err(ForgetError::Maintenance)?;
    let recovered = if audit.is_empty() {
        BTreeMap::new()
    } else {
        let signing = app.signing.as_deref().ok_or_else(|| {
            ForgetError::NotSetUp(
                "re-creating tombstones signs their receipts again: set [signing] key_file".into(),
            )
        })?;
        super::recover::recover(&maintenance, audit, keys, signing).await?
    };
    let loaded = load(&maintenance.client, keys)
        .await
        .map_err(|err| match err {
            MaintenanceError::Database(detail) => ForgetError::Database {
                what: "reading the tombstones".into(),
                detail,
            },
            other => ForgetError::Maintenance(other),
        })?;
    let wanted = |dataset: &String| only.is_none_or(|id| id == dataset);
    let mut report = Reapplied {
        recovered,
        unreadable: loaded
            .unreadable
            .iter()
            .filter(|d| wanted(d))
            .cloned()
            .collect(),
        ..Reapplied::default()
    };
    let tombstoned: BTreeMap<String, BTreeSet<String>> = loaded
        .keys
        .iter()
        .filter(|(dataset, _)| wanted(dataset))
        .map(|(dataset, keys)| (dataset.clone(), keys.clone()))
        .collect();
    app.tombstones.merge(loaded);
    let result = delete_all(app, &maintenance, &tombstoned, &mut report).await;
    let detail = serde_json::json!({
        "action": "reapply",
        "recovered": report.recovered,
        "subjects": report.subjects,
        "rows_deleted": report.rows_deleted,
        "batches": report.batches,
        "unreadable": report.unreadable,
        "error": result.as_ref().err().map(ForgetError::category),
    });
    let event = AuditEvent {
        roles: caller.roles,
        client: caller.client,
        dataset: only,
        outcome: if result.is_ok() {
            Outcome::allow
        } else {
            Outcome::deny
        },
        rows: Some(report.rows_deleted.values().sum()),
        fingerprint: fingerprint("forget --reapply"),
        detail: Some(detail),
        ..AuditEvent::event(AuditKind::Forget, caller.door, caller.user)
    };
    let recorded = record_durably(&*app.audit, &event).await;
    result?;
    report.audit_seq = Some(recorded.map_err(ForgetError::Audit)?);
    Ok(report)
}

async fn delete_all(
    app: &App,
    maintenance: &Maintenance,
    tombstoned: &BTreeMap<String, BTreeSet<String>>,
    report: &mut Reapplied,
) -> Result<(), ForgetError> {
    let bundle = app.bundle();
    let batch = i64::from(app.config.lifecycle.purge_batch_rows.max(1));
    let pause = app.config.lifecycle.purge_batch_pause;
    for (subject, keys) in tombstoned {
        let Some(dataset) = bundle.catalog.dataset(subject) else {
            tracing::warn!(
                dataset = subject,
                "tombstones of a dataset no longer in the catalog are left alone"
            );
            report.not_in_catalog.push(subject.clone());
            continue;
        };
        report.subjects.insert(subject.clone(), keys.len());
        let mut targets: Vec<(String, String, String)> = Vec::new();
        for link in &dataset.links {
            if let Some(linked) = bundle.catalog.dataset(&link.dataset) {
                targets.push((linked.id.clone(), linked.table.quoted(), link.field.clone()));
            }
        }
        if let Some(field) = &dataset.subject_key {
            targets.push((dataset.id.clone(), dataset.table.quoted(), field.clone()));
        }
        let keys: Vec<&String> = keys.iter().collect();
        for (id, table, field) in &targets {
            for chunk in keys.chunks(KEYS_PER_STATEMENT) {
                let sql = format!(
                    "DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {} LIMIT $1))",
                    any_of(field, chunk.iter().copied())
                );
                loop {
                    let deleted = maintenance
                        .client
                        .execute(&sql, &[&batch])
                        .await
                        .map_err(|e| ForgetError::database(&format!("deleting from {table}"), e))?;
                    report.batches += 1;
                    *report.rows_deleted.entry(id.clone()).or_insert(0) += deleted;
                    if i64::try_from(deleted).unwrap_or(i64::MAX) < batch {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    Ok(())
}
