//! Aggregate-only tickets (`aggregate: count`): the answer must be counts
//! over groups of at least `k`. Only one flat SELECT over the dataset is
//! modelled; WHERE is limited to equalities on non-PII fields joined by AND
//! (anything wider enables differencing); a row-level query over allowed
//! fields is rewritten into the grouped form; `HAVING count(*) >= k` is
//! always added as an AST node. `count(DISTINCT …)` is refused: an exact
//! number of distinct values is the number of groups, which turns "total
//! minus the groups shown" into a suppressed cell.
//!
//! Under a private ticket (scope `privacy`) the same checks run, WHERE may
//! also hold `IN (…)` lists and ranges on non-PII fields (noise, not the
//! grammar, defeats differencing there), and the statement then goes to
//! the [`super::private`] stage instead of getting `HAVING count(*) >= k`.

use std::collections::BTreeSet;

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Ident, Query, SelectItem, SetExpr, TableFactor,
};

use super::aggregate_shape as shape;
use super::denial::{Checked, Denial};
use super::resolve::{Column, Relation, Resolver};
use super::rewrite;
use crate::privacy::PrivatePlan;

/// Checks the statement's shape, resolves it, then enforces aggregation;
/// under a private ticket, returns the plan of the bounded rewrite.
pub(super) fn aggregate_query(
    resolver: &mut Resolver<'_>,
    query: &mut Query,
) -> Checked<Option<PrivatePlan>> {
    let ctx = resolver.ctx;
    let private = ctx.scope.privacy.is_some();
    if !private && has_count_distinct(query) {
        return Err(count_distinct_plug());
    }
    if !private && counts_a_nullable_field(query, ctx.dataset.subject_key.as_deref()) {
        return Err(count_of_a_field_plug());
    }
    let flat_hint = format!(
        "write one grouped SELECT, e.g. SELECT state, count(*) FROM {} GROUP BY state",
        ctx.dataset.table
    );
    if query.with.is_some() {
        return Err(Denial::unsupported(
            "WITH under an aggregate-only ticket",
            flat_hint,
        ));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(Denial::unsupported(
            "set operations, VALUES and nested queries under an aggregate-only ticket",
            flat_hint,
        ));
    };
    let single_table = select.from.len() == 1
        && select.from[0].joins.is_empty()
        && matches!(select.from[0].relation, TableFactor::Table { .. });
    if !single_table {
        return Err(Denial::unsupported(
            "joins and derived tables under an aggregate-only ticket",
            flat_hint,
        ));
    }
    if !matches!(
        select.distinct,
        None | Some(sqlparser::ast::Distinct::Distinct)
    ) {
        return Err(Denial::unsupported(
            "DISTINCT ON under an aggregate-only ticket",
            flat_hint,
        ));
    }
    if let Some(selection) = &select.selection {
        check_where(resolver, selection)?;
    }

    resolver.query(query)?;

    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(Denial::unsupported("this query", flat_hint));
    };
    // Re-bind the select list against the dataset to see what each item is.
    let name = match &select.from[0].relation {
        TableFactor::Derived {
            alias: Some(alias), ..
        } => super::resolve::fold(&alias.name),
        _ => ctx.dataset.table.name.clone(),
    };
    let relation = Relation::governed(ctx, name);
    resolver.scopes.push(vec![relation]);
    let mut result = enforce_aggregation(resolver, select, !private);
    if result.is_ok() {
        result = check_order_by(resolver, query);
    }
    resolver.scopes.pop();
    result?;
    if private {
        super::private::rewrite(ctx, query).map(Some)
    } else {
        Ok(None)
    }
}

/// Whether any count in the statement is `count(DISTINCT …)`.
fn has_count_distinct(query: &Query) -> bool {
    use sqlparser::ast::{visit_expressions, DuplicateTreatment, FunctionArguments};
    let flow = super::deep_walk(|| {
        visit_expressions(query, |expr| match expr {
            Expr::Function(f) => match &f.args {
                FunctionArguments::List(list)
                    if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) =>
                {
                    std::ops::ControlFlow::Break(())
                }
                _ => std::ops::ControlFlow::Continue(()),
            },
            _ => std::ops::ControlFlow::Continue(()),
        })
    });
    flow.is_break()
}

/// Whether a count counts a field other than the subject key (which every
/// row has): `count(field)` skips the rows where it is NULL.
fn counts_a_nullable_field(query: &Query, subject_key: Option<&str>) -> bool {
    use sqlparser::ast::{visit_expressions, FunctionArg, FunctionArgExpr, FunctionArguments};
    let counted_field = |f: &sqlparser::ast::Function| -> Option<String> {
        if super::resolve::builtin_function_name(f).as_deref() != Some("count") {
            return None;
        }
        let FunctionArguments::List(list) = &f.args else {
            return None;
        };
        list.args.iter().find_map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(ident))) => {
                Some(super::resolve::fold(ident))
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(parts))) => {
                parts.last().map(super::resolve::fold)
            }
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => None,
            _ => Some(String::new()),
        })
    };
    let flow = super::deep_walk(|| {
        visit_expressions(query, |expr| match expr {
            Expr::Function(f) => match counted_field(f) {
                Some(field) if Some(field.as_str()) != subject_key => {
                    std::ops::ControlFlow::Break(())
                }
                _ => std::ops::ControlFlow::Continue(()),
            },
            _ => std::ops::ControlFlow::Continue(()),
        })
    });
    flow.is_break()
}

/// A k-only ticket checks `count(*) >= k`; a count of a field is smaller
/// by the group's NULLs, so it can be exact and below k (red team, issue
/// 14: two people singled out by `count(cause_of_death)`).
fn count_of_a_field_plug() -> Denial {
    Denial::forbidden(
        "count(field) is refused under a count-only ticket: it counts the rows where the field is set, which can be fewer than k",
        "groups are checked against k by count(*); a count of a field that is often empty can single out a few people",
        "use count(*) (or count of the subject key), or request a ticket with privacy",
    )
}

/// The plug for k-only tickets (issue 14): exact distinct counts tell how
/// many groups exist, so the groups k hides can be computed.
fn count_distinct_plug() -> Denial {
    Denial::forbidden(
        "count(DISTINCT …) is refused under a count-only ticket: exact distinct counts let differencing recover suppressed cells",
        "an exact count of distinct values tells how many groups exist, so a total minus the groups shown is a suppressed small cell, exactly",
        "request a ticket with privacy (\"privacy\": {\"epsilon_per_query\": …}) for noisy, budgeted counts that survive differencing, or use count(*) grouped by the field",
    )
}

/// Rewrites a row-level query into grouped form; adds `HAVING count(*) >= k`
/// when `add_k` (k-only tickets: private ones threshold noisy counts).
fn enforce_aggregation(
    resolver: &mut Resolver<'_>,
    select: &mut sqlparser::ast::Select,
    add_k: bool,
) -> Checked<()> {
    let ctx = resolver.ctx;
    let mut items = Vec::new();
    for item in select.projection.iter_mut() {
        let expr = match item {
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => expr,
            _ => return Err(Denial::unsupported("this select item", "name the columns")),
        };
        shape::check_select_item(expr)?;
        let facts = resolver.expr(expr)?;
        items.push(facts);
    }
    let grouped =
        !matches!(&select.group_by, GroupByExpr::Expressions(exprs, _) if exprs.is_empty());
    let aggregated = grouped || items.iter().any(|f| f.has_aggregate);
    if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        for expr in exprs.iter_mut() {
            shape::check_group_key(expr)?;
            let facts = resolver.expr(expr)?;
            if let Some(pii) = facts.fields.iter().find(|f| ctx.is_pii(f)) {
                return Err(pii_as_dimension(pii, "GROUP BY"));
            }
        }
    }
    if let Some(having) = select.having.as_mut() {
        shape::check_having(having)?;
        let facts = resolver.expr(having)?;
        if let Some(field) = facts.fields.iter().next() {
            return Err(Denial::forbidden(
                format!("HAVING may only test counts under an aggregate-only ticket (it names {field:?})"),
                "conditions on fields belong in WHERE, where they are limited to equalities",
                "use WHERE field = value, or HAVING count(*) > n",
            ));
        }
    }
    if aggregated {
        for facts in &items {
            if let Some(pii) = facts.fields.iter().find(|f| ctx.is_pii(f)) {
                return Err(Denial::forbidden(
                    format!("the PII field {pii:?} may only appear inside count()"),
                    "your ticket allows aggregate answers only",
                    format!("count it instead: count({pii})"),
                ));
            }
        }
    } else {
        // DISTINCT over the grouped form changes nothing: drop it.
        select.distinct = None;
        group(select, &items, ctx)?;
    }
    if add_k {
        add_min_group_size(select, ctx.scope.min_group_size)?;
    }
    Ok(())
}

/// `SELECT state, id FROM t` → `SELECT state, count(id) AS count FROM t GROUP BY state`.
fn group(
    select: &mut sqlparser::ast::Select,
    items: &[super::expr::Facts],
    ctx: &super::GuardContext<'_>,
) -> Checked<Vec<Column>> {
    let counted: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].fields.iter().any(|f| ctx.is_pii(f)))
        .collect();
    let mut keys = Vec::new();
    let mut projection = Vec::new();
    let mut columns = Vec::new();
    for (i, item) in std::mem::take(&mut select.projection)
        .into_iter()
        .enumerate()
    {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(expr) => (expr, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            _ => return Err(Denial::unsupported("this select item", "name the columns")),
        };
        if counted.contains(&i) {
            let name = match (&alias, counted.len()) {
                (Some(alias), _) => alias.value.clone(),
                (None, 1) => "count".to_string(),
                (None, _) => format!("count_{}", super::resolve::output_name(&expr)),
            };
            let count = rewrite::expression(&format!("count({expr})"))?;
            projection.push(SelectItem::ExprWithAlias {
                expr: count,
                alias: Ident::with_quote('"', name.clone()),
            });
            columns.push(Column {
                name,
                fields: BTreeSet::new(),
            });
        } else {
            keys.push(expr.clone());
            columns.push(Column {
                name: alias
                    .as_ref()
                    .map(super::resolve::fold)
                    .unwrap_or_else(|| super::resolve::output_name(&expr)),
                fields: items[i].fields.clone(),
            });
            projection.push(match alias {
                Some(alias) => SelectItem::ExprWithAlias { expr, alias },
                None => SelectItem::UnnamedExpr(expr),
            });
        }
    }
    if counted.is_empty() {
        projection.push(SelectItem::ExprWithAlias {
            expr: rewrite::expression("count(*)")?,
            alias: Ident::with_quote('"', "count"),
        });
        columns.push(Column {
            name: "count".into(),
            fields: BTreeSet::new(),
        });
    }
    select.projection = projection;
    select.group_by = GroupByExpr::Expressions(keys, vec![]);
    Ok(columns)
}

/// ANDs `count(*) >= k` onto HAVING (the existing condition parenthesised).
fn add_min_group_size(select: &mut sqlparser::ast::Select, k: u32) -> Checked<()> {
    let minimum = rewrite::expression(&format!("count(*) >= {k}"))?;
    select.having = Some(match select.having.take() {
        None => minimum,
        Some(existing) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(existing))),
            op: BinaryOperator::And,
            right: Box::new(minimum),
        },
    });
    Ok(())
}

/// WHERE under an aggregate ticket: `field = literal [AND …]` on non-PII
/// allowed fields. Wider conditions let small groups be computed by
/// differencing two allowed answers. Under a private ticket also
/// `field [NOT] IN (literals…)`, `field <, <=, >, >= literal` and
/// `field BETWEEN literal AND literal`: noisy counts defeat differencing,
/// and a literal comparison raises no error that depends on a row.
fn check_where(resolver: &Resolver<'_>, expr: &Expr) -> Checked<()> {
    super::grow_stack(|| check_where_inner(resolver, expr))
}

fn check_where_inner(resolver: &Resolver<'_>, expr: &Expr) -> Checked<()> {
    let ctx = resolver.ctx;
    let private = ctx.scope.privacy.is_some();
    let deny = || {
        if private {
            Denial::forbidden(
                "under a private ticket WHERE may only compare fields with literals (=, <, <=, >, >=, BETWEEN, IN), joined by AND",
                "other conditions (OR, NOT, LIKE, functions, arithmetic) are outside what esq analyses for private answers",
                "filter with WHERE state IN ('CA', 'NV') AND burial_date >= '2020-01-01'",
            )
        } else {
            Denial::forbidden(
                "under an aggregate-only ticket WHERE may only test fields for equality, joined by AND",
                "OR, IN, NOT, <>, ranges and LIKE let suppressed small groups be recovered by subtraction",
                "group by the field instead of filtering on it (or request a ticket with privacy, which allows IN and ranges), e.g. GROUP BY state",
            )
        }
    };
    let literal = |e: &Expr| match e {
        Expr::Value(_) => true,
        Expr::TypedString(typed) => {
            private && super::functions::cast_target_allowed(&typed.data_type)
        }
        _ => false,
    };
    let field = |column: &Expr| -> Checked<()> {
        let name = match column {
            Expr::Identifier(ident) => super::resolve::fold(ident),
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => super::resolve::fold(&parts[1]),
            _ => return Err(deny()),
        };
        if ctx.dataset.field(&name).is_some_and(|f| f.pii) {
            return Err(pii_as_dimension(&name, "WHERE"));
        }
        Ok(())
    };
    match expr {
        Expr::Nested(inner) => check_where(resolver, inner),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            check_where(resolver, left)?;
            check_where(resolver, right)
        }
        Expr::BinaryOp { left, op, right }
            if *op == BinaryOperator::Eq
                || (private
                    && matches!(
                        op,
                        BinaryOperator::Lt
                            | BinaryOperator::LtEq
                            | BinaryOperator::Gt
                            | BinaryOperator::GtEq
                    )) =>
        {
            match (left.as_ref(), right.as_ref()) {
                (column, value) if literal(value) => field(column),
                (value, column) if literal(value) => field(column),
                _ => Err(deny()),
            }
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } if private && literal(low) && literal(high) => field(expr),
        Expr::In {
            expr,
            target: sqlparser::ast::InTarget::List(list),
            global: false,
            ..
        } if private && !list.is_empty() && list.iter().all(literal) => field(expr),
        _ => Err(deny()),
    }
}

/// ORDER BY under an aggregate ticket: output names, positions, or
/// expressions without PII (outside count).
fn check_order_by(resolver: &mut Resolver<'_>, query: &mut Query) -> Checked<()> {
    let Some(order_by) = query.order_by.as_mut() else {
        return Ok(());
    };
    let sqlparser::ast::OrderByKind::Expressions(items) = &mut order_by.kind else {
        return Ok(());
    };
    let outputs: Vec<String> = match query.body.as_ref() {
        SetExpr::Select(select) => select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(super::resolve::fold(alias)),
                SelectItem::UnnamedExpr(expr) => Some(super::resolve::output_name(expr)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for item in items.iter_mut() {
        if let Expr::Identifier(ident) = &item.expr {
            if outputs.contains(&super::resolve::fold(ident)) {
                continue;
            }
        }
        shape::check_order_item(&item.expr)?;
        let facts = resolver.expr(&mut item.expr)?;
        if let Some(pii) = facts.fields.iter().find(|f| resolver.ctx.is_pii(f)) {
            return Err(pii_as_dimension(pii, "ORDER BY"));
        }
    }
    Ok(())
}

fn pii_as_dimension(field: &str, clause: &str) -> Denial {
    Denial::forbidden(
        format!(
            "the PII field {field:?} cannot be used in {clause} under an aggregate-only ticket"
        ),
        "filtering or grouping on a PII value reveals whether that person is in the data",
        format!("count it instead: count({field})"),
    )
}
