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
/// esq's own rewrite of a statement may be longer: it adds the derived
/// tables and the tombstones' key lists (thousands of forgotten subjects
/// are one string literal each table, cheap to parse).
pub const MAX_REWRITE_BYTES: usize = 16 * 1024 * 1024;

pub fn parse(sql: &str) -> Checked<Vec<Statement>> {
    parse_at_most(sql, MAX_SQL_BYTES)
}

/// Parses esq's rendered rewrite (see [`MAX_REWRITE_BYTES`]).
pub fn parse_rewrite(sql: &str) -> Checked<Vec<Statement>> {
    parse_at_most(sql, MAX_REWRITE_BYTES)
}

fn parse_at_most(sql: &str, limit: usize) -> Checked<Vec<Statement>> {
    if sql.len() > limit {
        return Err(Denial::unsupported(
            format!("statements longer than {limit} bytes"),
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
