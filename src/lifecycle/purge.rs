//! Retention purge: deletes the rows the guard already hides because they
//! are past their dataset's `retention_years` (by `retention_field`).
//!
//! Why it is built this way:
//! - **Same cutoff as the guard** ([`retention_cutoff`]), so the purge only
//!   ever deletes rows no answer could show (`field < cutoff`; a NULL field
//!   is hidden but never deleted).
//! - **Bounded batches**: each batch is one statement, so one short
//!   transaction, that deletes at most `purge_batch_rows` rows and adds
//!   them to its `esq.purge_runs` row atomically; a pause follows, so
//!   readers keep their share and no lock is held for long.
//! - **Resumable**: a killed run loses nothing (committed batches stay
//!   deleted and counted); its row stays `running` until the next run of
//!   that dataset marks it `failed` (interrupted) and finishes the job.
//! - **One purger per dataset**: a session advisory lock; a second esq
//!   (replica, CLI) skips the dataset instead of waiting or double-counting.
//!   Holding the lock is also how a run knows a `running` row is dead.
//! - **Checked before anything is deleted**: table, privileges and schema
//!   version are checked for every selected dataset first, so a bad setup
//!   fails with nothing half-done.
//!
//! No `FOR UPDATE SKIP LOCKED` in the batch: row locks need UPDATE
//! privilege, which the maintenance role neither has nor needs; a row
//! another transaction holds makes the batch wait at most `lock_timeout`
//! (5 s, see [`super::maintenance`]), after which the run fails and the
//! next one resumes.

use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use tokio::sync::watch;

use super::metrics::dataset as labels;
use super::tombstones::quote_ident;
use super::{Maintenance, MaintenanceError};
use crate::app::App;
use crate::audit::{AuditEvent, AuditKind};
use crate::catalog::{Catalog, TableName};
use crate::metrics::{Door, Outcome};

/// The first day still kept: `today` minus `years`, same month and day
/// (29 February → 28 February). Rows whose retention field is before it
/// are hidden by the guard and deleted by the purge.
pub fn retention_cutoff(years: u32, today: NaiveDate) -> Option<NaiveDate> {
    let year = today.year().checked_sub(i32::try_from(years).ok()?)?;
    NaiveDate::from_ymd_opt(year, today.month(), today.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, today.month(), 28))
}

/// Why a purge could not start (nothing was deleted).
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("no dataset {name:?} in the catalog; datasets with a retention: {known}")]
    UnknownDataset { name: String, known: String },
    #[error("dataset {0:?} has no retention (set retention_years and retention_field in its catalog file to purge it)")]
    NoRetention(String),
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error("table {table} of dataset {dataset:?} does not exist in {target}: fix the catalog's `table` or the database")]
    NoTable {
        dataset: String,
        table: String,
        target: String,
    },
    #[error("the maintenance role {role:?} may not {privilege} {table} (dataset {dataset:?}): run `GRANT SELECT, DELETE ON {table} TO {role}` as the table's owner")]
    NoPrivilege {
        dataset: String,
        table: String,
        role: String,
        privilege: &'static str,
    },
}

impl PurgeError {
    /// Bad input or configuration (exit status 2), rather than a database
    /// that refused or could not be reached (1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            PurgeError::UnknownDataset { .. }
                | PurgeError::NoRetention(_)
                | PurgeError::Maintenance(MaintenanceError::NotConfigured)
                | PurgeError::Maintenance(MaintenanceError::Config(_))
        )
    }
}

/// One dataset to purge.
#[derive(Debug, Clone)]
pub struct Target {
    pub dataset: String,
    pub table: TableName,
    pub field: String,
    pub years: u32,
}

/// The datasets `only` selects (default: every dataset with a retention).
pub fn plan(catalog: &Catalog, only: Option<&str>) -> Result<Vec<Target>, PurgeError> {
    let target = |d: &crate::catalog::Dataset| match (d.retention_years, &d.retention_field) {
        (Some(years), Some(field)) => Some(Target {
            dataset: d.id.clone(),
            table: d.table.clone(),
            field: field.clone(),
            years,
        }),
        _ => None,
    };
    match only {
        None => Ok(catalog.datasets().filter_map(|d| target(d)).collect()),
        Some(name) => {
            let dataset = catalog
                .dataset(name)
                .ok_or_else(|| PurgeError::UnknownDataset {
                    name: name.to_string(),
                    known: catalog
                        .datasets()
                        .filter(|d| target(d).is_some())
                        .map(|d| d.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let one = target(dataset).ok_or_else(|| PurgeError::NoRetention(name.to_string()))?;
            Ok(vec![one])
        }
    }
}

/// Who started the purge (kept in the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `esq purge`.
    Cli,
    /// `[lifecycle] purge_schedule` inside `esq serve`.
    Schedule,
}

/// How one dataset's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Finished,
    /// Another esq holds the dataset's purge lock.
    Skipped,
    Failed,
}

/// What one dataset's run did.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    pub dataset: String,
    pub table: String,
    pub retention_field: String,
    /// Rows with `retention_field` before this date are past retention.
    pub cutoff: String,
    pub status: Status,
    pub dry_run: bool,
    pub rows_deleted: u64,
    /// Dry run: rows past retention now (what a real run would delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_past_retention: Option<u64>,
    pub batches: u32,
    /// This run's `esq.purge_runs` id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// Earlier runs found interrupted (left `running`), now marked `failed`.
    pub interrupted_runs: Vec<i64>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The audit record's `seq` (`None`: skipped, or not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
}

/// Batch size and pause, from `[lifecycle]`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dry_run: bool,
    pub batch_rows: u32,
    pub pause: Duration,
    pub trigger: Trigger,
}

impl Options {
    pub fn new(app: &App, dry_run: bool, trigger: Trigger) -> Options {
        Options {
            dry_run,
            batch_rows: app.config.lifecycle.purge_batch_rows.max(1),
            pause: app.config.lifecycle.purge_batch_pause,
            trigger,
        }
    }
}

/// Purges the datasets `only` selects: checks everything first, then runs
/// each dataset in turn. `stop` turning `true` ends a run between batches.
pub async fn run(
    app: &App,
    only: Option<&str>,
    options: Options,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<DatasetReport>, PurgeError> {
    let targets = plan(&app.bundle().catalog, only)?;
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let maintenance = Maintenance::connect(&app.config).await?;
    maintenance.require_current_schema().await?;
    preflight(&maintenance, &targets, options.dry_run).await?;
    let today = chrono::Utc::now().date_naive();
    let mut reports = Vec::with_capacity(targets.len());
    for target in &targets {
        reports.push(purge_one(app, &maintenance, target, today, options, stop).await);
    }
    Ok(reports)
}

/// Every table exists and the maintenance role may read it (and delete
/// from it, unless this is a dry run).
async fn preflight(
    maintenance: &Maintenance,
    targets: &[Target],
    dry_run: bool,
) -> Result<(), PurgeError> {
    let privileges: &[&'static str] = if dry_run {
        &["SELECT"]
    } else {
        &["SELECT", "DELETE"]
    };
    for target in targets {
        let table = target.table.quoted();
        let exists = maintenance
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(MaintenanceError::database)?;
        if !exists.get::<_, bool>(0) {
            return Err(PurgeError::NoTable {
                dataset: target.dataset.clone(),
                table: target.table.to_string(),
                target: maintenance.target.clone(),
            });
        }
        for privilege in privileges {
            let row = maintenance
                .client
                .query_one(
                    "SELECT has_table_privilege(current_user, $1::text::regclass, $2)",
                    &[&table, privilege],
                )
                .await
                .map_err(MaintenanceError::database)?;
            if !row.get::<_, bool>(0) {
                return Err(PurgeError::NoPrivilege {
                    dataset: target.dataset.clone(),
                    table: target.table.to_string(),
                    role: maintenance.role.clone(),
                    privilege: if *privilege == "DELETE" {
                        "delete from"
                    } else {
                        "read"
                    },
                });
            }
        }
    }
    Ok(())
}

/// One dataset's run and what it needs.
struct Job<'a> {
    app: &'a App,
    maintenance: &'a Maintenance,
    target: &'a Target,
    options: Options,
    stop: &'a watch::Receiver<bool>,
}

/// One dataset: lock, close interrupted runs, delete in batches, record.
async fn purge_one(
    app: &App,
    maintenance: &Maintenance,
    target: &Target,
    today: NaiveDate,
    options: Options,
    stop: &watch::Receiver<bool>,
) -> DatasetReport {
    let job = Job {
        app,
        maintenance,
        target,
        options,
        stop,
    };
    let started = Instant::now();
    let cutoff = retention_cutoff(target.years, today);
    let mut report = DatasetReport {
        dataset: target.dataset.clone(),
        table: target.table.to_string(),
        retention_field: target.field.clone(),
        cutoff: cutoff.map(|c| c.to_string()).unwrap_or_default(),
        status: Status::Finished,
        dry_run: options.dry_run,
        rows_deleted: 0,
        rows_past_retention: None,
        batches: 0,
        run_id: None,
        interrupted_runs: Vec::new(),
        seconds: 0.0,
        error: None,
        audit_seq: None,
    };
    let Some(cutoff) = cutoff else {
        report.status = Status::Failed;
        report.error = Some(format!("retention_years {} is out of range", target.years));
        return finish(app, report, started, options).await;
    };
    let key = lock_key(&target.dataset);
    let client = &maintenance.client;
    match client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
    {
        Ok(row) if row.get::<_, bool>(0) => {}
        Ok(_) => {
            report.status = Status::Skipped;
            report.error = Some("another esq is purging this dataset".into());
            // Audited too: who tried, and that another run had it.
            return finish(app, report, started, options).await;
        }
        Err(err) => {
            report.status = Status::Failed;
            report.error = Some(MaintenanceError::database(err).to_string());
            return finish(app, report, started, options).await;
        }
    }
    let outcome = job.locked(cutoff, &mut report).await;
    if let Err(err) = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await
    {
        tracing::warn!(dataset = target.dataset, err = %MaintenanceError::database(err), "purge lock not released (it ends with the session)");
    }
    if let Err(error) = outcome {
        report.status = Status::Failed;
        report.error = Some(error);
        if let Some(id) = report.run_id {
            let closed = client
                .execute(
                    "UPDATE esq.purge_runs SET status = 'failed', finished_at = now() WHERE id = $1",
                    &[&id],
                )
                .await;
            if let Err(err) = closed {
                tracing::warn!(run = id, err = %MaintenanceError::database(err), "purge run left 'running' (the next run marks it failed)");
            }
        }
    }
    finish(app, report, started, options).await
}

impl Job<'_> {
    /// The work done while holding the dataset's lock.
    async fn locked(&self, cutoff: NaiveDate, report: &mut DatasetReport) -> Result<(), String> {
        let client = &self.maintenance.client;
        let target = self.target;
        let db = |err: tokio_postgres::Error| MaintenanceError::database(err).to_string();
        // The lock is ours: a run of this dataset still `running` is dead.
        let interrupted = client
            .query(
                "UPDATE esq.purge_runs SET status = 'failed', finished_at = now()
                 WHERE dataset = $1 AND status = 'running' RETURNING id",
                &[&target.dataset],
            )
            .await
            .map_err(db)?;
        report.interrupted_runs = interrupted.iter().map(|row| row.get(0)).collect();
        report.interrupted_runs.sort_unstable();
        let cutoff = cutoff.to_string();
        let row = client
            .query_one(
                "INSERT INTO esq.purge_runs (dataset, cutoff, dry_run)
                 VALUES ($1, $2::text::date, $3) RETURNING id",
                &[&target.dataset, &cutoff, &self.options.dry_run],
            )
            .await
            .map_err(db)?;
        let run_id: i64 = row.get(0);
        report.run_id = Some(run_id);
        if self.options.dry_run {
            let sql = format!(
                "SELECT count(*) FROM {} WHERE {} < $1::text::date",
                target.table.quoted(),
                quote_ident(&target.field)
            );
            let row = client.query_one(&sql, &[&cutoff]).await.map_err(db)?;
            report.rows_past_retention = Some(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
        } else {
            self.batches(&cutoff, run_id, report).await?;
        }
        client
            .execute(
                "UPDATE esq.purge_runs SET status = 'finished', finished_at = now() WHERE id = $1",
                &[&run_id],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Deletes in batches until a batch finds nothing, `stop` turns true,
    /// or the database refuses.
    async fn batches(
        &self,
        cutoff: &str,
        run_id: i64,
        report: &mut DatasetReport,
    ) -> Result<(), String> {
        let table = self.target.table.quoted();
        let field = quote_ident(&self.target.field);
        // One statement: the batch and its count commit together or not at all.
        let sql = format!(
            "WITH gone AS (
                 DELETE FROM {table} WHERE ctid = ANY (ARRAY(
                     SELECT ctid FROM {table} WHERE {field} < $1::text::date LIMIT $2))
                 RETURNING 1),
             n AS (SELECT count(*) AS n FROM gone)
             UPDATE esq.purge_runs
                SET rows_deleted = rows_deleted + n.n, batches = batches + (n.n > 0)::int
               FROM n WHERE id = $3 RETURNING n.n"
        );
        let client = &self.maintenance.client;
        let statement = client
            .prepare(&sql)
            .await
            .map_err(|err| self.refused(err))?;
        let limit = i64::from(self.options.batch_rows);
        let counter = self
            .app
            .lifecycle_metrics
            .purged_rows
            .get_or_create(&labels(&self.target.dataset))
            .clone();
        loop {
            if *self.stop.borrow() {
                return Err("interrupted: esq is shutting down (the next run resumes)".into());
            }
            let row = client
                .query_one(&statement, &[&cutoff, &limit, &run_id])
                .await
                .map_err(|err| self.refused(err))?;
            let deleted = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            if deleted == 0 {
                return Ok(());
            }
            report.rows_deleted += deleted;
            report.batches += 1;
            counter.inc_by(deleted);
            tokio::time::sleep(self.options.pause).await;
        }
    }

    /// The database's refusal, naming the grant when it is one.
    fn refused(&self, err: tokio_postgres::Error) -> String {
        if MaintenanceError::code(&err) == Some("42501") {
            return PurgeError::NoPrivilege {
                dataset: self.target.dataset.clone(),
                table: self.target.table.to_string(),
                role: self.maintenance.role.clone(),
                privilege: "delete from",
            }
            .to_string();
        }
        MaintenanceError::database(err).to_string()
    }
}

/// Audit record, metrics and duration of a run that took the lock.
async fn finish(
    app: &App,
    mut report: DatasetReport,
    started: Instant,
    options: Options,
) -> DatasetReport {
    let seconds = started.elapsed().as_secs_f64();
    report.seconds = seconds;
    let metrics = &app.lifecycle_metrics;
    let label = labels(&report.dataset);
    if report.status != Status::Skipped {
        metrics.purge_seconds.get_or_create(&label).observe(seconds);
    }
    if report.status == Status::Failed {
        metrics.purge_failures.get_or_create(&label).inc();
    }
    let detail = serde_json::json!({
        "trigger": options.trigger,
        "table": report.table,
        "retention_field": report.retention_field,
        "cutoff": report.cutoff,
        "status": report.status,
        "dry_run": report.dry_run,
        "rows_deleted": report.rows_deleted,
        "rows_past_retention": report.rows_past_retention,
        "batches": report.batches,
        "run_id": report.run_id,
        "interrupted_runs": report.interrupted_runs,
        "seconds": seconds,
        "error": report.error,
    });
    let event = AuditEvent {
        dataset: Some(&report.dataset),
        detail: Some(detail),
        outcome: if report.status == Status::Failed {
            Outcome::deny
        } else {
            Outcome::allow
        },
        ..AuditEvent::event(AuditKind::Purge, Door::process, "esq")
    };
    match crate::audit::record_durably(app.audit.as_ref(), &event).await {
        Ok(seq) => report.audit_seq = Some(seq),
        Err(err) => {
            tracing::error!(dataset = report.dataset, %err, "the purge could not be audited");
            report.status = Status::Failed;
            let audit = format!("the purge could not be audited: {err}");
            report.error = Some(match report.error.take() {
                Some(error) => format!("{error}; {audit}"),
                None => audit,
            });
        }
    }
    report
}

/// The advisory lock key of a dataset's purge (every esq computes the same).
pub fn lock_key(dataset: &str) -> i64 {
    super::lock_key(&format!("esq purge\0{dataset}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    #[test]
    fn the_cutoff_is_the_same_day_years_ago_and_feb_29_becomes_28() {
        assert_eq!(
            retention_cutoff(10, date(2026, 12, 7)),
            Some(date(2016, 12, 7))
        );
        assert_eq!(
            retention_cutoff(1, date(2024, 2, 29)),
            Some(date(2023, 2, 28))
        );
        assert_eq!(
            retention_cutoff(4, date(2024, 2, 29)),
            Some(date(2020, 2, 29))
        );
        assert_eq!(
            retention_cutoff(0, date(2026, 1, 1)),
            Some(date(2026, 1, 1))
        );
        assert_eq!(retention_cutoff(u32::MAX, date(2026, 1, 1)), None);
    }

    #[test]
    fn lock_keys_differ_by_dataset_and_are_stable() {
        assert_eq!(lock_key("burial_2024"), lock_key("burial_2024"));
        assert_ne!(lock_key("burial_2024"), lock_key("staff_notes"));
    }
}
