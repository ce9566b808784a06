//! Privacy in tickets (issue 14, DESIGN 3.7): the shipped FOIA policy
//! imposes it; a request may ask for it on its own (honoured, and narrowed
//! by policy, never widened); bad values are refused naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use esq::app::App;
use esq::privacy::Privacy;
use esq::tickets::{IssueError, IssuedTicket, TicketRequest};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap()
}

fn privacy(per_query: f64, budget: f64, period: u64, bound: u32) -> Privacy {
    Privacy {
        epsilon_per_query: per_query,
        epsilon_budget: budget,
        budget_period_seconds: period,
        max_groups_per_unit: bound,
    }
}

fn request(fields: &[&str], aggregate: Option<&str>, asked: Option<Privacy>) -> TicketRequest {
    TicketRequest {
        dataset: "burial_2024".into(),
        purpose: "FOIA aggregation".into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        aggregate: aggregate.map(str::to_string),
        ttl: None,
        where_: BTreeMap::new(),
        privacy: asked,
        exception: None,
    }
}

async fn issue(app: &App, user: &str, request: &TicketRequest) -> Result<IssuedTicket, IssueError> {
    let principal = app.bundle().users.principal(user).unwrap().clone();
    app.bundle().tickets.issue(&principal, request, now()).await
}

#[tokio::test]
async fn the_foia_policy_makes_journalists_answers_private() {
    let app = common::shipped_app();
    let issued = issue(
        &app,
        "journalist",
        &request(&["state", "id"], Some("count"), None),
    )
    .await
    .unwrap();
    assert_eq!(issued.scope.privacy, Some(privacy(0.5, 4.0, 86_400, 1)));
    // The scope (and its id) says so.
    let json = serde_json::to_value(&issued.scope).unwrap();
    assert_eq!(json["privacy"]["epsilon_budget"], 4.0);
    assert_eq!(issued.scope.id, issued.scope.compute_id());
    let mut without = issued.scope.clone();
    without.privacy = None;
    assert_ne!(without.compute_id(), issued.scope.id);
}

#[tokio::test]
async fn a_requested_privacy_is_narrowed_by_the_policy_never_widened() {
    let app = common::shipped_app();
    let stricter = privacy(0.1, 1.0, 7 * 86_400, 1);
    let issued = issue(
        &app,
        "journalist",
        &request(&["state"], Some("count"), Some(stricter)),
    )
    .await
    .unwrap();
    assert_eq!(issued.scope.privacy, Some(stricter));
    let looser = privacy(2.0, 50.0, 3_600, 4);
    let issued = issue(
        &app,
        "journalist",
        &request(&["state"], Some("count"), Some(looser)),
    )
    .await
    .unwrap();
    assert_eq!(issued.scope.privacy, Some(privacy(0.5, 4.0, 86_400, 1)));
}

#[tokio::test]
async fn a_request_may_ask_for_privacy_on_its_own() {
    // No policy imposes privacy on a clinician's count; asking is enough.
    let app = common::shipped_app();
    let plain = issue(
        &app,
        "clinician",
        &request(&["state", "id"], Some("count"), None),
    )
    .await
    .unwrap();
    assert_eq!(plain.scope.privacy, None);
    let asked = privacy(1.0, 10.0, 3_600, 2);
    let private = issue(
        &app,
        "clinician",
        &request(&["state", "id"], Some("count"), Some(asked)),
    )
    .await
    .unwrap();
    assert_eq!(private.scope.privacy, Some(asked));
    assert_ne!(private.scope.id, plain.scope.id);
}

#[tokio::test]
async fn bad_privacy_values_are_refused_naming_the_field() {
    let app = common::shipped_app();
    let cases = [
        (privacy(0.0, 4.0, 86_400, 1), "privacy.epsilon_per_query"),
        (
            privacy(f64::NAN, 4.0, 86_400, 1),
            "privacy.epsilon_per_query",
        ),
        (privacy(0.5, 0.25, 86_400, 1), "privacy.epsilon_budget"),
        (privacy(0.5, 4.0, 30, 1), "privacy.budget_period_seconds"),
        (privacy(0.5, 4.0, 86_400, 0), "privacy.max_groups_per_unit"),
    ];
    for (asked, field) in cases {
        match issue(
            &app,
            "journalist",
            &request(&["state"], Some("count"), Some(asked)),
        )
        .await
        {
            Err(IssueError::BadRequest(bad)) => assert_eq!(bad.field, field, "{bad}"),
            other => panic!("{asked:?}: expected a bad request, got {other:?}"),
        }
    }
    // Private answers are counts.
    match issue(
        &app,
        "clinician",
        &request(&["state"], None, Some(privacy(0.5, 4.0, 86_400, 1))),
    )
    .await
    {
        Err(IssueError::BadRequest(bad)) => {
            assert_eq!(bad.field, "privacy");
            assert!(bad.message.contains("aggregate"), "{bad}");
        }
        other => panic!("expected a bad request, got {other:?}"),
    }
    // Unknown keys in the JSON body are refused too.
    let body = r#"{"dataset": "burial_2024", "purpose": "p", "fields": ["state"], "aggregate": "count",
                  "privacy": {"epsilon_per_query": 0.5, "epsilon_budget": 4, "budget_period_seconds": 86400, "delta": 0.1}}"#;
    assert!(serde_json::from_str::<TicketRequest>(body).is_err());
}
