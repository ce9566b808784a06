//! Inside `esq serve`: runs the retention purge of every dataset on
//! `[lifecycle] purge_schedule` (daily at a UTC time, every so long, or
//! off), so rows past retention are deleted without an operator's cron.
//! Replicas may all run it: each dataset's purge lock lets one through and
//! the others skip. A failed round is logged, audited and counted
//! (`esq_purge_failures`); serving carries on and the next round resumes.

use std::sync::Arc;

use tokio::sync::watch;

use super::metrics::dataset as labels;
use super::purge::{self, Options, Status, Trigger};
use crate::app::App;

/// Runs until shutdown (nothing without `[maintenance]` or when `off`).
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    if app.config.maintenance.is_none() {
        return;
    }
    let schedule = app.config.lifecycle.purge_schedule;
    loop {
        let Some(wait) = schedule.next_after(chrono::Utc::now()) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        round(&app, &shutdown).await;
        if *shutdown.borrow() {
            return;
        }
    }
}

/// One scheduled purge of every dataset with a retention.
pub async fn round(app: &App, shutdown: &watch::Receiver<bool>) {
    if app.config.exports.enabled() {
        match crate::exports::retention::purge_expired(&app.config, &*app.audit, false).await {
            Ok(purged) if !purged.bundles.is_empty() => {
                tracing::info!(
                    bundles = purged.bundles.len(),
                    "expired export bundles deleted"
                )
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%err, "expired export bundles were not purged (the next round retries)")
            }
        }
    }
    let options = Options::new(app, false, Trigger::Schedule);
    match purge::run(app, None, options, shutdown).await {
        Ok(reports) => {
            for report in reports {
                match report.status {
                    Status::Finished => tracing::info!(
                        dataset = report.dataset,
                        rows = report.rows_deleted,
                        batches = report.batches,
                        cutoff = report.cutoff,
                        "scheduled purge finished"
                    ),
                    Status::Skipped => tracing::info!(
                        dataset = report.dataset,
                        "scheduled purge skipped: another esq is purging this dataset"
                    ),
                    Status::Failed => tracing::warn!(
                        dataset = report.dataset,
                        rows = report.rows_deleted,
                        error = report.error.as_deref().unwrap_or(""),
                        "scheduled purge failed (the next round resumes)"
                    ),
                }
            }
        }
        Err(err) => {
            // Nothing ran: count a failure for every dataset it would purge.
            tracing::warn!(%err, "scheduled purge could not start (the next round retries)");
            if let Ok(targets) = purge::plan(&app.bundle().catalog, None) {
                for target in targets {
                    app.lifecycle_metrics
                        .purge_failures
                        .get_or_create(&labels(&target.dataset))
                        .inc();
                }
            }
        }
    }
}
