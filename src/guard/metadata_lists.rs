//! The allowlists of catalog (metadata) statements: which relations,
//! functions and operators they may use, and which catalog columns carry
//! statistics or role names (never answered). Kept apart from the checks
//! in `metadata.rs` so that widening a list is a one-line, reviewable change.

/// Catalog relations that describe structure, never data values.
pub(super) const RELATIONS: &[&str] = &[
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
    // Operator classes of index columns (SQLAlchemy's get_indexes).
    "pg_catalog.pg_opclass",
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
pub(super) const FUNCTIONS: &[&str] = &[
    // `ARRAY(SELECT …)`: sqlparser reads it as a call; its subquery is
    // walked like any other.
    "array",
    "array_agg",
    "array_length",
    "array_lower",
    "array_to_string",
    "array_upper",
    "bool_and",
    "col_description",
    "current_database",
    "current_schema",
    "current_schemas",
    "format_type",
    // Subscripts of an index's key array (SQLAlchemy's get_indexes).
    "generate_subscripts",
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
    "replace",
    "json_build_object",
    // `LIKE … ESCAPE '/'` as PostgreSQL's parser writes it (SQLAlchemy).
    "like_escape",
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
pub(super) const TABLE_FUNCTIONS: &[&str] = &["pg_catalog.generate_series"];

/// Catalog columns that carry statistics about the data: the row count of a
/// table includes rows a ticket's filters and retention hide.
pub(super) const STATISTICS_COLUMNS: &[&str] =
    &["reltuples", "relpages", "relallvisible", "relallfrozen"];

/// Catalog columns that name roles (access lists): who may read what, and
/// esq's own service role among them, are the operator's business.
pub(super) const ROLE_COLUMNS: &[&str] = &[
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
    // information_schema.schemata's owner, by name.
    "schema_owner",
    // The type that turns an owner's oid (or a guessed name) into a role
    // name: `relowner::regrole`, `'esq_service'::regrole`.
    "regrole",
    // An access-list item names roles: `'=r'::aclitem` prints the
    // bootstrap superuser as grantor, a guessed name errors or not.
    "aclitem",
    "_aclitem",
];

/// Privilege functions and how many arguments their current-role form
/// takes; one more argument names another role (whose grants, and whose
/// existence, are the operator's business).
pub(super) const PRIVILEGE_FUNCTIONS: &[(&str, usize)] = &[
    ("has_column_privilege", 3),
    ("has_schema_privilege", 2),
    ("has_table_privilege", 2),
];

/// Catalogs with statistics or access-list columns: `*` over them would
/// read those columns without naming them.
pub(super) const WIDE_CATALOGS: &[&str] = &[
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
    // schema_owner
    "information_schema.schemata",
];

/// Built-in operator symbols (an unknown symbol could be user-defined).
pub(super) const OPERATORS: &[&str] = &[
    "=", "<>", "!=", "<", ">", "<=", ">=", "~", "!~", "~*", "!~*", "~~", "!~~", "~~*", "!~~*", "+",
    "-", "*", "/", "%", "||", "@>", "<@", "&&",
    // Bitwise AND: pgJDBC's getIndexInfo reads an index option bit.
    "&",
];

/// Functions outside `pg_catalog` that catalog statements may call, always
/// schema-qualified (an unqualified name could resolve to a user's
/// function earlier on the search path). `information_schema` is owned by
/// the bootstrap superuser: nobody else can create a function there.
pub(super) const QUALIFIED_FUNCTIONS: &[&str] = &[
    // Expands an index's key array into (element, position): pgJDBC's
    // getPrimaryKeys and getIndexInfo.
    "information_schema._pg_expandarray",
];
