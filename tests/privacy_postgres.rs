//! Contribution bounding on a real PostgreSQL (issue 14): the private
//! rewrite, run as esq forwards it, counts a person at most once per group
//! and in at most L0 groups, whatever rows the person has; the unit column
//! never comes back. The exact rows then go through the release step in
//! the text and binary encodings PostgreSQL produced.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use esq::catalog::Catalog;
use esq::guard::{Allowed, Decision, Guard};
use esq::privacy::wire::TEXT;
use esq::privacy::{AnswerKey, ExactAnswer, Privacy, Releaser};
use esq::tickets::Scope;

fn private_scope(bound: u32) -> Scope {
    let mut scope = common::tickets::guard_scope("foia").unwrap();
    scope.privacy = Some(Privacy {
        epsilon_per_query: 1.0,
        epsilon_budget: 100.0,
        budget_period_seconds: 86_400,
        max_groups_per_unit: bound,
    });
    scope.id = scope.compute_id();
    scope
}

fn allow(scope: &Scope, sql: &str) -> Arc<Allowed> {
    let catalog = Catalog::load_dir(&common::repo().join("catalog")).unwrap();
    match Guard::new(Arc::new(catalog))
        .serving_private_answers()
        .decide(Some(scope), sql)
    {
        Decision::Allow(allowed) => allowed,
        Decision::Deny(denial) => panic!("{sql}: {} — {}", denial.reason, denial.detail),
    }
}

/// Person 1 has six rows in five branches (two in ARMY); persons 2–11 one
/// ARMY row each; person 12 one NAVY row, and a row too old to be seen;
/// two rows of no known person (NULL id), which are not counted.
/// No primary key: the table is a register of events, not of persons.
const SETUP: &str = "
CREATE TABLE public.burial_2024 (
    id bigint, name text, ssn text, dob date, state text, county text,
    burial_date date, branch text, cause_of_death text);
INSERT INTO public.burial_2024 (id, state, county, burial_date, branch) VALUES
    (1, 'CA', 'Alameda', '2024-01-01', 'ARMY'),
    (1, 'CA', 'Alameda', '2024-02-01', 'ARMY'),
    (1, 'CA', 'Alameda', '2024-03-01', 'NAVY'),
    (1, 'CA', 'Alameda', '2024-04-01', 'AIR FORCE'),
    (1, 'CA', 'Alameda', '2024-05-01', 'MARINE CORPS'),
    (1, 'CA', 'Alameda', '2024-06-01', 'COAST GUARD'),
    (12, 'NV', 'Clark', '2024-01-01', 'NAVY'),
    (12, 'NV', 'Clark', '2001-01-01', 'SPACE FORCE'),
    (NULL, 'CA', 'Kern', '2024-08-01', 'COAST GUARD'),
    (NULL, 'CA', 'Kern', '2024-08-01', 'NAVY');
INSERT INTO public.burial_2024 (id, state, county, burial_date, branch)
    SELECT n, 'CA', 'Kern', '2024-07-01', 'ARMY' FROM generate_series(2, 11) AS n;
";

async fn database() -> common::postgres::TestPostgres {
    let pg = common::postgres::TestPostgres::start().await;
    pg.connect().await.batch_execute(SETUP).await.unwrap();
    pg
}

/// Runs `sql` and returns (column names, rows as branch → count).
async fn run(client: &tokio_postgres::Client, sql: &str) -> (Vec<String>, BTreeMap<String, i64>) {
    let rows = client.query(sql, &[]).await.unwrap();
    let names = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let counts = rows
        .iter()
        .map(|r| {
            let key: Option<String> = if r.len() > 1 { r.get(0) } else { None };
            (key.unwrap_or_default(), r.get::<_, i64>(r.len() - 1))
        })
        .collect();
    (names, counts)
}

#[tokio::test]
async fn a_unit_in_five_groups_counts_in_at_most_l0_once_each() {
    let pg = database().await;
    let client = pg.connect().await;
    for bound in [1u32, 2, 3] {
        let allowed = allow(
            &private_scope(bound),
            "SELECT branch, count(*) FROM burial_2024 GROUP BY branch",
        );
        let mut groups_of_person_1 = std::collections::BTreeSet::new();
        for _ in 0..30 {
            let (names, counts) = run(&client, &allowed.sql).await;
            assert_eq!(names, vec!["branch", "count"], "the unit never comes back");
            // Persons 2–11 and 12 count once each; person 1 in `bound`
            // groups, once each (never twice in ARMY despite two rows).
            let total: i64 = counts.values().sum();
            assert_eq!(total, 11 + i64::from(bound), "{counts:?}");
            let army = counts.get("ARMY").copied().unwrap_or(0);
            assert!((10..=11).contains(&army), "{counts:?}");
            let navy = counts.get("NAVY").copied().unwrap_or(0);
            assert!((1..=2).contains(&navy), "{counts:?}");
            for (branch, count) in &counts {
                let others = match branch.as_str() {
                    "ARMY" => 10,
                    "NAVY" => 1,
                    _ => 0,
                };
                assert!(*count - others <= 1, "{branch}: {count}");
                if *count > others {
                    groups_of_person_1.insert(branch.clone());
                }
            }
            // The row past retention is hidden.
            assert!(!counts.contains_key("SPACE FORCE"));
        }
        // The bounded groups are drawn at random, not always the same.
        assert!(
            groups_of_person_1.len() > bound as usize,
            "{groups_of_person_1:?}"
        );
    }
}

#[tokio::test]
async fn an_ungrouped_count_counts_persons_and_every_shape_runs() {
    let pg = database().await;
    let client = pg.connect().await;
    let scope = private_scope(2);
    let (names, counts) = run(
        &client,
        &allow(
            &scope,
            "SELECT count(*) FROM burial_2024 WHERE state = 'CA'",
        )
        .sql,
    )
    .await;
    assert_eq!(names, vec!["count"]);
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![11]);
    for sql in [
        "SELECT count(DISTINCT id) FROM burial_2024",
        "SELECT state, id FROM burial_2024",
        "SELECT b.state AS st, date_trunc('year', b.burial_date), count(b.id) AS n FROM public.burial_2024 AS b GROUP BY 1, 2 ORDER BY n DESC, st LIMIT 5 OFFSET 2",
        "SELECT branch, count(*) FROM burial_2024 WHERE state IN ('CA', 'NV') AND burial_date BETWEEN '2024-01-01' AND '2024-12-31' GROUP BY branch ORDER BY 2 DESC",
        "SELECT extract(month FROM burial_date) AS m, count(*) FROM burial_2024 WHERE burial_date >= DATE '2024-03-01' GROUP BY 1",
    ] {
        let allowed = allow(&scope, sql);
        let rows = client.query(&allowed.sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        for row in &rows {
            for column in row.columns() {
                assert!(!column.name().starts_with("esq_") && column.name() != "id", "{sql}");
            }
        }
    }
}

#[tokio::test]
async fn the_database_rows_release_in_their_own_encoding() {
    let pg = database().await;
    let client = pg.connect().await;
    let scope = private_scope(1);
    let allowed = allow(
        &scope,
        "SELECT state, count(*) FROM burial_2024 GROUP BY state",
    );
    // The text rows as the simple protocol carries them.
    let messages = client.simple_query(&allowed.sql).await.unwrap();
    let rows: Vec<Vec<Option<Bytes>>> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(|v| Bytes::copy_from_slice(v.as_bytes())))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2, "CA (11 persons) and NV (1)");
    let plan = allowed.private.clone().unwrap();
    let released = Releaser::memory()
        .release(
            &plan,
            &AnswerKey::simple("tester", &scope.id, &allowed.sql),
            ExactAnswer {
                rows,
                formats: vec![TEXT],
            },
        )
        .await
        .unwrap();
    // At ε = 1 the threshold is far above 11: both groups are held back,
    // and the answer is simply empty.
    assert!(released.rows.is_empty(), "{:?}", released.rows);
    assert!(released.charged);
}
