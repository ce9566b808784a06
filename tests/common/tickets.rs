//! The ticket requests and scopes tests share, in one place so that "the
//! FOIA request" means the same thing in every test: as JSON (for the HTTP
//! door and in-process issuing), as a typed [`TicketRequest`] (for the
//! stores), and the guard tests' scopes by name.

use chrono::{NaiveDate, TimeZone, Utc};
use esq::policy::FilterValue;
use esq::tickets::{Aggregate, Scope, TicketRequest};
use serde_json::{json, Value};

/// The seed story's request: a journalist's per-state counts (FOIA).
pub fn foia_request(ttl: &str) -> Value {
    json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
           "fields": ["state", "id"], "aggregate": "count", "ttl": ttl})
}

/// [`foia_request`] as the stores take it.
pub fn foia_ticket_request(ttl: &str) -> TicketRequest {
    serde_json::from_value(foia_request(ttl)).expect("the FOIA request is well-formed")
}

/// A clinician's row-level request (no PII beyond what treatment needs).
pub fn clinician_request() -> Value {
    json!({"dataset": "burial_2024", "purpose": "treatment of the patient in my care",
           "fields": ["state", "county", "burial_date"]})
}

/// The scopes the guard tests use, by name (see tests/guard_cases/*.yaml):
/// `foia` (count-only, k = 11), `foia_ca` (plus state = CA), `analyst`
/// (row-level, no PII), `analyst_ca`, `clinician` (row-level PII, no ssn),
/// `none` (no ticket). All issued 2026-11-25, retention cutoff 2016-11-25.
pub fn guard_scope(name: &str) -> Option<Scope> {
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
    Some(Scope {
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
        exception: None,
    })
}
