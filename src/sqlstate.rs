//! The SQLSTATEs esq answers with, named as PostgreSQL's `errcodes.txt`
//! names them, in one place: the doors' error maps and the audit records
//! use these names, never bare literals. A leaf.

/// `01000` warning (a notice esq adds, e.g. dropped columns).
pub const WARNING: &str = "01000";
/// `08006` connection_failure: the database or the ticket store is gone.
pub const CONNECTION_FAILURE: &str = "08006";
/// `08P01` protocol_violation: the client broke the wire protocol.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `0A000` feature_not_supported: legal, but not through esq.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `22023` invalid_parameter_value.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// `26000` invalid_sql_statement_name: no such prepared statement.
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
/// `28000` invalid_authorization_specification: a stale ticket, TLS required.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// `28P01` invalid_password.
pub const INVALID_PASSWORD: &str = "28P01";
/// `34000` invalid_cursor_name: no such portal.
pub const INVALID_CURSOR_NAME: &str = "34000";
/// `3D000` invalid_catalog_name: no such database.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// `42501` insufficient_privilege: a ticket or policy forbids it.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `42601` syntax_error.
pub const SYNTAX_ERROR: &str = "42601";
/// `42P05` duplicate_prepared_statement.
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
/// `55000` object_not_in_prerequisite_state: esq cannot answer yet (its
/// tombstones are not read).
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// `53300` too_many_connections: a user's or the pool's share is full.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `57014` query_canceled: a statement time-out or a cancel request.
pub const QUERY_CANCELED: &str = "57014";
/// `57P01` admin_shutdown: esq is stopping.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `57P05` idle_session_timeout.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// `58030` io_error: the audit log cannot be written.
pub const IO_ERROR: &str = "58030";
/// `XX000` internal_error.
pub const INTERNAL_ERROR: &str = "XX000";
