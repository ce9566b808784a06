//! Right-to-delete fixtures the lifecycle tests share: an esq with the
//! lifecycle set up (docs/lifecycle.md), the subject's rows as the
//! superuser sees them, CLI runs with an audit log of their own, and the
//! HTTP door's forget and subject lookup.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::esq::Esq;
use super::process::{esq_command, Run};
use super::{http, Doors};

/// Rows of sample data the lifecycle tests load.
pub const ROWS: u64 = 2_000;

pub async fn fixture(start: bool) -> Esq {
    let builder = Esq::builder()
        .lifecycle()
        .rows(ROWS)
        .k_only_counts()
        .env("ESQ_LIFECYCLE__PURGE_SCHEDULE", "off")
        .env("ESQ_SENTINEL__ENABLED", "false");
    if !start {
        return builder.prepare().await;
    }
    let esq = builder.start().await;
    for _ in 0..300 {
        if esq.app().tombstones.is_read() {
            return esq;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("esq never read its tombstones");
}

/// A veteran with two notes, buried inside the retention window.
pub async fn subject_with_notes(esq: &Esq) -> i64 {
    esq.pg()
        .connect()
        .await
        .query_one(
            "SELECT min(id) FROM burial_2024 WHERE id % 15 = 0 AND burial_date >= current_date - interval '9 years'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The subject's rows in burial_2024 and staff_notes, as the superuser sees them.
pub async fn present(esq: &Esq, id: i64) -> (i64, i64) {
    let client = esq.pg().connect().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[&id])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    (
        count("SELECT count(*) FROM burial_2024 WHERE id = $1").await,
        count("SELECT count(*) FROM staff_notes WHERE veteran_id = $1").await,
    )
}

pub async fn tombstones(esq: &Esq) -> i64 {
    let client = esq.pg().connect().await;
    client
        .query_one("SELECT count(*) FROM esq.tombstones", &[])
        .await
        .unwrap()
        .get(0)
}

/// `esq ARGS` on the fixture's configuration, with an audit log of its own
/// (`<tag>.jsonl`: an in-process esq holds the fixture's).
pub async fn esq_run(esq: &Esq, tag: &str, args: &[&str]) -> Run {
    let mut command = cli(esq, &audit_of(esq, tag), args);
    tokio::task::spawn_blocking(move || Run::of(&mut command))
        .await
        .unwrap()
}

/// `esq forget` of `subject` in burial_2024 by the CLI (audit log
/// `<tag>.jsonl`), which must succeed.
pub async fn forget_cli(esq: &Esq, tag: &str, subject: i64) -> Run {
    let subject = subject.to_string();
    let args = [
        "forget",
        "--dataset",
        "burial_2024",
        "--subject",
        &subject,
        "--reason",
        "request",
        "--requested-by",
        "family",
    ];
    let run = esq_run(esq, tag, &args).await;
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    run
}

/// The `esq ARGS` command on the fixture's configuration, writing its
/// audit records to `audit` (an in-process esq holds the fixture's log).
pub fn cli(esq: &Esq, audit: &std::path::Path, args: &[&str]) -> Command {
    let mut command: Command = esq_command();
    command
        .arg("--config")
        .arg(super::shipped_config())
        .args(args)
        .envs(
            esq.env()
                .iter()
                .filter(|(k, _)| k != "ESQ_AUDIT__PATH")
                .cloned(),
        )
        .env("ESQ_AUDIT__PATH", audit)
        .env("RUST_LOG", "warn");
    command
}

pub fn audit_of(esq: &Esq, tag: &str) -> PathBuf {
    esq.dir().join(format!("{tag}.jsonl"))
}

pub fn pubkey(esq: &Esq) -> PathBuf {
    esq.dir().join("signing.key.pub")
}

pub async fn forget_http(esq: &impl Doors, user: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = http::client().post(esq.url("/api/esq/forget")).json(&body);
    if let Some(user) = user {
        request = request.bearer_auth(http::token(user));
    }
    http::read(request.send().await.unwrap()).await
}

pub async fn subject_http(esq: &impl Doors, user: &str, query: &str) -> (StatusCode, Value) {
    let response = http::client()
        .get(esq.url(&format!("/api/esq/subject?{query}")))
        .bearer_auth(http::token(user))
        .send()
        .await
        .unwrap();
    http::read(response).await
}

pub fn forget_body(subject: Value) -> Value {
    json!({"dataset": "burial_2024", "subject": subject,
           "reason": "GDPR art. 17 request", "requested_by": "the veteran's family"})
}
