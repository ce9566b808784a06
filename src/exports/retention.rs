//! Export retention: a bundle past its retention window is deleted from
//! `exports.dir` and its ledger entry marked purged (the entry itself
//! stays: it is the record that the export existed). Runs with every
//! retention purge (`esq purge`, and `esq serve`'s schedule).

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::audit::{AuditEvent, AuditKind};
use crate::config::Config;
use crate::lifecycle::{Maintenance, MaintenanceError};
use crate::metrics::{Door, Outcome};

/// What one round did.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Purged {
    /// Jobs whose bundles were deleted (or were already gone).
    pub bundles: Vec<String>,
    /// Jobs whose bundle could not be deleted (retried next round).
    pub failed: Vec<String>,
}

/// Deletes expired bundles (or, with `dry_run`, lists them).
pub async fn purge_expired(
    config: &Config,
    audit: &dyn crate::audit::AuditSink,
    dry_run: bool,
) -> Result<Purged, MaintenanceError> {
    let Some(dir) = config.exports.dir.as_deref() else {
        return Ok(Purged::default());
    };
    let maintenance = Maintenance::connect_current(config).await?;
    let client = &maintenance.client;
    let rows = client
        .query(
            "SELECT job, location FROM esq.export_ledger \
             WHERE purged_at IS NULL AND expires_at < now() ORDER BY expires_at",
            &[],
        )
        .await
        .map_err(MaintenanceError::database)?;
    let mut purged = Purged::default();
    for row in rows {
        let job: String = row.get(0);
        let location: String = row.get(1);
        if dry_run {
            purged.bundles.push(job);
            continue;
        }
        // The ledger names the file; only a plain name inside exports.dir
        // is ever deleted.
        let name = std::path::Path::new(&location)
            .file_name()
            .map(|n| n.to_owned());
        let deleted = match name {
            Some(name) => match std::fs::remove_file(dir.join(name)) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(err.to_string()),
            },
            None => Err(format!("the ledger's location {location:?} names no file")),
        };
        match deleted {
            Ok(()) => {
                mark_purged(client, &job).await?;
                audit.record(&AuditEvent {
                    dataset: None,
                    detail: Some(serde_json::json!({"action": "purged", "job": job})),
                    ..AuditEvent::event(AuditKind::Export, Door::process, "esq")
                });
                purged.bundles.push(job);
            }
            Err(err) => {
                tracing::warn!(job, %err, "an expired export bundle could not be deleted");
                audit.record(&AuditEvent {
                    outcome: Outcome::deny,
                    detail: Some(serde_json::json!({"action": "purge_failed", "job": job})),
                    ..AuditEvent::event(AuditKind::Export, Door::process, "esq")
                });
                purged.failed.push(job);
            }
        }
    }
    Ok(purged)
}

async fn mark_purged(client: &impl GenericClient, job: &str) -> Result<(), MaintenanceError> {
    client
        .execute(
            "UPDATE esq.export_ledger SET purged_at = now() WHERE job = $1",
            &[&job],
        )
        .await
        .map_err(MaintenanceError::database)?;
    Ok(())
}
