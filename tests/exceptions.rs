//! Exception waivers (issue 18, DESIGN 3.9), against real PostgreSQL: a
//! journalist whom the FOIA policy gives counts only asks for a row-level
//! listing without PII; a data steward approves it; the wider ticket is
//! issued and its queries work through both doors, every audit record
//! naming the exception; once it expires a ticket is refused again and the
//! sweep marks it expired. A self-approval, a request the policy refuses
//! and a denied request give no ticket; only stewards decide, and only the
//! one named; requests are checked without echoing what was sent; without
//! `[maintenance]` there are no waivers; all of it is audited, counted and
//! in the SSP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::exceptions::{
    actions, ask, call, decide, fixture, listing, naming, pending, show, state_in_database, under,
};
use common::lifecycle::esq_run;
use common::process::{esq_command, Run};
use common::{free_port, http, pg_client};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steward_approved_exception_widens_tickets_until_it_expires() {
    let esq = fixture().await;

    // Ordinary request: FOIA denies row-level data, and offers an exception.
    let ordinary = listing(json!({}));
    let ticket_request = json!({"dataset": "burial_2024", "purpose": "county story",
                                "fields": ["state", "county", "branch"]});
    let (status, denied) = http::issue(&esq, "journalist", ticket_request.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    assert_eq!(denied["policy_id"], "P-FOIA-001", "{denied}");
    let alternatives: Vec<&str> = denied["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        alternatives.len() >= 2,
        "FOIA's own alternatives stay: {denied}"
    );
    assert!(
        alternatives
            .iter()
            .any(|a| a.starts_with("request an exception")
                && a.contains("POST /api/esq/exception")
                && a.contains("\"county\"")),
        "{denied}"
    );

    // Request → pending.
    let (status, asked) = ask(&esq, "journalist", ordinary).await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let id = asked["exception"].as_str().unwrap().to_string();
    assert!(id.starts_with("X-") && id.len() == 18, "{asked}");
    assert_eq!(asked["state"], "pending");
    assert_eq!(asked["requester"], "journalist");
    assert_eq!(asked["fields"], json!(["state", "county", "branch"]));
    assert!(asked["aggregate"].is_null() && asked["expires_at"].is_null());
    assert_eq!(asked["duration_seconds"], 7 * 86_400);
    assert_eq!(state_in_database(&esq, &id).await, "pending");

    // Who sees it: the requester and stewards; nobody else (404).
    assert_eq!(show(&esq, "journalist", &id).await.0, StatusCode::OK);
    assert_eq!(show(&esq, "steward", &id).await.0, StatusCode::OK);
    let (status, hidden) = show(&esq, "clinician", &id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{hidden}");
    let (status, list) = call(
        &esq,
        reqwest::Method::GET,
        Some("steward"),
        "/api/esq/exception",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["exception"] == id));
    let (_, theirs) = call(
        &esq,
        reqwest::Method::GET,
        Some("clinician"),
        "/api/esq/exception",
        None,
    )
    .await;
    assert_eq!(
        theirs["exceptions"],
        json!([]),
        "a user sees only their own"
    );

    // Pending: no ticket yet.
    let (status, refused) = http::issue(&esq, "journalist", under(&id, &["state", "county"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["reason"].as_str().unwrap().contains("pending"),
        "{refused}"
    );

    // Only a data steward decides, and with a comment.
    let (status, body) = decide(&esq, "clinician", &id, "approve", "fine by me").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = decide(&esq, "steward", &id, "approve", "  ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "comment");
    assert_eq!(state_in_database(&esq, &id).await, "pending");

    // Approve.
    let before = chrono::Utc::now();
    let (status, approved) =
        decide(&esq, "steward", &id, "approve", "no PII; a week is enough").await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["decided_by"], "steward");
    assert_eq!(approved["comment"], "no PII; a week is enough");
    let expires: chrono::DateTime<chrono::Utc> =
        approved["expires_at"].as_str().unwrap().parse().unwrap();
    let week = chrono::Duration::days(7);
    assert!(
        expires >= before + week - chrono::Duration::seconds(2)
            && expires <= chrono::Utc::now() + week + chrono::Duration::seconds(2),
        "expires_at = decision time + duration: {approved}"
    );
    let (status, again) = decide(&esq, "deputy", &id, "approve", "me too").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "only a pending one is decided: {again}"
    );

    // The wider ticket, under the exception.
    let (status, issued) = http::issue(&esq, "journalist", under(&id, &["state", "county"])).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let scope = &issued["scope"];
    assert_eq!(scope["exception"], id.as_str(), "{issued}");
    assert_eq!(scope["policy_ids"][0], id.as_str(), "{issued}");
    assert!(scope["aggregate"].is_null(), "row level: {issued}");
    let ticket_expires: chrono::DateTime<chrono::Utc> =
        issued["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(ticket_expires <= expires);
    let ticket = issued["ticket"].as_str().unwrap().to_string();

    // The wider query works through the HTTP door …
    let listing_sql =
        json!({"sql": "SELECT state, county FROM burial_2024 ORDER BY county, state LIMIT 5"});
    let (status, rows) = http::query(&esq, &ticket, listing_sql.clone()).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["county"].is_string() && r.get("count").is_none()));
    // … which an ordinary FOIA ticket refuses.
    let foia = http::ticket(&esq, "journalist", common::tickets::foia_request("5m")).await;
    let (status, body) = http::query(&esq, &foia, listing_sql).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // … and through the PostgreSQL door.
    let client = pg_client::connect_with_ticket(&esq, &ticket).await;
    let rows = client
        .query("SELECT county FROM burial_2024 LIMIT 3", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    // A column outside the exception is still refused (and recorded).
    let refused = client
        .query("SELECT dob FROM burial_2024 LIMIT 3", &[])
        .await
        .unwrap_err();
    assert_eq!(pg_client::sqlstate(&refused), "42501", "{refused}");
    drop(client);

    // Outside the exception's scope, or someone else's: refused.
    let (status, body) = http::issue(&esq, "journalist", under(&id, &["state", "dob"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("does not cover field(s) dob"),
        "{body}"
    );
    let (status, body) = http::issue(&esq, "clinician", under(&id, &["state"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("no exception of yours"),
        "{body}"
    );

    // Every record the ticket produced names the exception.
    let records = naming(&esq, &id);
    assert_eq!(
        actions(&records),
        [
            "requested", // by the journalist
            "refused",   // a ticket while pending
            "refused",   // the clinician's approval
            "refused",   // an approval without a comment
            "approved",
            "refused", // a second approval
            "used",
            "refused", // a field outside it
            "refused", // the clinician's ticket
        ],
        "{records:#?}"
    );
    assert!(records
        .iter()
        .any(|r| r["kind"] == "ticket_issued" && r["outcome"] == "allow"));
    let decisions: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").collect();
    assert!(
        decisions.iter().any(|r| r["door"] == "http")
            && decisions.iter().any(|r| r["door"] == "pg"),
        "{decisions:#?}"
    );
    assert!(decisions.iter().all(|r| r["user"] == "journalist"));
    assert!(
        decisions
            .iter()
            .any(|r| r["outcome"] == "deny" && r["door"] == "pg"),
        "a denial under the exception names it too: {decisions:#?}"
    );
    let used = records
        .iter()
        .find(|r| r["detail"]["action"] == "used")
        .unwrap();
    assert_eq!(used["detail"]["uses"], 1, "{used}");
    assert!(
        !serde_json::to_string(&records)
            .unwrap()
            .contains("county-by-county"),
        "no free text in the audit log"
    );

    // Counted.
    let metrics = http::metrics(&esq).await;
    let metric = |name: &str| http::metric(&metrics, name).unwrap_or(-1.0);
    assert_eq!(metric("esq_exception_requests_total"), 1.0, "{metrics}");
    assert_eq!(
        metric("esq_exception_decisions_total{decision=\"approved\"}"),
        1.0
    );
    assert_eq!(metric("esq_exception_uses_total"), 1.0);
    assert_eq!(metric("esq_exceptions_open"), 1.0);

    // The SSP lists it as open.
    let ssp = esq_run(&esq, "ssp", &["ssp"]).await;
    assert_eq!(ssp.status, 0, "{}", ssp.stderr);
    let plan: Value = serde_json::from_str(&ssp.stdout).unwrap();
    let open = plan["exceptions"]["open"].as_array().unwrap();
    let listed = open
        .iter()
        .find(|e| e["id"] == id)
        .expect("listed in the SSP");
    assert_eq!(listed["requester"], "journalist");
    assert_eq!(listed["state"], "approved");
    assert_eq!(listed["dataset"], "burial_2024");
    assert_eq!(listed["expires_at"], approved["expires_at"]);
    assert!(listed.get("justification").is_none());

    // Its revocation names it too.
    let revoked = http::revoke(&esq, Some("journalist"), &ticket).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert!(naming(&esq, &id)
        .iter()
        .any(|r| r["kind"] == "ticket_revoked" && r["detail"]["was_live"] == true));

    // Expiry: once past expires_at, no ticket; the sweep marks it expired once.
    esq.pg()
        .connect()
        .await
        .execute(
            "UPDATE esq.exceptions SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (status, body) = http::issue(&esq, "journalist", under(&id, &["state", "county"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // (esq serve sweeps every 30 s too: whichever sweep comes first
    // expires it, once.)
    let swept = esq::exceptions::sweep::sweep(esq.app(), chrono::Utc::now())
        .await
        .unwrap();
    assert!(
        swept.len() <= 1 && swept.iter().all(|e| e.id == id),
        "{swept:?}"
    );
    let again = esq::exceptions::sweep::sweep(esq.app(), chrono::Utc::now())
        .await
        .unwrap();
    assert!(again.is_empty(), "each expiry happens once");
    assert_eq!(state_in_database(&esq, &id).await, "expired");
    assert_eq!(show(&esq, "journalist", &id).await.1["state"], "expired");
    let (status, body) = http::issue(&esq, "journalist", under(&id, &["state"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let records = naming(&esq, &id);
    let expired: Vec<&Value> = records
        .iter()
        .filter(|r| r["detail"]["action"] == "expired")
        .collect();
    assert_eq!(expired.len(), 1, "{records:#?}");
    assert_eq!(expired[0]["user"], "esq");
    let metrics = http::metrics(&esq).await;
    assert_eq!(http::metric(&metrics, "esq_exceptions_open"), Some(0.0));
    assert_eq!(
        http::metric(&metrics, "esq_exception_uses_total"),
        Some(1.0)
    );

    // The log with all of it still verifies.
    let path = esq.audit_path();
    let verified = tokio::task::spawn_blocking(move || {
        Run::of(esq_command().args(["audit", "verify"]).arg(path))
    })
    .await
    .unwrap();
    assert_eq!(verified.status, 0, "{}{}", verified.stdout, verified.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approvals_refused_approvals_and_denials_give_no_ticket() {
    let esq = fixture().await;

    // A steward cannot approve (nor deny) their own exception.
    let own = json!({"dataset": "burial_2024", "fields": ["state"], "aggregate": "count",
                     "purpose": "steward's own counts", "justification": "curiosity", "duration": "1d"});
    let id = pending(&esq, "steward", own).await;
    for verb in ["approve", "deny"] {
        let (status, body) = decide(&esq, "steward", &id, verb, "looks fine").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{verb}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("their own"),
            "{body}"
        );
    }
    assert_eq!(state_in_database(&esq, &id).await, "pending");
    let (status, body) = http::issue(
        &esq,
        "steward",
        json!({"dataset": "burial_2024", "purpose": "counts", "fields": ["state"],
               "aggregate": "count", "exception": id}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no ticket: {body}");
    let refused: Vec<Value> = naming(&esq, &id)
        .into_iter()
        .filter(|r| r["detail"]["action"] == "refused")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:#?}");
    assert!(refused
        .iter()
        .all(|r| r["outcome"] == "deny" && r["user"] == "steward"));

    // The policy refuses row-level PII for a PUBLIC requester: it stays pending.
    let pii = pending(
        &esq,
        "journalist",
        listing(json!({"fields": ["state", "dob"]})),
    )
    .await;
    let (status, body) = decide(&esq, "steward", &pii, "approve", "ok").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("P-EXCEPTION-001") && message.contains("clearance"),
        "{message}"
    );
    assert_eq!(state_in_database(&esq, &pii).await, "pending");

    // A named steward decides alone; a denial gives no ticket.
    let named = pending(&esq, "journalist", listing(json!({"approver": "deputy"}))).await;
    let (status, body) = decide(&esq, "steward", &named, "approve", "ok").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("another data steward"),
        "{body}"
    );
    let (status, denied) = decide(&esq, "deputy", &named, "deny", "use the counts").await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["decided_by"], "deputy");
    assert!(denied["expires_at"].is_null(), "{denied}");
    let (status, body) = http::issue(&esq, "journalist", under(&named, &["state"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("was denied"),
        "{body}"
    );
    let (status, body) = decide(&esq, "deputy", &named, "approve", "changed my mind").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        actions(&naming(&esq, &named)),
        ["requested", "refused", "denied", "refused", "refused"]
    );

    let metrics = http::metrics(&esq).await;
    assert_eq!(
        http::metric(
            &metrics,
            "esq_exception_decisions_total{decision=\"denied\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        http::metric(
            &metrics,
            "esq_exception_decisions_total{decision=\"approved\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        http::metric(&metrics, "esq_exception_uses_total"),
        Some(0.0)
    );
    assert_eq!(
        http::metric(&metrics, "esq_exceptions_open"),
        Some(2.0),
        "the steward's and the PII one"
    );
    let uses: i64 = esq
        .pg()
        .connect()
        .await
        .query_one(
            "SELECT coalesce(sum(uses), 0)::bigint FROM esq.exceptions",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(uses, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_checked_without_echoing_what_was_sent() {
    let esq = fixture().await;
    let cases = [
        (
            json!({"dataset": "payroll_secret"}),
            "dataset",
            "payroll_secret",
        ),
        (
            json!({"fields": ["state", "salary_secret"]}),
            "fields",
            "salary_secret",
        ),
        (json!({"fields": []}), "fields", "\"fields\": []"),
        (
            json!({"aggregate": "median_secret"}),
            "aggregate",
            "median_secret",
        ),
        (json!({"purpose": " "}), "purpose", "\"purpose\": \" \""),
        (
            json!({"justification": ""}),
            "justification",
            "\"justification\": \"\"",
        ),
        (json!({"duration": "31d"}), "duration", "31d"),
        (
            json!({"duration": "forever_secret"}),
            "duration",
            "forever_secret",
        ),
        (json!({"approver": "clinician"}), "approver", "clinician"),
        (
            json!({"approver": "journalist"}),
            "approver",
            "journalist\"",
        ),
    ];
    for (patch, field, secret) in cases {
        let (status, body) = ask(&esq, "journalist", listing(patch.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{patch}: {body}");
        assert_eq!(body["field"], field, "{patch}: {body}");
        assert!(
            !body.to_string().contains(secret),
            "{patch} is echoed: {body}"
        );
    }
    let (status, body) = ask(&esq, "journalist", listing(json!({"extra": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = call(
        &esq,
        reqwest::Method::POST,
        None,
        "/api/esq/exception",
        Some(listing(json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &esq,
        reqwest::Method::DELETE,
        Some("steward"),
        "/api/esq/exception",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    for id in ["X-AAAAAAAAAAAAAAAA", "not-an-id"] {
        let (status, body) = decide(&esq, "steward", id, "approve", "ok").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
        assert_eq!(show(&esq, "steward", id).await.0, StatusCode::NOT_FOUND);
    }
    let (status, body) = http::issue(&esq, "journalist", under("X-not-one", &["state"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "exception");
    assert_eq!(
        http::metric(&http::metrics(&esq).await, "esq_exception_requests_total"),
        Some(0.0)
    );
    let refusals = esq
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "exception" && r["detail"]["action"] == "refused")
        .count();
    assert!(refusals >= 11, "bad requests are audited too ({refusals})");
}

#[tokio::test]
async fn without_maintenance_there_are_no_waivers() {
    let dead = free_port();
    let esq = Esq::builder()
        .upstream_url(&format!("postgres://esq_service@127.0.0.1:{dead}/postgres"))
        .start()
        .await;
    let (status, body) = ask(&esq, "journalist", listing(json!({}))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("exception waivers need [maintenance]"),
        "{body}"
    );
    let (status, body) = decide(&esq, "steward", "X-AAAAAAAAAAAAAAAA", "approve", "ok").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) =
        http::issue(&esq, "journalist", under("X-AAAAAAAAAAAAAAAA", &["state"])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.to_string().contains(&dead.to_string()), "{body}");
    // An ordinary denial offers no exception it could not take.
    let (status, body) = http::issue(
        &esq,
        "journalist",
        json!({"dataset": "burial_2024", "purpose": "p", "fields": ["state"]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        !body["alternatives"].to_string().contains("exception"),
        "{body}"
    );
}
