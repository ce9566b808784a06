//! Withdrawing an approved exception before it expires (a steward's
//! mistake, a need that ended): a data steward or an operator, with a
//! comment. The exception becomes `revoked` and expires now, and every
//! ticket issued under it that is still live is revoked in the ticket
//! store at once; all of it audited.

use chrono::Utc;
use serde_json::json;

use super::store::{self, Exception};
use super::{Caller, ExceptionError, ADMIN_ROLE, MAX_TEXT, STEWARD_ROLE};
use crate::app::App;
use crate::tickets::TicketHash;

/// Withdraws exception `id` as `caller`.
pub async fn revoke(
    app: &App,
    caller: Caller<'_>,
    id: &str,
    comment: &str,
) -> Result<Exception, ExceptionError> {
    let result = run(app, caller, id, comment).await;
    if let Err(err) = &result {
        if matches!(
            err,
            ExceptionError::Maintenance(_)
                | ExceptionError::Database { .. }
                | ExceptionError::Audit(_)
        ) {
            tracing::error!(%err, "an exception withdrawal failed");
        }
        let named = super::id::parse(id);
        super::audit_refused(app, caller, named, None, "revoke", err).await;
    }
    result
}

async fn run(
    app: &App,
    caller: Caller<'_>,
    id: &str,
    comment: &str,
) -> Result<Exception, ExceptionError> {
    if app.config.maintenance.is_none() {
        return Err(ExceptionError::NotConfigured);
    }
    let user = caller.user;
    if !user.has_role(STEWARD_ROLE) && !user.has_role(ADMIN_ROLE) {
        return Err(ExceptionError::Forbidden(format!(
            "exceptions are withdrawn by users with role {STEWARD_ROLE} or {ADMIN_ROLE}"
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
    let Some((revoked, tickets)) =
        store::revoke(&transaction, id, &user.name, &comment, Utc::now()).await?
    else {
        return Err(ExceptionError::Conflict(format!(
            "exception {id} is {}: only an approved exception can be withdrawn",
            exception.state.as_str()
        )));
    };
    let detail = json!({
        "state": revoked.state,
        "requester": revoked.requester,
        "revoked_by": user.name,
        "tickets": tickets.len(),
    });
    super::record_and_commit(
        app,
        caller,
        &revoked,
        "revoked",
        detail,
        transaction,
        "committing the withdrawal",
    )
    .await?;
    // The exception can no longer issue tickets; now end the ones it did.
    let now = Utc::now();
    for hash in &tickets {
        let Some(hash) = hex::decode(hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(TicketHash)
        else {
            continue;
        };
        if let Err(err) = app.ticket_store.revoke(&hash, now).await {
            tracing::error!(%err, exception = id, "a ticket of a withdrawn exception could not be revoked; it ends at its own expiry");
        } else {
            app.metrics.tickets_revoked.inc();
        }
    }
    super::refresh_open(app, &maintenance.client).await;
    Ok(revoked)
}
