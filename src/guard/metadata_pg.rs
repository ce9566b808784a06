//! What the forwarded text of a catalog statement reads, by PostgreSQL's
//! own parse tree: no statistics or role-name column by name (column
//! references, field selections, USING lists, column aliases), no output
//! named like one, no NATURAL join, no whole-row reference to a wide
//! catalog, and `*` only where it covers no wide catalog (the rule of
//! `metadata_star.rs`). The tree is walked in full through its serialized
//! form, so no clause (LIMIT, OVER, DISTINCT ON, a frame bound) is skipped,
//! whatever pg_query's own node walker visits.

use serde_json::{Map, Value};

use super::denial::{Checked, Denial};
use super::metadata_lists::{PRIVILEGE_FUNCTIONS, ROLE_COLUMNS, STATISTICS_COLUMNS, WIDE_CATALOGS};

/// Checks PostgreSQL's reading of `sql`, the text esq forwards.
pub(super) fn check(sql: &str) -> Checked<()> {
    let parsed = pg_query::parse(sql, 0)
        .map_err(|_| Denial::syntax("PostgreSQL's parser rejects the statement"))?;
    let mut walk = Walk::default();
    super::deep_walk(|| {
        let tree = serde_json::to_value(&parsed.protobuf)
            .map_err(|_| Denial::syntax("PostgreSQL's reading of the statement is unreadable"))?;
        walk.value(&tree)
    })?;
    // A `*` anywhere but a select list (`(c).*`, `f(c.*)`) is not followed.
    if walk.stars > walk.followed_stars && !walk.wide_names.is_empty() {
        return Err(super::metadata_star::wide_star());
    }
    if let Some(name) = walk
        .bare_references
        .iter()
        .find(|name| walk.wide_names.contains(*name))
    {
        return Err(super::resolve::whole_row(&format!(
            "{name} used as a value"
        )));
    }
    Ok(())
}

#[derive(Default)]
struct Walk {
    /// Every `*` in the tree, and those followed as select-list items.
    stars: usize,
    followed_stars: usize,
    /// Names and aliases under which wide catalogs are read.
    wide_names: Vec<String>,
    /// One-part column references (a relation's name used as a value reads
    /// its whole row).
    bare_references: Vec<String>,
}

impl Walk {
    fn value(&mut self, value: &Value) -> Checked<()> {
        match value {
            Value::Array(items) => items.iter().try_for_each(|v| self.value(v)),
            Value::Object(object) => self.object(object),
            _ => Ok(()),
        }
    }

    fn object(&mut self, object: &Map<String, Value>) -> Checked<()> {
        for (key, inner) in object {
            match key.as_str() {
                // A name: a column reference's part, a field selection, a
                // USING column, a column alias, a function or type name.
                "String" => check_name(sval(inner))?,
                "AStar" => self.stars += 1,
                "ResTarget" => check_output_name(inner)?,
                "JoinExpr" if inner.get("is_natural") == Some(&Value::Bool(true)) => {
                    return Err(natural_join());
                }
                "RangeVar" => {
                    if let Some(name) = wide_relation_name(inner) {
                        self.wide_names.push(name);
                    }
                }
                "ColumnRef" => {
                    if let [only] = fields(inner).as_slice() {
                        if let Some(name) = string_node(only) {
                            self.bare_references.push(name.to_string());
                        }
                    }
                }
                "SelectStmt" => self.followed_stars += select_stars(inner)?,
                "FuncCall" => check_privilege_call(inner)?,
                _ => {}
            }
            self.value(inner)?;
        }
        Ok(())
    }
}

/// Follows the `*` items of one SELECT's list to the FROM items they cover;
/// returns how many it followed.
fn select_stars(select: &Value) -> Checked<usize> {
    let mut followed = 0;
    // The branches of a set operation are SELECTs without a node wrapper.
    for side in ["larg", "rarg"] {
        if let Some(branch) = select.get(side).filter(|b| b.is_object()) {
            followed += select_stars(branch)?;
        }
    }
    let from: Vec<&Value> = list(select.get("from_clause"));
    for target in list(select.get("target_list")) {
        let Some(column) = target
            .get("node")
            .and_then(|n| n.get("ResTarget"))
            .and_then(|t| t.get("val"))
            .and_then(|v| v.get("node"))
            .and_then(|n| n.get("ColumnRef"))
        else {
            continue;
        };
        let parts = fields(column);
        let Some((last, qualifier)) = parts.split_last() else {
            continue;
        };
        if last.get("node").and_then(|n| n.get("AStar")).is_none() {
            continue;
        }
        followed += 1;
        match qualifier.last().map(|q| string_node(q)) {
            None => from.iter().try_for_each(|item| covers(item))?,
            Some(Some(name)) => {
                let found: Vec<&Value> = from.iter().filter_map(|i| named(i, name)).collect();
                if found.is_empty() {
                    return Err(super::metadata_star::wide_star());
                }
                found.into_iter().try_for_each(covers)?;
            }
            Some(None) => return Err(super::metadata_star::wide_star()),
        }
    }
    Ok(followed)
}

/// The FROM item (a `Node`) that `qualifier` names within `item`.
fn named<'a>(item: &'a Value, qualifier: &str) -> Option<&'a Value> {
    let node = item.get("node")?;
    let (kind, inner) = node.as_object()?.iter().next()?;
    let alias = inner
        .get("alias")
        .and_then(|a| a.get("aliasname"))
        .and_then(Value::as_str);
    if let Some(alias) = alias {
        return (alias == qualifier).then_some(item);
    }
    match kind.as_str() {
        "RangeVar" => {
            (inner.get("relname").and_then(Value::as_str) == Some(qualifier)).then_some(item)
        }
        "JoinExpr" => ["larg", "rarg"]
            .iter()
            .filter_map(|side| inner.get(*side))
            .find_map(|side| named(side, qualifier)),
        _ => None,
    }
}

/// Whether a `*` may read every column of the FROM item `item`.
fn covers(item: &Value) -> Checked<()> {
    let node = item.get("node").and_then(Value::as_object);
    let Some((kind, inner)) = node.and_then(|n| n.iter().next()) else {
        return Err(super::metadata_star::wide_star());
    };
    match kind.as_str() {
        "RangeVar" if wide_relation_name(inner).is_some() => Err(super::metadata_star::wide_star()),
        "RangeVar" | "RangeSubselect" | "RangeFunction" => Ok(()),
        "JoinExpr" => ["larg", "rarg"]
            .iter()
            .filter_map(|side| inner.get(*side))
            .try_for_each(covers),
        _ => Err(super::metadata_star::wide_star()),
    }
}

/// The name a wide catalog is read under (its alias, or its own name).
fn wide_relation_name(range: &Value) -> Option<String> {
    let relname = range.get("relname").and_then(Value::as_str)?;
    let schema = range
        .get("schemaname")
        .and_then(Value::as_str)
        .unwrap_or("");
    let qualified = if schema.is_empty() {
        super::metadata::qualify(relname)
    } else {
        format!("{schema}.{relname}")
    };
    if !WIDE_CATALOGS.contains(&qualified.as_str()) {
        return None;
    }
    let alias = range
        .get("alias")
        .and_then(|a| a.get("aliasname"))
        .and_then(Value::as_str);
    Some(alias.unwrap_or(relname).to_string())
}

fn check_name(name: Option<&str>) -> Checked<()> {
    match name {
        Some(name) if STATISTICS_COLUMNS.contains(&name) => Err(super::metadata::statistics(name)),
        Some(name) if ROLE_COLUMNS.contains(&name) => Err(super::metadata::role_names(name)),
        _ => Ok(()),
    }
}

/// `has_table_privilege('other_role', …)`: only the current role's form.
fn check_privilege_call(call: &Value) -> Checked<()> {
    let names = list(call.get("funcname"));
    let Some(name) = names.last().and_then(|n| string_node(n)) else {
        return Ok(());
    };
    let arguments = list(call.get("args")).len();
    match PRIVILEGE_FUNCTIONS.iter().find(|(f, _)| *f == name) {
        Some((_, own)) if arguments > *own => Err(super::metadata::role_names(&format!(
            "{name} naming a role"
        ))),
        _ => Ok(()),
    }
}

/// An output named like a statistic could stand in for it.
fn check_output_name(target: &Value) -> Checked<()> {
    check_name(target.get("name").and_then(Value::as_str))
}

fn sval(string: &Value) -> Option<&str> {
    string.get("sval").and_then(Value::as_str)
}

/// The `sval` of a `Node` holding a `String`.
fn string_node(node: &Value) -> Option<&str> {
    node.get("node")
        .and_then(|n| n.get("String"))
        .and_then(sval)
}

fn fields(column: &Value) -> Vec<&Value> {
    list(column.get("fields"))
}

fn list(value: Option<&Value>) -> Vec<&Value> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().collect())
        .unwrap_or_default()
}

fn natural_join() -> Denial {
    Denial::forbidden(
        "NATURAL JOIN is not allowed in catalog queries",
        "it compares columns (statistics included) without naming them",
        "write JOIN … ON a.x = b.x or JOIN … USING (x)",
    )
}

#[cfg(test)]
mod tests {
    use super::check;

    /// PostgreSQL's reading alone refuses these (esq's own reading does
    /// too: each check must hold without the other).
    #[test]
    fn statistics_role_names_and_wide_stars_are_refused() {
        for sql in [
            "SELECT reltuples FROM pg_class",
            "SELECT * FROM (SELECT reltuples FROM pg_class) c",
            "SELECT * FROM (SELECT * FROM pg_catalog.pg_class) c",
            "SELECT * FROM pg_catalog.pg_namespace n, pg_catalog.pg_class c",
            "SELECT c.* FROM (SELECT oid FROM pg_class) d JOIN pg_catalog.pg_class c ON c.oid = d.oid",
            "SELECT j.* FROM (pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON true) AS j",
            "SELECT (SELECT c.* FROM pg_catalog.pg_am a LIMIT 1) FROM pg_catalog.pg_class c",
            "SELECT array_agg(c.*) FROM pg_catalog.pg_class c",
            "SELECT (c).* FROM pg_catalog.pg_class c",
            "SELECT (c).relpages FROM pg_catalog.pg_class c",
            "SELECT c FROM pg_catalog.pg_class c",
            "TABLE pg_catalog.pg_class",
            "SELECT relname FROM pg_class LIMIT (SELECT relpages FROM pg_class LIMIT 1)",
            "SELECT relname FROM pg_class ORDER BY sum(relallvisible) OVER ()",
            "SELECT relname FROM pg_class NATURAL JOIN pg_namespace",
            "SELECT relname FROM pg_class JOIN (SELECT 1::real AS reltuples) x USING (reltuples)",
            "SELECT relname, 1 AS reltuples FROM pg_class",
            "SELECT n FROM generate_series(1, 2) AS s(relpages)",
            "SELECT relname, relacl FROM pg_class",
            "SELECT * FROM (SELECT 1) a UNION SELECT * FROM pg_catalog.pg_type",
            // Role names by owner oid, by a guessed name, and another
            // role's grants (red team, issue 20).
            "SELECT nspowner::regrole FROM pg_namespace",
            "SELECT relowner::pg_catalog.regrole::text FROM pg_class",
            "SELECT CAST(10 AS regrole)",
            "SELECT 'esq_service'::regrole::oid",
            "SELECT has_table_privilege('esq_maintenance', 'burial_2024', 'DELETE')",
            "SELECT pg_catalog.has_schema_privilege('postgres', 'public', 'USAGE')",
            "SELECT has_column_privilege('esq_service', 'burial_2024', 'ssn', 'SELECT')",
            "SELECT schema_name, schema_owner FROM information_schema.schemata",
            // Second pass: a star over schemata, access-list literals.
            "SELECT * FROM information_schema.schemata",
            "SELECT s.* FROM information_schema.schemata s",
            "SELECT * FROM (SELECT * FROM information_schema.schemata) c",
            "SELECT '=r'::aclitem",
            "SELECT CAST('=r' AS pg_catalog.aclitem)::text",
            "SELECT '{=r}'::aclitem[]",
            "SELECT nspname FROM pg_namespace WHERE 'esq_maintenance=r/esq_maintenance'::aclitem IS NOT NULL",
        ] {
            assert!(check(sql).is_err(), "allowed: {sql}");
        }
    }

    #[test]
    fn names_types_and_stars_over_named_columns_are_read() {
        for sql in [
            "SELECT has_table_privilege('burial_2024', 'SELECT')",
            "SELECT has_column_privilege('burial_2024', 'state', 'SELECT')",
            "SELECT schema_name FROM information_schema.schemata",
            "SELECT * FROM (SELECT n.nspname, c.relname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid) c WHERE true ORDER BY nspname",
            "SELECT NULL::real AS cardinality FROM pg_catalog.pg_class ci",
            "SELECT * FROM information_schema.columns",
            "SELECT s.r FROM generate_series(1, 3) AS s(r)",
            "SELECT (information_schema._pg_expandarray(i.indkey)).n FROM pg_catalog.pg_index i",
            "SELECT n.nspname FROM pg_namespace n JOIN (SELECT 'public'::name AS nspname) x USING (nspname)",
        ] {
            assert!(check(sql).is_ok(), "refused: {sql}: {:?}", check(sql).err());
        }
    }
}
