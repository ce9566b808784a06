//! Guard decision cost: cold decisions (parse, confirm, analyse, rewrite,
//! render and re-confirm, with the cache disabled) and cache hits, with the
//! bare sqlparser and pg_query parses of the same statements as reference.
//!
//! `cargo bench --bench guard` (never run as a timed test in CI).

#![allow(clippy::expect_used)] // a benchmark may panic on bad setup

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};
use esq::tickets::{Aggregate, Scope};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

const QUERIES: &[(&str, bool, &str)] = &[
    ("foia_count_by_state", true, "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY 2 DESC"),
    ("foia_grouped_rewrite", true, "SELECT state, county, id FROM burial_2024 WHERE branch = 'Navy'"),
    ("analyst_star", false, "SELECT * FROM burial_2024 WHERE state = 'TX' AND burial_date >= DATE '2024-01-01' LIMIT 100"),
    (
        "analyst_bi_cte_join",
        false,
        "WITH s AS (SELECT state, count(*) AS n FROM burial_2024 GROUP BY state) \
         SELECT b.state, b.county, s.n FROM burial_2024 b JOIN s ON s.state = b.state \
         WHERE b.branch IN ('Army', 'Navy') ORDER BY s.n DESC LIMIT 20",
    ),
];

fn scope(aggregate: bool) -> Scope {
    let fields: Vec<String> = if aggregate {
        ["id", "state", "county", "burial_date", "branch"]
            .map(String::from)
            .to_vec()
    } else {
        ["state", "county", "burial_date", "branch"]
            .map(String::from)
            .to_vec()
    };
    Scope {
        id: format!("S-bench-{aggregate}"),
        dataset: "burial_2024".into(),
        fields,
        aggregate: aggregate.then_some(Aggregate::Count),
        min_group_size: 11,
        row_filters: Default::default(),
        retention_cutoff: NaiveDate::from_ymd_opt(2016, 11, 25),
        privacy: None,
        purpose: "bench".into(),
        user: "bench".into(),
        policy_ids: vec![],
        issued_at: Utc
            .with_ymd_and_hms(2026, 11, 25, 18, 0, 0)
            .single()
            .expect("time"),
        expires_at: Utc
            .with_ymd_and_hms(2026, 11, 25, 18, 5, 0)
            .single()
            .expect("time"),
        exception: None,
    }
}

fn benches(c: &mut Criterion) {
    let catalog = Arc::new(
        Catalog::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog"))
            .expect("catalog"),
    );
    let cold = Guard::with_cache_size(catalog.clone(), 0);
    let warm = Guard::new(catalog);
    for (name, aggregate, sql) in QUERIES {
        let scope = scope(*aggregate);
        assert!(
            matches!(cold.decide(Some(&scope), sql), Decision::Allow(_)),
            "{name} must be allowed"
        );
        let mut group = c.benchmark_group(*name);
        group.bench_function("sqlparser_parse", |b| {
            b.iter(|| Parser::parse_sql(&PostgreSqlDialect {}, std::hint::black_box(sql)))
        });
        group.bench_function("pg_query_parse", |b| {
            b.iter(|| pg_query::parse(std::hint::black_box(sql), 0))
        });
        group.bench_function("guard_cold", |b| {
            b.iter(|| cold.decide(Some(&scope), std::hint::black_box(sql)))
        });
        warm.decide(Some(&scope), sql);
        group.bench_function("guard_cache_hit", |b| {
            b.iter(|| warm.decide(Some(&scope), std::hint::black_box(sql)))
        });
        group.finish();
    }
}

criterion_group! {
    name = guard;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(guard);
