//! The audit trail: every decision, ticket event and lifecycle event becomes
//! one record of a hash-chained JSON Lines log.
//!
//! ```text
//! door ──record(&AuditEvent)──► queue ──writer thread──► audit.jsonl (write + fsync per batch)
//!        (never blocks)              group commit          rotated by size, chain continues
//!   └──durable(seq).await ◄──── "records up to seq are on disk"
//! ```
//!
//! [`AuditEvent`] is what callers report; [`record`] turns it into the line
//! format (`seq` and `prev` first, then the event); [`writer::AuditLog`] is the
//! sink that appends, fsyncs and rotates; [`checkpoint`] signs where the
//! chain stood (so a cut or rewritten tail shows); [`lock`] keeps a second
//! writer off the log; [`verify`] checks a chain and its checkpoints;
//! [`files`] knows how the log's files are named and where the chain left
//! off.

pub mod checkpoint;
pub mod files;
pub mod lock;
pub mod record;
pub mod verify;
pub mod writer;

use serde::Serialize;

use crate::metrics::{Door, Outcome};

pub use checkpoint::CheckpointOptions;
pub use writer::{AuditLog, LogOptions, SyncPolicy};

/// What happened, as the record's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A guard decision (allow, rewrite, deny) or a stale ticket at a door.
    Decision,
    TicketIssued,
    TicketRevoked,
    TicketExpiredInUse,
    SentinelTrip,
    BreachReported,
    Purge,
    /// Right-to-delete: a forget, its refusal, a `--reapply`.
    Forget,
    /// A privacy officer's subject lookup (DSAR): it reveals whether a
    /// subject was forgotten, so it is recorded like any answer.
    SubjectLookup,
    Export,
    /// An exception waiver's life: requested, approved, denied, expired,
    /// used (a ticket issued under it) or refused (the detail's `action`).
    Exception,
    /// A reload of users, catalog and policies: `allow` applied, `deny`
    /// refused (the detail says why).
    Reload,
    /// esq started serving a bundle (the detail names it and its seal).
    Serve,
}

/// One decision or event, as the doors report it. For kinds other than
/// `decision`, `outcome` says whether the action took effect (`allow`) or
/// was refused (`deny`).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent<'a> {
    pub kind: AuditKind,
    pub door: Door,
    pub user: &'a str,
    /// The user's roles at the time (empty when unknown).
    pub roles: &'a [String],
    pub client: Option<std::net::SocketAddr>,
    /// Hex SHA-256 of the ticket id (never the id itself).
    pub ticket_hash: Option<String>,
    pub dataset: Option<&'a str>,
    pub outcome: Outcome,
    pub sqlstate: Option<&'a str>,
    /// A SHA-256 of the statement text (the text itself may hold PII).
    pub fingerprint: String,
    pub rewritten: Option<&'a str>,
    /// Rows returned to the client (`None` when nothing ran).
    pub rows: Option<u64>,
    pub classification: Option<String>,
    pub policy_id: Option<&'a str>,
    /// Event-specific facts (e.g. a sentinel rule, a purge's row count).
    pub detail: Option<serde_json::Value>,
    /// The exception waiver (`X-…`) the record happened under: its own
    /// events, and every ticket and statement of a ticket issued under it.
    /// Absent otherwise, so records without one read as they always did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<&'a str>,
}

impl<'a> AuditEvent<'a> {
    /// An event of `kind` with every other field empty (outcome `allow`):
    /// `AuditEvent { ticket_hash: Some(h), ..AuditEvent::event(kind, door, user) }`.
    pub fn event(kind: AuditKind, door: Door, user: &'a str) -> AuditEvent<'a> {
        AuditEvent {
            kind,
            door,
            user,
            roles: &[],
            client: None,
            ticket_hash: None,
            dataset: None,
            outcome: Outcome::allow,
            sqlstate: None,
            fingerprint: String::new(),
            rewritten: None,
            rows: None,
            classification: None,
            policy_id: None,
            detail: None,
            exception: None,
        }
    }
}

/// Why the audit log cannot take or keep a record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Writing, syncing or rotating the log failed; the log stays failed
    /// (esq refuses statements until restarted with a writable log).
    #[error("the audit log {path} cannot be written: {reason}")]
    Failed { path: String, reason: String },
    #[error("the audit log is closed")]
    Closed,
    /// Another writer (another esq, or another open in this process) holds
    /// the log's lock: two writers would interleave two chains.
    #[error("the audit log {path} is already being written by another esq ({holder}): one writer per log; stop it or give this one its own audit.path")]
    InUse { path: String, holder: String },
    /// `record` could not queue the record (log failed or queue full).
    #[error("the audit record could not be queued")]
    NotQueued,
}

/// Records `event` and waits until it is on disk: for answers that must
/// not reach a client before their record is durable.
pub async fn record_durably(
    sink: &dyn AuditSink,
    event: &AuditEvent<'_>,
) -> Result<u64, AuditError> {
    let seq = sink.record(event).ok_or(AuditError::NotQueued)?;
    sink.durable(seq).await?;
    Ok(seq)
}

/// Where audit events go.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Queues one record and returns its `seq`; never blocks. `None` when it
    /// could not be queued (log failed or queue full): a caller that needs
    /// the record must then fail closed.
    fn record(&self, event: &AuditEvent<'_>) -> Option<u64>;

    /// Waits until the record numbered `seq` (and every one before it) is
    /// on disk.
    async fn durable(&self, seq: u64) -> Result<(), AuditError>;

    /// Records `event`, waits until it is durable, and returns its `seq`
    /// and the hash of its line, for a document that cites it (a deletion
    /// receipt). Only a real log can: other sinks refuse.
    async fn record_cited(&self, _event: &AuditEvent<'_>) -> Result<(u64, String), AuditError> {
        Err(AuditError::NotQueued)
    }

    /// Whether records can be written now: a door checks this before it runs
    /// anything, so nothing runs unaudited.
    fn check(&self) -> Result<(), AuditError>;

    /// The hash of the bundle in force, stamped on every record queued from
    /// now on (see [`crate::bundle`]).
    fn set_bundle(&self, _hash: &str) {}
}

/// For commands that load the configuration but serve nothing (`esq check`,
/// `esq explain`): one structured `tracing` event per record, no file.
#[derive(Debug, Default)]
pub struct TracingAudit;

#[async_trait::async_trait]
impl AuditSink for TracingAudit {
    fn record(&self, event: &AuditEvent<'_>) -> Option<u64> {
        tracing::info!(
            target: "esq::audit",
            kind = ?event.kind,
            door = ?event.door,
            user = event.user,
            outcome = ?event.outcome,
            sqlstate = event.sqlstate,
            fingerprint = %event.fingerprint,
            rows = event.rows,
            "audit event (not written to a log)"
        );
        Some(0)
    }

    async fn durable(&self, _seq: u64) -> Result<(), AuditError> {
        Ok(())
    }

    fn check(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

/// `audit.enabled = false`: nothing is recorded. Loudly logged at start-up
/// and visible as `esq_audit_enabled 0`.
#[derive(Debug, Default)]
pub struct DisabledAudit;

#[async_trait::async_trait]
impl AuditSink for DisabledAudit {
    fn record(&self, _event: &AuditEvent<'_>) -> Option<u64> {
        Some(0)
    }

    async fn durable(&self, _seq: u64) -> Result<(), AuditError> {
        Ok(())
    }

    fn check(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

/// The guarantees of an audit sink, as the System Security Plan reports
/// them (AU-2, AU-3, AU-9, AU-10).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditProperties {
    /// `file` (the hash-chained log) or `disabled`.
    pub sink: &'static str,
    /// Records are written (and fsynced) to files that outlive the process.
    pub durable: bool,
    /// A record is fsynced before the client sees its statement complete
    /// (`false` with `audit.durability = write`: an OS crash or power loss
    /// can lose up to `audit.sync_interval` of records).
    pub synced_before_answer: bool,
    /// Every record carries all of [`AuditEvent`]'s fields.
    pub full_content: bool,
    /// Each record holds the hash of the one before (tamper evidence).
    pub hash_chained: bool,
    /// Records are signed with a key that identifies the writer.
    pub signed: bool,
}

/// The statement fingerprint recorded instead of its text.
pub fn fingerprint(sql: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(sql.as_bytes())[..12])
}
