//! Export jobs in schema `esq` (`esq.export_jobs`): what was asked, under
//! which scope, and how far it got. The table is the queue: a job is
//! claimed by one esq at a time (`FOR UPDATE SKIP LOCKED`), its runner
//! reports a heartbeat, and a job whose runner went quiet for
//! `exports.stale_after` is claimed again (it starts over) or ends
//! `FAILED` after `exports.max_attempts`. Every write that only the
//! claiming runner may make names its claim, so a runner that lost its job
//! to another esq cannot overwrite what that one does.

use serde::{Deserialize, Serialize};
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use crate::lifecycle::MaintenanceError;
use crate::tickets::Scope;

/// The states of DESIGN 3.9, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Queued,
    Materializing,
    Validating,
    Packaging,
    Encrypting,
    Stored,
    Completed,
    Failed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Queued,
        State::Materializing,
        State::Validating,
        State::Packaging,
        State::Encrypting,
        State::Stored,
        State::Completed,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "QUEUED",
            State::Materializing => "MATERIALIZING",
            State::Validating => "VALIDATING",
            State::Packaging => "PACKAGING",
            State::Encrypting => "ENCRYPTING",
            State::Stored => "STORED",
            State::Completed => "COMPLETED",
            State::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A runner is working on it.
    pub fn running(self) -> bool {
        !matches!(self, State::Queued | State::Completed | State::Failed)
    }
}

/// What was asked, as the runner needs it (the structured form is
/// compiled to SQL under the scope when the job is submitted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// The statement the guard decides when the job materialises; dropped
    /// when the job ends (it may hold values a forget must not leave).
    #[serde(default)]
    pub sql: String,
    pub format: String,
    /// Result columns written as a keyed hash instead of their value.
    pub hash_fields: Vec<String>,
    /// Hex SHA-256 of the ticket the job was submitted with (never the
    /// ticket): the audit records and the sentinel name it.
    pub ticket_hash: String,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub state: State,
    pub requester: String,
    pub dataset: String,
    pub reason: String,
    pub request: Request,
    pub scope: Scope,
    pub retention_days: i32,
    pub created_at: String,
    pub updated_at: String,
    pub attempts: i32,
    pub rows_done: i64,
    pub bytes: Option<i64>,
    pub bundle_sha256: Option<String>,
    pub location: Option<String>,
    pub error: Option<String>,
}

/// A new job's fields.
pub struct NewJob<'a> {
    pub id: &'a str,
    pub requester: &'a str,
    pub dataset: &'a str,
    pub reason: &'a str,
    pub request: &'a Request,
    pub scope: &'a Scope,
    pub retention_days: i32,
}

/// A claim on a job: who holds it, and which attempt it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub job: String,
    pub runner: String,
    pub attempt: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Database(#[from] MaintenanceError),
    #[error("export job {job} holds a {what} esq cannot read: {detail}")]
    Corrupt {
        job: String,
        what: &'static str,
        detail: String,
    },
    /// Another esq took the job over (this one was too slow to report).
    #[error("export job {0} was taken over by another runner")]
    ClaimLost(String),
}

fn db(err: tokio_postgres::Error) -> JobError {
    JobError::Database(MaintenanceError::database(err))
}

const TIME: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

fn columns() -> String {
    format!(
        "id, state, requester, dataset, reason, request::text, scope::text, retention_days, \
         to_char(created_at AT TIME ZONE 'UTC', {TIME}), to_char(updated_at AT TIME ZONE 'UTC', {TIME}), \
         attempts, rows_done, bytes, bundle_sha256, location, error"
    )
}

fn job_of(row: &tokio_postgres::Row) -> Result<Job, JobError> {
    let id: String = row.get(0);
    let corrupt = |what: &'static str, detail: String| JobError::Corrupt {
        job: id.clone(),
        what,
        detail,
    };
    let state: String = row.get(1);
    let state = State::parse(&state).ok_or_else(|| corrupt("state", state.clone()))?;
    let request: String = row.get(5);
    let request: Request =
        serde_json::from_str(&request).map_err(|e| corrupt("request", e.to_string()))?;
    let scope: String = row.get(6);
    let scope: Scope = serde_json::from_str(&scope).map_err(|e| corrupt("scope", e.to_string()))?;
    Ok(Job {
        state,
        requester: row.get(2),
        dataset: row.get(3),
        reason: row.get(4),
        request,
        scope,
        retention_days: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        attempts: row.get(10),
        rows_done: row.get(11),
        bytes: row.get(12),
        bundle_sha256: row.get(13),
        location: row.get(14),
        error: row.get(15),
        id,
    })
}

/// Queues a new job.
pub async fn insert(client: &impl GenericClient, job: &NewJob<'_>) -> Result<(), JobError> {
    let request = serde_json::to_string(job.request).map_err(|e| JobError::Corrupt {
        job: job.id.into(),
        what: "request",
        detail: e.to_string(),
    })?;
    let scope = serde_json::to_string(job.scope).map_err(|e| JobError::Corrupt {
        job: job.id.into(),
        what: "scope",
        detail: e.to_string(),
    })?;
    client
        .execute(
            "INSERT INTO esq.export_jobs (id, requester, dataset, reason, request, scope, retention_days) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7)",
            &[
                &job.id,
                &job.requester,
                &job.dataset,
                &job.reason,
                &request,
                &scope,
                &job.retention_days,
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

pub async fn get(client: &impl GenericClient, id: &str) -> Result<Option<Job>, JobError> {
    let sql = format!("SELECT {} FROM esq.export_jobs WHERE id = $1", columns());
    let row = client.query_opt(&sql, &[&id]).await.map_err(db)?;
    row.as_ref().map(job_of).transpose()
}

/// Claims the oldest queued job, or a running one whose runner has not
/// reported for `stale_after`: it starts again at `MATERIALIZING` as a
/// new attempt.
pub async fn claim_next(
    client: &impl GenericClient,
    runner: &str,
    stale_after: std::time::Duration,
) -> Result<Option<(Job, Claim)>, JobError> {
    let stale = stale_after.as_secs_f64();
    let sql = format!(
        "UPDATE esq.export_jobs SET state = 'MATERIALIZING', claimed_by = $1, heartbeat = now(), \
                updated_at = now(), attempts = attempts + 1, rows_done = 0, \
                bytes = NULL, bundle_sha256 = NULL, location = NULL \
         WHERE id = (SELECT id FROM esq.export_jobs \
                     WHERE state = 'QUEUED' \
                        OR (state NOT IN ('QUEUED', 'COMPLETED', 'FAILED') \
                            AND heartbeat < now() - make_interval(secs => $2)) \
                     ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1) \
         RETURNING {}",
        columns()
    );
    let row = client
        .query_opt(&sql, &[&runner, &stale])
        .await
        .map_err(db)?;
    let Some(row) = row else { return Ok(None) };
    let job = job_of(&row)?;
    let claim = Claim {
        job: job.id.clone(),
        runner: runner.to_string(),
        attempt: job.attempts,
    };
    Ok(Some((job, claim)))
}

/// Moves a claimed job on (and reports its heartbeat).
pub async fn advance(
    client: &impl GenericClient,
    claim: &Claim,
    state: State,
    rows_done: i64,
) -> Result<(), JobError> {
    let set = "state = $4, rows_done = $5, heartbeat = now(), updated_at = now()";
    update_claimed(client, claim, set, &[&state.as_str(), &rows_done]).await
}

/// Says the claim's runner is alive.
pub async fn heartbeat(client: &impl GenericClient, claim: &Claim) -> Result<(), JobError> {
    update_claimed(client, claim, "heartbeat = now()", &[]).await
}

/// Records the stored bundle.
pub async fn stored(
    client: &impl GenericClient,
    claim: &Claim,
    bytes: i64,
    bundle_sha256: &str,
    location: &str,
) -> Result<(), JobError> {
    let set = "state = 'STORED', bytes = $4, bundle_sha256 = $5, location = $6, \
               heartbeat = now(), updated_at = now()";
    update_claimed(client, claim, set, &[&bytes, &bundle_sha256, &location]).await
}

/// Marks a claimed job completed (in the ledger's transaction).
pub async fn completed(client: &impl GenericClient, claim: &Claim) -> Result<(), JobError> {
    let set = "state = 'COMPLETED', finished_at = now(), updated_at = now(), \
               heartbeat = NULL, error = NULL, request = request - 'sql'";
    update_claimed(client, claim, set, &[]).await
}

/// Ends a claimed job `FAILED` with a reason a requester may read.
pub async fn failed(
    client: &impl GenericClient,
    claim: &Claim,
    reason: &str,
) -> Result<(), JobError> {
    let set = "state = 'FAILED', finished_at = now(), updated_at = now(), \
               heartbeat = NULL, error = $4, request = request - 'sql', \
               bytes = NULL, bundle_sha256 = NULL, location = NULL";
    update_claimed(client, claim, set, &[&reason]).await
}

/// Gives a job back to the queue (esq is stopping): the next runner starts
/// it again without waiting for `stale_after`.
pub async fn release(
    client: &impl GenericClient,
    claim: &Claim,
    reason: &str,
) -> Result<(), JobError> {
    let set = "state = 'QUEUED', claimed_by = NULL, heartbeat = NULL, updated_at = now(), \
               rows_done = 0, error = $4, bytes = NULL, bundle_sha256 = NULL, location = NULL";
    update_claimed(client, claim, set, &[&reason]).await
}

/// `UPDATE … SET {set}` of the job `claim` holds, only while it holds it
/// ($1–$3 are the claim; `extra` are $4 on).
async fn update_claimed(
    client: &impl GenericClient,
    claim: &Claim,
    set: &str,
    extra: &[&(dyn ToSql + Sync)],
) -> Result<(), JobError> {
    let sql = format!(
        "UPDATE esq.export_jobs SET {set} WHERE id = $1 AND claimed_by = $2 AND attempts = $3"
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&claim.job, &claim.runner, &claim.attempt];
    params.extend_from_slice(extra);
    let changed = client.execute(&sql, &params).await.map_err(db)?;
    held(changed, claim)
}

fn held(changed: u64, claim: &Claim) -> Result<(), JobError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(JobError::ClaimLost(claim.job.clone()))
    }
}

/// Jobs by state, for the metrics gauge.
pub async fn count_by_state(client: &impl GenericClient) -> Result<Vec<(State, i64)>, JobError> {
    let rows = client
        .query(
            "SELECT state, count(*) FROM esq.export_jobs GROUP BY state",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .filter_map(|row| State::parse(row.get::<_, &str>(0)).map(|s| (s, row.get(1))))
        .collect())
}

/// A fresh job id: `E-` and 128 random bits in hex.
pub fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("E-{}", hex::encode(bytes)))
}

/// Whether `text` is shaped like a job id (checked before any lookup).
pub fn is_id(text: &str) -> bool {
    text.strip_prefix("E-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_only_the_middle_ones_run() {
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert!(State::Materializing.running() && State::Stored.running());
        assert!(!State::Queued.running() && !State::Completed.running());
        assert_eq!(State::parse("DONE"), None);
    }

    #[test]
    fn ids_are_random_and_checked_by_shape() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert_ne!(a, b);
        assert!(is_id(&a));
        assert!(!is_id("E-123"));
        assert!(!is_id("T-00000000000000000000000000000000"));
        assert!(!is_id(&a.replace('E', "e")));
    }
}
