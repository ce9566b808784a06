//! `esq.exceptions` (migrations/V2): one row per exception, read and
//! written as the maintenance role. Every state change is one `UPDATE …
//! WHERE state = …` so that two stewards (or two replicas' sweeps) cannot
//! both move the same exception; the callers write the audit record inside
//! the same transaction, so no change is committed unrecorded.
//!
//! Times go in as RFC 3339 text and come out as microseconds since the
//! epoch (tokio-postgres is built without chrono support).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use tokio_postgres::{GenericClient, Row};

use super::ExceptionError;

/// Where an exception is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    /// Reserved by the schema for withdrawing an approval early (not yet
    /// offered).
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Revoked => "revoked",
        }
    }

    fn parse(text: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Expired,
            State::Revoked,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One exception, as its requester and the stewards see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exception {
    #[serde(rename = "exception")]
    pub id: String,
    pub state: State,
    pub requester: String,
    pub dataset: String,
    pub fields: Vec<String>,
    /// `"count"`, or `null` for row-level answers.
    pub aggregate: Option<String>,
    pub purpose: String,
    pub justification: String,
    /// How long it lasts once approved, e.g. `"7days"`.
    pub duration: String,
    pub duration_seconds: i64,
    /// The steward the requester asked to decide (`null`: any steward).
    pub approver: Option<String>,
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    #[serde(serialize_with = "time")]
    pub requested_at: DateTime<Utc>,
    #[serde(serialize_with = "maybe_time")]
    pub decided_at: Option<DateTime<Utc>>,
    /// Decision time plus the duration (approved, expired).
    #[serde(serialize_with = "maybe_time")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Tickets issued under it.
    pub uses: i64,
}

impl Exception {
    /// Pending, or approved and not past its time.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            State::Pending => true,
            State::Approved => self.expires_at.is_some_and(|at| at > now),
            _ => false,
        }
    }
}

/// A request to store.
#[derive(Debug, Clone)]
pub struct New<'a> {
    pub id: &'a str,
    pub requester: &'a str,
    pub dataset: &'a str,
    pub fields: &'a [String],
    pub aggregate: Option<&'a str>,
    pub purpose: &'a str,
    pub justification: &'a str,
    pub duration_seconds: i64,
    pub approver: Option<&'a str>,
    pub now: DateTime<Utc>,
}

const COLUMNS: &str = "id, state, requester, dataset, fields, aggregate, purpose, justification, \
     duration_secs, approver, decided_by, comment, \
     (extract(epoch FROM requested_at) * 1000000)::bigint, \
     (extract(epoch FROM decided_at) * 1000000)::bigint, \
     (extract(epoch FROM expires_at) * 1000000)::bigint, uses";

/// Open: pending, or approved until `$1`.
const OPEN: &str =
    "(state = 'pending' OR (state = 'approved' AND expires_at > $1::text::timestamptz))";

pub async fn insert(
    client: &impl GenericClient,
    new: &New<'_>,
) -> Result<Exception, ExceptionError> {
    let row = client
        .query_one(
            &format!(
                "INSERT INTO esq.exceptions (id, requester, dataset, fields, aggregate, purpose, \
                 justification, duration_secs, approver, requested_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::timestamptz) \
                 RETURNING {COLUMNS}"
            ),
            &[
                &new.id,
                &new.requester,
                &new.dataset,
                &new.fields,
                &new.aggregate,
                &new.purpose,
                &new.justification,
                &new.duration_seconds,
                &new.approver,
                &text(new.now),
            ],
        )
        .await
        .map_err(|e| ExceptionError::database("storing the exception", e))?;
    read(&row)
}

/// The exception `id`; with `lock`, locked until the transaction ends.
pub async fn get(
    client: &impl GenericClient,
    id: &str,
    lock: bool,
) -> Result<Option<Exception>, ExceptionError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM esq.exceptions WHERE id = $1{lock}"),
            &[&id],
        )
        .await
        .map_err(|e| ExceptionError::database("reading the exception", e))?;
    row.as_ref().map(read).transpose()
}

/// `user`'s own exceptions, and with `open_too` every open one (newest
/// first, at most `limit`).
pub async fn list(
    client: &impl GenericClient,
    user: &str,
    open_too: bool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Exception>, ExceptionError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM esq.exceptions WHERE requester = $2 OR ($3 AND {OPEN}) \
                 ORDER BY requested_at DESC, id LIMIT $4"
            ),
            &[&text(now), &user, &open_too, &limit],
        )
        .await
        .map_err(|e| ExceptionError::database("listing exceptions", e))?;
    rows.iter().map(read).collect()
}

/// Every open exception (oldest first), for the SSP.
pub async fn open(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<Exception>, ExceptionError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM esq.exceptions WHERE {OPEN} ORDER BY requested_at, id"),
            &[&text(now)],
        )
        .await
        .map_err(|e| ExceptionError::database("listing open exceptions", e))?;
    rows.iter().map(read).collect()
}

/// How many exceptions are open.
pub async fn count_open(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<i64, ExceptionError> {
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM esq.exceptions WHERE {OPEN}"),
            &[&text(now)],
        )
        .await
        .map_err(|e| ExceptionError::database("counting open exceptions", e))?;
    Ok(row.get(0))
}

/// Moves a pending exception to approved (expiring `now` + its duration)
/// or denied; `None` when it is not pending (any more).
pub async fn decide(
    client: &impl GenericClient,
    id: &str,
    approve: bool,
    decided_by: &str,
    comment: &str,
    now: DateTime<Utc>,
) -> Result<Option<Exception>, ExceptionError> {
    let state = if approve { "approved" } else { "denied" };
    let row = client
        .query_opt(
            &format!(
                "UPDATE esq.exceptions SET state = $2, decided_by = $3, comment = $4, \
                 decided_at = $5::text::timestamptz, \
                 expires_at = CASE WHEN $2 = 'approved' \
                     THEN $5::text::timestamptz + duration_secs * interval '1 second' END \
                 WHERE id = $1 AND state = 'pending' RETURNING {COLUMNS}"
            ),
            &[&id, &state, &decided_by, &comment, &text(now)],
        )
        .await
        .map_err(|e| ExceptionError::database("deciding the exception", e))?;
    row.as_ref().map(read).transpose()
}

/// Counts one use by `requester`, if the exception is still approved and
/// unexpired at `now`: its uses then, else `None`.
pub async fn record_use(
    client: &impl GenericClient,
    id: &str,
    requester: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ExceptionError> {
    let row = client
        .query_opt(
            "UPDATE esq.exceptions SET uses = uses + 1 \
             WHERE id = $1 AND requester = $2 AND state = 'approved' \
               AND expires_at > $3::text::timestamptz \
             RETURNING uses",
            &[&id, &requester, &text(now)],
        )
        .await
        .map_err(|e| ExceptionError::database("counting the exception's use", e))?;
    Ok(row.map(|r| r.get(0)))
}

/// Records a ticket issued under exception `id` (its hash), so that a
/// withdrawal can revoke it.
pub async fn record_ticket(
    client: &impl GenericClient,
    id: &str,
    ticket_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), ExceptionError> {
    client
        .execute(
            "INSERT INTO esq.exception_tickets (exception, ticket_hash, expires_at) \
             VALUES ($1, $2, $3::text::timestamptz) ON CONFLICT DO NOTHING",
            &[&id, &ticket_hash, &text(expires_at)],
        )
        .await
        .map_err(|e| ExceptionError::database("recording the exception's ticket", e))?;
    Ok(())
}

/// Withdraws an approved exception: it becomes `revoked` (expiring now);
/// `None` when it is not approved (any more). Returns the hashes of its
/// tickets still live at `now`.
pub async fn revoke(
    client: &impl GenericClient,
    id: &str,
    revoked_by: &str,
    comment: &str,
    now: DateTime<Utc>,
) -> Result<Option<(Exception, Vec<String>)>, ExceptionError> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE esq.exceptions SET state = 'revoked', expires_at = $3::text::timestamptz, \
                 comment = coalesce(comment || E'\\n', '') || 'withdrawn by ' || $2 || ': ' || $4 \
                 WHERE id = $1 AND state = 'approved' RETURNING {COLUMNS}"
            ),
            &[&id, &revoked_by, &text(now), &comment],
        )
        .await
        .map_err(|e| ExceptionError::database("withdrawing the exception", e))?;
    let Some(row) = row else { return Ok(None) };
    let exception = read(&row)?;
    let tickets = client
        .query(
            "SELECT ticket_hash FROM esq.exception_tickets \
             WHERE exception = $1 AND expires_at > $2::text::timestamptz",
            &[&id, &text(now)],
        )
        .await
        .map_err(|e| ExceptionError::database("reading the exception's tickets", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some((exception, tickets)))
}

/// Marks every approved exception past its time as expired, and returns
/// them (each exactly once, whichever replica's sweep gets there first).
pub async fn expire_due(
    client: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<Exception>, ExceptionError> {
    let rows = client
        .query(
            &format!(
                "UPDATE esq.exceptions SET state = 'expired' \
                 WHERE state = 'approved' AND expires_at <= $1::text::timestamptz \
                 RETURNING {COLUMNS}"
            ),
            &[&text(now)],
        )
        .await
        .map_err(|e| ExceptionError::database("expiring exceptions", e))?;
    rows.iter().map(read).collect()
}

fn read(row: &Row) -> Result<Exception, ExceptionError> {
    let bad = |detail: String| ExceptionError::Database {
        what: "reading an exception",
        detail,
    };
    let state: String = row.try_get(1).map_err(|e| bad(e.to_string()))?;
    let state = State::parse(&state).ok_or_else(|| bad(format!("unknown state {state:?}")))?;
    let duration_seconds: i64 = row.try_get(8).map_err(|e| bad(e.to_string()))?;
    let micros = |index: usize| -> Result<Option<DateTime<Utc>>, ExceptionError> {
        let value: Option<i64> = row.try_get(index).map_err(|e| bad(e.to_string()))?;
        value
            .map(|v| {
                DateTime::from_timestamp_micros(v).ok_or_else(|| bad("a time out of range".into()))
            })
            .transpose()
    };
    let get = |index: usize| -> Result<String, ExceptionError> {
        row.try_get(index).map_err(|e| bad(e.to_string()))
    };
    let maybe = |index: usize| -> Result<Option<String>, ExceptionError> {
        row.try_get(index).map_err(|e| bad(e.to_string()))
    };
    Ok(Exception {
        id: get(0)?,
        state,
        requester: get(2)?,
        dataset: get(3)?,
        fields: row.try_get(4).map_err(|e| bad(e.to_string()))?,
        aggregate: maybe(5)?,
        purpose: get(6)?,
        justification: get(7)?,
        duration: humantime::format_duration(std::time::Duration::from_secs(
            u64::try_from(duration_seconds).unwrap_or(0),
        ))
        .to_string(),
        duration_seconds,
        approver: maybe(9)?,
        decided_by: maybe(10)?,
        comment: maybe(11)?,
        requested_at: micros(12)?.ok_or_else(|| bad("no request time".into()))?,
        decided_at: micros(13)?,
        expires_at: micros(14)?,
        uses: row.try_get(15).map_err(|e| bad(e.to_string()))?,
    })
}

/// `now` as the database reads it (microseconds, UTC).
fn text(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// RFC 3339 to the second, UTC (as ticket expiries are shown).
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(at))
}

fn maybe_time<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&rfc3339(at)),
        None => serializer.serialize_none(),
    }
}
