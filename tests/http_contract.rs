//! Keeps `openapi.yaml` true: every documented path, method and status is
//! provoked against a live esq (real PostgreSQL with the sample data), and
//! each answer must have that status, a documented media type, the
//! documented response headers, and a body that fits the documented schema
//! (types, `required`, `const`, `enum`, `oneOf`, `items`, `$ref`). A
//! documented status without a scenario here fails the test, and so does a
//! scenario for a status the file does not document.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::BTreeSet;

use common::esq::{Esq, EsqBuilder};
use common::exports::{clinician_with_id, Exports};
use common::http::{client as http, token};
use common::tickets::foia_request;
use common::{free_port, Doors};
use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};

type Key = (String, String, u16);

fn load_spec() -> Value {
    let text = std::fs::read_to_string(common::repo().join("openapi.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("openapi.yaml parses")
}

fn documented(spec: &Value) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" || method == "servers" {
                continue;
            }
            for status in operation["responses"].as_object().unwrap().keys() {
                keys.insert((path.clone(), method.to_uppercase(), status.parse().unwrap()));
            }
        }
    }
    keys
}

/// Follows `$ref`s inside the file.
fn resolve<'a>(spec: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').expect("local $ref");
        node = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"));
    }
    node
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("unknown type {other} in openapi.yaml"),
    }
}

/// The subset of JSON Schema the file uses.
fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = options
            .iter()
            .filter(|o| validate(spec, o, value, at).is_ok())
            .count();
        if fits == 0 {
            return Err(format!("{at}: {value} fits none of the oneOf schemas"));
        }
    }
    if let Some(expected) = schema.get("const") {
        if expected != value {
            return Err(format!("{at}: {value} is not {expected}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_matches(name, value) => {
            return Err(format!("{at}: {value} is not of type {name}"));
        }
        Some(Value::Array(names))
            if !names
                .iter()
                .any(|n| type_matches(n.as_str().unwrap(), value)) =>
        {
            return Err(format!("{at}: {value} is not of types {names:?}"));
        }
        _ => {}
    }
    if let Value::Object(object) = value {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!(
                    "{at}: required property {name} missing from {value}"
                ));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if let Some(inner) = object.get(name) {
                    validate(spec, property, inner, &format!("{at}.{name}"))?;
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate().take(100) {
            validate(spec, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Checks one live answer against the documented response.
async fn check(spec: &Value, key: &Key, response: Response) -> Result<(), String> {
    let (path, method, status) = key;
    let documented = resolve(
        spec,
        &spec["paths"][path][method.to_lowercase()]["responses"][status.to_string()],
    );
    if response.status().as_u16() != *status {
        let got = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "{method} {path}: expected {status}, got {got}: {body}"
        ));
    }
    if let Some(headers) = documented.get("headers").and_then(Value::as_object) {
        for name in headers.keys() {
            if !response
                .headers()
                .contains_key(name.to_lowercase().as_str())
            {
                return Err(format!(
                    "{method} {path} {status}: documented header {name} missing"
                ));
            }
        }
    }
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| {
            v.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let Some(media) = documented.get("content").and_then(|c| c.get(&content_type)) else {
        return Err(format!(
            "{method} {path} {status}: media type {content_type:?} not documented"
        ));
    };
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if content_type == "application/json" {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{method} {path} {status}: not JSON: {e}"))?;
        validate(
            spec,
            &media["schema"],
            &value,
            &format!("{method} {path} {status}"),
        )?;
    }
    Ok(())
}

/// The servers the scenarios need.
struct Servers {
    main: Esq,
    /// `http.rate_limit_per_minute = 1`
    limited: Esq,
    /// Upstream refuses connections.
    dead: Esq,
    /// Upstream accepts and never answers; `http.request_timeout = 1s`.
    hanging: Esq,
    /// The ticket store is a Redis that refuses connections.
    storeless: Esq,
    /// The hanging server's policy directory (a copy the test may break).
    hanging_policies: std::path::PathBuf,
    /// A maintenance role, a signing key and schema esq (right-to-delete);
    /// exports on, in `exports`.
    lifecycle: Esq,
    /// `lifecycle`'s export directory and KEK.
    _exports: Exports,
    /// Exports on, `http.rate_limit_per_minute = 1`; its schema esq does
    /// not answer (the rate limit is checked before it is needed).
    exports_limited: Esq,
    /// Export jobs queued on `lifecycle` before the scenarios.
    jobs: ExportJobs,
}

/// Export jobs on `lifecycle`, queued before the scenarios (the runner
/// works on them meanwhile), and the tickets the export scenarios use.
struct ExportJobs {
    /// The clinician's row-level ticket with the subject key.
    clinician: String,
    /// The journalist's FOIA ticket.
    journalist: String,
    /// The clinician's job that completes.
    completes: String,
    /// The clinician's job that fails (row-level without the subject key).
    fails: String,
}

/// esq over 5,000 rows of sample data.
fn builder() -> EsqBuilder {
    Esq::builder().rows(5_000)
}

fn foia() -> Value {
    foia_request("5m")
}

/// `POST /api/esq/forget` of burial_2024's `subject`, as `user`.
fn forget(esq: &Esq, user: Option<&str>, subject: Value) -> RequestBuilder {
    let request = http().post(esq.url("/api/esq/forget")).json(&json!({
        "dataset": "burial_2024", "subject": subject, "reason": "GDPR art. 17", "requested_by": "family"}));
    match user {
        Some(user) => request.bearer_auth(token(user)),
        None => request,
    }
}

/// `GET /api/esq/subject?QUERY`, as `user`.
fn subject(esq: &Esq, user: Option<&str>, query: &str) -> RequestBuilder {
    let request = http().get(esq.url(&format!("/api/esq/subject?{query}")));
    match user {
        Some(user) => request.bearer_auth(token(user)),
        None => request,
    }
}

/// `METHOD /api/esq/exception…` on `esq`, as `user`, with `body`.
fn exception(
    esq: &Esq,
    method: reqwest::Method,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> RequestBuilder {
    let mut request = http().request(method, esq.url(path));
    if let Some(user) = user {
        request = request.bearer_auth(token(user));
    }
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
}

/// An exception request of the journalist's.
fn waiver() -> Value {
    json!({"dataset": "burial_2024", "fields": ["state", "county"], "purpose": "contract",
           "justification": "the contract test", "duration": "1d"})
}

/// A new pending exception of the journalist's on `esq`: its id.
async fn pending_exception(esq: &Esq) -> String {
    let response = exception(
        esq,
        reqwest::Method::POST,
        "/api/esq/exception",
        Some("journalist"),
        Some(waiver()),
    )
    .send()
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    body["exception"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string()
}

/// `GET /api/esq/budget` under `ticket`.
fn budget(esq: &Esq, ticket: &str) -> RequestBuilder {
    http()
        .get(esq.url("/api/esq/budget?dataset=burial_2024"))
        .header("X-ESQ-Ticket", ticket)
}

async fn new_ticket(esq: &Esq, user: &str) -> String {
    common::http::ticket(esq, user, foia()).await
}

/// A row-level export the consent ledger can name (the subject key is
/// selected).
const EXPORT_SQL: &str =
    "SELECT id, state, county, burial_date FROM burial_2024 WHERE id <= 10 ORDER BY id";

fn export_body() -> Value {
    json!({"sql": EXPORT_SQL, "reason": "the contract test"})
}

/// `POST /api/dta/export` under `ticket`.
fn export(esq: &Esq, ticket: &str) -> RequestBuilder {
    http()
        .post(esq.url("/api/dta/export"))
        .header("x-esq-ticket", ticket)
}

/// Polls the clinician's `job` on `esq` (every 100 ms) until it ends in `state`.
async fn ended(esq: &Esq, job: &str, state: &str) {
    let done = common::exports::finished(esq, "clinician", job).await;
    assert_eq!(done["state"], state, "{done}");
}

/// Queues the export jobs of [`ExportJobs`] on `esq`.
async fn export_jobs(esq: &Esq) -> ExportJobs {
    let clinician = esq.ticket("clinician", clinician_with_id()).await;
    let journalist = esq.ticket("journalist", foia()).await;
    let without_key = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let mut jobs = Vec::new();
    for (ticket, sql) in [
        (&clinician, EXPORT_SQL),
        (
            &without_key,
            "SELECT state, county FROM burial_2024 WHERE state = 'CA'",
        ),
    ] {
        let (code, queued) = common::exports::submit(
            esq,
            ticket,
            json!({"sql": sql, "reason": "the contract test"}),
        )
        .await;
        assert_eq!(code, reqwest::StatusCode::ACCEPTED, "{queued}");
        jobs.push(queued["job"].as_str().unwrap().to_string());
    }
    let fails = jobs.pop().unwrap();
    let completes = jobs.pop().unwrap();
    ExportJobs {
        clinician,
        journalist,
        completes,
        fails,
    }
}

fn query(esq: &Esq, ticket: &str) -> RequestBuilder {
    http()
        .post(esq.url("/api/dta/query"))
        .header("x-esq-ticket", ticket)
}

/// The requests that provoke each documented answer.
async fn provoke(s: &Servers, limited_ticket: &str, key: &Key) -> Vec<Response> {
    let (path, method, status) = key;
    let m = &s.main;
    let huge = "x".repeat(1 << 20);
    let send = |r: RequestBuilder| async move { r.send().await.unwrap() };
    match (path.as_str(), method.as_str(), *status) {
        ("/api/esq/ticket", "POST", 201) => vec![send(http().post(m.url("/api/esq/ticket")).bearer_auth(token("journalist")).json(&foia())).await],
        ("/api/esq/ticket", "POST", 400) => vec![
            send(http().post(m.url("/api/esq/ticket")).bearer_auth(token("journalist")).header("content-type", "application/json").body("{")).await,
            send(http().post(m.url("/api/esq/ticket")).bearer_auth(token("journalist")).json(&json!({"dataset": "burial_2024", "purpose": "x", "fields": ["state"], "x": 1}))).await,
        ],
        ("/api/esq/ticket", "POST", 401) => vec![
            send(http().post(m.url("/api/esq/ticket")).json(&foia())).await,
            send(http().post(m.url("/api/esq/ticket")).bearer_auth("forged").json(&foia())).await,
        ],
        ("/api/esq/ticket", "POST", 403) => vec![send(http().post(m.url("/api/esq/ticket")).bearer_auth(token("journalist")).json(&json!({"dataset": "burial_2024", "purpose": "FOIA", "fields": ["ssn"]}))).await],
        ("/api/esq/ticket", "POST", 413) => vec![send(http().post(m.url("/api/esq/ticket")).bearer_auth(token("journalist")).header("content-type", "application/json").body(huge)).await],
        ("/api/esq/ticket", "POST", 415) => vec![send(http().post(m.url("/api/esq/ticket")).bearer_auth(token("journalist")).header("content-type", "text/plain").body("{}")).await],
        ("/api/esq/ticket", "POST", 429) => vec![send(http().post(s.limited.url("/api/esq/ticket")).bearer_auth(token("journalist")).json(&foia())).await],

        ("/api/esq/ticket/{id}", "DELETE", status) => {
            let id = match status {
                400 => "not-a-ticket".to_string(),
                404 => format!("T-{}", "A".repeat(32)),
                429 => limited_ticket.to_string(),
                _ => new_ticket(m, "journalist").await,
            };
            let (esq, user) = match status {
                403 => (m, Some("ca_official")),
                401 => (m, None),
                429 => (&s.limited, Some("journalist")),
                _ => (m, Some("journalist")),
            };
            let mut request = http().delete(esq.url(&format!("/api/esq/ticket/{id}")));
            if let Some(user) = user {
                request = request.bearer_auth(token(user));
            }
            vec![send(request).await]
        }

        ("/api/dta/query", "POST", 200) => {
            let ticket = new_ticket(m, "journalist").await;
            vec![
                send(query(m, &ticket).json(&json!({"groupBy": "state"}))).await,
                send(query(m, &ticket).header("accept", "application/x-ndjson").json(&json!({"groupBy": "state"}))).await,
                send(query(m, &ticket).json(&json!({"sql": "SELECT state, count(*) FROM burial_2024 GROUP BY state"}))).await,
            ]
        }
        ("/api/dta/query", "POST", 400) => {
            let ticket = new_ticket(m, "journalist").await;
            vec![
                send(query(m, &ticket).json(&json!({"groupBy": "state", "x": 1}))).await,
                send(query(m, "T-short").json(&json!({"groupBy": "state"}))).await,
            ]
        }
        ("/api/dta/query", "POST", 401) => vec![send(http().post(m.url("/api/dta/query")).json(&json!({"groupBy": "state"}))).await],
        ("/api/dta/query", "POST", 403) => {
            let ticket = new_ticket(m, "journalist").await;
            // A private ticket whose budget pays for one answer.
            let small = common::http::ticket(
                m,
                "journalist",
                json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                       "fields": ["state", "branch"], "aggregate": "count",
                       "privacy": {"epsilon_per_query": 0.5, "epsilon_budget": 0.5,
                                   "budget_period_seconds": 86400}}),
            )
            .await;
            // The budget belongs to the user: earlier scenarios may have
            // spent it already; if not, the first answer does.
            let mut spent = send(query(m, &small).json(&json!({"groupBy": "state"}))).await;
            if spent.status() == 200 {
                spent = send(query(m, &small).json(&json!({"groupBy": "branch"}))).await;
            }
            vec![
                send(query(m, &format!("T-{}", "B".repeat(32))).json(&json!({"groupBy": "state"}))).await,
                send(query(m, &ticket).json(&json!({"sql": "SELECT name FROM burial_2024"}))).await,
                spent,
            ]
        }
        ("/api/dta/query", "POST", 413) => {
            let ticket = new_ticket(m, "journalist").await;
            vec![send(query(m, &ticket).header("content-type", "application/json").body(huge)).await]
        }
        ("/api/dta/query", "POST", 415) => {
            let ticket = new_ticket(m, "journalist").await;
            vec![send(query(m, &ticket).header("content-type", "text/csv").body("state")).await]
        }
        ("/api/dta/query", "POST", 429) => vec![send(query(&s.limited, limited_ticket).json(&json!({"groupBy": "state"}))).await],
        ("/api/dta/query", "POST", 502) => {
            // A literal PostgreSQL refuses: its message comes back redacted.
            let ticket = common::http::ticket(
                m,
                "journalist",
                json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                       "fields": ["state", "burial_date"], "aggregate": "count"}),
            )
            .await;
            vec![send(query(m, &ticket).json(&json!({"groupBy": "state", "where": {"burial_date": "x2024"}}))).await]
        }
        ("/api/dta/query", "POST", 504) => {
            let ticket = new_ticket(&s.hanging, "journalist").await;
            vec![send(query(&s.hanging, &ticket).json(&json!({"groupBy": "state"}))).await]
        }

        ("/api/esq/ticket", "POST", 503) => vec![send(http().post(s.storeless.url("/api/esq/ticket")).bearer_auth(token("journalist")).json(&foia())).await],
        ("/api/dta/query", "POST", 503) => {
            let ticket = new_ticket(&s.dead, "journalist").await;
            vec![
                send(query(&s.storeless, &format!("T-{}", "C".repeat(32))).json(&json!({"groupBy": "state"}))).await,
                send(query(&s.dead, &ticket).json(&json!({"groupBy": "state"}))).await,
            ]
        }
        ("/api/esq/breach", "POST", 201) => {
            let ticket = new_ticket(m, "journalist").await;
            vec![
                send(http().post(m.url("/api/esq/breach")).bearer_auth(token("admin")).json(&json!({"ticket": ticket, "reason": "shared on a public forum"}))).await,
                send(http().post(m.url("/api/esq/breach")).bearer_auth(token("admin")).json(&json!({"user": "journalist", "reason": "bulk download"}))).await,
            ]
        }
        ("/api/esq/breach", "POST", 400) => vec![
            send(http().post(m.url("/api/esq/breach")).bearer_auth(token("admin")).json(&json!({"reason": "nobody named"}))).await,
            send(http().post(m.url("/api/esq/breach")).bearer_auth(token("admin")).json(&json!({"user": "journalist", "reason": " "}))).await,
            send(http().post(m.url("/api/esq/breach")).bearer_auth(token("admin")).json(&json!({"ticket_hash": "abc", "reason": "x"}))).await,
        ],
        ("/api/esq/breach", "POST", 401) => vec![send(http().post(m.url("/api/esq/breach")).json(&json!({"user": "journalist", "reason": "x"}))).await],
        ("/api/esq/breach", "POST", 403) => vec![send(http().post(m.url("/api/esq/breach")).bearer_auth(token("journalist")).json(&json!({"user": "journalist", "reason": "x"}))).await],
        ("/api/esq/breach", "POST", 429) => {
            let request = || http().post(s.limited.url("/api/esq/breach")).bearer_auth(token("admin")).json(&json!({"user": "journalist", "reason": "x"}));
            let _first = send(request()).await;
            vec![send(request()).await]
        }
        ("/api/esq/breach", "POST", 503) => vec![send(http().post(s.storeless.url("/api/esq/breach")).bearer_auth(token("admin")).json(&json!({"ticket_hash": "ab".repeat(32), "reason": "x"}))).await],
        ("/api/esq/breach", "GET", 200) => vec![
            send(http().get(m.url("/api/esq/breach")).bearer_auth(token("admin"))).await,
            send(http().get(m.url("/api/esq/breach?limit=1")).bearer_auth(token("admin"))).await,
        ],
        ("/api/esq/breach", "GET", 400) => vec![send(http().get(m.url("/api/esq/breach?limit=0")).bearer_auth(token("admin"))).await],
        ("/api/esq/breach", "GET", 401) => vec![send(http().get(m.url("/api/esq/breach"))).await],
        ("/api/esq/breach", "GET", 403) => vec![send(http().get(m.url("/api/esq/breach")).bearer_auth(token("ca_official"))).await],
        ("/api/esq/breach", "GET", 429) => {
            let request = || http().get(s.limited.url("/api/esq/breach")).bearer_auth(token("admin"));
            let _first = send(request()).await;
            vec![send(request()).await]
        }
        ("/api/esq/breach", "GET", 503) => vec![send(http().get(s.storeless.url("/api/esq/breach")).bearer_auth(token("admin"))).await],
        ("/metrics", "GET", 200) => vec![
            send(http().get(m.metrics_url())).await,
            send(http().get(m.metrics_url()).header("accept", "application/openmetrics-text; version=1.0.0")).await,
        ],
        ("/healthz", "GET", 200) => vec![send(http().get(m.url("/healthz"))).await],
        ("/readyz", "GET", 200) => vec![send(http().get(m.url("/readyz"))).await],
        ("/readyz", "GET", 503) => vec![send(http().get(s.dead.url("/readyz"))).await],
        ("/api/esq/reload", "POST", 200) => vec![send(http().post(m.url("/api/esq/reload")).bearer_auth(token("admin"))).await],
        ("/api/esq/reload", "POST", 401) => vec![send(http().post(m.url("/api/esq/reload"))).await],
        ("/api/esq/reload", "POST", 403) => vec![send(http().post(m.url("/api/esq/reload")).bearer_auth(token("journalist"))).await],
        ("/api/esq/reload", "POST", 422) => {
            // A policy that no longer parses: refused, the bundle in force stays.
            std::fs::write(s.hanging_policies.join("broken.rego"), "package esq.policies.broken\nnot rego").unwrap();
            let refused = send(http().post(s.hanging.url("/api/esq/reload")).bearer_auth(token("admin"))).await;
            std::fs::remove_file(s.hanging_policies.join("broken.rego")).unwrap();
            vec![refused]
        }
        ("/api/esq/reload", "POST", 429) => {
            let request = || http().post(s.limited.url("/api/esq/reload")).bearer_auth(token("admin"));
            let _first = send(request()).await;
            vec![send(request()).await]
        }
        ("/api/esq/budget", "GET", 200) => {
            let ticket = new_ticket(m, "journalist").await;
            vec![send(budget(m, &ticket)).await]
        }
        ("/api/esq/budget", "GET", 400) => {
            let row_level = common::http::ticket(m, "clinician", common::tickets::clinician_request()).await;
            vec![send(budget(m, &row_level)).await, send(budget(m, "T-short")).await]
        }
        ("/api/esq/budget", "GET", 401) => vec![send(http().get(m.url("/api/esq/budget"))).await],
        ("/api/esq/budget", "GET", 403) => vec![send(budget(m, &format!("T-{}", "D".repeat(32)))).await],
        ("/api/esq/budget", "GET", 429) => vec![send(budget(&s.limited, limited_ticket)).await],
        ("/api/esq/budget", "GET", 503) => vec![send(budget(&s.storeless, &format!("T-{}", "C".repeat(32)))).await],
        ("/api/esq/forget", "POST", 200) => {
            let _first = send(forget(&s.lifecycle, Some("privacy"), json!(4))).await;
            vec![send(forget(&s.lifecycle, Some("privacy"), json!(4))).await]
        }
        ("/api/esq/forget", "POST", 201) => vec![send(forget(&s.lifecycle, Some("privacy"), json!("3"))).await],
        ("/api/esq/forget", "POST", 400) => vec![
            send(forget(&s.lifecycle, Some("privacy"), json!("x"))).await,
            send(http().post(s.lifecycle.url("/api/esq/forget")).bearer_auth(token("privacy")).json(&json!({"dataset": "nope"}))).await,
        ],
        ("/api/esq/forget", "POST", 401) => vec![send(forget(&s.lifecycle, None, json!(3))).await],
        ("/api/esq/forget", "POST", 403) => vec![send(forget(&s.lifecycle, Some("journalist"), json!(3))).await],
        ("/api/esq/forget", "POST", 429) => {
            let _first = send(forget(&s.limited, Some("privacy"), json!(3))).await;
            vec![send(forget(&s.limited, Some("privacy"), json!(3))).await]
        }
        ("/api/esq/forget", "POST", 500) => {
            // The maintenance role may not delete: nothing is done.
            let role = s.lifecycle.upstream().maintenance_role.clone().unwrap();
            let admin = s.lifecycle.pg().connect().await;
            admin.batch_execute(&format!("REVOKE DELETE ON public.burial_2024 FROM {role}")).await.unwrap();
            let refused = send(forget(&s.lifecycle, Some("privacy"), json!(5))).await;
            admin.batch_execute(&format!("GRANT DELETE ON public.burial_2024 TO {role}")).await.unwrap();
            vec![refused]
        }
        ("/api/esq/forget", "POST", 503) => vec![send(forget(m, Some("privacy"), json!(3))).await],
        ("/api/esq/subject", "GET", 200) => vec![
            send(subject(&s.lifecycle, Some("privacy"), "dataset=burial_2024&subject=3")).await,
            send(subject(&s.lifecycle, Some("privacy"), "dataset=burial_2024&subject=999999")).await,
        ],
        ("/api/esq/subject", "GET", 400) => vec![send(subject(&s.lifecycle, Some("privacy"), "dataset=burial_2024")).await],
        ("/api/esq/subject", "GET", 401) => vec![send(subject(&s.lifecycle, None, "dataset=burial_2024&subject=3")).await],
        ("/api/esq/subject", "GET", 403) => vec![send(subject(&s.lifecycle, Some("admin"), "dataset=burial_2024&subject=3")).await],
        ("/api/esq/subject", "GET", 429) => {
            let _first = send(subject(&s.limited, Some("privacy"), "dataset=burial_2024&subject=3")).await;
            vec![send(subject(&s.limited, Some("privacy"), "dataset=burial_2024&subject=3")).await]
        }
        ("/api/esq/subject", "GET", 503) => vec![send(subject(m, Some("privacy"), "dataset=burial_2024&subject=3")).await],
        ("/api/esq/exception", method, status) => {
            let method: reqwest::Method = method.parse().unwrap();
            let body = (method == reqwest::Method::POST).then(waiver);
            let call = |esq: &Esq, user: Option<&str>, body: Option<Value>| {
                exception(esq, method.clone(), "/api/esq/exception", user, body)
            };
            match status {
                400 => vec![
                    send(call(&s.lifecycle, Some("journalist"), Some(json!({"dataset": "burial_2024", "fields": ["state"], "purpose": "p", "justification": "j", "duration": "31d"})))).await,
                    send(call(&s.lifecycle, Some("journalist"), Some(json!({"dataset": "nope", "x": 1})))).await,
                ],
                401 => vec![send(call(&s.lifecycle, None, body)).await],
                429 => {
                    let _first = send(call(&s.limited, Some("steward"), body.clone())).await;
                    vec![send(call(&s.limited, Some("steward"), body)).await]
                }
                503 => vec![send(call(m, Some("journalist"), body)).await],
                _ => vec![send(call(&s.lifecycle, Some("steward"), body)).await],
            }
        }
        ("/api/esq/exception/{id}", "GET", status) => {
            let get = |esq: &Esq, id: &str, user: Option<&str>| {
                exception(esq, reqwest::Method::GET, &format!("/api/esq/exception/{id}"), user, None)
            };
            let unknown = format!("X-{}", "A".repeat(16));
            match status {
                200 => {
                    let id = pending_exception(&s.lifecycle).await;
                    vec![send(get(&s.lifecycle, &id, Some("journalist"))).await]
                }
                404 => {
                    let id = pending_exception(&s.lifecycle).await;
                    vec![
                        send(get(&s.lifecycle, &id, Some("clinician"))).await,
                        send(get(&s.lifecycle, &unknown, Some("steward"))).await,
                    ]
                }
                401 => vec![send(get(&s.lifecycle, &unknown, None)).await],
                429 => {
                    let _first = send(get(&s.limited, &unknown, Some("clinician"))).await;
                    vec![send(get(&s.limited, &unknown, Some("clinician"))).await]
                }
                _ => vec![send(get(m, &unknown, Some("journalist"))).await],
            }
        }
        (path @ ("/api/esq/exception/{id}/approve" | "/api/esq/exception/{id}/deny"), "POST", status) => {
            let verb = path.rsplit('/').next().unwrap();
            let decide = |esq: &Esq, id: &str, user: Option<&str>, comment: &str| {
                exception(
                    esq,
                    reqwest::Method::POST,
                    &format!("/api/esq/exception/{id}/{verb}"),
                    user,
                    Some(json!({"comment": comment})),
                )
            };
            let unknown = format!("X-{}", "A".repeat(16));
            match status {
                200 => {
                    let id = pending_exception(&s.lifecycle).await;
                    vec![send(decide(&s.lifecycle, &id, Some("steward"), "ok")).await]
                }
                400 => {
                    let id = pending_exception(&s.lifecycle).await;
                    vec![send(decide(&s.lifecycle, &id, Some("steward"), " ")).await]
                }
                401 => vec![send(decide(&s.lifecycle, &unknown, None, "ok")).await],
                403 => {
                    let id = pending_exception(&s.lifecycle).await;
                    vec![
                        send(decide(&s.lifecycle, &id, Some("journalist"), "ok")).await,
                        send(decide(&s.lifecycle, &id, Some("admin"), "ok")).await,
                    ]
                }
                404 => vec![send(decide(&s.lifecycle, &unknown, Some("steward"), "ok")).await],
                409 => {
                    let id = pending_exception(&s.lifecycle).await;
                    let _first = send(decide(&s.lifecycle, &id, Some("steward"), "ok")).await;
                    vec![send(decide(&s.lifecycle, &id, Some("steward"), "again")).await]
                }
                429 => {
                    let _first = send(decide(&s.limited, &unknown, Some("privacy"), "ok")).await;
                    vec![send(decide(&s.limited, &unknown, Some("privacy"), "ok")).await]
                }
                _ => vec![send(decide(m, &unknown, Some("steward"), "ok")).await],
            }
        }
        ("/api/esq/exception/{id}/revoke", "POST", status) => {
            let revoke = |esq: &Esq, id: &str, user: Option<&str>, comment: &str| {
                exception(
                    esq,
                    reqwest::Method::POST,
                    &format!("/api/esq/exception/{id}/revoke"),
                    user,
                    Some(json!({"comment": comment})),
                )
            };
            let approved = async || {
                let id = pending_exception(&s.lifecycle).await;
                let path = format!("/api/esq/exception/{id}/approve");
                let body = Some(json!({"comment": "ok"}));
                let approving = exception(&s.lifecycle, reqwest::Method::POST, &path, Some("steward"), body);
                assert_eq!(approving.send().await.unwrap().status(), 200);
                id
            };
            let unknown = format!("X-{}", "A".repeat(16));
            match status {
                200 => {
                    let id = approved().await;
                    vec![send(revoke(&s.lifecycle, &id, Some("steward"), "ended")).await]
                }
                400 => {
                    let id = approved().await;
                    vec![send(revoke(&s.lifecycle, &id, Some("steward"), " ")).await]
                }
                401 => vec![send(revoke(&s.lifecycle, &unknown, None, "ok")).await],
                403 => {
                    let id = approved().await;
                    vec![send(revoke(&s.lifecycle, &id, Some("journalist"), "mine")).await]
                }
                404 => vec![send(revoke(&s.lifecycle, &unknown, Some("steward"), "ok")).await],
                409 => {
                    let id = pending_exception(&s.lifecycle).await;
                    vec![send(revoke(&s.lifecycle, &id, Some("steward"), "not yet")).await]
                }
                429 => {
                    let _first = send(revoke(&s.limited, &unknown, Some("privacy"), "ok")).await;
                    vec![send(revoke(&s.limited, &unknown, Some("privacy"), "ok")).await]
                }
                _ => vec![send(revoke(m, &unknown, Some("steward"), "ok")).await],
            }
        }
        ("/api/dta/export", "POST", status) => {
            let (l, j) = (&s.lifecycle, &s.jobs);
            match status {
                202 => vec![
                    send(export(l, &j.clinician).json(&json!({"sql": EXPORT_SQL, "reason": "the contract test", "format": "csv", "hash_fields": ["id"], "retention_days": 1}))).await,
                    send(export(l, &j.clinician).json(&json!({"query": {"select": ["id", "state"], "where": {"id": {"lte": 10}}}, "reason": "the contract test"}))).await,
                ],
                400 => vec![
                    send(export(l, "T-short").json(&export_body())).await,
                    send(export(l, &j.clinician).json(&json!({"sql": EXPORT_SQL}))).await,
                    send(export(l, &j.clinician).json(&json!({"sql": EXPORT_SQL, "query": {"select": "id"}, "reason": "r"}))).await,
                ],
                401 => vec![send(http().post(l.url("/api/dta/export")).json(&export_body())).await],
                403 => vec![
                    send(export(l, &format!("T-{}", "F".repeat(32))).json(&export_body())).await,
                    send(export(l, &j.journalist).json(&json!({"sql": "SELECT name FROM burial_2024", "reason": "r"}))).await,
                ],
                413 => vec![send(export(l, &j.clinician).header("content-type", "application/json").body(huge)).await],
                415 => vec![send(export(l, &j.clinician).header("content-type", "text/plain").body("{}")).await],
                429 => {
                    let limited = &s.exports_limited;
                    let ticket = limited.ticket("journalist", foia()).await;
                    let _first = send(http().get(limited.url("/api/dta/export/nope")).bearer_auth(token("journalist"))).await;
                    vec![send(export(limited, &ticket).json(&export_body())).await]
                }
                503 => vec![send(export(m, &format!("T-{}", "A".repeat(32))).json(&export_body())).await],
                other => panic!("openapi.yaml documents POST /api/dta/export {other}, but this test has no scenario for it"),
            }
        }
        (path @ ("/api/dta/export/{job}" | "/api/dta/export/{job}/bundle"), "GET", status) => {
            let tail = path.trim_start_matches("/api/dta/export/{job}");
            let (l, j) = (&s.lifecycle, &s.jobs);
            let get = |esq: &Esq, job: &str| http().get(esq.url(&format!("/api/dta/export/{job}{tail}")));
            let unknown = format!("E-{}", "0".repeat(32));
            match status {
                200 if tail.is_empty() => {
                    let early = send(get(l, &j.completes).bearer_auth(token("clinician"))).await;
                    ended(l, &j.completes, "COMPLETED").await;
                    ended(l, &j.fails, "FAILED").await;
                    vec![
                        early,
                        send(get(l, &j.completes).bearer_auth(token("clinician"))).await,
                        send(get(l, &j.completes).bearer_auth(token("admin"))).await,
                        send(get(l, &j.completes).header("x-esq-ticket", &j.clinician)).await,
                        send(get(l, &j.fails).bearer_auth(token("clinician"))).await,
                    ]
                }
                200 => {
                    ended(l, &j.completes, "COMPLETED").await;
                    vec![
                        send(get(l, &j.completes).bearer_auth(token("clinician"))).await,
                        send(get(l, &j.completes).header("x-esq-ticket", &j.clinician)).await,
                    ]
                }
                401 => vec![
                    send(get(l, &j.completes)).await,
                    send(get(l, &j.completes).bearer_auth("forged")).await,
                    send(get(l, &j.completes).header("x-esq-ticket", "T-short")).await,
                ],
                403 => vec![send(get(l, &j.completes).header("x-esq-ticket", format!("T-{}", "E".repeat(32)))).await],
                404 => {
                    // Another user's job, by token or by ticket; no such job.
                    let mut answers = vec![
                        send(get(l, &j.completes).bearer_auth(token("journalist"))).await,
                        send(get(l, &j.completes).header("x-esq-ticket", &j.journalist)).await,
                        send(get(l, &unknown).bearer_auth(token("clinician"))).await,
                    ];
                    if tail.is_empty() {
                        answers.push(send(get(l, "E-123").bearer_auth(token("clinician"))).await);
                    } else {
                        // A job that did not complete has no bundle.
                        ended(l, &j.fails, "FAILED").await;
                        answers.push(send(get(l, &j.fails).bearer_auth(token("clinician"))).await);
                    }
                    answers
                }
                429 => {
                    let limited = &s.exports_limited;
                    let _first = send(http().get(limited.url("/api/dta/export/nope")).bearer_auth(token("journalist"))).await;
                    vec![send(get(limited, &unknown).bearer_auth(token("journalist"))).await]
                }
                503 => vec![send(get(m, &j.completes).bearer_auth(token("clinician"))).await],
                other => panic!("openapi.yaml documents GET {path} {other}, but this test has no scenario for it"),
            }
        }
        other => panic!("openapi.yaml documents {other:?}, but this test has no scenario for it"),
    }
}

/// Every scenario above, so that a removed documentation line fails too.
const SCENARIOS: &[(&str, &str, u16)] = &[
    ("/api/esq/ticket", "POST", 201),
    ("/api/esq/ticket", "POST", 400),
    ("/api/esq/ticket", "POST", 401),
    ("/api/esq/ticket", "POST", 403),
    ("/api/esq/ticket", "POST", 413),
    ("/api/esq/ticket", "POST", 415),
    ("/api/esq/ticket", "POST", 429),
    ("/api/esq/ticket", "POST", 503),
    ("/api/esq/ticket/{id}", "DELETE", 200),
    ("/api/esq/ticket/{id}", "DELETE", 400),
    ("/api/esq/ticket/{id}", "DELETE", 401),
    ("/api/esq/ticket/{id}", "DELETE", 403),
    ("/api/esq/ticket/{id}", "DELETE", 404),
    ("/api/esq/ticket/{id}", "DELETE", 429),
    ("/api/dta/query", "POST", 200),
    ("/api/dta/query", "POST", 400),
    ("/api/dta/query", "POST", 401),
    ("/api/dta/query", "POST", 403),
    ("/api/dta/query", "POST", 413),
    ("/api/dta/query", "POST", 415),
    ("/api/dta/query", "POST", 429),
    ("/api/dta/query", "POST", 502),
    ("/api/dta/query", "POST", 503),
    ("/api/dta/query", "POST", 504),
    ("/api/dta/export", "POST", 202),
    ("/api/dta/export", "POST", 400),
    ("/api/dta/export", "POST", 401),
    ("/api/dta/export", "POST", 403),
    ("/api/dta/export", "POST", 413),
    ("/api/dta/export", "POST", 415),
    ("/api/dta/export", "POST", 429),
    ("/api/dta/export", "POST", 503),
    ("/api/dta/export/{job}", "GET", 200),
    ("/api/dta/export/{job}", "GET", 401),
    ("/api/dta/export/{job}", "GET", 403),
    ("/api/dta/export/{job}", "GET", 404),
    ("/api/dta/export/{job}", "GET", 429),
    ("/api/dta/export/{job}", "GET", 503),
    ("/api/dta/export/{job}/bundle", "GET", 200),
    ("/api/dta/export/{job}/bundle", "GET", 401),
    ("/api/dta/export/{job}/bundle", "GET", 403),
    ("/api/dta/export/{job}/bundle", "GET", 404),
    ("/api/dta/export/{job}/bundle", "GET", 429),
    ("/api/dta/export/{job}/bundle", "GET", 503),
    ("/api/esq/breach", "POST", 201),
    ("/api/esq/breach", "POST", 400),
    ("/api/esq/breach", "POST", 401),
    ("/api/esq/breach", "POST", 403),
    ("/api/esq/breach", "POST", 429),
    ("/api/esq/breach", "POST", 503),
    ("/api/esq/breach", "GET", 200),
    ("/api/esq/breach", "GET", 400),
    ("/api/esq/breach", "GET", 401),
    ("/api/esq/breach", "GET", 403),
    ("/api/esq/breach", "GET", 429),
    ("/api/esq/breach", "GET", 503),
    ("/metrics", "GET", 200),
    ("/healthz", "GET", 200),
    ("/readyz", "GET", 200),
    ("/readyz", "GET", 503),
    ("/api/esq/reload", "POST", 200),
    ("/api/esq/reload", "POST", 401),
    ("/api/esq/reload", "POST", 403),
    ("/api/esq/reload", "POST", 422),
    ("/api/esq/reload", "POST", 429),
    ("/api/esq/budget", "GET", 200),
    ("/api/esq/budget", "GET", 400),
    ("/api/esq/budget", "GET", 401),
    ("/api/esq/budget", "GET", 403),
    ("/api/esq/budget", "GET", 429),
    ("/api/esq/budget", "GET", 503),
    ("/api/esq/forget", "POST", 200),
    ("/api/esq/forget", "POST", 201),
    ("/api/esq/forget", "POST", 400),
    ("/api/esq/forget", "POST", 401),
    ("/api/esq/forget", "POST", 403),
    ("/api/esq/forget", "POST", 429),
    ("/api/esq/forget", "POST", 500),
    ("/api/esq/forget", "POST", 503),
    ("/api/esq/subject", "GET", 200),
    ("/api/esq/subject", "GET", 400),
    ("/api/esq/subject", "GET", 401),
    ("/api/esq/subject", "GET", 403),
    ("/api/esq/subject", "GET", 429),
    ("/api/esq/subject", "GET", 503),
    ("/api/esq/exception", "POST", 201),
    ("/api/esq/exception", "POST", 400),
    ("/api/esq/exception", "POST", 401),
    ("/api/esq/exception", "POST", 429),
    ("/api/esq/exception", "POST", 503),
    ("/api/esq/exception", "GET", 200),
    ("/api/esq/exception", "GET", 401),
    ("/api/esq/exception", "GET", 429),
    ("/api/esq/exception", "GET", 503),
    ("/api/esq/exception/{id}", "GET", 200),
    ("/api/esq/exception/{id}", "GET", 401),
    ("/api/esq/exception/{id}", "GET", 404),
    ("/api/esq/exception/{id}", "GET", 429),
    ("/api/esq/exception/{id}", "GET", 503),
    ("/api/esq/exception/{id}/approve", "POST", 200),
    ("/api/esq/exception/{id}/approve", "POST", 400),
    ("/api/esq/exception/{id}/approve", "POST", 401),
    ("/api/esq/exception/{id}/approve", "POST", 403),
    ("/api/esq/exception/{id}/approve", "POST", 404),
    ("/api/esq/exception/{id}/approve", "POST", 409),
    ("/api/esq/exception/{id}/approve", "POST", 429),
    ("/api/esq/exception/{id}/approve", "POST", 503),
    ("/api/esq/exception/{id}/deny", "POST", 200),
    ("/api/esq/exception/{id}/deny", "POST", 400),
    ("/api/esq/exception/{id}/deny", "POST", 401),
    ("/api/esq/exception/{id}/deny", "POST", 403),
    ("/api/esq/exception/{id}/deny", "POST", 404),
    ("/api/esq/exception/{id}/deny", "POST", 409),
    ("/api/esq/exception/{id}/deny", "POST", 429),
    ("/api/esq/exception/{id}/deny", "POST", 503),
    ("/api/esq/exception/{id}/revoke", "POST", 200),
    ("/api/esq/exception/{id}/revoke", "POST", 400),
    ("/api/esq/exception/{id}/revoke", "POST", 401),
    ("/api/esq/exception/{id}/revoke", "POST", 403),
    ("/api/esq/exception/{id}/revoke", "POST", 404),
    ("/api/esq/exception/{id}/revoke", "POST", 409),
    ("/api/esq/exception/{id}/revoke", "POST", 429),
    ("/api/esq/exception/{id}/revoke", "POST", 503),
];

#[tokio::test]
async fn openapi_yaml_matches_the_live_server() {
    let spec = load_spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let documented = documented(&spec);
    let tested: BTreeSet<Key> = SCENARIOS
        .iter()
        .map(|(p, m, s)| (p.to_string(), m.to_string(), *s))
        .collect();
    assert_eq!(
        documented.difference(&tested).collect::<Vec<_>>(),
        Vec::<&Key>::new(),
        "documented but not provoked"
    );
    assert_eq!(
        tested.difference(&documented).collect::<Vec<_>>(),
        Vec::<&Key>::new(),
        "provoked but not documented"
    );

    let main = builder().start().await;
    let limited = builder()
        .upstream_of(&main)
        .env("ESQ_HTTP__RATE_LIMIT_PER_MINUTE", "1")
        .start()
        .await;
    let dead_port = free_port();
    let dead = builder()
        .upstream_url(&format!(
            "postgres://esq_service@127.0.0.1:{dead_port}/postgres"
        ))
        .start()
        .await;
    // A ticket store (Redis) that does not answer.
    let dead_store = format!("redis://127.0.0.1:{dead_port}");
    let storeless = builder()
        .upstream_of(&main)
        .env("ESQ_TICKETS__STORE", dead_store)
        .start()
        .await;
    // An upstream that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let scratch = tempfile::tempdir().unwrap();
    let hanging_policies = common::editable_policies(scratch.path());
    let hanging = builder()
        .upstream_url(&format!(
            "postgres://esq_service@127.0.0.1:{silent_port}/postgres"
        ))
        .env("ESQ_HTTP__REQUEST_TIMEOUT", "3s")
        .env("ESQ_POLICY__DIR", hanging_policies.display().to_string())
        .start()
        .await;
    let exports = common::exports::exports();
    let lifecycle = builder()
        .lifecycle()
        .env("ESQ_EXPORTS__DIR", exports.dir.display().to_string())
        .env("ESQ_EXPORTS__KEK_FILE", exports.kek.display().to_string())
        .env("ESQ_EXPORTS__POLL", "200ms")
        .start()
        .await;
    // Row-level exports of burial_2024 wait for the tombstones.
    let lifecycle = common::exports::ready(lifecycle).await;
    let exports_limited = builder()
        .upstream_of(&main)
        .env("ESQ_HTTP__RATE_LIMIT_PER_MINUTE", "1")
        .env(
            "ESQ_MAINTENANCE__URL",
            format!("postgres://esq_maintenance@127.0.0.1:{dead_port}/postgres"),
        )
        .env("ESQ_LIFECYCLE__PURGE_SCHEDULE", "off")
        .env("ESQ_EXPORTS__DIR", exports.dir.display().to_string())
        .env("ESQ_EXPORTS__KEK_FILE", exports.kek.display().to_string())
        .start()
        .await;
    let jobs = export_jobs(&lifecycle).await;
    let servers = Servers {
        lifecycle,
        _exports: exports,
        exports_limited,
        jobs,
        main,
        limited,
        dead,
        hanging,
        storeless,
        hanging_policies,
    };
    // The limited server's one request per minute goes to this ticket.
    let limited_ticket = new_ticket(&servers.limited, "journalist").await;

    let mut failures = Vec::new();
    for key in &documented {
        for response in provoke(&servers, &limited_ticket, key).await {
            if let Err(problem) = check(&spec, key, response).await {
                failures.push(problem);
            }
        }
    }
    // Other methods on the export paths: 405 with Allow (as openapi.yaml's
    // description says of every path).
    let job = &servers.jobs.completes;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/dta/export".to_string(), "POST"),
        (
            reqwest::Method::POST,
            format!("/api/dta/export/{job}"),
            "GET",
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/dta/export/{job}/bundle"),
            "GET",
        ),
    ] {
        let response = http()
            .request(method.clone(), servers.lifecycle.url(&path))
            .bearer_auth(token("clinician"))
            .send()
            .await
            .unwrap();
        let (status, allowed) = (response.status(), response.headers().get("allow").cloned());
        let body: Value = response.json().await.unwrap_or_default();
        if status != 405
            || allowed.as_ref().and_then(|a| a.to_str().ok()) != Some(allow)
            || body["error"] != "method not allowed"
        {
            failures.push(format!(
                "{method} {path}: expected 405 (Allow: {allow}), got {status} {allowed:?} {body}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    holder.abort();
    let Servers {
        main,
        limited,
        dead,
        hanging,
        storeless,
        lifecycle,
        exports_limited,
        ..
    } = servers;
    for mut esq in [
        exports_limited,
        lifecycle,
        storeless,
        hanging,
        dead,
        limited,
        main,
    ] {
        esq.stop().await;
    }
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let spec = load_spec();
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert!(validate(&spec, &error, &json!({"error": "ticket stale"}), "t").is_ok());
    assert!(validate(&spec, &error, &json!({"error": "made up"}), "t").is_err());
    assert!(validate(&spec, &error, &json!({"message": "no code"}), "t").is_err());
    let issued = json!({"$ref": "#/components/schemas/TicketIssued"});
    assert!(validate(&spec, &issued, &json!({"ticket": "T-x"}), "t").is_err());
    let denial = json!({"$ref": "#/components/schemas/GuardDenial"});
    assert!(validate(&spec, &denial, &json!({"error": "ticket stale"}), "t").is_err());
}
