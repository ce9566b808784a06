//! The audit log end to end: records written by a live esq (PostgreSQL and
//! HTTP doors), `esq audit verify` (the binary) naming the record a copy was
//! tampered at, rotation across files, failing closed when the log is
//! deleted, and — with the real binary killed with SIGKILL under load —
//! every query whose result a client received has its record.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::esq::Esq;
use common::http;
use common::pg_client::connect_with_ticket;
use common::process::{esq_command, Run};
use common::tickets::foia_request;
use serde_json::Value;

const COUNTS: &str = "SELECT state, count(*) FROM burial_2024 GROUP BY state";

/// A statement text that is unique (so is its fingerprint) and allowed.
fn numbered(n: usize) -> String {
    format!("{COUNTS} /* q{n} */")
}

fn rows_of(messages: &[tokio_postgres::SimpleQueryMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn all_files(base: &Path) -> Vec<PathBuf> {
    esq::audit::files::existing(base)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Runs `esq audit verify --json <files>`: (exit status, report).
fn verify_cli(files: &[PathBuf]) -> (i32, Value) {
    let run = Run::of(
        esq_command()
            .args(["audit", "verify", "--json"])
            .args(files),
    );
    let report = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.status, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_the_facts_and_verify_names_each_kind_of_tampering() {
    // k-only counts: every statement here is a fresh answer (a private
    // ticket's budget would run out).
    let esq = Esq::builder().k_only_counts().start().await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    let mut expected_rows = Vec::new();
    for n in 0..6 {
        let answer = client.simple_query(&numbered(n)).await.unwrap();
        expected_rows.push(rows_of(&answer));
    }
    // A denial and an extended-protocol statement too.
    client
        .simple_query("SELECT name FROM burial_2024")
        .await
        .unwrap_err();
    let prepared = client.query(COUNTS, &[]).await.unwrap();

    let records = esq.audit_records();
    let by_fingerprint = |sql: &str| -> Vec<Value> {
        let fp = esq::audit::fingerprint(sql);
        records
            .iter()
            .filter(|r| r["fingerprint"] == fp.as_str())
            .cloned()
            .collect()
    };
    for (n, rows) in expected_rows.iter().enumerate() {
        let found = by_fingerprint(&numbered(n));
        assert_eq!(found.len(), 1, "one record per simple query: {found:?}");
        let record = &found[0];
        assert_eq!(record["kind"], "decision");
        assert_eq!(record["door"], "pg");
        assert_eq!(record["outcome"], "rewrite");
        assert_eq!(record["user"], "journalist");
        assert_eq!(record["roles"], serde_json::json!(["foia_requester"]));
        assert_eq!(record["dataset"], "burial_2024");
        assert_eq!(record["rows"], *rows as u64);
        assert!(*rows > 0);
        assert!(record["rewritten"].as_str().unwrap().contains("HAVING"));
        assert_eq!(record["ticket_hash"].as_str().unwrap().len(), 64);
        assert!(record["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let denied = by_fingerprint("SELECT name FROM burial_2024");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["outcome"], "deny");
    assert_eq!(denied[0]["sqlstate"], "42501");
    assert!(denied[0]["rows"].is_null());
    // Extended protocol: the decision at Parse, then the execution with rows.
    let extended = by_fingerprint(COUNTS);
    assert_eq!(extended.len(), 2, "{extended:?}");
    assert_eq!(extended[0]["detail"]["phase"], "prepare");
    assert_eq!(extended[1]["rows"], prepared.len() as u64);

    // The live log verifies; each tampered copy is named at the right line.
    let log = esq.audit_path();
    let (status, report) = verify_cli(std::slice::from_ref(&log));
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["from_genesis"], true);
    let original = lines(&log);
    assert!(original.len() >= 9, "{}", original.len());
    let seq_at = |i: usize| -> u64 {
        serde_json::from_str::<Value>(&original[i]).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let work = tempfile::tempdir().unwrap();
    let check = |name: &str, tampered: Vec<String>, line: u64, seq: u64| {
        let path = work.path().join(name);
        std::fs::write(&path, tampered.join("\n") + "\n").unwrap();
        let (status, report) = verify_cli(&[path]);
        assert_eq!(status, 1, "{name}: {report}");
        let problem = &report["problem"];
        assert_eq!(problem["line"], line, "{name}: {report}");
        assert_eq!(problem["seq"], seq, "{name}: {report}");
    };
    // Edit: a record's user changed; verify names that record.
    let mut edited = original.clone();
    edited[3] = edited[3].replacen("\"journalist\"", "\"somebody\"", 1);
    assert_ne!(edited[3], original[3]);
    check("edited.jsonl", edited, 4, seq_at(3));
    // Deletion: the record after the gap is named.
    let mut deleted = original.clone();
    deleted.remove(2);
    check("deleted.jsonl", deleted, 3, seq_at(3));
    // Insertion: a copy of an earlier record slipped in after line 5.
    let mut inserted = original.clone();
    inserted.insert(5, original[1].clone());
    check("inserted.jsonl", inserted, 6, seq_at(1));
    // Reordering: two records swapped.
    let mut reordered = original.clone();
    reordered.swap(4, 5);
    check("reordered.jsonl", reordered, 5, seq_at(5));
    // Unreadable input is exit status 2.
    let (status, _) = verify_cli(&[work.path().join("missing.jsonl")]);
    assert_eq!(status, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_runs_through_rotated_files() {
    let esq = Esq::builder()
        .env("ESQ_AUDIT__ROTATE_BYTES", "2048")
        .start()
        .await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    for n in 0..20 {
        client.simple_query(&numbered(n)).await.unwrap();
    }
    let files = all_files(&esq.audit_path());
    assert!(files.len() >= 3, "{files:?}");
    let (status, report) = verify_cli(&files);
    assert_eq!(status, 0, "{report}");
    // The start's own record, then the twenty statements.
    assert_eq!(report["records"], 21);

    // A restart continues the chain where it left off.
    let mut esq = esq;
    esq.restart().await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    client.simple_query(&numbered(100)).await.unwrap();
    let (status, report) = verify_cli(&all_files(&esq.audit_path()));
    assert_eq!(status, 0, "{report}");
    // … plus the second start's record and the statement.
    assert_eq!(report["records"], 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_log_stops_answers() {
    let esq = Esq::builder().start().await;
    let ticket = esq.foia_ticket().await;
    let client = connect_with_ticket(&esq, &ticket).await;
    client.simple_query(&numbered(0)).await.unwrap();
    std::fs::remove_file(esq.audit_path()).unwrap();
    // The next answer is withheld (its record cannot be made durable) …
    let withheld = client.simple_query(&numbered(1)).await.unwrap_err();
    let text = format!("{withheld:?}");
    assert!(
        text.contains("58030") || client.is_closed(),
        "answer not withheld: {text}"
    );
    // … and new statements are refused before they run.
    let client = connect_with_ticket(&esq, &ticket).await;
    let refused = client.simple_query(&numbered(2)).await.unwrap_err();
    let code = refused.as_db_error().map(|e| e.code().code().to_string());
    assert_eq!(code.as_deref(), Some("58030"), "{refused:?}");
    let message = refused.as_db_error().map(|e| e.message().to_string());
    assert!(
        message.as_deref().unwrap_or("").contains("audit log"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_record_of_a_received_answer() {
    kill_9_under_load("fsync").await;
}

/// `audit.durability = write` answers once the record is written, before
/// its fsync (a minute away here): a crash of esq alone still loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_write_durability_loses_no_record_of_a_received_answer() {
    kill_9_under_load("write").await;
}

async fn kill_9_under_load(durability: &str) {
    // The harness prepares PostgreSQL and the environment; the real binary
    // serves (so it can be killed), with its own audit log.
    let mut fixture = Esq::builder().prepare().await;
    let mut process = fixture
        .spawn_binary(&[
            ("ESQ_AUDIT__DURABILITY", durability),
            ("ESQ_AUDIT__SYNC_INTERVAL", "60s"),
        ])
        .await;
    let audit = process.audit_path().to_path_buf();
    // A ticket from the binary's HTTP door (tickets live in the process
    // that issued them).
    let ticket = http::ticket(&process, "journalist", foia_request("5m")).await;

    // Clients run numbered queries and note each answer they received.
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..6usize {
        let received = received.clone();
        let client = connect_with_ticket(&process, &ticket).await;
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                let sql = numbered(c * 1_000_000 + i);
                let answered = if c % 2 == 0 {
                    client.simple_query(&sql).await.map(|m| rows_of(&m))
                } else {
                    client.query(&sql, &[]).await.map(|r| r.len())
                };
                match answered {
                    Ok(rows) if rows > 0 => received.lock().unwrap().push(sql),
                    Ok(_) => panic!("an empty answer"),
                    Err(_) => break,
                }
            }
        }));
    }
    // Load until well past a few hundred answers, then SIGKILL mid-load.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < 600 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let before_kill = received.lock().unwrap().len();
    process.kill();
    for client in clients {
        client.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(before_kill >= 100, "too little load: {before_kill}");

    // Every received answer has its execution record (rows counted).
    let files = all_files(&audit);
    let mut executed = HashSet::new();
    for file in &files {
        for line in lines(file) {
            // A torn last line (a write cut by the kill) is not a record.
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if record["rows"].as_u64().is_some_and(|r| r > 0) {
                executed.insert(record["fingerprint"].as_str().unwrap().to_string());
            }
        }
    }
    let missing: Vec<&String> = received
        .iter()
        .filter(|sql| !executed.contains(&esq::audit::fingerprint(sql)))
        .collect();
    eprintln!(
        "kill -9: {} answers received, {} execution records, {} missing",
        received.len(),
        executed.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "answers without a record: {missing:?}");
    // The chain of what was written verifies (a torn end is reported only).
    let report = esq::audit::verify::verify_files(&files).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    let crashed_last = report.last_seq.unwrap();

    // esq starts again on the crashed log and continues the chain.
    fixture.set_env("ESQ_AUDIT__PATH", audit.display().to_string());
    fixture.restart().await;
    let ticket = fixture.foia_ticket().await;
    let client = connect_with_ticket(&fixture, &ticket).await;
    client.simple_query(&numbered(7_777_777)).await.unwrap();
    let report = esq::audit::verify::verify_files(&all_files(&audit)).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    // The restart's record, then the statement's.
    assert_eq!(report.last_seq, Some(crashed_last + 2));
}
