//! One path for both doors: one upstream pool whose size holds for both
//! doors together, fair shares so one user cannot starve another, and one
//! error map per door that never shows internal text (an address, a role
//! name, a store error, an echoed value) on any failure path.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use common::esq::Esq;
use common::{free_port, http, pg_client, Doors};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn http_url(esq: &Esq, path: &str) -> String {
    esq.url(path)
}

/// `POST /api/dta/query`: the status and the body as text (to search it).
async fn http_query(esq: &Esq, ticket: &str, body: Value) -> (StatusCode, String) {
    let response = http::client()
        .post(esq.url("/api/dta/query"))
        .header("x-esq-ticket", ticket)
        .json(&body)
        .send()
        .await
        .expect("the HTTP door answers");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

async fn connect(esq: &Esq, ticket: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    pg_client::connect_as(esq, "ticket", ticket).await
}

/// The whole error a PostgreSQL client sees: code, message, detail, hint.
fn shown(err: &tokio_postgres::Error) -> (String, String) {
    match err.as_db_error() {
        Some(db) => (
            db.code().code().to_string(),
            format!(
                "{} | {} | {}",
                db.message(),
                db.detail().unwrap_or(""),
                db.hint().unwrap_or("")
            ),
        ),
        None => (String::new(), err.to_string()),
    }
}

async fn ticket_of(esq: &Esq, user: &str) -> String {
    let request = match user {
        "clinician" => json!({"dataset": "burial_2024", "purpose": "treatment",
                              "fields": ["id", "state", "county", "burial_date", "branch"]}),
        _ => json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                    "fields": ["state", "burial_date"], "aggregate": "count"}),
    };
    esq.ticket(user, request).await
}

/// Upstream backends of esq's service role, as PostgreSQL counts them.
async fn service_backends(esq: &Esq, direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&esq.role()],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Asserts that none of `internal` appears in `text`.
fn assert_clean(what: &str, text: &str, internal: &[&str]) {
    for needle in internal {
        assert!(
            !text.contains(needle),
            "{what}: internal text {needle:?} reached the client: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_doors_share_one_pool_and_never_exceed_its_size() {
    let esq = Esq::builder()
        .env("ESQ_UPSTREAM__POOL_SIZE", "4")
        .env("ESQ_UPSTREAM__MAX_PER_USER", "2")
        .env("ESQ_UPSTREAM__ACQUIRE_TIMEOUT", "1s")
        .start()
        .await;
    let direct = esq.pg().connect().await;
    let journalist = ticket_of(&esq, "journalist").await;
    let official = ticket_of(&esq, "ca_official").await;

    // The journalist holds two sessions: their whole share.
    let held = [
        connect(&esq, &journalist).await.expect("first session"),
        connect(&esq, &journalist).await.expect("second session"),
    ];
    let third = connect(&esq, &journalist)
        .await
        .expect_err("a third waits, then is refused");
    let (code, text) = shown(&third);
    assert_eq!(code, "53300", "{text}");
    // Over HTTP the journalist's share is full as well.
    let (status, body) = http_query(&esq, &journalist, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("\"busy\""), "{body}");
    // Another user is served on both doors.
    let other = connect(&esq, &official)
        .await
        .expect("another user's session");
    other
        .simple_query("SELECT state, count(*) FROM burial_2024 GROUP BY state")
        .await
        .expect("another user's query");
    let (status, body) = http_query(&esq, &official, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Many HTTP queries of two users at once, and the count PostgreSQL sees
    // never passes the pool size.
    let mut queries = tokio::task::JoinSet::new();
    for i in 0..24 {
        let ticket = if i % 2 == 0 { &official } else { &journalist };
        let request = http::client()
            .post(http_url(&esq, "/api/dta/query"))
            .header("x-esq-ticket", ticket.as_str())
            .json(&json!({"groupBy": "state"}));
        queries.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    let mut most = 0;
    while !queries.is_empty() {
        most = most.max(service_backends(&esq, &direct).await);
        tokio::select! {
            _ = queries.join_next() => {}
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    most = most.max(service_backends(&esq, &direct).await);
    assert!(
        most <= 4,
        "PostgreSQL saw {most} backends of esq's role; the pool is 4"
    );
    drop((held, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticket_flood_does_not_fail_another_users_request() {
    let esq = Esq::builder()
        .env("ESQ_HTTP__STATEMENT_TIMEOUT", "8s")
        .start()
        .await;
    let flooder = ticket_of(&esq, "clinician").await;
    let other = ticket_of(&esq, "journalist").await;
    let slow = json!({"sql": "SELECT count(*) FROM burial_2024 a CROSS JOIN burial_2024 b CROSS JOIN burial_2024 c"});
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..17 {
        let request = http::client()
            .post(http_url(&esq, "/api/dta/query"))
            .header("x-esq-ticket", flooder.as_str())
            .json(&slow);
        flood.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    // Wait until the flood runs in PostgreSQL.
    let direct = esq.pg().connect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let running: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%CROSS JOIN%' AND state = 'active'",
                &[&esq.role()],
            )
            .await
            .unwrap()
            .get(0);
        if running > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the flood never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = http_query(&esq, &other, json!({"groupBy": "state"})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another user's request during the flood: {body}"
    );
    let ready = http::client()
        .get(http_url(&esq, "/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "/readyz during the flood");
    let mut refused = 0;
    while let Some(status) = flood.join_next().await {
        if status.unwrap().unwrap() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(
        refused >= 17 - 4,
        "the flooder's queries past http.max_in_flight_per_user (4) are refused at once ({refused} were)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failure_path_shows_internal_text_on_either_door() {
    let esq = Esq::builder()
        .env("ESQ_UPSTREAM__STATEMENT_TIMEOUT", "1s")
        .env("ESQ_HTTP__STATEMENT_TIMEOUT", "1s")
        .start()
        .await;
    let port = esq.pg().port().to_string();
    let internal = [
        "127.0.0.1",
        port.as_str(),
        esq.role(),
        "x2024",
        "refused",
        "redis",
    ];
    let journalist = ticket_of(&esq, "journalist").await;
    let clinician = ticket_of(&esq, "clinician").await;

    // A literal the database refuses: its value is not echoed.
    let bad = "SELECT state, count(*) FROM burial_2024 WHERE burial_date = 'x2024' GROUP BY state";
    let client = connect(&esq, &journalist).await.unwrap();
    let (code, text) = shown(&client.simple_query(bad).await.unwrap_err());
    assert_eq!(code, "22007", "{text}");
    assert_clean("bad literal, PostgreSQL door", &text, &internal);
    let (status, body) = http_query(
        &esq,
        &journalist,
        json!({"groupBy": "state", "where": {"burial_date": "x2024"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("22007"), "{body}");
    assert_clean("bad literal, HTTP door", &body, &internal);

    // A statement time-out.
    let slow =
        "SELECT count(*) FROM burial_2024 a CROSS JOIN burial_2024 b CROSS JOIN burial_2024 c";
    let row_level = connect(&esq, &clinician).await.unwrap();
    let (code, text) = shown(&row_level.simple_query(slow).await.unwrap_err());
    assert_eq!(code, "57014", "{text}");
    assert_clean("statement time-out, PostgreSQL door", &text, &internal);
    let (status, body) = http_query(&esq, &clinician, json!({"sql": slow})).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_clean("statement time-out, HTTP door", &body, &internal);
    drop((client, row_level));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_and_dead_dependencies_show_no_internal_text() {
    // A pool of one, held by one session.
    let esq = Esq::builder()
        .env("ESQ_UPSTREAM__POOL_SIZE", "1")
        .env("ESQ_UPSTREAM__ACQUIRE_TIMEOUT", "1s")
        .start()
        .await;
    let port = esq.pg().port().to_string();
    let internal = ["127.0.0.1", port.as_str(), esq.role(), "refused"];
    let journalist = ticket_of(&esq, "journalist").await;
    let clinician = ticket_of(&esq, "clinician").await;
    let holder = connect(&esq, &journalist).await.unwrap();
    let (code, text) = shown(&connect(&esq, &clinician).await.unwrap_err());
    assert_eq!(code, "53300", "{text}");
    assert_clean("pool wait, PostgreSQL door", &text, &internal);
    let (status, body) = http_query(&esq, &clinician, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_clean("pool wait, HTTP door", &body, &internal);
    drop(holder);

    // The database is not there (an address nobody listens on).
    let dead_port = free_port().to_string();
    let gone = Esq::builder()
        .upstream_url(&format!(
            "postgres://esq_service@127.0.0.1:{dead_port}/postgres"
        ))
        .start()
        .await;
    let internal = ["127.0.0.1", dead_port.as_str(), "esq_service", "refused"];
    let clinician = ticket_of(&gone, "clinician").await;
    let (code, text) = shown(&connect(&gone, &clinician).await.unwrap_err());
    assert_eq!(code, "08006", "{text}");
    assert_clean("database down, PostgreSQL door", &text, &internal);
    let (status, body) = http_query(&gone, &clinician, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_clean("database down, HTTP door", &body, &internal);
    let ready = http::client()
        .get(http_url(&gone, "/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_clean(
        "database down, /readyz",
        &ready.text().await.unwrap(),
        &internal,
    );

    // The ticket store goes away (an address nobody listens on).
    let dead_port = free_port().to_string();
    let storeless = Esq::builder()
        .env(
            "ESQ_TICKETS__STORE",
            format!("redis://127.0.0.1:{dead_port}"),
        )
        .start()
        .await;
    let internal = ["127.0.0.1", dead_port.as_str(), "refused", "redis", "Redis"];
    let fake = format!("T-{}", "C".repeat(32));
    let (code, text) = shown(&connect(&storeless, &fake).await.unwrap_err());
    assert_eq!(code, "08006", "{text}");
    assert_clean("store down, PostgreSQL door", &text, &internal);
    let (status, body) = http_query(&storeless, &fake, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_clean("store down, HTTP door", &body, &internal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_door_serves_from_a_tls_only_upstream() {
    // PostgreSQL refuses the service role over plaintext (hostssl only).
    let esq = Esq::builder().tls_only_upstream().start().await;
    let ticket = esq.foia_ticket().await;
    let (status, rows) = http::query(&esq, &ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert!(
        rows.as_array().is_some_and(|rows| !rows.is_empty()),
        "counts by state: {rows}"
    );
    // The same connections serve the PostgreSQL door.
    let client = pg_client::connect_with_ticket(&esq, &ticket).await;
    let answer = client
        .simple_query("SELECT state, count(*) FROM burial_2024 GROUP BY state")
        .await
        .expect("the PostgreSQL door over the TLS-only upstream");
    assert!(answer.len() > 1);
    // And PostgreSQL sees those sessions encrypted.
    let direct = esq.pg().connect().await;
    let plain: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1 AND NOT s.ssl",
            &[&esq.role()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "every upstream session of esq's role uses TLS");
}
