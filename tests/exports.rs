//! Governed exports end to end (DESIGN 3.9), against a real PostgreSQL:
//! a job queued over HTTP, materialised through the guard, sealed, kept in
//! the consent ledger, decrypted by the recipient's CLI; KEK rotation;
//! the subject lookup and a forget; what is refused (see `export_jobs.rs`
//! for jobs across restarts, replicas and retention).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::exports::*;
use common::lifecycle::{esq_run, forget_http, subject_http};
use common::{http, Doors};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_decrypts_to_the_guard_approved_answer_and_is_ledgered() {
    let exports = exports();
    let hook = common::webhook::Receiver::start(1).await;
    let esq = ready(
        builder(&exports)
            .env("ESQ_EXPORTS__WEBHOOK", hook.url.clone())
            .start()
            .await,
    )
    .await;
    let ticket = http::ticket(&esq, "clinician", clinician_with_id()).await;

    // What the guard answers the same statement with, through the query door.
    let (code, answer) = http::query(&esq, &ticket, json!({"sql": CA_ROWS})).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let expected: Vec<Vec<String>> = answer
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            ["id", "state", "county", "burial_date"]
                .iter()
                .map(|c| text(&row[*c]))
                .collect()
        })
        .collect();
    assert!(expected.len() > 20, "the sample has California rows");

    let (code, queued) = submit(
        &esq,
        &ticket,
        json!({"sql": CA_ROWS, "reason": "annual report to the federal portal", "retention_days": 30}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["state"], "QUEUED");
    let job = queued["job"].as_str().expect("a job id").to_string();
    let done = finished(&esq, "clinician", &job).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["progress"]["rows"], expected.len() as u64, "{done}");

    // The webhook hears of it (after one refusal: retried), without data.
    let mut heard = None;
    for _ in 0..100 {
        heard = hook
            .requests
            .lock()
            .unwrap()
            .iter()
            .find(|(body, ok, _)| *ok && body["job"] == job.as_str())
            .map(|(b, _, _)| b.clone());
        if heard.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heard = heard.expect("the webhook got the completed export");
    assert_eq!(heard["event"], "export_completed");
    assert_eq!(heard["rows"], expected.len() as u64);
    let keys: BTreeSet<&str> = heard
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "bundle_sha256",
            "dataset",
            "event",
            "job",
            "requester",
            "rows"
        ]),
        "facts, never data"
    );
    let exposition = http::metrics(&esq).await;
    assert_eq!(
        http::metric(
            &exposition,
            "esq_export_jobs_ended_total{state=\"COMPLETED\"}"
        ),
        Some(1.0),
        "{exposition}"
    );
    assert!(http::metric(&exposition, "esq_export_bytes_total").unwrap_or(0.0) > 0.0);

    // The sealed bundle: private, and it decrypts to the guard's answer.
    let bundle = exports.dir.join(format!("{job}.enc"));
    assert_eq!(mode(&bundle), 0o600);
    let zip = exports.dir.join("out.zip");
    let (code, summary) = decrypt(&esq, &bundle, &exports.kek, &zip).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(mode(&zip), 0o600);
    assert_eq!(summary["job"], job.as_str());
    let rows = csv_rows(&zip);
    assert_eq!(rows[0], ["id", "state", "county", "burial_date"]);
    assert_eq!(rows[1..], expected[..], "the export is the guard's answer");
    assert_eq!(done["bundle_sha256"], sha256(&zip).as_str(), "{done}");
    let manifest = esq::exports::package::verify(&zip).expect("the manifest verifies");
    assert_eq!(manifest.files[0].rows, expected.len() as u64);

    // A flipped bit anywhere fails decryption, and leaves no output.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let tampered = exports.dir.join("tampered.enc");
    std::fs::write(&tampered, &bytes).unwrap();
    let broken = exports.dir.join("broken.zip");
    let (code, _) = decrypt(&esq, &tampered, &exports.kek, &broken).await;
    assert_ne!(code, 0);
    assert!(!broken.exists());

    // The consent ledger: hashed subject keys only, one per person.
    let admin = esq.pg().connect().await;
    let hashes: BTreeSet<String> = admin
        .query(
            "SELECT subject_hash FROM esq.export_subjects WHERE job = $1",
            &[&job],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ids: BTreeSet<String> = expected.iter().map(|r| r[0].clone()).collect();
    assert_eq!(hashes.len(), ids.len());
    let keys = esq.app().subject_keys.clone().expect("subject keys");
    let named: BTreeSet<String> = ids.iter().map(|id| keys.hash("burial_2024", id)).collect();
    assert_eq!(
        hashes, named,
        "the ledger names the exported subjects by hash"
    );
    assert!(hashes.iter().all(|h| !ids.contains(h) && h.len() == 64));
    let ledger_text: String = admin
        .query_one(
            "SELECT row_to_json(l)::text FROM esq.export_ledger l WHERE job = $1",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    for id in ids.iter().take(20) {
        assert!(!ledger_text.contains(&format!("\"{id}\"")), "{ledger_text}");
    }
    assert_eq!(done["ledger"]["subject_count"], ids.len() as u64, "{done}");
    assert_eq!(
        done["ledger"]["reason"],
        "annual report to the federal portal"
    );

    // Someone else's job is not found; the requester downloads the bundle.
    let (code, _) = status(&esq, "journalist", &job).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let download = http::client()
        .get(esq.url(&format!("/api/dta/export/{job}/bundle")))
        .bearer_auth(http::token("clinician"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let downloaded = download.bytes().await.unwrap();
    assert_eq!(
        downloaded.as_ref(),
        std::fs::read(&bundle).unwrap().as_slice()
    );

    // The subject lookup lists the export; a forget marks it.
    let subject = ids.iter().next().unwrap().clone();
    let query = format!("dataset=burial_2024&subject={subject}");
    let (code, found) = subject_http(&esq, "privacy", &query).await;
    assert_eq!(code, StatusCode::OK, "{found}");
    assert_eq!(found["exports"][0]["job"], job.as_str(), "{found}");
    assert!(found["exports"][0].get("subject_forgotten_at").is_none());
    let (code, receipt) = forget_http(
        &esq,
        Some("privacy"),
        json!({"dataset": "burial_2024", "subject": subject, "reason": "request", "requested_by": "family"}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{receipt}");
    let (_, found) = subject_http(&esq, "privacy", &query).await;
    assert!(
        found["exports"][0]["subject_forgotten_at"].is_string(),
        "{found}"
    );

    // KEK rotation: the old KEK no longer opens the bundle, the new one does.
    let new_kek = exports.dir.join("../kek.new");
    esq::exports::kek::FileKek::generate(&new_kek).expect("a new KEK");
    let rotate = esq_run(
        &esq,
        "rotate",
        &[
            "kek",
            "rotate",
            "--new-kek-file",
            &new_kek.display().to_string(),
            "--dir",
            &exports.dir.display().to_string(),
            "--kek-file",
            &exports.kek.display().to_string(),
        ],
    )
    .await;
    assert_eq!(rotate.status, 0, "{}{}", rotate.stdout, rotate.stderr);
    let old = exports.dir.join("old.zip");
    let (code, _) = decrypt(&esq, &bundle, &exports.kek, &old).await;
    assert_ne!(code, 0, "the old KEK still opens the bundle");
    let new = exports.dir.join("new.zip");
    let (code, summary) = decrypt(&esq, &bundle, &new_kek, &new).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(sha256(&new), sha256(&zip));

    // Everything above is on record.
    let audit = std::fs::read_to_string(esq.dir().join("audit.jsonl")).unwrap();
    for action in [
        "queued",
        "materializing",
        "stored",
        "completed",
        "downloaded",
    ] {
        assert!(
            audit.contains(&format!("\"action\":\"{action}\"")),
            "no {action} record"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_and_refused_exports() {
    let exports = exports();
    let esq = ready(builder(&exports).start().await).await;
    let foia = http::ticket(&esq, "journalist", common::tickets::foia_request("5m")).await;

    // A refused statement queues nothing.
    let (code, body) = submit(
        &esq,
        &foia,
        json!({"sql": "SELECT ssn FROM burial_2024", "reason": "r"}),
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let (code, body) = submit(&esq, &foia, json!({"query": {"groupBy": "state"}})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "reason", "{body}");
    let (code, body) = submit(
        &esq,
        &foia,
        json!({"query": {"groupBy": "state"}, "reason": "two\u{0000}lines"}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let admin = esq.pg().connect().await;
    let jobs: i64 = admin
        .query_one("SELECT count(*) FROM esq.export_jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs, 0);

    // An aggregate export: the k-suppressed counts, no subjects in the ledger.
    let (_, answer) = http::query(&esq, &foia, json!({"groupBy": "state"})).await;
    let (code, queued) = submit(
        &esq,
        &foia,
        json!({"query": {"groupBy": "state"}, "reason": "FOIA release"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{queued}");
    let job = queued["job"].as_str().unwrap().to_string();
    let done = finished(&esq, "journalist", &job).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["ledger"]["subject_count"], 0);
    let zip = exports.dir.join("agg.zip");
    let (code, summary) = decrypt(
        &esq,
        &exports.dir.join(format!("{job}.enc")),
        &exports.kek,
        &zip,
    )
    .await;
    assert_eq!(code, 0, "{summary}");
    let rows = csv_rows(&zip);
    let mut exported: Vec<(String, String)> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let mut expected: Vec<(String, String)> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (text(&r["state"]), text(&r["count"])))
        .collect();
    exported.sort();
    expected.sort();
    assert_eq!(exported, expected);
    assert!(
        exported
            .iter()
            .all(|(_, n)| n.parse::<i64>().unwrap() >= 11),
        "only groups of at least k leave"
    );

    // A row-level export must carry the subject key (the ledger names whom it holds).
    let rows_ticket = http::ticket(&esq, "clinician", common::tickets::clinician_request()).await;
    let (code, queued) = submit(
        &esq,
        &rows_ticket,
        json!({"sql": "SELECT state, county FROM burial_2024", "reason": "r"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{queued}");
    let done = finished(&esq, "clinician", queued["job"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("subject key"),
        "{done}"
    );

    // A row-level export reads its table once: a self-join could ship
    // people the ledger does not name (red-team N1).
    let with_key = http::ticket(&esq, "clinician", clinician_with_id()).await;
    let (code, body) = submit(
        &esq,
        &with_key,
        json!({"sql": "SELECT t.id, b.state FROM burial_2024 b LEFT JOIN burial_2024 t ON false", "reason": "r"}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"].as_str().unwrap().contains("once"), "{body}");
    // Checked as it runs: a dollar quote PostgreSQL reads as a string but
    // the guard's parser does not hides a window function from a check of
    // the text as sent (red-team Q1).
    let hidden = "SELECT id, state, branch || $€$ , max(county) OVER (ORDER BY burial_date ROWS BETWEEN 1 PRECEDING AND 1 PRECEDING) AS county, branch || $€$ FROM burial_2024 WHERE state = 'CA'";
    let (code, body) = submit(&esq, &with_key, json!({"sql": hidden, "reason": "r"})).await;
    assert_ne!(code, StatusCode::ACCEPTED, "{body}");
    let queued: i64 = admin
        .query_one(
            "SELECT count(*) FROM esq.export_jobs WHERE request->>'sql' LIKE '%$€$%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 0, "{body}");

    // Two statements are not an export.
    let (code, body) = submit(
        &esq,
        &rows_ticket,
        json!({"sql": "SELECT state FROM burial_2024; SELECT county FROM burial_2024", "reason": "r"}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");

    // A ticket revoked while its job waits in the queue: the job does not run.
    let locker = esq.pg().connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE burial_2024 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let first = http::ticket(&esq, "clinician", clinician_with_id()).await;
    let (_, a) = submit(&esq, &first, json!({"sql": CA_ROWS, "reason": "r"})).await;
    let a = a["job"].as_str().unwrap().to_string();
    until_state(&esq, &a, "MATERIALIZING").await;
    let second = http::ticket(&esq, "clinician", clinician_with_id()).await;
    let (_, b) = submit(&esq, &second, json!({"sql": CA_ROWS, "reason": "r"})).await;
    let b = b["job"].as_str().unwrap().to_string();
    let third = http::ticket(&esq, "clinician", clinician_with_id()).await;
    let (_, c) = submit(&esq, &third, json!({"sql": CA_ROWS, "reason": "r"})).await;
    let c = c["job"].as_str().unwrap().to_string();
    // `a` is running (its query waits on the lock), `b` and `c` are queued:
    // revoking `a`'s and `b`'s tickets stops both; `c` completes.
    for ticket in [&first, &second] {
        let revoked = http::revoke(&esq, Some("clinician"), ticket).await;
        assert!(revoked.status().is_success());
    }
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(finished(&esq, "clinician", &c).await["state"], "COMPLETED");
    for job in [&a, &b] {
        let stopped = finished(&esq, "clinician", job).await;
        assert_eq!(stopped["state"], "FAILED", "{stopped}");
        assert!(
            stopped["error"]
                .as_str()
                .unwrap()
                .contains("no longer live"),
            "{stopped}"
        );
        assert!(!exports.dir.join(format!("{job}.enc")).exists());
        assert!(stopped["ledger"].is_null(), "{stopped}");
    }
    // The statement is not kept once a job ended.
    let kept: i64 = admin
        .query_one("SELECT count(*) FROM esq.export_jobs WHERE request ? 'sql' AND state IN ('COMPLETED', 'FAILED')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);

    // hash_fields: the id column is pseudonymised, one pseudonym per person.
    let with_id = http::ticket(&esq, "clinician", clinician_with_id()).await;
    let (_, queued) = submit(
        &esq,
        &with_id,
        json!({"sql": "SELECT id, state, id FROM burial_2024 WHERE state = 'CA' ORDER BY 1", "reason": "r", "hash_fields": ["id"]}),
    )
    .await;
    let job = queued["job"].as_str().unwrap().to_string();
    let done = finished(&esq, "clinician", &job).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let zip = exports.dir.join("hashed.zip");
    let (code, _) = decrypt(
        &esq,
        &exports.dir.join(format!("{job}.enc")),
        &exports.kek,
        &zip,
    )
    .await;
    assert_eq!(code, 0);
    let rows = csv_rows(&zip);
    let ids: Vec<&String> = rows[1..].iter().map(|r| &r[0]).collect();
    assert!(
        rows[1..].iter().all(|r| r[0] == r[2]),
        "both id columns are hashed alike: {:?}",
        &rows[..2]
    );
    assert!(ids
        .iter()
        .all(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())));
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
}
