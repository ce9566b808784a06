//! Ticket issuance end to end over the shipped catalog and Rego policies:
//! each policy allows what it should (with its obligations) and denies what
//! it should, with reasons and alternatives.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use esq::app::App;
use esq::policy::FilterValue;
use esq::tickets::{Aggregate, IssueError, IssuedTicket, TicketRequest};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0)
        .single()
        .expect("valid time")
}

fn request(fields: &[&str], aggregate: Option<&str>, purpose: &str) -> TicketRequest {
    TicketRequest {
        dataset: "burial_2024".into(),
        purpose: purpose.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        aggregate: aggregate.map(str::to_string),
        ttl: None,
        where_: BTreeMap::new(),
        privacy: None,
        exception: None,
    }
}

async fn issue(app: &App, user: &str, request: &TicketRequest) -> Result<IssuedTicket, IssueError> {
    let principal = app
        .bundle()
        .users
        .principal(user)
        .expect("configured user")
        .clone();
    app.bundle().tickets.issue(&principal, request, now()).await
}

async fn denied(app: &App, user: &str, request: &TicketRequest) -> esq::policy::Verdict {
    match issue(app, user, request).await {
        Err(IssueError::Denied(verdict)) => *verdict,
        other => panic!("expected a policy denial, got {other:?}"),
    }
}

#[tokio::test]
async fn foia_journalist_gets_a_count_ticket_with_k_and_retention() {
    let app = common::shipped_app();
    let issued = issue(
        &app,
        "journalist",
        &request(&["state", "id"], Some("count"), "FOIA aggregation"),
    )
    .await
    .expect("allowed");
    assert!(issued.ticket.starts_with("T-"));
    assert_eq!(issued.expires, "5m");
    assert_eq!(issued.expires_at, "2026-11-25T18:05:00Z");
    let scope = &issued.scope;
    assert_eq!(scope.fields, vec!["id", "state"], "catalog order");
    assert_eq!(scope.aggregate, Some(Aggregate::Count));
    assert_eq!(scope.min_group_size, 11);
    assert_eq!(
        scope.retention_cutoff.map(|d| d.to_string()).as_deref(),
        Some("2016-11-25")
    );
    assert!(scope.row_filters.is_empty());
    for id in ["P-FOIA-001", "P-HIPAA-001", "P-RET-001"] {
        assert!(
            scope.policy_ids.iter().any(|p| p == id),
            "{id} in {:?}",
            scope.policy_ids
        );
    }
    assert_eq!(scope.user, "journalist");
}

#[tokio::test]
async fn foia_refuses_ssn_with_an_alternative() {
    let app = common::shipped_app();
    let verdict = denied(
        &app,
        "journalist",
        &request(&["state", "ssn"], Some("count"), "FOIA"),
    )
    .await;
    assert!(
        verdict.denied_by.iter().any(|p| p == "P-FOIA-001"),
        "{verdict:?}"
    );
    assert!(
        verdict.reasons.iter().any(|r| r.contains("ssn")),
        "{verdict:?}"
    );
    assert!(
        verdict
            .alternatives
            .iter()
            .any(|a| a.contains("ssn") || a.contains("\"state\"")),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn foia_and_hipaa_refuse_row_level_answers_to_the_public() {
    let app = common::shipped_app();
    let verdict = denied(&app, "journalist", &request(&["state", "id"], None, "FOIA")).await;
    assert!(
        verdict.denied_by.iter().any(|p| p == "P-FOIA-001"),
        "{verdict:?}"
    );
    assert!(
        verdict.denied_by.iter().any(|p| p == "P-HIPAA-001"),
        "{verdict:?}"
    );
    assert!(
        verdict.alternatives.iter().any(|a| a.contains("count")),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn hipaa_gives_clinicians_short_row_level_phi_for_treatment() {
    let app = common::shipped_app();
    let mut req = request(
        &["name", "dob", "cause_of_death"],
        None,
        "treatment of patient 4711",
    );
    req.ttl = Some("60m".into());
    let issued = issue(&app, "clinician", &req)
        .await
        .expect("allowed for treatment");
    assert_eq!(issued.scope.aggregate, None);
    assert_eq!(issued.expires, "15m", "HIPAA caps row-level PHI tickets");
    assert!(issued.scope.policy_ids.iter().any(|p| p == "P-HIPAA-001"));
}

#[tokio::test]
async fn hipaa_refuses_row_level_phi_without_a_treatment_purpose() {
    let app = common::shipped_app();
    let verdict = denied(
        &app,
        "clinician",
        &request(&["name", "dob"], None, "curiosity"),
    )
    .await;
    assert_eq!(verdict.denied_by, vec!["P-HIPAA-001"]);
    assert!(!verdict.reasons.is_empty());
    assert!(!verdict.alternatives.is_empty());
}

#[tokio::test]
async fn state_attribute_becomes_a_row_filter() {
    let app = common::shipped_app();
    let issued = issue(
        &app,
        "ca_official",
        &request(&["state", "id"], Some("count"), "state report"),
    )
    .await
    .expect("allowed");
    assert_eq!(
        issued.scope.row_filters,
        BTreeMap::from([("state".to_string(), FilterValue::Text("CA".into()))])
    );
    assert!(issued
        .scope
        .policy_ids
        .iter()
        .any(|p| p == "P-ABAC-STATE-001"));
}

#[tokio::test]
async fn state_official_cannot_ask_for_another_state() {
    let app = common::shipped_app();
    let mut req = request(&["state", "id"], Some("count"), "state report");
    req.where_.insert("state".into(), serde_json::json!("NY"));
    let verdict = denied(&app, "ca_official", &req).await;
    assert_eq!(verdict.denied_by, vec!["P-ABAC-STATE-001"]);
    assert!(
        verdict.reasons.iter().any(|r| r.contains("CA")),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn a_user_without_an_entitled_role_gets_nothing_from_phi_data() {
    let app = common::shipped_app();
    for req in [
        request(&["state"], Some("count"), "looking"),
        request(&["state", "county"], None, "looking"),
    ] {
        let verdict = denied(&app, "admin", &req).await;
        assert!(
            verdict.denied_by.iter().any(|p| p == "P-HIPAA-001"),
            "{verdict:?}"
        );
        assert!(
            verdict.reasons.iter().any(|r| r.contains("entitled roles")),
            "{verdict:?}"
        );
    }
}

#[tokio::test]
async fn malformed_requests_name_the_bad_field() {
    let app = common::shipped_app();
    let base = request(&["state", "id"], Some("count"), "FOIA");
    let cases: Vec<(TicketRequest, &str, &str)> = vec![
        (
            TicketRequest {
                dataset: "nope".into(),
                ..base.clone()
            },
            "dataset",
            "burial_2024",
        ),
        (
            TicketRequest {
                fields: vec![],
                ..base.clone()
            },
            "fields",
            "at least one",
        ),
        (
            TicketRequest {
                fields: vec!["salary".into()],
                ..base.clone()
            },
            "fields",
            "salary",
        ),
        (
            TicketRequest {
                aggregate: Some("sum".into()),
                ..base.clone()
            },
            "aggregate",
            "count",
        ),
        (
            TicketRequest {
                purpose: "  ".into(),
                ..base.clone()
            },
            "purpose",
            "why",
        ),
        (
            TicketRequest {
                ttl: Some("2h".into()),
                ..base.clone()
            },
            "ttl",
            "maximum",
        ),
        (
            TicketRequest {
                ttl: Some("soon".into()),
                ..base.clone()
            },
            "ttl",
            "duration",
        ),
        (
            TicketRequest {
                where_: BTreeMap::from([("ssn".to_string(), serde_json::json!("123-45-6789"))]),
                ..base.clone()
            },
            "where.ssn",
            "PII",
        ),
        (
            TicketRequest {
                where_: BTreeMap::from([("state".to_string(), serde_json::json!(["CA"]))]),
                ..base.clone()
            },
            "where.state",
            "string",
        ),
    ];
    for (req, field, text) in cases {
        match issue(&app, "journalist", &req).await {
            Err(IssueError::BadRequest(bad)) => {
                assert_eq!(bad.field, field, "{bad}");
                assert!(bad.message.contains(text), "{bad}");
            }
            other => panic!("expected bad request on {field}, got {other:?}"),
        }
    }
}

#[test]
fn unknown_request_keys_are_refused() {
    let json = r#"{"dataset":"burial_2024","purpose":"x","fields":["state"],"agregate":"count"}"#;
    let err = serde_json::from_str::<TicketRequest>(json).expect_err("unknown key");
    assert!(err.to_string().contains("agregate"), "{err}");
}
