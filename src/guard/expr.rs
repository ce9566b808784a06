//! Expressions: every identifier is bound to a column of a FROM item (and
//! so to the dataset fields it derives from); functions, operators and casts
//! must be on the allowlists; PII fields may only be passed to `count`;
//! whole-row references are denied. Unmodelled expression kinds are denied.
//! The operator spellings of LIKE (`~~`, `!~~`, `~~*`, `!~~*`) are read
//! exactly as LIKE, NOT LIKE, ILIKE and NOT ILIKE, with single-term
//! operands (the two parsers rank these operators differently). Denials of
//! esq's own allowlists are marked as such: they name no ticket policy.

use std::collections::BTreeSet;

use sqlparser::ast::{
    BinaryOperator, CastKind, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
    Ident, InTarget, ObjectNamePart, Value, WindowFrameBound, WindowType,
};

use super::denial::{Checked, Denial};
use super::functions::{self, FunctionKind};
use super::resolve::{fold, whole_row, Resolver};

/// What an expression reads and contains.
#[derive(Debug, Clone, Default)]
pub(super) struct Facts {
    /// Dataset fields whose values flow into the expression's value.
    pub fields: BTreeSet<String>,
    pub has_aggregate: bool,
    pub has_window: bool,
    pub has_subquery: bool,
}

impl Facts {
    fn merge(&mut self, other: Facts) {
        self.fields.extend(other.fields);
        self.has_aggregate |= other.has_aggregate;
        self.has_window |= other.has_window;
        self.has_subquery |= other.has_subquery;
    }
}

impl Resolver<'_> {
    pub fn expr(&mut self, expr: &mut Expr) -> Checked<Facts> {
        self.expr_in(expr, false)
    }

    /// `in_function`: the value is an argument of a function, operator on
    /// text, or cast, where PII may not go.
    fn expr_in(&mut self, expr: &mut Expr, in_function: bool) -> Checked<Facts> {
        // A long `a OR b OR …` chain is a tree as deep as it is long: grow
        // the stack instead of overflowing a small (tokio) thread stack.
        super::grow_stack(|| self.expr_in_inner(expr, in_function))
    }

    fn expr_in_inner(&mut self, expr: &mut Expr, in_function: bool) -> Checked<Facts> {
        let mut facts = Facts::default();
        match expr {
            Expr::Identifier(ident) => {
                facts.fields = self.column(None, ident, in_function)?;
            }
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [relation, column] => {
                    let relation = fold(relation);
                    facts.fields = self.column(Some(&relation), column, in_function)?;
                }
                [schema, relation, _]
                    if fold(schema) == self.ctx.dataset.table.schema
                        && fold(relation) == self.ctx.dataset.table.name =>
                {
                    // schema.table.column: the derived table keeps the table's
                    // name as its alias, so drop the schema.
                    parts.remove(0);
                    let relation = fold(&parts[0]);
                    facts.fields = self.column(Some(&relation), &parts[1].clone(), in_function)?;
                }
                _ => {
                    return Err(Denial::unsupported(
                        "names with more than two parts",
                        "write alias.column",
                    ))
                }
            },
            Expr::Value(value) => check_literal(&value.value)?,
            Expr::TypedString(typed) => {
                if !functions::cast_target_allowed(&typed.data_type) {
                    return Err(Denial::unsupported(
                        format!("typed literals of type {}", typed.data_type),
                        "use a plain literal",
                    ));
                }
            }
            Expr::Interval(interval) => {
                facts.merge(self.expr_in(&mut interval.value, true)?);
            }
            Expr::Nested(inner) => facts.merge(self.expr_in(inner, in_function)?),
            Expr::BinaryOp { left, op, right } if is_like_operator(op) => {
                // `~~`, `!~~`, `~~*`, `!~~*`: LIKE, NOT LIKE, ILIKE, NOT ILIKE.
                check_like_operands(left, right)?;
                facts.merge(self.expr_in(left, in_function)?);
                facts.merge(self.expr_in(right, in_function)?);
            }
            Expr::BinaryOp { left, op, right } => {
                if !functions::binary_operator_allowed(op) {
                    return Err(Denial::forbidden(
                        format!("operator {op} is not allowed"),
                        "only comparison, arithmetic, AND/OR and || are allowlisted",
                        "rewrite the condition with =, <, >, AND, OR",
                    )
                    .by_esq_rule());
                }
                // Comparisons keep PII as is; arithmetic and || compute on it.
                let computes = matches!(
                    op,
                    sqlparser::ast::BinaryOperator::Plus
                        | sqlparser::ast::BinaryOperator::Minus
                        | sqlparser::ast::BinaryOperator::Multiply
                        | sqlparser::ast::BinaryOperator::Divide
                        | sqlparser::ast::BinaryOperator::Modulo
                        | sqlparser::ast::BinaryOperator::StringConcat
                );
                facts.merge(self.expr_in(left, in_function || computes)?);
                facts.merge(self.expr_in(right, in_function || computes)?);
            }
            Expr::UnaryOp { op, expr } => {
                if !functions::unary_operator_allowed(op) {
                    return Err(Denial::forbidden(
                        format!("operator {op} is not allowed"),
                        "only NOT and signs are allowlisted",
                        "remove the operator",
                    )
                    .by_esq_rule());
                }
                // A sign computes on its operand; NOT tests it.
                let computes = !matches!(op, sqlparser::ast::UnaryOperator::Not);
                facts.merge(self.expr_in(expr, in_function || computes)?);
            }
            Expr::IsNull(e)
            | Expr::IsNotNull(e)
            | Expr::IsTrue(e)
            | Expr::IsNotTrue(e)
            | Expr::IsFalse(e)
            | Expr::IsNotFalse(e) => facts.merge(self.expr_in(e, in_function)?),
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                facts.merge(self.expr_in(a, in_function)?);
                facts.merge(self.expr_in(b, in_function)?);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                facts.merge(self.expr_in(expr, in_function)?);
                facts.merge(self.expr_in(low, in_function)?);
                facts.merge(self.expr_in(high, in_function)?);
            }
            Expr::In {
                expr,
                target,
                global: false,
                ..
            } => {
                facts.merge(self.expr_in(expr, in_function)?);
                match target {
                    InTarget::List(list) => {
                        for item in list.iter_mut() {
                            facts.merge(self.expr_in(item, in_function)?);
                        }
                    }
                    InTarget::Subquery(subquery) => {
                        facts.merge(self.subquery(subquery, in_function)?)
                    }
                    _ => {
                        return Err(Denial::unsupported(
                            "IN UNNEST / IN table",
                            "use IN (list) or IN (subquery)",
                        ))
                    }
                }
            }
            Expr::Like {
                any,
                expr,
                pattern,
                escape_char,
                ..
            }
            | Expr::ILike {
                any,
                expr,
                pattern,
                escape_char,
                ..
            } => {
                if *any || escape_char.is_some() {
                    return Err(Denial::unsupported("LIKE ANY / ESCAPE", "use a plain LIKE"));
                }
                facts.merge(self.expr_in(expr, in_function)?);
                facts.merge(self.expr_in(pattern, in_function)?);
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                if let Some(operand) = operand {
                    facts.merge(self.expr_in(operand, in_function)?);
                }
                for when in conditions.iter_mut() {
                    facts.merge(self.expr_in(&mut when.condition, in_function)?);
                    facts.merge(self.expr_in(&mut when.result, in_function)?);
                }
                if let Some(else_result) = else_result {
                    facts.merge(self.expr_in(else_result, in_function)?);
                }
            }
            Expr::Cast {
                kind,
                expr,
                data_type,
                format,
                ..
            } => {
                if !matches!(kind, CastKind::Cast | CastKind::DoubleColon) || format.is_some() {
                    return Err(Denial::unsupported("this cast", "use CAST(x AS type)"));
                }
                if !functions::cast_target_allowed(data_type) {
                    return Err(Denial::forbidden(
                        format!("casts to {data_type} are not allowed"),
                        "only plain scalar types are allowlisted (a cast to text, regclass or a row type can expose data)",
                        "cast to int, numeric, text, date or timestamp",
                    ).by_esq_rule());
                }
                facts.merge(self.expr_in(expr, true)?);
            }
            Expr::Extract { expr, .. } => facts.merge(self.expr_in(expr, true)?),
            Expr::Function(function) => facts.merge(self.function(function, in_function)?),
            Expr::Exists { subquery, .. } => {
                let inner = self.subquery(subquery, false)?;
                facts.has_subquery = true;
                facts.has_aggregate |= inner.has_aggregate;
            }
            Expr::Subquery(query) => facts.merge(self.subquery(query, in_function)?),
            Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_) => {
                return Err(Denial::forbidden(
                    "GROUPING SETS, ROLLUP and CUBE are not allowed",
                    "subtotals let small groups be recovered by subtraction",
                    "group by the fields themselves",
                )
                .by_esq_rule())
            }
            Expr::Wildcard(_) | Expr::QualifiedWildcard(_, _) => {
                return Err(whole_row("* inside an expression"))
            }
            _ => {
                return Err(Denial::unsupported(
                    "this kind of expression",
                    "use columns, literals, comparisons, CASE and allowlisted functions",
                ))
            }
        }
        Ok(facts)
    }

    /// A subquery's values flow into the expression around it: where that is
    /// a function, cast or arithmetic, PII coming out of the subquery is as
    /// forbidden as a PII column written there directly.
    fn subquery(&mut self, query: &mut sqlparser::ast::Query, in_function: bool) -> Checked<Facts> {
        if self.ctx.scope.aggregate.is_some() {
            return Err(Denial::unsupported(
                "subqueries under an aggregate-only ticket",
                "write one grouped SELECT over the dataset",
            ));
        }
        let columns = self.query(query)?;
        let mut facts = Facts {
            has_subquery: true,
            ..Facts::default()
        };
        for column in columns {
            facts.fields.extend(column.fields);
        }
        if in_function {
            if let Some(pii) = facts.fields.iter().find(|f| self.ctx.is_pii(f)) {
                return Err(Denial::forbidden(
                    format!(
                        "functions, casts and arithmetic on the PII field {pii:?} are not allowed"
                    ),
                    "a subquery returning a PII value is computed on like the value itself",
                    format!("select {pii} as it is, or count it: count({pii})"),
                ));
            }
        }
        Ok(facts)
    }

    /// Binds a column reference; `relation` is the qualifier if any.
    fn column(
        &mut self,
        relation: Option<&str>,
        ident: &Ident,
        in_function: bool,
    ) -> Checked<BTreeSet<String>> {
        let name = fold(ident);
        let mut found: Option<BTreeSet<String>> = None;
        'scopes: for relations in self.scopes.iter().rev() {
            let mut matches = relations
                .iter()
                .filter(|r| relation.is_none_or(|q| r.name == q))
                .flat_map(|r| r.columns.iter().filter(|c| c.name == name));
            if let Some(first) = matches.next() {
                if matches.next().is_some() {
                    return Err(Denial::forbidden(
                        format!("column reference {name:?} is ambiguous"),
                        "more than one FROM item has a column of that name",
                        "qualify it with the table alias",
                    )
                    .by_esq_rule());
                }
                found = Some(first.fields.clone());
                break 'scopes;
            }
            if relation.is_some_and(|q| relations.iter().any(|r| r.name == q)) {
                break 'scopes;
            }
        }
        let Some(fields) = found else {
            // A bare relation name used as a value is a whole-row reference.
            if relation.is_none() && self.scopes.iter().flatten().any(|r| r.name == name) {
                return Err(whole_row(&format!("{name} used as a value")));
            }
            return Err(self.ctx.unknown_column(relation, &name));
        };
        if in_function {
            if let Some(pii) = fields.iter().find(|f| self.ctx.is_pii(f)) {
                return Err(Denial::forbidden(
                    format!("functions, casts and arithmetic on the PII field {pii:?} are not allowed"),
                    "a function of a PII value can reveal it (error messages, timing, partial matches)",
                    format!("select {pii} as it is, or count it: count({pii})"),
                ));
            }
        }
        Ok(fields)
    }

    fn function(&mut self, function: &mut Function, in_function: bool) -> Checked<Facts> {
        let name = function_name(function)?;
        let kind = functions::lookup(&name).ok_or_else(|| {
            Denial::forbidden(
                format!("function {name}() is not allowed"),
                "only allowlisted functions run through esq (no I/O, settings, SQL-as-text or sleeping)",
                format!(
                    "allowlisted: {}",
                    functions::allowed_names().collect::<Vec<_>>().join(", ")
                ),
            )
            .by_esq_rule()
        })?;
        if function.uses_odbc_syntax
            || !matches!(function.parameters, FunctionArguments::None)
            || function.null_treatment.is_some()
            || !function.within_group.is_empty()
            || function.filter.is_some()
        {
            return Err(Denial::unsupported(
                "FILTER, WITHIN GROUP and other function modifiers",
                "call the function plainly",
            ));
        }
        let aggregate_scope = self.ctx.scope.aggregate.is_some();
        let mut facts = Facts::default();
        match kind {
            FunctionKind::Aggregate => {
                if aggregate_scope && name != "count" {
                    return Err(Denial::forbidden(
                        format!("{name}() is not allowed under a count-only ticket"),
                        "your ticket allows count aggregates only",
                        "use count(*) or count(field)",
                    ));
                }
                facts.has_aggregate = true;
            }
            FunctionKind::Window if function.over.is_none() => {
                return Err(Denial::syntax(format!("{name}() needs an OVER clause")));
            }
            _ => {}
        }
        if let Some(over) = function.over.as_mut() {
            if aggregate_scope {
                return Err(Denial::forbidden(
                    "window functions are not allowed under an aggregate-only ticket",
                    "window functions return per-row values",
                    "use GROUP BY",
                ));
            }
            let WindowType::WindowSpec(spec) = over else {
                return Err(Denial::unsupported(
                    "named windows",
                    "write OVER (…) inline",
                ));
            };
            if spec.window_name.is_some() {
                return Err(Denial::unsupported(
                    "named windows",
                    "write OVER (…) inline",
                ));
            }
            for expr in spec.partition_by.iter_mut() {
                facts.merge(self.expr_in(expr, true)?);
            }
            for item in spec.order_by.iter_mut() {
                facts.merge(self.expr_in(&mut item.expr, true)?);
            }
            if let Some(frame) = &spec.window_frame {
                check_frame_bound(&frame.start_bound)?;
                if let Some(end) = &frame.end_bound {
                    check_frame_bound(end)?;
                }
            }
            facts.has_window = true;
        }
        let is_count = name == "count";
        match &mut function.args {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(_) => {
                return Err(Denial::unsupported(
                    "a subquery as function argument",
                    "use a scalar subquery",
                ))
            }
            FunctionArguments::List(list) => {
                if !list.clauses.is_empty() {
                    return Err(Denial::unsupported(
                        "clauses inside function arguments (ORDER BY, LIMIT…)",
                        "call the function plainly",
                    ));
                }
                if list.duplicate_treatment.is_some() && kind != FunctionKind::Aggregate {
                    return Err(Denial::syntax("DISTINCT is only for aggregates"));
                }
                for arg in list.args.iter_mut() {
                    match arg {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => {
                            if is_count
                                && aggregate_scope
                                && !super::aggregate_shape::plain_column(expr)
                            {
                                return Err(Denial::forbidden(
                                    "under an aggregate-only ticket count() takes * or a column",
                                    "count(CASE …) or count(expression) can count a sub-group smaller than k",
                                    "filter with WHERE field = value, or group by the field",
                                ));
                            }
                            // count(pii) reveals no value; anything else might.
                            let pass_pii = is_count && !in_function;
                            facts.merge(self.expr_in(expr, !pass_pii)?);
                        }
                        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if is_count => {}
                        FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(_)) => {
                            return Err(whole_row("alias.* as a function argument"))
                        }
                        _ => {
                            return Err(Denial::unsupported(
                                "named or wildcard function arguments",
                                "pass plain expressions",
                            ))
                        }
                    }
                }
            }
        }
        // An aggregate's value does not carry the PII it counted — but what
        // it counts must still be allowed.
        if is_count {
            if let Some(forbidden) = facts.fields.iter().find(|f| !self.ctx.allows(f)) {
                return Err(self.ctx.forbidden_field(forbidden, "count()"));
            }
            self.fields_read
                .extend(facts.fields.iter().filter(|f| !self.ctx.is_pii(f)).cloned());
            facts.fields.retain(|f| !self.ctx.is_pii(f));
        }
        Ok(facts)
    }
}

/// Window frame bounds are `CURRENT ROW`, `UNBOUNDED` or a number: an
/// expression there (a subquery!) would run outside every other check.
fn check_frame_bound(bound: &WindowFrameBound) -> Checked<()> {
    match bound {
        WindowFrameBound::CurrentRow
        | WindowFrameBound::Preceding(None)
        | WindowFrameBound::Following(None) => Ok(()),
        WindowFrameBound::Preceding(Some(expr)) | WindowFrameBound::Following(Some(expr)) if matches!(expr.as_ref(), Expr::Value(v) if matches!(v.value, Value::Number(_, _))) => {
            Ok(())
        }
        _ => Err(Denial::forbidden(
            "window frame bounds must be numbers",
            "an expression in a frame bound would be evaluated outside the guard's checks",
            "write ROWS BETWEEN 3 PRECEDING AND CURRENT ROW",
        )
        .by_esq_rule()),
    }
}

/// The folded function name; only `pg_catalog.` may qualify it.
fn function_name(function: &Function) -> Checked<String> {
    let parts: Vec<String> = function
        .name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(ident) => Ok(fold(ident)),
            ObjectNamePart::Function(_) => Err(Denial::unsupported(
                "computed function names",
                "name the function",
            )),
        })
        .collect::<Checked<_>>()?;
    match parts.as_slice() {
        [name] => Ok(name.clone()),
        [schema, name] if schema == "pg_catalog" => Ok(name.clone()),
        _ => Err(Denial::forbidden(
            format!("function {} is not allowed", parts.join(".")),
            "functions outside pg_catalog may be user-defined and do anything",
            "use an allowlisted built-in function",
        )
        .by_esq_rule()),
    }
}

/// The operator spellings of LIKE: PostgreSQL's LIKE is these operators.
fn is_like_operator(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::PGLikeMatch
            | BinaryOperator::PGNotLikeMatch
            | BinaryOperator::PGILikeMatch
            | BinaryOperator::PGNotILikeMatch
    )
}

/// sqlparser gives `~~` the precedence of `=`; PostgreSQL gives it that of
/// any other operator (above `=`, `<`, LIKE, BETWEEN and IN, level with
/// `||`). So `a ~~ b || c` or `a = b ~~ c` would be grouped differently by
/// the two: the operands of `~~` must be single terms (a column, a
/// literal, a call, a cast, a CASE or a parenthesised expression), which
/// both group alike.
fn check_like_operands(left: &Expr, right: &Expr) -> Checked<()> {
    let single = |e: &Expr| {
        matches!(
            e,
            Expr::Identifier(_)
                | Expr::CompoundIdentifier(_)
                | Expr::Value(_)
                | Expr::TypedString(_)
                | Expr::Function(_)
                | Expr::Nested(_)
                | Expr::Cast { .. }
                | Expr::Case { .. }
                | Expr::Subquery(_)
        )
    };
    if single(left) && single(right) {
        Ok(())
    } else {
        Err(Denial::unsupported(
            "an operator expression beside ~~, !~~, ~~* or !~~* without parentheses (PostgreSQL groups it differently)",
            "put the operand in parentheses, e.g. (a || b) ~~ 'x%', or write LIKE",
        ))
    }
}

fn check_literal(value: &Value) -> Checked<()> {
    match value {
        Value::Number(_, _)
        | Value::SingleQuotedString(_)
        // N'…' was checked against PostgreSQL's reading (see `literals`).
        | Value::NationalStringLiteral(_)
        | Value::Boolean(_)
        | Value::Null
        | Value::Placeholder(_) => Ok(()),
        // `literals` spells these as plain strings once PostgreSQL's
        // reading confirms them: one left here was not confirmed.
        Value::EscapedStringLiteral(_)
        | Value::DollarQuotedString(_)
        | Value::UnicodeStringLiteral(_) => Err(Denial::unsupported(
            "this string constant (its reading was not confirmed)",
            "use a plain 'quoted' string",
        )),
        _ => Err(Denial::unsupported(
            "this kind of literal",
            "use a plain literal",
        )),
    }
}
