//! What the session does with one statement text: it asks the decision
//! step ([`crate::decide`]) and turns the verdict into what to forward — the
//! guard's SQL, or a stand-in — and what the relay slots into the answer
//! ([`Substitution`]: a refusal, a notice, a ticket statement's own answer).
//! Ticket statements (`SET`/`RESET`/`SHOW esq.ticket`, `SELECT
//! esq.request_ticket('…')`) are answered here and never forwarded: the
//! ticket must not reach the database or its logs.

use std::sync::Arc;

use bytes::BytesMut;
use chrono::Utc;

use super::completion::Pending;
use super::error::DoorError;
use super::relay::Substitution;
use super::wire;
use crate::app::App;
use crate::auth::Principal;
use crate::decide::private::{Bound, PrivateQuery};
use crate::decide::{self, Asker, Completion, Decided, Recorded, Refusal, Timing};
use crate::guard::TicketStatement;
use crate::metrics::Door;
use crate::sqlstate;
use crate::tickets::{TicketCheck, TicketId};

/// The text to forward and what to substitute for its answer.
pub struct Forward {
    pub sql: String,
    pub substitutions: Vec<Substitution>,
    /// Whether the decision rested on the session's ticket (a statement
    /// prepared so must stop when that ticket goes stale).
    pub under_ticket: bool,
    /// An allowed statement's audit record, written when it completes.
    pub completion: Option<Arc<Completion>>,
    /// Prepared statements the statement drops (`DEALLOCATE`, `DISCARD ALL`).
    pub prepared_drops: Vec<crate::guard::PreparedDrop>,
    /// Set for a private count (see [`super::private`]).
    pub private: Option<Arc<PrivateQuery>>,
    /// The NOTICE that small groups are withheld, sent with every answer
    /// to the statement ([`crate::guard::Allowed::withheld_notice`]).
    pub withheld: Option<bytes::Bytes>,
}

/// What the decision step made of a statement text.
pub enum Asked {
    Forward(Forward),
    /// A ticket statement: answered now ([`SessionView::ticket_statement`])
    /// or, prepared, when executed.
    TicketStatement(TicketStatement),
}

/// A ticket statement's effect, applied when PostgreSQL has run its
/// stand-in (see [`Substitution::Empty`]).
#[derive(Debug, Clone)]
pub enum TicketChange {
    Set(TicketId),
    Clear,
}

/// The session facts a decision needs.
pub struct SessionView<'a> {
    pub app: &'a App,
    pub principal: &'a Principal,
    pub ticket: Option<&'a TicketId>,
    /// This connection's ticket checks (a short-lived positive cache).
    pub checks: &'a TicketCheck,
    pub client: Option<std::net::SocketAddr>,
    /// Where the session notes the audit records it writes itself, so the
    /// relay waits for them before the round's ReadyForQuery.
    pub pending: Option<&'a Pending>,
}

impl SessionView<'_> {
    fn asker(&self) -> Asker<'_> {
        Asker {
            door: Door::pg,
            user: &self.principal.name,
            roles: &self.principal.roles,
            client: self.client,
        }
    }

    /// Whether the session ticket can be used now (no ticket: yes).
    pub async fn usable(&self) -> Result<(), DoorError> {
        let Some(ticket) = self.ticket else {
            return Ok(());
        };
        match self.checks.stale(ticket, Utc::now()).await {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(DoorError::Refused(Refusal::TicketStale(why))),
            Err(err) => {
                tracing::error!(%err, "the ticket store did not answer");
                Err(DoorError::Refused(Refusal::TicketStoreUnavailable))
            }
        }
    }

    /// Decides one statement that runs now, ticket statements included.
    pub async fn decide_now(&self, sql: &str) -> Forward {
        match self.ask(sql, Timing::Now).await {
            Asked::Forward(forward) => forward,
            Asked::TicketStatement(statement) => self.ticket_statement(statement, false).await,
        }
    }

    /// Decides one statement text, in its `statement` span.
    pub async fn ask(&self, sql: &str, timing: Timing) -> Asked {
        use tracing::Instrument;
        let span = crate::telemetry::statement_span(Door::pg);
        crate::telemetry::record_user(&span, &self.principal.name);
        crate::telemetry::record_statement(&span, sql, &self.app.config.log);
        let decided = decide::statement(
            self.app,
            self.checks,
            self.asker(),
            self.ticket,
            sql,
            timing,
        )
        .instrument(span)
        .await;
        let verdict = match decided {
            // A ticket request's answer is a row of esq's own, which a
            // prepared statement cannot carry: refused at Parse.
            Decided::TicketStatement(TicketStatement::Request(_)) if timing == Timing::Prepared => {
                return Asked::Forward(self.refuse(DoorError::TicketRequest(
                    super::ticket_request::RequestError::Extended,
                )))
            }
            Decided::TicketStatement(statement) => return Asked::TicketStatement(statement),
            Decided::Verdict(verdict) => verdict,
        };
        self.note(verdict.recorded);
        Asked::Forward(match verdict.result {
            Ok(run) => Forward {
                sql: run.allowed.sql.clone(),
                substitutions: dropped_notice(&run.allowed.dropped).into_iter().collect(),
                under_ticket: run.under_ticket,
                prepared_drops: run.allowed.prepared_drops.clone(),
                completion: Some(run.completion),
                private: run.private,
                withheld: run
                    .allowed
                    .withheld_notice()
                    .map(|text| wire::notice(&text)),
            },
            Err(refusal) => self.refuse(DoorError::Refused(refusal)),
        })
    }

    /// Answers a ticket statement: `SHOW` here, `SET`/`RESET` when
    /// PostgreSQL has run its empty stand-in (so a statement skipped after
    /// an error in its pipeline changes nothing).
    pub async fn ticket_statement(&self, statement: TicketStatement, extended: bool) -> Forward {
        let mut answer = BytesMut::new();
        let change = match &statement {
            TicketStatement::Show if extended => return self.refuse(DoorError::ShowTicketExtended),
            TicketStatement::Show => {
                let shown = match self.ticket {
                    None => "none".to_string(),
                    Some(id) => match decide::check_ticket(self.checks, id).await {
                        Ok(scope) => format!(
                            "ticket for {} (fields {}; expires {})",
                            scope.dataset,
                            scope.fields.join(", "),
                            scope.expires_at.to_rfc3339()
                        ),
                        Err(_) => "stale".to_string(),
                    },
                };
                wire::single_text_row(&mut answer, crate::guard::ticket_statement::SETTING, &shown);
                None
            }
            TicketStatement::Reset => Some(TicketChange::Clear),
            TicketStatement::Set(text) => match self.accept_ticket(text).await {
                Ok(id) => Some(TicketChange::Set(id)),
                Err(error) => return self.refuse(error),
            },
            TicketStatement::Request(_) if extended => {
                return self.refuse(DoorError::TicketRequest(
                    super::ticket_request::RequestError::Extended,
                ))
            }
            TicketStatement::Request(text) => match self.request_ticket(text).await {
                Ok((id, row)) => {
                    answer.extend_from_slice(&row);
                    Some(TicketChange::Set(id))
                }
                Err(error) => return self.refuse(DoorError::TicketRequest(error)),
            },
        };
        wire::command_complete(&mut answer, statement.command_tag());
        Forward {
            sql: String::new(),
            substitutions: vec![Substitution::Empty {
                answer: answer.freeze(),
                ticket: change,
            }],
            under_ticket: false,
            completion: None,
            prepared_drops: Vec::new(),
            private: None,
            withheld: None,
        }
    }

    /// Checks a ticket presented by `SET esq.ticket` or `-c esq.ticket=`.
    pub async fn accept_ticket(&self, text: &str) -> Result<TicketId, DoorError> {
        decide::accept_ticket(self.checks, self.asker(), text)
            .await
            .map_err(DoorError::Refused)
    }

    /// `SELECT esq.request_ticket('…')`: asks for the ticket as
    /// `POST /api/esq/ticket` would; the answer row, with the ticket the
    /// session then holds.
    async fn request_ticket(
        &self,
        text: &str,
    ) -> Result<(TicketId, BytesMut), super::ticket_request::RequestError> {
        use super::ticket_request as request;
        let body = request::parse(text)?;
        let granted = request::ask(self.app, self.principal, self.client, &body).await?;
        let mut row = BytesMut::new();
        request::answer_row(&mut row, &granted.issued);
        Ok((granted.id, row))
    }

    /// Forwards a stand-in and substitutes `error` for its answer.
    pub fn refuse(&self, error: DoorError) -> Forward {
        let marker = marker();
        Forward {
            sql: marker.clone(),
            substitutions: vec![Substitution::Error {
                marker,
                answer: error.to_bytes(),
            }],
            under_ticket: false,
            completion: None,
            prepared_drops: Vec::new(),
            private: None,
            withheld: None,
        }
    }

    /// A run of a private statement, if its budget can pay (or its answer
    /// can be recalled); a refusal is recorded as the statement's end.
    pub async fn private_run(
        &self,
        query: &Arc<PrivateQuery>,
        bound: Bound,
        completion: Option<&Completion>,
    ) -> Result<Arc<super::private::PrivateRun>, DoorError> {
        match decide::private::check(self.app, query, &bound).await {
            Ok(()) => Ok(Arc::new(super::private::PrivateRun {
                query: query.clone(),
                bound,
                releaser: self.app.privacy.clone(),
            })),
            Err(refusal) => {
                let error = DoorError::Refused(refusal);
                if let Some(completion) = completion {
                    let seq = self
                        .app
                        .audit
                        .record(&completion.event(None, Some(error.sqlstate())));
                    self.note(Recorded::from_seq(seq));
                }
                Err(error)
            }
        }
    }

    fn note(&self, recorded: Recorded) {
        let Some(pending) = self.pending else { return };
        match recorded {
            Recorded::Nothing => {}
            Recorded::Seq(seq) => pending.note(Some(seq)),
            Recorded::Lost => pending.note(None),
        }
    }
}

/// The notice that names the select items the guard left out.
fn dropped_notice(dropped: &[String]) -> Option<Substitution> {
    if dropped.is_empty() {
        return None;
    }
    let mut notice = BytesMut::new();
    let text = format!(
        "esq left out columns the ticket does not allow: {}",
        dropped.join(", ")
    );
    wire::notice_response(
        &mut notice,
        &[
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', sqlstate::WARNING),
            (b'M', &text),
            (
                b'H',
                "request a ticket that includes them, if policy allows",
            ),
        ],
    );
    Some(Substitution::Before {
        answer: notice.freeze(),
    })
}

/// A fresh stand-in statement (or statement or portal name): a bare word
/// PostgreSQL refuses, whose error quotes it. It starts with the prefix
/// clients may not use ([`super::message::RESERVED_NAME_PREFIX`]) and
/// carries 64 random bits, so a client can neither take it over nor guess
/// the next one; the trailing letter ends it.
pub fn marker() -> String {
    let mut random = [0u8; 8];
    // Without randomness the name is still one no client can have bound
    // (the reserved prefix).
    let _ = getrandom::fill(&mut random);
    format!(
        "{}{}z",
        super::message::RESERVED_NAME_PREFIX,
        hex::encode(random)
    )
}
