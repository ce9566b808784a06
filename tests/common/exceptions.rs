//! Exception waiver fixtures (issue 18) the exception tests share: esq
//! with the lifecycle set up and a second data steward, the journalist's
//! request, and the HTTP door's exception endpoints.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::esq::Esq;
use super::{http, Doors};

/// esq with the lifecycle set up (a maintenance role, schema esq migrated)
/// and a second data steward, `deputy`.
pub async fn fixture() -> Esq {
    fixture_of(Esq::builder().k_only_counts()).await
}

/// [`fixture`] with the policies as shipped (FOIA counts are private).
pub async fn fixture_as_shipped() -> Esq {
    fixture_of(Esq::builder()).await
}

async fn fixture_of(builder: super::esq::EsqBuilder) -> Esq {
    let deputy = ::esq::auth::token::hash_hex(&http::token("deputy"));
    let esq = builder
        .lifecycle()
        .rows(2_000)
        .env("ESQ_SENTINEL__ENABLED", "false")
        .env("ESQ_USERS__DEPUTY__ROLES", r#"["data_steward"]"#)
        .env("ESQ_USERS__DEPUTY__CLEARANCE", "INTERNAL")
        .env(
            "ESQ_USERS__DEPUTY__API_TOKEN_SHA256",
            format!(r#"["{deputy}"]"#),
        )
        .start()
        .await;
    // Datasets with subjects are refused until the tombstones are read.
    for _ in 0..300 {
        if esq.app().tombstones.is_read() {
            return esq;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("esq never read its tombstones");
}

/// The journalist's need: burials listed by state, county and branch —
/// row level, but no PII (FOIA gives counts only).
pub fn listing(extra: Value) -> Value {
    let mut body = json!({
        "dataset": "burial_2024",
        "fields": ["state", "county", "branch"],
        "aggregate": null,
        "purpose": "a county-by-county story on veterans' burials",
        "justification": "the story needs the individual burials per county; no name, SSN or date of birth",
        "duration": "7d",
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

pub async fn call(
    esq: &impl Doors,
    method: reqwest::Method,
    user: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http::client().request(method, esq.url(path));
    if let Some(user) = user {
        request = request.bearer_auth(http::token(user));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    http::read(request.send().await.unwrap()).await
}

pub async fn ask(esq: &impl Doors, user: &str, body: Value) -> (StatusCode, Value) {
    call(
        esq,
        reqwest::Method::POST,
        Some(user),
        "/api/esq/exception",
        Some(body),
    )
    .await
}

/// A new pending exception of `user`'s: its id.
pub async fn pending(esq: &impl Doors, user: &str, body: Value) -> String {
    let (status, answer) = ask(esq, user, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["state"], "pending", "{answer}");
    answer["exception"].as_str().unwrap().to_string()
}

pub async fn decide(
    esq: &impl Doors,
    user: &str,
    id: &str,
    verb: &str,
    comment: &str,
) -> (StatusCode, Value) {
    let path = format!("/api/esq/exception/{id}/{verb}");
    let body = json!({ "comment": comment });
    call(esq, reqwest::Method::POST, Some(user), &path, Some(body)).await
}

pub async fn show(esq: &impl Doors, user: &str, id: &str) -> (StatusCode, Value) {
    let path = format!("/api/esq/exception/{id}");
    call(esq, reqwest::Method::GET, Some(user), &path, None).await
}

/// A ticket request for the listing's `fields`, under `exception`.
pub fn under(exception: &str, fields: &[&str]) -> Value {
    json!({"dataset": "burial_2024", "purpose": "county story", "fields": fields,
           "exception": exception, "ttl": "10m"})
}

pub async fn state_in_database(esq: &Esq, id: &str) -> String {
    esq.pg()
        .connect()
        .await
        .query_one("SELECT state FROM esq.exceptions WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

/// The audit records naming exception `id`.
pub fn naming(esq: &Esq, id: &str) -> Vec<Value> {
    esq.audit_records()
        .into_iter()
        .filter(|r| r["exception"] == id)
        .collect()
}

pub fn actions(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["kind"] == "exception")
        .map(|r| r["detail"]["action"].as_str().unwrap_or("").to_string())
        .collect()
}
