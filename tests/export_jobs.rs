//! Export jobs across the life of esq (issue 18): a job that survives a
//! killed esq and never completes half-written, one interrupted too often,
//! retention of bundles, a linked dataset's export ledgered under the
//! subjects it links to, and replicas claiming a queued job once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::exports::*;
use common::lifecycle::{esq_run, subject_http};
use common::{http, Doors};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_killed_esq_and_never_completes_half_written() {
    let exports = exports();
    let mut esq = builder(&exports).redis().prepare().await;
    let mut binary = esq.spawn_binary(&[]).await;
    let ticket = http::ticket(&binary, "clinician", clinician_with_id()).await;
    let (_, answer) = http::query(&binary, &ticket, json!({"sql": CA_ROWS})).await;
    let expected = answer.as_array().expect("rows").len();

    // The table is locked: the job claims and waits in MATERIALIZING.
    let locker = esq.pg().connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE burial_2024 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (code, queued) = submit(
        &binary,
        &ticket,
        json!({"sql": CA_ROWS, "reason": "resume me"}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{queued}");
    let job = queued["job"].as_str().unwrap().to_string();
    until_state(&esq, &job, "MATERIALIZING").await;
    binary.kill();
    assert!(!exports.dir.join(format!("{job}.enc")).exists());

    locker.batch_execute("COMMIT").await.unwrap();
    esq.restart().await;
    let esq = ready(esq).await;
    let done = finished(&esq, "clinician", &job).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let zip = exports.dir.join("resumed.zip");
    let (code, summary) = decrypt(
        &esq,
        &exports.dir.join(format!("{job}.enc")),
        &exports.kek,
        &zip,
    )
    .await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(csv_rows(&zip).len() - 1, expected, "the whole answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_too_often_fails_and_expired_bundles_are_purged() {
    let exports = exports();
    let esq = ready(
        builder(&exports)
            .env("ESQ_EXPORTS__MAX_ATTEMPTS", "1")
            .start()
            .await,
    )
    .await;
    let ticket = http::ticket(&esq, "clinician", clinician_with_id()).await;
    let (_, queued) = submit(
        &esq,
        &ticket,
        json!({"sql": CA_ROWS, "reason": "keep 1 day", "retention_days": 1}),
    )
    .await;
    let job = queued["job"].as_str().unwrap().to_string();
    let done = finished(&esq, "clinician", &job).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");

    // A job whose runner died once, under max_attempts 1: FAILED, no bundle.
    let admin = esq.pg().connect().await;
    admin
        .execute(
            "INSERT INTO esq.export_jobs (id, requester, dataset, reason, request, scope, retention_days, state, claimed_by, heartbeat, attempts) \
             SELECT 'E-00000000000000000000000000000002', requester, dataset, reason, request, scope, retention_days, \
                    'ENCRYPTING', 'a dead esq', now() - interval '1 hour', 1 \
             FROM esq.export_jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap();
    let failed = finished(&esq, "clinician", "E-00000000000000000000000000000002").await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("interrupted"),
        "{failed}"
    );
    assert!(!exports
        .dir
        .join("E-00000000000000000000000000000002.enc")
        .exists());

    // Retention: past its window, `esq purge` deletes the bundle and marks the ledger.
    admin
        .execute(
            "UPDATE esq.export_ledger SET expires_at = now() - interval '1 minute' WHERE job = $1",
            &[&job],
        )
        .await
        .unwrap();
    let bundle = exports.dir.join(format!("{job}.enc"));
    assert!(bundle.exists());
    let run = esq_run(&esq, "purge", &["purge", "--json"]).await;
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["export_bundles"]["bundles"],
        json!([job]),
        "{report}"
    );
    assert!(!bundle.exists());
    let (_, after) = status(&esq, "clinician", &job).await;
    assert!(after["ledger"]["purged_at"].is_string(), "{after}");
    let download = http::client()
        .get(esq.url(&format!("/api/dta/export/{job}/bundle")))
        .bearer_auth(http::token("clinician"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::NOT_FOUND);
}

/// An export of a dataset linked to a subject dataset (staff_notes →
/// burial_2024) names the veterans it holds (red-team F5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_dataset_export_is_ledgered_under_the_subjects_it_links_to() {
    let exports = exports();
    let esq = ready(builder(&exports).start().await).await;
    let veteran: i64 = esq
        .pg()
        .connect()
        .await
        .query_one("SELECT min(veteran_id) FROM staff_notes", &[])
        .await
        .unwrap()
        .get(0);

    // No policy grants staff_notes: a steward's exception does.
    let asked = json!({"dataset": "staff_notes", "fields": ["veteran_id", "topic"], "aggregate": null,
                       "purpose": "treatment follow-up", "justification": "the family's visits",
                       "duration": "1d"});
    let (code, exception) = common::exceptions::ask(&esq, "clinician", asked).await;
    assert_eq!(code, StatusCode::CREATED, "{exception}");
    let id = exception["exception"].as_str().unwrap().to_string();
    let (code, approved) = common::exceptions::decide(&esq, "steward", &id, "approve", "ok").await;
    assert_eq!(code, StatusCode::OK, "{approved}");
    let ticket = http::ticket(
        &esq,
        "clinician",
        json!({"dataset": "staff_notes", "purpose": "treatment follow-up",
               "fields": ["veteran_id", "topic"], "exception": id}),
    )
    .await;
    let sql = format!("SELECT veteran_id, topic FROM staff_notes WHERE veteran_id = {veteran}");
    let (code, queued) = submit(&esq, &ticket, json!({"sql": sql, "reason": "follow-up"})).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{queued}");
    let job = queued["job"].as_str().unwrap().to_string();
    let done = finished(&esq, "clinician", &job).await;
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(done["ledger"]["subject_count"], 1, "{done}");

    let keys = esq.app().subject_keys.clone().expect("subject keys");
    let row = esq
        .pg()
        .connect()
        .await
        .query_one(
            "SELECT dataset, subject_hash FROM esq.export_subjects WHERE job = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "burial_2024");
    assert_eq!(
        row.get::<_, String>(1),
        keys.hash("burial_2024", &veteran.to_string())
    );
    let query = format!("dataset=burial_2024&subject={veteran}");
    let (code, found) = subject_http(&esq, "privacy", &query).await;
    assert_eq!(code, StatusCode::OK, "{found}");
    assert_eq!(found["exports"][0]["job"], job.as_str(), "{found}");
}

/// Replicas share the queue: a queued job is claimed by exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_is_claimed_once_by_concurrent_runners() {
    let exports = exports();
    let esq = ready(
        builder(&exports)
            .env("ESQ_EXPORTS__POLL", "1h")
            .start()
            .await,
    )
    .await;
    let ticket = http::ticket(&esq, "clinician", clinician_with_id()).await;
    // Stop the in-process runner from taking it: it polls once an hour
    // and has polled already.
    let (_, queued) = submit(&esq, &ticket, json!({"sql": CA_ROWS, "reason": "r"})).await;
    let job = queued["job"].as_str().unwrap().to_string();
    let config = &esq.app().config;
    let mut claims = Vec::new();
    for runner in 0..4 {
        let config = config.clone();
        claims.push(tokio::spawn(async move {
            let maintenance = esq::lifecycle::Maintenance::connect(&config).await.unwrap();
            esq::exports::job::claim_next(
                &maintenance.client,
                &format!("runner {runner}"),
                Duration::from_secs(60),
            )
            .await
            .unwrap()
            .map(|(job, _)| job.id)
        }));
    }
    let mut won = Vec::new();
    for claim in claims {
        won.extend(claim.await.unwrap());
    }
    assert_eq!(won, vec![job], "one runner, and only one, got the job");
}
