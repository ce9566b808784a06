//! Retention purge (issue 16, item 2), against real PostgreSQL: rows past
//! retention are hidden by both doors before any purge; `esq purge`
//! deletes exactly them, in batches, under read load; a killed run
//! resumes; two runs at once share the work without double counting; a
//! dry run deletes nothing; the schedule inside `esq serve` purges; bad
//! input is refused with nothing deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::esq::{Esq, EsqBuilder};
use common::process::Run;
use common::{http, pg_client, Doors};
use serde_json::{json, Value};

/// Rows of sample data: about one in seven is past the 10-year retention.
const ROWS: u64 = 2_000;

/// A lifecycle fixture with no scheduled purge, `batch_rows` per batch
/// and `pause` between batches.
fn fixture(batch_rows: u32, pause: &str) -> EsqBuilder {
    Esq::builder()
        .lifecycle()
        .rows(ROWS)
        .env("ESQ_LIFECYCLE__PURGE_SCHEDULE", "off")
        .env("ESQ_LIFECYCLE__PURGE_BATCH_ROWS", batch_rows.to_string())
        .env("ESQ_LIFECYCLE__PURGE_BATCH_PAUSE", pause)
        .env("ESQ_SENTINEL__ENABLED", "false")
}

/// `esq purge ARGS` on the fixture's configuration, with an audit log of
/// its own (`purge-<tag>.jsonl`: the in-process esq holds the fixture's).
fn purge(esq: &Esq, tag: &str, args: &[&str]) -> Command {
    let args: Vec<&str> = ["purge"].into_iter().chain(args.iter().copied()).collect();
    common::lifecycle::cli(esq, &purge_audit(esq, tag), &args)
}

fn purge_audit(esq: &Esq, tag: &str) -> PathBuf {
    esq.dir().join(format!("purge-{tag}.jsonl"))
}

/// `esq purge --json ARGS`, run to its end: the run and its JSON report.
async fn purge_json(esq: &Esq, tag: &str, args: &[&str]) -> (Run, Value) {
    let mut command = purge(esq, tag, &[args, &["--json"]].concat());
    let run = tokio::task::spawn_blocking(move || Run::of(&mut command))
        .await
        .unwrap();
    let report = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run, report)
}

/// The one dataset's report of a JSON answer.
fn burial(report: &Value) -> &Value {
    let datasets = report["datasets"].as_array().expect("datasets");
    assert_eq!(
        datasets.len(),
        1,
        "only burial_2024 has a retention: {report}"
    );
    assert_eq!(datasets[0]["dataset"], "burial_2024");
    &datasets[0]
}

/// Counted by the superuser, with the cutoff computed by PostgreSQL (not
/// by esq): (rows past retention, rows kept, cutoff).
async fn counts(esq: &Esq) -> (i64, i64, String) {
    let row = esq
        .pg()
        .connect()
        .await
        .query_one(
            "WITH c AS (SELECT ((now() AT TIME ZONE 'UTC')::date - interval '10 years')::date AS d)
             SELECT count(*) FILTER (WHERE burial_date < c.d), count(*) FILTER (WHERE burial_date >= c.d),
                    min(c.d)::text
             FROM public.burial_2024, c",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// `esq.purge_runs`: (id, status, rows_deleted, batches, dry_run).
async fn runs(esq: &Esq) -> Vec<(i64, String, i64, i32, bool)> {
    esq.pg()
        .connect()
        .await
        .query(
            "SELECT id, status, rows_deleted, batches, dry_run FROM esq.purge_runs ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn records(path: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// The burial dates a clinician's ticket sees through each door:
/// (PostgreSQL door, HTTP door), each sorted.
async fn visible(esq: &Esq, ticket: &str) -> (Vec<String>, Vec<String>) {
    let client = pg_client::connect_with_ticket(esq, ticket).await;
    let mut pg: Vec<String> = client
        .simple_query("SELECT burial_date FROM burial_2024")
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    let (status, rows) = http::query(esq, ticket, json!({"select": ["burial_date"]})).await;
    assert_eq!(status, 200, "{rows}");
    let mut http: Vec<String> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["burial_date"].as_str().expect("a date").to_string())
        .collect();
    pg.sort();
    http.sort();
    (pg, http)
}

/// Waits until no session holds an advisory lock (a killed purge's
/// session is gone).
async fn until_no_purge_lock(esq: &Esq) {
    let client = esq.pg().connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a purge lock outlived its process"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_hidden_then_purged_in_batches_under_read_load() {
    let esq = fixture(25, "20ms").start().await;
    // One row on the cutoff day (kept) and one the day before (purged).
    let (_, _, cutoff) = counts(&esq).await;
    esq.pg()
        .connect()
        .await
        .batch_execute(&format!(
            "INSERT INTO public.burial_2024
             SELECT id + 1000000 + n, name, ssn, dob, state, county, DATE '{cutoff}' - n, branch, cause_of_death
             FROM public.burial_2024, generate_series(0, 1) n WHERE id = 1"
        ))
        .await
        .unwrap();
    let (expired, kept, cutoff) = counts(&esq).await;
    assert!(
        expired > 50,
        "the sample has rows past retention: {expired}"
    );

    // Before any purge, neither door shows a row past retention.
    let ticket = esq
        .ticket("clinician", common::tickets::clinician_request())
        .await;
    let (pg_before, http_before) = visible(&esq, &ticket).await;
    assert!(!pg_before.is_empty());
    assert_eq!(pg_before, http_before);
    assert_eq!(pg_before[0], cutoff, "the cutoff day is kept and shown");
    assert!(pg_before.len() as i64 <= kept);

    // Read load through esq while the purge runs.
    let script = esq.dir().join("read.sql");
    std::fs::write(
        &script,
        "SELECT burial_date FROM burial_2024 WHERE state = 'CA' LIMIT 20;\n",
    )
    .unwrap();
    let bench = tokio::process::Command::new("pgbench")
        .args([
            "-n", "-c", "2", "-j", "1", "-T", "5", "-M", "extended", "-f",
        ])
        .arg(&script)
        .arg(esq.libpq_url("clinician", "clinician"))
        .env("PGOPTIONS", format!("-c esq.ticket={ticket}"))
        .output();
    let purged = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        purge_json(&esq, "load", &[]).await
    };
    let (bench, (run, report)) = tokio::join!(bench, purged);
    let bench = bench.expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );

    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let done = burial(&report);
    assert_eq!(done["status"], "finished", "{report}");
    assert_eq!(done["cutoff"], cutoff.as_str());
    assert_eq!(done["rows_deleted"], expired, "{report}");
    let batches = done["batches"].as_i64().unwrap();
    assert_eq!(
        batches,
        (expired + 24) / 25,
        "batches of at most 25 rows: {report}"
    );
    assert_eq!(counts(&esq).await, (0, kept, cutoff.clone()));

    // Only hidden rows went: both doors see what they saw before.
    assert_eq!(visible(&esq, &ticket).await, (pg_before, http_before));
    assert_eq!(
        runs(&esq).await,
        vec![(1, "finished".into(), expired, batches as i32, false)]
    );
    let audited = records(&purge_audit(&esq, "load"), "purge");
    assert_eq!(audited.len(), 1, "one record per dataset run: {audited:?}");
    let record = &audited[0];
    assert_eq!(record["dataset"], "burial_2024");
    assert_eq!(record["outcome"], "allow");
    assert_eq!(record["detail"]["rows_deleted"], expired);
    assert_eq!(record["detail"]["batches"], batches);
    assert_eq!(record["detail"]["cutoff"], cutoff.as_str());
    assert_eq!(record["detail"]["dry_run"], false);
    assert!(record["detail"]["seconds"].as_f64().unwrap() > 0.0);
    let path = purge_audit(&esq, "load").display().to_string();
    let verify = Run::esq(&["audit", "verify", &path]);
    assert_eq!(verify.status, 0, "{}{}", verify.stdout, verify.stderr);

    // A second run finds nothing left.
    let (run, report) = purge_json(&esq, "again", &[]).await;
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(burial(&report)["rows_deleted"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_purge_loses_nothing_and_the_next_run_finishes_it() {
    let esq = fixture(5, "100ms").prepare().await;
    let (expired, kept, cutoff) = counts(&esq).await;
    let mut child = purge(&esq, "killed", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if runs(&esq).await.first().is_some_and(|r| r.3 >= 1) {
            break;
        }
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "the purge ended early"
        );
        assert!(Instant::now() < deadline, "no batch committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    until_no_purge_lock(&esq).await;

    // Committed batches stay deleted, and the run's row says how many.
    let killed = runs(&esq).await;
    assert_eq!(killed.len(), 1, "{killed:?}");
    let (id, status, deleted, _, _) = killed[0].clone();
    assert_eq!(status, "running", "killed mid-run, before it could finish");
    assert!(deleted >= 5 && deleted < expired, "{deleted} of {expired}");
    assert_eq!(
        counts(&esq).await,
        (expired - deleted, kept, cutoff.clone())
    );

    let (run, report) = purge_json(&esq, "resumed", &[]).await;
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let done = burial(&report);
    assert_eq!(done["status"], "finished");
    assert_eq!(done["interrupted_runs"], json!([id]));
    assert_eq!(done["rows_deleted"], expired - deleted);
    assert_eq!(counts(&esq).await, (0, kept, cutoff));
    let after = runs(&esq).await;
    assert_eq!(
        after[0].1, "failed",
        "the interrupted run is marked: {after:?}"
    );
    assert_eq!(after[0].2, deleted);
    assert_eq!(after[1].1, "finished");
    assert_eq!(after[0].2 + after[1].2, expired);

    let text = Run::of(&mut purge(&esq, "text", &[]));
    assert_eq!(text.status, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .contains("burial_2024: deleted 0 rows past retention (burial_date before"),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_purges_at_once_share_the_work_without_double_counting() {
    let esq = fixture(10, "100ms").prepare().await;
    let (expired, kept, cutoff) = counts(&esq).await;
    let (a, b) = tokio::join!(purge_json(&esq, "a", &[]), purge_json(&esq, "b", &[]));
    for (run, _) in [&a, &b] {
        assert_eq!(run.status, 0, "neither fails: {}{}", run.stdout, run.stderr);
    }
    let (a, b) = (burial(&a.1).clone(), burial(&b.1).clone());
    let mut statuses = [a["status"].clone(), b["status"].clone()];
    statuses.sort_by_key(|s| s.to_string());
    assert_eq!(statuses, [json!("finished"), json!("skipped")], "{a}\n{b}");
    let skipped = if a["status"] == "skipped" { &a } else { &b };
    assert_eq!(skipped["error"], "another esq is purging this dataset");
    assert_eq!(
        a["rows_deleted"].as_i64().unwrap() + b["rows_deleted"].as_i64().unwrap(),
        expired
    );
    assert_eq!(counts(&esq).await, (0, kept, cutoff));
    let recorded = runs(&esq).await;
    assert_eq!(
        recorded.len(),
        1,
        "a skipped dataset starts no run: {recorded:?}"
    );
    assert_eq!(recorded[0].2, expired);
    let mut audited: Vec<String> = records(&purge_audit(&esq, "a"), "purge")
        .into_iter()
        .chain(records(&purge_audit(&esq, "b"), "purge"))
        .map(|r| {
            r["detail"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    audited.sort();
    assert_eq!(audited, ["finished", "skipped"], "both runs are audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_and_deletes_nothing() {
    let esq = fixture(10, "1ms").prepare().await;
    let before = counts(&esq).await;
    let (run, report) = purge_json(&esq, "dry", &["--dataset", "burial_2024", "--dry-run"]).await;
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let done = burial(&report);
    assert_eq!(done["dry_run"], true);
    assert_eq!(done["rows_past_retention"], before.0);
    assert_eq!(done["rows_deleted"], 0);
    assert_eq!(done["batches"], 0);
    assert_eq!(counts(&esq).await, before);
    assert_eq!(runs(&esq).await, vec![(1, "finished".into(), 0, 0, true)]);
    let audited = records(&purge_audit(&esq, "dry"), "purge");
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["detail"]["dry_run"], true);
    assert_eq!(audited[0]["detail"]["rows_past_retention"], before.0);

    let text = Run::of(&mut purge(&esq, "dry-text", &["--dry-run"]));
    assert_eq!(text.status, 0, "{}", text.stderr);
    let expected = format!("burial_2024: dry run: {} rows past retention", before.0);
    assert!(text.stdout.contains(&expected), "{}", text.stdout);
    assert_eq!(counts(&esq).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_purge_inside_serve_deletes_and_counts() {
    let mut esq = fixture(50, "5ms")
        .env("ESQ_LIFECYCLE__PURGE_SCHEDULE", "every 1s")
        .prepare()
        .await;
    let (expired, kept, cutoff) = counts(&esq).await;
    assert!(expired > 0);
    esq.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let purged = http::metric_sum(&esq, "esq_purged_rows").await;
        let audited: i64 = records(&esq.audit_path(), "purge")
            .iter()
            .map(|r| r["detail"]["rows_deleted"].as_i64().unwrap())
            .sum();
        if purged as i64 == expired && audited == expired {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{purged} rows counted and {audited} audited of {expired}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts(&esq).await, (0, kept, cutoff));
    let record = records(&esq.audit_path(), "purge").remove(0);
    assert_eq!(record["detail"]["trigger"], "schedule");
    assert_eq!(record["outcome"], "allow");
    assert!(http::metric_sum(&esq, "esq_purge_seconds_count").await >= 1.0);
    assert_eq!(http::metric_sum(&esq, "esq_purge_failures").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_fix_with_nothing_deleted() {
    let esq = fixture(10, "1ms").start().await;
    let before = counts(&esq).await;
    let refused = |args: &[&str], env: &[(&str, Option<&str>)], status: i32, says: &[&str]| {
        let mut command = purge(&esq, "bad", args);
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let run = Run::of(&mut command);
        assert_eq!(run.status, status, "{args:?}: {}{}", run.stdout, run.stderr);
        for text in says {
            assert!(
                run.stderr.contains(text),
                "{args:?} does not say {text:?}: {}",
                run.stderr
            );
        }
    };
    refused(
        &["--dataset", "nope"],
        &[],
        2,
        &["no dataset \"nope\"", "burial_2024"],
    );
    refused(
        &["--dataset", "staff_notes"],
        &[],
        2,
        &["\"staff_notes\" has no retention"],
    );
    let no_maintenance = [
        ("ESQ_MAINTENANCE__URL", None),
        ("ESQ_MAINTENANCE__PASSWORD", None),
    ];
    refused(&[], &no_maintenance, 2, &["no [maintenance] url"]);
    let served = esq.audit_path().display().to_string();
    let in_use = [("ESQ_AUDIT__PATH", Some(served.as_str()))];
    refused(
        &[],
        &in_use,
        2,
        &["already being written", "purge_schedule", "ESQ_AUDIT__PATH"],
    );

    let admin = esq.pg().connect().await;
    let role = esq.upstream().maintenance_role.clone().unwrap();
    admin
        .batch_execute(&format!("REVOKE DELETE ON public.burial_2024 FROM {role}"))
        .await
        .unwrap();
    let grant = format!("GRANT SELECT, DELETE ON public.burial_2024 TO {role}");
    refused(&[], &[], 1, &[grant.as_str(), "nothing was deleted"]);
    let dry = Run::of(&mut purge(&esq, "dry", &["--dry-run"]));
    assert_eq!(dry.status, 0, "a dry run only reads: {}", dry.stderr);

    admin
        .batch_execute("DROP SCHEMA esq CASCADE")
        .await
        .unwrap();
    refused(&[], &[], 1, &["esq migrate"]);
    assert_eq!(counts(&esq).await, before);
    assert!(records(&purge_audit(&esq, "bad"), "purge").is_empty());
}
