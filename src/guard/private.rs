//! Stage 6 for private tickets: contribution bounding in the rewritten SQL
//! (as ZetaSQL / BigQuery do), after the count-only checks have passed and
//! the dataset has been substituted by its governed derived table.
//!
//! `SELECT branch, count(*) FROM t WHERE state = 'CA' GROUP BY branch`
//! becomes
//!
//! ```sql
//! SELECT "esq_k1" AS "branch", count(*) AS "count" FROM (
//!   SELECT "esq_k1", row_number() OVER (PARTITION BY "esq_unit" ORDER BY random()) AS "esq_rank"
//!   FROM (SELECT DISTINCT "t"."id" AS "esq_unit", branch AS "esq_k1"
//!         FROM (<governed table>) AS "t"
//!         WHERE (state = 'CA') AND "t"."id" IS NOT NULL) AS "esq_units"
//! ) AS "esq_bounded"
//! WHERE "esq_rank" <= 1 GROUP BY "esq_k1" ORDER BY "esq_k1"
//! ```
//!
//! `DISTINCT (unit, keys)` counts each person once per group; the random
//! rank keeps each person in at most L0 (`max_groups_per_unit`) groups. The
//! count is of persons, so its sensitivity is L0 whatever the data. There
//! is no `HAVING count(*) >= k`: the release step's noisy threshold
//! replaces it. The unit column never reaches the output.
//!
//! What would act on exact counts moves to the release step instead
//! (recorded in the [`PrivatePlan`]): `ORDER BY count` (sorted by the
//! noisy count) and LIMIT/OFFSET (applied after thresholding, so the number
//! of rows cannot reveal dropped groups). The database sorts by the keys
//! only, so the order of released rows depends on nothing but their keys.

use sqlparser::ast::{
    Expr, GroupByExpr, Ident, LimitClause, OrderBy, OrderByExpr, OrderByKind, OrderByOptions,
    OrderBySort, Query, Select, SelectItem, SetExpr, Statement, TableFactor, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::aggregate_shape as shape;
use super::denial::{Checked, Denial};
use super::resolve::{fold, output_name};
use super::GuardContext;
use crate::privacy::{PrivatePlan, SortDirection};

/// Functions only esq's own private rewrite uses (the final check allows
/// them in private statements; no user expression can hold them, as the
/// count-only grammar admits no such call).
pub(super) const REWRITE_FUNCTIONS: &[&str] = &["random"];

fn quoted(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

fn key_alias(i: usize) -> String {
    format!("esq_k{}", i + 1)
}

fn private_denial(reason: impl Into<String>, hint: impl Into<String>) -> Denial {
    Denial::forbidden(
        reason,
        "private answers bound each person's contribution and add noise; esq analyses one count per query, grouped by plain keys",
        hint,
    )
}

/// One select-list item: a key (its index in `keys`) or the count.
enum Item {
    Key(usize),
    Count,
}

/// Rewrites `query` (one resolved, substituted, count-only SELECT) into its
/// bounded form and returns what the release step needs.
pub(super) fn rewrite(ctx: &GuardContext<'_>, query: &mut Query) -> Checked<PrivatePlan> {
    let privacy = ctx
        .scope
        .privacy
        .ok_or_else(|| Denial::syntax("esq's private rewrite ran for a ticket without privacy"))?;
    let unit = ctx.dataset.privacy_unit().ok_or_else(|| {
        Denial::forbidden(
            format!("{} has no privacy unit", ctx.dataset.id),
            "its catalog file names neither privacy_unit nor subject_key, so no person's contribution can be bounded",
            "ask the dataset's steward to name the privacy_unit",
        )
    })?;
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(Denial::unsupported(
            "this private query",
            "write one SELECT",
        ));
    };
    if select.having.is_some() {
        return Err(private_denial(
            "HAVING is not allowed under a private ticket",
            "groups below the noisy threshold are left out for you; filter the released counts yourself",
        ));
    }
    let relation = match &select.from.first().map(|f| &f.relation) {
        Some(TableFactor::Derived {
            alias: Some(alias), ..
        }) => alias.name.value.clone(),
        _ => {
            return Err(Denial::syntax(
                "esq's private rewrite found no governed table",
            ))
        }
    };

    // The select list: keys and exactly one count.
    let mut keys: Vec<Expr> = Vec::new();
    let mut items = Vec::new();
    let mut names = Vec::new();
    let mut count_filter: Option<Expr> = None;
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(expr) => (expr, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            _ => return Err(Denial::unsupported("this select item", "name the columns")),
        };
        names.push(alias.map(fold).unwrap_or_else(|| output_name(expr)));
        if shape::is_count(expr) {
            if items.iter().any(|i| matches!(i, Item::Count)) {
                return Err(private_denial(
                    "a private query may hold one count",
                    "each count spends budget: ask for one count per query",
                ));
            }
            count_filter = counted_filter(expr, unit)?;
            items.push(Item::Count);
        } else {
            items.push(Item::Key(key_index(&mut keys, expr)));
        }
    }
    let Some(count_column) = items.iter().position(|i| matches!(i, Item::Count)) else {
        return Err(private_denial("a private query must count", "add count(*)"));
    };
    if let GroupByExpr::Expressions(exprs, _) = &select.group_by {
        for expr in exprs {
            let expr = match positional(expr) {
                Some(n) => match items.get(n) {
                    Some(Item::Key(k)) => keys[*k].clone(),
                    _ => {
                        return Err(private_denial(
                            "GROUP BY names a position that is not a grouping column",
                            "group by the columns themselves",
                        ))
                    }
                },
                None => expr.clone(),
            };
            key_index(&mut keys, &expr);
        }
    }
    let grouped = !keys.is_empty();
    let key_columns: Vec<usize> = (0..items.len()).filter(|&i| i != count_column).collect();

    // ORDER BY: keys stay in SQL; the count moves to the release step.
    let (order_by_count, mut sql_order) = order_by(query, &items, &names, &keys)?;
    for i in 0..keys.len() {
        let alias = Expr::Identifier(quoted(&key_alias(i)));
        if !sql_order.iter().any(|o| o.expr == alias) {
            sql_order.push(OrderByExpr {
                expr: alias,
                options: OrderByOptions {
                    sort: None,
                    nulls_first: None,
                },
                with_fill: None,
            });
        }
    }
    let (offset, limit) = limits(query)?;

    // The bounded statement, spliced together on the AST: the user's
    // SELECT (resolved, substituted) becomes the innermost one.
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(Denial::syntax("esq's private rewrite lost its SELECT"));
    };
    let unit_expr = Expr::CompoundIdentifier(vec![quoted(&relation), quoted(unit)]);
    // Rows without a unit belong to no known person: counting them as one
    // "NULL person" would let a newcomer change that person's groups (a
    // replace, twice the sensitivity), so they are not counted at all.
    let known_unit = Expr::IsNotNull(Box::new(unit_expr.clone()));
    let filter = match count_filter {
        None => known_unit,
        Some(counted) => Expr::BinaryOp {
            left: Box::new(known_unit),
            op: sqlparser::ast::BinaryOperator::And,
            right: Box::new(counted),
        },
    };
    select.projection = std::iter::once(SelectItem::ExprWithAlias {
        expr: unit_expr,
        alias: quoted("esq_unit"),
    })
    .chain(
        keys.iter()
            .enumerate()
            .map(|(i, key)| SelectItem::ExprWithAlias {
                expr: key.clone(),
                alias: quoted(&key_alias(i)),
            }),
    )
    .collect();
    select.distinct = Some(sqlparser::ast::Distinct::Distinct);
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    select.selection = Some(match select.selection.take() {
        None => filter,
        Some(existing) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(existing))),
            op: sqlparser::ast::BinaryOperator::And,
            right: Box::new(filter),
        },
    });
    let mut outer = skeleton(keys.len(), privacy.max_groups_per_unit)?;
    std::mem::swap(innermost_of(&mut outer)?, select.as_mut());
    outer.projection = items
        .iter()
        .zip(&names)
        .map(|(item, name)| {
            let expr = match item {
                Item::Key(k) => Ok(Expr::Identifier(quoted(&key_alias(*k)))),
                Item::Count => super::rewrite::expression("count(*)"),
            };
            expr.map(|expr| SelectItem::ExprWithAlias {
                expr,
                alias: quoted(name),
            })
        })
        .collect::<Checked<_>>()?;
    *query.body = SetExpr::Select(Box::new(outer));
    query.order_by = if sql_order.is_empty() {
        None
    } else {
        Some(OrderBy {
            kind: OrderByKind::Expressions(sql_order),
            interpolate: None,
        })
    };
    query.limit_clause = None;
    query.fetch = None;

    Ok(PrivatePlan {
        dataset: ctx.dataset.id.clone(),
        count_column,
        key_columns,
        grouped,
        epsilon_per_query_micro: privacy.per_query_micro(),
        epsilon_budget_micro: privacy.budget_micro(),
        budget_period_seconds: privacy.budget_period_seconds,
        max_groups_per_unit: privacy.max_groups_per_unit,
        min_group_size: ctx.scope.min_group_size,
        order_by_count,
        offset,
        limit,
    })
}

/// The index of `expr` among the keys, adding it when new.
fn key_index(keys: &mut Vec<Expr>, expr: &Expr) -> usize {
    match keys.iter().position(|k| k == expr) {
        Some(i) => i,
        None => {
            keys.push(expr.clone());
            keys.len() - 1
        }
    }
}

/// `1`-based select-list positions (GROUP BY 1, ORDER BY 2) as 0-based.
fn positional(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<usize>().ok()?.checked_sub(1),
            _ => None,
        },
        _ => None,
    }
}

/// What the count counts, as a filter on the rows: `count(*)` counts
/// persons; `count(col)` persons with a non-NULL `col` in the group;
/// `count(DISTINCT unit)` persons with a known unit. Counting distinct
/// values of any other field stays denied: its sensitivity is not the
/// persons'.
fn counted_filter(expr: &Expr, unit: &str) -> Checked<Option<Expr>> {
    let Expr::Function(function) = expr else {
        return match expr {
            Expr::Nested(inner) => counted_filter(inner, unit),
            _ => Err(Denial::syntax("esq's private rewrite expected a count")),
        };
    };
    let sqlparser::ast::FunctionArguments::List(list) = &function.args else {
        return Err(Denial::syntax("esq's private rewrite expected a count"));
    };
    let distinct = matches!(
        list.duplicate_treatment,
        Some(sqlparser::ast::DuplicateTreatment::Distinct)
    );
    let column = match list.args.as_slice() {
        [sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(column))] => {
            column
        }
        _ => return Ok(None), // count(*)
    };
    counted_filter_column(column, distinct, unit)
}

fn counted_filter_column(column: &Expr, distinct: bool, unit: &str) -> Checked<Option<Expr>> {
    if let Expr::Nested(inner) = column {
        return counted_filter_column(inner, distinct, unit);
    }
    let field = match column {
        Expr::Identifier(ident) => fold(ident),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold).unwrap_or_default(),
        _ => String::new(),
    };
    if distinct && field != unit {
        return Err(private_denial(
            format!("count(DISTINCT {column}) is not allowed under a private ticket"),
            format!(
                "count persons instead: count(*) or count(DISTINCT {unit}); distinct values of another field are not bounded by one person"
            ),
        ));
    }
    Ok(Some(Expr::IsNotNull(Box::new(column.clone()))))
}

type Ordering = (Option<SortDirection>, Vec<OrderByExpr>);

/// Splits the user's ORDER BY into the release step's (the count, first
/// only) and the database's (keys, by their aliases).
fn order_by(query: &Query, items: &[Item], names: &[String], keys: &[Expr]) -> Checked<Ordering> {
    let mut by_count = None;
    let mut sql = Vec::new();
    let Some(order_by) = &query.order_by else {
        return Ok((None, sql));
    };
    let OrderByKind::Expressions(order) = &order_by.kind else {
        return Err(Denial::unsupported("ORDER BY ALL", "name the sort columns"));
    };
    for (position, item) in order.iter().enumerate() {
        let by_name = match &item.expr {
            Expr::Identifier(ident) => names.iter().position(|n| *n == fold(ident)),
            _ => None,
        };
        let target = match (positional(&item.expr), by_name) {
            (Some(n), _) | (None, Some(n)) => items.get(n).map(|i| match i {
                Item::Key(k) => Some(*k),
                Item::Count => None,
            }),
            (None, None) if shape::is_count(&item.expr) => Some(None),
            (None, None) => keys.iter().position(|k| *k == item.expr).map(Some),
        };
        if matches!(item.options.sort, Some(OrderBySort::Using(_))) {
            return Err(Denial::unsupported("ORDER BY … USING", "use ASC or DESC"));
        }
        match target {
            Some(Some(k)) => sql.push(OrderByExpr {
                expr: Expr::Identifier(quoted(&key_alias(k))),
                options: item.options.clone(),
                with_fill: None,
            }),
            Some(None) if position == 0 => {
                by_count = Some(match item.options.sort {
                    Some(OrderBySort::Desc) => SortDirection::Desc,
                    _ => SortDirection::Asc,
                });
            }
            Some(None) => {
                return Err(private_denial(
                    "under a private ticket the count may only be the first sort key",
                    "write ORDER BY count(*) DESC, <keys>, or sort by keys only",
                ))
            }
            None => return Err(private_denial(
                "under a private ticket ORDER BY may name only the grouping columns and the count",
                "sort by a column of the answer",
            )),
        }
    }
    Ok((by_count, sql))
}

/// OFFSET and LIMIT as numbers (applied by the release step).
fn limits(query: &Query) -> Checked<(u64, Option<u64>)> {
    if query.fetch.is_some() {
        return Err(Denial::unsupported(
            "FETCH under a private ticket",
            "write LIMIT n",
        ));
    }
    let number = |expr: &Expr| -> Checked<Option<u64>> {
        match expr {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<u64>().map(Some).map_err(|_| {
                    Denial::unsupported("this LIMIT/OFFSET value", "use a whole number")
                }),
                Value::Null => Ok(None),
                _ => Err(Denial::unsupported(
                    "LIMIT/OFFSET parameters under a private ticket",
                    "write the number into the statement",
                )),
            },
            _ => Err(Denial::unsupported(
                "LIMIT/OFFSET expressions",
                "use a number",
            )),
        }
    };
    match &query.limit_clause {
        None => Ok((0, None)),
        Some(LimitClause::LimitOffset { limit, offset, .. }) => {
            let limit = limit.as_ref().map(number).transpose()?.flatten();
            let offset = offset
                .as_ref()
                .map(|o| number(&o.value))
                .transpose()?
                .flatten()
                .unwrap_or(0);
            Ok((offset, limit))
        }
        Some(LimitClause::OffsetCommaLimit { .. }) => Err(Denial::unsupported(
            "LIMIT offset, count",
            "write LIMIT n OFFSET m",
        )),
    }
}

/// The bounded statement's frame, built from constants only; the
/// innermost SELECT (`FROM esq_source`) is replaced by the user's.
fn skeleton(keys: usize, bound: u32) -> Checked<Select> {
    let aliases: Vec<String> = (0..keys)
        .map(|i| quoted(&key_alias(i)).to_string())
        .collect();
    let sql = if keys == 0 {
        "SELECT 1 FROM (SELECT DISTINCT 1 FROM esq_source) AS \"esq_units\"".to_string()
    } else {
        let list = aliases.join(", ");
        format!(
            "SELECT 1 FROM (SELECT {list}, row_number() OVER (PARTITION BY \"esq_unit\" ORDER BY random()) AS \"esq_rank\" \
             FROM (SELECT DISTINCT 1 FROM esq_source) AS \"esq_units\") AS \"esq_bounded\" \
             WHERE \"esq_rank\" <= {bound} GROUP BY {list}"
        )
    };
    let internal = || Denial::syntax("esq could not build the private rewrite");
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).map_err(|_| internal())?;
    match statements.pop() {
        Some(Statement::Query(query)) => match *query.body {
            SetExpr::Select(select) => Ok(*select),
            _ => Err(internal()),
        },
        _ => Err(internal()),
    }
}

/// The SELECT inside the skeleton's derived tables (`… FROM esq_source`).
fn innermost_of(select: &mut Select) -> Checked<&mut Select> {
    let internal = || Denial::syntax("esq could not build the private rewrite");
    let derived = matches!(
        select.from.first().map(|f| &f.relation),
        Some(TableFactor::Derived { .. })
    );
    if !derived {
        return Ok(select);
    }
    match select.from.first_mut().map(|f| &mut f.relation) {
        Some(TableFactor::Derived { subquery, .. }) => match subquery.body.as_mut() {
            SetExpr::Select(inner) => innermost_of(inner),
            _ => Err(internal()),
        },
        _ => Err(internal()),
    }
}
