//! Metadata introspection: statements that read only allowlisted system
//! catalogs (what psql's `\d`, drivers and BI tools send) or no table at all
//! (`SELECT version()`). These hold no dataset values, so they are checked
//! with PostgreSQL's own reading of the text that will run: every table,
//! function, operator and cast type must be on the allowlists below.
//! Value-bearing catalogs (`pg_stats`, `pg_statistic`, `pg_stat_activity`,
//! `pg_authid`, `pg_settings`, large objects…) are not on them.

use std::ops::ControlFlow;

use pg_query::NodeRef;
use std::collections::BTreeSet;

use sqlparser::ast::{
    BinaryOperator, Expr, ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};

use super::denial::{Checked, Denial};
use super::functions;

/// Catalog relations that describe structure, never data values.
const RELATIONS: &[&str] = &[
    "pg_catalog.pg_am",
    "pg_catalog.pg_attrdef",
    "pg_catalog.pg_attribute",
    "pg_catalog.pg_class",
    "pg_catalog.pg_collation",
    "pg_catalog.pg_constraint",
    "pg_catalog.pg_database",
    "pg_catalog.pg_depend",
    "pg_catalog.pg_description",
    "pg_catalog.pg_enum",
    "pg_catalog.pg_extension",
    "pg_catalog.pg_index",
    "pg_catalog.pg_indexes",
    "pg_catalog.pg_inherits",
    "pg_catalog.pg_matviews",
    "pg_catalog.pg_namespace",
    "pg_catalog.pg_partitioned_table",
    "pg_catalog.pg_policy",
    "pg_catalog.pg_proc",
    "pg_catalog.pg_publication",
    "pg_catalog.pg_publication_namespace",
    "pg_catalog.pg_publication_rel",
    "pg_catalog.pg_range",
    // Read through an empty stand-in (see `hide_roles`): no role name.
    "pg_catalog.pg_roles",
    "pg_catalog.pg_sequence",
    "pg_catalog.pg_statistic_ext",
    "pg_catalog.pg_tables",
    "pg_catalog.pg_tablespace",
    "pg_catalog.pg_trigger",
    "pg_catalog.pg_type",
    "pg_catalog.pg_views",
    "information_schema.columns",
    "information_schema.key_column_usage",
    "information_schema.referential_constraints",
    "information_schema.schemata",
    "information_schema.table_constraints",
    "information_schema.tables",
    "information_schema.views",
];

/// Functions of metadata queries: descriptions, visibility, formatting.
const FUNCTIONS: &[&str] = &[
    // `ARRAY(SELECT …)`: sqlparser reads it as a call; its subquery is
    // walked like any other.
    "array",
    "array_agg",
    "array_length",
    "array_lower",
    "array_to_string",
    "array_upper",
    "col_description",
    "current_database",
    "current_schema",
    "current_schemas",
    "format_type",
    "has_column_privilege",
    "has_schema_privilege",
    "has_table_privilege",
    "obj_description",
    "pg_encoding_to_char",
    "pg_function_is_visible",
    "pg_collation_is_visible",
    "pg_conversion_is_visible",
    "pg_opclass_is_visible",
    "pg_operator_is_visible",
    "pg_opfamily_is_visible",
    "pg_statistics_obj_is_visible",
    "pg_get_constraintdef",
    "pg_get_expr",
    "pg_get_function_arguments",
    "pg_get_function_identity_arguments",
    "pg_get_function_result",
    "pg_get_indexdef",
    "pg_get_partkeydef",
    "pg_get_serial_sequence",
    "pg_get_statisticsobjdef_columns",
    "pg_get_triggerdef",
    "pg_get_userbyid",
    "pg_get_viewdef",
    "pg_relation_is_publishable",
    // Only as a FROM item (see `TABLE_FUNCTIONS`): integers, no data.
    "generate_series",
    "pg_size_pretty",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "quote_ident",
    "json_build_object",
    "to_regclass",
    "to_regtype",
    "shobj_description",
    "string_agg",
    "unnest",
    "version",
    "position",
];

/// Set-returning functions allowed as FROM items of catalog queries (psql's
/// `\d` numbers array elements with one).
const TABLE_FUNCTIONS: &[&str] = &["pg_catalog.generate_series"];

/// Catalog columns that carry statistics about the data: the row count of a
/// table includes rows a ticket's filters and retention hide.
const STATISTICS_COLUMNS: &[&str] = &["reltuples", "relpages", "relallvisible", "relallfrozen"];

/// Catalog columns that name roles (access lists): who may read what, and
/// esq's own service role among them, are the operator's business.
const ROLE_COLUMNS: &[&str] = &[
    "relacl",
    "nspacl",
    "datacl",
    "attacl",
    "proacl",
    "typacl",
    "spcacl",
    "lanacl",
    "fdwacl",
    "srvacl",
    "defaclacl",
    "lomacl",
    "grantee",
    "grantor",
    "tableowner",
    "viewowner",
    "matviewowner",
];

/// Catalogs with statistics or access-list columns: `*` over them would
/// read those columns without naming them.
const WIDE_CATALOGS: &[&str] = &[
    "pg_catalog.pg_tables",
    "pg_catalog.pg_views",
    "pg_catalog.pg_matviews",
    "pg_catalog.pg_class",
    "pg_catalog.pg_namespace",
    "pg_catalog.pg_database",
    "pg_catalog.pg_attribute",
    "pg_catalog.pg_proc",
    "pg_catalog.pg_type",
    "pg_catalog.pg_tablespace",
];

/// Built-in operator symbols (an unknown symbol could be user-defined).
const OPERATORS: &[&str] = &[
    "=", "<>", "!=", "<", ">", "<=", ">=", "~", "!~", "~*", "!~*", "~~", "!~~", "~~*", "!~~*", "+",
    "-", "*", "/", "%", "||", "@>", "<@", "&&",
];

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
        /// Bare identifiers used as values.
        bare_identifiers: BTreeSet<String>,
        reads_wide_catalog: bool,
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
            let qualified = match parts.as_slice() {
                [name] => qualify(name),
                [schema, name] => format!("{schema}.{name}"),
                _ => parts.join("."),
            };
            if let Some(last) = parts.last() {
                self.relation_names.insert(last.clone());
            }
            self.reads_wide_catalog |= WIDE_CATALOGS.contains(&qualified.as_str());
            if std::mem::take(&mut self.table_function_next) {
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
                } if joins_by_name(&table_with_joins.joins) => {
                    ControlFlow::Break(Denial::forbidden(
                        "JOIN … USING and NATURAL JOIN are not allowed in catalog queries",
                        "they compare columns (statistics included) without naming them",
                        "write JOIN … ON a.x = b.x",
                    ))
                }
                TableFactor::NestedJoin { .. } => ControlFlow::Continue(()),
                TableFactor::Table {
                    args: Some(_),
                    sample: None,
                    version: None,
                    with_ordinality: false,
                    alias,
                    ..
                } if alias.as_ref().is_none_or(|a| a.columns.is_empty()) => {
                    // Its alias used as a value is the function's own
                    // output (an integer), not a catalog row.
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
                if !name.as_deref().is_some_and(function_allowed) {
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
            let column = match expr {
                Expr::Identifier(ident) => {
                    self.bare_identifiers.insert(super::resolve::fold(ident));
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
            self.has_wildcard |= has_wildcard(&query.body);
            match super::postcheck::check_query_clauses(query) {
                Ok(()) => ControlFlow::Continue(()),
                Err(denial) => ControlFlow::Break(denial),
            }
        }

        fn pre_visit_select(&mut self, select: &sqlparser::ast::Select) -> ControlFlow<Denial> {
            if let Err(denial) = super::postcheck::check_select_clauses(select) {
                return ControlFlow::Break(denial);
            }
            // USING and NATURAL compare columns by name without naming them
            // as expressions (`JOIN … USING (reltuples)`).
            let implicit = select.from.iter().any(|item| joins_by_name(&item.joins));
            if implicit {
                return ControlFlow::Break(Denial::forbidden(
                    "JOIN … USING and NATURAL JOIN are not allowed in catalog queries",
                    "they compare columns (statistics included) without naming them",
                    "write JOIN … ON a.x = b.x",
                ));
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
    if let Some(name) = relations
        .bare_identifiers
        .iter()
        .find(|i| relations.relation_names.contains(*i))
    {
        return Err(super::resolve::whole_row(&format!(
            "{name} used as a value"
        )));
    }
    if relations.reads_wide_catalog && relations.has_wildcard {
        return Err(Denial::forbidden(
            "* over pg_class, pg_namespace, pg_database, pg_attribute, pg_proc, pg_type or pg_tablespace is not allowed",
            "those catalogs carry statistics (row counts that include hidden rows) and access lists (role names)",
            "name the columns you need",
        ));
    }
    Ok(())
}

fn joins_by_name(joins: &[sqlparser::ast::Join]) -> bool {
    use sqlparser::ast::{JoinConstraint, JoinOperator};
    joins.iter().any(|join| {
        let constraint = match &join.join_operator {
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
        };
        !matches!(
            constraint,
            Some(JoinConstraint::On(_) | JoinConstraint::None)
        )
    })
}

fn has_wildcard(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        }),
        SetExpr::SetOperation { left, right, .. } => has_wildcard(left) || has_wildcard(right),
        _ => false,
    }
}

fn role_names(what: &str) -> Denial {
    Denial::forbidden(
        format!("role names are not available ({what})"),
        "access lists and the current role name the database's roles, esq's own among them",
        "leave the column out",
    )
}

fn statistics(what: &str) -> Denial {
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
        if !function_allowed(short) || name.contains('.') && !name.starts_with("pg_catalog.") {
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
