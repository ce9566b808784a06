//! What the session does with one statement text: answer a ticket
//! statement itself, or ask the guard under the session's ticket, and turn
//! the outcome into the text to forward plus the substitution (denial,
//! notice, `SET` answer) the relay slots in.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use chrono::Utc;

use super::completion::{Completion, Pending};
use super::relay::Substitution;
use super::ticket_statement::{self, TicketStatement};
use super::wire;
use crate::app::App;
use crate::audit::{fingerprint, AuditEvent, AuditKind};
use crate::auth::Principal;
use crate::guard::{Decision, Denial, Kind};
use crate::metrics::{Door, Outcome};
use crate::tickets::{Lookup, Scope, Stale, TicketCheck, TicketId};

/// The text to forward and what to substitute for its answer.
pub struct Forward {
    pub sql: String,
    pub substitutions: Vec<Substitution>,
    /// Whether the decision rested on the session's ticket (a statement
    /// prepared so must stop when that ticket goes stale).
    pub under_ticket: bool,
    /// An allowed statement's audit record, written when it completes.
    pub completion: Option<Arc<Completion>>,
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
    /// Makes the stand-in statements of denials unique in this session.
    pub marker_prefix: &'a str,
    /// Where the session notes the audit records it writes itself, so the
    /// relay waits for them before the round's ReadyForQuery.
    pub pending: Option<&'a Pending>,
}

/// Why the session's ticket cannot be used.
pub enum TicketProblem {
    Stale(Stale),
    Unavailable(String),
}

impl SessionView<'_> {
    /// The session ticket's scope, as of now.
    pub async fn scope(&self) -> Result<Option<Scope>, TicketProblem> {
        let Some(ticket) = self.ticket else {
            return Ok(None);
        };
        lookup(self.checks, ticket).await.map(Some)
    }

    /// Whether the session ticket can be used now (no ticket: yes).
    pub async fn usable(&self) -> Result<(), TicketProblem> {
        let Some(ticket) = self.ticket else {
            return Ok(());
        };
        match self.checks.stale(ticket, Utc::now()).await {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(TicketProblem::Stale(why)),
            Err(err) => Err(TicketProblem::Unavailable(err.to_string())),
        }
    }

    /// Tells the sentinel about one decision, and about one use of the
    /// ticket when the statement runs now (simple protocol; an extended
    /// statement is used at each Execute).
    fn watched(&self, denied: bool, runs_now: bool, statement: &str) {
        let user = self.principal.name.as_str();
        let ticket = self.ticket.map(TicketId::hash);
        match (ticket, denied, runs_now) {
            (Some(ticket), false, true) => {
                self.app
                    .sentinel
                    .ran(&ticket, user, crate::sentinel::fingerprint(statement))
            }
            _ => self.app.sentinel.decided(user, ticket.as_ref(), denied),
        }
    }

    /// Decides one statement text, in its `statement` span. `extended`
    /// (Parse) cannot answer `SHOW`.
    pub async fn decide(&self, sql: &str, sequence: u64, extended: bool) -> Forward {
        use tracing::Instrument;
        let span = crate::telemetry::statement_span(Door::pg);
        crate::telemetry::record_user(&span, &self.principal.name);
        crate::telemetry::record_statement(&span, sql, &self.app.config.log);
        self.decide_in_span(sql, sequence, extended)
            .instrument(span)
            .await
    }

    async fn decide_in_span(&self, sql: &str, sequence: u64, extended: bool) -> Forward {
        if let Some(statement) = ticket_statement::recognise(sql) {
            return self.ticket_statement(statement, sequence, extended).await;
        }
        if let Err(err) = self.app.audit.check() {
            tracing::error!(%err, "statement refused: the audit log cannot be written");
            return self.refuse(
                sequence,
                error_bytes(
                    "58030",
                    "the audit log cannot be written, so esq runs no statement",
                    "esq never runs a statement it cannot audit",
                    "retry when the audit log is fixed",
                ),
            );
        }
        let scope = match self.scope().await {
            Ok(scope) => scope,
            // Session statements (ROLLBACK, …) and catalog queries need no
            // ticket: a stale one must not trap the session.
            Err(_) if matches!(self.app.guard.decide(None, sql), Decision::Allow(_)) => None,
            Err(problem) => {
                self.app.metrics.decision(Door::pg, Outcome::stale);
                self.audit(sql, Outcome::stale, Some("28000"), None, None, None);
                return self.refuse(sequence, ticket_problem_error(&problem));
            }
        };
        let started = std::time::Instant::now();
        let decision = self.app.guard.decide(scope.as_ref(), sql);
        self.app
            .metrics
            .guard_seconds
            .observe(started.elapsed().as_secs_f64());
        match decision {
            Decision::Allow(allowed) => {
                self.watched(false, !extended && scope.is_some(), sql);
                let outcome = if allowed.sql == sql {
                    Outcome::allow
                } else {
                    Outcome::rewrite
                };
                self.app.metrics.decision(Door::pg, outcome);
                crate::telemetry::record_outcome(outcome);
                let completion = Arc::new(Completion {
                    user: self.principal.name.clone(),
                    roles: self.principal.roles.clone(),
                    client: self.client,
                    ticket_hash: self.ticket.map(|t| t.hash().to_hex()),
                    dataset: scope.as_ref().map(|s| s.dataset.clone()),
                    outcome,
                    fingerprint: fingerprint(sql),
                    rewritten: allowed.sql.clone(),
                    classification: Some(allowed.classification.to_string()),
                    policy_id: scope.as_ref().and_then(|s| s.policy_ids.first().cloned()),
                });
                if extended {
                    // Prepared now, run (and recorded again, with rows) at
                    // each Execute: the decision itself is recorded here.
                    let seq = self.app.audit.record(&AuditEvent {
                        detail: Some(serde_json::json!({"phase": "prepare"})),
                        ..completion.event(None, None)
                    });
                    self.note(seq);
                }
                let mut substitutions = Vec::new();
                if !allowed.dropped.is_empty() {
                    let mut notice = BytesMut::new();
                    let text = format!(
                        "esq left out columns the ticket does not allow: {}",
                        allowed.dropped.join(", ")
                    );
                    wire::notice_response(
                        &mut notice,
                        &[
                            (b'S', "NOTICE"),
                            (b'V', "NOTICE"),
                            (b'C', "01000"),
                            (b'M', &text),
                            (
                                b'H',
                                "request a ticket that includes them, if policy allows",
                            ),
                        ],
                    );
                    substitutions.push(Substitution::Before {
                        answer: notice.freeze(),
                    });
                }
                Forward {
                    sql: allowed.sql.clone(),
                    substitutions,
                    // Session statements (ROLLBACK, …) read nothing: a
                    // prepared one keeps working after the ticket goes.
                    under_ticket: scope.is_some() && allowed.kinds.contains(&Kind::Query),
                    completion: Some(completion),
                }
            }
            Decision::Deny(denial) => {
                self.watched(true, false, sql);
                self.app.metrics.decision(Door::pg, Outcome::deny);
                self.audit(
                    sql,
                    Outcome::deny,
                    Some(denial.code),
                    None,
                    scope.as_ref().map(|s| s.dataset.as_str()),
                    denial.policy_id.as_deref(),
                );
                let error = denial_error(&denial, scope.as_ref(), self.ticket.is_none());
                self.refuse(sequence, error)
            }
        }
    }

    pub async fn ticket_statement(
        &self,
        statement: TicketStatement,
        sequence: u64,
        extended: bool,
    ) -> Forward {
        let mut answer = BytesMut::new();
        let change = match &statement {
            TicketStatement::Show if extended => {
                return self.refuse(
                    sequence,
                    error_bytes(
                        "0A000",
                        "SHOW esq.ticket is answered in the simple query protocol only",
                        "",
                        "run it as a plain query (psql does)",
                    ),
                )
            }
            TicketStatement::Show => {
                let shown = match (self.ticket, self.scope().await) {
                    (None, _) => "none".to_string(),
                    (Some(_), Ok(Some(scope))) => format!(
                        "ticket for {} (fields {}; expires {})",
                        scope.dataset,
                        scope.fields.join(", "),
                        scope.expires_at.to_rfc3339()
                    ),
                    (Some(_), _) => "stale".to_string(),
                };
                wire::single_text_row(&mut answer, ticket_statement::SETTING, &shown);
                None
            }
            TicketStatement::Reset => Some(TicketChange::Clear),
            TicketStatement::Set(text) => match self.accept_ticket(text).await {
                Ok(id) => Some(TicketChange::Set(id)),
                Err(error) => return self.refuse(sequence, error),
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
        }
    }

    /// Checks a ticket presented by `SET esq.ticket` or `-c esq.ticket=`:
    /// it must be live and belong to the session's user.
    pub async fn accept_ticket(&self, text: &str) -> Result<TicketId, Bytes> {
        let id = TicketId::parse(text.trim()).map_err(|_| {
            error_bytes(
                "22023",
                "not a ticket: esq tickets look like T-…",
                "",
                "request one with POST /api/esq/ticket on the HTTP door",
            )
        })?;
        let scope = lookup(self.checks, &id)
            .await
            .map_err(|problem| ticket_problem_error(&problem))?;
        if scope.user != self.principal.name {
            return Err(error_bytes(
                "42501",
                "this ticket was issued to another user",
                "a ticket works only for the user it was issued to",
                "request a ticket of your own with POST /api/esq/ticket",
            ));
        }
        Ok(id)
    }

    /// Forwards the marker stand-in and substitutes `error` for its answer.
    fn refuse(&self, sequence: u64, error: Bytes) -> Forward {
        let marker = marker(self.marker_prefix, sequence);
        Forward {
            sql: marker.clone(),
            substitutions: vec![Substitution::Error {
                marker,
                answer: error,
            }],
            under_ticket: false,
            completion: None,
        }
    }

    /// Records a decision that runs nothing (a denial, a stale ticket).
    fn audit(
        &self,
        sql: &str,
        outcome: Outcome,
        sqlstate: Option<&str>,
        rewritten: Option<&str>,
        dataset: Option<&str>,
        policy_id: Option<&str>,
    ) {
        crate::telemetry::record_outcome(outcome);
        let seq = self.app.audit.record(&AuditEvent {
            roles: &self.principal.roles,
            client: self.client,
            ticket_hash: self.ticket.map(|t| t.hash().to_hex()),
            dataset,
            outcome,
            sqlstate,
            fingerprint: fingerprint(sql),
            rewritten,
            policy_id,
            ..AuditEvent::event(AuditKind::Decision, Door::pg, &self.principal.name)
        });
        self.note(seq);
    }

    fn note(&self, seq: Option<u64>) {
        if let Some(pending) = self.pending {
            pending.note(seq);
        }
    }
}

async fn lookup(checks: &TicketCheck, ticket: &TicketId) -> Result<Scope, TicketProblem> {
    match checks.lookup(ticket, Utc::now()).await {
        Ok(Lookup::Valid(found)) => Ok(found.scope),
        Ok(Lookup::Stale(why)) => Err(TicketProblem::Stale(why)),
        Err(err) => Err(TicketProblem::Unavailable(err.to_string())),
    }
}

pub fn ticket_problem_error(problem: &TicketProblem) -> Bytes {
    match problem {
        TicketProblem::Stale(why) => {
            let detail = match why {
                Stale::Expired => "the ticket has expired",
                Stale::Revoked => "the ticket was revoked",
                Stale::Unknown => "esq does not know this ticket",
            };
            error_bytes(
                "28000",
                "ticket stale",
                detail,
                "request a new ticket (POST /api/esq/ticket) and run SET esq.ticket = 'T-…'",
            )
        }
        TicketProblem::Unavailable(why) => error_bytes(
            "08006",
            "the ticket store is unavailable, so esq cannot check the ticket",
            why,
            "retry shortly; esq never answers without checking the ticket",
        ),
    }
}

/// A guard denial as an ErrorResponse: reason, why (policy,
/// classification), and how to proceed.
fn denial_error(denial: &Denial, scope: Option<&Scope>, no_ticket: bool) -> Bytes {
    let mut detail = denial.detail.clone();
    if let Some(policy) = &denial.policy_id {
        detail.push_str(&format!(" (policy {policy})"));
    }
    if let Some(scope) = scope {
        detail.push_str(&format!(
            "; ticket for {} allows {}{}",
            scope.dataset,
            scope.fields.join(", "),
            scope
                .aggregate
                .map(|a| format!(" as {} aggregates", a.as_str()))
                .unwrap_or_default()
        ));
    }
    let mut hint = denial.hint.clone();
    if no_ticket {
        if !hint.is_empty() {
            hint.push_str("; ");
        }
        hint.push_str(
            "this session has no ticket: request one (POST /api/esq/ticket on the HTTP door) and run SET esq.ticket = 'T-…'",
        );
    }
    error_bytes(denial.code, &denial.reason, &detail, &hint)
}

/// The stand-in statement (or statement name) for refusal number
/// `sequence`: a bare word PostgreSQL refuses, whose error quotes it. The
/// trailing letter keeps `…_5z` from matching inside `…_50z`.
pub fn marker(prefix: &str, sequence: u64) -> String {
    format!("{prefix}_{sequence}z")
}

pub fn error_bytes(code: &str, message: &str, detail: &str, hint: &str) -> Bytes {
    let mut out = BytesMut::new();
    wire::error(&mut out, "ERROR", code, message, detail, hint);
    out.freeze()
}
