//! The one decision step both doors call, protocol-agnostic and always in
//! the same order: **ticket check → audit-log check → guard → sentinel →
//! metrics → audit record**. A door turns a statement and the asker into a
//! [`Verdict`] here and only renders it: an allowed statement's SQL to
//! forward plus the [`Completion`] that records it when it completes (the
//! one terminal record on allow, whatever the answer's end), or a
//! [`Refusal`], already counted and recorded.
//!
//! What a statement *is* (a ticket statement, a query, a `DEALLOCATE`) is
//! the guard's answer; nothing here knows a socket, a wire message or an
//! HTTP type.

pub mod private;
pub mod ticket;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;

use crate::app::App;
use crate::audit::{fingerprint, AuditEvent, AuditKind};
use crate::guard::{Allowed, Decision, Denial, Kind, TicketStatement};
use crate::metrics::{Door, Outcome};
use crate::tickets::{Lookup, Scope, Stale, TicketCheck, TicketHash, TicketId};

/// Who asks, and through which door.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub door: Door,
    pub user: &'a str,
    /// The user's roles, for the audit record.
    pub roles: &'a [String],
    pub client: Option<SocketAddr>,
}

/// When an allowed statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Now (a simple query, an HTTP query): one use of the ticket.
    Now,
    /// At each later Execute (a prepared statement): the decision is
    /// recorded now, each execution when it completes.
    Prepared,
}

/// Why a statement is not run. Each is counted and recorded before it is
/// returned; the door's error map says how a client sees it.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The audit log cannot take records, so nothing runs.
    AuditUnavailable,
    TicketStale(Stale),
    /// The ticket store did not answer (the error is logged, not shown).
    TicketStoreUnavailable,
    /// Presented text that is not shaped like a ticket.
    NotATicket,
    /// A live ticket issued to another user.
    TicketOfAnotherUser,
    /// The privacy budget cannot pay for this answer until `renews_at`.
    PrivacyBudgetSpent {
        renews_at: chrono::DateTime<Utc>,
        remaining: f64,
        needed: f64,
    },
    /// The privacy ledger did not answer (fail closed; logged).
    PrivacyUnavailable,
    /// A private answer could not be released (logged).
    PrivateAnswerFailed,
    /// The guard's denial, with what the asker's ticket allows.
    Denied {
        denial: Arc<Denial>,
        scope: Option<Arc<ScopeSummary>>,
        has_ticket: bool,
    },
}

/// What a denial tells the asker of their own ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSummary {
    pub dataset: String,
    pub fields: Vec<String>,
    pub aggregate: Option<&'static str>,
}

/// An allowed statement.
#[derive(Debug, Clone)]
pub struct Run {
    pub allowed: Arc<Allowed>,
    /// Its audit record, written when it completes (see [`Completion`]).
    pub completion: Arc<Completion>,
    /// The decision rested on a ticket: a prepared statement must stop
    /// running when that ticket goes stale.
    pub under_ticket: bool,
    pub outcome: Outcome,
    /// Set for a private count: its rows go through [`private::release`].
    pub private: Option<Arc<private::PrivateQuery>>,
}

/// A decision, with the audit record it wrote now (if any).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub result: Result<Run, Refusal>,
    pub recorded: Recorded,
}

/// An audit record written during the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Nothing,
    Seq(u64),
    /// It could not be queued: the door must not deliver the answer.
    Lost,
}

impl Recorded {
    /// What `AuditSink::record` answered.
    pub fn from_seq(seq: Option<u64>) -> Recorded {
        seq.map_or(Recorded::Lost, Recorded::Seq)
    }
}

/// What the PostgreSQL door gets for one statement text.
#[derive(Debug, Clone)]
pub enum Decided {
    /// `SET`, `RESET` or `SHOW esq.ticket`: the door answers it itself.
    TicketStatement(TicketStatement),
    Verdict(Verdict),
}

/// Decides one statement text of a session holding `ticket`: a ticket
/// statement is handed back; otherwise the ticket is checked now and the
/// statement decided. Session statements (`ROLLBACK`, catalog queries) need
/// no ticket, so a stale one does not trap the session.
pub async fn statement(
    app: &App,
    checks: &TicketCheck,
    asker: Asker<'_>,
    ticket: Option<&TicketId>,
    sql: &str,
    timing: Timing,
) -> Decided {
    if let Some(statement) = crate::guard::ticket_statement::recognise(sql) {
        return Decided::TicketStatement(statement);
    }
    let scope = match ticket {
        None => None,
        Some(id) => match check_ticket(checks, id).await {
            Ok(scope) => Some(scope),
            Err(_) if needs_no_ticket(app, sql) => None,
            Err(refusal) => return Decided::Verdict(ticket_refused(app, asker, id, sql, refusal)),
        },
    };
    let ticket = ticket.filter(|_| scope.is_some()).map(TicketId::hash);
    Decided::Verdict(decide(
        app,
        asker,
        ticket.as_ref(),
        scope.as_ref(),
        sql,
        timing,
    ))
}

fn needs_no_ticket(app: &App, sql: &str) -> bool {
    matches!(app.bundle().guard.decide(None, sql), Decision::Allow(_))
}

/// Step one: the ticket's scope as of now.
pub async fn check_ticket(checks: &TicketCheck, id: &TicketId) -> Result<Scope, Refusal> {
    match checks.lookup(id, Utc::now()).await {
        Ok(Lookup::Valid(ticket)) => Ok(ticket.scope),
        Ok(Lookup::Stale(why)) => Err(Refusal::TicketStale(why)),
        Err(err) => {
            tracing::error!(%err, "the ticket store did not answer");
            Err(Refusal::TicketStoreUnavailable)
        }
    }
}

/// Counts and records a statement refused at step one (`statement`: its
/// text, for the fingerprint; the HTTP door has none yet).
pub fn ticket_refused(
    app: &App,
    asker: Asker<'_>,
    id: &TicketId,
    statement: &str,
    refusal: Refusal,
) -> Verdict {
    app.metrics.decision(asker.door, Outcome::stale);
    crate::telemetry::record_outcome(Outcome::stale);
    let sqlstate = match &refusal {
        Refusal::TicketStoreUnavailable => "08006",
        _ => "28000",
    };
    let seq = app.audit.record(&AuditEvent {
        roles: asker.roles,
        client: asker.client,
        ticket_hash: Some(id.hash().to_hex()),
        outcome: Outcome::stale,
        sqlstate: Some(sqlstate),
        fingerprint: fingerprint(statement),
        ..AuditEvent::event(AuditKind::Decision, asker.door, asker.user)
    });
    Verdict {
        result: Err(refusal),
        recorded: Recorded::from_seq(seq),
    }
}

/// Steps two to six for a statement under `scope` (`None`: no ticket).
pub fn decide(
    app: &App,
    asker: Asker<'_>,
    ticket: Option<&TicketHash>,
    scope: Option<&Scope>,
    sql: &str,
    timing: Timing,
) -> Verdict {
    if let Err(err) = app.audit.check() {
        tracing::error!(%err, "statement refused: the audit log cannot be written");
        return Verdict {
            result: Err(Refusal::AuditUnavailable),
            recorded: Recorded::Nothing,
        };
    }
    let started = std::time::Instant::now();
    let decision = app.bundle().guard.decide(scope, sql);
    app.metrics
        .guard_seconds
        .observe(started.elapsed().as_secs_f64());
    let record = Record {
        app,
        asker,
        ticket,
        scope,
        sql,
    };
    match decision {
        Decision::Allow(allowed) if !asker.door.runs_sessions() && !only_queries(&allowed) => {
            record.denied(Arc::new(Denial {
                code: crate::sqlstate::FEATURE_NOT_SUPPORTED,
                reason: "the HTTP door runs queries only".into(),
                detail: "a transaction or session statement (BEGIN, SET, DEALLOCATE, …) would stay on a database connection other users' queries share".into(),
                hint: "send the query alone; for a transaction or session settings, use the PostgreSQL door".into(),
                policy_id: None,
                esq_rule: true,
            }))
        }
        Decision::Allow(allowed) => record.allowed(allowed, timing),
        Decision::Deny(denial) => record.denied(denial),
    }
}

/// Statements that read and leave nothing behind in the session.
fn only_queries(allowed: &Allowed) -> bool {
    allowed.kinds.iter().all(|kind| *kind == Kind::Query)
}

/// The sentinel, metrics and audit of one decision.
struct Record<'a> {
    app: &'a App,
    asker: Asker<'a>,
    ticket: Option<&'a TicketHash>,
    scope: Option<&'a Scope>,
    sql: &'a str,
}

impl Record<'_> {
    fn allowed(&self, allowed: Arc<Allowed>, timing: Timing) -> Verdict {
        let (app, asker) = (self.app, self.asker);
        match (self.ticket, timing) {
            (Some(ticket), Timing::Now) => {
                app.sentinel
                    .ran(ticket, asker.user, crate::sentinel::fingerprint(self.sql))
            }
            _ => app.sentinel.decided(asker.user, self.ticket, false),
        }
        let outcome = if allowed.sql == self.sql {
            Outcome::allow
        } else {
            Outcome::rewrite
        };
        app.metrics.decision(asker.door, outcome);
        crate::telemetry::record_outcome(outcome);
        let completion = Arc::new(Completion {
            door: asker.door,
            user: asker.user.to_string(),
            roles: asker.roles.to_vec(),
            client: asker.client,
            ticket_hash: self.ticket.map(TicketHash::to_hex),
            dataset: self.scope.map(|s| s.dataset.clone()),
            outcome,
            fingerprint: fingerprint(self.sql),
            rewritten: allowed.recorded().to_string(),
            classification: Some(allowed.classification.to_string()),
            policy_id: self.scope.and_then(|s| s.policy_ids.first().cloned()),
            exception: self.scope.and_then(|s| s.exception.clone()),
        });
        let recorded = match timing {
            Timing::Now => Recorded::Nothing,
            Timing::Prepared => Recorded::from_seq(app.audit.record(&AuditEvent {
                detail: Some(serde_json::json!({"phase": "prepare"})),
                ..completion.event(None, None)
            })),
        };
        Verdict {
            result: Ok(Run {
                // Session statements (ROLLBACK, …) read nothing: a prepared
                // one keeps working after the ticket goes.
                under_ticket: self.scope.is_some() && allowed.kinds.contains(&Kind::Query),
                private: private::of(&allowed, asker.user, self.scope),
                allowed,
                completion,
                outcome,
            }),
            recorded,
        }
    }

    fn denied(&self, denial: Arc<Denial>) -> Verdict {
        let (app, asker) = (self.app, self.asker);
        // esq not ready (its tombstones unread) is not the asker probing:
        // it does not count towards a denial streak.
        if denial.code != crate::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE {
            app.sentinel.decided(asker.user, self.ticket, true);
        }
        app.metrics.decision(asker.door, Outcome::deny);
        crate::telemetry::record_outcome(Outcome::deny);
        let seq = app.audit.record(&AuditEvent {
            roles: asker.roles,
            client: asker.client,
            ticket_hash: self.ticket.map(TicketHash::to_hex),
            dataset: self.scope.map(|s| s.dataset.as_str()),
            outcome: Outcome::deny,
            sqlstate: Some(denial.code),
            fingerprint: fingerprint(self.sql),
            policy_id: denial.policy_id.as_deref(),
            exception: self.scope.and_then(|s| s.exception.as_deref()),
            ..AuditEvent::event(AuditKind::Decision, asker.door, asker.user)
        });
        Verdict {
            result: Err(Refusal::Denied {
                denial,
                scope: self.scope.map(|s| {
                    Arc::new(ScopeSummary {
                        dataset: s.dataset.clone(),
                        fields: s.fields.clone(),
                        aggregate: s.aggregate.map(|a| a.as_str()),
                    })
                }),
                has_ticket: self.ticket.is_some(),
            }),
            recorded: Recorded::from_seq(seq),
        }
    }
}

/// Checks a ticket presented in a session (`SET esq.ticket`, the startup
/// option): shaped like a ticket, live, and the asker's own.
pub async fn accept_ticket(
    checks: &TicketCheck,
    asker: Asker<'_>,
    text: &str,
) -> Result<TicketId, Refusal> {
    let id = TicketId::parse(text.trim()).map_err(|_| Refusal::NotATicket)?;
    let scope = check_ticket(checks, &id).await?;
    if scope.user != asker.user {
        return Err(Refusal::TicketOfAnotherUser);
    }
    Ok(id)
}

/// What the record of an allowed statement needs, kept (owned) with the
/// prepared statement or the forwarded query until it completes: the
/// terminal step of an allowed decision.
#[derive(Debug, PartialEq)]
pub struct Completion {
    pub door: Door,
    pub user: String,
    pub roles: Vec<String>,
    pub client: Option<SocketAddr>,
    pub ticket_hash: Option<String>,
    pub dataset: Option<String>,
    pub outcome: Outcome,
    pub fingerprint: String,
    pub rewritten: String,
    pub classification: Option<String>,
    pub policy_id: Option<String>,
    /// The exception waiver the ticket was issued under (its records name it).
    pub exception: Option<String>,
}

impl Completion {
    /// The record of one run: rows delivered, or the SQLSTATE it ended with.
    pub fn event<'a>(&'a self, rows: Option<u64>, sqlstate: Option<&'a str>) -> AuditEvent<'a> {
        AuditEvent {
            roles: &self.roles,
            client: self.client,
            ticket_hash: self.ticket_hash.clone(),
            dataset: self.dataset.as_deref(),
            outcome: self.outcome,
            sqlstate,
            fingerprint: self.fingerprint.clone(),
            rewritten: Some(&self.rewritten),
            rows,
            classification: self.classification.clone(),
            policy_id: self.policy_id.as_deref(),
            exception: self.exception.as_deref(),
            ..AuditEvent::event(AuditKind::Decision, self.door, &self.user)
        }
    }
}
