//! Governed exports on the HTTP door (DESIGN 3.9). `POST /api/dta/export`
//! takes the ticket from `X-ESQ-Ticket` like a query, has the guard decide
//! the statement now (a refused export is refused at once, like a query),
//! and queues a job in schema `esq` (`202`); the job materialises later
//! under the same scope (see [`crate::exports::runner`]).
//! `GET /api/dta/export/{job}` shows its state, progress, bundle and
//! ledger entry; `GET /api/dta/export/{job}/bundle` downloads the sealed
//! bundle. Both are for the requester (by bearer token or a live ticket of
//! theirs) and for `esq_admin`; anyone else gets `404`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, Dependency};
use super::handler::{send_json, Failure, Handler};
use super::query::{decide_now, live_scope, presented_ticket};
use crate::audit::{fingerprint, record_durably, AuditEvent, AuditKind};
use crate::decide;
use crate::exports::job::{self, NewJob, Request};
use crate::exports::ledger;
use crate::guard::structured::QueryBody;
use crate::lifecycle::Maintenance;
use crate::metrics::Door;

const OFF: &str =
    "exports are off on this esq: an operator sets [exports] dir and kek_file (and [maintenance])";
const NO_JOB: &str = "no export job of yours has this id";
const NO_BUNDLE: &str =
    "this job has no bundle to download: it has not completed, or its bundle was purged";
/// The longest `reason` kept.
const MAX_REASON: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    #[serde(default)]
    query: Option<QueryBody>,
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    hash_fields: Vec<String>,
    #[serde(default)]
    retention_days: Option<u32>,
}

/// `POST /api/dta/export`.
pub async fn submit(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let app = handler.app();
    if !app.config.exports.enabled() {
        return Err(ApiError::NotConfigured(OFF).into());
    }
    let id = presented_ticket(session)?;
    let scope = live_scope(handler, &id).await?;
    handler.rate_limit(&scope.user)?;
    let body: ExportBody = handler.json_body(session).await?;
    let retention_days = check_body(app, &body)?;
    let bundle = app.bundle();
    let dataset = bundle.catalog.dataset(&scope.dataset).ok_or_else(|| {
        ApiError::Internal(format!("ticket for unknown dataset {}", scope.dataset))
    })?;
    let query = match (body.query, body.sql) {
        (Some(query), None) if query.sql.is_none() => query,
        (None, Some(sql)) => QueryBody {
            sql: Some(sql),
            ..QueryBody::default()
        },
        _ => {
            return Err(ApiError::bad_request(
                Some("query"),
                "send either \"query\" (the structured keys: groupBy, select, where, orderBy, limit) or \"sql\", not both",
            )
            .into())
        }
    };
    let sql = query.statement(dataset, &scope)?;
    let run = decide_now(handler, &id, &scope, &sql)?;
    let hash = id.hash();
    let roles = bundle.users.roles(&scope.user);
    if run.allowed.kinds.len() != 1 {
        return Err(ApiError::bad_request(Some("sql"), "an export is one query").into());
    }
    let row_level = scope.aggregate.is_none() && run.private.is_none();
    if row_level && !bundle.catalog.subject_fields(dataset).is_empty() {
        // As asked and as it runs (the guard's rendering is what executes).
        for text in [sql.as_str(), run.allowed.sql.as_str()] {
            crate::exports::materialise::reads_one_table(text)
                .map_err(|why| ApiError::bad_request(Some("sql"), why))?;
        }
    }
    let job_id = job::new_id().map_err(|err| ApiError::Internal(format!("job id: {err}")))?;
    let request = Request {
        sql,
        format: "csv".into(),
        hash_fields: body.hash_fields,
        ticket_hash: hash.to_hex(),
    };
    let new = NewJob {
        id: &job_id,
        requester: &scope.user,
        dataset: &scope.dataset,
        reason: body.reason.trim(),
        request: &request,
        scope: &scope,
        retention_days,
    };
    let maintenance = Maintenance::connect_current(&app.config)
        .await
        .map_err(|err| {
            tracing::error!(%err, "exports: schema esq is unavailable");
            ApiError::Unavailable(Dependency::Database)
        })?;
    job::insert(&maintenance.client, &new)
        .await
        .map_err(|err| {
            tracing::error!(%err, "exports: the job could not be queued");
            ApiError::Unavailable(Dependency::Database)
        })?;
    // The job is answered only once its queuing is on record.
    let event = AuditEvent {
        roles,
        client: Some(handler.peer),
        ticket_hash: Some(hash.to_hex()),
        dataset: Some(&scope.dataset),
        fingerprint: fingerprint(&request.sql),
        rewritten: Some(run.allowed.recorded()),
        classification: Some(run.allowed.classification.to_string()),
        detail: Some(json!({
            "action": "queued", "job": job_id, "retention_days": retention_days,
            "hash_fields": request.hash_fields,
        })),
        ..AuditEvent::event(AuditKind::Export, Door::http, &scope.user)
    };
    record_durably(&*app.audit, &event)
        .await
        .map_err(ApiError::audit)?;
    send_json(
        session,
        202,
        &json!({"job": job_id, "state": "QUEUED"}),
        &[],
    )
    .await?;
    Ok(())
}

/// The body's own checks; returns the retention in days.
fn check_body(app: &crate::app::App, body: &ExportBody) -> Result<i32, ApiError> {
    let config = &app.config.exports;
    match body.format.as_deref() {
        None | Some("csv") => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                Some("format"),
                "the only format is \"csv\"",
            ))
        }
    }
    let reason = body.reason.trim();
    let misleading = |c: char| c.is_control() || crate::lifecycle::forget::misleads(c);
    if reason.is_empty() || reason.len() > MAX_REASON || reason.chars().any(misleading) {
        return Err(ApiError::bad_request(
            Some("reason"),
            format!("required: why the data leaves, one line (at most {MAX_REASON} bytes); the consent ledger keeps it"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for field in &body.hash_fields {
        if field.is_empty()
            || field.len() > 63
            || field.chars().any(char::is_control)
            || !seen.insert(field)
        {
            return Err(ApiError::bad_request(
                Some("hash_fields"),
                "a list of distinct column names of the answer",
            ));
        }
    }
    let days = body.retention_days.unwrap_or(config.default_retention_days);
    if days == 0 || days > config.max_retention_days {
        return Err(ApiError::bad_request(
            Some("retention_days"),
            format!(
                "between 1 and {} (exports.max_retention_days)",
                config.max_retention_days
            ),
        ));
    }
    Ok(days as i32)
}

/// `GET /api/dta/export/{job}` and `…/{job}/bundle`.
pub async fn status(
    handler: &Handler,
    session: &mut ServerSession,
    rest: &str,
) -> Result<(), Failure> {
    let app = handler.app();
    if !app.config.exports.enabled() {
        return Err(ApiError::NotConfigured(OFF).into());
    }
    let (id, download) = match rest.strip_suffix("/bundle") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let asker = asker(handler, session).await?;
    handler.rate_limit(&asker.name)?;
    if !job::is_id(id) {
        return Err(ApiError::Missing(NO_JOB).into());
    }
    let maintenance = Maintenance::connect_current(&app.config)
        .await
        .map_err(|err| {
            tracing::error!(%err, "exports: schema esq is unavailable");
            ApiError::Unavailable(Dependency::Database)
        })?;
    let found = job::get(&maintenance.client, id).await.map_err(|err| {
        tracing::error!(%err, "exports: cannot read the job");
        ApiError::Unavailable(Dependency::Database)
    })?;
    let Some(found) = found.filter(|j| j.requester == asker.name || asker.admin) else {
        return Err(ApiError::Missing(NO_JOB).into());
    };
    let entry = ledger::entry(&maintenance.client, id)
        .await
        .map_err(|err| {
            tracing::error!(%err, "exports: cannot read the ledger");
            ApiError::Unavailable(Dependency::Database)
        })?;
    if download {
        return download_bundle(handler, session, &found, entry.as_ref(), &asker.name).await;
    }
    let bundle = found
        .location
        .as_ref()
        .map(|file| json!({"file": file, "bytes": found.bytes, "sha256": found.bundle_sha256}));
    let body = json!({
        "job": found.id,
        "state": found.state,
        "requester": found.requester,
        "dataset": found.dataset,
        "created_at": found.created_at,
        "updated_at": found.updated_at,
        "attempts": found.attempts,
        "progress": {"rows": found.rows_done},
        "bundle_sha256": found.bundle_sha256,
        "bundle": bundle,
        "ledger": entry,
        "error": found.error,
    });
    send_json(session, 200, &body, &[]).await?;
    Ok(())
}

/// Streams the sealed bundle of a completed job (it is encrypted: only a
/// holder of the KEK opens it). Audited.
async fn download_bundle(
    handler: &Handler,
    session: &mut ServerSession,
    found: &job::Job,
    entry: Option<&ledger::Entry>,
    user: &str,
) -> Result<(), Failure> {
    use tokio::io::AsyncReadExt;
    let app = handler.app();
    let available = entry.filter(|e| e.purged_at.is_none());
    let (Some(dir), Some(entry)) = (app.config.exports.dir.as_deref(), available) else {
        return Err(ApiError::Missing(NO_BUNDLE).into());
    };
    let path = dir.join(format!("{}.enc", found.id));
    let mut file = tokio::fs::File::open(&path).await.map_err(|err| {
        tracing::warn!(job = found.id, %err, "exports: the bundle cannot be opened");
        ApiError::Missing(NO_BUNDLE)
    })?;
    let event = AuditEvent {
        client: Some(handler.peer),
        dataset: Some(&found.dataset),
        detail: Some(json!({"action": "downloaded", "job": found.id})),
        ..AuditEvent::event(AuditKind::Export, Door::http, user)
    };
    record_durably(&*app.audit, &event)
        .await
        .map_err(ApiError::audit)?;
    let mut header = ResponseHeader::build(200, None)
        .map_err(|err| ApiError::Internal(format!("response header: {err}")))?;
    let name = format!("attachment; filename=\"{}.enc\"", found.id);
    for (key, value) in [
        ("content-type", "application/octet-stream".to_string()),
        ("content-disposition", name),
        ("x-esq-bundle-sha256", entry.bundle_sha256.clone()),
        ("cache-control", "no-store".to_string()),
    ] {
        header
            .insert_header(key, value)
            .map_err(|err| ApiError::Internal(format!("response header: {err}")))?;
    }
    session
        .write_response_header(Box::new(header))
        .await
        .map_err(|_| Failure::Aborted)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).await.map_err(|_| Failure::Aborted)?;
        let end = read == 0;
        session
            .write_response_body(Bytes::copy_from_slice(&buffer[..read]), end)
            .await
            .map_err(|_| Failure::Aborted)?;
        if end {
            return Ok(());
        }
    }
}

struct Viewer {
    name: String,
    admin: bool,
}

/// The bearer token's user, or the user of a live ticket.
async fn asker(handler: &Handler, session: &ServerSession) -> Result<Viewer, ApiError> {
    if session.get_header("authorization").is_some() {
        let user = handler.authenticate(session)?;
        return Ok(Viewer {
            admin: user.has_role(super::tickets::ADMIN_ROLE),
            name: user.name,
        });
    }
    let id = presented_ticket(session).map_err(|_| {
        ApiError::Unauthorized(
            "send Authorization: Bearer <token>, or X-ESQ-Ticket with a live ticket of yours",
        )
    })?;
    let scope = decide::check_ticket(&handler.app().ticket_check_now(), &id)
        .await
        .map_err(ApiError::from)?;
    Ok(Viewer {
        name: scope.user,
        admin: false,
    })
}
