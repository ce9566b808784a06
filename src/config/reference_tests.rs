//! The configuration reference (`docs/configuration.md`) is checked against
//! the config structs themselves, so a key added to a struct without a line
//! in the reference (or a documented key that no longer exists) fails here.
//!
//! The structs are explored through serde: every struct denies unknown
//! fields, and its error for an unknown field lists the fields it has. A
//! probe table at a path tells a struct (the error names its fields) from a
//! map of structs (`users.<name>`), a list of structs (`sentinel.rules`) and
//! a plain value.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::Config;

const PROBE: &str = "zz_reference_probe";

/// What serde says lives at a path.
enum Shape {
    Struct(Vec<String>),
    MapOfStructs(Vec<String>),
    ListOfStructs(Vec<String>),
    Value,
}

/// The fields named in serde's "unknown field" message, if it is one.
fn fields_in(message: &str) -> Option<Vec<String>> {
    let start = message.find(&format!("unknown field `{PROBE}`"))?;
    let rest = &message[start..];
    if rest.contains("there are no fields") {
        return Some(Vec::new());
    }
    // The message ends with the key path on a line of its own (`in `audit``).
    let first_line = rest.lines().next().unwrap_or_default();
    let expected = first_line.split_once("expected")?.1;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Deserializes a config whose only content is `leaf` at `path`.
fn error_with(path: &[String], leaf: toml::Value) -> String {
    let mut value = leaf;
    for part in path.iter().rev() {
        let mut table = toml::Table::new();
        table.insert(part.clone(), value);
        value = toml::Value::Table(table);
    }
    match Config::deserialize(value) {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    }
}

fn probe_table() -> toml::Table {
    let mut table = toml::Table::new();
    table.insert(PROBE.into(), toml::Value::Integer(1));
    table
}

fn shape_at(path: &[String]) -> Shape {
    let table = toml::Value::Table(probe_table());
    if let Some(fields) = fields_in(&error_with(path, table.clone())) {
        return Shape::Struct(fields);
    }
    if let Some(fields) = fields_in(&error_with(path, toml::Value::Array(vec![table.clone()]))) {
        return Shape::ListOfStructs(fields);
    }
    let mut map = toml::Table::new();
    map.insert("name".into(), table);
    if let Some(fields) = fields_in(&error_with(path, toml::Value::Table(map))) {
        return Shape::MapOfStructs(fields);
    }
    Shape::Value
}

/// Every key the structs accept, spelled as the reference spells them:
/// `users.<name>.roles`, `sentinel.rules[].name`.
fn struct_keys(
    path: Vec<String>,
    spelled: String,
    fields: Vec<String>,
    out: &mut BTreeSet<String>,
) {
    for field in fields {
        let mut child = path.clone();
        child.push(field.clone());
        let name = if spelled.is_empty() {
            field.clone()
        } else {
            format!("{spelled}.{field}")
        };
        match shape_at(&child) {
            Shape::Struct(inner) => struct_keys(child, name, inner, out),
            Shape::ListOfStructs(inner) => {
                out.insert(name.clone());
                for field in inner {
                    out.insert(format!("{name}[].{field}"));
                }
            }
            Shape::MapOfStructs(inner) => {
                let mut named = child.clone();
                named.push("name".into());
                struct_keys(named, format!("{name}.<name>"), inner, out)
            }
            Shape::Value => {
                out.insert(name);
            }
        }
    }
}

/// The keys the reference's tables document. A cell may name several keys:
/// `` `log.format` / `log.filter` `` or `` `sentinel.webhook_timeout` /
/// `webhook_attempts` `` (the second in the first's section).
fn documented_keys(reference: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in reference.lines() {
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let cell = format!("`{}", cell.split(" | ").next().unwrap_or_default());
        let mut section = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            let key = if name.contains('.') || section.is_empty() {
                name.to_string()
            } else {
                format!("{section}.{name}")
            };
            section = key
                .rsplit_once('.')
                .map(|(s, _)| s.to_string())
                .unwrap_or_default();
            keys.insert(key);
        }
    }
    keys
}

#[test]
fn the_reference_documents_every_key_and_only_real_ones() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let reference = std::fs::read_to_string(path).expect("docs/configuration.md");
    let Shape::Struct(top) = shape_at(&[]) else {
        panic!("Config is not a struct that denies unknown fields");
    };
    let mut real = BTreeSet::new();
    struct_keys(Vec::new(), String::new(), top, &mut real);
    let documented = documented_keys(&reference);

    let missing: Vec<_> = real.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&real).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md is out of step with the config structs\n\
         keys the structs accept but the reference does not document: {missing:?}\n\
         keys the reference documents that no struct accepts: {stale:?}"
    );
}

#[test]
fn the_probe_reads_serde_messages() {
    assert_eq!(
        fields_in("unknown field `zz_reference_probe`, expected one of `a`, `b` at line 1"),
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(
        fields_in("unknown field `zz_reference_probe`, expected `only`"),
        Some(vec!["only".to_string()])
    );
    assert_eq!(fields_in("invalid type: map, expected a string"), None);
    // The walk finds nested structs, maps of structs and lists of structs.
    let mut real = BTreeSet::new();
    let Shape::Struct(top) = shape_at(&[]) else {
        panic!("Config is not a struct");
    };
    struct_keys(Vec::new(), String::new(), top, &mut real);
    for key in [
        "upstream.url",
        "users.<name>.roles",
        "sentinel.rules[].window",
        "tls.cert",
    ] {
        assert!(real.contains(key), "{key} not found in {real:?}");
    }
    assert!(!real.contains("upstream"), "a section is not a key");
}

#[test]
fn a_cell_may_name_several_keys() {
    let keys = documented_keys(
        "| `log.format` / `log.filter` | x | y |\n| `sentinel.webhook_timeout` / `webhook_attempts` | a | b |\n",
    );
    let expected: BTreeSet<String> = [
        "log.format",
        "log.filter",
        "sentinel.webhook_timeout",
        "sentinel.webhook_attempts",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, expected);
}
