//! Index statistics as the driver APIs ask for them, answered as unknown.
//! JDBC's `DatabaseMetaData.getIndexInfo` and ODBC's `SQLStatistics` have
//! result columns `CARDINALITY` and `PAGES`; pgJDBC fills them with
//! `ci.reltuples AS CARDINALITY, ci.relpages AS PAGES`. A row count
//! includes rows a ticket's filters and retention hide, so esq never
//! answers it — but refusing the whole call would leave every JDBC tool
//! without index names. So exactly that shape — a statistics column as a
//! whole select-list item named `cardinality` or `pages` — is rewritten to
//! a typed `NULL` ("not available", which both APIs allow) before the
//! checks run; every other use of a statistics column (`SELECT reltuples`,
//! in WHERE, ORDER BY, an expression, under another name) is still
//! refused by the name checks, and the forwarded text is checked again by
//! PostgreSQL's reading.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, SelectItem, Statement, VisitMut, VisitorMut};

use super::denial::Checked;
use super::metadata_lists::STATISTICS_COLUMNS;

/// The driver API result columns that carry statistics.
const STATISTIC_OUTPUTS: &[&str] = &["cardinality", "pages"];

/// Rewrites `expr AS cardinality|pages` items that read a statistics
/// column to a typed NULL of that column's type.
pub(super) fn hide_statistics(statements: &mut [Statement]) -> Checked<()> {
    let mut hider = Hider {
        real: super::rewrite::expression("NULL::real")?,
        integer: super::rewrite::expression("NULL::integer")?,
    };
    for statement in statements {
        let _ = super::deep_walk(|| statement.visit(&mut hider));
    }
    Ok(())
}

struct Hider {
    /// `reltuples` is a `real`.
    real: Expr,
    /// `relpages`, `relallvisible`, `relallfrozen` are `integer`s.
    integer: Expr,
}

impl VisitorMut for Hider {
    type Break = ();

    fn pre_visit_select(&mut self, select: &mut sqlparser::ast::Select) -> ControlFlow<()> {
        for item in &mut select.projection {
            let SelectItem::ExprWithAlias { expr, alias } = item else {
                continue;
            };
            if !STATISTIC_OUTPUTS.contains(&super::names::fold(alias).as_str()) {
                continue;
            }
            let column = match &*expr {
                Expr::Identifier(ident) => Some(super::names::fold(ident)),
                Expr::CompoundIdentifier(parts) => parts.last().map(super::names::fold),
                _ => None,
            };
            match column.as_deref() {
                Some("reltuples") => *expr = self.real.clone(),
                Some(name) if STATISTICS_COLUMNS.contains(&name) => *expr = self.integer.clone(),
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::hide_statistics;

    fn rewrite(sql: &str) -> String {
        let mut statements = super::super::parse::parse(sql).unwrap_or_default();
        hide_statistics(&mut statements).unwrap_or_else(|d| panic!("{}", d.reason));
        statements
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn the_driver_shape_becomes_a_typed_null() {
        assert_eq!(
            rewrite("SELECT ci.reltuples AS CARDINALITY, ci.relpages AS PAGES FROM pg_class ci"),
            "SELECT NULL::REAL AS CARDINALITY, NULL::INTEGER AS PAGES FROM pg_class ci"
        );
    }

    #[test]
    fn every_other_shape_is_left_for_the_checks_to_refuse() {
        for sql in [
            "SELECT reltuples FROM pg_class",
            "SELECT reltuples AS n FROM pg_class",
            "SELECT reltuples + 0 AS cardinality FROM pg_class",
            "SELECT relname AS pages FROM pg_class WHERE reltuples > 10",
            "SELECT relname FROM pg_class ORDER BY reltuples",
        ] {
            assert!(rewrite(sql).contains("reltuples"), "{sql}");
        }
    }
}
