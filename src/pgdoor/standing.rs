//! Standing ticket requests: an operator gives a user one ticket request
//! (`[users.<name>.standing_ticket]`, the body of `POST /api/esq/ticket`),
//! so a BI tool that can only fill host, user and password still gets a
//! ticket. When that user logs in on this door without presenting one
//! (no ticket as the password, no `-c esq.ticket=`), esq asks for it
//! exactly as the HTTP door would ([`super::ticket_request::ask`]): the
//! same policies, audit records and refusals. A NOTICE at login says which
//! ticket the session got, or why it got none (the login succeeds either
//! way).
//!
//! While the session's ticket is the standing one, it renews itself: the
//! first statement (`Query` or `Parse`) after it expired asks again, and a
//! NOTICE before that statement's answer says what came of it. So a
//! dashboard left open keeps working, and every renewal is decided and
//! audited like a new request. Not renewed: a ticket seen revoked (the
//! statements get "ticket stale", as for any revoked ticket), and any
//! ticket the session set itself (`SET esq.ticket`, `RESET esq.ticket`,
//! `SELECT esq.request_ticket`) — an explicit choice always wins. A
//! statement prepared under the expired ticket stays refused as stale:
//! prepare it again.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};

use super::message::Message;
use super::relay::{Shared, Substitution};
use super::rounds::ProtocolState;
use super::ticket_request::{self, Granted};
use crate::app::App;
use crate::auth::Principal;
use crate::tickets::{Stale, TicketCheck, TicketId, TicketRequest};

/// The standing ticket a session holds.
#[derive(Debug)]
pub struct Standing {
    /// The ticket the standing request last gave this session.
    id: TicketId,
    expires_at: DateTime<Utc>,
    /// Seen revoked: not renewed for the rest of the session.
    revoked: bool,
}

/// What the standing request gave a session at login.
#[derive(Default)]
pub struct Login {
    pub standing: Option<Standing>,
    /// The NOTICE to send before the session's first `ReadyForQuery`.
    pub notice: Option<Bytes>,
}

impl Standing {
    /// The session's ticket.
    pub fn ticket(&self) -> TicketId {
        self.id.clone()
    }

    fn from(granted: &Granted) -> Standing {
        Standing {
            id: granted.id.clone(),
            expires_at: granted.issued.scope.expires_at,
            revoked: false,
        }
    }
}

/// The user's standing request, as the bundle in force configures it.
fn standing_request(app: &App, user: &str) -> Option<TicketRequest> {
    app.bundle()
        .user_configs
        .get(user)
        .and_then(|u| u.standing_ticket.clone())
}

/// At login without a presented ticket: asks for the user's standing
/// request, if they have one.
pub async fn at_login(app: &App, user: &Principal, client: SocketAddr) -> Login {
    let Some(request) = standing_request(app, &user.name) else {
        return Login::default();
    };
    let mut notice = BytesMut::new();
    let standing = match ticket_request::ask(app, user, Some(client), &request).await {
        Ok(granted) => {
            tracing::info!(ticket = %granted.id.hash(), "a standing ticket request was granted");
            ticket_request::granted_notice(
                &mut notice,
                "this session has a ticket from your standing request",
                &granted,
            );
            Some(Standing::from(&granted))
        }
        Err(error) => {
            tracing::info!(?error, "a standing ticket request got no ticket");
            ticket_request::refused_notice(&mut notice, "your standing ticket request", &error);
            None
        }
    };
    Login {
        standing,
        notice: Some(notice.freeze()),
    }
}

/// Who asks, and what the session holds, for a renewal.
pub struct Session<'a> {
    pub app: &'a App,
    pub user: &'a Principal,
    pub client: SocketAddr,
    pub checks: &'a TicketCheck,
    pub state: &'a ProtocolState,
    pub shared: &'a Shared,
}

impl Standing {
    /// Before a statement is decided: when the session's ticket is still
    /// the standing one and has expired, asks again; the session's ticket
    /// becomes the new one, or none when refused, and a NOTICE ahead of the
    /// statement's answer says which.
    pub async fn renew_if_due(
        &mut self,
        session: Session<'_>,
        message: &Message,
        ticket: &mut Option<TicketId>,
    ) {
        if self.revoked
            || !matches!(message, Message::Query { .. } | Message::Parse { .. })
            || session.state.ticket_pending.is_some()
            || ticket.as_ref() != Some(&self.id)
        {
            return;
        }
        let now = Utc::now();
        match session.checks.stale(&self.id, now).await {
            Ok(None) => return,
            Ok(Some(Stale::Revoked)) => {
                self.revoked = true;
                return;
            }
            Ok(Some(Stale::Unknown)) if now < self.expires_at => return,
            Ok(Some(Stale::Expired | Stale::Unknown)) => {}
            // The statement's own ticket check reports the store.
            Err(_) => return,
        }
        let Some(request) = standing_request(session.app, &session.user.name) else {
            // The operator removed the standing request: the statement
            // meets the expired ticket, as any other would.
            return;
        };
        let mut notice = BytesMut::new();
        match ticket_request::ask(session.app, session.user, Some(session.client), &request).await {
            Ok(granted) => {
                tracing::info!(ticket = %granted.id.hash(), "a standing ticket was renewed");
                ticket_request::granted_notice(
                    &mut notice,
                    "your standing ticket expired and was renewed",
                    &granted,
                );
                *self = Standing::from(&granted);
                *ticket = Some(granted.id);
            }
            Err(error) => {
                tracing::info!(?error, "a standing ticket was not renewed");
                ticket_request::refused_notice(
                    &mut notice,
                    "your standing ticket expired and renewing it was refused",
                    &error,
                );
                *ticket = None;
            }
        }
        session.shared.push(
            session.state.rounds_sent,
            Substitution::Before {
                answer: notice.freeze(),
            },
        );
    }
}
