//! Stage 2, confirm: PostgreSQL's own grammar (libpg_query) reads the same
//! text. Statement count, statement kinds and the set of tables must agree
//! with esq's reading, and every function PostgreSQL would call must be on
//! the allowlist. Disagreement or a parse error denies: a statement the two
//! parsers read differently is an attack surface.

use std::collections::BTreeSet;

use super::classify::Kind;
use super::denial::{Checked, Denial};
use super::functions;

/// What PostgreSQL's parser read.
pub(super) struct PgReading {
    kinds: Vec<String>,
    tables: BTreeSet<String>,
    functions: BTreeSet<String>,
}

pub(super) fn read(sql: &str) -> Checked<PgReading> {
    let parsed = pg_query::parse(sql, 0).map_err(|err| {
        let message = match err {
            pg_query::Error::Parse(message) => message,
            _ => "unreadable".to_string(),
        };
        Denial::syntax(format!(
            "PostgreSQL's parser rejects the statement: {message}"
        ))
    })?;
    Ok(PgReading {
        kinds: parsed
            .protobuf
            .stmts
            .iter()
            .map(|raw| statement_kind(raw.stmt.as_ref().and_then(|s| s.node.as_ref())))
            .collect(),
        tables: parsed.tables().into_iter().map(|t| qualify(&t)).collect(),
        functions: parsed
            .functions
            .iter()
            .map(|(name, _)| name.strip_prefix("pg_catalog.").unwrap_or(name).to_string())
            .collect(),
    })
}

impl PgReading {
    /// Reads no table, or only allowlisted catalogs.
    pub fn metadata_only(&self) -> bool {
        self.tables
            .iter()
            .all(|t| super::metadata::is_metadata_relation(t))
    }
}

fn differ(what: &str) -> Denial {
    Denial::syntax(format!(
        "PostgreSQL and esq read this statement differently ({what})"
    ))
}

/// Statement count and kinds agree.
pub(super) fn agree_kinds(pg: &PgReading, kinds: &[Kind]) -> Checked<()> {
    if pg.kinds.len() != kinds.len() {
        return Err(differ("number of statements"));
    }
    for (pg_kind, kind) in pg.kinds.iter().zip(kinds) {
        let expected: &[&str] = match kind {
            Kind::Query => &["SelectStmt"],
            Kind::Session => &[
                "TransactionStmt",
                "VariableSetStmt",
                "VariableShowStmt",
                "DiscardStmt",
                "DeallocateStmt",
            ],
        };
        if !expected.contains(&pg_kind.as_str()) {
            return Err(differ("statement kind"));
        }
    }
    Ok(())
}

/// Compares PostgreSQL's reading with esq's.
pub(super) fn agree(pg: &PgReading, kinds: &[Kind], tables: &BTreeSet<String>) -> Checked<()> {
    agree_kinds(pg, kinds)?;
    if &pg.tables != tables {
        return Err(differ("tables"));
    }
    if let Some(name) = pg.functions.iter().find(|f| !function_allowed(f)) {
        return Err(Denial::forbidden(
            format!("function {name}() is not allowed"),
            "PostgreSQL would call a function that is not allowlisted",
            "use allowlisted functions only",
        )
        .by_esq_rule());
    }
    Ok(())
}

/// Functions PostgreSQL's raw parser produces for SQL syntax that esq
/// models as expressions (EXTRACT, SUBSTRING … FROM, TRIM, …).
const SYNTAX_FUNCTIONS: &[&str] = &[
    "extract",
    "btrim",
    "ltrim",
    "rtrim",
    "substring",
    "date_part",
];

fn function_allowed(name: &str) -> bool {
    functions::lookup(name).is_some() || is_syntax_function(name)
}

pub(super) fn is_syntax_function(name: &str) -> bool {
    SYNTAX_FUNCTIONS.contains(&name)
}

fn statement_kind(node: Option<&pg_query::NodeEnum>) -> String {
    use pg_query::NodeEnum;
    match node {
        Some(NodeEnum::SelectStmt(_)) => "SelectStmt",
        Some(NodeEnum::TransactionStmt(_)) => "TransactionStmt",
        Some(NodeEnum::VariableSetStmt(_)) => "VariableSetStmt",
        Some(NodeEnum::VariableShowStmt(_)) => "VariableShowStmt",
        Some(NodeEnum::DiscardStmt(_)) => "DiscardStmt",
        Some(NodeEnum::DeallocateStmt(_)) => "DeallocateStmt",
        _ => "other",
    }
    .to_string()
}

fn qualify(table: &str) -> String {
    super::metadata::qualify(table)
}
