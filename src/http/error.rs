//! Every way an HTTP request can fail, mapped in one exhaustive `match` to a
//! status and a JSON body with a stable `error` code. Internal error text is
//! logged, never sent to the client.

use serde_json::{json, Value};

use crate::guard::Denial;
use crate::policy::Verdict;

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
    /// The guard refused a statement.
    GuardDenied(std::sync::Arc<Denial>),
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
    /// The upstream database failed or refused; `message` is safe to show.
    Upstream(String),
    /// A dependency (ticket store, upstream) is not reachable.
    Unavailable(String),
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
            ApiError::Upstream(message) => {
                (502, json!({"error": "upstream failed", "message": message}))
            }
            ApiError::Unavailable(message) => {
                (503, json!({"error": "unavailable", "message": message}))
            }
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
