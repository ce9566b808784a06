//! Stage 1, parse: sqlparser's PostgreSQL dialect with a recursion limit.
//! Any error is a denial. The tokens pass through one fix-up first:
//! `U&'…' UESCAPE 'c'` (see `literals`), which sqlparser does not read.

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

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
    parse_at_most(sql, MAX_SQL_BYTES, true)
}

/// Parses esq's rendered rewrite (see [`MAX_REWRITE_BYTES`]).
pub fn parse_rewrite(sql: &str) -> Checked<Vec<Statement>> {
    parse_at_most(sql, MAX_REWRITE_BYTES, false)
}

/// `input`: a client's text, whose quoted names must print faithfully.
fn parse_at_most(sql: &str, limit: usize, input: bool) -> Checked<Vec<Statement>> {
    if sql.len() > limit {
        return Err(Denial::unsupported(
            format!("statements longer than {limit} bytes"),
            "split the statement",
        ));
    }
    let cannot =
        |err: String| Denial::syntax(format!("cannot parse the statement: {}", first_line(&err)));
    let dialect = PostgreSqlDialect {};
    let mut tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|err| cannot(err.to_string()))?;
    // `U&'…' UESCAPE 'c'`, which sqlparser's tokenizer does not know.
    super::literals::apply_uescape(sql, &mut tokens).map_err(cannot)?;
    // sqlparser prints a quote after a backslash in a name as it is, so
    // such a name would not read back (see `literals`): refused.
    if input
        && tokens.iter().any(|t| {
            matches!(&t.token, Token::Word(w) if w.quote_style.is_some()
                && !super::literals::name_reads_back(&w.value))
        })
    {
        return Err(Denial::unsupported(
            "a quoted name holding a backslash before a quote, or two quotes in a row",
            "rename the alias",
        ));
    }
    let statements = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|err| cannot(err.to_string()))?;
    if statements.is_empty() {
        return Err(Denial::syntax("empty statement"));
    }
    Ok(statements)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
