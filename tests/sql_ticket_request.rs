//! `SELECT esq.request_ticket('{…}')`: a ticket asked for from SQL, for
//! tools that cannot call the HTTP door. esq answers it itself (one row,
//! the session then holds the ticket), through the same decision, audit
//! and refusals as `POST /api/esq/ticket`; a look-alike inside a larger
//! statement goes to the guard; the extended protocol is refused; neither
//! the request nor the ticket reaches the database or its log. Real
//! tokio-postgres and psql clients against esq and a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::pg_client::{connect_as, psql, sqlstate};
use common::Doors;
use serde_json::{json, Value};
use tokio_postgres::{Client, SimpleQueryMessage};

const COUNTS: &str = "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY state";

/// `SELECT esq.request_ticket('<body>')`, quoted as SQL.
fn request_sql(body: &Value) -> String {
    format!(
        "SELECT esq.request_ticket('{}')",
        body.to_string().replace('\'', "''")
    )
}

fn foia() -> Value {
    json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
           "fields": ["state", "id"], "aggregate": "count", "ttl": "10m"})
}

/// The one row a request answers, by column name (`None`: NULL).
async fn request_row(
    client: &Client,
    body: &Value,
) -> Result<Vec<(String, Option<String>)>, tokio_postgres::Error> {
    let messages = client.simple_query(&request_sql(body)).await?;
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 1, "one row");
    let row = rows[0];
    Ok(row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name().to_string(), row.get(i).map(str::to_string)))
        .collect())
}

fn column<'a>(row: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    row.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name}: {row:?}"))
        .1
        .as_deref()
}

fn ticket_issues(esq: &Esq, user: &str) -> Vec<Value> {
    esq.audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "ticket_issued" && r["user"] == user)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_asked_for_from_sql_answers_one_row_and_serves_the_session() {
    let esq = Esq::builder().start().await;
    let client = connect_as(&esq, "journalist", "journalist").await.unwrap();
    let row = request_row(&client, &foia()).await.expect("granted");
    let names: Vec<&str> = row.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ticket", "expires_at", "scope", "notes"]);
    let ticket = column(&row, "ticket").unwrap();
    assert!(ticket.starts_with("T-") && ticket.len() == 34, "{row:?}");
    assert!(
        column(&row, "expires_at").unwrap().ends_with('Z'),
        "{row:?}"
    );
    let scope = column(&row, "scope").unwrap();
    assert!(
        scope.starts_with("burial_2024: fields id, state"),
        "{scope}"
    );
    assert!(scope.contains("P-FOIA-001"), "{scope}");
    assert_eq!(column(&row, "notes"), None, "as asked: no notes");

    // The session holds it: data answers without a SET.
    let answered = client.simple_query(COUNTS).await.expect("counts");
    let rows = answered
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    assert!(rows > 10, "{rows} rows");

    // Recorded as the HTTP door records it, with the ticket's hash.
    let issued = ticket_issues(&esq, "journalist");
    assert_eq!(issued.len(), 1, "{issued:#?}");
    assert_eq!(issued[0]["door"], "pg");
    assert_eq!(issued[0]["outcome"], "allow");
    let hash = esq::tickets::TicketId::parse(ticket)
        .unwrap()
        .hash()
        .to_hex();
    assert_eq!(issued[0]["ticket_hash"], hash.as_str());
    let (status, _) = common::http::issue(&esq, "journalist", foia()).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let both = ticket_issues(&esq, "journalist");
    let keys = |r: &Value| {
        let mut k: Vec<String> = r.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&both[0]), keys(&both[1]), "{both:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_an_error_with_reasons_and_alternatives() {
    let esq = Esq::builder().start().await;
    let client = connect_as(&esq, "journalist", "journalist").await.unwrap();
    let body = json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                      "fields": ["state", "ssn"], "aggregate": "count"});
    let err = request_row(&client, &body).await.expect_err("denied");
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    let db = err.as_db_error().expect("a server error");
    assert!(db.message().contains("[\"ssn\"] are PII"), "{db:?}");
    assert!(db.detail().unwrap_or("").contains("P-FOIA-001"), "{db:?}");
    assert!(
        db.hint()
            .unwrap_or("")
            .contains("request fields [\"state\"] with \"aggregate\": \"count\""),
        "{db:?}"
    );
    let issued = ticket_issues(&esq, "journalist");
    assert_eq!(issued.len(), 1, "{issued:#?}");
    assert_eq!(issued[0]["outcome"], "deny");
    assert_eq!(issued[0]["door"], "pg");

    // The session goes on, without a ticket.
    let err = client.simple_query(COUNTS).await.expect_err("no ticket");
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    assert!(err.as_db_error().unwrap().message().contains("no ticket"));

    // A body esq will not evaluate names the field; nothing is issued.
    let err = request_row(
        &client,
        &json!({"dataset": "burial_2024", "fields": "state"}),
    )
    .await
    .expect_err("bad");
    assert_eq!(sqlstate(&err), "22023", "{err:?}");
    assert!(
        err.as_db_error().unwrap().message().contains("fields"),
        "{err:?}"
    );
    let err = client
        .simple_query("SELECT esq.request_ticket('not json')")
        .await
        .expect_err("not JSON");
    assert_eq!(sqlstate(&err), "22023", "{err:?}");
    assert_eq!(ticket_issues(&esq, "journalist").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alikes_go_to_the_guard_and_the_extended_protocol_is_refused() {
    let esq = Esq::builder().start().await;
    let client = connect_as(&esq, "journalist", "journalist").await.unwrap();
    let exact = request_sql(&foia());
    for sql in [
        format!("{exact}, 1"),
        format!("{exact} AS t"),
        format!("{exact} FROM burial_2024"),
        format!("{exact}; SELECT 1"),
        exact.replace("esq.request_ticket", "\"esq\".\"request_ticket\""),
        format!("SELECT * FROM ({exact}) AS s"),
    ] {
        let err = client.simple_query(&sql).await.expect_err(&sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err:?}");
    }
    // Extended protocol: a clear error, nothing issued.
    let err = client.query(&exact, &[]).await.expect_err("extended");
    assert_eq!(sqlstate(&err), "0A000", "{err:?}");
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("simple query protocol"),
        "{err:?}"
    );
    assert!(ticket_issues(&esq, "journalist").is_empty());
    // The session is still fine: the simple protocol answers it.
    request_row(&client, &foia()).await.expect("granted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_request_nor_the_ticket_reaches_the_database_log() {
    let mut esq = Esq::builder().private_postgres().start().await;
    let log = esq
        .pg()
        .log_path()
        .expect("a private cluster logs to a file");
    // Log every statement esq's service role sends (new sessions).
    let admin = esq.pg().connect().await;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {} SET log_statement = 'all'",
            esq.role()
        ))
        .await
        .unwrap();
    esq.restart().await;
    let purpose = "FOIA aggregation marker-4e1f";
    let body = json!({"dataset": "burial_2024", "purpose": purpose,
                      "fields": ["state", "id"], "aggregate": "count"});
    let client = connect_as(&esq, "journalist", "journalist").await.unwrap();
    let row = request_row(&client, &body).await.expect("granted");
    let ticket = column(&row, "ticket").unwrap().to_string();
    client.simple_query(COUNTS).await.expect("counts");
    // What the database logged: the query esq forwarded, never the request.
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("GROUP BY") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(text.contains("GROUP BY"), "statements are logged: {text}");
    assert!(!text.contains(&ticket), "the ticket reached the log");
    assert!(
        !text.contains("request_ticket"),
        "the request reached the log"
    );
    assert!(
        !text.contains("marker-4e1f"),
        "the request body reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_shortened_by_policy_is_noted_in_the_row() {
    let esq = Esq::builder().start().await;
    let body = json!({"dataset": "burial_2024", "purpose": "treatment",
                      "fields": ["id", "name", "state"], "ttl": "60m"});
    // psql, as a user types it.
    let (status, out, err) = psql(
        &esq.libpq_url("clinician", "clinician"),
        None,
        &["\\x on", &request_sql(&body), "SHOW esq.ticket"],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert!(
        out.contains("ttl shortened by policy: asked 1h, granted 15m"),
        "{out}"
    );
    assert!(out.contains("ticket for burial_2024"), "held: {out}");
}
