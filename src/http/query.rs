//! `POST /api/dta/query`: the ticket from `X-ESQ-Ticket`, a structured or
//! SQL body, the one decision step ([`crate::decide`]), and the answer
//! streamed from the shared upstream pool as it arrives (a chunked JSON
//! array, or NDJSON with `Accept: application/x-ndjson`). Only the guard's
//! rendered SQL is ever sent upstream; every query ends in one audit record.

use std::time::Instant;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use super::error::ApiError;
use super::handler::{Aborted, Failure, Handler};
use super::rows::{Format, RowEncoder};
use crate::decide::{self, Asker, Completion, Run, Timing};
use crate::guard::structured::QueryBody;
use crate::metrics::{Door, DoorLabels};
use crate::tickets::TicketId;
use crate::upstream::{query, Reuse, UpstreamError};

/// Bytes gathered before a chunk is written to the client.
pub(super) const CHUNK_BYTES: usize = 16 * 1024;

pub const TICKET_HEADER: &str = "x-esq-ticket";

/// One query, in its `statement` span.
pub async fn query(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    use tracing::Instrument;
    let span = crate::telemetry::statement_span(Door::http);
    let started = Instant::now();
    let result = query_in_span(handler, session, &span)
        .instrument(span.clone())
        .await;
    handler
        .app()
        .metrics
        .statement_seconds
        .get_or_create(&DoorLabels { door: Door::http })
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn query_in_span(
    handler: &Handler,
    session: &mut ServerSession,
    span: &tracing::Span,
) -> Result<(), Failure> {
    let app = handler.app();
    let id = presented_ticket(session)?;
    let scope = live_scope(handler, &id).await?;
    crate::telemetry::record_user(span, &scope.user);
    handler.rate_limit(&scope.user)?;
    let in_flight = &handler.shared.in_flight;
    let _claim = in_flight
        .claim(&scope.user)
        .ok_or(ApiError::TooManyInFlight {
            limit: in_flight.limit(),
        })?;
    let body: QueryBody = handler.json_body(session).await?;
    let bundle = app.bundle();
    let dataset = bundle.catalog.dataset(&scope.dataset).ok_or_else(|| {
        ApiError::Internal(format!("ticket for unknown dataset {}", scope.dataset))
    })?;
    let sql = body.statement(dataset, &scope)?;
    crate::telemetry::record_statement(span, &sql, &app.config.log);

    let run = decide_now(handler, &id, &scope, &sql)?;
    let format = if accepts_ndjson(session) {
        Format::Ndjson
    } else {
        Format::Array
    };
    let answered = match &run.private {
        Some(private) => {
            super::private::answer(handler, session, &run, private, format, &scope.user).await
        }
        None => answer(handler, session, &run, format, &scope.user).await,
    };
    match answered {
        Ok(()) => Ok(()),
        Err(Ended { failure, sqlstate }) => {
            // The terminal record of a query that did not complete.
            if let Some(sqlstate) = sqlstate {
                app.audit
                    .record(&run.completion.event(None, Some(&sqlstate)));
            }
            Err(failure)
        }
    }
}

/// The scope of a presented ticket as of now; a stale one is counted and
/// recorded like any refused statement (step one of [`decide`]).
pub(super) async fn live_scope(
    handler: &Handler,
    id: &TicketId,
) -> Result<crate::tickets::Scope, ApiError> {
    let app = handler.app();
    match decide::check_ticket(&app.ticket_check_now(), id).await {
        Ok(scope) => Ok(scope),
        Err(refusal) => {
            let asker = Asker {
                door: Door::http,
                user: "",
                roles: &[],
                client: Some(handler.peer),
            };
            decide::ticket_refused(app, asker, id, "", refusal.clone());
            Err(ApiError::from(refusal))
        }
    }
}

/// Steps two to six for a statement of the ticket's holder, run now.
pub(super) fn decide_now(
    handler: &Handler,
    id: &TicketId,
    scope: &crate::tickets::Scope,
    sql: &str,
) -> Result<Run, ApiError> {
    let app = handler.app();
    let bundle = app.bundle();
    let asker = Asker {
        door: Door::http,
        user: &scope.user,
        roles: bundle.users.roles(&scope.user),
        client: Some(handler.peer),
    };
    let verdict = decide::decide(app, asker, Some(&id.hash()), Some(scope), sql, Timing::Now);
    verdict.result.map_err(ApiError::from)
}

/// The ticket in `X-ESQ-Ticket`.
pub(super) fn presented_ticket(session: &ServerSession) -> Result<TicketId, ApiError> {
    let text = session
        .get_header(TICKET_HEADER)
        .ok_or(ApiError::TicketRequired)?
        .to_str()
        .map_err(|_| ApiError::MalformedTicket)?;
    TicketId::parse(text.trim()).map_err(|_| ApiError::MalformedTicket)
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

/// How an answer that did not complete ended: what the client gets, and
/// the SQLSTATE its audit record carries (`None`: recorded already).
pub(super) struct Ended {
    pub failure: Failure,
    pub sqlstate: Option<String>,
}

impl Ended {
    pub fn upstream(err: UpstreamError) -> Ended {
        let sqlstate = match &err {
            UpstreamError::Server { code, .. } => code.clone(),
            UpstreamError::Timeout => "57014".into(),
            UpstreamError::Busy(_) => "53300".into(),
            _ => "08006".into(),
        };
        Ended {
            failure: ApiError::upstream(err).into(),
            sqlstate: Some(sqlstate),
        }
    }

    pub fn aborted(sqlstate: &str) -> Ended {
        Ended {
            failure: Failure::Aborted,
            sqlstate: Some(sqlstate.into()),
        }
    }
}

/// Runs the allowed statement on a connection of the shared pool and
/// streams its rows. The audit record is durable before the last chunk.
async fn answer(
    handler: &Handler,
    session: &mut ServerSession,
    run: &Run,
    format: Format,
    user: &str,
) -> Result<(), Ended> {
    let app = handler.app();
    with_rows(handler, run, user, query::Results::Binary, async |rows| {
        stream(session, rows, run, format, &run.completion, app).await
    })
    .await
}

/// Runs the guard's SQL on a connection of the shared pool, hands its rows
/// to `read`, and gives the connection back: kept only when read to the
/// end and idle, closed otherwise.
pub(super) async fn with_rows<T>(
    handler: &Handler,
    run: &Run,
    user: &str,
    results: query::Results,
    read: impl AsyncFnOnce(&mut query::Rows<'_>) -> Result<T, Ended>,
) -> Result<T, Ended> {
    let upstream = &handler.shared.upstream;
    let mut lease = upstream
        .acquire(Door::http, user)
        .await
        .map_err(Ended::upstream)?;
    let Some(conn) = lease.conn() else {
        return Err(Ended::aborted(crate::sqlstate::CONNECTION_FAILURE));
    };
    let timeout = handler.app().config.http.statement_timeout;
    let mut rows = query::start(conn, &run.allowed.sql, timeout, results)
        .await
        .map_err(Ended::upstream)?;
    let result = read(&mut rows).await;
    let reuse = if rows.finished() {
        Reuse::AsIs
    } else {
        Reuse::Close
    };
    drop(rows);
    upstream.release(lease, reuse).await;
    result
}

async fn stream(
    session: &mut ServerSession,
    rows: &mut query::Rows<'_>,
    run: &Run,
    format: Format,
    completion: &Completion,
    app: &crate::app::App,
) -> Result<(), Ended> {
    let mut encoder =
        RowEncoder::new(rows.columns(), format, query::Results::Binary).map_err(|err| Ended {
            failure: err.into(),
            sqlstate: Some("0A000".into()),
        })?;
    // The first row (or the end) before the status: most failures still
    // get a proper error answer.
    let first = rows.next().await.map_err(Ended::upstream)?;
    write_header(session, run, format, &[])
        .await
        .map_err(|_| Ended::aborted("08006"))?;
    let mut out = Vec::with_capacity(CHUNK_BYTES + 1024);
    encoder.start(&mut out);
    let mut next = first;
    while let Some(row) = next {
        if let Err(err) = encoder.row(&row, &mut out) {
            tracing::warn!(error = %err, "HTTP door: cannot encode a row; answer cut");
            return Err(Ended::aborted("XX000"));
        }
        if out.len() >= CHUNK_BYTES {
            let chunk = std::mem::replace(&mut out, Vec::with_capacity(CHUNK_BYTES + 1024));
            session
                .write_response_body(Bytes::from(chunk), false)
                .await
                .map_err(|_| Ended::aborted("08006"))?;
        }
        next = match rows.next().await {
            Ok(row) => row,
            Err(err) => {
                app.metrics.upstream_errors.inc();
                tracing::warn!(error = %err, "HTTP door: upstream failed mid-answer; answer cut");
                let sqlstate = Ended::upstream(err).sqlstate.unwrap_or_default();
                return Err(Ended::aborted(&sqlstate));
            }
        };
    }
    encoder.finish(&mut out);
    let event = completion.event(Some(encoder.rows()), None);
    if let Err(err) = crate::audit::record_durably(&*app.audit, &event).await {
        tracing::error!(%err, "HTTP door: the answer's audit record is not durable; answer cut");
        return Err(Ended {
            failure: Failure::Aborted,
            sqlstate: None,
        });
    }
    session
        .write_response_body(Bytes::from(out), true)
        .await
        .map_err(|_| Ended::aborted("08006"))
}

pub(super) async fn write_header(
    session: &mut ServerSession,
    run: &Run,
    format: Format,
    extra: &[(&'static str, String)],
) -> Result<(), Aborted> {
    let mut header = ResponseHeader::build(200, Some(6)).map_err(|_| Aborted)?;
    let headers = [
        ("content-type", format.content_type().to_string()),
        ("transfer-encoding", "chunked".to_string()),
        ("cache-control", "no-store".to_string()),
        (
            "x-esq-classification",
            run.allowed.classification.to_string(),
        ),
        ("x-esq-dropped-columns", run.allowed.dropped.join(",")),
        // The same words on every answer under small-group suppression,
        // whether or not a group was withheld (empty when none applies).
        (
            "x-esq-notice",
            run.allowed.withheld_notice().unwrap_or_default(),
        ),
    ];
    for (name, value) in headers.into_iter().chain(extra.iter().cloned()) {
        header.insert_header(name, value).map_err(|_| Aborted)?;
    }
    session
        .write_response_header(Box::new(header))
        .await
        .map_err(|_| Aborted)
}
