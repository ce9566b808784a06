//! A backup of the whole database — schema `esq` included — restored after
//! a forget brings back the subject's rows *and* takes the tombstone away.
//! The forget's audit record keeps what the tombstone held, so `esq forget
//! --reapply --audit FILE…` re-creates it (with the very receipt the forget
//! signed) and deletes the rows again; a log whose chain does not verify is
//! refused and re-creates nothing. `esq serve` does the same from its own
//! log before it first reads the tombstones, so a restart after such a
//! restore still hides the subject.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::esq::Esq;
use common::process::{esq_command, Run};
use common::{http, Doors};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn count(esq: &Esq, sql: &str, id: i64) -> i64 {
    let client = esq.pg().connect().await;
    client.query_one(sql, &[&id]).await.unwrap().get(0)
}

async fn rows_of(esq: &Esq, id: i64) -> (i64, i64, i64) {
    (
        count(esq, "SELECT count(*) FROM burial_2024 WHERE id = $1", id).await,
        count(
            esq,
            "SELECT count(*) FROM staff_notes WHERE veteran_id = $1",
            id,
        )
        .await,
        esq.pg()
            .connect()
            .await
            .query_one("SELECT count(*) FROM esq.tombstones", &[])
            .await
            .unwrap()
            .get(0),
    )
}

/// `pg_dump -Fc ARGS` to `file`, or `pg_restore --clean` of it.
fn pg_tool(esq: &Esq, file: &Path, dump: &[&str]) {
    let url = esq.pg().url();
    let file = file.display().to_string();
    let out = if dump.is_empty() {
        Command::new("pg_restore")
            .args(["--clean", "--if-exists", "-d", &url, &file])
            .output()
    } else {
        Command::new("pg_dump")
            .arg("-Fc")
            .args(dump)
            .args(["-f", &file, &url])
            .output()
    }
    .expect("pg_dump and pg_restore are installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `esq forget --reapply --json --audit FILES` with the fixture's
/// configuration (esq itself is stopped: the CLI writes the fixture's log).
async fn reapply(esq: &Esq, audit: &[PathBuf]) -> Run {
    let mut command: Command = esq_command();
    command
        .arg("--config")
        .arg(common::shipped_config())
        .args(["forget", "--reapply", "--json", "--audit"])
        .args(audit)
        .envs(esq.env().iter().cloned())
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || Run::of(&mut command))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restored_schema_esq_gets_its_tombstones_back_from_the_audit_log() {
    let mut esq = common::lifecycle::fixture(true).await;
    let id: i64 = esq
        .pg()
        .connect()
        .await
        .query_one("SELECT min(veteran_id) FROM staff_notes", &[])
        .await
        .unwrap()
        .get(0);
    let (tables, schema) = (esq.dir().join("tables.dump"), esq.dir().join("esq.dump"));
    pg_tool(
        &esq,
        &tables,
        &["-t", "public.burial_2024", "-t", "public.staff_notes"],
    );
    pg_tool(&esq, &schema, &["-n", "esq"]);

    let request = http::client()
        .post(esq.url("/api/esq/forget"))
        .bearer_auth(http::token("privacy"))
        .json(&json!({"dataset": "burial_2024", "subject": id.to_string(),
                      "reason": "deletion request", "requested_by": "the family"}));
    let (status, receipt) = http::read(request.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    assert_eq!(rows_of(&esq, id).await, (0, 0, 1));
    let sealed = esq
        .audit_records()
        .into_iter()
        .find(|r| r["kind"] == "forget" && r["detail"]["receipt_id"] == receipt["receipt_id"]);
    let sealed = sealed.expect("the forget's audit record");
    let kept = sealed["detail"]["subject_sealed"].as_str().unwrap_or("");
    assert!(
        !kept.is_empty() && sealed["detail"]["subject_key"].is_null(),
        "the record keeps the PII key sealed only: {sealed}"
    );

    // The whole backup is restored: rows back, tombstone gone.
    esq.stop().await;
    pg_tool(&esq, &tables, &[]);
    pg_tool(&esq, &schema, &[]);
    let (burials, notes, tombstones) = rows_of(&esq, id).await;
    assert!(
        burials == 1 && notes > 0 && tombstones == 0,
        "{burials} {notes} {tombstones}"
    );

    // A log whose chain does not verify re-creates nothing.
    let log = esq.audit_path();
    let tampered = esq.dir().join("tampered.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"serve\""),
        "the log starts with the serve record"
    );
    std::fs::write(&tampered, text.replacen("\"serve\"", "\"sErve\"", 1)).unwrap();
    let refused = reapply(&esq, &[tampered]).await;
    assert_ne!(refused.status, 0, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("does not verify"),
        "{}",
        refused.stderr
    );
    assert_eq!(rows_of(&esq, id).await, (burials, notes, 0));

    let done = reapply(&esq, std::slice::from_ref(&log)).await;
    assert_eq!(done.status, 0, "{}{}", done.stdout, done.stderr);
    let report: Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(report["recovered"]["burial_2024"], 1, "{report}");
    assert_eq!(report["rows_deleted"]["burial_2024"], 1, "{report}");
    assert_eq!(report["rows_deleted"]["staff_notes"], notes, "{report}");
    assert_eq!(rows_of(&esq, id).await, (0, 0, 1));

    // The tombstone holds the receipt the forget signed, byte for byte.
    let stored: String = esq
        .pg()
        .connect()
        .await
        .query_one("SELECT receipt::text FROM esq.tombstones", &[])
        .await
        .unwrap()
        .get(0);
    let mut original = receipt.clone();
    original.as_object_mut().unwrap().remove("status");
    assert_eq!(serde_json::from_str::<Value>(&stored).unwrap(), original);

    // Restored once more, then served: esq re-creates the tombstone from
    // its own audit log before it answers anything of the dataset.
    pg_tool(&esq, &tables, &[]);
    pg_tool(&esq, &schema, &[]);
    assert_eq!(rows_of(&esq, id).await.2, 0, "the tombstone is gone again");
    esq.restart().await;
    for _ in 0..300 {
        if esq.app().tombstones.is_read() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        esq.app()
            .tombstones
            .keys("burial_2024")
            .contains(&id.to_string()),
        "the restarted esq hides the subject"
    );
    assert_eq!(rows_of(&esq, id).await.2, 1, "the tombstone is re-created");
    assert_eq!(forget_again(&esq, id).await, StatusCode::OK);

    // A log that no longer verifies still hides its forgets (a tampered log
    // can make esq hide more, never less), but re-creates nothing.
    esq.stop().await;
    pg_tool(&esq, &tables, &[]);
    pg_tool(&esq, &schema, &[]);
    // (and a forged record saying the forget was rolled back)
    let text = std::fs::read_to_string(&log).unwrap();
    let forged = json!({"seq": 999_999, "kind": "forget", "outcome": "deny",
        "detail": {"action": "rolled_back", "receipt_id": receipt["receipt_id"]}});
    std::fs::write(
        &log,
        format!("{}{forged}\n", text.replacen("\"serve\"", "\"sErve\"", 1)),
    )
    .unwrap();
    esq.restart().await;
    wait_until_read(&esq).await;
    let exposition = http::metrics(&esq).await;
    assert_eq!(
        http::metric(&exposition, "esq_tombstone_recovery_unverified"),
        Some(1.0),
        "{exposition}"
    );
    assert!(
        esq.app()
            .tombstones
            .keys("burial_2024")
            .contains(&id.to_string()),
        "a broken chain must not un-hide the subject"
    );
    assert_eq!(rows_of(&esq, id).await.2, 0, "nothing re-created from it");
    // The lookup says the subject is hidden, though schema esq lost its
    // tombstone.
    let lookup = http::client()
        .get(esq.url(&format!(
            "/api/esq/subject?dataset=burial_2024&subject={id}"
        )))
        .bearer_auth(http::token("privacy"))
        .send()
        .await
        .unwrap();
    let (status, found) = http::read(lookup).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["hidden"], true, "{found}");
    assert_eq!(found["tombstone"], Value::Null, "{found}");
}

async fn wait_until_read(esq: &Esq) {
    for _ in 0..300 {
        if esq.app().tombstones.is_read() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("esq never read its tombstones");
}

/// Forgetting the subject again says it is already forgotten.
async fn forget_again(esq: &Esq, id: i64) -> StatusCode {
    let request = http::client()
        .post(esq.url("/api/esq/forget"))
        .bearer_auth(http::token("privacy"))
        .json(&json!({"dataset": "burial_2024", "subject": id.to_string(),
                      "reason": "deletion request", "requested_by": "the family"}));
    let (status, body) = http::read(request.send().await.unwrap()).await;
    assert_eq!(body["status"], "already_forgotten", "{body}");
    status
}

/// A forget made by the CLI (its own audit log, named by
/// `lifecycle.recover_from`) comes back too: each log is its own chain.
#[tokio::test]
async fn forgets_made_by_the_cli_come_back_from_the_log_recover_from_names() {
    let mut esq = common::lifecycle::fixture(true).await;
    let id: i64 = esq
        .pg()
        .connect()
        .await
        .query_one("SELECT max(veteran_id) FROM staff_notes", &[])
        .await
        .unwrap()
        .get(0);
    let schema = esq.dir().join("esq.dump");
    pg_tool(&esq, &schema, &["-n", "esq"]);
    common::lifecycle::forget_cli(&esq, "cli", id).await;
    esq.stop().await;
    pg_tool(&esq, &schema, &[]);
    assert_eq!(
        rows_of(&esq, id).await.2,
        0,
        "the restore took the tombstone"
    );

    let cli_log = common::lifecycle::audit_of(&esq, "cli");
    esq.set_env(
        "ESQ_LIFECYCLE__RECOVER_FROM",
        format!("[{:?}]", cli_log.display().to_string()),
    );
    esq.restart().await;
    wait_until_read(&esq).await;
    assert!(
        esq.app()
            .tombstones
            .keys("burial_2024")
            .contains(&id.to_string()),
        "the restarted esq hides the CLI's forget"
    );
    assert_eq!(
        rows_of(&esq, id).await.2,
        1,
        "re-created from the CLI's log"
    );

    // A log recover_from names in a directory that is not there is not
    // "nothing to recover": datasets with subjects stay refused.
    esq.set_env(
        "ESQ_LIFECYCLE__RECOVER_FROM",
        "[\"/nonexistent/cli.jsonl\"]",
    );
    esq.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !esq.app().tombstones.is_read(),
        "a missing recovery log must keep esq from answering"
    );
    let response = http::client().get(esq.url("/readyz")).send().await.unwrap();
    let (status, ready) = http::read(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["tombstones"]["error"], "unavailable", "{ready}");
}

/// Where the catalog does not mark the subject key as PII, the tombstone
/// and the audit record keep the key as it is (nothing to seal), and it
/// hides the subject the same way.
#[tokio::test]
async fn a_key_that_is_not_pii_is_kept_as_it_is() {
    let mut esq = common::lifecycle::fixture(false).await;
    let catalog = esq.catalog_path().join("burial_2024.yaml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    let marked = "{ name: id,             pii: true,";
    assert!(text.contains(marked), "the catalog marks id as PII");
    std::fs::write(
        &catalog,
        text.replace(marked, "{ name: id,             pii: false,"),
    )
    .unwrap();
    esq.restart().await;
    wait_until_read(&esq).await;
    let request = http::client()
        .post(esq.url("/api/esq/forget"))
        .bearer_auth(http::token("privacy"))
        .json(&json!({"dataset": "burial_2024", "subject": " 0042",
                      "reason": "deletion request", "requested_by": "the family"}));
    let (status, receipt) = http::read(request.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    let row = esq
        .pg()
        .connect()
        .await
        .query_one(
            "SELECT subject_key, subject_sealed IS NULL FROM esq.tombstones",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("42"));
    assert!(row.get::<_, bool>(1), "nothing sealed");
    let record = esq
        .audit_records()
        .into_iter()
        .find(|r| r["kind"] == "forget" && r["detail"]["receipt_id"] == receipt["receipt_id"])
        .unwrap();
    assert_eq!(record["detail"]["subject_key"], "42", "{record}");
    assert!(esq
        .app()
        .tombstones
        .keys("burial_2024")
        .contains(&"42".to_string()));
}
