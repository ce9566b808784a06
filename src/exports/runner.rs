//! Runs export jobs inside `esq serve`: `exports.workers` loops, each on
//! its own maintenance connection, claim the oldest queued job (or one
//! whose runner went quiet) and take it through the states of DESIGN 3.9:
//! MATERIALIZING → VALIDATING → PACKAGING → ENCRYPTING → STORED →
//! COMPLETED, or FAILED with a reason the requester may read.
//!
//! A bundle appears at `<exports.dir>/<job>.enc` only whole (the envelope
//! writes a temporary file and renames it), and a job is `COMPLETED` only
//! in the transaction that writes its ledger entry: an esq stopped or
//! killed midway leaves a job that is claimed again and starts over, never
//! a `COMPLETED` job with a partial bundle. Work files live in
//! `<exports.dir>/.work/<job>/` and are removed when the attempt ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use super::csv_sink::validate_csv;
use super::envelope;
use super::job::{self, Claim, Job, JobError, State};
use super::kek::{FileKek, Kek};
use super::ledger::{self, NewEntry};
use super::materialise::{self, MaterialiseError, SubjectColumn};
use super::metrics::labels;
use super::package::{self, Manifest};
use crate::app::App;
use crate::audit::{AuditEvent, AuditKind};
use crate::lifecycle::Maintenance;
use crate::metrics::{Door, Outcome};
use crate::upstream::UpstreamPool;

/// Pause after the maintenance connection failed.
const RECONNECT: Duration = Duration::from_secs(5);

/// Starts the workers (nothing when exports are off). Fails when the KEK
/// cannot be read: esq should not accept exports it cannot seal.
pub fn start(
    app: &Arc<App>,
    upstream: &Arc<UpstreamPool>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let config = &app.config.exports;
    let (Some(dir), Some(kek_file)) = (&config.dir, &config.kek_file) else {
        return Ok(Vec::new());
    };
    let kek: Arc<dyn Kek> =
        Arc::new(FileKek::load(kek_file).map_err(|err| format!("exports.kek_file: {err}"))?);
    std::fs::create_dir_all(dir.join(".work"))
        .map_err(|err| format!("exports.dir {}: {err}", dir.display()))?;
    restrict(dir);
    let runner = Arc::new(Runner {
        app: app.clone(),
        upstream: upstream.clone(),
        kek,
        dir: dir.clone(),
        name: format!(
            "{} pid {}",
            app.config.server.http_listen,
            std::process::id()
        ),
    });
    Ok((0..config.workers.max(1))
        .map(|worker| {
            let runner = runner.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { runner.work(worker, shutdown).await })
        })
        .collect())
}

fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(err) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(dir = %dir.display(), %err, "cannot make exports.dir private (0700)");
    }
}

struct Runner {
    app: Arc<App>,
    upstream: Arc<UpstreamPool>,
    kek: Arc<dyn Kek>,
    dir: PathBuf,
    /// Names this esq in `claimed_by`.
    name: String,
}

/// How an attempt ended short of `COMPLETED`.
enum Stop {
    /// The job fails, with what the requester reads.
    Fail(String),
    /// esq is stopping: the job goes back to the queue.
    Interrupted,
    /// Another runner holds the job now: leave it alone.
    Lost,
}

impl From<JobError> for Stop {
    fn from(err: JobError) -> Stop {
        match err {
            JobError::ClaimLost(_) => Stop::Lost,
            err => {
                tracing::error!(%err, "an export job's state could not be written");
                Stop::Fail("esq could not record the job's progress".into())
            }
        }
    }
}

impl Runner {
    async fn work(&self, worker: u32, mut shutdown: watch::Receiver<bool>) {
        let poll = self.app.config.exports.poll;
        while !*shutdown.borrow() {
            let maintenance = match Maintenance::connect_current(&self.app.config).await {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(worker, %err, "export runner: no maintenance connection (retrying)");
                    sleep_or_stop(&mut shutdown, RECONNECT).await;
                    continue;
                }
            };
            loop {
                if *shutdown.borrow() {
                    return;
                }
                if worker == 0 {
                    self.refresh_gauge(&maintenance).await;
                }
                // Until the tombstones are read the guard refuses datasets
                // with subjects: a job claimed now would fail for nothing.
                if !self.app.tombstones.is_read() {
                    sleep_or_stop(&mut shutdown, poll).await;
                    continue;
                }
                let stale = self.app.config.exports.stale_after;
                match job::claim_next(&maintenance.client, &self.name, stale).await {
                    Ok(Some((job, claim))) => {
                        self.attempt(&maintenance, &job, &claim, &shutdown).await
                    }
                    Ok(None) => sleep_or_stop(&mut shutdown, poll).await,
                    Err(err) => {
                        tracing::warn!(worker, %err, "export runner: cannot claim jobs (reconnecting)");
                        sleep_or_stop(&mut shutdown, RECONNECT).await;
                        break;
                    }
                }
            }
        }
    }

    async fn refresh_gauge(&self, maintenance: &Maintenance) {
        if let Ok(counts) = job::count_by_state(&maintenance.client).await {
            let gauge = &self.app.export_metrics.jobs;
            for state in State::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == state)
                    .map_or(0, |(_, n)| *n);
                gauge.get_or_create(&labels(state)).set(n);
            }
        }
    }

    /// One attempt at a claimed job, with a heartbeat beside it.
    async fn attempt(
        &self,
        maintenance: &Maintenance,
        job: &Job,
        claim: &Claim,
        shutdown: &watch::Receiver<bool>,
    ) {
        let started = Instant::now();
        let work = self.dir.join(".work").join(&job.id);
        let bundle = self.dir.join(format!("{}.enc", job.id));
        let _ = std::fs::remove_dir_all(&work);
        let client = &maintenance.client;
        let beat = (self.app.config.exports.stale_after / 4).max(Duration::from_millis(200));
        let heartbeat = async {
            loop {
                tokio::time::sleep(beat).await;
                if let Err(err) = job::heartbeat(client, claim).await {
                    return Stop::from(err);
                }
            }
        };
        let mut stop = shutdown.clone();
        let stopping = async move {
            while stop.changed().await.is_ok() {
                if *stop.borrow() {
                    break;
                }
            }
            Stop::Interrupted
        };
        let outcome = tokio::select! {
            done = self.pipeline(maintenance, job, claim, &work, &bundle) => done,
            stopped = heartbeat => Err(stopped),
            stopped = stopping => Err(stopped),
        };
        let _ = std::fs::remove_dir_all(&work);
        let metrics = &self.app.export_metrics;
        match outcome {
            Ok(()) => {
                metrics.ended.get_or_create(&labels(State::Completed)).inc();
                metrics.seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(Stop::Fail(reason)) => {
                let _ = std::fs::remove_file(&bundle);
                if let Err(err) = job::failed(client, claim, &reason).await {
                    tracing::warn!(job = job.id, %err, "export job: its failure was not recorded");
                }
                self.record(job, "failed", Outcome::deny, json!({"error": reason}));
                metrics.ended.get_or_create(&labels(State::Failed)).inc();
            }
            Err(Stop::Interrupted) => {
                let _ = std::fs::remove_file(&bundle);
                let reason = "interrupted: esq stopped; the job starts again";
                if let Err(err) = job::release(client, claim, reason).await {
                    tracing::warn!(job = job.id, %err, "export job: not given back to the queue");
                }
                self.record(job, "interrupted", Outcome::deny, json!({}));
            }
            Err(Stop::Lost) => {
                tracing::warn!(job = job.id, "export job taken over by another runner");
            }
        }
    }

    async fn pipeline(
        &self,
        maintenance: &Maintenance,
        job: &Job,
        claim: &Claim,
        work: &Path,
        bundle: &Path,
    ) -> Result<(), Stop> {
        let client = &maintenance.client;
        let max_attempts = self.app.config.exports.max_attempts as i32;
        if claim.attempt > max_attempts {
            return Err(Stop::Fail(format!(
                "interrupted {} times (exports.max_attempts {max_attempts}); submit it again",
                claim.attempt - 1
            )));
        }
        self.ticket_still_live(job).await?;
        std::fs::create_dir_all(work).map_err(|e| disk("the work directory", e))?;
        restrict(work);
        self.record(
            job,
            "materializing",
            Outcome::allow,
            json!({"attempt": claim.attempt}),
        );
        let subject = subject_column(client, &self.app, job).await?;
        let progress = Reporter {
            runner: self,
            job,
            client,
            claim,
        };
        let answer =
            materialise::materialise(&self.app, &self.upstream, job, subject, work, &progress)
                .await
                .map_err(|err| {
                    tracing::warn!(job = job.id, %err, "export job: materialising failed");
                    Stop::Fail(err.public())
                })?;
        let rows = answer.csv.rows as i64;

        job::advance(client, claim, State::Validating, rows).await?;
        let (path, columns) = (answer.csv.path.clone(), answer.csv.columns.clone());
        let counted = blocking(move || validate_csv(&path, &columns))
            .await
            .map_err(|err| internal(job, "the answer did not validate", err))?;
        if counted != answer.csv.rows {
            return Err(Stop::Fail(format!(
                "the answer did not validate: {counted} rows on disk, {} materialised",
                answer.csv.rows
            )));
        }

        job::advance(client, claim, State::Packaging, rows).await?;
        let manifest = Manifest {
            format: package::FORMAT.into(),
            job: job.id.clone(),
            dataset: job.dataset.clone(),
            created_at: chrono::Utc::now(),
            hash_fields: job.request.hash_fields.clone(),
            hash_mode: answer.hash_mode.clone(),
            scope: scope_summary(job),
            files: vec![answer.csv.clone()],
        };
        let zip = work.join("bundle.zip");
        let out = zip.clone();
        let packaged = blocking(move || package::package(&manifest, &out))
            .await
            .map_err(|err| internal(job, "packaging failed", err))?;

        job::advance(client, claim, State::Encrypting, rows).await?;
        let (kek, id, sealed_at) = (self.kek.clone(), job.id.clone(), bundle.to_path_buf());
        let sealed = blocking(move || envelope::seal(&*kek, &id, &zip, &sealed_at))
            .await
            .map_err(|err| internal(job, "encryption failed", err))?;
        let location = format!("{}.enc", job.id);
        job::stored(
            client,
            claim,
            sealed.bytes as i64,
            &packaged.sha256,
            &location,
        )
        .await?;
        self.record(
            job,
            "stored",
            Outcome::allow,
            json!({"bytes": sealed.bytes, "bundle_sha256": packaged.sha256}),
        );

        // The ticket is checked again before anything is recorded as
        // delivered: revoked while the job ran, the bundle is deleted.
        self.ticket_still_live(job).await?;
        let subjects = self
            .complete(
                maintenance,
                job,
                claim,
                rows,
                &answer,
                &packaged.sha256,
                &location,
            )
            .await?;
        self.app.export_metrics.bytes.inc_by(sealed.bytes);
        let detail = json!({
            "action": "completed", "job": job.id, "rows": rows, "subjects": subjects,
            "bundle_sha256": packaged.sha256, "hash_mode": answer.hash_mode,
        });
        let mut detail = detail;
        if let (Some(spend), Some(map)) = (&answer.spend, detail.as_object_mut()) {
            map.insert("privacy".into(), spend.clone());
        }
        let event = AuditEvent {
            detail: Some(detail),
            ..answer.completion.event(Some(rows as u64), None)
        };
        if crate::audit::record_durably(&*self.app.audit, &event)
            .await
            .is_err()
        {
            tracing::error!(
                job = job.id,
                "export job completed but its audit record is not durable"
            );
        }
        self.notify(job, rows, &packaged.sha256);
        Ok(())
    }

    /// The ledger entry and `COMPLETED`, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        maintenance: &Maintenance,
        job: &Job,
        claim: &Claim,
        rows: i64,
        answer: &materialise::Materialised,
        bundle_sha256: &str,
        location: &str,
    ) -> Result<i64, Stop> {
        let client = &maintenance.client;
        let begin = client.batch_execute("BEGIN").await;
        if let Err(err) = begin {
            tracing::error!(job = job.id, %err, "export job: cannot begin the ledger transaction");
            return Err(Stop::Fail("esq could not write the consent ledger".into()));
        }
        let entry = NewEntry {
            job,
            rows,
            hash_mode: &answer.hash_mode,
            location,
            bundle_sha256,
            subjects: answer.subjects.as_deref(),
            subject_dataset: answer.subject_dataset.as_deref(),
        };
        let written = async {
            let subjects = ledger::record(client, &entry).await?;
            job::completed(client, claim).await?;
            Ok::<_, JobError>(subjects)
        }
        .await;
        match written {
            Ok(subjects) => match client.batch_execute("COMMIT").await {
                Ok(()) => Ok(subjects),
                Err(err) => {
                    tracing::error!(job = job.id, %err, "export job: the ledger did not commit");
                    Err(Stop::Fail("esq could not write the consent ledger".into()))
                }
            },
            Err(err) => {
                let _ = client.batch_execute("ROLLBACK").await;
                tracing::error!(job = job.id, %err, "export job: the ledger was not written");
                Err(Stop::from(err))
            }
        }
    }

    /// The job runs only under a live ticket: one revoked (or expired, or
    /// lost with a memory ticket store's restart) since the job was queued
    /// stops it. The store cannot tell a revoked ticket from an expired
    /// one, so neither runs: fail closed.
    async fn ticket_still_live(&self, job: &Job) -> Result<(), Stop> {
        let now = chrono::Utc::now();
        let hash = hex::decode(&job.request.ticket_hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(crate::tickets::TicketHash)
            .ok_or_else(|| Stop::Fail("the job's ticket hash is damaged".into()))?;
        match self.app.ticket_store.owner(&hash, now).await {
            Ok(Some(owner)) if owner == job.requester => Ok(()),
            Ok(_) => Err(Stop::Fail(
                "the ticket is no longer live (revoked, expired, or lost with a restart of esq's memory ticket store), so the export is not delivered; submit it again with a live ticket".into(),
            )),
            Err(err) => {
                tracing::warn!(job = job.id, %err, "export job: the ticket store did not answer");
                Err(Stop::Fail(
                    "the ticket store did not answer, so esq could not check the ticket; submit the export again".into(),
                ))
            }
        }
    }

    /// An `export` audit record naming the job.
    fn record(&self, job: &Job, action: &str, outcome: Outcome, extra: serde_json::Value) {
        let mut detail = json!({"action": action, "job": job.id});
        if let (Some(map), Some(extra)) = (detail.as_object_mut(), extra.as_object()) {
            map.extend(extra.clone());
        }
        self.app.audit.record(&AuditEvent {
            ticket_hash: Some(job.request.ticket_hash.clone()),
            dataset: Some(&job.dataset),
            outcome,
            detail: Some(detail),
            ..AuditEvent::event(AuditKind::Export, Door::process, &job.requester)
        });
    }

    /// Tells `exports.webhook` a job completed (facts, never data).
    fn notify(&self, job: &Job, rows: i64, bundle_sha256: &str) {
        let Some(url) = self.app.config.exports.webhook.clone() else {
            return;
        };
        let body = json!({
            "event": "export_completed", "job": job.id, "dataset": job.dataset,
            "requester": job.requester, "rows": rows, "bundle_sha256": bundle_sha256,
        });
        let job = job.id.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build();
            let Ok(client) = client else { return };
            for attempt in 1..=3u32 {
                match client.post(&url).json(&body).send().await {
                    Ok(answer) if answer.status().is_success() => return,
                    Ok(answer) => {
                        tracing::warn!(job, attempt, status = %answer.status(), "export webhook refused")
                    }
                    Err(err) => tracing::warn!(job, attempt, %err, "export webhook unreachable"),
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        });
    }
}

/// Reports rows materialised (and the heartbeat) to the job's row.
/// A ticket revoked while the job runs stops it at the next report.
struct Reporter<'a> {
    runner: &'a Runner,
    job: &'a Job,
    client: &'a tokio_postgres::Client,
    claim: &'a Claim,
}

#[async_trait::async_trait]
impl materialise::Progress for Reporter<'_> {
    async fn report(&self, rows: u64) -> Result<(), MaterialiseError> {
        if let Err(Stop::Fail(why)) = self.runner.ticket_still_live(self.job).await {
            return Err(MaterialiseError::Refused(why));
        }
        job::advance(self.client, self.claim, State::Materializing, rows as i64)
            .await
            .map_err(|err| MaterialiseError::Disk(err.to_string()))
    }
}

/// Where the subjects of the job's dataset are named: its own subject key,
/// or the field that links it to a subject dataset (e.g. `staff_notes.
/// veteran_id` names `burial_2024` subjects), to find it in the answer.
async fn subject_column(
    client: &tokio_postgres::Client,
    app: &App,
    job: &Job,
) -> Result<Option<SubjectColumn>, Stop> {
    let bundle = app.bundle();
    let Some(dataset) = bundle.catalog.dataset(&job.dataset) else {
        return Err(Stop::Fail("the dataset is no longer in the catalog".into()));
    };
    let Some((subject, field)) = bundle.catalog.subject_fields(dataset).into_iter().next() else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            "SELECT c.oid, a.attnum FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid \
             WHERE c.oid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
            &[&dataset.table.quoted(), &field],
        )
        .await
        .map_err(|err| {
            tracing::warn!(job = job.id, %err, "export job: cannot find the subject key column");
            Stop::Fail("esq could not read the dataset's table".into())
        })?;
    let Some(row) = row else {
        return Err(Stop::Fail(
            "the dataset's subject key column is missing from its table".into(),
        ));
    };
    Ok(Some(SubjectColumn {
        dataset: subject.id.clone(),
        table_oid: row.get::<_, u32>(0),
        column_id: row.get(1),
    }))
}

/// What the manifest says of the scope (never the ticket).
fn scope_summary(job: &Job) -> serde_json::Value {
    let scope = &job.scope;
    json!({
        "dataset": scope.dataset,
        "fields": scope.fields,
        "aggregate": scope.aggregate.map(|a| a.as_str()),
        "min_group_size": scope.min_group_size,
        "row_filters": scope.row_filters,
        "retention_cutoff": scope.retention_cutoff,
        "private": scope.privacy.is_some(),
        "purpose": scope.purpose,
        "policy_ids": scope.policy_ids,
    })
}

/// Runs file work (reading, zipping, sealing gigabytes) off the async
/// workers, so the doors keep answering while a large export is packaged.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, super::envelope::BundleError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(err) => Err(format!("the task failed: {err}")),
    }
}

/// A failure whose details (paths, file errors) stay in the operator's log.
fn internal(job: &Job, what: &str, err: impl std::fmt::Display) -> Stop {
    tracing::error!(job = job.id, %err, "export job: {what}");
    Stop::Fail(format!("{what}; the operator's log has the details"))
}

fn disk(what: &str, err: std::io::Error) -> Stop {
    tracing::error!(%err, "export job: cannot write {what}");
    Stop::Fail("esq could not write the export's files".into())
}

async fn sleep_or_stop(shutdown: &mut watch::Receiver<bool>, pause: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.changed() => {}
    }
}
