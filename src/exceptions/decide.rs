//! A data steward approves or denies a pending exception, with a comment.
//! In this order, each refusal audited: the caller has role
//! `data_steward`; the comment is there; the exception exists and is
//! pending (else `409`); the caller is not its requester; the requester
//! named no other steward; and `package esq.exceptions` allows it. The
//! decision is written with the row locked and recorded before it is
//! committed; an approval expires at decision time plus its duration.

use chrono::Utc;
use serde_json::json;

use super::store::{self, Exception, State};
use super::{Caller, ExceptionError, MAX_TEXT, STEWARD_ROLE};
use crate::app::App;
use crate::auth::Principal;

/// Approves (`approve`) or denies exception `id` as `caller`.
pub async fn decide(
    app: &App,
    caller: Caller<'_>,
    id: &str,
    approve: bool,
    comment: &str,
) -> Result<Exception, ExceptionError> {
    let attempted = if approve { "approve" } else { "deny" };
    let result = run(app, caller, id, approve, comment).await;
    match &result {
        Ok(decided) => {
            app.exception_metrics.decided(approve);
            tracing::info!(
                exception = decided.id,
                state = decided.state.as_str(),
                decided_by = caller.user.name,
                "exception decided"
            );
        }
        Err(err) => {
            if matches!(
                err,
                ExceptionError::Maintenance(_)
                    | ExceptionError::Database { .. }
                    | ExceptionError::Audit(_)
            ) {
                tracing::error!(%err, "an exception decision failed");
            }
            let named = super::id::parse(id);
            super::audit_refused(app, caller, named, None, attempted, err).await;
        }
    }
    result
}

async fn run(
    app: &App,
    caller: Caller<'_>,
    id: &str,
    approve: bool,
    comment: &str,
) -> Result<Exception, ExceptionError> {
    if app.config.maintenance.is_none() {
        return Err(ExceptionError::NotConfigured);
    }
    let steward = caller.user;
    if !steward.has_role(STEWARD_ROLE) {
        return Err(ExceptionError::Forbidden(format!(
            "exceptions are approved and denied by users with role {STEWARD_ROLE}"
        )));
    }
    let comment = super::request::text(
        "comment",
        comment,
        MAX_TEXT,
        "say why (the requester reads it)",
    )?;
    let id = super::id::parse(id).ok_or(ExceptionError::NotFound)?;
    let mut maintenance = super::connect(&app.config).await?;
    let transaction = maintenance
        .client
        .transaction()
        .await
        .map_err(|e| ExceptionError::database("starting a transaction", e))?;
    let exception = store::get(&transaction, id, true)
        .await?
        .ok_or(ExceptionError::NotFound)?;
    if exception.state != State::Pending {
        return Err(ExceptionError::Conflict(format!(
            "exception {id} is {}: only a pending exception can be approved or denied",
            exception.state.as_str()
        )));
    }
    if exception.requester == steward.name {
        return Err(ExceptionError::Forbidden(
            "nobody approves or denies their own exception: another data steward must".into(),
        ));
    }
    if exception
        .approver
        .as_deref()
        .is_some_and(|named| named != steward.name)
    {
        return Err(ExceptionError::Forbidden(
            "the requester asked another data steward to decide this exception".into(),
        ));
    }
    let now = Utc::now();
    let bundle = app.bundle();
    // A dataset gone from the catalog can still be denied, never approved.
    let answer = match bundle.catalog.dataset(&exception.dataset) {
        Some(dataset) => {
            let requester = bundle
                .users
                .principal(&exception.requester)
                .cloned()
                .unwrap_or_else(|| Principal {
                    name: exception.requester.clone(),
                    roles: Vec::new(),
                    attributes: Default::default(),
                    clearance: Default::default(),
                });
            let action = if approve {
                "approve_exception"
            } else {
                "deny_exception"
            };
            Some(super::policy::decide(
                &bundle.policies,
                action,
                steward,
                requester,
                &exception,
                dataset,
                now,
            ))
        }
        None if approve => {
            return Err(ExceptionError::Conflict(format!(
                "exception {id} is for a dataset the catalog no longer has: it can only be denied"
            )))
        }
        None => None,
    };
    if let Some(answer) = answer.as_ref().filter(|a| !a.allow) {
        return Err(ExceptionError::Forbidden(format!(
            "policy {} refuses: {}",
            answer.policy_id,
            answer.reasons.join("; ")
        )));
    }
    let decided = store::decide(&transaction, id, approve, &steward.name, &comment, now)
        .await?
        .ok_or_else(|| ExceptionError::Conflict(format!("exception {id} is no longer pending")))?;
    let action = decided.state.as_str();
    let detail = json!({
        "state": decided.state,
        "requester": decided.requester,
        "decided_by": decided.decided_by,
        "fields": decided.fields,
        "aggregate": decided.aggregate,
        "expires_at": decided.expires_at.as_ref().map(store::rfc3339),
        "policy_id": answer.as_ref().map(|a| a.policy_id.as_str()),
    });
    super::record_and_commit(
        app,
        caller,
        &decided,
        action,
        detail,
        transaction,
        "committing the decision",
    )
    .await?;
    super::refresh_open(app, &maintenance.client).await;
    Ok(decided)
}

/// Whether `user` may see `exception`: its requester, a data steward or
/// an operator.
pub fn may_see(user: &Principal, exception: &Exception) -> bool {
    exception.requester == user.name
        || user.has_role(STEWARD_ROLE)
        || user.has_role(super::ADMIN_ROLE)
}

/// Exception `id`, if `caller` may see it (else [`ExceptionError::NotFound`]).
pub async fn show(app: &App, caller: &Principal, id: &str) -> Result<Exception, ExceptionError> {
    if app.config.maintenance.is_none() {
        return Err(ExceptionError::NotConfigured);
    }
    let id = super::id::parse(id).ok_or(ExceptionError::NotFound)?;
    let maintenance = super::connect(&app.config).await?;
    store::get(&maintenance.client, id, false)
        .await?
        .filter(|e| may_see(caller, e))
        .ok_or(ExceptionError::NotFound)
}

/// The caller's own exceptions; a steward or an operator also sees every
/// open one (newest first, at most 200).
pub async fn list(app: &App, caller: &Principal) -> Result<Vec<Exception>, ExceptionError> {
    if app.config.maintenance.is_none() {
        return Err(ExceptionError::NotConfigured);
    }
    let maintenance = super::connect(&app.config).await?;
    let open_too = caller.has_role(STEWARD_ROLE) || caller.has_role(super::ADMIN_ROLE);
    store::list(&maintenance.client, &caller.name, open_too, Utc::now(), 200).await
}
