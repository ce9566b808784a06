//! The second line of defence: a complete walk (sqlparser's derived
//! `Visitor`, which visits every node) over the rewritten statement, the
//! one that will be forwarded. Whatever the resolver modelled, this checks
//! what it produced: every relation is one of the derived tables the
//! rewrite put in (counted) or a CTE of the statement, and every function
//! and cast is on the allowlist. A node the resolver never visited (say, an
//! expression in a window frame bound) cannot carry a table or a function
//! past it.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, Visit, Visitor,
};

use super::denial::{Checked, Denial};
use super::functions;
use super::resolve::{builtin_function_name, fold};
use crate::catalog::TableName;

/// `rewrite_functions`: functions esq's own rewrite added (the private
/// stage's `random()`), allowed here on top of the allowlist.
pub(super) fn check(
    statement: &Statement,
    dataset: &TableName,
    substitutions: usize,
    rewrite_functions: &[&str],
) -> Checked<()> {
    let mut walk = Walk {
        dataset,
        frames: Vec::new(),
        dataset_references: 0,
        rewrite_functions,
    };
    let flow = super::deep_walk(|| statement.visit(&mut walk));
    if let ControlFlow::Break(denial) = flow {
        return Err(denial);
    }
    if walk.dataset_references != substitutions {
        return Err(not_analysed(
            "a reference to the dataset that esq did not rewrite",
        ));
    }
    Ok(())
}

/// Clauses no read-only answer needs, refused wherever they stand:
/// `SELECT … INTO` creates a table, `FOR UPDATE` takes locks, the rest are
/// syntax esq does not model.
pub(super) fn check_query_clauses(query: &Query) -> Result<(), Denial> {
    if !query.locks.is_empty()
        || query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return Err(Denial::forbidden(
            "row locks and other non-SELECT clauses are not allowed",
            "sessions through esq are read-only",
            "remove FOR UPDATE/SHARE and similar clauses",
        ));
    }
    if has_table_statement(&query.body) {
        return Err(Denial::forbidden(
            "TABLE … is not allowed",
            "TABLE x names its table as a plain identifier that esq's checks do not see; esq analyses SELECT statements",
            "write SELECT … FROM …",
        ));
    }
    Ok(())
}

pub(super) fn check_select_clauses(select: &Select) -> Result<(), Denial> {
    if select.into.is_some() {
        return Err(Denial::forbidden(
            "SELECT INTO creates a table",
            "sessions through esq are read-only",
            "remove INTO",
        ));
    }
    Ok(())
}

/// `TABLE x` (anywhere in a set-operation tree) names x as a plain
/// identifier, so relation walkers never see it.
pub(super) fn has_table_statement(body: &SetExpr) -> bool {
    match body {
        SetExpr::Table(_) => true,
        SetExpr::SetOperation { left, right, .. } => {
            has_table_statement(left) || has_table_statement(right)
        }
        _ => false,
    }
}

struct Walk<'a> {
    dataset: &'a TableName,
    /// One frame per query being visited, innermost last.
    frames: Vec<CteFrame>,
    dataset_references: usize,
    rewrite_functions: &'a [&'a str],
}

/// The CTEs one query defines and how many of them its current child sees:
/// a CTE's own body sees the CTEs before it (itself too under RECURSIVE),
/// the query's body sees them all.
struct CteFrame {
    names: Vec<String>,
    recursive: bool,
    /// CTE bodies entered so far.
    entered: usize,
    /// How many of `names` the subtree being visited sees.
    visible: usize,
}

fn not_analysed(what: &str) -> Denial {
    Denial::forbidden(
        format!("the statement holds {what}"),
        "esq's final check of the rewritten statement found something its analysis did not cover",
        "simplify the statement",
    )
}

impl Walk<'_> {
    fn cte_in_scope(&self, name: &str) -> bool {
        self.frames
            .iter()
            .any(|f| f.names[..f.visible].iter().any(|n| n == name))
    }
}

impl Visitor for Walk<'_> {
    type Break = Denial;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Denial> {
        if let Err(denial) = check_query_clauses(query) {
            return ControlFlow::Break(denial);
        }
        // Is this query the next CTE body of the query around it?
        if let Some(parent) = self.frames.last_mut() {
            if parent.entered < parent.names.len() {
                let i = parent.entered;
                parent.visible = if parent.recursive { i + 1 } else { i };
                parent.entered += 1;
            } else {
                parent.visible = parent.names.len();
            }
        }
        let (names, recursive) = match &query.with {
            Some(with) => (
                with.cte_tables
                    .iter()
                    .map(|c| fold(&c.alias.name))
                    .collect(),
                with.recursive,
            ),
            None => (Vec::new(), false),
        };
        self.frames.push(CteFrame {
            names,
            recursive,
            entered: 0,
            visible: 0,
        });
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<Denial> {
        self.frames.pop();
        // Back in the parent: once its CTE bodies are done, its body sees all.
        if let Some(parent) = self.frames.last_mut() {
            if parent.entered >= parent.names.len() {
                parent.visible = parent.names.len();
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Denial> {
        // A query's body (its selects) is visited after its CTE bodies.
        if let Some(frame) = self.frames.last_mut() {
            if frame.entered >= frame.names.len() {
                frame.visible = frame.names.len();
            }
        }
        match check_select_clauses(select) {
            Ok(()) => ControlFlow::Continue(()),
            Err(denial) => ControlFlow::Break(denial),
        }
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<Denial> {
        let parts: Vec<_> = relation
            .0
            .iter()
            .filter_map(ObjectNamePart::as_ident)
            .collect();
        if parts.len() != relation.0.len() {
            return ControlFlow::Break(not_analysed("a computed relation name"));
        }
        match parts.as_slice() {
            // The derived tables esq builds name the table quoted and qualified.
            [schema, name]
                if schema.quote_style == Some('"')
                    && name.quote_style == Some('"')
                    && schema.value == self.dataset.schema
                    && name.value == self.dataset.name =>
            {
                self.dataset_references += 1;
                ControlFlow::Continue(())
            }
            [name] if self.cte_in_scope(&fold(name)) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(not_analysed(&format!("the relation {relation}"))),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Denial> {
        match expr {
            Expr::Function(function) => {
                let allowed = builtin_function_name(function).is_some_and(|name| {
                    functions::lookup(&name).is_some()
                        || self.rewrite_functions.contains(&name.as_str())
                });
                if !allowed {
                    return ControlFlow::Break(not_analysed(&format!(
                        "the function {}()",
                        function.name
                    )));
                }
            }
            Expr::Cast { data_type, .. } if !functions::cast_target_allowed(data_type) => {
                return ControlFlow::Break(not_analysed(&format!("a cast to {data_type}")));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0)
    }

    fn table() -> TableName {
        TableName {
            schema: "public".into(),
            name: "burial_2024".into(),
        }
    }

    const DERIVED: &str = r#"(SELECT "state" FROM "public"."burial_2024" WHERE "burial_date" >= DATE '2016-11-25' OFFSET 0) AS "b""#;

    #[test]
    fn the_rewrite_esq_produces_passes() {
        let sql = format!(
            "WITH c AS (SELECT state FROM {DERIVED}) SELECT state, count(*) FROM c GROUP BY state"
        );
        assert_eq!(check(&statement(&sql), &table(), 1, &[]), Ok(()));
    }

    #[test]
    fn a_reference_the_resolver_did_not_rewrite_is_caught_wherever_it_is() {
        // Any place the resolver might not visit: a frame bound, say.
        let sql = format!(
            "SELECT count(*) OVER (ROWS BETWEEN (SELECT count(*) FROM burial_2024) PRECEDING AND CURRENT ROW) FROM {DERIVED}"
        );
        assert!(check(&statement(&sql), &table(), 1, &[]).is_err());
        // Even spelled exactly like esq's own derived tables, the count differs.
        let sql = format!(
            "SELECT count(*) OVER (ROWS BETWEEN (SELECT count(*) FROM \"public\".\"burial_2024\") PRECEDING AND CURRENT ROW) FROM {DERIVED}"
        );
        assert!(check(&statement(&sql), &table(), 1, &[]).is_err());
    }

    #[test]
    fn functions_and_casts_off_the_allowlist_are_caught_wherever_they_are() {
        let sql = format!(
            "SELECT count(*) OVER (ROWS BETWEEN CURRENT ROW AND (SELECT pg_sleep(1)) FOLLOWING) FROM {DERIVED}"
        );
        assert!(check(&statement(&sql), &table(), 1, &[]).is_err());
        let sql = format!("SELECT state::regclass FROM {DERIVED}");
        assert!(check(&statement(&sql), &table(), 1, &[]).is_err());
        let sql = format!("SELECT other.x FROM {DERIVED}, other");
        assert!(check(&statement(&sql), &table(), 1, &[]).is_err());
    }

    #[test]
    fn cte_names_count_only_where_postgresql_sees_them() {
        // A non-recursive CTE's own body does not see its name: a raw
        // reference there is the real table.
        let own_body =
            "WITH burial_2024 AS (SELECT state FROM burial_2024) SELECT state FROM burial_2024";
        assert!(check(&statement(own_body), &table(), 0, &[]).is_err());
        // Later siblings and the body see it.
        let sibling = format!(
            "WITH a AS (SELECT state FROM {DERIVED}), b AS (SELECT state FROM a) SELECT state FROM b"
        );
        assert_eq!(check(&statement(&sibling), &table(), 1, &[]), Ok(()));
        // An earlier sibling does not (without RECURSIVE).
        let forward = format!(
            "WITH b AS (SELECT state FROM a), a AS (SELECT state FROM {DERIVED}) SELECT state FROM b"
        );
        assert!(check(&statement(&forward), &table(), 1, &[]).is_err());
        // A CTE is not visible outside the query that defines it.
        let outside = format!(
            "SELECT * FROM (WITH a AS (SELECT state FROM {DERIVED}) SELECT state FROM a) AS s, a"
        );
        assert!(check(&statement(&outside), &table(), 1, &[]).is_err());
        // RECURSIVE: the body of a CTE sees itself.
        let recursive = format!(
            "WITH RECURSIVE r AS (SELECT state FROM {DERIVED} UNION ALL SELECT state FROM r WHERE false) SELECT state FROM r"
        );
        assert_eq!(check(&statement(&recursive), &table(), 1, &[]), Ok(()));
    }

    #[test]
    fn write_and_lock_clauses_are_refused() {
        let into = format!("SELECT state INTO leak FROM {DERIVED}");
        assert!(check(&statement(&into), &table(), 1, &[]).is_err());
        let lock = format!("SELECT state FROM {DERIVED} FOR UPDATE");
        assert!(check(&statement(&lock), &table(), 1, &[]).is_err());
    }
}
