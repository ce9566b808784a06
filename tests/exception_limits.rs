//! What an exception waiver can never do (issue 18, red-team passes 1–4):
//! lift an obligation (a waived FOIA denial keeps counts private, a waived
//! state scope keeps the user's state), outlive the approval policy (it is
//! asked again at each use), survive its withdrawal (its live tickets are
//! revoked), or store text that reads differently from what it holds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::exceptions::{actions, ask, decide, fixture, listing, naming, pending, under};
use common::http;
use reqwest::StatusCode;
use serde_json::json;

/// A waiver lifts a denial, never an obligation (red-team F2, F3): a
/// waived FOIA denial keeps its counts private, a waived state-scope
/// denial keeps the user's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiver_lifts_denials_never_obligations() {
    let esq = common::exceptions::fixture_as_shipped().await;

    // FOIA denies counting by date of birth; a steward waives it.
    let body = json!({"dataset": "burial_2024", "fields": ["state", "dob"], "aggregate": "count",
                      "purpose": "age at burial", "justification": "ages per state", "duration": "1d"});
    let id = pending(&esq, "journalist", body).await;
    let (status, approved) = decide(&esq, "steward", &id, "approve", "fine").await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let request = json!({"dataset": "burial_2024", "purpose": "age at burial", "fields": ["state", "dob"],
                         "aggregate": "count", "exception": id});
    let (status, issued) = http::issue(&esq, "journalist", request).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["scope"]["exception"], id.as_str(), "{issued}");
    assert!(
        issued["scope"]["privacy"].is_object(),
        "counts stay private: {issued}"
    );
    assert_eq!(issued["scope"]["min_group_size"], 11, "{issued}");
    let ticket = issued["ticket"].as_str().unwrap();
    let (status, answer) = http::query(&esq, ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // A California official's exception for more fields: still only California.
    let body = json!({"dataset": "burial_2024", "fields": ["state", "county"], "aggregate": "count",
                      "purpose": "planning", "justification": "county view", "duration": "1d"});
    let id = pending(&esq, "ca_official", body).await;
    let (status, approved) = decide(&esq, "steward", &id, "approve", "ok").await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let texas = json!({"dataset": "burial_2024", "purpose": "planning", "fields": ["state", "county"],
                       "aggregate": "count", "exception": id, "where": {"state": "TX"}});
    let (status, refused) = http::issue(&esq, "ca_official", texas).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "another state stays out of reach: {refused}"
    );
    let own = json!({"dataset": "burial_2024", "purpose": "planning", "fields": ["state", "county"],
                     "aggregate": "count", "exception": id});
    let (status, issued) = http::issue(&esq, "ca_official", own).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(
        issued["scope"]["row_filters"],
        json!({"state": "CA"}),
        "{issued}"
    );
}

/// Free texts with NUL, controls or text-direction characters are bad
/// input naming the field, not a database failure (red-team N5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_texts_refuse_characters_that_mislead() {
    let esq = fixture().await;
    for (field, value) in [
        ("purpose", "county\u{0000}story"),
        ("justification", "needs \u{202E}seirub"),
    ] {
        let (status, body) = ask(&esq, "journalist", listing(json!({ field: value }))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let id = pending(&esq, "journalist", listing(json!({}))).await;
    let (status, body) = decide(&esq, "steward", &id, "approve", "ok\u{0000}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "comment", "{body}");
}

/// The approval policy is asked again at each use: an exception approved
/// under a clearance the requester no longer holds gives no ticket
/// (red-team P2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_the_approval_policy_no_longer_allows_gives_no_ticket() {
    let mut esq = fixture().await;
    let body = json!({"dataset": "burial_2024", "fields": ["state", "dob"], "aggregate": null,
                      "purpose": "treatment follow-up", "justification": "dates of birth per state",
                      "duration": "1d"});
    let id = pending(&esq, "clinician", body).await;
    let (status, approved) = decide(&esq, "steward", &id, "approve", "cleared for PHI").await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let request = json!({"dataset": "burial_2024", "purpose": "treatment follow-up",
                         "fields": ["state", "dob"], "exception": id});
    let (status, issued) = http::issue(&esq, "clinician", request.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");

    // The clinician's clearance is lowered: the approval no longer holds.
    esq.set_env("ESQ_USERS__CLINICIAN__CLEARANCE", "PUBLIC");
    esq.restart().await;
    let (status, refused) = http::issue(&esq, "clinician", request).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused.to_string().contains("no longer meets"), "{refused}");
}

/// A steward withdraws an approved exception before it expires: its live
/// tickets stop at once and no new one is issued (red-team N4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_exception_revokes_its_tickets() {
    let esq = fixture().await;
    let id = pending(&esq, "journalist", listing(json!({}))).await;
    let (status, _) = decide(&esq, "steward", &id, "approve", "a week").await;
    assert_eq!(status, StatusCode::OK);
    let request = under(&id, &["state", "county"]);
    let ticket = http::ticket(&esq, "journalist", request.clone()).await;
    let rows = json!({"sql": "SELECT state, county FROM burial_2024 LIMIT 2"});
    assert_eq!(
        http::query(&esq, &ticket, rows.clone()).await.0,
        StatusCode::OK
    );

    // Only a steward (or an operator) withdraws, with a comment.
    let (status, body) = decide(&esq, "journalist", &id, "revoke", "mine").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = decide(&esq, "steward", &id, "revoke", " ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, withdrawn) = decide(&esq, "steward", &id, "revoke", "the story ran").await;
    assert_eq!(status, StatusCode::OK, "{withdrawn}");
    assert_eq!(withdrawn["state"], "revoked", "{withdrawn}");

    let (status, stale) = http::query(&esq, &ticket, rows).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the live ticket stops: {stale}"
    );
    let (status, refused) = http::issue(&esq, "journalist", request).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, again) = decide(&esq, "steward", &id, "revoke", "again").await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(actions(&naming(&esq, &id)).contains(&"revoked".to_string()));
}
