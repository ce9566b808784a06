//! `POST /api/esq/breach` (an operator raises a breach by hand: the named
//! ticket is revoked and the breach audited, listed and sent to the webhook,
//! as for a sentinel trip) and `GET /api/esq/breach` (recent breaches, from
//! every replica when the ticket store is Redis). Both need a bearer token
//! of a user with role `esq_admin`.

use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::handler::{send_json, Failure, Handler};
use crate::auth::Principal;
use crate::sentinel::Report;
use crate::tickets::{TicketHash, TicketId};

/// Breaches listed when `?limit=` is not given, and the most ever listed.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
const MAX_REASON: usize = 2000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreachBody {
    /// The ticket concerned (revoked at once).
    #[serde(default)]
    ticket: Option<String>,
    /// Or its hash, as listed by audit records and alerts.
    #[serde(default)]
    ticket_hash: Option<String>,
    /// Whose activity it is (found from the ticket when not given).
    #[serde(default)]
    user: Option<String>,
    reason: String,
}

pub async fn raise(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    let operator = operator(handler, session)?;
    let body: BreachBody = handler.json_body(session).await?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.len() > MAX_REASON {
        return Err(ApiError::bad_request(
            Some("reason"),
            format!("say what happened, in 1 to {MAX_REASON} characters"),
        )
        .into());
    }
    let ticket = match (body.ticket, body.ticket_hash) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                Some("ticket"),
                "give the ticket or its hash, not both",
            )
            .into())
        }
        (Some(text), None) => Some(
            TicketId::parse(text.trim())
                .map_err(|_| ApiError::MalformedTicket)?
                .hash(),
        ),
        (None, Some(hex)) => Some(parse_hash(&hex)?),
        (None, None) => None,
    };
    if ticket.is_none() && body.user.is_none() {
        return Err(ApiError::bad_request(
            Some("ticket"),
            "name the ticket (ticket or ticket_hash) or the user concerned",
        )
        .into());
    }
    let breach = handler
        .app()
        .sentinel
        .raise(Report {
            ticket,
            user: body.user,
            reason,
            raised_by: operator.name,
        })
        .await
        .map_err(ApiError::store)?;
    let body = serde_json::to_value(&breach)
        .map_err(|err| ApiError::Internal(format!("breach response: {err}")))?;
    send_json(session, 201, &body, &[]).await?;
    Ok(())
}

pub async fn list(handler: &Handler, session: &mut ServerSession) -> Result<(), Failure> {
    operator(handler, session)?;
    let limit = limit(session.req_header().uri.query())?;
    let breaches = handler
        .app()
        .sentinel
        .recent(limit)
        .await
        .map_err(ApiError::store)?;
    send_json(session, 200, &json!({ "breaches": breaches }), &[]).await?;
    Ok(())
}

fn operator(handler: &Handler, session: &ServerSession) -> Result<Principal, ApiError> {
    handler.operator(session, "breaches")
}

fn parse_hash(hex_text: &str) -> Result<TicketHash, ApiError> {
    let bad = || ApiError::bad_request(Some("ticket_hash"), "64 hex digits (a SHA-256)");
    let bytes = hex::decode(hex_text.trim()).map_err(|_| bad())?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
    Ok(TicketHash(bytes))
}

fn limit(query: Option<&str>) -> Result<usize, ApiError> {
    let Some(query) = query else {
        return Ok(DEFAULT_LIMIT);
    };
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("limit", value)) => {
                return value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            Some("limit"),
                            format!("a number from 1 to {MAX_LIMIT}"),
                        )
                    })
            }
            _ => continue,
        }
    }
    Ok(DEFAULT_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_hashes_are_checked() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("limit=3")).unwrap(), 3);
        assert!(limit(Some("limit=0")).is_err());
        assert!(limit(Some("limit=99999")).is_err());
        assert!(parse_hash("abc").is_err());
        assert!(parse_hash(&"ab".repeat(32)).is_ok());
    }
}
