//! Stage 3, classify: each statement is an analysed query, a harmless
//! session statement from a short allowlist, or a denied kind.
//!
//! Transaction statements are served with any isolation level and any
//! access mode a driver sends by default (`BEGIN READ WRITE`,
//! `SET TRANSACTION …`, `SET SESSION CHARACTERISTICS AS TRANSACTION …`):
//! esq refuses every write statement anyway, and [`keep_read_only`] turns a
//! `READ WRITE` mode into `READ ONLY` in what is forwarded, so the upstream
//! transaction stays read only and the client still gets PostgreSQL's own
//! command tag (`BEGIN`, `START TRANSACTION`, `SET`). Every denial here is
//! one of esq's own rules (it names no ticket policy).

use sqlparser::ast::{
    DiscardObject, Expr, ObjectNamePart, Set, Statement, TransactionAccessMode,
    TransactionIsolationLevel, TransactionMode, Value,
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
    classify_statement(statement).map_err(Denial::by_esq_rule)
}

fn classify_statement(statement: &Statement) -> Checked<Kind> {
    match statement {
        Statement::Query(_) => Ok(Kind::Query),
        Statement::StartTransaction {
            modes, statements, ..
        } => {
            if !statements.is_empty() {
                return Err(not_allowed("a BEGIN … END block"));
            }
            check_modes(modes)?;
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
        Set::SetTransaction {
            modes,
            snapshot: None,
            ..
        } => {
            check_modes(modes)?;
            Ok(Kind::Session)
        }
        Set::SetTransaction { .. } => Err(not_allowed("SET TRANSACTION SNAPSHOT")),
        Set::SetRole { .. } => Err(not_allowed("SET ROLE")),
        Set::SetSessionAuthorization(_) => Err(not_allowed("SET SESSION AUTHORIZATION")),
        _ => Err(not_allowed("this SET statement")),
    }
}

/// Isolation levels PostgreSQL has, and either access mode (a `READ WRITE`
/// one is forwarded as `READ ONLY`, see [`keep_read_only`]).
fn check_modes(modes: &[TransactionMode]) -> Checked<()> {
    for mode in modes {
        match mode {
            TransactionMode::AccessMode(_) => {}
            TransactionMode::IsolationLevel(level) => match level {
                TransactionIsolationLevel::ReadUncommitted
                | TransactionIsolationLevel::ReadCommitted
                | TransactionIsolationLevel::RepeatableRead
                | TransactionIsolationLevel::Serializable => {}
                _ => return Err(not_allowed(&format!("isolation level {level}"))),
            },
        }
    }
    Ok(())
}

/// The transaction modes of `statement`, if it sets any.
fn modes_of(statement: &mut Statement) -> Option<&mut Vec<TransactionMode>> {
    match statement {
        Statement::StartTransaction { modes, .. } => Some(modes),
        Statement::Set(Set::SetTransaction { modes, .. }) => Some(modes),
        _ => None,
    }
}

/// What esq forwards never opens a read-write transaction: a `READ WRITE`
/// mode becomes `READ ONLY` (the same command, so the same command tag).
/// The upstream session starts with `default_transaction_read_only` on,
/// and no session may change that setting; this keeps an explicit mode
/// from overriding it.
pub fn keep_read_only(statements: &mut [Statement]) {
    for modes in statements.iter_mut().filter_map(modes_of) {
        for mode in modes.iter_mut() {
            if *mode == TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) {
                *mode = TransactionMode::AccessMode(TransactionAccessMode::ReadOnly);
            }
        }
    }
}

fn is_plain_literal(expr: &Expr) -> bool {
    match expr {
        // The other spellings of a string are confirmed against
        // PostgreSQL's reading after classification (see `literals`).
        Expr::Value(v) => matches!(
            v.value,
            Value::SingleQuotedString(_)
                | Value::EscapedStringLiteral(_)
                | Value::DollarQuotedString(_)
                | Value::UnicodeStringLiteral(_)
                | Value::NationalStringLiteral(_)
                | Value::Number(_, _)
                | Value::Boolean(_)
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
    use super::{classify, keep_read_only, prepared_drop, Kind, PreparedDrop};

    /// How a transaction statement is classified and forwarded.
    fn forwarded(sql: &str) -> Result<String, String> {
        let mut statements = super::super::parse::parse(sql).map_err(|d| d.reason)?;
        for statement in &statements {
            assert_eq!(classify(statement).map_err(|d| d.reason)?, Kind::Session);
        }
        keep_read_only(&mut statements);
        Ok(statements
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    }

    #[test]
    fn transaction_modes_are_served_read_only() {
        for (sql, sent) in [
            ("BEGIN READ WRITE", "BEGIN READ ONLY"),
            (
                "begin isolation level repeatable read",
                "BEGIN ISOLATION LEVEL REPEATABLE READ",
            ),
            (
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            ),
            (
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED READ WRITE",
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY",
            ),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            ),
            ("BEGIN TRANSACTION READ ONLY", "BEGIN TRANSACTION READ ONLY"),
        ] {
            assert_eq!(forwarded(sql).as_deref(), Ok(sent), "{sql}");
        }
        for refused in [
            "SET TRANSACTION SNAPSHOT '00000003-1'",
            "BEGIN ISOLATION LEVEL SNAPSHOT",
        ] {
            let statements = super::super::parse::parse(refused).unwrap();
            let denial = classify(&statements[0]).unwrap_err();
            assert!(denial.esq_rule, "{refused}: names no ticket policy");
        }
    }

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
