//! What privacy adds (issue 14): the guard's cold decision of the FOIA
//! query under a private ticket against the same query under k alone, and
//! the release step (OpenDP noise, threshold, memory ledger) on the 51
//! state groups of that query.
//!
//! `cargo bench --bench privacy` (never run as a timed test in CI).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark may panic on bad setup

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};
use esq::privacy::wire::{encode_int8, TEXT};
use esq::privacy::{AnswerKey, ExactAnswer, Privacy, Releaser};
use esq::tickets::{Aggregate, Scope};

const FOIA: &str = "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY 2 DESC";

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

fn benches(c: &mut Criterion) {
    let catalog = Arc::new(
        Catalog::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog"))
            .expect("catalog"),
    );
    let cold = Guard::with_cache_size(catalog, 0).serving_private_answers();
    let k_only = scope(None);
    let private = scope(Some(Privacy {
        epsilon_per_query: 0.5,
        epsilon_budget: 1e2,
        budget_period_seconds: 86_400,
        max_groups_per_unit: 1,
    }));
    let Decision::Allow(allowed) = cold.decide(Some(&private), FOIA) else {
        panic!("the private FOIA query must be allowed");
    };
    let plan = allowed.private.clone().expect("a plan");

    let mut group = c.benchmark_group("foia_count_by_state");
    group.bench_function("decide_cold_k_only", |b| {
        b.iter(|| cold.decide(Some(&k_only), std::hint::black_box(FOIA)))
    });
    group.bench_function("decide_cold_private", |b| {
        b.iter(|| cold.decide(Some(&private), std::hint::black_box(FOIA)))
    });

    // 51 groups from 10 to 60,000 burials, text encoded, as PostgreSQL sends them.
    let exact = ExactAnswer {
        rows: (0..51)
            .map(|i: i64| {
                vec![
                    Some(Bytes::from(format!("S{i:02}"))),
                    Some(encode_int8(10 + i * i * 23, TEXT)),
                ]
            })
            .collect(),
        formats: vec![],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let releaser = Releaser::memory();
    let fresh = AtomicU64::new(0);
    group.bench_function("release_51_groups_charged", |b| {
        b.iter(|| {
            // A new user each time: every release is charged, none recalled.
            let n = fresh.fetch_add(1, Ordering::Relaxed);
            let key = AnswerKey::simple(&format!("u{n}"), &private.id, &allowed.sql);
            runtime
                .block_on(releaser.release(&plan, &key, exact.clone()))
                .expect("released")
        })
    });
    let key = AnswerKey::simple("repeat", &private.id, &allowed.sql);
    group.bench_function("release_51_groups_recalled", |b| {
        b.iter(|| {
            runtime
                .block_on(releaser.release(&plan, &key, exact.clone()))
                .expect("released")
        })
    });
    group.finish();
}

criterion_group!(privacy, benches);
criterion_main!(privacy);
