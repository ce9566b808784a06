//! `POST /api/esq/ticket` (the policies decide; `201` with the ticket, its
//! lifetime and scope) and `DELETE /api/esq/ticket/{id}` (the owner or an
//! `esq_admin` revokes). Both need a bearer token and are audited. A
//! request naming an exception waiver (`"exception":"X-…"`) is issued by
//! [`crate::exceptions::tickets`]; a policy denial of any other offers to
//! request one.

use chrono::Utc;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::error::ApiError;
use super::handler::{send_json, Failure, Handler};
use crate::audit::{fingerprint, record_durably, AuditError, AuditEvent, AuditKind};
use crate::auth::Principal;
use crate::exceptions::tickets::TicketError;
use crate::metrics::{Door, Outcome};
use crate::tickets::{IssueError, Lookup, TicketId, TicketRequest};

/// The role that may revoke anyone's ticket.
pub const ADMIN_ROLE: &str = "esq_admin";

pub async fn issue(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let app = handler.app();
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let request: TicketRequest = handler.json_body(session).await?;
    let result = match request.exception {
        None => app
            .bundle()
            .tickets
            .issue(&user, &request, Utc::now())
            .await
            .map_err(TicketError::Issue),
        Some(_) => {
            let caller = crate::exceptions::Caller {
                user: &user,
                door: Door::http,
                client: Some(handler.peer),
            };
            crate::exceptions::tickets::issue(app, caller, &request, Utc::now()).await
        }
    };
    // The exception a refusal names: only a well-formed id goes on record.
    let named = request
        .exception
        .as_deref()
        .and_then(crate::exceptions::id::parse);
    match result {
        Ok(issued) => {
            app.metrics.tickets_issued.inc();
            let hash = TicketId::parse(&issued.ticket)
                .ok()
                .map(|id| id.hash().to_hex());
            // The ticket is handed out only once its issue is on record.
            let policy_id = issued.scope.policy_ids.first().map(String::as_str);
            audit_issue(
                handler,
                &user,
                &request.dataset,
                Outcome::allow,
                hash,
                policy_id,
                issued.scope.exception.as_deref(),
            )
            .await
            .map_err(ApiError::audit)?;
            let body = serde_json::to_value(&issued)
                .map_err(|err| ApiError::Internal(format!("ticket response: {err}")))?;
            send_json(session, 201, &body, &[]).await?;
            Ok(())
        }
        Err(TicketError::Issue(IssueError::BadRequest(bad))) => Err(ApiError::BadRequest {
            field: Some(bad.field),
            message: bad.message,
        }
        .into()),
        Err(TicketError::Issue(IssueError::Denied(mut verdict))) => {
            let policy_id = verdict.denied_by.first().map(String::as_str);
            let _ = audit_issue(
                handler,
                &user,
                &request.dataset,
                Outcome::deny,
                None,
                policy_id,
                named,
            )
            .await;
            // Governance that makes yes safe: a need the policies do not
            // cover can be put to a data steward (DESIGN 3.9).
            if request.exception.is_none() && app.config.maintenance.is_some() {
                verdict.alternatives.push(crate::exceptions::alternative(
                    request.dataset.trim(),
                    &request.fields,
                    request.aggregate.as_deref(),
                ));
            }
            Err(ApiError::PolicyDenied(verdict).into())
        }
        Err(TicketError::Issue(IssueError::Store(err))) => Err(ApiError::store(err).into()),
        Err(TicketError::Issue(IssueError::Random(err))) => Err(ApiError::Internal(err).into()),
        Err(TicketError::Exception(err)) => Err(super::exceptions::api_error(err).into()),
    }
}

/// Records a ticket request's outcome and waits until it is on disk.
async fn audit_issue(
    handler: &Handler,
    user: &Principal,
    dataset: &str,
    outcome: Outcome,
    ticket_hash: Option<String>,
    policy_id: Option<&str>,
    exception: Option<&str>,
) -> Result<u64, AuditError> {
    let event = AuditEvent {
        roles: &user.roles,
        client: Some(handler.peer),
        ticket_hash,
        dataset: Some(dataset),
        outcome,
        fingerprint: fingerprint(&format!("issue_ticket {dataset}")),
        policy_id,
        exception,
        ..AuditEvent::event(AuditKind::TicketIssued, Door::http, &user.name)
    };
    record_durably(&*handler.app().audit, &event).await
}

pub async fn revoke(
    handler: &Handler,
    session: &mut ServerSession,
    id: &str,
) -> Result<(), Failure> {
    let app = handler.app();
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let id = TicketId::parse(id).map_err(|_| ApiError::MalformedTicket)?;
    let hash = id.hash();
    let now = Utc::now();
    let store = |err: crate::tickets::StoreError| ApiError::store(err);
    let scope = match app.ticket_store.get(&id, now).await.map_err(store)? {
        Lookup::Valid(ticket) => ticket.scope,
        Lookup::Stale(_) => return Err(ApiError::UnknownTicket.into()),
    };
    if scope.user != user.name && !user.has_role(ADMIN_ROLE) {
        return Err(ApiError::Forbidden(format!(
            "only the ticket's owner or a user with role {ADMIN_ROLE} may revoke it"
        ))
        .into());
    }
    let revoked = app.ticket_store.revoke(&hash, now).await.map_err(store)?;
    if revoked {
        app.metrics.tickets_revoked.inc();
    }
    let event = AuditEvent {
        roles: &user.roles,
        client: Some(handler.peer),
        ticket_hash: Some(hash.to_hex()),
        fingerprint: fingerprint("revoke_ticket"),
        detail: Some(json!({"was_live": revoked})),
        exception: scope.exception.as_deref(),
        ..AuditEvent::event(AuditKind::TicketRevoked, Door::http, &user.name)
    };
    record_durably(&*app.audit, &event)
        .await
        .map_err(ApiError::audit)?;
    send_json(
        session,
        200,
        &json!({"revoked": revoked, "ticket_hash": hash.to_string()}),
        &[],
    )
    .await?;
    Ok(())
}
