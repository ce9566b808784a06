//! Right-to-delete (issue 16, items 3–5), against real PostgreSQL: `esq
//! forget` deletes a subject's rows and its linked rows, keeps a tombstone
//! and prints a signed receipt that `esq receipt verify` accepts — and
//! refuses once a byte of it or its audit record changed; forgetting
//! again hands back the same receipt; the HTTP door is for privacy
//! officers only and refuses bad input with nothing half-done (also when
//! the maintenance role may not delete); a restored backup brings the
//! rows back, no answer of either door shows or counts them, and `esq
//! forget --reapply` deletes them again; the subject lookup shows the
//! tombstone and its receipt.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::process::Command;

use common::esq::Esq;
use common::lifecycle::{
    audit_of, esq_run, fixture, forget_body, forget_http, present, pubkey, subject_http,
    subject_with_notes, tombstones,
};
use common::process::Run;
use common::{http, pg_client};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn verify(esq: &Esq, receipt: &Value, audit: Option<&Path>, key: bool) -> Run {
    let path = esq.dir().join(format!("receipt-{}.json", rand_tag()));
    std::fs::write(&path, serde_json::to_string_pretty(receipt).unwrap()).unwrap();
    verify_file(esq, &path, audit, key).await
}

async fn verify_file(esq: &Esq, path: &Path, audit: Option<&Path>, key: bool) -> Run {
    let mut args = vec![
        "receipt".to_string(),
        "verify".into(),
        path.display().to_string(),
    ];
    if let Some(audit) = audit {
        args.extend(["--audit".into(), audit.display().to_string()]);
    }
    if key {
        args.extend(["--pubkey".into(), pubkey(esq).display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    esq_run(esq, "verify", &args).await
}

fn rand_tag() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn without_status(receipt: &Value) -> Value {
    let mut receipt = receipt.clone();
    receipt.as_object_mut().unwrap().remove("status");
    receipt
}

#[tokio::test]
async fn the_cli_forgets_a_subject_and_its_notes_with_a_receipt_that_verifies() {
    let esq = fixture(false).await;
    let id = subject_with_notes(&esq).await;
    assert_eq!(
        present(&esq, id).await,
        (1, 2),
        "the sample holds the subject and two notes"
    );
    let subject = id.to_string();
    let args = [
        "forget",
        "--dataset",
        "burial_2024",
        "--subject",
        &subject,
        "--reason",
        "GDPR art. 17 request",
        "--requested-by",
        "the veteran's family",
        "--json",
    ];
    let run = esq_run(&esq, "forget", &args).await;
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let receipt: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(receipt["status"], "forgotten");
    assert_eq!(
        receipt["rows_deleted"],
        json!({"burial_2024": 1, "staff_notes": 2})
    );
    assert_eq!(receipt["subject_hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        present(&esq, id).await,
        (0, 0),
        "rows and linked rows are gone"
    );

    // The tombstone keeps the key sealed (id is PII) and the receipt.
    let row = esq
        .pg()
        .connect()
        .await
        .query_one(
            "SELECT subject_key, subject_sealed IS NOT NULL, receipt->>'receipt_id' FROM esq.tombstones",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert!(row.get::<_, bool>(1));
    assert_eq!(
        row.get::<_, String>(2),
        receipt["receipt_id"].as_str().unwrap()
    );

    // The audit record names the subject by its hash only.
    let audit = audit_of(&esq, "forget");
    let text = std::fs::read_to_string(&audit).unwrap();
    let record: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["kind"] == "forget")
        .expect("a forget record");
    assert_eq!(record["seq"], receipt["audit_seq"]);
    assert_eq!(record["detail"]["subject_hash"], receipt["subject_hash"]);
    assert!(
        !record.to_string().contains(&format!("\"{subject}\"")),
        "{record}"
    );

    // Valid with the audit log and the public key, and with the config's key.
    let ok = verify(&esq, &receipt, Some(audit.as_path()), true).await;
    assert_eq!(ok.status, 0, "{}{}", ok.stdout, ok.stderr);
    let ok = verify(&esq, &receipt, None, false).await;
    assert_eq!(ok.status, 0, "{}{}", ok.stdout, ok.stderr);

    // One byte changed in the receipt.
    let path = esq.dir().join("tampered.json");
    let original = serde_json::to_string_pretty(&receipt).unwrap();
    for (from, to) in [
        ("\"staff_notes\": 2", "\"staff_notes\": 3"),
        ("GDPR", "GDPS"),
    ] {
        assert!(original.contains(from));
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        let bad = verify_file(&esq, &path, Some(audit.as_path()), true).await;
        assert_eq!(bad.status, 1, "{from} → {to}: {}{}", bad.stdout, bad.stderr);
        assert!(bad.stdout.contains("not valid"), "{}", bad.stdout);
    }
    let hash = receipt["subject_hash"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        if hash.starts_with('0') { '1' } else { '0' },
        &hash[1..]
    );
    std::fs::write(&path, original.replace(hash, &flipped)).unwrap();
    assert_eq!(verify_file(&esq, &path, None, true).await.status, 1);

    // The audit record edited (the reason in its detail).
    let edited = esq.dir().join("edited.jsonl");
    std::fs::write(&edited, text.replacen("GDPR art. 17", "GDPR art. 18", 1)).unwrap();
    let bad = verify(&esq, &receipt, Some(edited.as_path()), true).await;
    assert_eq!(bad.status, 1, "{}{}", bad.stdout, bad.stderr);
    assert!(bad.stdout.contains("not valid"), "{}", bad.stdout);

    // Forgetting again (the key written another way): the same receipt.
    let zero_padded = format!("0{subject}");
    let again_args = [
        "forget",
        "--dataset",
        "burial_2024",
        "--subject",
        &zero_padded,
        "--reason",
        "again",
        "--requested-by",
        "the family",
        "--json",
    ];
    let again = esq_run(&esq, "forget-again", &again_args).await;
    assert_eq!(again.status, 0, "{}{}", again.stdout, again.stderr);
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["status"], "already_forgotten");
    assert_eq!(without_status(&again), without_status(&receipt));
    let ok = verify(&esq, &again, Some(audit.as_path()), true).await;
    assert_eq!(ok.status, 0, "{}{}", ok.stdout, ok.stderr);
    assert_eq!(tombstones(&esq).await, 1);

    let missing = esq_run(
        &esq,
        "forget-missing",
        &["forget", "--dataset", "burial_2024"],
    )
    .await;
    assert_eq!(missing.status, 2, "{}", missing.stderr);
}

#[tokio::test]
async fn the_http_door_forgets_for_privacy_officers_only_and_half_does_nothing() {
    let esq = fixture(true).await;
    let id = subject_with_notes(&esq).await;
    let maintenance = esq.upstream().maintenance_role.clone().unwrap();

    for user in ["journalist", "admin", "clinician"] {
        let (status, body) = forget_http(&esq, Some(user), forget_body(json!(id))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{user}: {body}");
        assert_eq!(body["error"], "forbidden");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("privacy officers"),
            "{body}"
        );
        let (status, _) =
            subject_http(&esq, user, &format!("dataset=burial_2024&subject={id}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = forget_http(&esq, None, forget_body(json!(id))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refused: Vec<String> = esq
        .audit_records()
        .into_iter()
        .filter(|r| r["outcome"] == "deny" && r["user"] == "journalist")
        .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        refused,
        ["forget", "subject_lookup"],
        "each refusal is audited under its own kind"
    );

    let mut bad = Vec::new();
    let mut body = forget_body(json!(id));
    body["dataset"] = json!("no_such_dataset");
    bad.push((body, "dataset"));
    let mut body = forget_body(json!(id));
    body.as_object_mut().unwrap().remove("reason");
    bad.push((body, "reason"));
    let mut body = forget_body(json!(id));
    body["requested_by"] = json!("  ");
    bad.push((body, "requested_by"));
    let mut body = forget_body(json!(id));
    body["dataset"] = json!("staff_notes");
    bad.push((body, "dataset"));
    bad.push((forget_body(json!("not-a-number-xyz")), "subject"));
    bad.push((forget_body(json!("4\n2")), "subject"));
    bad.push((forget_body(json!(true)), "subject"));
    for (body, field) in bad {
        let (status, answer) = forget_http(&esq, Some("privacy"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(
            !answer.to_string().contains("not-a-number-xyz"),
            "echoed: {answer}"
        );
    }
    assert_eq!(present(&esq, id).await, (1, 2));
    assert_eq!(tombstones(&esq).await, 0);

    // The maintenance role may delete notes but not burials: the notes
    // deleted first come back with the rollback; no tombstone, no receipt.
    let admin = esq.pg().connect().await;
    admin
        .batch_execute(&format!(
            "REVOKE DELETE ON public.burial_2024 FROM {maintenance}"
        ))
        .await
        .unwrap();
    let (status, answer) = forget_http(&esq, Some("privacy"), forget_body(json!(id))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    let text = answer.to_string();
    for internal in [
        maintenance.as_str(),
        "permission",
        "burial_2024",
        "127.0.0.1",
        &id.to_string(),
    ] {
        assert!(
            !text.contains(internal),
            "{internal} reached the client: {text}"
        );
    }
    assert_eq!(present(&esq, id).await, (1, 2), "nothing half-done");
    assert_eq!(tombstones(&esq).await, 0);
    assert!(esq.app().tombstones.keys("burial_2024").is_empty());
    assert!(
        !esq.audit_records()
            .iter()
            .any(|r| r["kind"] == "forget" && r["outcome"] == "allow"),
        "no forget on record"
    );
    admin
        .batch_execute(&format!(
            "GRANT DELETE ON public.burial_2024 TO {maintenance}"
        ))
        .await
        .unwrap();
    let (status, receipt) =
        forget_http(&esq, Some("privacy"), forget_body(json!(id.to_string()))).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    assert_eq!(
        receipt["rows_deleted"],
        json!({"burial_2024": 1, "staff_notes": 2})
    );
    assert_eq!(present(&esq, id).await, (0, 0));

    // An unknown subject: a receipt of zero rows, and a tombstone.
    let (status, unknown) =
        forget_http(&esq, Some("privacy"), forget_body(json!(987_654_321))).await;
    assert_eq!(status, StatusCode::CREATED, "{unknown}");
    assert_eq!(
        unknown["rows_deleted"],
        json!({"burial_2024": 0, "staff_notes": 0})
    );
    assert_eq!(tombstones(&esq).await, 2);
    let (status, again) = forget_http(&esq, Some("privacy"), forget_body(json!(987_654_321))).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "already_forgotten");
    assert_eq!(without_status(&again), without_status(&unknown));
    let (status, found) =
        subject_http(&esq, "privacy", "dataset=burial_2024&subject=987654321").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["tombstone"]["receipt"], without_status(&unknown));
    assert_eq!(found["subject_hash"], unknown["subject_hash"]);

    // The forget records cite what the receipts say.
    let records = esq.audit_records();
    let record = records
        .iter()
        .find(|r| r["seq"] == receipt["audit_seq"])
        .unwrap();
    assert_eq!(record["kind"], "forget");
    assert_eq!(record["user"], "privacy");
    assert_eq!(record["detail"]["receipt_id"], receipt["receipt_id"]);
    let (status, answer) = subject_http(&esq, "privacy", "dataset=burial_2024").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let metrics = http::metrics(&esq).await;
    assert_eq!(
        http::metric(&metrics, "esq_forgets_total{outcome=\"forgotten\"}"),
        Some(2.0)
    );
}

/// `pg_dump` / `pg_restore` of the two tables as the superuser.
fn backup(esq: &Esq, restore: bool, file: &Path) {
    let url = esq.pg().url();
    let file = file.display().to_string();
    let (program, args): (&str, Vec<&str>) = if restore {
        (
            "pg_restore",
            vec!["--clean", "--if-exists", "-d", &url, &file],
        )
    } else {
        (
            "pg_dump",
            vec![
                "-Fc",
                "-t",
                "public.burial_2024",
                "-t",
                "public.staff_notes",
                "-f",
                &file,
                &url,
            ],
        )
    };
    let out = Command::new(program)
        .args(&args)
        .output()
        .expect("pg_dump/pg_restore run");
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Per-state counts through the HTTP door, under a FOIA ticket.
async fn counts_http(esq: &Esq, ticket: &str) -> Value {
    let sql = "SELECT state, count(*) AS n FROM burial_2024 GROUP BY state ORDER BY state";
    let (status, rows) = http::query(esq, ticket, json!({"sql": sql})).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    rows
}

#[tokio::test]
async fn a_restored_backup_shows_nothing_through_either_door_until_reapply_deletes_it() {
    let esq = fixture(true).await;
    let id = subject_with_notes(&esq).await;
    let dump = esq.dir().join("backup.dump");
    backup(&esq, false, &dump);

    let clinician = esq
        .ticket(
            "clinician",
            json!({"dataset": "burial_2024", "purpose": "treatment of the patient in my care",
                                    "fields": ["id", "state", "burial_date"], "ttl": "10m"}),
        )
        .await;
    let foia = esq
        .ticket("journalist", common::tickets::foia_request("10m"))
        .await;
    let row_sql = json!({"sql": format!("SELECT id, state FROM burial_2024 WHERE id = {id}")});
    let (status, before) = http::query(&esq, &clinician, row_sql.clone()).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(
        before.as_array().unwrap().len(),
        1,
        "the clinician sees the subject before"
    );
    let counts_before = counts_http(&esq, &foia).await;

    let (status, receipt) = forget_http(&esq, Some("privacy"), forget_body(json!(id))).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    let counts_after = counts_http(&esq, &foia).await;
    assert_ne!(
        counts_after, counts_before,
        "the subject was counted before"
    );

    backup(&esq, true, &dump);
    assert_eq!(
        present(&esq, id).await,
        (1, 2),
        "the restore brought the rows back"
    );
    // /metrics (unauthenticated) says that rows are back, not how many:
    // with one tombstone the count would be that person's rows.
    esq::lifecycle::watch::check(esq.app(), true).await.unwrap();
    let exposition = http::metrics(&esq).await;
    for dataset in ["burial_2024", "staff_notes"] {
        let series = format!("esq_tombstoned_rows_present{{dataset=\"{dataset}\"}}");
        assert_eq!(
            http::metric(&exposition, &series),
            Some(1.0),
            "{exposition}"
        );
    }

    // HTTP door: rows and counts.
    let (status, rows) = http::query(&esq, &clinician, row_sql).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(
        rows,
        json!([]),
        "a forgotten subject's row reached the clinician"
    );
    assert_eq!(
        counts_http(&esq, &foia).await,
        counts_after,
        "the restored row is counted"
    );
    // PostgreSQL door: rows and counts.
    let pg = pg_client::connect_with_ticket(&esq, &clinician).await;
    let rows = pg
        .query(&format!("SELECT id FROM burial_2024 WHERE id = {id}"), &[])
        .await
        .unwrap();
    assert!(
        rows.is_empty(),
        "a forgotten subject's row reached the PostgreSQL door"
    );
    let pg = pg_client::connect_with_ticket(&esq, &foia).await;
    let sql = "SELECT state, count(*) AS n FROM burial_2024 GROUP BY state ORDER BY state";
    let counted: Vec<Value> = pg
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| json!({"state": row.get::<_, String>(0), "n": row.get::<_, i64>(1)}))
        .collect();
    assert_eq!(
        json!(counted),
        counts_after,
        "the PostgreSQL door counts the restored row"
    );
    // Catalog statistics are refused (they would show values).
    let stats = pg
        .query(
            "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'burial_2024'",
            &[],
        )
        .await;
    assert!(stats.is_err(), "pg_stats answered");
    // The linked dataset: no policy grants it to anyone (refused whole).
    let (status, _) = http::issue(
        &esq,
        "clinician",
        json!({"dataset": "staff_notes",
        "purpose": "treatment of the patient in my care", "fields": ["veteran_id", "topic"]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The audit log keeps the rewrites with a count, never the key.
    let rewrites: Vec<String> = esq
        .audit_records()
        .iter()
        .filter_map(|r| r["rewritten"].as_str().map(str::to_string))
        .collect();
    assert!(
        rewrites.iter().any(|r| r.contains("'{<1 forgotten>}'")),
        "{rewrites:?}"
    );
    assert!(
        rewrites.iter().all(|r| !r.contains(&format!("\"{id}\""))),
        "a forgotten key reached the audit log: {rewrites:?}"
    );

    // Reapply deletes them again.
    let run = esq_run(&esq, "reapply", &["forget", "--reapply", "--json"]).await;
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["rows_deleted"],
        json!({"burial_2024": 1, "staff_notes": 2}),
        "{report}"
    );
    assert_eq!(report["subjects"], json!({"burial_2024": 1}));
    assert_eq!(present(&esq, id).await, (0, 0));
    let run = esq_run(
        &esq,
        "reapply-2",
        &["forget", "--reapply", "--dataset", "burial_2024", "--json"],
    )
    .await;
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["rows_deleted"],
        json!({"burial_2024": 0, "staff_notes": 0}),
        "{report}"
    );

    // The subject lookup (DSAR): the tombstone and its receipt.
    let (status, found) = subject_http(
        &esq,
        "privacy",
        &format!("dataset=burial_2024&subject={id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["dataset"], "burial_2024");
    assert_eq!(found["subject_hash"], receipt["subject_hash"]);
    assert_eq!(found["tombstone"]["receipt"], without_status(&receipt));
    assert!(found["tombstone"]["forgotten_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(found["receipts"], json!([without_status(&receipt)]));
    assert_eq!(found["exports"], json!([]));
    assert_eq!(found["hidden"], true);
    let (status, other) = subject_http(&esq, "privacy", "dataset=burial_2024&subject=1").await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_eq!(other["tombstone"], Value::Null);
    assert_eq!(other["hidden"], false);
    assert_eq!(other["receipts"], json!([]));
    assert!(!other.to_string().contains("\"subject\""), "{other}");
}
