//! Tickets asked for on the PostgreSQL door, for tools that can only fill
//! host, user and password: `SELECT esq.request_ticket('{…}')` (answered
//! here with one row, never forwarded) and what the standing request of
//! [`super::standing`] tells the session. Both go through the one
//! ticket-request step ([`crate::decide::ticket`]): the same policies, the
//! same audit records, the same refusals as `POST /api/esq/ticket`. This
//! module renders its answers: the row, the notices, and the refusal as a
//! client may see it (internal failures are logged, not shown).

use std::net::SocketAddr;

use bytes::BytesMut;
use chrono::Utc;

use super::wire;
use crate::app::App;
use crate::auth::Principal;
use crate::decide::ticket::{NoTicket, Requester};
use crate::exceptions::tickets::TicketError;
use crate::exceptions::ExceptionError;
use crate::metrics::Door;
use crate::sqlstate;
use crate::tickets::{IssueError, IssuedTicket, Scope, TicketId, TicketRequest};

/// What the body of a ticket request is, for hints.
pub const EXAMPLE: &str = r#"SELECT esq.request_ticket('{"dataset":"burial_2024","purpose":"…","fields":["state"],"aggregate":"count"}')"#;

/// Why a ticket request on this door got no ticket, as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// `SELECT esq.request_ticket(…)` in the extended protocol.
    Extended,
    /// Not a ticket request esq will evaluate (names the field).
    Bad { field: String, message: String },
    /// Refused by the policies (or the exception it names).
    Denied {
        reasons: Vec<String>,
        policy_ids: Vec<String>,
        alternatives: Vec<String>,
    },
    /// What could not answer (the error itself is logged).
    Unavailable(&'static str),
}

impl RequestError {
    /// The SQLSTATE, message, detail and hint of its `ErrorResponse`.
    pub fn parts(&self) -> (&'static str, String, String, String) {
        match self {
            RequestError::Extended => (
                sqlstate::FEATURE_NOT_SUPPORTED,
                "esq.request_ticket is answered in the simple query protocol only".into(),
                "its answer is esq's own, not a prepared statement's".into(),
                "run it as a plain query (psql does; pgJDBC with preferQueryMode=simple), or ask the operator for a standing ticket request for your user".into(),
            ),
            RequestError::Bad { field, message } => (
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("ticket request: {field}: {message}"),
                "the argument is the JSON body POST /api/esq/ticket takes".into(),
                format!("for example {EXAMPLE}"),
            ),
            RequestError::Denied {
                reasons,
                policy_ids,
                alternatives,
            } => (
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("ticket request denied: {}", reasons.join("; ")),
                match policy_ids.as_slice() {
                    [] => String::new(),
                    ids => format!("denied by policy {}", ids.join(", ")),
                },
                alternatives.join("; "),
            ),
            RequestError::Unavailable(what) => (
                sqlstate::CONNECTION_FAILURE,
                format!("esq cannot issue a ticket now: {what} is unavailable"),
                String::new(),
                "retry shortly; the operator's log has the details".into(),
            ),
        }
    }

    /// One line for a notice: the refusal and what to do instead.
    fn summary(&self) -> (String, String, String) {
        let (_, message, detail, hint) = self.parts();
        (message, detail, hint)
    }
}

/// What a session learns of a granted ticket.
#[derive(Debug, Clone)]
pub struct Granted {
    pub id: TicketId,
    pub issued: IssuedTicket,
}

/// Asks for `request` as `user` on this door.
pub async fn ask(
    app: &App,
    user: &Principal,
    client: Option<SocketAddr>,
    request: &TicketRequest,
) -> Result<Granted, RequestError> {
    let who = Requester {
        user,
        door: Door::pg,
        client,
    };
    let issued = crate::decide::ticket::request(app, who, request, Utc::now())
        .await
        .map_err(shown)?;
    let id = TicketId::parse(&issued.ticket).map_err(|_| {
        tracing::error!("the issuer handed out a malformed ticket");
        RequestError::Unavailable("the ticket store")
    })?;
    Ok(Granted { id, issued })
}

/// Reads the JSON text of `SELECT esq.request_ticket('…')` as
/// `POST /api/esq/ticket` reads its body.
pub fn parse(text: &str) -> Result<TicketRequest, RequestError> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else {
            inner.to_string()
        };
        RequestError::Bad {
            field: if path == "." || path == "?" {
                "body".into()
            } else {
                path
            },
            message,
        }
    })
}

/// The refusal as a client may see it; what is internal is logged here.
fn shown(refusal: NoTicket) -> RequestError {
    match refusal {
        NoTicket::Ticket(TicketError::Issue(IssueError::BadRequest(bad))) => RequestError::Bad {
            field: bad.field,
            message: bad.message,
        },
        NoTicket::Ticket(TicketError::Issue(IssueError::Denied(verdict))) => RequestError::Denied {
            reasons: verdict.reasons,
            policy_ids: if verdict.denied_by.is_empty() {
                verdict.policy_ids
            } else {
                verdict.denied_by
            },
            alternatives: verdict.alternatives,
        },
        NoTicket::Ticket(TicketError::Exception(ExceptionError::BadInput { field, message })) => {
            RequestError::Bad {
                field: field.to_string(),
                message,
            }
        }
        NoTicket::Ticket(TicketError::Exception(ExceptionError::NotConfigured)) => {
            RequestError::Unavailable("exception waivers (not set up on this esq)")
        }
        NoTicket::Ticket(TicketError::Exception(err)) => {
            tracing::error!(%err, "a ticket under an exception could not be issued");
            RequestError::Unavailable("the exception store")
        }
        NoTicket::Ticket(TicketError::Issue(err)) => {
            tracing::error!(%err, "a ticket could not be issued");
            RequestError::Unavailable("the ticket store")
        }
        NoTicket::Audit(err) => {
            tracing::error!(%err, "a ticket's issue could not be audited; it is not handed out");
            RequestError::Unavailable("the audit log")
        }
    }
}

/// The row `SELECT esq.request_ticket(…)` answers: the ticket, when it
/// expires, what it allows, and notes (`NULL` when there are none).
pub fn answer_row(out: &mut BytesMut, issued: &IssuedTicket) {
    let notes = (!issued.notes.is_empty()).then(|| issued.notes.join("; "));
    let scope = describe(&issued.scope);
    let values = [
        Some(issued.ticket.as_str()),
        Some(issued.expires_at.as_str()),
        Some(scope.as_str()),
        notes.as_deref(),
    ];
    wire::text_row(out, &["ticket", "expires_at", "scope", "notes"], &values);
}

/// What a ticket allows, in one line.
pub fn describe(scope: &Scope) -> String {
    let mut text = format!("{}: fields {}", scope.dataset, scope.fields.join(", "));
    match (scope.aggregate, &scope.privacy) {
        (Some(aggregate), Some(_)) => text.push_str(&format!(
            "; {} aggregates only, differentially private",
            aggregate.as_str()
        )),
        (Some(aggregate), None) => text.push_str(&format!(
            "; {} aggregates only, groups under {} withheld",
            aggregate.as_str(),
            scope.min_group_size
        )),
        (None, _) => text.push_str("; row-level"),
    }
    for (field, value) in &scope.row_filters {
        text.push_str(&format!("; rows where {field} = {value}"));
    }
    if !scope.policy_ids.is_empty() {
        text.push_str(&format!("; policies {}", scope.policy_ids.join(", ")));
    }
    text
}

/// The notice for a session that got a ticket from a request it did not
/// send itself (its standing request, at login or renewed). It names the
/// ticket by its hash, as the audit log does: the id itself is a bearer
/// credential, and notices end up in tools' logs.
pub fn granted_notice(out: &mut BytesMut, what: &str, granted: &Granted) {
    let issued = &granted.issued;
    let message = format!(
        "{what}: ticket {} for {}; expires at {}",
        granted.id.hash(),
        describe(&issued.scope),
        issued.expires_at
    );
    let hint = "SHOW esq.ticket shows it; it is renewed from your standing request when it expires; SET esq.ticket or SELECT esq.request_ticket('…') replace it";
    notice(out, &message, &issued.notes.join("; "), hint);
}

/// The notice for a session whose standing request got no ticket.
pub fn refused_notice(out: &mut BytesMut, what: &str, error: &RequestError) {
    let (message, detail, hint) = error.summary();
    let message = format!("{what}: {message}; this session has no ticket");
    let hint = match hint.as_str() {
        "" => format!("ask with {EXAMPLE}"),
        hint => format!("{hint}; or ask with {EXAMPLE}"),
    };
    notice(out, &message, &detail, &hint);
}

fn notice(out: &mut BytesMut, message: &str, detail: &str, hint: &str) {
    wire::notice_response(
        out,
        &[
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', message),
            (b'D', detail),
            (b'H', hint),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_read_as_the_http_door_reads_it() {
        let request = parse(r#"{"dataset":"d","purpose":"p","fields":["a"],"ttl":"1h"}"#);
        assert_eq!(
            request.map(|r| (r.dataset, r.ttl)),
            Ok(("d".to_string(), Some("1h".to_string())))
        );
        let Err(RequestError::Bad { field, .. }) = parse(r#"{"dataset":"d","fields":"a"}"#) else {
            panic!("fields must be a list");
        };
        assert_eq!(field, "fields");
        let Err(RequestError::Bad { field, message }) = parse("{not json") else {
            panic!("malformed JSON is refused");
        };
        assert_eq!(field, "body");
        assert!(message.starts_with("malformed JSON"), "{message}");
        assert!(matches!(
            parse(r#"{"dataset":"d","fields":["a"],"bogus":1}"#),
            Err(RequestError::Bad { .. })
        ));
    }

    #[test]
    fn refusals_show_reasons_and_alternatives_but_nothing_internal() {
        let denied = RequestError::Denied {
            reasons: vec!["row-level PHI needs a treatment purpose".into()],
            policy_ids: vec!["P-HIPAA-001".into()],
            alternatives: vec!["ask for counts".into()],
        };
        let (code, message, detail, hint) = denied.parts();
        assert_eq!(code, "42501");
        assert!(message.contains("treatment purpose"), "{message}");
        assert!(detail.contains("P-HIPAA-001"), "{detail}");
        assert_eq!(hint, "ask for counts");
        let (code, message, _, _) = RequestError::Unavailable("the ticket store").parts();
        assert_eq!(code, "08006");
        assert!(!message.contains("127.0.0.1"));
    }
}
