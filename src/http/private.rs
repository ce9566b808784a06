//! A private answer on the HTTP door (DESIGN 3.7): the budget is checked
//! before the statement runs, its rows are collected (never streamed), the
//! release step noises and thresholds them and charges the budget, and only
//! then is the answer written — with `ESQ-Privacy-Budget` saying what was
//! spent, and the audit record saying it too. Rows come back in text, the
//! format the PostgreSQL door's simple queries use, so a statement repeated
//! on either door recalls one answer.

use bytes::Bytes;
use pingora::protocols::http::ServerSession;

use super::error::ApiError;
use super::handler::{Failure, Handler};
use super::query::{with_rows, write_header, Ended, CHUNK_BYTES};
use super::rows::{Format, RowEncoder};
use crate::decide::private::{self, Bound, PrivateQuery, Releasing, Spend};
use crate::decide::Run;
use crate::upstream::query::{Column, Results};

/// The header that tells the requester what the answer spent.
pub const BUDGET_HEADER: &str = "esq-privacy-budget";

/// `GET /api/esq/budget[?dataset=D]` with `X-ESQ-Ticket`: the budget the
/// ticket's answers spend (its user, its dataset, its privacy parameters).
pub async fn budget(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let app = handler.app();
    let id = super::query::presented_ticket(session)?;
    let scope = match crate::decide::check_ticket(&app.ticket_check_now(), &id).await {
        Ok(scope) => scope,
        Err(refusal) => return Err(ApiError::from(refusal).into()),
    };
    handler.rate_limit(&scope.user)?;
    if let Some(asked) = dataset_param(session.req_header().uri.query())? {
        if asked != scope.dataset {
            return Err(ApiError::bad_request(
                Some("dataset"),
                format!("the ticket is for dataset {:?}", scope.dataset),
            )
            .into());
        }
    }
    let Some(privacy) = &scope.privacy else {
        return Err(ApiError::bad_request(
            None,
            "this ticket carries no privacy budget (its answers are k-suppressed counts or rows)",
        )
        .into());
    };
    let status = app
        .privacy
        .status(&scope.user, &scope.dataset, privacy)
        .await
        .map_err(|err| {
            tracing::error!(%err, "the privacy ledger did not answer");
            ApiError::Unavailable(super::error::Dependency::PrivacyLedger)
        })?;
    let body = serde_json::to_value(&status)
        .map_err(|err| ApiError::Internal(format!("budget response: {err}")))?;
    super::handler::send_json(session, 200, &body, &[]).await?;
    Ok(())
}

/// The `dataset` query parameter, if given.
fn dataset_param(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut dataset = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("dataset", value)) if !value.is_empty() && dataset.is_none() => {
                dataset = Some(value.to_string())
            }
            _ => {
                return Err(ApiError::bad_request(
                    None,
                    "the only query parameter is dataset=<id>, once",
                ))
            }
        }
    }
    Ok(dataset)
}

pub(super) async fn answer(
    handler: &Handler,
    session: &mut ServerSession,
    run: &Run,
    query: &PrivateQuery,
    format: Format,
    user: &str,
) -> Result<(), Ended> {
    let app = handler.app();
    let bound = Bound::default();
    private::check(app, query, &bound)
        .await
        .map_err(|refusal| refused(refusal.into()))?;
    let (columns, releasing) = collect(handler, run, query, bound, user).await?;
    let (rows, spend) = releasing
        .finish(app)
        .await
        .map_err(|refusal| refused(refusal.into()))?;
    let mut encoder = RowEncoder::new(&columns, format, Results::Text).map_err(|err| Ended {
        failure: err.into(),
        sqlstate: Some(crate::sqlstate::FEATURE_NOT_SUPPORTED.into()),
    })?;
    let mut out = Vec::with_capacity(CHUNK_BYTES);
    encoder.start(&mut out);
    for row in &rows {
        if let Err(err) = encoder.row(row, &mut out) {
            tracing::warn!(error = %err, "HTTP door: cannot encode a private row");
            return Err(Ended::aborted(crate::sqlstate::INTERNAL_ERROR));
        }
    }
    encoder.finish(&mut out);
    record(app, run, encoder.rows(), &spend).await?;
    write_header(session, run, format, &[(BUDGET_HEADER, spend.header())])
        .await
        .map_err(|_| Ended::aborted(crate::sqlstate::CONNECTION_FAILURE))?;
    session
        .write_response_body(Bytes::from(out), true)
        .await
        .map_err(|_| Ended::aborted(crate::sqlstate::CONNECTION_FAILURE))
}

/// Runs the guard's SQL and feeds its rows to the release step.
async fn collect(
    handler: &Handler,
    run: &Run,
    query: &PrivateQuery,
    bound: Bound,
    user: &str,
) -> Result<(Vec<Column>, Releasing), Ended> {
    let releaser = &handler.app().privacy;
    with_rows(handler, run, user, Results::Text, async |rows| {
        let columns = rows.columns().to_vec();
        let mut releasing = Releasing::new(std::sync::Arc::new(query.clone()), bound);
        while let Some(row) = rows.next().await.map_err(Ended::upstream)? {
            releasing.push(releaser, row);
        }
        Ok((columns, releasing))
    })
    .await
}

/// The answer's audit record, durable before anything is sent.
async fn record(app: &crate::app::App, run: &Run, rows: u64, spend: &Spend) -> Result<(), Ended> {
    let event = crate::audit::AuditEvent {
        detail: Some(spend.detail()),
        ..run.completion.event(Some(rows), None)
    };
    crate::audit::record_durably(&*app.audit, &event)
        .await
        .map(|_| ())
        .map_err(|err| {
            tracing::error!(%err, "HTTP door: the private answer's audit record is not durable");
            Ended {
                failure: ApiError::audit(err).into(),
                sqlstate: None,
            }
        })
}

/// A refused private answer, recorded with its SQLSTATE.
fn refused(err: ApiError) -> Ended {
    let sqlstate = match &err {
        ApiError::PrivacyBudgetSpent { .. } => crate::sqlstate::INSUFFICIENT_PRIVILEGE,
        ApiError::Unavailable(_) => crate::sqlstate::CONNECTION_FAILURE,
        _ => crate::sqlstate::INTERNAL_ERROR,
    };
    Ended {
        failure: Failure::Api(err),
        sqlstate: Some(sqlstate.into()),
    }
}
