//! Standing ticket requests: a user (the shipped `bi` user) whose tool can
//! only fill host, user and password gets a ticket at login, decided and
//! audited as `POST /api/esq/ticket` would; a refusal leaves the login
//! without a ticket and says why; an explicit ticket wins; an expired
//! standing ticket is renewed at the next statement. And a lifetime the
//! policies shorten says so, on every path (HTTP, CLI, login).
//! Real psql against esq and a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::esq::Esq;
use common::http;
use common::pg_client::{connect_as, psql, sqlstate};
use common::process::Run;
use common::Doors;
use reqwest::StatusCode;
use serde_json::{json, Value};

const COUNTS: &str = "SELECT state, count(*) FROM burial_2024 GROUP BY state ORDER BY state";

/// Numbers in the second column of psql's aligned output.
fn counts(out: &str) -> Vec<i64> {
    out.lines()
        .filter_map(|l| l.split('|').nth(1))
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

/// Whether `text` holds a whole ticket id (`T-` and 32 base64url characters).
fn holds_a_ticket(text: &str) -> bool {
    text.match_indices("T-").any(|(at, _)| {
        let rest = &text[at + 2..];
        rest.len() >= 32
            && rest[..32]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// The audit records of ticket requests by `user` through `door`.
fn issues(esq: &Esq, user: &str, door: &str) -> Vec<Value> {
    esq.audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "ticket_issued" && r["user"] == user && r["door"] == door)
        .collect()
}

fn keys(record: &Value) -> Vec<String> {
    let mut keys: Vec<String> = record
        .as_object()
        .expect("a record is an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_request_gives_a_bi_login_its_ticket() {
    let esq = Esq::builder().start().await;
    let url = esq.libpq_url("bi", "bi");
    let (status, out, err) = psql(&url, None, &[COUNTS, "SHOW esq.ticket"]).await;
    assert_eq!(status, 0, "{err}");
    assert!(
        err.contains("this session has a ticket from your standing request"),
        "{err}"
    );
    assert!(err.contains("burial_2024: fields state, branch"), "{err}");
    assert!(err.contains("expires at"), "{err}");
    assert!(
        !holds_a_ticket(&err),
        "the notice names the ticket by hash: {err}"
    );
    let counts = counts(&out);
    assert!(counts.len() > 10, "answered without any SET: {out}\n{err}");
    assert!(out.contains("ticket for burial_2024"), "{out}");

    // Recorded as the HTTP door records a ticket request.
    let pg = issues(&esq, "bi", "pg");
    assert_eq!(pg.len(), 1, "{pg:#?}");
    assert_eq!(pg[0]["outcome"], "allow");
    assert_eq!(pg[0]["dataset"], "burial_2024");
    assert!(pg[0]["ticket_hash"].is_string(), "{:#?}", pg[0]);
    assert_eq!(pg[0]["policy_id"], "P-FOIA-001");
    let (status, body) = http::issue(&esq, "journalist", common::tickets::foia_request("5m")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let over_http = issues(&esq, "journalist", "http");
    assert_eq!(over_http.len(), 1, "{over_http:#?}");
    assert_eq!(keys(&pg[0]), keys(&over_http[0]));
    assert_eq!(pg[0]["fingerprint"], over_http[0]["fingerprint"]);
    // The statements ran under it.
    let decisions: Vec<Value> = esq
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "decision" && r["user"] == "bi")
        .collect();
    assert!(
        decisions
            .iter()
            .any(|r| r["ticket_hash"] == pg[0]["ticket_hash"] && r["outcome"] != "deny"),
        "{decisions:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_standing_request_still_logs_in_without_a_ticket() {
    let esq = Esq::builder()
        .env(
            "ESQ_USERS__BI__STANDING_TICKET__FIELDS",
            r#"["state", "ssn"]"#,
        )
        .start()
        .await;
    let url = esq.libpq_url("bi", "bi");
    let (_, out, err) = psql(
        &url,
        None,
        &["\\set VERBOSITY verbose", "SHOW esq.ticket", COUNTS],
    )
    .await;
    assert!(
        out.contains("none"),
        "the login succeeds, without a ticket: {out}\n{err}"
    );
    assert!(err.contains("your standing ticket request"), "{err}");
    assert!(
        err.contains("[\"ssn\"] are PII"),
        "the policy's reason: {err}"
    );
    assert!(err.contains("this session has no ticket"), "{err}");
    assert!(
        err.contains("request fields [\"state\"] with \"aggregate\": \"count\""),
        "the policy's alternative: {err}"
    );
    assert!(!err.contains("127.0.0.1"), "{err}");
    // The query meets the ordinary no-ticket denial.
    assert!(err.contains("42501"), "{err}");
    assert!(err.contains("no ticket"), "{err}");

    let pg = issues(&esq, "bi", "pg");
    assert_eq!(pg.len(), 1, "{pg:#?}");
    assert_eq!(pg[0]["outcome"], "deny");
    assert_eq!(pg[0]["policy_id"], "P-FOIA-001");
    assert!(pg[0]["ticket_hash"].is_null(), "{:#?}", pg[0]);
    // The same shape as a refusal over HTTP.
    let (status, body) = http::issue(
        &esq,
        "journalist",
        json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
               "fields": ["state", "ssn"], "aggregate": "count"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let over_http = issues(&esq, "journalist", "http");
    assert_eq!(keys(&pg[0]), keys(&over_http[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_ticket_wins_over_the_standing_request() {
    let esq = Esq::builder().start().await;
    let own = esq
        .ticket(
            "bi",
            json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                   "fields": ["state"], "aggregate": "count"}),
        )
        .await;
    let url = esq.libpq_url("bi", "bi");
    // At startup: no standing request is asked.
    let (status, out, err) = psql(
        &url,
        Some(&format!("-c esq.ticket={own}")),
        &["SHOW esq.ticket"],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert!(!err.contains("standing"), "{err}");
    assert!(out.contains("fields state;"), "the explicit ticket: {out}");
    assert!(issues(&esq, "bi", "pg").is_empty());

    // SET replaces the standing ticket for the rest of the session.
    let (status, out, err) = psql(
        &url,
        None,
        &[
            "SHOW esq.ticket",
            &format!("SET esq.ticket = '{own}'"),
            "SHOW esq.ticket",
        ],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert!(err.contains("from your standing request"), "{err}");
    let shown: Vec<&str> = out.lines().filter(|l| l.contains("ticket for")).collect();
    assert_eq!(shown.len(), 2, "{out}");
    assert!(shown[0].contains("fields state, branch;"), "{out}");
    assert!(shown[1].contains("fields state;"), "{out}");
}

/// The standing ticket lives one second; psql waits two (`\! sleep 2`)
/// before its next statement, so the ticket has expired by then whatever
/// the machine's speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_standing_ticket_is_renewed_at_the_next_statement() {
    let esq = Esq::builder()
        .env("ESQ_USERS__BI__STANDING_TICKET__TTL", "1s")
        .start()
        .await;
    let url = esq.libpq_url("bi", "bi");
    let (status, out, err) = psql(&url, None, &["\\! sleep 2", COUNTS]).await;
    assert_eq!(status, 0, "{err}");
    assert!(err.contains("from your standing request"), "{err}");
    assert!(
        err.contains("your standing ticket expired and was renewed"),
        "{err}"
    );
    assert!(
        counts(&out).len() > 10,
        "answered under the renewal: {out}\n{err}"
    );
    let pg = issues(&esq, "bi", "pg");
    assert_eq!(pg.len(), 2, "login and renewal: {pg:#?}");
    assert!(pg.iter().all(|r| r["outcome"] == "allow"));
    assert_ne!(pg[0]["ticket_hash"], pg[1]["ticket_hash"]);
    // No statement met the expired ticket.
    assert!(!esq
        .audit_records()
        .iter()
        .any(|r| r["user"] == "bi" && r["outcome"] == "stale"));
}

/// A ticket the session set itself is never replaced from the standing
/// request: once it goes stale (here: revoked), statements say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_ticket_is_never_replaced_by_the_standing_request() {
    let esq = Esq::builder().start().await;
    let own = esq
        .ticket(
            "bi",
            json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                   "fields": ["state"], "aggregate": "count"}),
        )
        .await;
    let client = connect_as(&esq, "bi", "bi").await.expect("bi logs in");
    client
        .batch_execute(&format!("SET esq.ticket = '{own}'"))
        .await
        .expect("SET esq.ticket");
    esq.revoke(&own).await;
    let err = client.simple_query(COUNTS).await.expect_err("stale");
    assert_eq!(sqlstate(&err), "28000", "{err:?}");
    assert_eq!(issues(&esq, "bi", "pg").len(), 1, "the login's only");
}

/// The clinician's row-level PHI tickets last at most 15 minutes
/// (policies/hipaa.rego): asking for an hour says so everywhere.
fn clinician_request(ttl: &str) -> Value {
    json!({"dataset": "burial_2024", "purpose": "treatment",
           "fields": ["id", "name", "state", "county", "burial_date", "branch"], "ttl": ttl})
}

const CAPPED: &str = "ttl shortened by policy: asked 1h, granted 15m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_shortened_by_policy_says_so() {
    let esq = Esq::builder()
        .env(
            "ESQ_USERS__CLINICIAN__STANDING_TICKET__DATASET",
            "burial_2024",
        )
        .env(
            "ESQ_USERS__CLINICIAN__STANDING_TICKET__PURPOSE",
            "treatment",
        )
        .env(
            "ESQ_USERS__CLINICIAN__STANDING_TICKET__FIELDS",
            r#"["id", "state"]"#,
        )
        .env("ESQ_USERS__CLINICIAN__STANDING_TICKET__TTL", "60m")
        .start()
        .await;

    // HTTP: the response carries the note; as asked, no note.
    let (status, body) = http::issue(&esq, "clinician", clinician_request("60m")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["expires"], "15m", "{body}");
    let notes = body["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1, "{body}");
    assert!(notes[0].as_str().unwrap().starts_with(CAPPED), "{body}");
    let (status, body) = http::issue(&esq, "clinician", clinician_request("10m")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["notes"], json!([]), "{body}");

    // The standing request's notice at login.
    let (status, _, err) = psql(
        &esq.libpq_url("clinician", "clinician"),
        None,
        &["SELECT 1"],
    )
    .await;
    assert_eq!(status, 0, "{err}");
    assert!(err.contains("from your standing request"), "{err}");
    assert!(err.contains(CAPPED), "{err}");

    // The CLI prints it.
    let run = Run::esq(&[
        "ticket",
        "issue",
        "--user",
        "clinician",
        "--dataset",
        "burial_2024",
        "--fields",
        "id,name,state",
        "--purpose",
        "treatment",
        "--ttl",
        "60m",
    ]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("note      {CAPPED}")),
        "{}",
        run.stdout
    );
}

/// A standing request the catalog cannot serve, or one naming an
/// exception, stops `esq check` (and start-up) naming the user's key,
/// rather than failing at that user's login.
#[test]
fn a_bad_standing_request_is_a_configuration_error() {
    let run = Run::of(common::process::esq_command().args(["check"]).env(
        "ESQ_USERS__BI__STANDING_TICKET__FIELDS",
        r#"["state", "nope"]"#,
    ));
    assert_ne!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("users.bi.standing_ticket") && run.stderr.contains("\"nope\""),
        "{}",
        run.stderr
    );
    let run = Run::of(common::process::esq_command().args(["check"]).env(
        "ESQ_USERS__BI__STANDING_TICKET__EXCEPTION",
        "X-abcdefghijklmnop",
    ));
    assert_ne!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("users.bi.standing_ticket.exception"),
        "{}",
        run.stderr
    );
}
