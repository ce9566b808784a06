//! Property tests (the guard's fuzz smoke run): arbitrary text never panics
//! the guard, and generated SQL over the dataset is never allowed while it
//! still mentions a field outside the scope (other than in a dropped select
//! item), nor answered under an aggregate ticket without the k clause.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::{Arc, OnceLock};

use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};
use esq::tickets::Scope;
use proptest::prelude::*;

const FIELDS: &[&str] = &[
    "id",
    "name",
    "ssn",
    "dob",
    "state",
    "county",
    "burial_date",
    "branch",
    "cause_of_death",
    "notes",
    "NAME",
    "\"Ssn\"",
    "b.ssn",
    "b.state",
    "x.name",
];

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let catalog = Catalog::load_dir(&common::repo().join("catalog")).unwrap();
        Guard::new(Arc::new(catalog))
    })
}

fn scope(aggregate: bool) -> Scope {
    common::tickets::guard_scope(if aggregate { "foia" } else { "analyst" }).expect("a scope")
}

fn column() -> impl Strategy<Value = String> {
    proptest::sample::select(FIELDS).prop_map(str::to_string)
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'CA'".to_string()),
        Just("42".to_string()),
        Just("NULL".to_string()),
        Just("DATE '2020-01-01'".to_string())
    ]
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![column(), literal()];
    leaf.prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                proptest::sample::select(&["=", "<>", "<", "+", "||", "AND", "OR", "LIKE"][..]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (
                proptest::sample::select(
                    &[
                        "lower",
                        "count",
                        "max",
                        "coalesce",
                        "length",
                        "row_to_json",
                        "pg_sleep",
                        "md5"
                    ][..]
                ),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            inner.clone().prop_map(|a| format!("CAST({a} AS text)")),
            inner
                .clone()
                .prop_map(|a| format!("CASE WHEN {a} THEN 1 ELSE 0 END")),
            inner
                .clone()
                .prop_map(|a| format!("(SELECT {a} FROM burial_2024)")),
            inner.prop_map(|a| format!("{a} IN (1, 2)")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(
            prop_oneof![expr(), Just("*".to_string()), Just("count(*)".to_string())],
            1..4,
        ),
        proptest::sample::select(
            &[
                "burial_2024",
                "public.burial_2024 b",
                "burial_2024 x",
                "other_table",
                "pg_stats",
            ][..],
        ),
        proptest::option::of(expr()),
        proptest::option::of(column()),
        proptest::option::of(column()),
        proptest::option::of(0u32..50),
    )
        .prop_map(|(items, table, selection, group, order, limit)| {
            let mut sql = format!("SELECT {} FROM {table}", items.join(", "));
            if let Some(w) = selection {
                sql += &format!(" WHERE {w}");
            }
            if let Some(g) = group {
                sql += &format!(" GROUP BY {g}");
            }
            if let Some(o) = order {
                sql += &format!(" ORDER BY {o}");
            }
            if let Some(l) = limit {
                sql += &format!(" LIMIT {l}");
            }
            sql
        })
}

/// Whole-word, case-insensitive occurrences of a field in rendered SQL.
fn mentions(sql: &str, field: &str) -> bool {
    sql.to_ascii_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| word == field)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = guard().decide(Some(&scope(false)), &text);
        let _ = guard().decide(None, &text);
    }

    #[test]
    fn sqlish_text_never_panics(text in "(SELECT|FROM|WHERE|ssn|state|burial_2024|\\(|\\)|,|'|\"|;|\\$\\$|--|/\\*|\\*/|U&|::| )*") {
        let _ = guard().decide(Some(&scope(true)), &text);
    }
}

/// Generated statements: none allowed may still read a forbidden field, and
/// enough are allowed that the property means something.
#[test]
fn allowed_statements_never_read_forbidden_fields() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (statement(), any::<bool>());
    let mut allowed_count = 0;
    let total = 3_000;
    for _ in 0..total {
        let (sql, aggregate) = strategy.new_tree(&mut runner).unwrap().current();
        let scope = scope(aggregate);
        let Decision::Allow(allowed) = guard().decide(Some(&scope), &sql) else {
            continue;
        };
        allowed_count += 1;
        for forbidden in ["name", "ssn", "dob", "cause_of_death", "notes"] {
            assert!(
                !mentions(&allowed.sql, forbidden),
                "{sql}\nallowed as\n{}\nmentions {forbidden}",
                allowed.sql
            );
        }
        if aggregate {
            assert!(
                allowed.sql.contains("count(*) >= 11"),
                "{sql}\n→ {}",
                allowed.sql
            );
        } else {
            assert!(!mentions(&allowed.sql, "id"), "{sql}\n→ {}", allowed.sql);
        }
    }
    assert!(
        allowed_count >= total / 50,
        "only {allowed_count} of {total} generated statements were allowed: the generator no longer exercises allows"
    );
    eprintln!("{allowed_count} of {total} generated statements allowed");
}
