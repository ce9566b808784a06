//! Stage 3, classify: each statement is an analysed query, a harmless
//! session statement from a short allowlist, or a denied kind.

use sqlparser::ast::{
    DiscardObject, Expr, ObjectNamePart, Set, Statement, TransactionAccessMode, TransactionMode,
    Value,
};

use super::denial::{Checked, Denial};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// SELECT, WITH, set operations, VALUES: analysed against the scope.
    Query,
    /// BEGIN/COMMIT/ROLLBACK, SHOW/SET of allowlisted settings, DISCARD ALL.
    Session,
}

/// Client parameters a session may set: they change formatting, not what
/// PostgreSQL reads or resolves. `search_path`, `standard_conforming_strings`,
/// `backslash_quote`, roles and authorisation are deliberately absent.
const SETTABLE: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "datestyle",
    "timezone",
    "client_encoding",
    "intervalstyle",
    "client_min_messages",
    "bytea_output",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
];

/// Whether a session may set this client parameter (lower-case name).
pub fn is_settable(name: &str) -> bool {
    SETTABLE.contains(&name)
}

/// Whether a session may set `name` to `value`: message levels below
/// `notice` would send the database's DEBUG and LOG lines (internal names,
/// esq's stand-ins) to the client.
pub fn is_settable_to(name: &str, value: &str) -> bool {
    is_settable(name) && (name != "client_min_messages" || is_client_message_level(value))
}

fn is_client_message_level(value: &str) -> bool {
    let level = value
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_ascii_lowercase();
    matches!(level.as_str(), "notice" | "warning" | "error")
}

/// Settings a session may read: the settable ones and harmless server facts.
const SHOWABLE: &[&str] = &[
    "server_version",
    "server_version_num",
    "server_encoding",
    "transaction_isolation",
    // SQLAlchemy asks this way (SHOW TRANSACTION ISOLATION LEVEL).
    "transaction isolation level",
    "transaction_read_only",
    "default_transaction_read_only",
    "standard_conforming_strings",
    "integer_datetimes",
    "max_identifier_length",
    "statement_timeout",
];

pub fn classify(statement: &Statement) -> Checked<Kind> {
    match statement {
        Statement::Query(_) => Ok(Kind::Query),
        Statement::StartTransaction {
            modes, statements, ..
        } => {
            if !statements.is_empty() {
                return Err(not_allowed("a BEGIN … END block"));
            }
            if modes.iter().any(|m| {
                matches!(
                    m,
                    TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)
                )
            }) {
                return Err(not_allowed("a READ WRITE transaction"));
            }
            Ok(Kind::Session)
        }
        Statement::Commit { chain: false, .. } => Ok(Kind::Session),
        // Savepoints only mark and undo work inside a read-only transaction
        // (SQLAlchemy and psycopg use them).
        Statement::Rollback { chain: false, .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Ok(Kind::Session),
        Statement::Discard {
            object_type: DiscardObject::ALL,
        } => Ok(Kind::Session),
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            if SETTABLE.contains(&name.as_str()) || SHOWABLE.contains(&name.as_str()) {
                Ok(Kind::Session)
            } else {
                Err(Denial::forbidden(
                    format!("SHOW {name} is not allowed"),
                    "only client settings and harmless server facts can be shown through esq",
                    format!("showable: {}", [SETTABLE, SHOWABLE].concat().join(", ")),
                ))
            }
        }
        // Drivers (psycopg) drop their prepared statements with it; a
        // statement prepared again goes through the guard again.
        Statement::Deallocate { .. } => Ok(Kind::Session),
        Statement::Set(set) => classify_set(set),
        other => Err(not_allowed(&statement_kind(other))),
    }
}

fn classify_set(set: &Set) -> Checked<Kind> {
    match set {
        Set::SingleAssignment {
            variable,
            values,
            hivevar: false,
            ..
        } => {
            let name = match variable.0.as_slice() {
                [ObjectNamePart::Identifier(ident)] => ident.value.to_ascii_lowercase(),
                _ => String::new(),
            };
            if name == "esq.ticket" {
                return Err(Denial::forbidden(
                    "SET esq.ticket is handled by the session, not the guard",
                    "tickets are set through the PostgreSQL door",
                    "connect through esq's PostgreSQL door and run SET esq.ticket = 'T-…'",
                ));
            }
            if !SETTABLE.contains(&name.as_str()) {
                return Err(Denial::forbidden(
                    format!("SET {} is not allowed", variable),
                    "settings that change how statements are read or resolved, roles and authorisation cannot be changed through esq",
                    format!("settable: {}", SETTABLE.join(", ")),
                ));
            }
            if name == "client_encoding" && !values.iter().all(is_utf8_name) {
                return Err(utf8_only());
            }
            if name == "client_min_messages" && !values.iter().all(is_message_level) {
                return Err(Denial::forbidden(
                    "client_min_messages below notice is not allowed",
                    "DEBUG and LOG messages carry the database's internal names",
                    "SET client_min_messages to notice, warning or error",
                ));
            }
            if values.iter().all(is_plain_literal) {
                Ok(Kind::Session)
            } else {
                Err(Denial::forbidden(
                    "SET values must be plain literals",
                    "an expression could run functions",
                    "write the value as a literal, e.g. SET application_name = 'report'",
                ))
            }
        }
        Set::SetTimeZone { value, .. } if is_plain_literal(value) => Ok(Kind::Session),
        Set::SetNames { charset_name, .. } => {
            if is_utf8(&charset_name.value) {
                Ok(Kind::Session)
            } else {
                Err(utf8_only())
            }
        }
        Set::SetRole { .. } => Err(not_allowed("SET ROLE")),
        Set::SetSessionAuthorization(_) => Err(not_allowed("SET SESSION AUTHORIZATION")),
        _ => Err(not_allowed("this SET statement")),
    }
}

fn is_plain_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => matches!(
            v.value,
            Value::SingleQuotedString(_) | Value::Number(_, _) | Value::Boolean(_)
        ),
        Expr::Identifier(_) => true, // SET DateStyle = ISO
        Expr::UnaryOp { expr, .. } => matches!(expr.as_ref(), Expr::Value(_)),
        _ => false,
    }
}

fn is_utf8(name: &str) -> bool {
    let name = name
        .trim_matches(|c| c == '\'' || c == '"')
        .to_ascii_lowercase()
        .replace(['-', '_'], "");
    name == "utf8" || name == "unicode"
}

fn is_message_level(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => is_client_message_level(s),
            _ => false,
        },
        Expr::Identifier(ident) => is_client_message_level(&ident.value),
        _ => false,
    }
}

fn is_utf8_name(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => is_utf8(s),
            _ => false,
        },
        Expr::Identifier(ident) => is_utf8(&ident.value),
        _ => false,
    }
}

/// Client encodings such as SJIS or GBK have multibyte characters whose
/// second byte is a backslash or quote, so the server would split strings
/// differently from esq: only UTF-8 is allowed.
fn utf8_only() -> Denial {
    Denial::forbidden(
        "only the UTF8 client encoding is allowed",
        "other client encodings make PostgreSQL read quotes and backslashes differently from esq",
        "use client_encoding = 'UTF8'",
    )
}

fn not_allowed(what: &str) -> Denial {
    Denial::forbidden(
        format!("{what} is not allowed through esq"),
        "ticket holders may run read-only queries and a few harmless session statements",
        "use SELECT queries against the dataset your ticket names",
    )
}

/// A short name for a statement kind, for messages (never the statement text).
pub fn statement_kind(statement: &Statement) -> String {
    let debug = format!("{statement:?}");
    let name: String = debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    match name.as_str() {
        "Query" => "SELECT".into(),
        "" => "this statement".into(),
        other => other.to_string(),
    }
}

/// Prepared statements a session statement drops, as PostgreSQL names them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreparedDrop {
    /// `DEALLOCATE name` (unquoted names folded to lower case).
    One(String),
    /// `DEALLOCATE ALL`, `DISCARD ALL`.
    All,
}

/// What `statement` drops of the session's prepared statements, if anything.
pub fn prepared_drop(statement: &Statement) -> Option<PreparedDrop> {
    match statement {
        Statement::Discard {
            object_type: DiscardObject::ALL,
        } => Some(PreparedDrop::All),
        Statement::Deallocate { name, .. }
            if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
        {
            Some(PreparedDrop::All)
        }
        // The name as PostgreSQL keys it: folded and cut to 63 bytes.
        Statement::Deallocate { name, .. } => Some(PreparedDrop::One(super::names::fold(name))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{prepared_drop, PreparedDrop};

    fn drop_of(sql: &str) -> Option<PreparedDrop> {
        let statements = super::super::parse::parse(sql).ok()?;
        statements.first().and_then(prepared_drop)
    }

    #[test]
    fn deallocate_and_discard_name_what_they_drop() {
        assert_eq!(drop_of("DEALLOCATE ALL"), Some(PreparedDrop::All));
        assert_eq!(drop_of("DISCARD ALL"), Some(PreparedDrop::All));
        assert_eq!(
            drop_of("deallocate prepare Foo"),
            Some(PreparedDrop::One("foo".into()))
        );
        assert_eq!(
            drop_of("DEALLOCATE \"Foo\""),
            Some(PreparedDrop::One("Foo".into()))
        );
        assert_eq!(drop_of("SELECT 1"), None);
    }
}
