//! Stages 4–6 for queries: resolve every name through the scope tree
//! (FROM items, aliases, CTEs, derived tables, LATERAL, set operations,
//! subqueries), check each reference against the ticket's scope, and
//! substitute every governed table by a derived table that projects only
//! the allowed fields and applies the row filters — all on the AST.
//!
//! Anything this walker does not model is denied (0A000); a reference to a
//! field outside the scope is denied (42501), except a select-list item of
//! the outermost query that reads only forbidden fields: that is dropped.

use std::collections::BTreeSet;

use sqlparser::ast::{
    Cte, Distinct, Expr, GroupByExpr, LimitClause, OrderByKind, Query, Select, SelectFlavor,
    SetExpr, Values,
};

use super::denial::{Checked, Denial};
pub(super) use super::names::{
    builtin_function_name, exact_output_name, fold, object_name_parts, output_name,
};
use super::GuardContext;

/// A column visible to name resolution, with the dataset fields it was
/// computed from (its provenance).
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub name: String,
    pub fields: BTreeSet<String>,
}

/// One FROM item as name resolution sees it.
#[derive(Debug, Clone)]
pub(super) struct Relation {
    pub name: String,
    pub columns: Vec<Column>,
}

impl Relation {
    /// The dataset itself: every catalog field, each its own provenance
    /// (what the scope allows is checked where a column is used).
    pub fn governed(ctx: &GuardContext<'_>, name: String) -> Relation {
        Relation {
            name,
            columns: ctx
                .dataset
                .fields
                .iter()
                .map(|f| Column {
                    name: f.name.clone(),
                    fields: BTreeSet::from([f.name.clone()]),
                })
                .collect(),
        }
    }
}

/// The walker's state for one statement.
pub(super) struct Resolver<'a> {
    pub ctx: &'a GuardContext<'a>,
    /// FROM scopes, innermost last (outer ones serve correlated references).
    pub scopes: Vec<Vec<Relation>>,
    /// Visible CTEs, innermost last.
    pub ctes: Vec<(String, Vec<Column>)>,
    /// Select-list items dropped from the outermost query (their text).
    pub dropped: Vec<String>,
    /// Base tables referenced (schema.name), for the second parser's check.
    pub relations: BTreeSet<String>,
    /// Dataset fields the answer reads.
    pub fields_read: BTreeSet<String>,
    /// Nesting depth of queries (0 = the statement itself).
    pub depth: usize,
    /// How many references to the dataset were replaced by derived tables.
    pub substitutions: usize,
    /// Names of later siblings in a WITH RECURSIVE being analysed.
    pub(super) forward_ctes: Vec<String>,
    /// Trial analyses of recursive terms left for this statement: nested
    /// recursive CTEs would otherwise multiply them.
    pub(super) trial_budget: usize,
    /// The FROM items of the select that finished last: ORDER BY of the
    /// query around it resolves against them.
    pub(super) last_select_relations: Vec<Relation>,
}

impl<'a> Resolver<'a> {
    pub fn new(ctx: &'a GuardContext<'a>) -> Resolver<'a> {
        Resolver {
            ctx,
            scopes: Vec::new(),
            ctes: Vec::new(),
            dropped: Vec::new(),
            relations: BTreeSet::new(),
            fields_read: BTreeSet::new(),
            depth: 0,
            substitutions: 0,
            forward_ctes: Vec::new(),
            trial_budget: MAX_RECURSIVE_TRIALS,
            last_select_relations: Vec::new(),
        }
    }

    /// Resolves, checks and rewrites a query; returns its output columns.
    pub fn query(&mut self, query: &mut Query) -> Checked<Vec<Column>> {
        if !query.locks.is_empty() {
            return Err(Denial::forbidden(
                "row locks (FOR UPDATE/SHARE) are not allowed",
                "sessions through esq are read-only",
                "remove the FOR UPDATE clause",
            ));
        }
        if query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return Err(Denial::unsupported(
                "this query clause",
                "use plain SELECT syntax",
            ));
        }
        let ctes_before = self.ctes.len();
        self.depth += 1;
        let result = super::grow_stack(|| self.query_inner(query));
        self.depth -= 1;
        self.ctes.truncate(ctes_before);
        result
    }

    fn query_inner(&mut self, query: &mut Query) -> Checked<Vec<Column>> {
        if let Some(with) = query.with.as_mut() {
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| fold(&c.alias.name))
                .collect();
            for (i, cte) in with.cte_tables.iter_mut().enumerate() {
                // WITH RECURSIVE lets a CTE see siblings defined after it;
                // esq resolves in order, so such a name is refused.
                let later = if with.recursive {
                    names[i + 1..].to_vec()
                } else {
                    Vec::new()
                };
                let before = self.forward_ctes.len();
                self.forward_ctes.extend(later);
                let result = self.cte(cte, with.recursive);
                self.forward_ctes.truncate(before);
                result?;
            }
        }
        let outermost = self.depth == 1;
        let columns = self.set_expr(&mut query.body, outermost)?;
        let body_relations = match query.body.as_ref() {
            SetExpr::Select(_) => Some(std::mem::take(&mut self.last_select_relations)),
            _ => None,
        };
        if let Some(order_by) = query.order_by.as_mut() {
            if order_by.interpolate.is_some() {
                return Err(Denial::unsupported(
                    "ORDER BY … INTERPOLATE",
                    "remove INTERPOLATE",
                ));
            }
            match &mut order_by.kind {
                OrderByKind::Expressions(items) => {
                    for item in items.iter_mut() {
                        if item.with_fill.is_some() {
                            return Err(Denial::unsupported("WITH FILL", "remove WITH FILL"));
                        }
                        self.order_item(&mut item.expr, &columns, body_relations.as_ref())?;
                    }
                }
                OrderByKind::All(_) => {
                    return Err(Denial::unsupported("ORDER BY ALL", "name the sort columns"))
                }
            }
        }
        if let Some(limit) = query.limit_clause.as_ref() {
            match limit {
                LimitClause::LimitOffset {
                    limit,
                    offset,
                    limit_by,
                } => {
                    if !limit_by.is_empty() {
                        return Err(Denial::unsupported("LIMIT BY", "remove LIMIT BY"));
                    }
                    if let Some(limit) = limit {
                        require_count_literal(limit)?;
                    }
                    if let Some(offset) = offset {
                        require_count_literal(&offset.value)?;
                    }
                }
                LimitClause::OffsetCommaLimit { .. } => {
                    return Err(Denial::unsupported(
                        "LIMIT offset, count",
                        "write LIMIT n OFFSET m",
                    ))
                }
            }
        }
        if let Some(fetch) = query.fetch.as_ref() {
            if let Some(quantity) = &fetch.quantity {
                require_count_literal(quantity)?;
            }
        }
        Ok(columns)
    }

    fn cte(&mut self, cte: &mut Cte, recursive: bool) -> Checked<()> {
        if cte.from.is_some() {
            return Err(Denial::unsupported("CTE … FROM", "use a plain WITH"));
        }
        let name = fold(&cte.alias.name);
        let declared: Vec<String> = cte.alias.columns.iter().map(|c| fold(&c.name)).collect();
        let wrapped = cte.query.with.is_some()
            || cte.query.order_by.is_some()
            || cte.query.limit_clause.is_some()
            || cte.query.fetch.is_some()
            || !cte.query.locks.is_empty();
        let mut columns = match (recursive, cte.query.body.as_mut()) {
            // WITH RECURSIVE: the non-recursive term fixes the columns, then
            // the recursive term may refer to the CTE. Each term is analysed
            // (and rewritten) exactly once.
            (true, SetExpr::SetOperation { left, right, .. }) => {
                if wrapped {
                    return Err(Denial::unsupported(
                        "WITH, ORDER BY or LIMIT around a recursive CTE's terms",
                        "put them inside the terms or outside the CTE",
                    ));
                }
                let mut columns = self.set_expr(left, false)?;
                rename(&mut columns, &declared)?;
                // What the recursive term feeds back flows into its own
                // next round: find the provenance that no longer grows (on
                // copies, so the statement is rewritten once), then analyse
                // the real term with it.
                let mut settled = false;
                for _ in 0..MAX_RECURSIVE_ROUNDS {
                    if self.trial_budget == 0 {
                        return Err(Denial::unsupported(
                            "this many recursive CTE rounds in one statement",
                            "simplify the recursion",
                        ));
                    }
                    self.trial_budget -= 1;
                    let mut trial = super::grow_copy(right.as_ref());
                    let substitutions = self.substitutions;
                    self.ctes.push((name.clone(), columns.clone()));
                    let produced = self.set_expr(&mut trial, false);
                    self.ctes.pop();
                    self.substitutions = substitutions;
                    if !merge_provenance(&mut columns, produced?)? {
                        settled = true;
                        break;
                    }
                }
                if !settled {
                    return Err(Denial::unsupported(
                        "this recursive CTE (its columns' sources do not settle)",
                        "simplify the recursion",
                    ));
                }
                self.ctes.push((name.clone(), columns.clone()));
                let produced = self.set_expr(right, false);
                self.ctes.pop();
                if merge_provenance(&mut columns, produced?)? {
                    return Err(Denial::unsupported(
                        "this recursive CTE (its columns' sources do not settle)",
                        "simplify the recursion",
                    ));
                }
                columns
            }
            _ => self.query(&mut cte.query)?,
        };
        rename(&mut columns, &declared)?;
        self.ctes.push((name, columns));
        Ok(())
    }

    pub fn set_expr(&mut self, body: &mut SetExpr, outermost: bool) -> Checked<Vec<Column>> {
        super::grow_stack(|| self.set_expr_inner(body, outermost))
    }

    fn set_expr_inner(&mut self, body: &mut SetExpr, outermost: bool) -> Checked<Vec<Column>> {
        match body {
            SetExpr::Select(select) => self.select(select, outermost),
            SetExpr::Query(query) => self.query(query),
            SetExpr::SetOperation { left, right, .. } => {
                let mut left_columns = self.set_expr(left, false)?;
                let right_columns = self.set_expr(right, false)?;
                if left_columns.len() != right_columns.len() {
                    return Err(Denial::syntax(
                        "each side of a set operation must have the same number of columns",
                    ));
                }
                for (l, r) in left_columns.iter_mut().zip(right_columns) {
                    l.fields.extend(r.fields);
                }
                Ok(left_columns)
            }
            SetExpr::Values(values) => self.values(values),
            _ => Err(Denial::forbidden(
                "only SELECT queries are allowed",
                "sessions through esq are read-only",
                "use SELECT",
            )),
        }
    }

    fn values(&mut self, values: &mut Values) -> Checked<Vec<Column>> {
        let width = values.rows.first().map(|r| r.len()).unwrap_or(0);
        let mut columns: Vec<Column> = (1..=width)
            .map(|i| Column {
                name: format!("column{i}"),
                fields: BTreeSet::new(),
            })
            .collect();
        for row in values.rows.iter_mut() {
            for (i, expr) in row.iter_mut().enumerate() {
                let facts = self.expr(expr)?;
                if let Some(column) = columns.get_mut(i) {
                    column.fields.extend(facts.fields);
                }
            }
        }
        Ok(columns)
    }

    fn select(&mut self, select: &mut Select, outermost: bool) -> Checked<Vec<Column>> {
        reject_unmodelled_select_parts(select)?;
        super::postcheck::check_select_clauses(select)?;
        let mut relations = Vec::new();
        for item in select.from.iter_mut() {
            self.table_with_joins(item, &mut relations)?;
        }
        self.scopes.push(relations);
        let result = self.select_body(select, outermost);
        self.last_select_relations = self.scopes.pop().unwrap_or_default();
        result
    }

    fn select_body(&mut self, select: &mut Select, outermost: bool) -> Checked<Vec<Column>> {
        let mut positional_group_by = false;
        if let Some(selection) = select.selection.as_mut() {
            self.checked_expr(selection, "WHERE")?;
        }
        match &mut select.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(subtotals());
                }
                for expr in exprs.iter_mut() {
                    if matches!(
                        expr,
                        Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_)
                    ) {
                        return Err(subtotals());
                    }
                    if matches!(expr, Expr::Value(_)) {
                        positional_group_by = true;
                    }
                    self.checked_expr(expr, "GROUP BY")?;
                }
            }
            GroupByExpr::All(_) => {
                return Err(Denial::unsupported(
                    "GROUP BY ALL",
                    "name the grouping columns",
                ))
            }
        }
        if let Some(having) = select.having.as_mut() {
            self.checked_expr(having, "HAVING")?;
        }
        if let Some(Distinct::On(exprs)) = select.distinct.as_mut() {
            for expr in exprs.iter_mut() {
                self.checked_expr(expr, "DISTINCT ON")?;
            }
        }
        let columns = self.projection(select, outermost)?;
        if positional_group_by && outermost {
            self.ordinal_ok()?;
        }
        Ok(columns)
    }

    /// ORDER BY may name an output column, a position, or an expression
    /// over the FROM items of the query's select.
    fn order_item(
        &mut self,
        expr: &mut Expr,
        outputs: &[Column],
        relations: Option<&Vec<Relation>>,
    ) -> Checked<()> {
        if let Expr::Identifier(ident) = expr {
            let name = fold(ident);
            if let Some(column) = outputs.iter().find(|c| c.name == name) {
                let fields = column.fields.clone();
                return self.check_fields(&fields, "ORDER BY");
            }
        }
        if let Expr::Value(v) = expr {
            if let sqlparser::ast::Value::Number(_, _) = v.value {
                return self.ordinal_ok();
            }
        }
        let Some(relations) = relations else {
            return Err(Denial::unsupported(
                "ORDER BY expressions on a set operation",
                "order by output column names",
            ));
        };
        self.scopes.push(relations.clone());
        let result = self.checked_expr(expr, "ORDER BY");
        self.scopes.pop();
        result
    }

    /// A position (ORDER BY 1, GROUP BY 1) would point at another column
    /// once forbidden items were dropped.
    fn ordinal_ok(&self) -> Checked<()> {
        if self.dropped.is_empty() || self.depth > 1 {
            return Ok(());
        }
        Err(Denial::forbidden(
            "positions in ORDER BY / GROUP BY are ambiguous after esq dropped select items",
            format!("dropped: {}", self.dropped.join(", ")),
            "name the columns instead of numbering them, and select only allowed fields",
        ))
    }

    /// Walks an expression and requires every field it reads to be allowed.
    pub fn checked_expr(&mut self, expr: &mut Expr, clause: &str) -> Checked<()> {
        let facts = self.expr(expr)?;
        self.check_fields(&facts.fields, clause)
    }

    pub fn check_fields(&mut self, fields: &BTreeSet<String>, clause: &str) -> Checked<()> {
        if let Some(forbidden) = fields.iter().find(|f| !self.ctx.allows(f)) {
            return Err(self.ctx.forbidden_field(forbidden, clause));
        }
        self.fields_read.extend(fields.iter().cloned());
        Ok(())
    }
}

fn reject_unmodelled_select_parts(select: &Select) -> Checked<()> {
    let unmodelled = !select.optimizer_hints.is_empty()
        || select.select_modifiers.is_some()
        || select.top.is_some()
        || select.exclude.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || !select.named_window.is_empty()
        || select.qualify.is_some()
        || select.value_table_mode.is_some()
        || !matches!(select.flavor, SelectFlavor::Standard);
    if unmodelled {
        return Err(Denial::unsupported(
            "this SELECT clause (TOP, QUALIFY, WINDOW, CONNECT BY…)",
            "use plain SELECT … FROM … WHERE … GROUP BY … HAVING …",
        ));
    }
    Ok(())
}

/// Rounds of provenance propagation through a recursive CTE: each round can
/// only add fields, so this bounds them well above any real query.
const MAX_RECURSIVE_ROUNDS: usize = 16;

/// Trial analyses of recursive terms per statement, all CTEs together.
const MAX_RECURSIVE_TRIALS: usize = 48;

/// Adds `produced`'s fields to `columns` position by position; `true` when
/// anything was added.
fn merge_provenance(columns: &mut [Column], produced: Vec<Column>) -> Checked<bool> {
    if produced.len() != columns.len() {
        return Err(Denial::syntax(
            "each side of a set operation must have the same number of columns",
        ));
    }
    let mut grew = false;
    for (column, more) in columns.iter_mut().zip(produced) {
        for field in more.fields {
            grew |= column.fields.insert(field);
        }
    }
    Ok(grew)
}

pub(super) fn rename(columns: &mut [Column], declared: &[String]) -> Checked<()> {
    if declared.len() > columns.len() {
        return Err(Denial::syntax("more column aliases than columns"));
    }
    for (column, name) in columns.iter_mut().zip(declared) {
        column.name = name.clone();
    }
    Ok(())
}

fn require_count_literal(expr: &Expr) -> Checked<()> {
    match expr {
        Expr::Value(v)
            if matches!(
                v.value,
                sqlparser::ast::Value::Number(_, _)
                    | sqlparser::ast::Value::Placeholder(_)
                    | sqlparser::ast::Value::Null
            ) =>
        {
            Ok(())
        }
        _ => Err(Denial::unsupported(
            "LIMIT/OFFSET expressions",
            "use a number",
        )),
    }
}

fn subtotals() -> Denial {
    Denial::forbidden(
        "GROUPING SETS, ROLLUP and CUBE are not allowed",
        "subtotals let small groups be recovered by subtraction",
        "group by the fields themselves and add the totals up yourself",
    )
}

pub(super) fn whole_row(what: &str) -> Denial {
    Denial::forbidden(
        format!("whole-row references are not allowed ({what})"),
        "a whole row can carry fields your ticket does not allow",
        "name the columns you need",
    )
}

pub(super) fn unknown_relation(name: &str) -> Denial {
    Denial::forbidden(
        format!("unknown table or alias {name:?}"),
        "every name must resolve to the ticket's dataset, a CTE or a subquery",
        "check the alias",
    )
}
