//! A breach: one sentinel trip or one operator report. This is the record
//! listed by `GET /api/esq/breach` and, as is, the body POSTed to the
//! webhook.

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditKind, AuditSink};
use crate::metrics::Door;

/// What raised a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A sentinel rule tripped.
    Sentinel,
    /// An operator raised it (`POST /api/esq/breach`).
    Operator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// Always `"esq.breach"`: lets a webhook receiver route the message.
    pub event: String,
    /// `B-` and 16 hex digits; the same id in the list, the audit and the
    /// alert (a receiver can drop repeats of a retried delivery by it).
    pub id: String,
    /// RFC 3339.
    pub at: String,
    pub source: Source,
    /// The rule's name, or `manual`.
    pub rule: String,
    /// `uses`, `distinct_statements`, `denials_in_a_row` or `manual`.
    pub measure: String,
    /// `ticket` or `user`: what the rule counted.
    pub per: String,
    /// Whose activity it was (the ticket's owner for ticket rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Hex SHA-256 of the ticket id (never the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_hash: Option<String>,
    /// The count that reached the limit.
    pub count: u64,
    pub limit: u64,
    pub window_seconds: u64,
    /// Whether esq revoked the ticket (`false`: no ticket, or already stale).
    pub revoked: bool,
    /// The esq replica that raised it (listen address and process id).
    pub replica: String,
    /// Free text: the rule's description, or the operator's reason.
    pub reason: String,
    /// The operator who raised it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_by: Option<String>,
}

/// A fresh breach id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    // Without a random source the time serves: ids need to be distinct,
    // not secret.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_be_bytes();
    }
    format!("B-{}", hex::encode(bytes))
}

/// A breach as an audit record; the whole breach (rule, counts, window) is
/// its `detail`.
pub fn record(sink: &dyn AuditSink, breach: &Breach) {
    let kind = match breach.source {
        Source::Sentinel => AuditKind::SentinelTrip,
        Source::Operator => AuditKind::BreachReported,
    };
    let user = breach.user.as_deref().unwrap_or("");
    if sink
        .record(&AuditEvent {
            ticket_hash: breach.ticket_hash.clone(),
            fingerprint: breach.id.clone(),
            detail: serde_json::to_value(breach).ok(),
            ..AuditEvent::event(kind, Door::http, user)
        })
        .is_none()
    {
        tracing::error!(breach = %breach.id, "the breach could not be audited");
    }
}
