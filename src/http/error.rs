//! Every way an HTTP request can fail, mapped in one exhaustive `match` to a
//! status and a JSON body with a stable `error` code. Internal error text
//! (addresses, role names, store errors, the database's own messages) is
//! logged where it arises and never becomes part of an `ApiError`: the
//! variants carry only what a client may see.

use serde_json::{json, Value};

use crate::decide::Refusal;
use crate::guard::structured::BadQuery;
use crate::guard::Denial;
use crate::policy::Verdict;
use crate::upstream::{Busy, UpstreamError};

/// A dependency that did not answer (`503`); what failed is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    TicketStore,
    PrivacyLedger,
    AuditLog,
    Database,
}

/// An answer other than success. `error` codes are part of the contract.
#[derive(Debug)]
pub enum ApiError {
    /// No or an unknown bearer token.
    Unauthorized(&'static str),
    /// `POST /api/dta/query` without `X-ESQ-Ticket`.
    TicketRequired,
    /// An `X-ESQ-Ticket` that is not shaped like a ticket.
    MalformedTicket,
    /// Expired, revoked or unknown ticket (indistinguishable on purpose).
    TicketStale,
    /// The caller may not do this (e.g. revoke another user's ticket).
    Forbidden(String),
    /// A policy refused a ticket.
    PolicyDenied(Box<Verdict>),
    /// A reload was refused (the bundle in force stays); an `esq_admin`
    /// sees why (which file, which test, which section).
    ReloadRefused(String),
    /// The guard refused a statement.
    GuardDenied(std::sync::Arc<Denial>),
    /// The privacy budget cannot pay for this answer.
    PrivacyBudgetSpent {
        renews_at: chrono::DateTime<chrono::Utc>,
        remaining: f64,
        needed: f64,
    },
    /// Malformed JSON, an unknown field, a bad value; names the field.
    BadRequest {
        field: Option<String>,
        message: String,
    },
    NotFound,
    /// `DELETE /api/esq/ticket/{id}` for no live ticket.
    UnknownTicket,
    MethodNotAllowed(&'static str),
    UnsupportedMediaType,
    PayloadTooLarge(u32),
    HeadersTooLarge(usize),
    RateLimited {
        retry_after_secs: u64,
    },
    /// The database refused the statement: its SQLSTATE and its message
    /// redacted (no values), as the PostgreSQL door shows it.
    UpstreamRefused {
        sqlstate: String,
        message: String,
    },
    /// An answer column of a type the door cannot write as JSON.
    UnmappableColumn {
        column: String,
        type_name: String,
    },
    /// A dependency is not reachable.
    Unavailable(Dependency),
    /// A feature this esq is not configured for (the message says which
    /// section turns it on).
    NotConfigured(&'static str),
    /// The resource is not in a state that allows this (e.g. deciding an
    /// exception that is no longer pending).
    Conflict(String),
    /// No such resource, or none the caller may see (the message says
    /// what was looked for).
    Missing(&'static str),
    /// Every upstream connection (or this user's share) stayed busy.
    Busy,
    /// The user already has `limit` queries running on this door.
    TooManyInFlight {
        limit: u32,
    },
    /// The statement ran past `http.statement_timeout`.
    StatementTimeout,
    Timeout,
    /// A bug or an unexpected state; the text is logged only.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    /// The status code and the JSON body.
    pub fn to_response(&self) -> (u16, Value) {
        match self {
            ApiError::Unauthorized(message) => {
                (401, json!({"error": "unauthorized", "message": message}))
            }
            ApiError::TicketRequired => (
                401,
                json!({"error": "ticket required",
                       "message": "send the ticket in the X-ESQ-Ticket header (POST /api/esq/ticket issues one)"}),
            ),
            ApiError::MalformedTicket => (
                400,
                json!({"error": "malformed ticket",
                       "message": "tickets look like T- followed by 32 characters of base64url"}),
            ),
            ApiError::TicketStale => (
                403,
                json!({"error": "ticket stale",
                       "message": "the ticket is expired, revoked or unknown: ask for a new one"}),
            ),
            ApiError::Forbidden(message) => {
                (403, json!({"error": "forbidden", "message": message}))
            }
            ApiError::ReloadRefused(reason) => (
                422,
                json!({"error": "reload refused",
                       "message": "nothing changed: the users, catalog and policies in force stay",
                       "reason": reason}),
            ),
            ApiError::PolicyDenied(verdict) => (
                403,
                json!({
                    "error": "denied",
                    "reason": verdict.reasons.join("; "),
                    "reasons": verdict.reasons,
                    "policy_id": verdict.denied_by.first().or(verdict.policy_ids.first()),
                    "policy_ids": verdict.denied_by,
                    "alternatives": verdict.alternatives,
                }),
            ),
            ApiError::GuardDenied(denial) => (
                403,
                json!({
                    "error": "denied",
                    "reason": denial.reason,
                    "detail": denial.detail,
                    "hint": denial.hint,
                    "sqlstate": denial.code,
                    "policy_id": denial.policy_id,
                    "alternatives": [denial.hint],
                }),
            ),
            ApiError::PrivacyBudgetSpent {
                renews_at,
                remaining,
                needed,
            } => (
                403,
                json!({
                    "error": "privacy budget spent",
                    "renews_at": renews_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "remaining": remaining,
                    "needed": needed,
                    "message": "this answer needs more epsilon than is left; repeat an earlier statement (repeats cost nothing), or wait until the budget renews",
                }),
            ),
            ApiError::BadRequest { field, message } => (
                400,
                json!({"error": "bad request", "field": field, "message": message}),
            ),
            ApiError::NotFound => (
                404,
                json!({"error": "not found", "message": "no such endpoint (see openapi.yaml)"}),
            ),
            ApiError::UnknownTicket => (
                404,
                json!({"error": "ticket not found",
                       "message": "no live ticket with this id (it may be expired or revoked already)"}),
            ),
            ApiError::MethodNotAllowed(allowed) => (
                405,
                json!({"error": "method not allowed", "message": format!("allowed: {allowed}")}),
            ),
            ApiError::UnsupportedMediaType => (
                415,
                json!({"error": "unsupported media type", "message": "send JSON with Content-Type: application/json"}),
            ),
            ApiError::PayloadTooLarge(limit) => (
                413,
                json!({"error": "payload too large", "message": format!("request bodies are limited to {limit} bytes")}),
            ),
            ApiError::HeadersTooLarge(limit) => (
                431,
                json!({"error": "headers too large", "message": format!("request headers are limited to {limit} bytes")}),
            ),
            ApiError::RateLimited { retry_after_secs } => (
                429,
                json!({"error": "rate limited", "message": format!("too many requests: retry in {retry_after_secs}s")}),
            ),
            ApiError::UpstreamRefused { sqlstate, message } => (
                502,
                json!({"error": "upstream failed", "sqlstate": sqlstate, "message": message}),
            ),
            ApiError::UnmappableColumn { column, type_name } => (
                502,
                json!({"error": "upstream failed",
                       "message": format!("column {column:?} has type {type_name}, which the HTTP door cannot write as JSON; cast it to text or a number")}),
            ),
            ApiError::Unavailable(dependency) => {
                let message = match dependency {
                    Dependency::TicketStore => "the ticket store is unavailable, so esq cannot check the ticket; retry shortly",
                    Dependency::PrivacyLedger => "the privacy budget cannot be checked, so esq gives no private answer; retry shortly",
                    Dependency::AuditLog => "the audit log cannot be written, so esq runs no query",
                    Dependency::Database => "the database is unavailable; retry shortly",
                };
                (503, json!({"error": "unavailable", "message": message}))
            }
            ApiError::NotConfigured(message) => {
                (503, json!({"error": "not configured", "message": message}))
            }
            ApiError::Conflict(message) => (409, json!({"error": "conflict", "message": message})),
            ApiError::Missing(message) => (404, json!({"error": "not found", "message": message})),
            ApiError::Busy => (
                503,
                json!({"error": "busy", "message": "every database connection esq may use for you is busy; retry shortly"}),
            ),
            ApiError::TooManyInFlight { limit } => (
                429,
                json!({"error": "too many queries", "message": format!("you have {limit} queries running on this door (http.max_in_flight_per_user); wait for one to finish")}),
            ),
            ApiError::StatementTimeout => (
                504,
                json!({"error": "statement timeout", "message": "the query ran longer than this door allows (http.statement_timeout); narrow it"}),
            ),
            ApiError::Timeout => (
                504,
                json!({"error": "timeout", "message": "the request took longer than the configured limit"}),
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error in the HTTP door");
                (
                    500,
                    json!({"error": "internal error", "message": "esq failed; the operator's log has the details"}),
                )
            }
        }
    }
}

impl ApiError {
    /// How a client sees an upstream failure; the whole failure is logged.
    pub fn upstream(err: UpstreamError) -> ApiError {
        match err {
            UpstreamError::Server { code, message } => {
                // The database's message may quote a value: log the code.
                tracing::warn!(sqlstate = %code, "HTTP door: the database refused the statement");
                ApiError::UpstreamRefused {
                    message: crate::upstream::redact::redact(&message),
                    sqlstate: code,
                }
            }
            UpstreamError::Timeout => ApiError::StatementTimeout,
            UpstreamError::Busy(busy) => {
                tracing::warn!(%busy, "HTTP door: no upstream connection");
                ApiError::Busy
            }
            other => {
                tracing::error!(error = %other, "HTTP door: the database is unavailable");
                ApiError::Unavailable(Dependency::Database)
            }
        }
    }

    /// Seconds a client should wait before retrying, where that helps.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Busy | ApiError::TooManyInFlight { .. } | ApiError::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::AuditUnavailable => ApiError::Unavailable(Dependency::AuditLog),
            Refusal::TicketStale(_) => ApiError::TicketStale,
            Refusal::TicketStoreUnavailable => ApiError::Unavailable(Dependency::TicketStore),
            Refusal::NotATicket => ApiError::MalformedTicket,
            Refusal::TicketOfAnotherUser => {
                ApiError::Forbidden("this ticket was issued to another user".into())
            }
            Refusal::Denied { denial, .. } => ApiError::GuardDenied(denial),
            Refusal::PrivacyBudgetSpent {
                renews_at,
                remaining,
                needed,
            } => ApiError::PrivacyBudgetSpent {
                renews_at,
                remaining,
                needed,
            },
            Refusal::PrivacyUnavailable => ApiError::Unavailable(Dependency::PrivacyLedger),
            Refusal::PrivateAnswerFailed => {
                ApiError::Internal("a private answer could not be released".into())
            }
        }
    }
}

impl ApiError {
    /// The ticket store failed: logged, shown as unavailable.
    pub fn store(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "HTTP door: the ticket store did not answer");
        ApiError::Unavailable(Dependency::TicketStore)
    }

    /// The audit log failed: logged, shown as unavailable.
    pub fn audit(err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "HTTP door: the audit log cannot be written");
        ApiError::Unavailable(Dependency::AuditLog)
    }
}

impl From<BadQuery> for ApiError {
    fn from(bad: BadQuery) -> ApiError {
        match bad {
            BadQuery::Field { field, message } => ApiError::BadRequest { field, message },
            BadQuery::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<Busy> for ApiError {
    fn from(_: Busy) -> ApiError {
        ApiError::Busy
    }
}
