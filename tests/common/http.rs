//! Clients of the HTTP door, for any running esq ([`Doors`]): the demo
//! users' API tokens, ticket issuing and revocation, queries, and reading
//! `/metrics`. Each is what a user's HTTP client would send.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use super::Doors;

/// An HTTP client that gives up after 30 s (a hung server fails the test
/// instead of hanging it).
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// A demo user's API token (config/esq.toml: `demo-<user>-token`).
pub fn token(user: &str) -> String {
    format!("demo-{}-token", user.replace('_', "-"))
}

/// `POST /api/esq/ticket` as `user`: the status and the JSON answer.
pub async fn issue(esq: &(impl Doors + ?Sized), user: &str, body: Value) -> (StatusCode, Value) {
    let response = client()
        .post(esq.url("/api/esq/ticket"))
        .bearer_auth(token(user))
        .json(&body)
        .send()
        .await
        .expect("the ticket request is answered");
    read(response).await
}

/// A ticket issued over HTTP (asserts `201 Created`).
pub async fn ticket(esq: &(impl Doors + ?Sized), user: &str, body: Value) -> String {
    let (status, answer) = issue(esq, user, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["ticket"]
        .as_str()
        .unwrap_or_else(|| panic!("no ticket in {answer}"))
        .to_string()
}

/// `DELETE /api/esq/ticket/{ticket}`, as `user` (or with no credentials).
pub async fn revoke(
    esq: &(impl Doors + ?Sized),
    user: Option<&str>,
    ticket: &str,
) -> reqwest::Response {
    let mut request = client().delete(esq.url(&format!("/api/esq/ticket/{ticket}")));
    if let Some(user) = user {
        request = request.bearer_auth(token(user));
    }
    request.send().await.expect("the revocation is answered")
}

/// `POST /api/dta/query` under `ticket`: the status and the JSON answer.
pub async fn query(esq: &(impl Doors + ?Sized), ticket: &str, body: Value) -> (StatusCode, Value) {
    let response = client()
        .post(esq.url("/api/dta/query"))
        .header("X-ESQ-Ticket", ticket)
        .json(&body)
        .send()
        .await
        .expect("the query is answered");
    read(response).await
}

/// A response's status and JSON body (panics, quoting it, if not JSON).
pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a response body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {status} {text}"));
    (status, value)
}

/// The `/metrics` exposition.
pub async fn metrics(esq: &(impl Doors + ?Sized)) -> String {
    client()
        .get(esq.metrics_url())
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("the metrics text")
}

/// The value of the first sample whose line starts with `prefix` (a name,
/// or a name and labels).
pub fn metric(exposition: &str, prefix: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample of `name` (all label sets).
pub async fn metric_sum(esq: &(impl Doors + ?Sized), name: &str) -> f64 {
    metrics(esq)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
