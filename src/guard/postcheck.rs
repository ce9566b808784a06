//! The second line of defence: a complete walk (sqlparser's derived
//! `Visitor`, which visits every node) over the rewritten statement, the
//! one that will be forwarded. Whatever the resolver modelled, this checks
//! what it produced: every relation is one of the derived tables the
//! rewrite put in (counted) or a CTE of the statement, and every function
//! and cast is on the allowlist. A node the resolver never visited (say, an
//! expression in a window frame bound) cannot carry a table or a function
//! past it.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement, Visit, Visitor};

use super::denial::{Checked, Denial};
use super::{functions, resolve::fold};
use crate::catalog::TableName;

pub(super) fn check(
    statement: &Statement,
    dataset: &TableName,
    substitutions: usize,
) -> Checked<()> {
    let mut walk = Walk {
        dataset,
        ctes: BTreeSet::new(),
        dataset_references: 0,
    };
    let flow = stacker::grow(32 * 1024 * 1024, || statement.visit(&mut walk));
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
    ctes: BTreeSet<String>,
    dataset_references: usize,
}

fn not_analysed(what: &str) -> Denial {
    Denial::forbidden(
        format!("the statement holds {what}"),
        "esq's final check of the rewritten statement found something its analysis did not cover",
        "simplify the statement",
    )
}

impl Visitor for Walk<'_> {
    type Break = Denial;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Denial> {
        if has_table_statement(&query.body) {
            return ControlFlow::Break(not_analysed("a TABLE statement"));
        }
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(fold(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
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
            [name] if self.ctes.contains(&fold(name)) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(not_analysed(&format!("the relation {relation}"))),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Denial> {
        match expr {
            Expr::Function(function) => {
                let parts: Vec<String> = function
                    .name
                    .0
                    .iter()
                    .filter_map(ObjectNamePart::as_ident)
                    .map(fold)
                    .collect();
                let allowed = match parts.as_slice() {
                    [name] => functions::lookup(name).is_some(),
                    [schema, name] if schema == "pg_catalog" => functions::lookup(name).is_some(),
                    _ => false,
                };
                if !allowed || parts.len() != function.name.0.len() {
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
        assert_eq!(check(&statement(&sql), &table(), 1), Ok(()));
    }

    #[test]
    fn a_reference_the_resolver_did_not_rewrite_is_caught_wherever_it_is() {
        // Any place the resolver might not visit: a frame bound, say.
        let sql = format!(
            "SELECT count(*) OVER (ROWS BETWEEN (SELECT count(*) FROM burial_2024) PRECEDING AND CURRENT ROW) FROM {DERIVED}"
        );
        assert!(check(&statement(&sql), &table(), 1).is_err());
        // Even spelled exactly like esq's own derived tables, the count differs.
        let sql = format!(
            "SELECT count(*) OVER (ROWS BETWEEN (SELECT count(*) FROM \"public\".\"burial_2024\") PRECEDING AND CURRENT ROW) FROM {DERIVED}"
        );
        assert!(check(&statement(&sql), &table(), 1).is_err());
    }

    #[test]
    fn functions_and_casts_off_the_allowlist_are_caught_wherever_they_are() {
        let sql = format!(
            "SELECT count(*) OVER (ROWS BETWEEN CURRENT ROW AND (SELECT pg_sleep(1)) FOLLOWING) FROM {DERIVED}"
        );
        assert!(check(&statement(&sql), &table(), 1).is_err());
        let sql = format!("SELECT state::regclass FROM {DERIVED}");
        assert!(check(&statement(&sql), &table(), 1).is_err());
        let sql = format!("SELECT other.x FROM {DERIVED}, other");
        assert!(check(&statement(&sql), &table(), 1).is_err());
    }
}
