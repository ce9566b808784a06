//! The statements the PostgreSQL door answers itself: `SET esq.ticket`,
//! `SHOW esq.ticket` and `RESET esq.ticket`. They are never forwarded
//! (the ticket must not reach the database or its logs).

use sqlparser::ast::{
    ContextModifier, Expr, ObjectName, ObjectNamePart, Reset, Set, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub const SETTING: &str = "esq.ticket";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketStatement {
    /// `SET esq.ticket = 'T-…'` (also `TO`, `SESSION`).
    Set(String),
    /// `RESET esq.ticket`, `SET esq.ticket TO DEFAULT`.
    Reset,
    Show,
}

impl TicketStatement {
    pub fn command_tag(&self) -> &'static str {
        match self {
            TicketStatement::Set(_) | TicketStatement::Reset => "SET",
            TicketStatement::Show => "SHOW",
        }
    }
}

/// Recognises one ticket statement; anything else (including a ticket
/// statement among others) is `None` and goes to the guard, which denies
/// `SET esq.ticket` in any other form.
pub fn recognise(sql: &str) -> Option<TicketStatement> {
    // Cheap pre-check (no allocation): most statements never mention it.
    if !sql
        .as_bytes()
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"ticket"))
    {
        return None;
    }
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(16)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements())
        .ok()?;
    let [statement] = statements.as_slice() else {
        return None;
    };
    match statement {
        Statement::Set(Set::SingleAssignment {
            scope: None | Some(ContextModifier::Session),
            variable,
            values,
            hivevar: false,
        }) if is_ticket_setting(variable) => match values.as_slice() {
            [Expr::Value(value)] => match &value.value {
                Value::SingleQuotedString(text) => Some(TicketStatement::Set(text.clone())),
                _ => None,
            },
            [Expr::Identifier(ident)] if ident.value.eq_ignore_ascii_case("default") => {
                Some(TicketStatement::Reset)
            }
            _ => None,
        },
        Statement::Reset(reset) => match &reset.reset {
            Reset::ConfigurationParameter(name) if is_ticket_setting(name) => {
                Some(TicketStatement::Reset)
            }
            _ => None,
        },
        Statement::ShowVariable { variable } => {
            let name: Vec<String> = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect();
            (name.join(".") == SETTING).then_some(TicketStatement::Show)
        }
        _ => None,
    }
}

fn is_ticket_setting(name: &ObjectName) -> bool {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => ident.value.to_ascii_lowercase(),
            _ => String::new(),
        })
        .collect();
    parts.join(".") == SETTING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_ticket_statements() {
        assert_eq!(
            recognise("SET esq.ticket = 'T-abc'"),
            Some(TicketStatement::Set("T-abc".into()))
        );
        assert_eq!(
            recognise("set ESQ.TICKET to 'T-abc';"),
            Some(TicketStatement::Set("T-abc".into()))
        );
        assert_eq!(
            recognise("SET SESSION esq.ticket = 'T-x'"),
            Some(TicketStatement::Set("T-x".into()))
        );
        assert_eq!(recognise("RESET esq.ticket"), Some(TicketStatement::Reset));
        assert_eq!(
            recognise("SET esq.ticket TO DEFAULT"),
            Some(TicketStatement::Reset)
        );
        assert_eq!(recognise("SHOW esq.ticket"), Some(TicketStatement::Show));
    }

    #[test]
    fn leaves_everything_else_to_the_guard() {
        assert_eq!(recognise("SELECT 'esq.ticket'"), None);
        assert_eq!(recognise("SET esq.ticket = 'a'; SELECT 1"), None);
        assert_eq!(recognise("SET esq.ticket = 1"), None);
        assert_eq!(recognise("SET application_name = 'ticket'"), None);
        assert_eq!(recognise("SET LOCAL esq.ticket = 'x'; DROP TABLE t"), None);
    }
}
