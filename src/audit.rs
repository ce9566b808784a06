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

    /// What this sink guarantees: the System Security Plan's AU controls
    /// are computed from it, so a sink claims only what it does. The
    /// default claims nothing.
    fn properties(&self) -> AuditProperties {
        AuditProperties::default()
    }
}

/// The guarantees of an [`AuditSink`], as the SSP reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditProperties {
    /// A short name of the sink (e.g. `tracing`, `file`).
    pub sink: &'static str,
    /// Records are written to a file of their own that outlives the
    /// process (not only to the process log).
    pub durable: bool,
    /// Every record carries all of [`AuditEvent`]'s fields (time, user,
    /// client, ticket hash, door, fingerprint, rewritten SQL, outcome, rows).
    pub full_content: bool,
    /// Each record holds the hash of the one before (tamper evidence).
    pub hash_chained: bool,
    /// Records are signed with a key that identifies the writer.
    pub signed: bool,
}

/// Until the audit log exists: one structured `tracing` event per record.
#[derive(Debug, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn properties(&self) -> AuditProperties {
        AuditProperties {
            sink: "tracing",
            ..AuditProperties::default()
        }
    }

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

/// The statement fingerprint recorded instead of its text.
pub fn fingerprint(sql: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(sql.as_bytes())[..12])
}
