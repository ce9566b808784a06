//! Issuing a ticket under an exception (`"exception":"X-…"` in a ticket
//! request): the exception must be the requester's own, approved and
//! unexpired; the request must lie within it ([`crate::tickets::Waiver`]);
//! then the policies are asked as usual with `input.exception` added and
//! their denials waived ([`crate::tickets::TicketIssuer::issue_under`]).
//! Each ticket issued counts one use of the exception, recorded in the
//! same transaction that counts it; if the exception stopped being usable
//! meanwhile, or the use cannot be recorded, the ticket is revoked again.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::store::{self, State};
use super::{Caller, ExceptionError};
use crate::app::App;
use crate::metrics::Outcome;
use crate::policy::Verdict;
use crate::tickets::{
    Aggregate, BadRequest, IssueError, IssuedTicket, TicketId, TicketRequest, Waiver,
};

/// Why no ticket was issued under an exception.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// As for any ticket request: a bad request, a denial (also: the
    /// exception is not usable, or the request is outside it), the store.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// Exceptions are not set up, or their store or the audit log failed.
    #[error(transparent)]
    Exception(#[from] ExceptionError),
}

/// Issues `request` (which names an exception) for `caller` at `now`.
pub async fn issue(
    app: &App,
    caller: Caller<'_>,
    request: &TicketRequest,
    now: DateTime<Utc>,
) -> Result<IssuedTicket, TicketError> {
    let named = request.exception.as_deref().and_then(super::id::parse);
    let result = run(app, caller, request, now).await;
    if let Err(err) = &result {
        let why = match err {
            TicketError::Issue(IssueError::Denied(_)) => "denied",
            TicketError::Issue(IssueError::BadRequest(_)) => "bad_input",
            TicketError::Issue(_) => "ticket_store",
            TicketError::Exception(err) => err.category(),
        };
        if matches!(err, TicketError::Exception(_)) {
            tracing::warn!(%err, "no ticket under an exception");
        }
        let detail = json!({"attempted": "issue_ticket", "error": why});
        let dataset = app
            .bundle()
            .catalog
            .dataset(request.dataset.trim())
            .map(|d| d.id.clone());
        if let Err(audit) = super::audit(
            app,
            caller,
            named,
            dataset.as_deref(),
            Outcome::deny,
            "refused",
            detail,
        )
        .await
        {
            tracing::error!(%audit, "a refused ticket under an exception could not be audited");
        }
    }
    result
}

async fn run(
    app: &App,
    caller: Caller<'_>,
    request: &TicketRequest,
    now: DateTime<Utc>,
) -> Result<IssuedTicket, TicketError> {
    let user = caller.user;
    let id = request
        .exception
        .as_deref()
        .and_then(super::id::parse)
        .ok_or_else(|| {
            IssueError::from(BadRequest {
                field: "exception".into(),
                message: "not an exception id: X- followed by 16 characters (POST /api/esq/exception answers with one)".into(),
            })
        })?;
    if app.config.maintenance.is_none() {
        return Err(ExceptionError::NotConfigured.into());
    }
    let mut maintenance = super::connect(&app.config).await?;
    let exception = store::get(&maintenance.client, id, false)
        .await?
        .filter(|e| e.requester == user.name)
        .ok_or_else(|| refused(id, "no exception of yours has this id".into()))?;
    let expires_at = match (exception.state, exception.expires_at) {
        (State::Approved, Some(at)) if at > now => at,
        (State::Approved | State::Expired, _) => {
            return Err(refused(id, format!("exception {id} has expired")))
        }
        (State::Pending, _) => {
            return Err(refused(
                id,
                format!("exception {id} is pending: a data steward has not decided it yet"),
            ))
        }
        (State::Denied, _) => return Err(refused(id, format!("exception {id} was denied"))),
        (State::Revoked, _) => return Err(refused(id, format!("exception {id} was revoked"))),
    };
    // The approval policy must still hold at each use: a rule, a clearance
    // or the catalog changed since the approval narrows what it grants.
    {
        let bundle = app.bundle();
        let approver = exception
            .decided_by
            .as_deref()
            .and_then(|name| bundle.users.principal(name));
        let dataset = bundle.catalog.dataset(&exception.dataset);
        let still = match (approver, dataset) {
            (Some(approver), Some(dataset)) => {
                let answer = super::policy::decide(
                    &bundle.policies,
                    "approve_exception",
                    approver,
                    user.clone(),
                    &exception,
                    dataset,
                    now,
                );
                answer.allow.then_some(()).ok_or(answer.reasons.join("; "))
            }
            _ => Err("its approver or its dataset is no longer configured".into()),
        };
        if let Err(why) = still {
            return Err(refused(
                id,
                format!("exception {id} no longer meets the approval policy: {why}"),
            ));
        }
    }
    let aggregate = match exception.aggregate.as_deref() {
        None => None,
        Some(text) => Some(Aggregate::parse(text).ok_or_else(|| {
            refused(
                id,
                format!("exception {id} names an aggregate esq does not support"),
            )
        })?),
    };
    let waiver = Waiver {
        id: exception.id.clone(),
        requester: exception.requester.clone(),
        dataset: exception.dataset.clone(),
        fields: exception.fields.clone(),
        aggregate,
        expires_at,
    };
    let issued = app
        .bundle()
        .tickets
        .issue_under(user, request, now, Some(&waiver))
        .await?;
    let hash = TicketId::parse(&issued.ticket).ok().map(|t| t.hash());
    let withdraw = move |why: &str| {
        let why = why.to_string();
        async move {
            if let Some(hash) = hash {
                if let Err(err) = app.ticket_store.revoke(&hash, Utc::now()).await {
                    tracing::error!(%err, exception = id, "a ticket issued under an exception could not be revoked after {why}; it ends with the exception");
                }
            }
        }
    };
    let transaction = match maintenance.client.transaction().await {
        Ok(transaction) => transaction,
        Err(err) => {
            withdraw("a failed transaction").await;
            return Err(ExceptionError::database("starting a transaction", err).into());
        }
    };
    let uses = match store::record_use(&transaction, id, &user.name, Utc::now()).await {
        Ok(Some(uses)) => uses,
        Ok(None) => {
            drop(transaction);
            withdraw("its exception stopped being usable").await;
            return Err(refused(id, format!("exception {id} is no longer approved")));
        }
        Err(err) => {
            drop(transaction);
            withdraw("a failed use count").await;
            return Err(err.into());
        }
    };
    if let Some(hash) = hash {
        let recorded =
            store::record_ticket(&transaction, id, &hash.to_hex(), issued.scope.expires_at).await;
        if let Err(err) = recorded {
            drop(transaction);
            withdraw("a failed ticket record").await;
            return Err(err.into());
        }
    }
    let detail = json!({
        "ticket_hash": hash.map(|h| h.to_hex()),
        "uses": uses,
        "fields": issued.scope.fields,
        "aggregate": issued.scope.aggregate,
        "ticket_expires_at": issued.expires_at,
    });
    let recorded = super::audit(
        app,
        caller,
        Some(id),
        Some(&issued.scope.dataset),
        Outcome::allow,
        "used",
        detail,
    )
    .await;
    if let Err(err) = recorded {
        drop(transaction);
        withdraw("its use could not be audited").await;
        return Err(ExceptionError::Audit(err).into());
    }
    if let Err(err) = transaction.commit().await {
        withdraw("its use could not be committed").await;
        return Err(ExceptionError::database("committing the exception's use", err).into());
    }
    app.exception_metrics.uses.inc();
    Ok(issued)
}

/// A refusal as a policy denial would show it (`403`), naming the
/// exception as the deciding rule.
fn refused(id: &str, reason: String) -> TicketError {
    TicketError::Issue(IssueError::Denied(Box::new(Verdict::deny(
        id,
        reason,
        vec![
            "GET /api/esq/exception lists your exceptions and their states".into(),
            "ask without \"exception\" (the policies decide), or request a new exception (POST /api/esq/exception)".into(),
        ],
    ))))
}
