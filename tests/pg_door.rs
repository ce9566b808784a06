//! The PostgreSQL door end to end: real psql, pgbench and drivers talk to
//! esq (started in-process on a free port), which talks to a real
//! PostgreSQL with the sample data.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::harness::{Esq, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_scram_sees_metadata_foia_counts_and_denials() {
    let esq = Esq::start(Options::default()).await;
    let url = esq.libpq_url("journalist", "journalist");

    // Metadata works without a ticket.
    let (status, out, err) = esq.psql(&url, None, &["\\dt", "\\d burial_2024"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("burial_2024"), "{out}");
    assert!(out.contains("burial_date"), "{out}");

    // Without a ticket, data is refused with a hint on how to get one.
    let (_, _, err) = esq
        .psql(&url, None, &["SELECT state, count(*) FROM burial_2024 GROUP BY state"])
        .await;
    assert!(err.contains("SET esq.ticket"), "{err}");

    // The FOIA story: per-state counts, small states suppressed.
    let ticket = esq.foia_ticket().await;
    let (status, out, err) = esq
        .psql(
            &url,
            None,
            &[
                &format!("SET esq.ticket = '{ticket}'"),
                "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY state",
            ],
        )
        .await;
    assert_eq!(status, 0, "{err}");
    let counts: Vec<i64> = out
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    assert!(counts.len() > 40, "{out}");
    assert!(counts.iter().all(|c| *c >= 11), "small groups suppressed: {out}");

    // PII is denied with SQLSTATE 42501 and a hint.
    let (_, _, err) = esq
        .psql(
            &url,
            Some(&format!("-c esq.ticket={ticket}")),
            &["\\set VERBOSITY verbose", "SELECT ssn FROM burial_2024"],
        )
        .await;
    assert!(err.contains("42501"), "{err}");
    assert!(err.contains("HINT"), "{err}");

    // A wrong password is refused.
    let (status, _, err) = esq
        .psql(&esq.libpq_url("journalist", "wrong"), None, &["SELECT 1"])
        .await;
    assert_ne!(status, 0);
    assert!(err.contains("password authentication failed"), "{err}");
}
