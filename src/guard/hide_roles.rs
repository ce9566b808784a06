//! Role names stay the operator's business: a catalog statement may ask
//! for them (psql's `\d` lists the roles of a table's row policies, `\dt`
//! its owner) and still work, but it gets none. The rewrite replaces every
//! `pg_roles` FROM item by an empty table of the same shape and every
//! `pg_get_userbyid(…)` by `NULL::name`, on the AST, before the statement
//! is rendered and read again by both parsers. The service role's own
//! name (`CURRENT_USER`) and access lists are refused by the metadata
//! checks.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Statement, TableFactor, VisitMut, VisitorMut};

use super::denial::Checked;
use super::names::{builtin_function_name, object_name_parts};

/// Rewrites `statements` so that no role name comes back.
pub(super) fn hide_roles(statements: &mut [Statement]) -> Checked<()> {
    let empty_roles = super::rewrite::table_factor(
        "(SELECT * FROM pg_catalog.pg_roles WHERE false) AS pg_roles",
    )?;
    let no_owner = super::rewrite::expression("NULL::name")?;
    let mut hider = Hider {
        empty_roles,
        no_owner,
    };
    for statement in statements {
        let _ = super::deep_walk(|| statement.visit(&mut hider));
    }
    Ok(())
}

struct Hider {
    empty_roles: TableFactor,
    no_owner: Expr,
}

impl VisitorMut for Hider {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        {
            let parts = object_name_parts(name).unwrap_or_default();
            let roles = matches!(
                parts
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice(),
                ["pg_roles"] | ["pg_catalog", "pg_roles"]
            );
            if roles {
                let alias = alias.clone();
                let mut empty = self.empty_roles.clone();
                if let (TableFactor::Derived { alias: slot, .. }, Some(alias)) = (&mut empty, alias)
                {
                    *slot = Some(alias);
                }
                *factor = empty;
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            if builtin_function_name(function).as_deref() == Some("pg_get_userbyid") {
                *expr = self.no_owner.clone();
            }
        }
        ControlFlow::Continue(())
    }
}
