//! The consent ledger (`esq.export_ledger`, `esq.export_subjects`): one
//! entry per completed export — what left, for whom, why, under which
//! scope, where it is kept and until when — and the keyed hashes of the
//! subjects it held (never a key). A subject lookup lists the exports that
//! held a subject; a forget marks them (the bundle already delivered
//! still holds the subject: the ledger says so).

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::job::{Job, JobError};
use crate::lifecycle::MaintenanceError;

/// Subject hashes inserted per statement.
const BATCH: usize = 5_000;

/// A ledger entry as the job status and the subject lookup show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    pub job: String,
    pub dataset: String,
    pub requester: String,
    pub reason: String,
    pub rows: i64,
    pub subject_count: i64,
    pub hash_mode: String,
    pub hash_fields: Vec<String>,
    pub scope: serde_json::Value,
    pub retention_days: i32,
    pub created_at: String,
    pub expires_at: String,
    pub location: String,
    pub bundle_sha256: String,
    pub purged_at: Option<String>,
    /// In a subject lookup: when the subject was forgotten after this
    /// export held it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_forgotten_at: Option<String>,
}

/// What a completed job adds to the ledger.
pub struct NewEntry<'a> {
    pub job: &'a Job,
    pub rows: i64,
    pub hash_mode: &'a str,
    pub location: &'a str,
    pub bundle_sha256: &'a str,
    /// One subject hash per line, with repeats.
    pub subjects: Option<&'a Path>,
    /// The subject dataset those hashes name (the job's own, or the one
    /// it links to).
    pub subject_dataset: Option<&'a str>,
}

fn db(err: tokio_postgres::Error) -> JobError {
    JobError::Database(MaintenanceError::database(err))
}

/// Records the entry and its subjects (call inside the transaction that
/// completes the job). Returns the number of distinct subjects.
pub async fn record(client: &impl GenericClient, entry: &NewEntry<'_>) -> Result<i64, JobError> {
    let job = entry.job;
    let scope = serde_json::to_string(&job.scope).map_err(|e| JobError::Corrupt {
        job: job.id.clone(),
        what: "scope",
        detail: e.to_string(),
    })?;
    client
        .execute(
            "INSERT INTO esq.export_ledger (job, dataset, subject_count, scope, hash_mode, hash_fields, \
                 rows, retention_days, expires_at, requester, reason, location, bundle_sha256) \
             VALUES ($1, $2, 0, $3::text::jsonb, $4, $5, $6, $7, now() + make_interval(days => $7), \
                     $8, $9, $10, $11)",
            &[
                &job.id,
                &job.dataset,
                &scope,
                &entry.hash_mode,
                &job.request.hash_fields,
                &entry.rows,
                &job.retention_days,
                &job.requester,
                &job.reason,
                &entry.location,
                &entry.bundle_sha256,
            ],
        )
        .await
        .map_err(db)?;
    let mut count = 0;
    if let Some(path) = entry.subjects {
        let subject_dataset = entry.subject_dataset.unwrap_or(&job.dataset);
        let file = std::fs::File::open(path).map_err(|e| JobError::Corrupt {
            job: job.id.clone(),
            what: "subject list",
            detail: e.to_string(),
        })?;
        let mut batch = Vec::with_capacity(BATCH);
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| JobError::Corrupt {
                job: job.id.clone(),
                what: "subject list",
                detail: e.to_string(),
            })?;
            batch.push(line);
            if batch.len() == BATCH {
                insert_subjects(client, job, subject_dataset, &batch).await?;
                batch.clear();
            }
        }
        insert_subjects(client, job, subject_dataset, &batch).await?;
        let row = client
            .query_one(
                "UPDATE esq.export_ledger SET subject_count = \
                     (SELECT count(*) FROM esq.export_subjects WHERE job = $1) \
                 WHERE job = $1 RETURNING subject_count",
                &[&job.id],
            )
            .await
            .map_err(db)?;
        count = row.get(0);
    }
    Ok(count)
}

async fn insert_subjects(
    client: &impl GenericClient,
    job: &Job,
    dataset: &str,
    hashes: &[String],
) -> Result<(), JobError> {
    if hashes.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "INSERT INTO esq.export_subjects (job, dataset, subject_hash) \
             SELECT $1, $2, h FROM unnest($3::text[]) AS h ON CONFLICT DO NOTHING",
            &[&job.id, &dataset, &hashes],
        )
        .await
        .map_err(db)?;
    Ok(())
}

const TIME: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

fn select(extra: &str) -> String {
    format!(
        "SELECT l.job, l.dataset, l.requester, l.reason, l.rows, l.subject_count, l.hash_mode, \
                l.hash_fields, l.scope::text, l.retention_days, \
                to_char(l.created_at AT TIME ZONE 'UTC', {TIME}), \
                to_char(l.expires_at AT TIME ZONE 'UTC', {TIME}), l.location, l.bundle_sha256, \
                to_char(l.purged_at AT TIME ZONE 'UTC', {TIME}){extra}"
    )
}

fn entry_of(row: &tokio_postgres::Row, with_subject: bool) -> Entry {
    let scope: String = row.get(8);
    Entry {
        job: row.get(0),
        dataset: row.get(1),
        requester: row.get(2),
        reason: row.get(3),
        rows: row.get(4),
        subject_count: row.get(5),
        hash_mode: row.get(6),
        hash_fields: row.get(7),
        scope: serde_json::from_str(&scope).unwrap_or(serde_json::Value::Null),
        retention_days: row.get(9),
        created_at: row.get(10),
        expires_at: row.get(11),
        location: row.get(12),
        bundle_sha256: row.get(13),
        purged_at: row.get(14),
        subject_forgotten_at: if with_subject { row.get(15) } else { None },
    }
}

/// The ledger entry of one job.
pub async fn entry(client: &impl GenericClient, job: &str) -> Result<Option<Entry>, JobError> {
    let sql = format!("{} FROM esq.export_ledger l WHERE l.job = $1", select(""));
    let row = client.query_opt(&sql, &[&job]).await.map_err(db)?;
    Ok(row.map(|r| entry_of(&r, false)))
}

/// Every export that held a subject (for the subject lookup), oldest first.
pub async fn holding(
    client: &impl GenericClient,
    dataset: &str,
    subject_hash: &str,
) -> Result<Vec<Entry>, JobError> {
    let sql = format!(
        "{} FROM esq.export_subjects s JOIN esq.export_ledger l ON l.job = s.job \
         WHERE s.dataset = $1 AND s.subject_hash = $2 ORDER BY l.created_at",
        select(&format!(
            ", to_char(s.forgotten_at AT TIME ZONE 'UTC', {TIME})"
        ))
    );
    let rows = client
        .query(&sql, &[&dataset, &subject_hash])
        .await
        .map_err(db)?;
    Ok(rows.iter().map(|r| entry_of(r, true)).collect())
}

/// Marks a forgotten subject in every export that held it; returns those
/// exports' jobs.
pub async fn mark_forgotten(
    client: &impl GenericClient,
    dataset: &str,
    subject_hash: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "UPDATE esq.export_subjects SET forgotten_at = now() \
             WHERE dataset = $1 AND subject_hash = $2 AND forgotten_at IS NULL RETURNING job",
            &[&dataset, &subject_hash],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
