//! Privacy budgets (issue 14): spending down to a refusal that says when
//! the budget renews, repeats that spend nothing and return the same rows,
//! races that never overspend (memory ledger, and real Redis shared by two
//! handles as two replicas would), and a budget that survives a new handle
//! and a Redis restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use esq::privacy::wire::{encode_int8, TEXT};
use esq::privacy::{
    AnswerKey, Epsilon, ExactAnswer, Privacy, PrivacyRefusal, PrivatePlan, Releaser,
};
use esq::shared::{Redis, RedisTarget};

/// ε 0.5 per answer, 2.0 per day: four answers.
fn plan() -> PrivatePlan {
    PrivatePlan {
        dataset: "burial_2024".into(),
        count_column: 1,
        key_columns: vec![0],
        grouped: true,
        epsilon_per_query_micro: 500_000,
        epsilon_budget_micro: 2_000_000,
        budget_period_seconds: 86_400,
        max_groups_per_unit: 1,
        min_group_size: 11,
        order_by_count: None,
        offset: 0,
        limit: None,
    }
}

fn privacy() -> Privacy {
    Privacy {
        epsilon_per_query: 0.5,
        epsilon_budget: 2.0,
        budget_period_seconds: 86_400,
        max_groups_per_unit: 1,
    }
}

fn exact() -> ExactAnswer {
    let row = |key: &'static str, count: i64| {
        vec![
            Some(Bytes::from_static(key.as_bytes())),
            Some(encode_int8(count, TEXT)),
        ]
    };
    ExactAnswer {
        rows: vec![row("ARMY", 1_200), row("NAVY", 800), row("SPACE FORCE", 3)],
        formats: vec![],
    }
}

fn key(user: &str, sql: &str) -> AnswerKey {
    AnswerKey::simple(user, "S-foia", sql)
}

/// Spends the budget of `user` down: four answers, then a refusal.
async fn spend_to_refusal(releaser: &Releaser, user: &str) {
    // Now (Redis expires stored answers by its own clock), and when the
    // first spend leaves the sliding day.
    let now = Utc::now();
    let renews = chrono::DateTime::<Utc>::from_timestamp_millis(now.timestamp_millis()).unwrap()
        + chrono::Duration::days(1);
    for (i, remaining) in [1_500_000, 1_000_000, 500_000, 0].into_iter().enumerate() {
        let released = releaser
            .release_at(&plan(), &key(user, &format!("q{i}")), exact(), now)
            .await
            .unwrap();
        assert!(released.charged);
        assert_eq!(released.cost, Epsilon(500_000));
        assert_eq!(released.remaining, Epsilon(remaining));
    }
    let refusal = releaser
        .release_at(&plan(), &key(user, "q4"), exact(), now)
        .await
        .unwrap_err();
    assert_eq!(
        refusal,
        PrivacyRefusal::BudgetSpent {
            renews_at: renews,
            remaining: Epsilon(0),
            needed: Epsilon(500_000),
        }
    );
    // A statement answered before is still answered, free.
    let repeat = releaser
        .release_at(&plan(), &key(user, "q0"), exact(), now)
        .await
        .unwrap();
    assert!(!repeat.charged);
    assert_eq!(repeat.cost, Epsilon(0));
    // A day after the spends, the window is whole again.
    let tomorrow = releaser
        .release_at(&plan(), &key(user, "q4"), exact(), renews)
        .await
        .unwrap();
    assert_eq!(tomorrow.remaining, Epsilon(1_500_000));
    // Other users have budgets of their own.
    let other = releaser
        .release_at(&plan(), &key("someone-else", "q4"), exact(), now)
        .await
        .unwrap();
    assert_eq!(other.remaining, Epsilon(1_500_000));
}

/// One answer per statement: repeats return the same rows and spend nothing.
async fn repeats_are_free(releaser: &Releaser, user: &str) {
    let first = releaser
        .release(&plan(), &key(user, "same"), exact())
        .await
        .unwrap();
    for _ in 0..5 {
        let again = releaser
            .release(&plan(), &key(user, "same"), exact())
            .await
            .unwrap();
        assert_eq!(again.rows, first.rows);
        assert!(!again.charged);
        assert_eq!(again.spent, first.spent);
    }
    // LIMIT and ORDER BY count act on the stored noisy groups (they are not
    // in the rewritten SQL): the same answer, cut and sorted, for free.
    let cut = PrivatePlan {
        limit: Some(1),
        ..plan()
    };
    let first_only = releaser
        .release(&cut, &key(user, "same"), exact())
        .await
        .unwrap();
    assert!(!first_only.charged);
    assert_eq!(
        first_only.rows,
        first.rows[..1.min(first.rows.len())].to_vec()
    );
    let sorted = PrivatePlan {
        order_by_count: Some(esq::privacy::SortDirection::Asc),
        ..plan()
    };
    let ascending = releaser
        .release(&sorted, &key(user, "same"), exact())
        .await
        .unwrap();
    assert!(!ascending.charged);
    let mut expected = first.rows.clone();
    expected.sort_by_key(|r| esq::privacy::wire::decode_int8(r[1].as_ref(), TEXT).unwrap());
    assert_eq!(ascending.rows, expected);
    // A different parameter value, or result format, is another statement.
    let mut with_param = key(user, "same");
    with_param.params = vec![Some(Bytes::from_static(b"CA"))];
    let other = releaser
        .release(&plan(), &with_param, exact())
        .await
        .unwrap();
    assert!(other.charged);
    let status = releaser
        .status(user, "burial_2024", &privacy())
        .await
        .unwrap();
    assert_eq!(status.spent, 1.0);
    assert_eq!(status.remaining, 1.0);
}

/// `n` concurrent releases, all different (`same`: all identical), against
/// one budget of four answers; statements are named after `replica`.
/// Returns (charged, released).
async fn race(
    releaser: Arc<Releaser>,
    replica: &str,
    user: &str,
    n: usize,
    same: bool,
) -> (usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let releaser = releaser.clone();
        let sql = if same {
            "one".to_string()
        } else {
            format!("{replica} q{i}")
        };
        let key = key(user, &sql);
        tasks.push(tokio::spawn(async move {
            releaser.release(&plan(), &key, exact()).await
        }));
    }
    let mut charged = 0;
    let mut answers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(released) => {
                charged += usize::from(released.charged);
                answers.push(released.rows);
            }
            Err(PrivacyRefusal::BudgetSpent { .. }) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    if same {
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "one statement, several answers"
        );
    }
    (charged, answers.len())
}

#[tokio::test]
async fn memory_budget_spends_down_to_a_refusal_that_says_when_it_renews() {
    spend_to_refusal(&Releaser::memory(), "journalist").await;
}

#[tokio::test]
async fn memory_repeats_spend_nothing() {
    repeats_are_free(&Releaser::memory(), "journalist").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_races_never_overspend() {
    let releaser = Arc::new(Releaser::memory());
    assert_eq!(
        race(releaser.clone(), "a", "racer", 64, false).await,
        (4, 4)
    );
    let status = releaser
        .status("racer", "burial_2024", &privacy())
        .await
        .unwrap();
    assert_eq!(status.spent, 2.0);
    assert_eq!(race(releaser, "a", "twin", 32, true).await, (1, 32));
}

fn handle(url: &str) -> Arc<Redis> {
    Arc::new(Redis::new(
        RedisTarget::parse(url).unwrap(),
        Duration::from_secs(10),
    ))
}

#[tokio::test]
async fn redis_budget_spends_down_and_repeats_are_free() {
    let server = common::redis::TestRedis::start();
    let releaser = Releaser::redis(handle(&server.url()));
    spend_to_refusal(&releaser, "journalist").await;
    repeats_are_free(&releaser, "reporter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_replicas_racing_never_overspend_and_see_one_budget() {
    let server = common::redis::TestRedis::start();
    // Two handles: two replicas sharing one Redis.
    let a = Arc::new(Releaser::redis(handle(&server.url())));
    let b = Arc::new(Releaser::redis(handle(&server.url())));
    let (ra, rb) = tokio::join!(
        race(a.clone(), "a", "racer", 40, false),
        race(b.clone(), "b", "racer", 40, false)
    );
    assert_eq!(ra.0 + rb.0, 4, "charged {} + {}", ra.0, rb.0);
    assert_eq!(ra.1 + rb.1, 4);
    let seen_a = a.status("racer", "burial_2024", &privacy()).await.unwrap();
    let seen_b = b.status("racer", "burial_2024", &privacy()).await.unwrap();
    assert_eq!((seen_a.spent, seen_a.remaining), (2.0, 0.0));
    assert_eq!(seen_a, seen_b);
    // Identical statements racing on both replicas: one charge, one answer.
    let (ta, tb) = tokio::join!(
        race(a, "a", "twin", 20, true),
        race(b, "b", "twin", 20, true)
    );
    assert_eq!(ta.0 + tb.0, 1);
    assert_eq!(ta.1 + tb.1, 40);
}

#[tokio::test]
async fn redis_budget_survives_a_new_handle_and_a_redis_restart() {
    let mut server = common::redis::TestRedis::start();
    let first = Releaser::redis(handle(&server.url()));
    let answer = first
        .release(&plan(), &key("j", "q"), exact())
        .await
        .unwrap();
    first
        .release(&plan(), &key("j", "r"), exact())
        .await
        .unwrap();
    // esq restarts: a new handle sees the spend and recalls the answer.
    let second = Releaser::redis(handle(&server.url()));
    let status = second.status("j", "burial_2024", &privacy()).await.unwrap();
    assert_eq!(status.spent, 1.0);
    let recalled = second
        .release(&plan(), &key("j", "q"), exact())
        .await
        .unwrap();
    assert_eq!(recalled.rows, answer.rows);
    assert!(!recalled.charged);
    // Redis restarts (append-only file): still there.
    server.restart();
    let third = Releaser::redis(handle(&server.url()));
    assert_eq!(
        third
            .status("j", "burial_2024", &privacy())
            .await
            .unwrap()
            .spent,
        1.0
    );
    // Redis down: refused, never released (fail closed).
    server.kill();
    let down = third.release(&plan(), &key("j", "s"), exact()).await;
    assert!(
        matches!(down, Err(PrivacyRefusal::Unavailable(_))),
        "{down:?}"
    );
}
