//! Tombstones in the guard: a forgotten subject is hidden from every
//! answer at once — its own dataset and the datasets linked to it —, a
//! decision made before a forget is made again, and until esq has read its
//! tombstones nothing of a dataset with subjects is answered. The rewritten
//! SQL runs on a real PostgreSQL holding the subject's rows (as after a
//! backup restore) and counts none of them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;

use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};
use esq::lifecycle::tombstones::{Loaded, Tombstones};
use esq::tickets::Scope;

use common::postgres::TestPostgres;
use common::upstream::load_sample_data;

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::load_dir(&common::repo().join("catalog")).unwrap())
}

fn notes_scope() -> Scope {
    let mut scope = common::tickets::guard_scope("analyst").unwrap();
    scope.id = "S-test-notes".into();
    scope.dataset = "staff_notes".into();
    scope.fields = ["id", "veteran_id", "topic", "note_date"]
        .iter()
        .map(|f| f.to_string())
        .collect();
    scope.retention_cutoff = None;
    scope
}

fn allowed(decision: Decision) -> String {
    match decision {
        Decision::Allow(allowed) => allowed.sql.clone(),
        Decision::Deny(denial) => panic!("denied: {denial:?}"),
    }
}

#[test]
fn a_forgotten_subject_is_hidden_in_its_dataset_and_the_linked_one_at_once() {
    let tombstones = Arc::new(Tombstones::none());
    let guard = Guard::new(catalog()).with_tombstones(tombstones.clone());
    let clinician = common::tickets::guard_scope("clinician").unwrap();
    let sql = "SELECT id, name FROM burial_2024 WHERE state = 'CA'";
    let before = allowed(guard.decide(Some(&clinician), sql));
    assert!(!before.contains("ALL ("), "{before}");

    tombstones.add("burial_2024", "42");
    let after = allowed(guard.decide(Some(&clinician), sql));
    assert!(
        after.contains(r#"("id" <> ALL('{"42"}')) IS NOT FALSE"#),
        "the cached decision was made again under the new tombstone: {after}"
    );
    let notes = allowed(guard.decide(
        Some(&notes_scope()),
        "SELECT topic, note_date FROM staff_notes",
    ));
    assert!(
        notes.contains(r#"("veteran_id" <> ALL('{"42"}')) IS NOT FALSE"#),
        "{notes}"
    );
    // Aggregates read the same derived table.
    let counts = allowed(guard.decide(
        common::tickets::guard_scope("foia").as_ref(),
        "SELECT state, count(*) FROM burial_2024 GROUP BY state",
    ));
    assert!(counts.contains(r#"<> ALL('{"42"}')"#), "{counts}");
}

#[test]
fn until_the_tombstones_are_read_datasets_with_subjects_are_refused() {
    let tombstones = Arc::new(Tombstones::unread());
    let guard = Guard::new(catalog()).with_tombstones(tombstones.clone());
    for (scope, sql) in [
        (
            common::tickets::guard_scope("clinician").unwrap(),
            "SELECT name FROM burial_2024",
        ),
        (notes_scope(), "SELECT topic FROM staff_notes"),
    ] {
        match guard.decide(Some(&scope), sql) {
            Decision::Deny(denial) => {
                assert_eq!(denial.code, "55000", "{denial:?}");
                assert!(denial.detail.contains("tombstones"), "{denial:?}");
            }
            Decision::Allow(allowed) => {
                panic!("answered before the tombstones were read: {allowed:?}")
            }
        }
    }
    tombstones.merge(Loaded::default());
    allowed(guard.decide(
        common::tickets::guard_scope("clinician").as_ref(),
        "SELECT name FROM burial_2024",
    ));
}

#[tokio::test]
async fn the_rewrite_hides_restored_rows_on_a_real_database() {
    let pg = TestPostgres::start().await;
    let client = load_sample_data(&pg, 2_000).await;
    // Forget every fifth veteran with notes, plus keys that do not exist.
    let forgotten: Vec<i64> = (1..=2_000).filter(|id| id % 50 == 0).collect();
    // (The clinician's scope still hides rows past the 10-year retention.)
    let tombstones = Arc::new(Tombstones::none());
    for id in &forgotten {
        tombstones.add("burial_2024", &id.to_string());
    }
    tombstones.add("burial_2024", "999999");
    let guard = Guard::new(catalog()).with_tombstones(tombstones);
    // Counts the answer's rows that match `outer` (the test's own filter,
    // applied outside the guard's answer).
    let count = |sql: String, outer: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    &format!("SELECT count(*) FROM ({sql}) AS answer WHERE {outer}"),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, i64>(0)
        }
    };
    let mut clinician_all = common::tickets::guard_scope("clinician").unwrap();
    clinician_all.retention_cutoff = None;
    let rows = allowed(guard.decide(Some(&clinician_all), "SELECT id FROM burial_2024"));
    assert_eq!(
        count(rows.clone(), "id % 50 = 0").await,
        0,
        "a forgotten subject's row reached the answer"
    );
    let expected: i64 = client
        .query_one(
            "SELECT count(*) FROM burial_2024 WHERE id % 50 <> 0 AND burial_date >= DATE '2016-11-25'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        count(rows, "true").await,
        expected,
        "everyone else is answered"
    );

    let notes = allowed(guard.decide(Some(&notes_scope()), "SELECT veteran_id FROM staff_notes"));
    assert_eq!(
        count(notes.clone(), "veteran_id % 50 = 0").await,
        0,
        "a forgotten subject's note reached the answer"
    );
    assert!(count(notes, "true").await > 0, "other notes are answered");
    let present: i64 = client
        .query_one(
            "SELECT count(*) FROM staff_notes WHERE veteran_id % 50 = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(present > 0, "the database holds the hidden notes");
}

#[test]
fn thousands_of_forgotten_keys_fit_and_never_reach_the_audit_text() {
    let tombstones = Arc::new(Tombstones::none());
    for id in 1..=10_000u32 {
        tombstones.add("burial_2024", &(1_000_000 + id).to_string());
    }
    let guard = Guard::new(catalog()).with_tombstones(tombstones);
    let clinician = common::tickets::guard_scope("clinician").unwrap();
    let Decision::Allow(allowed) =
        guard.decide(Some(&clinician), "SELECT id, name FROM burial_2024")
    else {
        panic!("ten thousand tombstones must not make the dataset unanswerable");
    };
    assert!(allowed.sql.len() > 64 * 1024, "{}", allowed.sql.len());
    assert!(allowed.sql.contains("\"1004242\""));
    let recorded = allowed.recorded();
    assert!(
        !recorded.contains("1004242") && recorded.contains("'{<10000 forgotten>}'"),
        "the audit text keeps the count, not the keys: {recorded}"
    );
}
