//! The statements the PostgreSQL door answers itself: `SET esq.ticket`,
//! `SHOW esq.ticket`, `RESET esq.ticket` and `SELECT
//! esq.request_ticket('{…}')` (a ticket request from SQL, for tools that
//! cannot call the HTTP door). They are never forwarded (the ticket must
//! not reach the database or its logs). Recognition is exact: the request
//! is intercepted only as that one statement, written that way; a
//! look-alike inside a larger statement goes to the guard, which refuses
//! the unknown function.

use sqlparser::ast::{
    ContextModifier, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    ObjectNamePart, Reset, SelectItem, Set, SetExpr, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub const SETTING: &str = "esq.ticket";

/// The function a session asks for a ticket with (its one argument is the
/// body `POST /api/esq/ticket` takes).
pub const REQUEST_FUNCTION: &str = "esq.request_ticket";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketStatement {
    /// `SET esq.ticket = 'T-…'` (also `TO`, `SESSION`).
    Set(String),
    /// `RESET esq.ticket`, `SET esq.ticket TO DEFAULT`.
    Reset,
    Show,
    /// `SELECT esq.request_ticket('{…}')`: the JSON text of a ticket
    /// request, as `POST /api/esq/ticket` takes it.
    Request(String),
}

impl TicketStatement {
    pub fn command_tag(&self) -> &'static str {
        match self {
            TicketStatement::Set(_) | TicketStatement::Reset => "SET",
            TicketStatement::Show => "SHOW",
            TicketStatement::Request(_) => "SELECT 1",
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
        Statement::Query(_) => request(statement).map(TicketStatement::Request),
        _ => None,
    }
}

/// The request text of `SELECT esq.request_ticket('…')` and nothing more:
/// the one argument is taken from the tree, then the whole statement, as
/// printed back, must be exactly that call (so no other clause, alias,
/// cast or quoted name slips by).
fn request(statement: &Statement) -> Option<String> {
    let Statement::Query(query) = statement else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(Expr::Function(function))] = select.projection.as_slice() else {
        return None;
    };
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value)))] = list.args.as_slice()
    else {
        return None;
    };
    let Value::SingleQuotedString(text) = &value.value else {
        return None;
    };
    let exact = format!("SELECT {REQUEST_FUNCTION}({})", value.value);
    statement
        .to_string()
        .eq_ignore_ascii_case(&exact)
        .then(|| text.clone())
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

    #[test]
    fn recognises_a_ticket_request_exactly() {
        let body = r#"{"dataset":"burial_2024","purpose":"it's FOIA","fields":["state"]}"#;
        let quoted = body.replace('\'', "''");
        for sql in [
            format!("SELECT esq.request_ticket('{quoted}')"),
            format!("select ESQ.Request_Ticket( '{quoted}' ) ;"),
            format!("SELECT\n  esq.request_ticket('{quoted}')\n"),
        ] {
            assert_eq!(
                recognise(&sql),
                Some(TicketStatement::Request(body.to_string())),
                "{sql}"
            );
        }
    }

    #[test]
    fn leaves_ticket_request_lookalikes_to_the_guard() {
        for sql in [
            "SELECT esq.request_ticket('{}'), 1",
            "SELECT esq.request_ticket('{}') AS t",
            "SELECT esq.request_ticket('{}') FROM burial_2024",
            "SELECT esq.request_ticket('{}') WHERE true",
            "SELECT esq.request_ticket('{}') LIMIT 1",
            "SELECT esq.request_ticket('{}'); SELECT 1",
            "SELECT 1; SELECT esq.request_ticket('{}')",
            "SELECT esq.request_ticket('{}', '{}')",
            "SELECT esq.request_ticket('{}'::json)",
            "SELECT esq.request_ticket(E'{}')",
            "SELECT esq.request_ticket($${}$$)",
            "SELECT \"esq\".\"request_ticket\"('{}')",
            "SELECT request_ticket('{}')",
            "SELECT public.esq.request_ticket('{}')",
            "SELECT DISTINCT esq.request_ticket('{}')",
            "SELECT * FROM esq.request_ticket('{}')",
            "SELECT (SELECT esq.request_ticket('{}'))",
            "WITH t AS (SELECT 1) SELECT esq.request_ticket('{}')",
            "SELECT esq.request_ticket('{}') UNION SELECT 'x'",
            "VALUES (esq.request_ticket('{}'))",
        ] {
            assert_eq!(recognise(sql), None, "{sql}");
        }
    }
}
