//! Derived-table substitution: a governed table reference becomes
//! `(SELECT <allowed fields> FROM schema.table WHERE <row filters> OFFSET 0) AS alias`,
//! so even a trick that escapes the checks cannot reach a column that is
//! not there. `OFFSET 0` (only when there are row filters) is a planner
//! fence: PostgreSQL neither pulls such a subquery up nor pushes the
//! caller's conditions into it, so no caller expression is ever evaluated
//! on a row the filters hide (an error or timing difference on a hidden
//! row would otherwise reveal it). Row filters: the scope's filters, the retention window and
//! the right-to-delete hook. Built from catalog names and scope values
//! (quoted and escaped by sqlparser), then parsed into AST nodes.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlparser::ast::{Expr, Ident, SetExpr, Statement, TableFactor, Value};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::denial::{Checked, Denial};
use super::GuardContext;
use crate::policy::FilterValue;

/// Built derived tables by (scope id, retention cutoff, tombstone filter,
/// alias): the same scope always yields the same derived table, so it is
/// built (and parsed) once. Bounded: cleared when full.
#[derive(Default)]
pub(crate) struct DerivedTableCache {
    entries: Mutex<HashMap<DerivedKey, TableFactor>>,
}

type DerivedKey = (String, Option<chrono::NaiveDate>, Option<String>, String);

const DERIVED_CACHE_ENTRIES: usize = 4096;

pub(super) fn governed_table(ctx: &GuardContext<'_>, alias: &str) -> Checked<TableFactor> {
    let key: DerivedKey = (
        ctx.scope.id.clone(),
        ctx.retention_cutoff,
        ctx.tombstone_filter.map(str::to_string),
        alias.to_string(),
    );
    let lock = || {
        ctx.derived
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    };
    if let Some(hit) = lock().get(&key) {
        return Ok(hit.clone());
    }
    let built = build_governed_table(ctx, alias)?;
    let mut entries = lock();
    if entries.len() >= DERIVED_CACHE_ENTRIES {
        entries.clear();
    }
    entries.insert(key, built.clone());
    Ok(built)
}

fn build_governed_table(ctx: &GuardContext<'_>, alias: &str) -> Checked<TableFactor> {
    let quote = |name: &str| Ident::with_quote('"', name).to_string();
    let mut columns: Vec<String> = ctx.scope.fields.iter().map(|f| quote(f)).collect();
    // A private scope's rewrite bounds each person's contribution, so it
    // needs the privacy unit even when the ticket does not name it; no
    // user expression can reach it (the resolver checks names against the
    // scope's fields) and the private rewrite never outputs it.
    if ctx.scope.privacy.is_some() {
        if let Some(unit) = ctx.dataset.privacy_unit() {
            if !ctx.scope.allows_field(unit) {
                columns.push(quote(unit));
            }
        }
    }
    let table = format!(
        "{}.{}",
        quote(&ctx.dataset.table.schema),
        quote(&ctx.dataset.table.name)
    );
    let mut filters: Vec<String> = ctx
        .scope
        .row_filters
        .iter()
        .map(|(field, value)| format!("{} = {}", quote(field), literal(value)))
        .collect();
    if let (Some(cutoff), Some(field)) = (ctx.retention_cutoff, &ctx.dataset.retention_field) {
        filters.push(format!(
            "{} >= DATE '{}'",
            quote(field),
            cutoff.format("%Y-%m-%d")
        ));
    }
    if let Some(condition) = ctx.tombstone_filter {
        filters.push(format!("({condition})"));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {} OFFSET 0", filters.join(" AND "))
    };
    let sql = format!(
        "SELECT * FROM (SELECT {} FROM {table}{filter}) AS {}",
        columns.join(", "),
        quote(alias)
    );
    let internal =
        |what: &str| Denial::syntax(format!("esq could not build the {what} for the dataset"));
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|_| internal("derived table"))?;
    let Some(Statement::Query(query)) = statements.pop() else {
        return Err(internal("derived table"));
    };
    let SetExpr::Select(mut select) = *query.body else {
        return Err(internal("derived table"));
    };
    select
        .from
        .pop()
        .map(|from| from.relation)
        .ok_or_else(|| internal("derived table"))
}

fn literal(value: &FilterValue) -> String {
    match value {
        FilterValue::Text(text) => Value::SingleQuotedString(text.clone()).to_string(),
        FilterValue::Integer(i) => i.to_string(),
        FilterValue::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
    }
}

/// Parses a FROM item esq builds itself (e.g. an empty stand-in table).
pub(super) fn table_factor(sql: &str) -> Checked<TableFactor> {
    let internal = || Denial::syntax("esq could not build a FROM item");
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("SELECT * FROM {sql}"))
        .and_then(|mut p| p.parse_statements())
        .map_err(|_| internal())?;
    let Some(Statement::Query(query)) = statements.pop() else {
        return Err(internal());
    };
    let SetExpr::Select(mut select) = *query.body else {
        return Err(internal());
    };
    select
        .from
        .pop()
        .map(|from| from.relation)
        .ok_or_else(internal)
}

/// Parses a small expression esq builds itself (e.g. `count(*) >= 11`).
pub(super) fn expression(sql: &str) -> Checked<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|_| Denial::syntax("esq could not build an expression"))
}
