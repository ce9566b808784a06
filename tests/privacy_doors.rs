//! Private answers through both doors (issue 14): a FOIA ticket's counts are
//! noised and thresholded, the budget is charged once per statement (a
//! repeat returns the same rows and costs nothing, on either door), a spent
//! budget is refused on both doors, replicas sharing Redis share one budget
//! that racing queries cannot overspend, and what was spent is shown (a
//! notice, a header, `GET /api/esq/budget`, metrics, the audit record).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeMap;

use common::esq::Esq;
use common::wire::{codes, query, Raw};
use common::{http, Doors};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BY_STATE: &str = "SELECT state, count(*) FROM burial_2024 GROUP BY state";

/// A FOIA ticket whose policy narrows the request's privacy to ε 0.5 per
/// answer; `budget` epsilon per day.
async fn private_ticket(esq: &(impl Doors + ?Sized), budget: f64) -> String {
    http::ticket(
        esq,
        "journalist",
        json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
               "fields": ["state", "branch", "id"], "aggregate": "count",
               "privacy": {"epsilon_per_query": 0.5, "epsilon_budget": budget,
                           "budget_period_seconds": 86400}}),
    )
    .await
}

/// Rows of a simple query through the PostgreSQL door, and its notices.
async fn pg_answer(raw: &mut Raw, sql: &str) -> (Vec<Vec<String>>, Vec<String>, Vec<String>) {
    raw.send(&[query(sql)]).await;
    let messages = raw.until_ready().await;
    let rows = messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| text_values(body))
        .collect();
    let notices = messages
        .iter()
        .filter(|(tag, _)| *tag == b'N')
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .collect();
    (rows, notices, codes(&messages))
}

fn text_values(body: &[u8]) -> Vec<String> {
    let count = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    (0..count)
        .map(|_| {
            let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            at += 4;
            let len = usize::try_from(len).unwrap_or(0);
            let value = String::from_utf8_lossy(&body[at..at + len]).into_owned();
            at += len;
            value
        })
        .collect()
}

fn by_state(rows: &[Vec<String>]) -> BTreeMap<String, i64> {
    rows.iter()
        .map(|row| (row[0].clone(), row[1].parse().unwrap()))
        .collect()
}

fn json_by_state(rows: &Value) -> BTreeMap<String, i64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["state"].as_str().unwrap().to_string(),
                row["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn budget(esq: &(impl Doors + ?Sized), ticket: &str) -> Value {
    let response = http::client()
        .get(esq.url("/api/esq/budget?dataset=burial_2024"))
        .header("X-ESQ-Ticket", ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_answers_spend_once_per_statement_on_both_doors() {
    let esq = Esq::builder().rows(20_000).start().await;
    let ticket = private_ticket(&esq, 4.0).await;
    let mut raw = Raw::login(&esq, &ticket).await;
    let (first, notices, errors) = pg_answer(&mut raw, BY_STATE).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!first.is_empty(), "the big states pass the noisy threshold");
    assert!(
        notices.iter().any(|n| n.contains("cost epsilon 0.5")),
        "the notice says what the answer cost: {notices:?}"
    );
    // The exact counts: the guard's own rewrite, run straight on
    // PostgreSQL. The answer is not them everywhere (noise), and no
    // released group is small.
    let rewritten = esq
        .audit_records()
        .into_iter()
        .find(|r| r["detail"]["privacy"].is_object())
        .and_then(|r| r["rewritten"].as_str().map(str::to_string))
        .expect("the private answer's audit record");
    let direct = esq.pg().connect().await;
    let exact: BTreeMap<String, i64> = direct
        .query(rewritten.as_str(), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let released = by_state(&first);
    assert!(
        released
            .iter()
            .any(|(state, n)| exact.get(state) != Some(n)),
        "counts carry noise: {released:?}"
    );
    assert!(released.values().all(|n| *n >= 11), "{released:?}");

    // A repeat: the same rows, nothing charged.
    let (again, notices, _) = pg_answer(&mut raw, BY_STATE).await;
    assert_eq!(again, first, "a repeat returns the same answer");
    assert!(
        notices.iter().any(|n| n.contains("cost nothing")),
        "{notices:?}"
    );
    // The same statement on the HTTP door recalls it too.
    let response = http::client()
        .post(esq.url("/api/dta/query"))
        .header("X-ESQ-Ticket", &ticket)
        .json(&json!({"sql": BY_STATE}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = response
        .headers()
        .get("esq-privacy-budget")
        .expect("the budget header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(header.contains("spent=0.5; remaining=3.5"), "{header}");
    assert!(header.contains("cost=0"), "{header}");
    let rows: Value = response.json().await.unwrap();
    assert_eq!(json_by_state(&rows), released, "one answer on both doors");

    let status = budget(&esq, &ticket).await;
    assert_eq!(status["spent"], 0.5, "{status}");
    assert_eq!(status["remaining"], 3.5, "{status}");
    let metrics = http::metrics(&esq).await;
    assert_eq!(
        http::metric(
            &metrics,
            r#"esq_privacy_epsilon_spent_total{dataset="burial_2024"}"#
        ),
        Some(0.5),
        "{metrics}"
    );
    // One audit record per answer says what it spent.
    let charges: Vec<Value> = esq
        .audit_records()
        .into_iter()
        .filter(|r| r["detail"]["privacy"].is_object())
        .collect();
    assert_eq!(charges.len(), 3, "{charges:?}");
    assert_eq!(charges[0]["detail"]["privacy"]["charged"], true);
    assert_eq!(charges[1]["detail"]["privacy"]["charged"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_is_refused_on_both_doors_and_repeats_stay_free() {
    let esq = Esq::builder().rows(5_000).start().await;
    let ticket = private_ticket(&esq, 1.0).await;
    let mut raw = Raw::login(&esq, &ticket).await;
    let statements = [
        "SELECT branch, count(*) FROM burial_2024 GROUP BY branch",
        "SELECT count(*) FROM burial_2024 WHERE state = 'CA'",
    ];
    let mut answers = Vec::new();
    for sql in statements {
        let (rows, _, errors) = pg_answer(&mut raw, sql).await;
        assert!(errors.is_empty(), "{sql}: {errors:?}");
        answers.push(rows);
    }
    // Two answers at 0.5 spent the budget of 1.0.
    let (rows, _, errors) = pg_answer(&mut raw, BY_STATE).await;
    assert_eq!(errors, ["42501"], "a third statement is refused");
    assert!(rows.is_empty());
    let (status, body) = http::query(&esq, &ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "privacy budget spent", "{body}");
    assert!(body["renews_at"].is_string(), "{body}");
    // A repeat of an earlier statement is still answered, the same.
    let (rows, _, errors) = pg_answer(&mut raw, statements[0]).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows, answers[0]);
    let metrics = http::metrics(&esq).await;
    assert!(
        http::metric(
            &metrics,
            r#"esq_privacy_refusals_total{dataset="burial_2024",reason="budget"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_share_one_budget_and_cannot_overspend_together() {
    let mut a = Esq::builder()
        .rows(5_000)
        .private_redis()
        .env("ESQ_HTTP__MAX_IN_FLIGHT_PER_USER", "16")
        .start()
        .await;
    let b = a.spawn_binary(&[]).await;
    let ticket = private_ticket(&a, 2.0).await;
    // Twelve different statements at once, half on each replica and door:
    // the budget pays for four.
    let mut racing = tokio::task::JoinSet::new();
    let states = [
        "CA", "TX", "NY", "FL", "PA", "OH", "IL", "MI", "GA", "NC", "NJ", "VA",
    ];
    for (i, state) in states.iter().enumerate() {
        let sql = format!("SELECT count(*) FROM burial_2024 WHERE state = '{state}'");
        let ticket = ticket.clone();
        let url = if i % 2 == 0 {
            a.url("/api/dta/query")
        } else {
            b.url("/api/dta/query")
        };
        racing.spawn(async move {
            http::client()
                .post(url)
                .header("X-ESQ-Ticket", ticket)
                .json(&json!({"sql": sql}))
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    let mut answered = 0;
    while let Some(status) = racing.join_next().await {
        match status.unwrap() {
            StatusCode::OK => answered += 1,
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        answered, 4,
        "the budget of 2.0 pays for four answers of 0.5"
    );
    let on_a = budget(&a, &ticket).await;
    let on_b = budget(&b, &ticket).await;
    assert_eq!(on_a["spent"], 2.0, "{on_a}");
    assert_eq!(on_a["spent"], on_b["spent"], "{on_a} {on_b}");
    // The budget survives a restart (it lives in Redis).
    a.restart().await;
    assert_eq!(budget(&a, &ticket).await["spent"], 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_private_statements_are_released_per_binding() {
    let esq = Esq::builder().rows(5_000).start().await;
    let ticket = private_ticket(&esq, 4.0).await;
    let client = common::pg_client::connect_with_ticket(&esq, &ticket).await;
    // The extended protocol, a parameter, binary results (tokio-postgres).
    let statement = client
        .prepare("SELECT count(*) FROM burial_2024 WHERE state = $1")
        .await
        .unwrap();
    let ca: i64 = client.query_one(&statement, &[&"CA"]).await.unwrap().get(0);
    let again: i64 = client.query_one(&statement, &[&"CA"]).await.unwrap().get(0);
    assert_eq!(ca, again, "the same binding recalls the same answer");
    let tx: i64 = client.query_one(&statement, &[&"TX"]).await.unwrap().get(0);
    assert!(ca > 0 && tx > 0);
    let status = budget(&esq, &ticket).await;
    assert_eq!(
        status["spent"], 1.0,
        "two bindings were charged, the repeat was not: {status}"
    );
    // Grouped, through a prepared statement: every released group is large.
    let rows = client
        .query(
            "SELECT branch, count(*) FROM burial_2024 WHERE state IN ($1, $2) GROUP BY branch",
            &[&"CA", &"TX"],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|row| row.get::<_, i64>(1) >= 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_period_or_budget_in_a_request_opens_no_second_budget() {
    let esq = Esq::builder().rows(5_000).start().await;
    let spend = |ticket: String, state: &'static str| {
        let esq = &esq;
        async move {
            http::query(
                esq,
                &ticket,
                json!({"sql": format!("SELECT count(*) FROM burial_2024 WHERE state = '{state}'")}),
            )
            .await
        }
    };
    let first = private_ticket(&esq, 1.0).await;
    for state in ["CA", "TX"] {
        assert_eq!(spend(first.clone(), state).await.0, StatusCode::OK);
    }
    assert_eq!(spend(first.clone(), "NY").await.0, StatusCode::FORBIDDEN);
    // A ticket asking for a longer period (policies take the longer one)
    // or a fresh budget sees the same spends: nothing new to spend.
    for privacy in [
        json!({"epsilon_per_query": 0.5, "epsilon_budget": 1.0, "budget_period_seconds": 86401}),
        json!({"epsilon_per_query": 0.5, "epsilon_budget": 1.0, "budget_period_seconds": 172800}),
    ] {
        let other = http::ticket(
            &esq,
            "journalist",
            json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                   "fields": ["state", "id"], "aggregate": "count", "privacy": privacy}),
        )
        .await;
        let (status, body) = spend(other, "FL").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{privacy}: {body}");
        assert_eq!(body["error"], "privacy budget spent", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_answer_is_never_refused_for_its_exact_number_of_groups() {
    // Red team (issue 14, F2): refusing an answer with "too many groups"
    // before it was charged told, for free and exactly, how many people a
    // filter matches. Grouping by every non-PII field makes about one group
    // per person: the answer is noised a chunk at a time and charged.
    let esq = Esq::builder().rows(110_000).start().await;
    let ticket = http::ticket(
        &esq,
        "journalist",
        json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
               "fields": ["state", "county", "burial_date", "branch", "id"],
               "aggregate": "count"}),
    )
    .await;
    let (status, rows) = http::query(
        &esq,
        &ticket,
        json!({"sql": "SELECT state, county, burial_date, branch, count(*) FROM burial_2024 GROUP BY state, county, burial_date, branch"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert!(
        rows.as_array().unwrap().len() < 100,
        "groups of one or two people stay under the threshold"
    );
    assert_eq!(
        budget(&esq, &ticket).await["spent"],
        0.5,
        "and it was charged"
    );
}
