//! Inside `esq serve`: keeps the tombstones current and looks for the
//! rows they hide. Every `lifecycle.tombstone_check` it reads
//! `esq.tombstones` (forgets made by other replicas), and every sixth time
//! it counts the rows of forgotten subjects still in the database — a restored backup brings
//! them back — and reports them as `esq_tombstoned_rows_present` and a
//! warning: they reach no one (the guard hides them), and `esq forget
//! --reapply` deletes them. Until the first read succeeds it retries every
//! few seconds, and datasets with subjects are refused meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::dataset as labels;
use super::tombstones::{any_of, load};
use super::{recover, Maintenance, MaintenanceError};
use crate::app::App;

/// Retry delay while the tombstones have never been read.
const FIRST_READ_RETRY: Duration = Duration::from_secs(2);
/// Rows of forgotten subjects are counted every this many checks (the
/// count scans the governed tables; re-reading tombstones is cheap).
const COUNT_EVERY: u64 = 6;

/// Runs until shutdown (does nothing without `[maintenance]`).
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    if app.config.maintenance.is_none() {
        return;
    }
    let mut warned_unreadable = false;
    let mut recovered = false;
    let mut round: u64 = 0;
    loop {
        if !recovered {
            recovered = recover_from_logs(&app).await;
            if !recovered {
                // Not a first read before the logs' forgets are known.
                tokio::select! {
                    _ = tokio::time::sleep(FIRST_READ_RETRY) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        }
        let count_present = round.is_multiple_of(COUNT_EVERY);
        round += 1;
        let wait = match check(&app, count_present).await {
            Ok(()) => app.config.lifecycle.tombstone_check,
            Err(err) => {
                if !app.tombstones.is_read() || !warned_unreadable {
                    tracing::error!(%err, "cannot read right-to-delete tombstones; datasets with subjects are refused until esq can");
                    warned_unreadable = true;
                }
                if app.tombstones.is_read() {
                    app.config.lifecycle.tombstone_check
                } else {
                    FIRST_READ_RETRY
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Before the first read: re-creates from this esq's audit log (and the
/// logs `lifecycle.recover_from` names, e.g. the CLI's) the tombstones of
/// forgets that `esq.tombstones` lacks (schema `esq` restored from a
/// backup), so a restart after such a restore still hides everyone it
/// forgot. A log whose chain does not verify still hides its forgets —
/// in memory only, a tampered log can make esq hide more, never less —
/// but re-creates nothing. `false`: try again (datasets with subjects
/// stay refused meanwhile).
async fn recover_from_logs(app: &App) -> bool {
    let (Some(keys), Some(signing)) = (&app.subject_keys, &app.signing) else {
        return true;
    };
    let mut bases = app.config.lifecycle.recover_from.clone();
    if app.config.audit.enabled {
        bases.push(app.config.audit.path.clone());
    }
    // Each log is its own chain: checked, and trusted, one by one.
    let mut trusted = Vec::new();
    for base in &bases {
        let files: Vec<std::path::PathBuf> = match crate::audit::files::existing(base) {
            Ok(found) => found.into_iter().map(|(_, path)| path).collect(),
            Err(err) => {
                tracing::error!(log = %base.display(), %err, "cannot list an audit log to recover tombstones from; datasets with subjects stay refused");
                return false;
            }
        };
        if files.is_empty() {
            if base == &app.config.audit.path {
                continue;
            }
            // No file yet in an existing directory: nothing recorded there
            // yet (the CLI has not run). A directory that is not there is
            // a wrong path, not "nothing to recover".
            let dir_exists = base
                .parent()
                .is_none_or(|dir| dir.as_os_str().is_empty() || dir.is_dir());
            if dir_exists {
                tracing::warn!(log = %base.display(), "lifecycle.recover_from names a log that does not exist yet: no forget recorded there");
                continue;
            }
            tracing::error!(log = %base.display(), "lifecycle.recover_from names a log in a directory that does not exist; datasets with subjects stay refused until the path is right");
            return false;
        }
        let (found, problem) = match recover::chain_problem(&files).and_then(|problem| {
            let found = match problem {
                None => recover::found(&files, keys)?,
                Some(_) => recover::found_unverified(&files, keys)?,
            };
            Ok((found, problem))
        }) {
            Ok(read) => read,
            Err(err) => {
                tracing::error!(log = %base.display(), %err, "cannot read an audit log to recover tombstones; datasets with subjects stay refused");
                return false;
            }
        };
        match problem {
            None => trusted.extend(found),
            Some(problem) => {
                tracing::error!(
                    log = %base.display(),
                    problem,
                    forgets = found.len(),
                    "an audit log does not verify: the forgets it records are hidden (in memory) but no tombstone is re-created from it; check it with `esq audit verify`"
                );
                for forget in &found {
                    app.tombstones.add(forget.dataset(), &forget.key);
                }
                app.lifecycle_metrics.recovery_unverified.set(1);
            }
        }
    }
    let found = trusted;
    let Ok(maintenance) = Maintenance::connect_current(&app.config).await else {
        return false; // the first read reports why
    };
    match recover::persist(&maintenance, found, signing).await {
        Ok(recovered) if recovered.is_empty() => true,
        Ok(recovered) => {
            tracing::warn!(?recovered, "re-created tombstones missing from esq.tombstones from the audit log (schema esq was restored from a backup?); run `esq forget --reapply` to delete their rows");
            true
        }
        Err(err) => {
            tracing::error!(%err, "cannot re-create tombstones from the audit log");
            false
        }
    }
}

/// One round: read the tombstones, then (with `count_present`) count the
/// rows they hide.
pub async fn check(app: &App, count_present: bool) -> Result<(), MaintenanceError> {
    let keys = app.subject_keys.as_ref().ok_or_else(|| {
        MaintenanceError::Config(crate::lifecycle::subject::SubjectKeyError::Missing.to_string())
    })?;
    let maintenance = Maintenance::connect(&app.config).await?;
    maintenance.require_current_schema().await?;
    let loaded = load(&maintenance.client, keys).await?;
    for (dataset, held) in app.tombstones.counts() {
        let stored = loaded.keys.get(&dataset).map_or(0, |k| k.len());
        if stored < held {
            tracing::warn!(
                dataset,
                missing = held - stored,
                "tombstones esq holds are missing from esq.tombstones (schema esq restored from a backup?): esq still hides those subjects; run `esq forget --reapply --audit <audit log files>` to re-create them"
            );
        }
    }
    app.tombstones.merge(loaded);
    for (dataset, count) in app.tombstones.counts() {
        app.lifecycle_metrics
            .tombstones
            .get_or_create(&labels(&dataset))
            .set(count as i64);
    }
    if !count_present {
        return Ok(());
    }
    for (dataset, present) in present_rows(app, &maintenance).await? {
        app.lifecycle_metrics
            .tombstoned_rows_present
            .get_or_create(&labels(&dataset))
            // 1 or 0, not the count: /metrics is unauthenticated, and with
            // one tombstone the count would be that person's rows.
            .set(i64::from(present > 0));
        if present > 0 {
            tracing::warn!(
                dataset,
                rows = present,
                "rows of forgotten subjects are back in the database (a restored backup?): they are hidden from every answer; run `esq forget --reapply` to delete them"
            );
        }
    }
    Ok(())
}

/// Rows of forgotten subjects per governed dataset (its own subjects and
/// those of the datasets linking to it).
pub async fn present_rows(
    app: &App,
    maintenance: &Maintenance,
) -> Result<BTreeMap<String, i64>, MaintenanceError> {
    let bundle = app.bundle();
    let mut present = BTreeMap::new();
    for dataset in bundle.catalog.datasets() {
        let mut conditions = Vec::new();
        for (subject, field) in bundle.catalog.subject_fields(dataset) {
            let keys = app.tombstones.keys(&subject.id);
            if !keys.is_empty() {
                conditions.push(any_of(field, &keys));
            }
        }
        if conditions.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {}",
            dataset.table.quoted(),
            conditions.join(" OR ")
        );
        let row = maintenance
            .client
            .query_one(&sql, &[])
            .await
            .map_err(MaintenanceError::database)?;
        present.insert(dataset.id.clone(), row.get::<_, i64>(0));
    }
    Ok(present)
}
