//! Metadata introspection: statements that read only allowlisted system
//! catalogs (what psql's `\d`, drivers and BI tools send) or no table at all
//! (`SELECT version()`). These hold no dataset values, so they are checked
//! with PostgreSQL's own reading of the text that will run: every table,
//! function, operator and cast type must be on the allowlists
//! (`metadata_lists.rs`). Value-bearing catalogs (`pg_stats`,
//! `pg_statistic`, `pg_stat_activity`, `pg_authid`, `pg_settings`, large
//! objects…) are not on them. Statistics and role-name columns are refused
//! by name in both readings (`metadata_pg.rs` checks PostgreSQL's reading
//! of the forwarded text), and a `*` only where it covers none
//! (`metadata_star.rs`); the driver APIs' index statistics are answered as
//! unknown (`metadata_statistics.rs`).

use std::ops::ControlFlow;

use pg_query::NodeRef;
use std::collections::{BTreeMap, BTreeSet};

use sqlparser::ast::{
    BinaryOperator, Expr, ObjectName, Query, Statement, TableFactor, Visit, Visitor,
};

use super::denial::{Checked, Denial};
use super::functions;
use super::metadata_lists::{
    FUNCTIONS, OPERATORS, QUALIFIED_FUNCTIONS, RELATIONS, ROLE_COLUMNS, STATISTICS_COLUMNS,
    TABLE_FUNCTIONS, WIDE_CATALOGS,
};

/// Catalog names as PostgreSQL resolves them: `pg_catalog` is searched
/// first, so an unqualified `pg_class` is `pg_catalog.pg_class`.
pub(super) fn qualify(table: &str) -> String {
    if table.contains('.') {
        table.to_string()
    } else {
        let in_catalog = format!("pg_catalog.{table}");
        if RELATIONS.contains(&in_catalog.as_str()) || table.starts_with("pg_") {
            in_catalog
        } else {
            format!("public.{table}")
        }
    }
}

pub(super) fn is_metadata_relation(qualified: &str) -> bool {
    RELATIONS.contains(&qualified)
}

/// Checks esq's reading: every relation sqlparser sees (CTE names
/// included) is an allowlisted catalog, and every FROM item is a plain
/// relation, a subquery or a join. Both parsers must find only catalogs:
/// neither parser's walker alone is trusted to see every table.
pub(super) fn check_statements(statements: &[Statement]) -> Checked<()> {
    #[derive(Default)]
    struct Relations {
        /// Names and aliases of FROM items.
        relation_names: BTreeSet<String>,
        /// Bare identifiers used as values, with how often each appears.
        bare_identifiers: BTreeMap<String, usize>,
        /// How often each name appears as a qualifier or a field name in
        /// a field access (`i.indkey[1]`, `(f(x)).n`): such a use reads no
        /// whole row, but esq's parser visits it as a bare identifier.
        field_access_names: BTreeMap<String, usize>,
        reads_wide_catalog: bool,
        /// A `*` outside a select list (`f(c.*)`), which is not followed.
        has_wildcard: bool,
        /// The next relation name is a table function's (set by the FROM item).
        table_function_next: bool,
    }
    impl Visitor for Relations {
        type Break = Denial;

        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<Denial> {
            let parts: Vec<String> = match super::resolve::object_name_parts(relation) {
                Ok(parts) => parts,
                Err(denial) => return ControlFlow::Break(denial),
            };
            let table_function = std::mem::take(&mut self.table_function_next);
            let qualified = match parts.as_slice() {
                // Functions resolve in pg_catalog first, as scalar calls do.
                [name] if table_function => format!("pg_catalog.{name}"),
                [name] => qualify(name),
                [schema, name] => format!("{schema}.{name}"),
                _ => parts.join("."),
            };
            if let Some(last) = parts.last() {
                self.relation_names.insert(last.clone());
            }
            self.reads_wide_catalog |= WIDE_CATALOGS.contains(&qualified.as_str());
            if table_function {
                return if TABLE_FUNCTIONS.contains(&qualified.as_str()) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(Denial::forbidden(
                        format!("function {qualified}() is not allowed in the FROM clause of catalog queries"),
                        "table functions can read anything",
                        "select from catalog relations",
                    ))
                };
            }
            if is_metadata_relation(&qualified) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(not_a_catalog(&qualified))
            }
        }

        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Denial> {
            match factor {
                TableFactor::Table {
                    args: None,
                    sample: None,
                    version: None,
                    alias,
                    ..
                }
                | TableFactor::Derived {
                    sample: None,
                    alias,
                    ..
                } => {
                    if let Some(alias) = alias {
                        if !alias.columns.is_empty() {
                            // `pg_class AS x(a, b, …)` renames reltuples.
                            return ControlFlow::Break(statistics(
                                "a column list on a catalog alias",
                            ));
                        }
                        self.relation_names
                            .insert(super::resolve::fold(&alias.name));
                    }
                    ControlFlow::Continue(())
                }
                TableFactor::NestedJoin {
                    table_with_joins, ..
                } => match check_joins_by_name(&table_with_joins.joins) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(denial) => ControlFlow::Break(denial),
                },
                TableFactor::Table {
                    args: Some(_),
                    sample: None,
                    version: None,
                    with_ordinality: false,
                    alias,
                    ..
                } => {
                    // Its alias used as a value is the function's own
                    // output (an integer), not a catalog row; naming its
                    // column (`AS s(r)`, pgJDBC's getTypeInfo) renames an
                    // integer — but not with a type, nor to a statistic's
                    // or an access list's name.
                    for column in alias.iter().flat_map(|a| &a.columns) {
                        if column.data_type.is_some() {
                            return ControlFlow::Break(Denial::forbidden(
                                "column definitions on a table function are not allowed",
                                "only generate_series is allowed in FROM, and it returns integers",
                                "leave out the column types",
                            ));
                        }
                        if let Err(denial) = check_column_name(&super::resolve::fold(&column.name))
                        {
                            return ControlFlow::Break(denial);
                        }
                    }
                    self.table_function_next = true;
                    ControlFlow::Continue(())
                }
                _ => ControlFlow::Break(Denial::forbidden(
                    "this FROM item is not allowed in catalog queries",
                    "table functions, samples and other FROM items can read anything",
                    "select from catalog relations",
                )),
            }
        }

        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Denial> {
            // Every function, wherever it stands: pg_query's own walker does
            // not see functions in OVER, FILTER, DISTINCT ON, LIMIT or frame
            // bounds.
            if let Expr::Function(function) = expr {
                let name = super::resolve::builtin_function_name(function);
                if !name.as_deref().is_some_and(function_allowed)
                    && !is_qualified_function(&function.name)
                {
                    return ControlFlow::Break(Denial::forbidden(
                        format!("function {}() is not allowed in catalog queries", function.name),
                        "only metadata functions (descriptions, visibility, formatting) are allowlisted",
                        "remove the function",
                    ));
                }
            }
            // User-defined operators can run any function.
            if let Expr::BinaryOp { op, .. } = expr {
                let ok = match op {
                    BinaryOperator::PGCustomBinaryOperator(parts) => {
                        matches!(
                            parts.as_slice(),
                            [schema, symbol] if schema == "pg_catalog" && OPERATORS.contains(&symbol.as_str())
                        ) || matches!(parts.as_slice(), [symbol] if OPERATORS.contains(&symbol.as_str()))
                    }
                    BinaryOperator::Custom(_) => false,
                    _ => true,
                };
                if !ok {
                    return ControlFlow::Break(Denial::forbidden(
                        format!("operator {op} is not allowed"),
                        "only built-in operators are allowlisted",
                        "use a built-in operator",
                    ));
                }
            }
            if let Expr::CompoundFieldAccess { root, access_chain } = expr {
                use sqlparser::ast::AccessExpr;
                let qualifier = match (root.as_ref(), access_chain.first()) {
                    (Expr::Identifier(ident), Some(AccessExpr::Dot(_))) => Some(ident),
                    _ => None,
                };
                let fields = access_chain.iter().filter_map(|access| match access {
                    AccessExpr::Dot(Expr::Identifier(field)) => Some(field),
                    _ => None,
                });
                for name in qualifier.into_iter().chain(fields) {
                    *self
                        .field_access_names
                        .entry(super::resolve::fold(name))
                        .or_default() += 1;
                }
            }
            let column = match expr {
                Expr::Identifier(ident) => {
                    *self
                        .bare_identifiers
                        .entry(super::resolve::fold(ident))
                        .or_default() += 1;
                    Some(ident)
                }
                Expr::CompoundIdentifier(parts) => parts.last(),
                Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => {
                    self.has_wildcard = true;
                    None
                }
                _ => None,
            };
            match column.map(super::resolve::fold) {
                Some(name) if STATISTICS_COLUMNS.contains(&name.as_str()) => {
                    ControlFlow::Break(statistics(&name))
                }
                Some(name) if ROLE_COLUMNS.contains(&name.as_str()) => {
                    ControlFlow::Break(role_names(&name))
                }
                _ => ControlFlow::Continue(()),
            }
        }

        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Denial> {
            match super::postcheck::check_query_clauses(query) {
                Ok(()) => ControlFlow::Continue(()),
                Err(denial) => ControlFlow::Break(denial),
            }
        }

        fn pre_visit_select(&mut self, select: &sqlparser::ast::Select) -> ControlFlow<Denial> {
            if let Err(denial) = super::postcheck::check_select_clauses(select)
                .and_then(|()| super::metadata_star::check_select(select))
                .and_then(|()| {
                    select
                        .from
                        .iter()
                        .try_for_each(|item| check_joins_by_name(&item.joins))
                })
            {
                return ControlFlow::Break(denial);
            }
            // An output named like a statistics column could stand in for it.
            for item in &select.projection {
                if let sqlparser::ast::SelectItem::ExprWithAlias { alias, .. } = item {
                    let name = super::resolve::fold(alias);
                    if STATISTICS_COLUMNS.contains(&name.as_str()) {
                        return ControlFlow::Break(statistics(&name));
                    }
                    if ROLE_COLUMNS.contains(&name.as_str()) {
                        return ControlFlow::Break(role_names(&name));
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut relations = Relations::default();
    for statement in statements {
        if let ControlFlow::Break(denial) = statement.visit(&mut relations) {
            return Err(denial);
        }
    }
    let bare_uses = |name: &String, uses: &usize| {
        *uses > relations.field_access_names.get(name).copied().unwrap_or(0)
    };
    if let Some((name, _)) = relations
        .bare_identifiers
        .iter()
        .filter(|(name, uses)| bare_uses(name, uses))
        .find(|(name, _)| relations.relation_names.contains(*name))
    {
        return Err(super::resolve::whole_row(&format!(
            "{name} used as a value"
        )));
    }
    if relations.reads_wide_catalog && relations.has_wildcard {
        return Err(super::metadata_star::wide_star());
    }
    Ok(())
}

/// `JOIN … USING (x)` names its columns, which are checked like any other
/// name; NATURAL compares every column of the same name without naming one.
fn check_joins_by_name(joins: &[sqlparser::ast::Join]) -> Checked<()> {
    use sqlparser::ast::JoinConstraint;
    for constraint in joins.iter().filter_map(|join| join_constraint(join)) {
        match constraint {
            JoinConstraint::On(_) | JoinConstraint::None => {}
            JoinConstraint::Using(columns) => {
                for column in columns {
                    let parts = super::names::object_name_parts(column)?;
                    parts
                        .last()
                        .map_or(Ok(()), |name| check_column_name(name))?;
                }
            }
            JoinConstraint::Natural | JoinConstraint::UsingAlias(..) => {
                return Err(Denial::forbidden(
                    "NATURAL JOIN and JOIN … USING … AS are not allowed in catalog queries",
                    "a natural join compares columns (statistics included) without naming them",
                    "write JOIN … ON a.x = b.x or JOIN … USING (x)",
                ))
            }
        }
    }
    Ok(())
}

/// A name that must not be read or made up: a statistic or an access list.
fn check_column_name(name: &str) -> Checked<()> {
    if STATISTICS_COLUMNS.contains(&name) {
        Err(statistics(name))
    } else if ROLE_COLUMNS.contains(&name) {
        Err(role_names(name))
    } else {
        Ok(())
    }
}

/// `schema.function` from [`QUALIFIED_FUNCTIONS`], written qualified.
fn is_qualified_function(name: &ObjectName) -> bool {
    super::names::object_name_parts(name).is_ok_and(|parts| {
        parts.len() == 2 && QUALIFIED_FUNCTIONS.contains(&parts.join(".").as_str())
    })
}

fn join_constraint(join: &sqlparser::ast::Join) -> Option<&sqlparser::ast::JoinConstraint> {
    use sqlparser::ast::JoinOperator;
    match &join.join_operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c)
        | JoinOperator::Semi(c)
        | JoinOperator::LeftSemi(c)
        | JoinOperator::RightSemi(c)
        | JoinOperator::Anti(c)
        | JoinOperator::LeftAnti(c)
        | JoinOperator::RightAnti(c) => Some(c),
        _ => None,
    }
}

pub(super) fn role_names(what: &str) -> Denial {
    Denial::forbidden(
        format!("role names are not available ({what})"),
        "access lists and the current role name the database's roles, esq's own among them",
        "leave the column out",
    )
}

pub(super) fn statistics(what: &str) -> Denial {
    Denial::forbidden(
        format!("catalog statistics are not available ({what})"),
        "row counts and sizes include rows your ticket's filters and retention hide",
        "ask for the answer itself: SELECT count(*) FROM the dataset (under a ticket)",
    )
}

fn not_a_catalog(table: &str) -> Denial {
    Denial::forbidden(
        format!("{table} is not an allowed catalog"),
        "statements without a dataset may read only structural catalogs (statistics, activity, settings and roles' secrets carry values)",
        "query pg_class, pg_attribute, pg_type, pg_namespace or information_schema.tables/columns",
    )
}

/// Checks PostgreSQL's reading of `sql` (the text that will run).
pub(super) fn check(sql: &str) -> Checked<()> {
    let parsed = pg_query::parse(sql, 0)
        .map_err(|_| Denial::syntax("PostgreSQL's parser rejects the statement"))?;
    // Every relation reference as written, CTE names included: pg_query's
    // own table list drops names that match a CTE anywhere, even where the
    // name means the real table (inside a non-recursive CTE's own body).
    for (node, _, _, _) in parsed.protobuf.nodes() {
        if let NodeRef::RangeVar(range) = node {
            let table = if range.schemaname.is_empty() {
                qualify(&range.relname)
            } else {
                format!("{}.{}", range.schemaname, range.relname)
            };
            if !range.catalogname.is_empty() || !is_metadata_relation(&table) {
                return Err(not_a_catalog(&table));
            }
        }
    }
    for (name, _) in &parsed.functions {
        let short = name.strip_prefix("pg_catalog.").unwrap_or(name);
        let builtin = function_allowed(short) && !short.contains('.');
        if !builtin && !QUALIFIED_FUNCTIONS.contains(&name.as_str()) {
            return Err(Denial::forbidden(
                format!("function {name}() is not allowed in catalog queries"),
                "only metadata functions (descriptions, visibility, formatting) are allowlisted",
                "remove the function",
            ));
        }
    }
    for (node, _, _, _) in parsed.protobuf.nodes() {
        match node {
            NodeRef::AExpr(expr) => {
                let parts = strings(&expr.name);
                let ok = match parts.as_slice() {
                    [symbol] => OPERATORS.contains(&symbol.as_str()),
                    [schema, symbol] => {
                        schema == "pg_catalog" && OPERATORS.contains(&symbol.as_str())
                    }
                    _ => false,
                };
                if !ok {
                    return Err(Denial::forbidden(
                        format!("operator {} is not allowed", parts.join(".")),
                        "only built-in operators are allowlisted",
                        "use a built-in operator",
                    ));
                }
            }
            NodeRef::TypeCast(cast) => {
                let names = cast
                    .type_name
                    .as_ref()
                    .map(|t| strings(&t.names))
                    .unwrap_or_default();
                if names.len() > 1 && names[0] != "pg_catalog" {
                    return Err(Denial::forbidden(
                        format!("casts to {} are not allowed", names.join(".")),
                        "only built-in types are allowlisted",
                        "cast to a pg_catalog type",
                    ));
                }
            }
            // CURRENT_ROLE, CURRENT_USER, USER, SESSION_USER: esq's own
            // service role, not the user's.
            NodeRef::SqlvalueFunction(function) if (10..=13).contains(&function.op) => {
                return Err(role_names("CURRENT_USER, SESSION_USER"));
            }
            NodeRef::RangeFunction(range) if is_allowed_table_function(range) => {}
            NodeRef::RangeFunction(_)
            | NodeRef::RangeTableFunc(_)
            | NodeRef::RangeTableSample(_) => {
                return Err(Denial::forbidden(
                    "functions in FROM are not allowed in catalog queries",
                    "a set-returning function can read anything",
                    "select from catalog relations",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// `FROM pg_catalog.generate_series(…) [AS s]`: one allowlisted table
/// function, no ROWS FROM, ordinality or column definitions (its
/// arguments are walked like every other call).
fn is_allowed_table_function(range: &pg_query::protobuf::RangeFunction) -> bool {
    use pg_query::NodeEnum;
    if range.is_rowsfrom || range.ordinality || !range.coldeflist.is_empty() {
        return false;
    }
    let [item] = range.functions.as_slice() else {
        return false;
    };
    let Some(NodeEnum::List(list)) = item.node.as_ref() else {
        return false;
    };
    let (Some(call), rest) = (list.items.first(), list.items.get(1..).unwrap_or_default()) else {
        return false;
    };
    if rest.iter().any(|n| n.node.is_some()) {
        return false;
    }
    match call.node.as_ref() {
        Some(NodeEnum::FuncCall(func)) => {
            let name = strings(&func.funcname).join(".");
            TABLE_FUNCTIONS.contains(&name.as_str())
                || TABLE_FUNCTIONS.contains(&format!("pg_catalog.{name}").as_str())
        }
        _ => false,
    }
}

fn function_allowed(name: &str) -> bool {
    FUNCTIONS.contains(&name)
        || functions::lookup(name).is_some()
        || super::confirm::is_syntax_function(name)
}

fn strings(nodes: &[pg_query::protobuf::Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(pg_query::NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}
