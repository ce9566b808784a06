//! `*` in catalog statements, as esq's parser reads them. A `*` reads every
//! column of what it covers without naming one, so the name checks of
//! `metadata.rs` cannot see a statistic or an access list behind it. It is
//! allowed only where everything it covers has its columns named already:
//! derived tables (`SELECT * FROM (SELECT n.nspname, c.relname …) c`, as
//! pgJDBC's `getColumns` writes it — the inner columns are checked by name
//! like any other), table functions, and catalogs without such columns.
//! A `*` over `pg_class` itself (or another wide catalog) stays refused.
//! `metadata_pg.rs` applies the same rule to PostgreSQL's reading.

use sqlparser::ast::{
    Select, SelectItem, SelectItemQualifiedWildcardKind, TableFactor, TableWithJoins,
};

use super::denial::{Checked, Denial};
use super::metadata_lists::WIDE_CATALOGS;

/// Checks every `*` and `t.*` item of `select` against what it covers.
pub(super) fn check_select(select: &Select) -> Checked<()> {
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => {
                for from in &select.from {
                    for factor in factors(from) {
                        covers(factor)?;
                    }
                }
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let parts = super::names::object_name_parts(name)?;
                let Some(qualifier) = parts.last() else {
                    return Err(wide_star());
                };
                let mut matched = false;
                for from in &select.from {
                    for factor in factors(from) {
                        if let Some(found) = named(factor, qualifier) {
                            matched = true;
                            covers(found)?;
                        }
                    }
                }
                // `outer.*` of an enclosing query: not worth following.
                if !matched {
                    return Err(unresolved_star(qualifier));
                }
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(_), _) => {
                return Err(wide_star());
            }
            SelectItem::UnnamedExpr(_)
            | SelectItem::ExprWithAlias { .. }
            | SelectItem::ExprWithAliases { .. } => {}
        }
    }
    Ok(())
}

/// The FROM items of one FROM-list entry: its first relation and each join's.
fn factors(from: &TableWithJoins) -> impl Iterator<Item = &TableFactor> {
    std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
}

/// The FROM item `qualifier` names within `factor` (a nested join is
/// searched inside when it has no alias of its own).
fn named<'a>(factor: &'a TableFactor, qualifier: &str) -> Option<&'a TableFactor> {
    let alias = match factor {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::NestedJoin { alias, .. }
        | TableFactor::TableFunction { alias, .. } => alias.as_ref(),
        _ => None,
    };
    if let Some(alias) = alias {
        return (super::names::fold(&alias.name) == qualifier).then_some(factor);
    }
    match factor {
        TableFactor::Table { name, .. } => {
            let parts = super::names::object_name_parts(name).ok()?;
            (parts.last().map(String::as_str) == Some(qualifier)).then_some(factor)
        }
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => factors(table_with_joins).find_map(|f| named(f, qualifier)),
        _ => None,
    }
}

/// Whether a `*` may read every column of `factor`.
fn covers(factor: &TableFactor) -> Checked<()> {
    match factor {
        TableFactor::Table { name, args, .. } => {
            if args.is_some() {
                // A table function (only `generate_series`: integers).
                return Ok(());
            }
            let parts = super::names::object_name_parts(name)?;
            let qualified = match parts.as_slice() {
                [name] => super::metadata::qualify(name),
                _ => parts.join("."),
            };
            if WIDE_CATALOGS.contains(&qualified.as_str()) {
                Err(wide_star())
            } else {
                Ok(())
            }
        }
        // Its own select list is checked by name (and its own `*` here).
        TableFactor::Derived { .. } => Ok(()),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => factors(table_with_joins).try_for_each(covers),
        _ => Err(wide_star()),
    }
}

pub(super) fn wide_star() -> Denial {
    Denial::forbidden(
        "* over pg_class, pg_namespace, pg_database, pg_attribute, pg_proc, pg_type or pg_tablespace is not allowed",
        "those catalogs carry statistics (row counts that include hidden rows) and access lists (role names)",
        "name the columns you need (a * over a subquery that names them is fine)",
    )
}

fn unresolved_star(qualifier: &str) -> Denial {
    Denial::forbidden(
        format!("{qualifier}.* does not name a FROM item of its own SELECT"),
        "esq follows a * only to the FROM items beside it",
        "name the columns you need",
    )
}
