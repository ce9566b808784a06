//! Every error the PostgreSQL door answers with, mapped in one exhaustive
//! `match` to a severity, a SQLSTATE and the text a client sees. Variants
//! carry only what a client may see: internal text (addresses, role names,
//! store errors, the database's own messages) is logged where it arises
//! and never reaches this map. Denials are `ERROR`s; only what ends the
//! session is `FATAL`.

use bytes::{Bytes, BytesMut};

use super::auth::AuthError;
use super::wire;
use crate::decide::{Refusal, ScopeSummary};
use crate::sqlstate as code;
use crate::tickets::Stale;

#[derive(Debug, Clone)]
pub enum DoorError {
    // ── one statement refused (ERROR) ──
    /// The decision step refused it.
    Refused(Refusal),
    /// `SHOW esq.ticket` in the extended protocol.
    ShowTicketExtended,
    /// `SELECT esq.request_ticket(…)` got no ticket (see
    /// [`super::ticket_request`], which says how a client sees it).
    TicketRequest(super::ticket_request::RequestError),
    /// `Parse` of a statement name in use.
    StatementExists(String),
    NoSuchStatement(String),
    NoSuchPortal(String),
    /// A fast-path `FunctionCall` message.
    FastPath,
    /// An `Execute` of a private portal with a row limit.
    PrivateRowLimit,
    /// A `Parse` declaring a parameter type whose input looks up objects
    /// or roles (see [`super::parameter_types`]).
    ParameterType(super::parameter_types::Refused),
    /// A statement prepared before a reload that the policies, catalog or
    /// users now in force decide differently.
    DecidedBeforeReload,
    /// The session is refused or ends.
    Fatal(Fatal),
}

/// What refuses or ends a whole session (`FATAL`).
#[derive(Debug, Clone)]
pub enum Fatal {
    TlsRequired,
    /// A wrong password, or no such user (the login name, the client's own).
    AuthFailed(String),
    Auth(AuthKind),
    /// A startup parameter esq does not allow (its name, the client's own).
    StartupParameter(String),
    Replication,
    NoSuchDatabase {
        asked: String,
        served: String,
    },
    TooManySessions {
        limit: u32,
    },
    /// The pool, or the user's share of it, stayed full.
    UpstreamBusy,
    UpstreamUnavailable,
    /// A client setting at startup the database refused.
    StartupSettingRefused,
    /// The ticket given at startup cannot be used.
    StartupTicket,
    /// The client broke the protocol (esq's own description of how).
    Protocol(String),
    ShuttingDown,
    IdleTimeout,
    /// esq could not tell what the database holds for the session.
    LostTrack,
    UpstreamLost,
    /// An answer held back because its audit record failed.
    AuditWithheld,
    /// The database sent what esq never allows (a COPY).
    UpstreamMisbehaved,
}

/// How authentication failed (see [`AuthError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    TicketStale,
    StoreUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

/// What a client sees of one error.
struct Shown {
    severity: Severity,
    code: &'static str,
    message: String,
    detail: String,
    hint: String,
}

fn shown(
    severity: Severity,
    code: &'static str,
    message: impl Into<String>,
    detail: impl Into<String>,
    hint: impl Into<String>,
) -> Shown {
    Shown {
        severity,
        code,
        message: message.into(),
        detail: detail.into(),
        hint: hint.into(),
    }
}

const NEW_TICKET: &str =
    "request a new ticket (POST /api/esq/ticket) and run SET esq.ticket = 'T-…'";
const STORE_RETRY: &str = "retry shortly; esq never answers without checking the ticket";

impl DoorError {
    fn shown(&self) -> Shown {
        use Severity::Error;
        match self {
            DoorError::Fatal(fatal) => fatal.shown(),
            DoorError::Refused(refusal) => refused(refusal),
            DoorError::TicketRequest(error) => {
                let (code, message, detail, hint) = error.parts();
                shown(Error, code, message, detail, hint)
            }
            DoorError::ShowTicketExtended => shown(
                Error,
                code::FEATURE_NOT_SUPPORTED,
                "SHOW esq.ticket is answered in the simple query protocol only",
                "",
                "run it as a plain query (psql does)",
            ),
            DoorError::StatementExists(name) => shown(
                Error,
                code::DUPLICATE_PREPARED_STATEMENT,
                format!("prepared statement \"{name}\" already exists"),
                "",
                "Close it first, or use another name",
            ),
            DoorError::NoSuchStatement(name) => shown(
                Error,
                code::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
                "",
                "",
            ),
            DoorError::NoSuchPortal(name) => shown(
                Error,
                code::INVALID_CURSOR_NAME,
                format!("portal \"{name}\" does not exist"),
                "",
                "",
            ),
            DoorError::DecidedBeforeReload => shown(
                Error,
                code::FEATURE_NOT_SUPPORTED,
                "this prepared statement was decided before esq's rules changed (a reload, or a subject forgotten), and they now decide it differently",
                "a statement runs only as the policies and tombstones in force allow it",
                "prepare the statement again (or reconnect)",
            ),
            DoorError::ParameterType(_) => shown(
                Error,
                code::FEATURE_NOT_SUPPORTED,
                "this parameter type is not accepted",
                "esq accepts parameters of plain types (numbers, text, dates and times, booleans, uuid, json, bytea, arrays of them) or of unspecified type; object-identifier and access-list types look up database objects and roles",
                "declare the parameter as text or leave its type unspecified, and cast it in the SQL",
            ),
            DoorError::PrivateRowLimit => shown(
                Error,
                code::FEATURE_NOT_SUPPORTED,
                "a private answer is released whole",
                "its groups are noised and thresholded together",
                "execute the portal without a row limit (use LIMIT in the query instead)",
            ),
            DoorError::FastPath => shown(
                Error,
                code::FEATURE_NOT_SUPPORTED,
                "fast-path function calls are not supported by esq",
                "esq forwards only SQL statements it has analysed",
                "call the function in a SELECT statement",
            ),
        }
    }

    pub fn severity(&self) -> Severity {
        self.shown().severity
    }

    pub fn sqlstate(&self) -> &'static str {
        self.shown().code
    }

    /// The whole `ErrorResponse` message.
    pub fn to_bytes(&self) -> Bytes {
        let shown = self.shown();
        let severity = match shown.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut out = BytesMut::new();
        wire::error(
            &mut out,
            severity,
            shown.code,
            &shown.message,
            &shown.detail,
            &shown.hint,
        );
        out.freeze()
    }
}

impl Fatal {
    fn shown(&self) -> Shown {
        use Severity::Fatal as F;
        match self {
            Fatal::TlsRequired => shown(
                F,
                code::INVALID_AUTHORIZATION,
                "esq requires TLS: connect with sslmode=require",
                "",
                "",
            ),
            Fatal::AuthFailed(user) => shown(
                F,
                code::INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
                "",
                "",
            ),
            Fatal::Auth(AuthKind::TicketStale) | Fatal::StartupTicket => shown(
                F,
                code::INVALID_AUTHORIZATION,
                "ticket stale",
                "",
                NEW_TICKET,
            ),
            Fatal::Auth(AuthKind::StoreUnavailable) => shown(
                F,
                code::CONNECTION_FAILURE,
                "the ticket store is unavailable, so esq cannot check the ticket",
                "",
                STORE_RETRY,
            ),
            Fatal::StartupParameter(name) => shown(
                F,
                code::INSUFFICIENT_PRIVILEGE,
                format!("esq does not allow the startup parameter \"{name}\""),
                "",
                "",
            ),
            Fatal::Replication => shown(
                F,
                code::INSUFFICIENT_PRIVILEGE,
                "esq does not serve replication connections",
                "",
                "",
            ),
            Fatal::NoSuchDatabase { asked, served } => shown(
                F,
                code::INVALID_CATALOG_NAME,
                format!("database \"{asked}\" does not exist"),
                format!("esq serves one database, \"{served}\""),
                format!("connect to \"{served}\", or leave the database name out"),
            ),
            Fatal::TooManySessions { limit } => shown(
                F,
                code::TOO_MANY_CONNECTIONS,
                format!("too many sessions for this user (pg.max_sessions_per_user = {limit})"),
                "",
                "close a session you do not use",
            ),
            Fatal::UpstreamBusy => shown(
                F,
                code::TOO_MANY_CONNECTIONS,
                "every database connection esq may use for you is busy",
                "esq shares a bounded number of database connections fairly between users",
                "close a session you do not use, or retry shortly",
            ),
            Fatal::UpstreamUnavailable => shown(
                F,
                code::CONNECTION_FAILURE,
                "esq cannot reach the database",
                "",
                "retry shortly; the operator's log has the details",
            ),
            Fatal::StartupSettingRefused => shown(
                F,
                code::INVALID_PARAMETER_VALUE,
                "a startup setting was refused by the database",
                "",
                "check the values given with -c or PGOPTIONS",
            ),
            Fatal::Protocol(what) => shown(F, code::PROTOCOL_VIOLATION, what, "", ""),
            Fatal::ShuttingDown => shown(
                F,
                code::ADMIN_SHUTDOWN,
                "terminating connection because esq is shutting down",
                "",
                "",
            ),
            Fatal::IdleTimeout => shown(
                F,
                code::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle-session timeout",
                "",
                "",
            ),
            Fatal::LostTrack => shown(
                F,
                code::CONNECTION_FAILURE,
                "esq lost track of the database's answers",
                "",
                "reconnect",
            ),
            Fatal::UpstreamLost => shown(
                F,
                code::CONNECTION_FAILURE,
                "connection to the database was lost",
                "the database closed the connection or restarted",
                "reconnect; esq opens a new database connection",
            ),
            Fatal::AuditWithheld => shown(
                F,
                code::IO_ERROR,
                "the audit log cannot be written, so esq withholds this answer",
                "esq never delivers an answer it could not audit",
                "retry when the audit log is fixed",
            ),
            Fatal::UpstreamMisbehaved => shown(
                F,
                code::PROTOCOL_VIOLATION,
                "the database sent an answer esq never relays",
                "",
                "",
            ),
        }
    }
}

impl Fatal {
    /// The whole `FATAL` `ErrorResponse` message.
    pub fn to_bytes(&self) -> Bytes {
        DoorError::Fatal(self.clone()).to_bytes()
    }
}

impl From<Fatal> for DoorError {
    fn from(fatal: Fatal) -> DoorError {
        DoorError::Fatal(fatal)
    }
}

impl From<&AuthError> for Fatal {
    fn from(err: &AuthError) -> Fatal {
        match err {
            AuthError::Failed(user) => Fatal::AuthFailed(user.clone()),
            AuthError::TicketStale => Fatal::Auth(AuthKind::TicketStale),
            AuthError::StoreUnavailable(_) => Fatal::Auth(AuthKind::StoreUnavailable),
            AuthError::Wire(err) => Fatal::Protocol(err.to_string()),
        }
    }
}

fn refused(refusal: &Refusal) -> Shown {
    use Severity::Error;
    match refusal {
        Refusal::AuditUnavailable => shown(
            Error,
            code::IO_ERROR,
            "the audit log cannot be written, so esq runs no statement",
            "esq never runs a statement it cannot audit",
            "retry when the audit log is fixed",
        ),
        Refusal::TicketStale(why) => shown(
            Error,
            code::INVALID_AUTHORIZATION,
            "ticket stale",
            match why {
                Stale::Expired => "the ticket has expired",
                Stale::Revoked => "the ticket was revoked",
                Stale::Unknown => "esq does not know this ticket",
            },
            NEW_TICKET,
        ),
        Refusal::TicketStoreUnavailable => shown(
            Error,
            code::CONNECTION_FAILURE,
            "the ticket store is unavailable, so esq cannot check the ticket",
            "",
            STORE_RETRY,
        ),
        Refusal::NotATicket => shown(
            Error,
            code::INVALID_PARAMETER_VALUE,
            "not a ticket: esq tickets look like T-…",
            "",
            "request one with POST /api/esq/ticket on the HTTP door",
        ),
        Refusal::TicketOfAnotherUser => shown(
            Error,
            code::INSUFFICIENT_PRIVILEGE,
            "this ticket was issued to another user",
            "a ticket works only for the user it was issued to",
            "request a ticket of your own with POST /api/esq/ticket",
        ),
        Refusal::PrivacyBudgetSpent {
            renews_at,
            remaining,
            needed,
        } => shown(
            Error,
            code::INSUFFICIENT_PRIVILEGE,
            "privacy budget spent",
            format!(
                "this answer needs epsilon {needed}; {remaining} is left until the budget renews at {}",
                renews_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            "repeat an earlier statement (repeats cost nothing), or wait until the budget renews",
        ),
        Refusal::PrivacyUnavailable => shown(
            Error,
            code::CONNECTION_FAILURE,
            "the privacy budget cannot be checked, so esq gives no private answer",
            "",
            "retry shortly",
        ),
        Refusal::PrivateAnswerFailed => shown(
            Error,
            code::INTERNAL_ERROR,
            "esq could not release this private answer",
            "",
            "narrow the query (fewer groups); the operator's log has the details",
        ),
        Refusal::Denied {
            denial,
            scope,
            has_ticket: _,
        } => {
            let mut detail = denial.detail.clone();
            // Only a denial about the ticket's scope names its policies and
            // what it allows: one of esq's own rules (SHOW search_path, a
            // syntax error) holds under any ticket. The hint is the guard's
            // alone: it already says how to get a ticket where one would
            // help (and a ticket would not help any other refusal).
            if denial.cites_scope() {
                if let Some(policy) = &denial.policy_id {
                    detail.push_str(&format!(" (policy {policy})"));
                }
                if let Some(scope) = scope {
                    detail.push_str(&describe_scope(scope));
                }
            }
            Shown {
                severity: Error,
                code: denial.code,
                message: denial.reason.clone(),
                detail,
                hint: denial.hint.clone(),
            }
        }
    }
}

fn describe_scope(scope: &ScopeSummary) -> String {
    format!(
        "; ticket for {} allows {}{}",
        scope.dataset,
        scope.fields.join(", "),
        scope
            .aggregate
            .map(|a| format!(" as {a} aggregates"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_failures_show_no_internal_text() {
        for err in [
            Fatal::UpstreamUnavailable.into(),
            Fatal::UpstreamBusy.into(),
            Fatal::Auth(AuthKind::StoreUnavailable).into(),
            DoorError::Refused(Refusal::TicketStoreUnavailable),
        ] {
            let bytes = err.to_bytes();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("127.0.0.1"), "{text}");
            assert!(!text.contains("esq_service"), "{text}");
        }
    }

    fn denied_text(denial: crate::guard::Denial) -> String {
        let refusal = Refusal::Denied {
            denial: std::sync::Arc::new(denial.with_policy(Some("P-TEST-001".into()))),
            scope: Some(std::sync::Arc::new(ScopeSummary {
                dataset: "burial_2024".into(),
                fields: vec!["state".into()],
                aggregate: None,
            })),
            has_ticket: true,
        };
        let bytes = DoorError::Refused(refusal).to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn only_denials_about_the_scope_cite_its_policies() {
        use crate::guard::Denial;
        let about_scope = denied_text(Denial::forbidden(
            "field \"ssn\" is not allowed by your ticket",
            "used in the select list",
            "request a ticket that includes field ssn",
        ));
        assert!(about_scope.contains("P-TEST-001"), "{about_scope}");
        assert!(about_scope.contains("allows state"), "{about_scope}");
        for rule in [
            Denial::syntax("cannot parse the statement"),
            Denial::forbidden("SHOW search_path is not allowed", "", "").by_esq_rule(),
        ] {
            let text = denied_text(rule);
            assert!(!text.contains("P-TEST-001"), "{text}");
            assert!(!text.contains("allows state"), "{text}");
        }
    }

    #[test]
    fn session_errors_are_fatal_and_refusals_are_errors() {
        assert_eq!(
            DoorError::from(Fatal::UpstreamLost).severity(),
            Severity::Fatal
        );
        assert_eq!(
            DoorError::Refused(Refusal::AuditUnavailable).severity(),
            Severity::Error
        );
        assert_eq!(DoorError::FastPath.sqlstate(), "0A000");
    }
}
