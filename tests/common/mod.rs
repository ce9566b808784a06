//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod harness;
pub mod postgres;
pub mod redis;
pub mod server;
pub mod webhook;

use std::path::PathBuf;

/// The repository root (where `config/`, `catalog/` and `policies/` are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Set for every esq a test starts: the policy time-out is wall-clock, and
/// on a loaded machine a descheduled evaluation must not deny a ticket.
pub const POLICY_EVAL_TIMEOUT: (&str, &str) = ("ESQ_POLICY__EVAL_TIMEOUT", "10s");

/// The shipped demo configuration.
pub fn shipped_config() -> PathBuf {
    repo().join("config/esq.toml")
}

/// Loads the shipped config, catalog and policies (no audit log opened).
pub fn shipped_app() -> esq::app::App {
    esq::app::App::load_without_audit_log(&shipped_config())
        .expect("the shipped configuration loads")
}

/// The scopes the guard tests use, by name (see tests/guard_cases/*.yaml):
/// `foia` (count-only, k = 11), `foia_ca` (plus state = CA), `analyst`
/// (row-level, no PII), `analyst_ca`, `clinician` (row-level PII, no ssn),
/// `none` (no ticket). All issued 2026-11-25, retention cutoff 2016-11-25.
pub fn guard_scope(name: &str) -> Option<esq::tickets::Scope> {
    use chrono::{NaiveDate, TimeZone, Utc};
    use esq::policy::FilterValue;
    use esq::tickets::Aggregate;

    let fields = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let foia = fields(&["id", "state", "county", "burial_date", "branch"]);
    let analyst = fields(&["state", "county", "burial_date", "branch"]);
    let clinician = fields(&[
        "id",
        "name",
        "dob",
        "state",
        "county",
        "burial_date",
        "cause_of_death",
    ]);
    let (fields, aggregate, only_ca) = match name {
        "none" => return None,
        "foia" => (foia, Some(Aggregate::Count), false),
        "foia_ca" => (foia, Some(Aggregate::Count), true),
        "analyst" => (analyst, None, false),
        "analyst_ca" => (analyst, None, true),
        "clinician" => (clinician, None, false),
        other => panic!("unknown scope {other:?}"),
    };
    let mut row_filters = std::collections::BTreeMap::new();
    if only_ca {
        row_filters.insert("state".to_string(), FilterValue::Text("CA".into()));
    }
    Some(esq::tickets::Scope {
        id: format!("S-test-{name}"),
        dataset: "burial_2024".into(),
        fields,
        aggregate,
        min_group_size: 11,
        row_filters,
        retention_cutoff: NaiveDate::from_ymd_opt(2016, 11, 25),
        privacy: None,
        purpose: "tests".into(),
        user: "tester".into(),
        policy_ids: vec!["P-TEST".into()],
        issued_at: Utc
            .with_ymd_and_hms(2026, 11, 25, 18, 0, 0)
            .single()
            .expect("time"),
        expires_at: Utc
            .with_ymd_and_hms(2026, 11, 25, 18, 5, 0)
            .single()
            .expect("time"),
    })
}
