//! `POST /api/dta/query`: the ticket from `X-ESQ-Ticket`, a structured or
//! SQL body, the guard's decision, and the answer streamed from the upstream
//! database as it arrives (a chunked JSON array, or NDJSON with
//! `Accept: application/x-ndjson`). Only the guard's rendered SQL is ever
//! sent upstream. Every decision is counted and audited.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use tokio_postgres::types::ToSql;

use super::error::ApiError;
use super::handler::{Aborted, Failure, Handler};
use super::pool::{describe, sqlstate, PoolError};
use super::rows::{Format, RowEncoder};
use super::structured::QueryBody;
use crate::audit::{fingerprint, AuditEvent, AuditKind};
use crate::guard::{Allowed, Decision};
use crate::metrics::{Door, DoorLabels, Outcome};
use crate::tickets::{Lookup, Scope, TicketHash, TicketId};

/// Bytes gathered before a chunk is written to the client.
const CHUNK_BYTES: usize = 16 * 1024;

pub const TICKET_HEADER: &str = "x-esq-ticket";

/// What the audit record of one query needs.
struct Audit<'a> {
    handler: &'a Handler,
    scope: &'a Scope,
    hash: TicketHash,
    fingerprint: String,
    /// The query's record was written (once per query).
    recorded: AtomicBool,
}

impl Audit<'_> {
    fn record(
        &self,
        outcome: Outcome,
        sqlstate: Option<&str>,
        allowed: Option<&Allowed>,
        rows: Option<u64>,
        policy_id: Option<&str>,
    ) -> Option<u64> {
        let app = self.handler.app();
        self.recorded.store(true, Ordering::Relaxed);
        app.metrics.decision(Door::http, outcome);
        crate::telemetry::record_outcome(outcome);
        let roles = app
            .users
            .principal(&self.scope.user)
            .map(|p| p.roles.as_slice())
            .unwrap_or_default();
        app.audit.record(&AuditEvent {
            roles,
            client: Some(self.handler.peer),
            ticket_hash: Some(self.hash.to_hex()),
            dataset: Some(&self.scope.dataset),
            outcome,
            sqlstate,
            fingerprint: self.fingerprint.clone(),
            rewritten: allowed.map(|a| a.sql.as_str()),
            rows,
            classification: allowed.map(|a| a.classification.to_string()),
            policy_id,
            ..AuditEvent::event(AuditKind::Decision, Door::http, &self.scope.user)
        })
    }
}

/// One query, in its `statement` span.
pub async fn query(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    use tracing::Instrument;
    let span = crate::telemetry::statement_span(Door::http);
    query_in_span(handler, session, &span)
        .instrument(span.clone())
        .await
}

async fn query_in_span(
    handler: &Handler,
    session: &mut ServerSession,
    span: &tracing::Span,
) -> Result<(), Failure> {
    let started = Instant::now();
    let app = handler.app();
    let (scope, hash) = ticket(handler, session).await?;
    crate::telemetry::record_user(span, &scope.user);
    handler.rate_limit(&scope.user)?;
    let body: QueryBody = handler.json_body(session).await?;
    let dataset = app.catalog.dataset(&scope.dataset).ok_or_else(|| {
        ApiError::Internal(format!("ticket for unknown dataset {}", scope.dataset))
    })?;
    let sql = body.statement(dataset, &scope)?;
    crate::telemetry::record_statement(span, &sql, &app.config.log);

    let guard_started = Instant::now();
    let decision = app.guard.decide(Some(&scope), &sql);
    app.metrics
        .guard_seconds
        .observe(guard_started.elapsed().as_secs_f64());
    let audit = Audit {
        handler,
        scope: &scope,
        hash,
        fingerprint: fingerprint(&sql),
        recorded: AtomicBool::new(false),
    };
    app.sentinel.decided(
        &scope.user,
        Some(&hash),
        matches!(decision, Decision::Deny(_)),
    );
    let allowed = match decision {
        Decision::Deny(denial) => {
            audit.record(
                Outcome::deny,
                Some(denial.code),
                None,
                None,
                denial.policy_id.as_deref(),
            );
            return Err(ApiError::GuardDenied(denial).into());
        }
        Decision::Allow(allowed) => allowed,
    };
    app.sentinel
        .used(&hash, &scope.user, crate::sentinel::fingerprint(&sql));
    let outcome = if allowed.sql == sql {
        Outcome::allow
    } else {
        Outcome::rewrite
    };
    if let Err(err) = app.audit.check() {
        tracing::error!(%err, "HTTP query refused: the audit log cannot be written");
        return Err(ApiError::Unavailable(
            "the audit log cannot be written, so esq runs no query".into(),
        )
        .into());
    }
    let format = if accepts_ndjson(session) {
        Format::Ndjson
    } else {
        Format::Array
    };

    let result = stream_answer(handler, session, &allowed, format, &audit, outcome).await;
    if result.is_err() && !audit.recorded.load(Ordering::Relaxed) {
        audit.record(outcome, Some("58000"), Some(&allowed), None, None);
    }
    app.metrics
        .statement_seconds
        .get_or_create(&DoorLabels { door: Door::http })
        .observe(started.elapsed().as_secs_f64());
    result.map(|_| ())
}

/// The presented ticket's scope, or why it cannot be used.
async fn ticket(
    handler: &Handler,
    session: &ServerSession,
) -> Result<(Scope, TicketHash), ApiError> {
    let app = handler.app();
    let text = session
        .get_header(TICKET_HEADER)
        .ok_or(ApiError::TicketRequired)?
        .to_str()
        .map_err(|_| ApiError::MalformedTicket)?;
    let id = TicketId::parse(text.trim()).map_err(|_| ApiError::MalformedTicket)?;
    let lookup = app
        .tickets
        .store
        .get(&id, Utc::now())
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    match lookup {
        Lookup::Valid(ticket) => Ok((ticket.scope, id.hash())),
        Lookup::Stale(why) => {
            app.metrics.decision(Door::http, Outcome::stale);
            crate::telemetry::record_outcome(Outcome::stale);
            app.audit.record(&AuditEvent {
                client: Some(handler.peer),
                ticket_hash: Some(id.hash().to_hex()),
                outcome: Outcome::stale,
                sqlstate: Some("28000"),
                fingerprint: fingerprint(&format!("{why:?}")),
                ..AuditEvent::event(AuditKind::Decision, Door::http, "")
            });
            Err(ApiError::TicketStale)
        }
    }
}

fn accepts_ndjson(session: &ServerSession) -> bool {
    session
        .get_header("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|media| {
                media
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/x-ndjson")
            })
        })
}

/// Runs the allowed statement and streams its rows; the number of rows.
/// The query's audit record is durable before the answer's last chunk.
async fn stream_answer(
    handler: &Handler,
    session: &mut ServerSession,
    allowed: &Allowed,
    format: Format,
    audit: &Audit<'_>,
    outcome: Outcome,
) -> Result<u64, Failure> {
    let app = handler.app();
    let upstream_failed = |message: String| {
        app.metrics.upstream_errors.inc();
        ApiError::Upstream(message)
    };
    let mut lease = handler.shared.pool.get().await.map_err(|err| match err {
        PoolError::Busy => {
            ApiError::Unavailable("all upstream connections are busy; retry shortly".into())
        }
        other => upstream_failed(other.to_string()),
    })?;
    let statement = lease
        .prepare(&allowed.sql)
        .await
        .map_err(|err| upstream_failed(describe(&err)))?;
    let client = lease.client();
    let mut encoder = RowEncoder::new(statement.columns(), format).map_err(ApiError::Upstream)?;
    let params: [&(dyn ToSql + Sync); 0] = [];
    let rows = client
        .query_raw(&statement, params)
        .await
        .map_err(|err| upstream_failed(describe(&err)))?;
    let mut rows = Box::pin(rows);
    // The first row (or the end) before the status: most failures still
    // get a proper error answer.
    let first = rows
        .next()
        .await
        .transpose()
        .map_err(|err| upstream_failed(describe(&err)))?;

    let mut header = ResponseHeader::build(200, Some(6)).map_err(|_| Aborted)?;
    let headers = [
        ("content-type", format.content_type().to_string()),
        ("transfer-encoding", "chunked".to_string()),
        ("cache-control", "no-store".to_string()),
        ("x-esq-classification", allowed.classification.to_string()),
        ("x-esq-dropped-columns", allowed.dropped.join(",")),
    ];
    for (name, value) in headers {
        header.insert_header(name, value).map_err(|_| Aborted)?;
    }
    session
        .write_response_header(Box::new(header))
        .await
        .map_err(|_| Aborted)?;

    let mut out = Vec::with_capacity(CHUNK_BYTES + 1024);
    encoder.start(&mut out);
    let mut next = first;
    while let Some(row) = next {
        encoder.row(&row, &mut out).map_err(|err| {
            tracing::warn!(error = %err, "HTTP door: cannot encode a row; answer cut");
            Aborted
        })?;
        if out.len() >= CHUNK_BYTES {
            let chunk = Bytes::from(std::mem::replace(
                &mut out,
                Vec::with_capacity(CHUNK_BYTES + 1024),
            ));
            session
                .write_response_body(chunk, false)
                .await
                .map_err(|_| Aborted)?;
        }
        next = match rows.next().await.transpose() {
            Ok(row) => row,
            Err(err) => {
                app.metrics.upstream_errors.inc();
                // The database's message may quote a value: log the SQLSTATE.
                tracing::warn!(
                    sqlstate = sqlstate(&err),
                    "HTTP door: upstream failed mid-answer; answer cut"
                );
                return Err(Failure::Aborted);
            }
        };
    }
    encoder.finish(&mut out);
    let seq = audit.record(outcome, None, Some(allowed), Some(encoder.rows()), None);
    let durable = match seq {
        Some(seq) => app.audit.durable(seq).await,
        None => Err(crate::audit::AuditError::NotQueued),
    };
    if let Err(err) = durable {
        tracing::error!(%err, "HTTP door: the answer's audit record is not durable; answer cut");
        return Err(Failure::Aborted);
    }
    session
        .write_response_body(Bytes::from(out), true)
        .await
        .map_err(|_| Aborted)?;
    drop(rows);
    lease.release();
    Ok(encoder.rows())
}
