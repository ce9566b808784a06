//! The guard under a private ticket (issue 14): counts are rewritten into
//! the contribution-bounded form (DISTINCT unit per group, at most L0
//! groups per unit, no `HAVING count(*) >= k`), IN lists and ranges become
//! allowed, and the plan tells the release step what to do. Everything else
//! keeps the closed grammar.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;

use esq::catalog::Catalog;
use esq::guard::{Allowed, Decision, Guard};
use esq::privacy::{Privacy, SortDirection};
use esq::tickets::Scope;

/// The `foia` guard scope (count-only, k = 11) with the FOIA policy's
/// privacy; `bound` is L0; `fields` replaces the ticket's fields.
fn private_scope(bound: u32, fields: Option<&[&str]>) -> Scope {
    let mut scope = common::tickets::guard_scope("foia").unwrap();
    scope.privacy = Some(Privacy {
        epsilon_per_query: 0.5,
        epsilon_budget: 4.0,
        budget_period_seconds: 86_400,
        max_groups_per_unit: bound,
    });
    if let Some(fields) = fields {
        scope.fields = fields.iter().map(|f| f.to_string()).collect();
    }
    scope.id = scope.compute_id();
    scope
}

fn guard() -> Guard {
    let catalog = Catalog::load_dir(&common::repo().join("catalog")).unwrap();
    Guard::new(Arc::new(catalog)).serving_private_answers()
}

fn allow(scope: &Scope, sql: &str) -> Arc<Allowed> {
    match guard().decide(Some(scope), sql) {
        Decision::Allow(allowed) => {
            // The forwarded text round-trips (it was rendered and re-read
            // by both parsers): what PostgreSQL runs is what was analysed.
            let reparsed = sqlparser::parser::Parser::parse_sql(
                &sqlparser::dialect::PostgreSqlDialect {},
                &allowed.sql,
            )
            .unwrap();
            assert_eq!(reparsed.len(), 1);
            assert_eq!(reparsed[0].to_string(), allowed.sql);
            assert_eq!(
                pg_query::split_with_parser(&allowed.sql).map(|s| s.len()),
                Ok(1)
            );
            allowed
        }
        Decision::Deny(denial) => panic!("{sql}\n denied: {} — {}", denial.reason, denial.detail),
    }
}

fn deny(scope: &Scope, sql: &str) -> String {
    match guard().decide(Some(scope), sql) {
        Decision::Allow(allowed) => panic!("{sql}\n allowed: {}", allowed.sql),
        Decision::Deny(denial) => {
            assert_eq!(denial.code, "42501", "{sql}: {}", denial.reason);
            format!("{} {} {}", denial.reason, denial.detail, denial.hint)
        }
    }
}

const GOVERNED: &str = r#"(SELECT "id", "state", "county", "burial_date", "branch" FROM "public"."burial_2024" WHERE "burial_date" >= DATE '2016-11-25' OFFSET 0) AS "burial_2024""#;

#[test]
fn a_grouped_count_is_bounded_per_unit_and_per_group() {
    let scope = private_scope(1, None);
    let allowed = allow(
        &scope,
        "SELECT branch, count(*) FROM burial_2024 WHERE state = 'CA' GROUP BY branch",
    );
    assert_eq!(
        allowed.sql,
        format!(
            r#"SELECT "esq_k1" AS "branch", count(*) AS "count" FROM (SELECT "esq_k1", row_number() OVER (PARTITION BY "esq_unit" ORDER BY random()) AS "esq_rank" FROM (SELECT DISTINCT "burial_2024"."id" AS "esq_unit", branch AS "esq_k1" FROM {GOVERNED} WHERE (state = 'CA') AND "burial_2024"."id" IS NOT NULL) AS "esq_units") AS "esq_bounded" WHERE "esq_rank" <= 1 GROUP BY "esq_k1" ORDER BY "esq_k1""#
        )
    );
    assert!(!allowed.sql.contains(">= 11"), "no HAVING count(*) >= k");
    let plan = allowed.private.as_ref().expect("a private plan");
    assert_eq!(plan.count_column, 1);
    assert_eq!(plan.key_columns, vec![0]);
    assert!(plan.grouped);
    assert_eq!(plan.epsilon_per_query_micro, 500_000);
    assert_eq!(plan.epsilon_budget_micro, 4_000_000);
    assert_eq!(plan.max_groups_per_unit, 1);
    assert_eq!(plan.min_group_size, 11);
    assert_eq!(plan.dataset, "burial_2024");
}

#[test]
fn an_ungrouped_count_counts_each_unit_once() {
    let scope = private_scope(3, None);
    let allowed = allow(
        &scope,
        "SELECT count(*) FROM burial_2024 WHERE state = 'CA'",
    );
    assert_eq!(
        allowed.sql,
        format!(
            r#"SELECT count(*) AS "count" FROM (SELECT DISTINCT "burial_2024"."id" AS "esq_unit" FROM {GOVERNED} WHERE (state = 'CA') AND "burial_2024"."id" IS NOT NULL) AS "esq_units""#
        )
    );
    let plan = allowed.private.as_ref().unwrap();
    assert!(!plan.grouped);
    assert_eq!((plan.count_column, plan.key_columns.len()), (0, 0));
}

#[test]
fn the_bound_the_keys_and_the_names_carry_through() {
    let scope = private_scope(3, None);
    let allowed = allow(
        &scope,
        "SELECT b.state AS st, date_trunc('year', b.burial_date), count(b.id) AS n FROM public.burial_2024 AS b GROUP BY 1, 2 ORDER BY n DESC, st LIMIT 5 OFFSET 2",
    );
    assert!(
        allowed.sql.contains(r#""esq_rank" <= 3"#),
        "{}",
        allowed.sql
    );
    assert!(
        allowed.sql.starts_with(
            r#"SELECT "esq_k1" AS "st", "esq_k2" AS "date_trunc", count(*) AS "n" FROM"#
        ),
        "{}",
        allowed.sql
    );
    assert!(
        allowed.sql.contains(
            r#"SELECT DISTINCT "b"."id" AS "esq_unit", b.state AS "esq_k1", date_trunc('year', b.burial_date) AS "esq_k2" FROM"#
        ),
        "{}",
        allowed.sql
    );
    // count(id) counts units with a known id.
    assert!(allowed.sql.contains("b.id IS NOT NULL"), "{}", allowed.sql);
    // Sorting by the count and LIMIT/OFFSET move to the release step.
    assert!(
        allowed
            .sql
            .ends_with(r#"GROUP BY "esq_k1", "esq_k2" ORDER BY "esq_k1", "esq_k2""#),
        "{}",
        allowed.sql
    );
    let plan = allowed.private.as_ref().unwrap();
    assert_eq!(plan.order_by_count, Some(SortDirection::Desc));
    assert_eq!((plan.offset, plan.limit), (2, Some(5)));
    assert_eq!(
        (plan.count_column, plan.key_columns.clone()),
        (2, vec![0, 1])
    );
}

#[test]
fn the_unit_is_read_but_never_output_even_when_the_ticket_lacks_it() {
    let scope = private_scope(1, Some(&["state", "branch"]));
    let allowed = allow(
        &scope,
        "SELECT state, count(*) FROM burial_2024 GROUP BY state",
    );
    // The derived table carries the unit for the rewrite …
    assert!(
        allowed
            .sql
            .contains(r#"(SELECT "state", "branch", "id" FROM "public"."burial_2024""#),
        "{}",
        allowed.sql
    );
    // … the output has the key and the count only …
    assert!(allowed
        .sql
        .starts_with(r#"SELECT "esq_k1" AS "state", count(*) AS "count" FROM"#));
    // … and the user still cannot name it.
    deny(
        &scope,
        "SELECT state, count(id) FROM burial_2024 GROUP BY state",
    );
    deny(&scope, "SELECT count(DISTINCT id) FROM burial_2024");
}

#[test]
fn row_level_queries_become_private_counts() {
    let scope = private_scope(1, None);
    let allowed = allow(&scope, "SELECT state, id FROM burial_2024");
    assert!(allowed
        .sql
        .starts_with(r#"SELECT "esq_k1" AS "state", count(*) AS "count" FROM"#));
    assert!(
        allowed
            .sql
            .contains(r#"WHERE "burial_2024"."id" IS NOT NULL AND id IS NOT NULL"#),
        "{}",
        allowed.sql
    );
    assert!(allowed.private.is_some());
}

#[test]
fn in_lists_ranges_and_counting_units_become_allowed() {
    let scope = private_scope(1, None);
    let k_only = common::tickets::guard_scope("foia").unwrap();
    for sql in [
        "SELECT branch, count(*) FROM burial_2024 WHERE state IN ('CA', 'NV') GROUP BY branch",
        "SELECT count(*) FROM burial_2024 WHERE burial_date >= '2020-01-01' AND burial_date < DATE '2021-01-01'",
        "SELECT state, count(*) FROM burial_2024 WHERE burial_date BETWEEN '2020-01-01' AND '2020-12-31' GROUP BY state",
        "SELECT count(DISTINCT id) FROM burial_2024 WHERE state = 'CA'",
    ] {
        let allowed = allow(&scope, sql);
        assert!(allowed.private.is_some());
        deny(&k_only, sql);
    }
    // count(DISTINCT id) is the number of persons: count(*) over units.
    let distinct = allow(&scope, "SELECT count(DISTINCT id) FROM burial_2024");
    assert!(
        distinct.sql.contains("AND id IS NOT NULL"),
        "{}",
        distinct.sql
    );
}

#[test]
fn the_closed_grammar_still_holds_under_privacy() {
    let scope = private_scope(1, None);
    for (sql, expected) in [
        (
            "SELECT count(DISTINCT branch) FROM burial_2024 WHERE state = 'CA'",
            "count(DISTINCT branch)",
        ),
        (
            "SELECT state, count(DISTINCT county) FROM burial_2024 GROUP BY state",
            "DISTINCT county",
        ),
        (
            "SELECT state, count(*) FROM burial_2024 GROUP BY state HAVING count(*) > 100",
            "HAVING",
        ),
        (
            "SELECT state, count(*), count(id) FROM burial_2024 GROUP BY state",
            "one count",
        ),
        (
            "SELECT count(*) FROM burial_2024 WHERE state = 'CA' OR state = 'NV'",
            "WHERE",
        ),
        (
            "SELECT count(*) FROM burial_2024 WHERE state LIKE 'C%'",
            "WHERE",
        ),
        ("SELECT count(*) FROM burial_2024 WHERE id IN (1, 2)", "PII"),
        ("SELECT count(*) FROM burial_2024 WHERE id > 5", "PII"),
        (
            "SELECT count(*) FROM burial_2024 WHERE length(state) > 1",
            "WHERE",
        ),
        (
            "SELECT count(*) FROM burial_2024 WHERE state IN (SELECT state FROM burial_2024)",
            "WHERE",
        ),
        ("SELECT id, count(*) FROM burial_2024 GROUP BY id", "PII"),
        (
            "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY state, count(*)",
            "first sort key",
        ),
    ] {
        let text = deny(&scope, sql);
        assert!(text.contains(expected), "{sql}: {text}");
    }
    // LIMIT must be a number the release step can apply; no custom sort
    // operators; FETCH is written as LIMIT.
    for sql in [
        "SELECT state, count(*) FROM burial_2024 GROUP BY state LIMIT $1",
        "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY state USING <",
        "SELECT state, count(*) FROM burial_2024 GROUP BY state FETCH FIRST 3 ROWS ONLY",
    ] {
        match guard().decide(Some(&scope), sql) {
            Decision::Deny(denial) => assert_eq!(denial.code, "0A000", "{sql}"),
            Decision::Allow(allowed) => panic!("allowed: {}", allowed.sql),
        }
    }
}

#[test]
fn a_k_only_ticket_refuses_count_distinct_with_a_teaching_error() {
    let k_only = common::tickets::guard_scope("foia_ca").unwrap();
    let Decision::Deny(denial) = guard().decide(
        Some(&k_only),
        "SELECT count(DISTINCT branch) FROM burial_2024 WHERE state = 'CA'",
    ) else {
        panic!("count(DISTINCT) allowed under a k-only ticket");
    };
    assert_eq!(denial.code, "42501");
    assert!(denial.reason.contains("differencing"), "{}", denial.reason);
    assert!(denial.hint.contains("privacy"), "{}", denial.hint);
    // The rest of the k-only grammar is unchanged.
    let Decision::Allow(allowed) = guard().decide(
        Some(&k_only),
        "SELECT branch, count(*) FROM burial_2024 GROUP BY branch",
    ) else {
        panic!("k-only count denied");
    };
    assert!(allowed.private.is_none());
    assert!(allowed.sql.contains("HAVING count(*) >= 11"));
}

#[test]
fn privacy_is_part_of_the_scope_id() {
    let k_only = common::tickets::guard_scope("foia").unwrap();
    let mut recomputed = k_only.clone();
    recomputed.id = recomputed.compute_id();
    let private = private_scope(1, None);
    assert_ne!(private.id, recomputed.id);
    assert_ne!(private_scope(2, None).id, private.id);
}

#[test]
fn without_a_release_step_private_counts_are_refused_not_sent_exact() {
    let catalog = Catalog::load_dir(&common::repo().join("catalog")).unwrap();
    let plain = Guard::new(Arc::new(catalog));
    let scope = private_scope(1, None);
    match plain.decide(
        Some(&scope),
        "SELECT state, count(*) FROM burial_2024 GROUP BY state",
    ) {
        Decision::Deny(denial) => {
            assert_eq!(denial.code, "0A000");
            assert!(denial
                .detail
                .contains("refuses rather than send exact counts"));
        }
        Decision::Allow(allowed) => panic!("allowed without a release step: {}", allowed.sql),
    }
}

#[test]
fn a_private_query_goes_alone_in_its_statement_string() {
    // Red team (issue 14, F5): the release replaces the string's one
    // result, so SET, BEGIN or a second statement beside it are refused.
    let scope = private_scope(1, None);
    for sql in [
        "BEGIN; SELECT state, count(*) FROM burial_2024 GROUP BY state",
        "SELECT state, count(*) FROM burial_2024 GROUP BY state; COMMIT",
        "SET application_name = 'x'; SELECT count(*) FROM burial_2024",
        "SELECT count(*) FROM burial_2024; SHOW DateStyle",
    ] {
        let reason = deny(&scope, sql);
        assert!(reason.contains("alone"), "{sql}: {reason}");
    }
    allow(&scope, "SELECT count(*) FROM burial_2024");
}
