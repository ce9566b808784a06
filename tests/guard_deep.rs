//! Deep statements never crash the process: a flat `OR` chain as long as a
//! statement may be (64 KiB) builds a tree thousands of levels deep, and the
//! guard must decide it on a thread with a small stack (like a tokio
//! worker's 2 MiB), in the data path and in the catalog path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;

use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};

fn decide_on_small_stack(
    guard: Arc<Guard>,
    scope: Option<esq::tickets::Scope>,
    sql: String,
) -> Decision {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || guard.decide(scope.as_ref(), &sql))
        .unwrap()
        .join()
        .expect("the guard must not overflow its stack")
}

fn or_chain(terms: usize, column: &str) -> String {
    (0..terms)
        .map(|i| format!("{column} = 'c{i}'"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

#[test]
fn the_longest_or_chains_are_decided_on_a_small_stack() {
    let catalog = Arc::new(Catalog::load_dir(&common::repo().join("catalog")).unwrap());
    let guard = Arc::new(Guard::new(catalog));
    let analyst = common::tickets::guard_scope("analyst");

    let allowed = format!(
        "SELECT state FROM burial_2024 WHERE {}",
        or_chain(3_000, "county")
    );
    assert!(allowed.len() < 64 * 1024);
    assert!(matches!(
        decide_on_small_stack(guard.clone(), analyst.clone(), allowed),
        Decision::Allow(_)
    ));

    // The forbidden field sits at the very bottom of the tree.
    let forbidden = format!(
        "SELECT state FROM burial_2024 WHERE ssn = 'x' OR {}",
        or_chain(3_000, "county")
    );
    assert!(matches!(
        decide_on_small_stack(guard.clone(), analyst, forbidden),
        Decision::Deny(d) if d.code == "42501"
    ));

    let and_chain = (0..3_000)
        .map(|i| format!("county = 'c{i}'"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let counts =
        format!("SELECT state, count(*) FROM burial_2024 WHERE {and_chain} GROUP BY state");
    assert!(matches!(
        decide_on_small_stack(guard.clone(), common::tickets::guard_scope("foia"), counts),
        Decision::Allow(_)
    ));

    // The densest chain that reaches the final walk: ~7,000 levels.
    let dense = format!(
        "SELECT state FROM burial_2024 WHERE {}",
        vec!["state"; 7_000].join(" OR ")
    );
    assert!(dense.len() < 64 * 1024);
    let _ = decide_on_small_stack(
        guard.clone(),
        common::tickets::guard_scope("analyst"),
        dense,
    );

    let catalog_query = format!(
        "SELECT relname FROM pg_class WHERE {}",
        or_chain(3_000, "relname")
    );
    assert!(matches!(
        decide_on_small_stack(guard, None, catalog_query),
        Decision::Allow(_)
    ));
}

#[test]
fn nested_recursive_ctes_are_rewritten_once_per_table_reference() {
    // Red team F3: 10 nested recursive CTEs (1 KB) used to nest the derived
    // table 2^10 times and overflow the stack.
    let mut sql = "WITH RECURSIVE r0(state) AS ((SELECT state FROM burial_2024) UNION ALL \
                   SELECT state FROM r0 WHERE false) SELECT state FROM r0"
        .to_string();
    for i in 1..10 {
        sql = format!(
            "WITH RECURSIVE r{i}(state) AS (({sql}) UNION ALL SELECT state FROM r{i} WHERE false) \
             SELECT state FROM r{i}"
        );
    }
    let catalog = Arc::new(Catalog::load_dir(&common::repo().join("catalog")).unwrap());
    let guard = Arc::new(Guard::new(catalog));
    let decision =
        decide_on_small_stack(guard, common::tickets::guard_scope("analyst"), sql.clone());
    let Decision::Allow(allowed) = decision else {
        panic!("expected an allow: {decision:?}");
    };
    assert_eq!(
        allowed
            .sql
            .matches("FROM \"public\".\"burial_2024\"")
            .count(),
        1
    );
    assert!(allowed.sql.len() < 2 * sql.len(), "{}", allowed.sql.len());
}

#[test]
fn nested_recursive_ctes_have_a_bounded_cost() {
    // Red team round 8: each recursive CTE iterates its recursive term to a
    // provenance fixpoint; nested ones multiplied the rounds (2 KB took
    // 74 s). One budget per statement bounds them.
    let sql = include_str!("fixtures/nested_recursive_ctes.sql")
        .trim()
        .to_string();
    let catalog = Arc::new(Catalog::load_dir(&common::repo().join("catalog")).unwrap());
    let guard = Arc::new(Guard::new(catalog));
    let decision = decide_on_small_stack(guard, common::tickets::guard_scope("clinician"), sql);
    assert!(
        matches!(&decision, Decision::Deny(d) if d.code == "0A000" && d.reason.contains("recursive")),
        "{decision:?}"
    );
}
