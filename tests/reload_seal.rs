//! Live reload and sealed serving end to end: a reload swaps users, catalog
//! and policies only after they validate and their tests pass (over HTTP and
//! SIGHUP, audited either way), sessions carry on through it, and in
//! production a bundle that differs from its seal is neither started nor
//! reloaded.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::time::Duration;

use common::esq::Esq;
use common::http;
use common::process::{esq_command, Run};
use common::Doors;
use serde_json::{json, Value};

fn append(path: &Path, text: &str) {
    let mut body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    body.push_str(text);
    std::fs::write(path, body).unwrap_or_else(|e| panic!("{e}"));
}

async fn post_reload(
    esq: &(impl common::Doors + ?Sized),
    user: &str,
) -> (reqwest::StatusCode, Value) {
    let response = http::client()
        .post(esq.url("/api/esq/reload"))
        .bearer_auth(http::token(user))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    http::read(response).await
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn reload_records(path: &Path) -> Vec<Value> {
    records(path)
        .into_iter()
        .filter(|r| r["kind"] == "reload")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_valid_policies_and_refuses_broken_ones() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policies = common::editable_policies(scratch.path());
    let esq = Esq::builder()
        .env("ESQ_POLICY__DIR", policies.display().to_string())
        .start()
        .await;
    let before = esq.app().bundle().hash.clone();
    let ticket = esq.foia_ticket().await;
    let session = common::pg_client::connect_with_ticket(&esq, &ticket).await;

    // Only operators reload.
    let (status, body) = post_reload(&esq, "journalist").await;
    assert_eq!(status, 403, "{body}");

    // A syntax error: refused, the bundle in force stays, and why is said.
    let foia = policies.join("foia.rego");
    let original = std::fs::read_to_string(&foia).unwrap_or_default();
    append(&foia, "\nthis is not rego\n");
    let (status, body) = post_reload(&esq, "admin").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "reload refused");
    assert!(
        body["reason"].as_str().unwrap_or("").contains("foia.rego"),
        "{body}"
    );
    assert_eq!(esq.app().bundle().hash, before);

    // A policy test that fails: refused too.
    std::fs::write(&foia, &original).unwrap_or_else(|e| panic!("{e}"));
    let failing = policies.join("zz_reload_test.rego");
    std::fs::write(
        &failing,
        "package esq.policies.zz_reload_test\n\nimport rego.v1\n\ntest_always_fails if {\n\tfalse\n}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = post_reload(&esq, "admin").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["reason"].as_str().unwrap_or("").contains("test"),
        "{body}"
    );
    assert_eq!(esq.app().bundle().hash, before);
    std::fs::remove_file(&failing).unwrap_or_else(|e| panic!("{e}"));

    // A valid change: in force at once, for the open session too.
    append(&foia, "\n# reviewed 2026-12-07\n");
    let (status, body) = post_reload(&esq, "admin").await;
    assert_eq!(status, 200, "{body}");
    let after = body["bundle"].as_str().unwrap_or("").to_string();
    assert_eq!(body["previous"], before.as_str());
    assert_ne!(after, before);
    assert_eq!(esq.app().bundle().hash, after);
    let rows = session
        .query(
            "SELECT state, count(*) FROM public.burial_2024 GROUP BY state",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("the session carries on through a reload: {e}"));
    assert!(!rows.is_empty());

    // Audited: two refusals then the reload, each naming the bundles; the
    // decision after it carries the new bundle hash.
    let audit = esq.audit_path();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reloads = reload_records(&audit);
    let outcomes: Vec<&str> = reloads
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["deny", "deny", "allow"], "{reloads:?}");
    assert_eq!(reloads[2]["detail"]["bundle"], after.as_str());
    assert_eq!(reloads[2]["user"], "admin");
    let last_decision = records(&audit)
        .into_iter()
        .rev()
        .find(|r| r["kind"] == "decision")
        .unwrap_or_default();
    assert_eq!(last_decision["bundle"], after.as_str(), "{last_decision}");
    let metrics = http::metrics(&esq).await;
    assert_eq!(
        http::metric(&metrics, "esq_reloads_total{outcome=\"deny\"}"),
        Some(2.0)
    );
    assert_eq!(
        http::metric(&metrics, "esq_reloads_total{outcome=\"allow\"}"),
        Some(1.0)
    );
}

/// The environment of a production esq over `esq`'s fixture: its own key,
/// seal and editable policies under `dir`.
fn production_env(esq: &Esq, dir: &Path) -> Vec<(String, String)> {
    let key = dir.join("signing.key");
    let run = Run::esq(&["keys", "generate", "--out", &key.display().to_string()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("BEGIN PUBLIC KEY"), "{}", run.stdout);
    let policies = common::editable_policies(dir);
    let mut env: Vec<(String, String)> = esq.env().to_vec();
    env.retain(|(k, _)| {
        ![
            "ESQ_POLICY__DIR",
            "ESQ_SIGNING__KEY_FILE",
            "ESQ_AUDIT__PATH",
        ]
        .contains(&k.as_str())
            && !k.starts_with("ESQ_SERVER__")
    });
    // The seal covers every override: the addresses and the audit log
    // too, so they are fixed here for `esq seal` and `esq serve` alike.
    env.extend([
        (
            "ESQ_SERVER__PG_LISTEN".into(),
            format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "ESQ_SERVER__HTTP_LISTEN".into(),
            format!("127.0.0.1:{}", common::free_port()),
        ),
        (
            "ESQ_AUDIT__PATH".into(),
            dir.join("audit.jsonl").display().to_string(),
        ),
        ("ESQ_SERVER__ENVIRONMENT".into(), "production".into()),
        ("ESQ_SIGNING__KEY_FILE".into(), key.display().to_string()),
        // The key seals must verify with, from outside the configuration.
        (
            "ESQ_SEAL_KEY".into(),
            dir.join("signing.key.pub").display().to_string(),
        ),
        (
            "ESQ_SIGNING__SEAL_FILE".into(),
            dir.join("esq.seal").display().to_string(),
        ),
        ("ESQ_POLICY__DIR".into(), policies.display().to_string()),
    ]);
    env
}

fn esq_with(env: &[(String, String)], args: &[&str]) -> Run {
    Run::of(
        esq_command()
            .arg("--config")
            .arg(common::shipped_config())
            .args(args)
            .envs(env.iter().cloned()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_serves_only_the_sealed_bundle() {
    let esq = Esq::builder().lifecycle().prepare().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let env = production_env(&esq, dir.path());
    let as_pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // Unsealed: production refuses to start.
    let run = esq_with(&env, &["serve"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("esq seal"), "{}", run.stderr);

    let run = esq_with(&env, &["seal"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("sealed"), "{}", run.stdout);
    assert_eq!(esq_with(&env, &["seal", "--check"]).status, 0);

    let mut process = esq.spawn_binary(&as_pairs).await;
    let ticket = http::ticket(&process, "journalist", common::tickets::foia_request("5m")).await;
    let (status, _) = http::query(&process, &ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, 200);

    // Tampered: the reload is refused (HTTP and SIGHUP) and the sealed
    // bundle keeps serving; a fresh start is refused.
    let foia = dir.path().join("policies/foia.rego");
    // The first release, kept to try a rollback later.
    let first_policy = std::fs::read_to_string(&foia).unwrap();
    let first_seal = std::fs::read(dir.path().join("esq.seal")).unwrap();
    append(&foia, "\n# an unreviewed edit\n");
    let (status, body) = post_reload(&process, "admin").await;
    assert_eq!(status, 422, "{body}");
    let reason = body["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("policy files") && reason.contains("sealed"),
        "{body}"
    );
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &process.pid().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        process.alive(),
        "SIGHUP does not stop esq:\n{}",
        process.log()
    );
    let (status, _) = http::query(&process, &ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, 200);
    let refusals = reload_records(&dir.path().join("audit.jsonl"));
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals.iter().all(|r| r["outcome"] == "deny"));
    assert!(refusals.iter().any(|r| r["user"] == "SIGHUP"));

    // (a second esq on the same sealed config would also meet the lock on
    // its audit log: the seal is checked first.)
    let run = esq_with(&env, &["serve"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("policy files"), "{}", run.stderr);
    assert_eq!(esq_with(&env, &["seal", "--check"]).status, 1);

    // Resealed after review (a later second): the reload goes through.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(esq_with(&env, &["seal"]).status, 0);
    let (status, body) = post_reload(&process, "admin").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["sealed_by"].is_string(), "{body}");

    // The first release's files and seal put back: its seal still
    // verifies, but seals only move forward.
    std::fs::write(&foia, &first_policy).unwrap();
    std::fs::write(dir.path().join("esq.seal"), &first_seal).unwrap();
    let (status, body) = post_reload(&process, "admin").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["reason"].as_str().unwrap_or("").contains("rollback"),
        "{body}"
    );

    // Whoever edits the configuration cannot re-anchor the seal: a key of
    // their own in [signing], and a seal made with it, is not the key esq
    // trusts (ESQ_SEAL_KEY).
    let evil = dir.path().join("evil.key");
    assert_eq!(
        Run::esq(&["keys", "generate", "--out", evil.to_str().unwrap()]).status,
        0
    );
    let with = |changes: &[(&str, &str)]| {
        let mut changed = env.clone();
        for (name, value) in changes {
            changed.retain(|(k, _)| k != name);
            if !value.is_empty() {
                changed.push((name.to_string(), value.to_string()));
            }
        }
        changed
    };
    let rewired = with(&[("ESQ_SIGNING__KEY_FILE", evil.to_str().unwrap())]);
    let run = esq_with(&rewired, &["seal"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("esq will not serve it"),
        "{}",
        run.stderr
    );
    let run = esq_with(&rewired, &["serve"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("does not verify"), "{}", run.stderr);
    // Nor does renaming the environment turn sealing off while a seal key
    // is given.
    assert_eq!(esq_with(&env, &["seal"]).status, 0);
    let run = esq_with(
        &with(&[("ESQ_SERVER__ENVIRONMENT", "development")]),
        &["serve"],
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("does not match"), "{}", run.stderr);
    // And production without a key from outside the configuration does not
    // serve at all.
    let run = esq_with(&with(&[("ESQ_SEAL_KEY", "")]), &["serve"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("ESQ_SEAL_KEY"), "{}", run.stderr);

    // A restart cannot roll back either: the audit log remembers the seal
    // esq served last. (`timeout`: a start that wrongly succeeds ends.)
    drop(process);
    std::fs::write(&foia, &first_policy).unwrap();
    std::fs::write(dir.path().join("esq.seal"), &first_seal).unwrap();
    let run = Run::of(
        std::process::Command::new("timeout")
            .arg("30")
            .arg(env!("CARGO_BIN_EXE_esq"))
            .arg("--config")
            .arg(common::shipped_config())
            .arg("serve")
            .env_remove("ESQ_CONFIG")
            .envs(env.iter().cloned()),
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("rollback"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_pgbench_drop_no_session_and_lose_no_record() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policies = common::editable_policies(scratch.path());
    let esq = Esq::builder()
        .rows(2_000)
        .pgbench()
        .env("ESQ_POLICY__DIR", policies.display().to_string())
        // Thousands of uses of one ticket a second: the sentinel would
        // (rightly) revoke it.
        .env("ESQ_SENTINEL__ENABLED", "false")
        .start()
        .await;
    let ticket = esq
        .ticket(
            "journalist",
            json!({"dataset": "pgbench_accounts", "purpose": "benchmark",
                   "fields": ["aid", "abalance"]}),
        )
        .await;
    let script = common::repo().join("bench/pgbench_select_only.sql");
    let bench = tokio::process::Command::new("pgbench")
        .args([
            "-n", "-c", "4", "-j", "2", "-T", "6", "-M", "extended", "-f",
        ])
        .arg(&script)
        .arg(esq.libpq_url("journalist", "journalist"))
        .env("PGOPTIONS", format!("-c esq.ticket={ticket}"))
        .output();
    let reloads = async {
        let foia = policies.join("foia.rego");
        let mut applied = 0;
        for round in 0..8 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            append(&foia, &format!("\n# round {round}\n"));
            let (status, body) = post_reload(&esq, "admin").await;
            assert_eq!(status, 200, "{body}");
            applied += 1;
        }
        applied
    };
    let (out, applied) = tokio::join!(bench, reloads);
    let out = out.unwrap_or_else(|e| panic!("pgbench runs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 0, "{stdout}");

    // Every statement pgbench ran is a record, in an intact chain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = esq.audit_path();
    let all = records(&audit);
    let allowed_selects = all
        .iter()
        .filter(|r| r["kind"] == "decision" && r["user"] == "journalist" && r["rows"].is_u64())
        .count() as u64;
    assert!(
        allowed_selects >= processed,
        "{allowed_selects} answered statements recorded for {processed} transactions"
    );
    assert_eq!(reload_records(&audit).len(), applied);
    let run = Run::esq(&["audit", "verify", &audit.display().to_string()]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let bundles: std::collections::BTreeSet<&str> =
        all.iter().filter_map(|r| r["bundle"].as_str()).collect();
    assert!(
        bundles.len() > applied / 2,
        "records name the bundles in force: {bundles:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_before_a_reload_runs_only_as_the_new_bundle_decides_it() {
    let esq = Esq::builder().start().await;
    let ticket = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let client = common::pg_client::connect_with_ticket(&esq, &ticket).await;
    let reads_county = client
        .prepare("SELECT state, county FROM burial_2024 WHERE county = $1")
        .await
        .unwrap();
    let reads_state = client
        .prepare("SELECT state FROM burial_2024 WHERE state = $1")
        .await
        .unwrap();
    client.query(&reads_county, &[&"Kern"]).await.unwrap();

    // The catalog no longer describes `county`: the guard now decides the
    // first statement differently, the second one the same.
    let catalog = esq.catalog_path().join("burial_2024.yaml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    let narrowed: String = text
        .lines()
        .filter(|l| !l.contains("name: county"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(narrowed, text, "the catalog describes county");
    std::fs::write(&catalog, narrowed).unwrap();
    let (status, body) = post_reload(&esq, "admin").await;
    assert_eq!(status, 200, "{body}");

    let refused = client
        .query(&reads_county, &[&"Kern"])
        .await
        .expect_err("decided before the reload, decided differently now");
    assert_eq!(common::pg_client::sqlstate(&refused), "0A000");
    assert!(
        refused
            .as_db_error()
            .is_some_and(|e| e.message().contains("a reload")),
        "{refused:?}"
    );
    client
        .query(&reads_state, &[&"CA"])
        .await
        .unwrap_or_else(|e| panic!("decided the same way, it still runs: {e}"));
    // Prepared again, it is decided by the bundle in force.
    let again = client
        .prepare("SELECT state, county FROM burial_2024 WHERE county = $1")
        .await;
    if let Ok(statement) = again {
        let rows = client.query(&statement, &[&"Kern"]).await;
        if let Ok(rows) = rows {
            assert!(rows
                .iter()
                .all(|r| r.columns().iter().all(|c| c.name() != "county")));
        }
    }
}

/// A production esq without a maintenance role serves a catalog naming no
/// subjects; a reload that would make it name some is refused (esq could
/// not hide a forgotten subject there), and so is a fresh start with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_does_not_take_subjects_it_cannot_hide_by_reload() {
    let esq = Esq::builder().prepare().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let env = production_env(&esq, dir.path());
    assert!(env.iter().all(|(k, _)| !k.starts_with("ESQ_MAINTENANCE__")));
    let catalog = esq.catalog_path().join("burial_2024.yaml");
    let with_subjects = std::fs::read_to_string(&catalog).unwrap();
    let without: String = with_subjects
        .lines()
        .filter(|l| {
            !l.starts_with("subject_key:")
                && !l.starts_with("links:")
                && !l.contains("dataset: staff_notes")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&catalog, without).unwrap();
    assert_eq!(esq_with(&env, &["seal"]).status, 0);
    let as_pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let process = esq.spawn_binary(&as_pairs).await;

    std::fs::write(&catalog, &with_subjects).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(esq_with(&env, &["seal"]).status, 0);
    let (status, body) = post_reload(&process, "admin").await;
    assert_eq!(status, 422, "{body}");
    let reason = body["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("[maintenance]") && reason.contains("burial_2024"),
        "{body}"
    );
    drop(process); // its audit log is free again
    let run = esq_with(&env, &["serve"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no [maintenance] role"),
        "{}",
        run.stderr
    );
}
