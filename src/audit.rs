//! The audit hook every decision goes through. The audit issue replaces the
//! tracing sink with a hash-chained, fsynced log; the doors already call it
//! with everything a record needs.

use serde::Serialize;

use crate::metrics::{Door, Outcome};

/// One decision or ticket event, as the doors report it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent<'a> {
    pub door: Door,
    pub user: &'a str,
    pub client: Option<std::net::SocketAddr>,
    /// Hex SHA-256 of the ticket id (never the id itself).
    pub ticket_hash: Option<String>,
    pub dataset: Option<&'a str>,
    pub outcome: Outcome,
    pub sqlstate: Option<&'a str>,
    /// A SHA-256 of the statement text (the text itself may hold PII).
    pub fingerprint: String,
    pub rewritten: Option<&'a str>,
    pub rows: Option<u64>,
    pub classification: Option<String>,
    pub policy_id: Option<&'a str>,
}

/// Where audit events go.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, event: &AuditEvent<'_>);
}

/// Until the audit log exists: one structured `tracing` event per record.
#[derive(Debug, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn record(&self, event: &AuditEvent<'_>) {
        tracing::info!(
            target: "esq::audit",
            door = ?event.door,
            user = event.user,
            outcome = ?event.outcome,
            sqlstate = event.sqlstate,
            fingerprint = %event.fingerprint,
            rows = event.rows,
            "decision"
        );
    }
}

/// A breach (sentinel trip or operator report) as an audit record.
pub fn record_breach(sink: &dyn AuditSink, breach: &crate::sentinel::Breach) {
    sink.record(&AuditEvent {
        door: Door::http,
        user: breach.user.as_deref().unwrap_or(""),
        client: None,
        ticket_hash: breach.ticket_hash.clone(),
        dataset: None,
        outcome: Outcome::deny,
        sqlstate: None,
        fingerprint: format!("breach:{}:{}", breach.id, breach.rule),
        rewritten: None,
        rows: None,
        classification: None,
        policy_id: None,
    });
}

/// The statement fingerprint recorded instead of its text.
pub fn fingerprint(sql: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(sql.as_bytes())[..12])
}
