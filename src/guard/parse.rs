//! Stage 1, parse: sqlparser's PostgreSQL dialect with a recursion limit.
//! Any error is a denial.

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::denial::{Checked, Denial};

/// Deeper nesting than this is refused rather than risking the stack.
pub const RECURSION_LIMIT: usize = 64;
/// Longer statements are refused (a guard decision must stay cheap).
pub const MAX_SQL_BYTES: usize = 64 * 1024;

pub fn parse(sql: &str) -> Checked<Vec<Statement>> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Denial::unsupported(
            format!("statements longer than {MAX_SQL_BYTES} bytes"),
            "split the statement",
        ));
    }
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|err| {
            Denial::syntax(format!(
                "cannot parse the statement: {}",
                first_line(&err.to_string())
            ))
        })?;
    if statements.is_empty() {
        return Err(Denial::syntax("empty statement"));
    }
    Ok(statements)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
