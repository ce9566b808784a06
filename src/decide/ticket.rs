//! Asking for a ticket: the one path every door takes (`POST
//! /api/esq/ticket` on the HTTP door; on the PostgreSQL door a user's
//! standing request at login and `SELECT esq.request_ticket('…')`). The
//! issuer asks the policies (or, for a request naming an exception
//! waiver, [`crate::exceptions::tickets`] checks it first), the outcome is
//! counted and audited the same way whichever door asked, and a policy
//! denial gains the same alternatives. A door only renders the result.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::audit::{fingerprint, record_durably, AuditError, AuditEvent, AuditKind};
use crate::auth::Principal;
use crate::exceptions::tickets::TicketError;
use crate::metrics::{Door, Outcome};
use crate::tickets::{IssueError, IssuedTicket, TicketId, TicketRequest};

/// Who asks for a ticket, and through which door.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub user: &'a Principal,
    pub door: Door,
    pub client: Option<SocketAddr>,
}

/// Why no ticket was handed out.
#[derive(Debug, thiserror::Error)]
pub enum NoTicket {
    /// As the issuer or the exception path answered: a bad request, a
    /// denial (with its alternatives), the ticket store, an exception's
    /// own failure.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// The ticket was issued but its issue could not be put on record, so
    /// it is not handed out.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Decides `request` for `who` at `now`; a granted ticket is handed back
/// only once its issue is durably on record. Refusals by the policies are
/// recorded too (best effort: the refusal stands either way).
pub async fn request(
    app: &App,
    who: Requester<'_>,
    request: &TicketRequest,
    now: DateTime<Utc>,
) -> Result<IssuedTicket, NoTicket> {
    let result = match request.exception {
        None => app
            .bundle()
            .tickets
            .issue(who.user, request, now)
            .await
            .map_err(TicketError::Issue),
        Some(_) => {
            let caller = crate::exceptions::Caller {
                user: who.user,
                door: who.door,
                client: who.client,
            };
            crate::exceptions::tickets::issue(app, caller, request, now).await
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
            let issue = Issue {
                dataset: &request.dataset,
                outcome: Outcome::allow,
                ticket_hash: hash,
                policy_id: issued.scope.policy_ids.first().map(String::as_str),
                exception: issued.scope.exception.as_deref(),
            };
            audit_issue(app, who, issue).await?;
            Ok(issued)
        }
        Err(TicketError::Issue(IssueError::Denied(mut verdict))) => {
            let issue = Issue {
                dataset: &request.dataset,
                outcome: Outcome::deny,
                ticket_hash: None,
                policy_id: verdict.denied_by.first().map(String::as_str),
                exception: named,
            };
            if let Err(err) = audit_issue(app, who, issue).await {
                tracing::error!(%err, "a refused ticket request could not be audited");
            }
            // Governance that makes yes safe: a need the policies do not
            // cover can be put to a data steward (DESIGN 3.9).
            if request.exception.is_none() && app.config.maintenance.is_some() {
                verdict.alternatives.push(crate::exceptions::alternative(
                    request.dataset.trim(),
                    &request.fields,
                    request.aggregate.as_deref(),
                ));
            }
            Err(TicketError::Issue(IssueError::Denied(verdict)).into())
        }
        Err(err) => Err(err.into()),
    }
}

/// What the audit record of one ticket request says.
struct Issue<'a> {
    dataset: &'a str,
    outcome: Outcome,
    ticket_hash: Option<String>,
    policy_id: Option<&'a str>,
    exception: Option<&'a str>,
}

/// Records a ticket request's outcome and waits until it is on disk.
async fn audit_issue(app: &App, who: Requester<'_>, issue: Issue<'_>) -> Result<u64, AuditError> {
    let event = AuditEvent {
        roles: &who.user.roles,
        client: who.client,
        ticket_hash: issue.ticket_hash,
        dataset: Some(issue.dataset),
        outcome: issue.outcome,
        fingerprint: fingerprint(&format!("issue_ticket {}", issue.dataset)),
        policy_id: issue.policy_id,
        exception: issue.exception,
        ..AuditEvent::event(AuditKind::TicketIssued, who.door, &who.user.name)
    };
    record_durably(&*app.audit, &event).await
}
