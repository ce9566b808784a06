//! What tombstones cost the database (issue 16): the FOIA aggregate as
//! esq forwards it — private (contributions bounded per person) and k-only
//! — with no tombstone and with 1,000, run alternately on the same
//! PostgreSQL; the median of each and the ratio. The SQL is the guard's
//! own rewrite, so the filter measured is the one that hides forgotten
//! subjects (`("id" <> ALL('{…}')) IS NOT FALSE` in the derived table).
//!
//! ```sh
//! ESQ_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/db \
//!     cargo bench --bench tombstones      # the database holds `esq sample-data`
//! ```
//! Never run as a timed test in CI.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark may panic on bad setup

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};
use esq::lifecycle::Tombstones;
use esq::privacy::Privacy;
use esq::tickets::{Aggregate, Scope};

const FOIA: &str = "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY 2 DESC";
const TOMBSTONES: u64 = 1_000;
const ROUNDS: usize = 25;

fn scope(privacy: Option<Privacy>) -> Scope {
    let mut scope = Scope {
        id: String::new(),
        dataset: "burial_2024".into(),
        fields: ["id", "state", "county", "burial_date", "branch"]
            .map(String::from)
            .to_vec(),
        aggregate: Some(Aggregate::Count),
        min_group_size: 11,
        row_filters: Default::default(),
        retention_cutoff: NaiveDate::from_ymd_opt(2016, 11, 25),
        privacy,
        purpose: "bench".into(),
        user: "bench".into(),
        policy_ids: vec![],
        issued_at: Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap(),
        expires_at: Utc.with_ymd_and_hms(2026, 11, 25, 18, 5, 0).unwrap(),
        exception: None,
    };
    scope.id = scope.compute_id();
    scope
}

fn rewrite(tombstones: u64, scope: &Scope) -> String {
    let catalog = Arc::new(
        Catalog::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog"))
            .expect("catalog"),
    );
    let forgotten = Arc::new(Tombstones::none());
    // Spread over the ids of the sample data (1..=100,000).
    for i in 0..tombstones {
        forgotten.add("burial_2024", &(1 + i * 97 % 100_000).to_string());
    }
    let guard = Guard::new(catalog)
        .serving_private_answers()
        .with_tombstones(forgotten);
    match guard.decide(Some(scope), FOIA) {
        Decision::Allow(allowed) => allowed.sql.clone(),
        Decision::Deny(denial) => panic!("the FOIA query must be allowed: {denial:?}"),
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Ok(url) = std::env::var("ESQ_BENCH_DATABASE_URL") else {
        eprintln!("set ESQ_BENCH_DATABASE_URL to a database holding `esq sample-data`");
        return;
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("the bench database");
    tokio::spawn(connection);
    let private = Privacy {
        epsilon_per_query: 0.5,
        epsilon_budget: 4.0,
        budget_period_seconds: 86_400,
        max_groups_per_unit: 1,
    };
    for (name, scope) in [("private", scope(Some(private))), ("k-only", scope(None))] {
        let plain = rewrite(0, &scope);
        let hidden = rewrite(TOMBSTONES, &scope);
        assert_ne!(plain, hidden, "the tombstones must change the rewrite");
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS + 2 {
            for (sql, times) in [(&plain, &mut without), (&hidden, &mut with)] {
                let started = Instant::now();
                client.simple_query(sql).await.expect("the rewrite runs");
                if round >= 2 {
                    times.push(started.elapsed()); // the first rounds warm the cache
                }
            }
        }
        let (without, with) = (median(without), median(with));
        println!(
            "FOIA aggregate ({name}): {:.1} ms without tombstones, {:.1} ms with {TOMBSTONES}: +{:.1} %",
            without.as_secs_f64() * 1e3,
            with.as_secs_f64() * 1e3,
            (with.as_secs_f64() / without.as_secs_f64() - 1.0) * 100.0
        );
    }
}
