//! `POST /api/esq/ticket` (decided by the one ticket-request step every
//! door takes, [`crate::decide::ticket`]: `201` with the ticket, its
//! lifetime, scope and notes) and `DELETE /api/esq/ticket/{id}` (the owner
//! or an `esq_admin` revokes). Both need a bearer token and are audited.

use chrono::Utc;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::error::ApiError;
use super::handler::{send_json, Failure, Handler};
use crate::audit::{fingerprint, record_durably, AuditEvent, AuditKind};
use crate::decide::ticket::{NoTicket, Requester};
use crate::exceptions::tickets::TicketError;
use crate::metrics::Door;
use crate::tickets::{IssueError, Lookup, TicketId, TicketRequest};

/// The role that may revoke anyone's ticket.
pub const ADMIN_ROLE: &str = "esq_admin";

pub async fn issue(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let app = handler.app();
    let user = handler.authenticate(session)?;
    handler.rate_limit(&user.name)?;
    let request: TicketRequest = handler.json_body(session).await?;
    let who = Requester {
        user: &user,
        door: Door::http,
        client: Some(handler.peer),
    };
    match crate::decide::ticket::request(app, who, &request, Utc::now()).await {
        Ok(issued) => {
            let body = serde_json::to_value(&issued)
                .map_err(|err| ApiError::Internal(format!("ticket response: {err}")))?;
            send_json(session, 201, &body, &[]).await?;
            Ok(())
        }
        Err(NoTicket::Audit(err)) => Err(ApiError::audit(err).into()),
        Err(NoTicket::Ticket(TicketError::Issue(IssueError::BadRequest(bad)))) => {
            Err(ApiError::BadRequest {
                field: Some(bad.field),
                message: bad.message,
            }
            .into())
        }
        Err(NoTicket::Ticket(TicketError::Issue(IssueError::Denied(verdict)))) => {
            Err(ApiError::PolicyDenied(verdict).into())
        }
        Err(NoTicket::Ticket(TicketError::Issue(IssueError::Store(err)))) => {
            Err(ApiError::store(err).into())
        }
        Err(NoTicket::Ticket(TicketError::Issue(IssueError::Random(err)))) => {
            Err(ApiError::Internal(err).into())
        }
        Err(NoTicket::Ticket(TicketError::Exception(err))) => {
            Err(super::exceptions::api_error(err).into())
        }
    }
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
