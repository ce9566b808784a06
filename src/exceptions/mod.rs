//! Exception waivers (DESIGN 3.9): governance that makes "yes" safe. An
//! analyst with a legitimate need the policies do not cover asks a data
//! steward for a time-boxed exception instead of working around esq:
//!
//! ```text
//! POST /api/esq/exception ──► pending ──approve──► approved ──expires_at──► expired
//!   (any user: dataset,            └──deny────► denied
//!    fields, aggregate, purpose,   (a data_steward who is not the requester,
//!    justification, duration)       and whom package esq.exceptions allows)
//! ```
//!
//! While approved and unexpired, its requester may issue tickets naming it
//! (`"exception":"X-…"`) for any part of its scope: the ticket policies'
//! denials are waived there, their obligations still narrow, and their
//! failures still deny ([`tickets`]). Each ticket ends with the exception
//! at the latest, and every audit record of it names the exception.
//! Requests, decisions, uses, refusals and expiries are audited
//! ([`crate::audit::AuditKind::Exception`]) and counted ([`metrics`]); a
//! sweep inside `esq serve` marks exceptions past their time expired
//! ([`sweep`]); the SSP lists the open ones.
//!
//! Exceptions live in `esq.exceptions`, written and read as the maintenance
//! role only ([`crate::lifecycle::Maintenance`]): without `[maintenance]`
//! there are no waivers. Messages a client sees name fields of its request
//! and the exception's own facts; the database's and the audit log's
//! errors go to the operator's log.

pub mod decide;
pub mod id;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod revoke;
pub mod store;
pub mod sweep;
pub mod tickets;

use std::time::Duration;

use crate::audit::AuditError;
use crate::lifecycle::MaintenanceError;

pub use metrics::ExceptionMetrics;
pub use store::{Exception, State};

/// The role that decides exceptions.
pub const STEWARD_ROLE: &str = "data_steward";

/// Operators (the HTTP door's `esq_admin`) may read every exception.
pub const ADMIN_ROLE: &str = "esq_admin";

/// The longest an exception may last (package esq.exceptions says the same).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most characters of a purpose, a justification or a comment.
pub const MAX_TEXT: usize = 2000;

/// Why an exception request, decision or lookup did nothing. Messages are
/// for the operator (CLI, log); a client sees [`ExceptionError::BadInput`]'s
/// and the refusals', which quote no value the client did not send.
#[derive(Debug, thiserror::Error)]
pub enum ExceptionError {
    #[error("exception waivers need [maintenance]: esq keeps them in schema esq, which only the maintenance role writes (docs/exports-and-exceptions.md)")]
    NotConfigured,
    /// The request itself is wrong; the message quotes no value.
    #[error("{field}: {message}")]
    BadInput {
        field: &'static str,
        message: String,
    },
    /// No such exception, or not one the caller may see.
    #[error("no such exception")]
    NotFound,
    /// The caller may not do this (the message says why).
    #[error("{0}")]
    Forbidden(String),
    /// The exception is no longer pending.
    #[error("{0}")]
    Conflict(String),
    /// No maintenance connection, or schema esq is old.
    #[error(transparent)]
    Maintenance(MaintenanceError),
    #[error("the database failed while {what}: {detail}")]
    Database { what: &'static str, detail: String },
    #[error("the audit log cannot record it ({0}); nothing changed")]
    Audit(AuditError),
    #[error("no secure random source: {0}")]
    Random(String),
}

impl ExceptionError {
    /// A word for the audit record (no values).
    pub fn category(&self) -> &'static str {
        match self {
            ExceptionError::NotConfigured => "not_configured",
            ExceptionError::BadInput { .. } => "bad_input",
            ExceptionError::NotFound => "not_found",
            ExceptionError::Forbidden(_) => "forbidden",
            ExceptionError::Conflict(_) => "not_pending",
            ExceptionError::Maintenance(_) => "maintenance_unavailable",
            ExceptionError::Database { .. } => "database",
            ExceptionError::Audit(_) => "audit",
            ExceptionError::Random(_) => "random",
        }
    }

    pub(crate) fn bad(field: &'static str, message: impl Into<String>) -> ExceptionError {
        ExceptionError::BadInput {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn database(what: &'static str, err: tokio_postgres::Error) -> ExceptionError {
        ExceptionError::Database {
            what,
            detail: MaintenanceError::database(err).to_string(),
        }
    }
}

/// The maintenance connection exceptions are kept with.
pub(crate) async fn connect(
    config: &crate::config::Config,
) -> Result<crate::lifecycle::Maintenance, ExceptionError> {
    if config.maintenance.is_none() {
        return Err(ExceptionError::NotConfigured);
    }
    crate::lifecycle::Maintenance::connect_current(config)
        .await
        .map_err(ExceptionError::Maintenance)
}

/// The alternative a policy denial of an ordinary ticket request offers:
/// ask a data steward for an exception (`fields` and `dataset` are the
/// request's, already checked against the catalog).
pub fn alternative(dataset: &str, fields: &[String], aggregate: Option<&str>) -> String {
    let body = serde_json::json!({
        "dataset": dataset,
        "fields": fields,
        "aggregate": aggregate,
        "purpose": "…",
        "justification": "why the policies should not apply here",
        "duration": "7d",
    });
    format!(
        "request an exception: POST /api/esq/exception with {body}; a data steward decides, and once approved you ask for the ticket with \"exception\": \"X-…\""
    )
}

/// Who asks, and through which door (for the audit record).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user: &'a crate::auth::Principal,
    pub door: crate::metrics::Door,
    pub client: Option<std::net::SocketAddr>,
}

/// One exception event, recorded durably: `action` is `requested`,
/// `approved`, `denied`, `expired`, `used` or `refused`; `detail` adds to
/// it (no free text: purposes, justifications and comments stay in
/// `esq.exceptions`).
/// Records a change to `exception` (its `action`, with `detail`) and only
/// then commits it: a change nobody could audit is rolled back.
pub(crate) async fn record_and_commit(
    app: &crate::app::App,
    caller: Caller<'_>,
    exception: &Exception,
    action: &str,
    detail: serde_json::Value,
    transaction: tokio_postgres::Transaction<'_>,
    committing: &'static str,
) -> Result<(), ExceptionError> {
    let (id, dataset) = (
        Some(exception.id.as_str()),
        Some(exception.dataset.as_str()),
    );
    audit(
        app,
        caller,
        id,
        dataset,
        crate::metrics::Outcome::allow,
        action,
        detail,
    )
    .await
    .map_err(ExceptionError::Audit)?;
    transaction
        .commit()
        .await
        .map_err(|e| ExceptionError::database(committing, e))
}

pub(crate) async fn audit(
    app: &crate::app::App,
    caller: Caller<'_>,
    exception: Option<&str>,
    dataset: Option<&str>,
    outcome: crate::metrics::Outcome,
    action: &str,
    mut detail: serde_json::Value,
) -> Result<u64, AuditError> {
    use crate::audit::{fingerprint, record_durably, AuditEvent, AuditKind};
    if let Some(fields) = detail.as_object_mut() {
        fields.insert("action".into(), action.into());
    }
    let event = AuditEvent {
        roles: &caller.user.roles,
        client: caller.client,
        dataset,
        outcome,
        fingerprint: fingerprint(&format!("exception {action} {}", dataset.unwrap_or(""))),
        detail: Some(detail),
        exception,
        ..AuditEvent::event(AuditKind::Exception, caller.door, &caller.user.name)
    };
    record_durably(&*app.audit, &event).await
}

/// Records a refusal (best effort: the caller sees the refusal either way,
/// and a failing log is logged).
pub(crate) async fn audit_refused(
    app: &crate::app::App,
    caller: Caller<'_>,
    exception: Option<&str>,
    dataset: Option<&str>,
    attempted: &str,
    err: &ExceptionError,
) {
    let detail = serde_json::json!({"attempted": attempted, "error": err.category()});
    let outcome = crate::metrics::Outcome::deny;
    if let Err(audit) = audit(app, caller, exception, dataset, outcome, "refused", detail).await {
        tracing::error!(%audit, "an exception refusal could not be audited");
    }
}

/// Sets `esq_exceptions_open` from the database (best effort: a failure
/// leaves the last value and is logged).
pub(crate) async fn refresh_open(
    app: &crate::app::App,
    client: &impl tokio_postgres::GenericClient,
) {
    match store::count_open(client, chrono::Utc::now()).await {
        Ok(open) => {
            app.exception_metrics.open.set(open);
        }
        Err(err) => tracing::warn!(%err, "cannot count open exceptions"),
    }
}
