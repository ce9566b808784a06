//! The HTTP door against a real PostgreSQL with the sample data, esq started
//! in-process on port 0 and driven by a real HTTP client: the seed
//! walk-through, denials, bad input, revocation, streaming, limits,
//! metrics, health and HTTPS/HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::esq::{Esq, EsqBuilder};
use common::http::{client, issue, query, read, revoke, ticket, token};
use common::tickets::{clinician_request, foia_request};
use common::{free_port, Doors};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// esq over 5,000 rows of sample data (enough for every answer here).
fn builder() -> EsqBuilder {
    Esq::builder().rows(5_000)
}

/// Per-state counts straight from PostgreSQL, rows on or after `cutoff`.
async fn direct_counts(esq: &Esq, cutoff: &str) -> BTreeMap<String, i64> {
    let client = esq.pg().connect().await;
    client
        .query(
            "SELECT state, count(*) FROM public.burial_2024 WHERE burial_date >= $1::text::date GROUP BY state",
            &[&cutoff],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn seed_walk_through_counts_by_state_with_small_groups_suppressed_then_stale() {
    // k-suppression as such: a deployment whose FOIA policy imposes no
    // privacy (the shipped one does: tests/privacy_doors.rs).
    let mut esq = builder().k_only_counts().start().await;

    let (status, issued) = issue(&esq, "journalist", foia_request("5m")).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let ticket = issued["ticket"].as_str().unwrap().to_string();
    assert!(ticket.starts_with("T-"), "{issued}");
    assert_eq!(issued["expires"], "5m");
    assert!(issued["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(issued["scope"]["aggregate"], "count");
    assert_eq!(issued["scope"]["min_group_size"], 11);

    let response = client()
        .post(esq.url("/api/dta/query"))
        .header("X-ESQ-Ticket", &ticket)
        .json(&json!({"groupBy": "state"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert!(response.headers().contains_key("x-esq-classification"));
    assert!(response.headers().contains_key("x-esq-dropped-columns"));
    let rows: Vec<Value> = response.json().await.unwrap();

    let cutoff = issued["scope"]["retention_cutoff"].as_str().unwrap();
    let direct = direct_counts(&esq, cutoff).await;
    let small: Vec<&String> = direct
        .iter()
        .filter(|(_, n)| **n < 11)
        .map(|(s, _)| s)
        .collect();
    assert!(!small.is_empty(), "the sample has states under k");
    assert_eq!(rows.len(), direct.len() - small.len(), "{rows:?}");
    for row in &rows {
        let state = row["state"].as_str().unwrap();
        let count = row["count"].as_i64().expect("count is a JSON number");
        assert!(count >= 11, "{row}");
        assert_eq!(Some(&count), direct.get(state), "{row}");
        assert!(!small.contains(&&state.to_string()));
    }

    // The seed's walk-through, verbatim with curl (plus the bearer token).
    if let Some(ticket) = curl(&[
        "-X",
        "POST",
        &esq.url("/api/esq/ticket"),
        "-H",
        &format!("Authorization: Bearer {}", token("journalist")),
        "-d",
        r#"{ "dataset":"burial_2024",
        "purpose":"FOIA aggregation",
        "fields":["state","id"],
        "aggregate":"count" }"#,
    ])
    .await
    {
        let ticket = ticket["ticket"].as_str().unwrap().to_string();
        let answer = curl(&[
            &esq.url("/api/dta/query"),
            "-H",
            &format!("X-ESQ-Ticket: {ticket}"),
            "-d",
            r#"{ "groupBy":"state" }"#,
        ])
        .await
        .unwrap();
        assert_eq!(answer, Value::Array(rows.clone()));

        // With `Expect: 100-continue` (curl adds it to large bodies) curl
        // waits a second for the go-ahead unless the server gives it.
        let padded = format!("{{ \"groupBy\":\"state\" {} }}", " ".repeat(2048));
        let (answer, log) = curl_logged(&[
            "-v",
            "--expect100-timeout",
            "30",
            &esq.url("/api/dta/query"),
            "-H",
            &format!("X-ESQ-Ticket: {ticket}"),
            "-H",
            "Expect: 100-continue",
            "-d",
            &padded,
        ])
        .await
        .unwrap();
        assert_eq!(answer, Value::Array(rows.clone()));
        assert!(
            log.contains("< HTTP/1.1 100 Continue"),
            "esq did not give the go-ahead:\n{log}"
        );
    }

    // After expiry the same call is refused as stale.
    let short = ticket_for(&esq, "5s").await;
    let (status, _) = query(&esq, &short, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = query(&esq, &short, json!({"groupBy": "state"})).await;
        if status == StatusCode::FORBIDDEN {
            assert_eq!(body["error"], "ticket stale", "{body}");
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "the expired ticket still answers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    esq.stop().await;
}

/// Runs curl and parses its output as JSON; `None` when curl is missing.
async fn curl(args: &[&str]) -> Option<Value> {
    curl_logged(args).await.map(|(answer, _)| answer)
}

/// curl's answer as JSON, and what it wrote to stderr.
async fn curl_logged(args: &[&str]) -> Option<(Value, String)> {
    let out = match tokio::process::Command::new("curl")
        .arg("-sS")
        .args(args)
        .output()
        .await
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!("NOTICE: curl not installed; skipping the verbatim curl walk-through");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let answer = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}{log}"));
    Some((answer, log))
}

async fn ticket_for(esq: &Esq, ttl: &str) -> String {
    ticket(esq, "journalist", foia_request(ttl)).await
}

#[tokio::test]
async fn policy_and_guard_denials_explain_themselves() {
    let mut esq = builder().start().await;

    // ssn as a public requester: refused with alternatives.
    let (status, body) = issue(
        &esq,
        "journalist",
        json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
               "fields": ["state", "ssn"], "aggregate": "count"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "denied");
    assert!(!body["reason"].as_str().unwrap().is_empty(), "{body}");
    assert!(body["policy_id"].as_str().is_some(), "{body}");
    assert!(
        !body["alternatives"].as_array().unwrap().is_empty(),
        "{body}"
    );

    // Row-level SQL under an aggregate ticket: refused with a hint.
    let ticket = ticket_for(&esq, "5m").await;
    let (status, body) = query(
        &esq,
        &ticket,
        json!({"sql": "SELECT name FROM burial_2024"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "denied");
    assert!(!body["hint"].as_str().unwrap().is_empty(), "{body}");
    assert!(!body["reason"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(body["sqlstate"], "42501");

    // SQL that the guard allows is answered too.
    let (status, rows) = query(
        &esq,
        &ticket,
        json!({"sql": "SELECT state, count(*) AS n FROM burial_2024 GROUP BY state ORDER BY n DESC LIMIT 3"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    esq.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let mut esq = builder().start().await;
    let http = client();
    let post_ticket = |auth: Option<&str>, body: Vec<u8>| {
        let mut request = http
            .post(esq.url("/api/esq/ticket"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth.to_string());
        }
        request.send()
    };
    let journalist = format!("Bearer {}", token("journalist"));
    let expect = |status: StatusCode, code: &str| {
        let code = code.to_string();
        move |(got, body): (StatusCode, Value)| {
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"], code.as_str(), "{body}");
            body
        }
    };
    let good = serde_json::to_vec(&foia_request("5m")).unwrap();

    // Credentials.
    expect(StatusCode::UNAUTHORIZED, "unauthorized")(
        read(post_ticket(None, good.clone()).await.unwrap()).await,
    );
    let body = expect(StatusCode::UNAUTHORIZED, "unauthorized")(
        read(
            post_ticket(Some("Bearer demo-mallory-token"), good.clone())
                .await
                .unwrap(),
        )
        .await,
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("unknown API token"));
    expect(StatusCode::UNAUTHORIZED, "unauthorized")(
        read(
            post_ticket(Some("Basic am91cm5hbGlzdA=="), good.clone())
                .await
                .unwrap(),
        )
        .await,
    );

    // Bodies.
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            post_ticket(Some(&journalist), b"{\"dataset\": ".to_vec())
                .await
                .unwrap(),
        )
        .await,
    );
    assert!(
        body["message"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            post_ticket(
                Some(&journalist),
                br#"{"dataset":"burial_2024","purpose":"x","fields":["state"],"colour":"red"}"#
                    .to_vec(),
            )
            .await
            .unwrap(),
        )
        .await,
    );
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            post_ticket(
                Some(&journalist),
                br#"{"dataset":"burial_2024","purpose":"x","fields":["shoe_size"]}"#.to_vec(),
            )
            .await
            .unwrap(),
        )
        .await,
    );
    assert_eq!(body["field"], "fields", "{body}");
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            post_ticket(
                Some(&journalist),
                br#"{"dataset":"burial_2024","purpose":"x","fields":"state"}"#.to_vec(),
            )
            .await
            .unwrap(),
        )
        .await,
    );
    assert_eq!(body["field"], "fields", "{body}");
    let huge = format!(
        r#"{{"dataset":"burial_2024","purpose":"{}","fields":["state"]}}"#,
        "x".repeat(1 << 20)
    );
    expect(StatusCode::PAYLOAD_TOO_LARGE, "payload too large")(
        read(
            post_ticket(Some(&journalist), huge.into_bytes())
                .await
                .unwrap(),
        )
        .await,
    );
    let response = http
        .post(esq.url("/api/esq/ticket"))
        .bearer_auth(token("journalist"))
        .header("content-type", "text/plain")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported media type")(read(response).await);

    // Tickets on queries.
    let send_query = |ticket: Option<&str>, body: Value| {
        let mut request = http.post(esq.url("/api/dta/query")).json(&body);
        if let Some(ticket) = ticket {
            request = request.header("x-esq-ticket", ticket.to_string());
        }
        request.send()
    };
    let group = json!({"groupBy": "state"});
    expect(StatusCode::UNAUTHORIZED, "ticket required")(
        read(send_query(None, group.clone()).await.unwrap()).await,
    );
    expect(StatusCode::BAD_REQUEST, "malformed ticket")(
        read(send_query(Some("T-abc"), group.clone()).await.unwrap()).await,
    );
    let forged = format!("T-{}", "A".repeat(32));
    expect(StatusCode::FORBIDDEN, "ticket stale")(
        read(send_query(Some(&forged), group.clone()).await.unwrap()).await,
    );
    let ticket = ticket_for(&esq, "5m").await;
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            send_query(Some(&ticket), json!({"groupBy": "state", "colour": 1}))
                .await
                .unwrap(),
        )
        .await,
    );
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            send_query(Some(&ticket), json!({"groupBy": "shoe_size"}))
                .await
                .unwrap(),
        )
        .await,
    );
    assert_eq!(body["field"], "groupBy", "{body}");
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            send_query(
                Some(&ticket),
                json!({"sql": "SELECT 1", "groupBy": "state"}),
            )
            .await
            .unwrap(),
        )
        .await,
    );
    assert_eq!(body["field"], "sql", "{body}");
    let body = expect(StatusCode::BAD_REQUEST, "bad request")(
        read(
            send_query(
                Some(&ticket),
                json!({"groupBy": "state", "where": {"state": {"like": "C%"}}}),
            )
            .await
            .unwrap(),
        )
        .await,
    );
    assert_eq!(body["field"], "where.state.like", "{body}");
    // A value that tries to break out of its literal stays a literal.
    let (status, rows) = query(
        &esq,
        &ticket,
        json!({"groupBy": "state", "where": {"state": "CA' OR '1'='1"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(rows, json!([]));

    // Routing and header limits.
    let response = http.get(esq.url("/api/dta/query")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    expect(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")(read(response).await);
    expect(StatusCode::NOT_FOUND, "not found")(
        read(http.get(esq.url("/nope")).send().await.unwrap()).await,
    );
    let response = http
        .get(esq.url("/healthz"))
        .header("x-padding", "p".repeat(20_000))
        .send()
        .await
        .unwrap();
    expect(StatusCode::from_u16(431).unwrap(), "headers too large")(read(response).await);

    // Still serving, on fresh and reused connections alike.
    for _ in 0..3 {
        let response = http.get(esq.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let (status, _) = query(&esq, &ticket, group).await;
    assert_eq!(status, StatusCode::OK);
    esq.stop().await;
}

#[tokio::test]
async fn revocation_by_owner_and_admin_but_not_by_another_user() {
    let mut esq = builder().start().await;
    let http = client();
    let first = ticket_for(&esq, "5m").await;
    let response = revoke(&esq, Some("ca_official"), &first).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "forbidden", "{body}");
    let response = revoke(&esq, None, &first).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Still usable after the refused attempts.
    let (status, _) = query(&esq, &first, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::OK);

    let response = revoke(&esq, Some("journalist"), &first).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["revoked"], true, "{body}");
    let (status, body) = query(&esq, &first, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "ticket stale");
    let response = revoke(&esq, Some("journalist"), &first).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let second = ticket_for(&esq, "5m").await;
    let response = revoke(&esq, Some("admin"), &second).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = query(&esq, &second, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let response = revoke(&esq, Some("admin"), "not-a-ticket").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let metrics = http
        .get(esq.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("esq_tickets_revoked_total 2"), "{metrics}");
    esq.stop().await;
}

#[tokio::test]
async fn rows_stream_as_json_or_ndjson_with_structured_filters() {
    let mut esq = builder().start().await;
    let http = client();
    let (status, issued) = issue(&esq, "clinician", clinician_request()).await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let ticket = issued["ticket"].as_str().unwrap().to_string();
    let cutoff = issued["scope"]["retention_cutoff"]
        .as_str()
        .unwrap()
        .to_string();

    // NDJSON: one object per line, filtered, ordered and limited.
    let response = http
        .post(esq.url("/api/dta/query"))
        .header("x-esq-ticket", &ticket)
        .header("accept", "application/x-ndjson")
        .json(&json!({
            "select": ["state", "burial_date"],
            "where": {"state": "CA", "burial_date": {"gte": "2024-01-01", "lt": "2024-07-01"}},
            "orderBy": "burial_date desc",
            "limit": 5
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{text}");
    let mut previous = "9999-12-31".to_string();
    for row in &rows {
        assert_eq!(row["state"], "CA");
        let date = row["burial_date"].as_str().unwrap().to_string();
        assert!(
            date.as_str() >= "2024-01-01" && date.as_str() < "2024-07-01",
            "{date}"
        );
        assert!(date <= previous, "descending");
        previous = date;
    }

    // IN lists.
    let (status, rows) = query(
        &esq,
        &ticket,
        json!({"select": "state", "where": {"state": ["CA", "TX"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows
        .iter()
        .all(|r| r["state"] == "CA" || r["state"] == "TX"));

    // A large answer streams in chunks (no Content-Length) and is complete.
    let response = http
        .post(esq.url("/api/dta/query"))
        .header("x-esq-ticket", &ticket)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("content-length").is_none());
    let classification = response.headers()["x-esq-classification"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        ["PUBLIC", "INTERNAL", "PII", "PHI"].contains(&classification.as_str()),
        "{classification}"
    );
    let rows: Vec<Value> = response.json().await.unwrap();
    let direct: i64 = esq
        .pg()
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM public.burial_2024 WHERE burial_date >= $1::text::date",
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows.len() as i64, direct);
    assert!(rows[0].get("county").is_some() && rows[0].get("name").is_none());
    esq.stop().await;
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let mut esq = builder().start().await;
    let http = client();
    let ticket = ticket_for(&esq, "5m").await;
    let (status, _) = query(&esq, &ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = query(&esq, &ticket, json!({"sql": "SELECT ssn FROM burial_2024"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let health: Value = http
        .get(esq.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let response = http.get(esq.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["tombstones"], "ok", "{ready}");

    let response = http.get(esq.metrics_url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for expected in [
        r#"esq_decisions_total{door="http",outcome="rewrite"} 1"#,
        r#"esq_decisions_total{door="http",outcome="deny"} 1"#,
        "esq_tickets_issued_total 1",
        "esq_guard_seconds_count",
        r#"esq_statement_seconds_count{door="http"}"#,
        r#"esq_http_responses_total{code="200"}"#,
        r#"esq_http_responses_total{code="403"} 1"#,
        r#"esq_active_sessions{door="http"}"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    promtool_accepts(&text);
    esq.stop().await;
}

/// `promtool check metrics` reads the exposition on stdin.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("NOTICE: promtool not installed (Debian: apt-get install prometheus); skipping the promtool check");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_not_ready_and_queries_fail_with_503() {
    let dead = free_port();
    let mut esq = builder()
        .upstream_url(&format!("postgres://esq_service@127.0.0.1:{dead}/postgres"))
        .start()
        .await;
    let http = client();
    let response = http.get(esq.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not ready", "{body}");
    assert_eq!(body["ticket_store"], "ok", "{body}");

    let ticket = ticket_for(&esq, "5m").await;
    let (status, body) = query(&esq, &ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains(&dead.to_string()),
        "no internal address reaches the client: {text}"
    );
    let health = http.get(esq.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    esq.stop().await;
}

#[tokio::test]
async fn requests_are_rate_limited_per_user() {
    let mut esq = builder()
        .env("ESQ_HTTP__RATE_LIMIT_PER_MINUTE", "3")
        .start()
        .await;
    for _ in 0..3 {
        let (status, body) = issue(&esq, "journalist", foia_request("5m")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let response = client()
        .post(esq.url("/api/esq/ticket"))
        .bearer_auth(token("journalist"))
        .json(&foia_request("5m"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate limited");
    // Another user is not affected.
    let (status, body) = issue(&esq, "ca_official", foia_request("5m")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    esq.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http2_and_h2c_serve_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let certs = esq::tls::make_dev_certs(dir.path()).unwrap();
    let cert = certs.server_cert.display().to_string();
    let key = certs.server_key.display().to_string();
    let mut esq = builder()
        .env("ESQ_TLS__CERT", cert.as_str())
        .env("ESQ_TLS__KEY", key.as_str())
        .start()
        .await;
    let port = esq.http_addr().port();

    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&certs.ca_cert)
            .args(["-w", "\n%{http_version} %{http_code}"])
            .arg(format!("https://localhost:{port}/healthz"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.ends_with("2 200"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(r#"{"status":"ok"}"#), "{text}");
    } else {
        eprintln!("NOTICE: curl not installed; skipping the HTTPS check");
    }

    // Plaintext HTTP/2 with prior knowledge (h2c) on the same port.
    let h2 = Client::builder().http2_prior_knowledge().build().unwrap();
    let response = h2.get(esq.url("/healthz")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let ticket = ticket_for(&esq, "5m").await;
    let response = h2
        .post(esq.url("/api/dta/query"))
        .header("x-esq-ticket", &ticket)
        .json(&json!({"groupBy": "state", "orderBy": "count desc", "limit": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let rows: Vec<Value> = response.json().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["count"].as_i64() >= rows[1]["count"].as_i64());
    esq.stop().await;
}

#[tokio::test]
async fn stopping_finishes_answers_in_flight_and_closes_idle_connections() {
    // A grace period far beyond the bound below: an idle connection that
    // held the stop up would show.
    let mut esq = builder()
        .env("ESQ_PG__SHUTDOWN_GRACE", "120s")
        .start()
        .await;
    let http = client();
    // An idle keep-alive connection must not hold the stop up.
    let response = http.get(esq.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, issued) = issue(&esq, "clinician", clinician_request()).await;
    let ticket = issued["ticket"].as_str().unwrap().to_string();
    let response = http
        .post(esq.url("/api/dta/query"))
        .header("x-esq-ticket", &ticket)
        .header("accept", "application/x-ndjson")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let base = esq.url("");
    let started = std::time::Instant::now();
    let (_, body) = tokio::join!(esq.stop(), response.text());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let body = body.expect("the answer in flight completes");
    assert!(body.lines().count() > 1000, "{}", body.lines().count());
    assert!(body
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    // The door no longer accepts connections.
    assert!(Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn tls_required_refuses_plaintext_with_a_clear_answer() {
    let dir = tempfile::tempdir().unwrap();
    let certs = esq::tls::make_dev_certs(dir.path()).unwrap();
    let cert = certs.server_cert.display().to_string();
    let key = certs.server_key.display().to_string();
    let mut esq = builder()
        .env("ESQ_TLS__CERT", cert.as_str())
        .env("ESQ_TLS__KEY", key.as_str())
        .env("ESQ_TLS__REQUIRED", "true")
        .start()
        .await;
    let response = client().get(esq.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "tls required", "{body}");
    esq.stop().await;
}

/// An error answered before the request body was read (here a stale
/// ticket) still reads that body: the connection stays usable and the
/// answer is not lost to a reset on close.
#[tokio::test]
async fn an_early_error_reads_the_body_and_keeps_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let esq = builder().start().await;
    let address = esq.http_addr();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let body = r#"{"groupBy":"state"}"#;
    let stale = format!(
        "POST /api/dta/query HTTP/1.1\r\nHost: esq\r\nX-ESQ-Ticket: T-{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        "A".repeat(32),
        body.len()
    );
    let health = "GET /healthz HTTP/1.1\r\nHost: esq\r\n\r\n";
    // Reads until `count` answers have arrived whole (each ends in `}`).
    async fn read_answers(
        socket: &mut tokio::net::TcpStream,
        answers: &mut Vec<u8>,
        count: usize,
    ) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(answers).to_string();
            if text.matches("HTTP/1.1 ").count() >= count && text.trim_end().ends_with('}') {
                return true;
            }
            match tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => answers.extend_from_slice(&chunk[..n]),
                _ => return false,
            }
        }
    }
    let mut answers = Vec::new();
    socket.write_all(stale.as_bytes()).await.unwrap();
    let first = read_answers(&mut socket, &mut answers, 1).await;
    let text = String::from_utf8_lossy(&answers).to_string();
    assert!(first, "no answer: {text}");
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("ticket stale"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // The same connection serves the next request.
    socket.write_all(health.as_bytes()).await.unwrap();
    let second = read_answers(&mut socket, &mut answers, 2).await;
    let text = String::from_utf8_lossy(&answers).to_string();
    assert!(
        second,
        "the connection did not serve a second request: {text}"
    );
    let second = text.split("HTTP/1.1 ").nth(2).unwrap_or_default();
    assert!(second.starts_with("200"), "{text}");
}
