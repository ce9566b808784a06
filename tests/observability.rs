//! Metrics, dashboard and logs of a live esq (both doors, a throwaway
//! PostgreSQL): every metric the Grafana dashboard queries is exported,
//! the PostgreSQL door reports end-to-end latency and its pool, and no
//! statement value reaches the log, even at `trace`, unless
//! `log.statements = true`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::esq::Esq;
use common::http::{client, metric, metrics};
use common::pg_client::{connect_as, connect_with_ticket};
use common::tickets::clinician_request;
use common::Doors;
use serde_json::Value;

/// Every log line of this test binary, as JSON, at `trace`.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs esq's own subscriber (JSON, `trace`, statements off) once.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let config = esq::config::LogConfig {
            format: esq::config::LogFormat::Json,
            filter: "trace".into(),
            statements: false,
        };
        let writer = captured.clone();
        esq::telemetry::try_init(&config, move || writer.clone()).expect("subscriber installs");
        captured
    })
}

/// Sample names a Prometheus text exposition offers: counters under their
/// `_total` name, histograms as `_bucket`, `_sum` and `_count`.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every `esq_…` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            let ident = &expr[start..i];
            if ident.starts_with("esq_") {
                found.push(ident.to_string());
            }
        } else {
            i += 1;
        }
    }
    found
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(esq_guard_seconds_bucket{door=~"$door"}[5m]))) / esq_x"#
        ),
        vec!["esq_guard_seconds_bucket", "esq_x"]
    );
    assert!(metric_names("sum by (le) (rate(my_esq_x[5m]))").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_esq_exports() {
    let mut esq = Esq::builder().start().await;
    // Labelled series exist once used (HTTP status codes) or pre-created
    // (doors, outcomes): one HTTP query creates the former.
    let ticket = esq.foia_ticket().await;
    let response = client()
        .post(esq.url("/api/dta/query"))
        .header("X-ESQ-Ticket", ticket.as_str())
        .json(&serde_json::json!({"groupBy": "state"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    // Read the whole answer: a client that hangs up mid-answer is not
    // counted (esq counts an answer once it is sent), and under load the
    // hang-up could come first.
    response.text().await.expect("the whole answer");
    // The answer's status is counted once it is sent: allow a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut exported = exported_names(&metrics(&esq).await);
    while !exported.contains("esq_http_responses_total") {
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP answer was never counted: {exported:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        exported = exported_names(&metrics(&esq).await);
    }
    assert!(exported.contains("esq_decisions_total"), "{exported:?}");

    let path = common::repo().join("dashboards/esq.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 15, "only {} expressions", all.len());
    let mut used = BTreeSet::new();
    for expr in &all {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no esq_ metric in {expr:?}");
        used.extend(names);
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "dashboards/esq.json queries metrics esq does not export: {missing:?}\nexported: {exported:?}"
    );
    // The issue's list: each has a panel.
    for name in [
        "esq_decisions_total",
        "esq_guard_seconds_bucket",
        "esq_statement_seconds_bucket",
        "esq_active_sessions",
        "esq_upstream_in_use",
        "esq_upstream_idle",
        "esq_upstream_waiting",
        "esq_tickets_issued_total",
        "esq_tickets_revoked_total",
        "esq_tickets_active",
        "esq_sentinel_trips_total",
        "esq_audit_write_seconds_bucket",
        "esq_audit_backlog",
    ] {
        assert!(used.contains(name), "no panel queries {name}");
    }
    esq.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_door_reports_latency_and_its_pool() {
    let mut esq = Esq::builder().start().await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    client
        .simple_query("SELECT state, count(*) FROM burial_2024 GROUP BY state")
        .await
        .unwrap();
    client
        .query("SELECT count(*) FROM burial_2024", &[])
        .await
        .unwrap();
    let text = metrics(&esq).await;
    let sample = |prefix: &str| -> f64 {
        metric(&text, prefix).unwrap_or_else(|| panic!("{prefix} missing from:\n{text}"))
    };
    // One simple round and one extended round (Parse/Bind/Execute/Sync);
    // tokio-postgres's prepare is a round of its own.
    assert!(
        sample(r#"esq_statement_seconds_count{door="pg"}"#) >= 2.0,
        "{text}"
    );
    assert_eq!(sample(r#"esq_upstream_in_use{door="pg"}"#), 1.0, "{text}");
    assert_eq!(sample(r#"esq_upstream_waiting{door="pg"}"#), 0.0, "{text}");
    assert_eq!(sample(r#"esq_active_sessions{door="pg"}"#), 1.0, "{text}");
    drop(client);
    // The session ends and its connection goes back to the pool.
    let mut idle = 0.0;
    for _ in 0..300 {
        let text = metrics(&esq).await;
        if metric(&text, r#"esq_upstream_in_use{door="pg"}"#) == Some(0.0) {
            idle = metric(&text, "esq_upstream_idle ").unwrap_or(0.0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(idle, 1.0, "the released connection is idle in the pool");
    esq.stop().await;
}

const SECRET: &str = "Zebediah-PII-7731";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_value_reaches_the_log() {
    let logs = logs();
    let mut esq = Esq::builder().start().await;
    let foia = esq.foia_ticket().await;
    let clinician = esq.ticket("clinician", clinician_request()).await;

    // Denied by the guard (ssn is not in the ticket), on the PostgreSQL door.
    let client = connect_as(&esq, "journalist", "journalist")
        .await
        .expect("connect through esq");
    client
        .simple_query(&format!("SET esq.ticket = '{foia}'"))
        .await
        .unwrap();
    let denied = client
        .simple_query(&format!(
            "SELECT count(*) FROM burial_2024 WHERE ssn = '{SECRET}'"
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code().unwrap().code(), "42501", "{denied}");
    // Allowed by the guard, refused by PostgreSQL with the value quoted.
    let client = connect_with_ticket(&esq, &clinician).await;
    let failed = client
        .query(
            &format!("SELECT state FROM burial_2024 WHERE burial_date = '{SECRET}'"),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        failed.to_string().contains("22007") || failed.code().is_some(),
        "{failed}"
    );
    // The same on the HTTP door.
    let http = common::http::client();
    let url = esq.url("/api/dta/query");
    for (ticket, sql) in [
        (
            &foia,
            format!("SELECT count(*) FROM burial_2024 WHERE ssn = '{SECRET}'"),
        ),
        (
            &clinician,
            format!("SELECT state FROM burial_2024 WHERE burial_date = '{SECRET}'"),
        ),
    ] {
        let status = http
            .post(&url)
            .header("X-ESQ-Ticket", ticket.as_str())
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{status}"
        );
    }
    esq.stop().await;

    let text = logs.text();
    assert!(
        !text.contains(SECRET),
        "a statement value reached the log:\n{}",
        lines_with(&text, SECRET)
    );
    // Nor any of the statement's text (the literal aside).
    assert!(
        !text.contains("WHERE burial_date = "),
        "statement text reached the log:\n{}",
        lines_with(&text, "WHERE burial_date = ")
    );
    // The tickets are bearer secrets too.
    assert!(!text.contains(&foia), "a ticket reached the log");
    assert!(!text.contains(&clinician), "a ticket reached the log");
    // What the log does say: sessions with user and client, statements
    // with fingerprint and outcome.
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let in_span = |span: &str, field: &str, value: &str| {
        events.iter().any(|e| {
            e["spans"].as_array().is_some_and(|spans| {
                spans
                    .iter()
                    .any(|s| s["name"] == span && s[field].as_str() == Some(value))
            })
        })
    };
    assert!(
        in_span("session", "user", "journalist"),
        "no session span with the user"
    );
    assert!(in_span("session", "door", "pg"), "no pg session span");
    assert!(
        in_span("statement", "outcome", "deny"),
        "no statement span with its outcome"
    );
    let fingerprint = esq::audit::fingerprint(&format!(
        "SELECT count(*) FROM burial_2024 WHERE ssn = '{SECRET}'"
    ));
    assert!(
        in_span("statement", "fingerprint", &fingerprint),
        "the denied statement's fingerprint is not in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_statements_puts_the_text_in_the_statement_span() {
    let logs = logs();
    let mut esq = Esq::builder()
        .env("ESQ_LOG__STATEMENTS", "true")
        .start()
        .await;
    let foia = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &foia).await;
    let marker = "Visible-Statement-5521";
    let _ = client
        .simple_query(&format!(
            "SELECT count(*) FROM burial_2024 WHERE ssn = '{marker}'"
        ))
        .await;
    esq.stop().await;
    assert!(
        logs.text().contains(marker),
        "log.statements = true, yet the statement text is not in the log"
    );
}

fn lines_with(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}
