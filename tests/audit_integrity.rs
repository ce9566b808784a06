//! The audit log's integrity beyond the hash chain: signed checkpoints
//! written by a real `AuditLog` reveal a cut end, a rewritten tail and a
//! forged checkpoint (in the library and through `esq audit verify
//! --checkpoints --pubkey`), and one writer per log — a second open, and a
//! second `esq serve` on the same `audit.path`, are refused naming the log
//! and the holder's pid while the first keeps a valid chain.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{esq_command, Run};
use common::Doors;
use esq::audit::checkpoint::{self, Checkpoint};
use esq::audit::verify::{verify_with_checkpoints, VerifyReport};
use esq::audit::{
    files, AuditEvent, AuditKind, AuditLog, AuditSink, CheckpointOptions, LogOptions, SyncPolicy,
};
use esq::metrics::{Door, Metrics};
use esq::signing::{PublicKey, SigningKey};
use serde_json::Value;

const RECORDS: u64 = 23;
const EVERY: u64 = 5;

/// A log of [`RECORDS`] records with a checkpoint every [`EVERY`] and one
/// at shutdown, and the public key file that checks them.
struct SignedLog {
    dir: tempfile::TempDir,
    key: Arc<SigningKey>,
    pubkey: PathBuf,
}

impl SignedLog {
    fn base(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn checkpoints(&self) -> PathBuf {
        files::checkpoints_path(&self.base())
    }

    fn options(&self) -> LogOptions {
        LogOptions {
            rotate_bytes: 4096,
            sync: SyncPolicy::EveryBatch,
            checkpoints: Some(CheckpointOptions {
                key: self.key.clone(),
                interval: Duration::from_secs(3600),
                records: EVERY,
                copy: None,
            }),
        }
    }

    fn public(&self) -> PublicKey {
        PublicKey::load(&self.pubkey).unwrap()
    }

    fn files(&self) -> Vec<PathBuf> {
        files::log_files(&self.base()).unwrap()
    }

    /// The records, one line each, across the rotated files.
    fn lines(&self) -> Vec<String> {
        self.files()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn verify(&self, files: &[PathBuf]) -> VerifyReport {
        verify_with_checkpoints(files, &self.checkpoints(), &self.public()).unwrap()
    }
}

fn event(user: &str) -> AuditEvent<'_> {
    AuditEvent {
        fingerprint: esq::audit::fingerprint(user),
        ..AuditEvent::event(AuditKind::Decision, Door::http, user)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn signed_log() -> SignedLog {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("esq.key");
    let key = SigningKey::generate();
    let pubkey = key.write(&key_file).unwrap();
    let log = SignedLog {
        dir,
        key: Arc::new(key),
        pubkey,
    };
    let audit = AuditLog::open(&log.base(), &log.options(), &Metrics::new()).unwrap();
    audit.set_bundle("b0b0");
    let rt = runtime();
    for i in 0..RECORDS {
        let seq = audit.record(&event(&format!("user-{i}"))).unwrap();
        // One record per batch: checkpoints fall exactly every EVERY.
        rt.block_on(audit.durable(seq)).unwrap();
    }
    drop(audit);
    log
}

/// `esq audit verify --json FILES --checkpoints F --pubkey P`.
fn verify_cli(files: &[PathBuf], checkpoints: &Path, pubkey: &Path) -> (i32, Value, String) {
    let run = Run::of(
        esq_command()
            .args(["audit", "verify", "--json"])
            .args(files)
            .arg("--checkpoints")
            .arg(checkpoints)
            .arg("--pubkey")
            .arg(pubkey),
    );
    let report = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.status, report, run.stderr)
}

fn problem(report: &VerifyReport) -> String {
    report
        .checkpoints
        .as_ref()
        .and_then(|c| c.problem.as_ref())
        .map(|p| p.what.clone())
        .unwrap_or_default()
}

/// Writes `lines` as one log file in a fresh directory.
fn write_copy(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn an_untouched_log_verifies_with_its_checkpoints() {
    let log = signed_log();
    let written = checkpoint::read(&log.checkpoints()).unwrap();
    assert_eq!(
        written.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [5, 10, 15, 20, 23],
        "every {EVERY} records and at shutdown"
    );
    assert!(log.files().len() > 1, "the log rotated");
    assert!(
        log.lines().iter().all(|l| l.contains(r#""bundle":"b0b0""#)),
        "every record names the bundle"
    );

    let report = log.verify(&log.files());
    assert!(report.ok(), "{report:?}");
    let found = report.checkpoints.unwrap();
    assert_eq!(found.matched, 5);
    assert_eq!(found.newest_seq, Some(RECORDS));
    assert_eq!(found.uncovered, 0);

    let (status, json, stderr) = verify_cli(&log.files(), &log.checkpoints(), &log.pubkey);
    assert_eq!(status, 0, "{json} {stderr}");
    assert_eq!(json["checkpoints"]["count"], 5);
    assert_eq!(json["checkpoints"]["newest_seq"], RECORDS);
    assert_eq!(json["checkpoints"]["key_id"], log.public().id());
    assert!(json["checkpoints"]["problem"].is_null(), "{json}");

    // The text summary says so too.
    let run = Run::of(
        esq_command()
            .args(["audit", "verify"])
            .args(log.files())
            .arg("--checkpoints")
            .arg(log.checkpoints())
            .arg("--pubkey")
            .arg(&log.pubkey),
    );
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(run.stdout.contains("5 checkpoint(s)"), "{}", run.stdout);
}

#[test]
fn a_cut_end_is_named_even_though_the_chain_still_holds() {
    let log = signed_log();
    let work = tempfile::tempdir().unwrap();
    let lines = log.lines();
    let cut = write_copy(work.path(), "audit.jsonl", &lines[..lines.len() - 4]);

    let report = log.verify(std::slice::from_ref(&cut));
    assert!(report.problem.is_none(), "the chain alone cannot tell");
    assert!(!report.ok());
    let what = problem(&report);
    assert!(
        what.starts_with(
            "records 20..23 are missing: the log ends at seq 19 but the checkpoint of"
        ) && what.ends_with("covers seq 23"),
        "{what}"
    );

    let (status, json, _) = verify_cli(std::slice::from_ref(&cut), &log.checkpoints(), &log.pubkey);
    assert_eq!(status, 1, "{json}");
    assert!(json["checkpoints"]["problem"]["what"]
        .as_str()
        .unwrap()
        .starts_with("records 20..23 are missing"));
    // Without the checkpoints the cut goes unnoticed: that is their point.
    let run = Run::of(esq_command().args(["audit", "verify"]).arg(&cut));
    assert_eq!(run.status, 0, "{}", run.stdout);
}

#[test]
fn a_rewritten_tail_is_named_at_the_first_checkpoint_after_the_edit() {
    let log = signed_log();
    let work = tempfile::tempdir().unwrap();
    let mut lines = log.lines();
    // Record 7 edited, and every later prev recomputed: a chain that holds.
    lines[6] = lines[6].replace("\"user-6\"", "\"someone-else\"");
    assert!(lines[6].contains("someone-else"));
    for i in 7..lines.len() {
        let old_prev = serde_json::from_str::<Value>(&lines[i]).unwrap()["prev"]
            .as_str()
            .unwrap()
            .to_string();
        let new_prev = esq::audit::record::hash_line(lines[i - 1].as_bytes());
        lines[i] = lines[i].replacen(&old_prev, &new_prev, 1);
    }
    let rewritten = write_copy(work.path(), "audit.jsonl", &lines);
    let run = Run::of(esq_command().args(["audit", "verify"]).arg(&rewritten));
    assert_eq!(run.status, 0, "the chain alone holds: {}", run.stdout);

    let report = log.verify(std::slice::from_ref(&rewritten));
    let what = problem(&report);
    assert!(
        what.starts_with("record 10 was rewritten: its hash differs from the checkpoint of")
            && what.contains("records up to seq 5 match"),
        "{what}"
    );
    let (status, json, _) = verify_cli(&[rewritten], &log.checkpoints(), &log.pubkey);
    assert_eq!(status, 1, "{json}");
    assert_eq!(json["checkpoints"]["problem"]["seq"], 10);
}

#[test]
fn a_checkpoint_signed_by_another_key_is_a_forgery() {
    let log = signed_log();
    let lines = log.lines();
    let last_hash = esq::audit::record::hash_line(lines[lines.len() - 1].as_bytes());
    // A well-formed checkpoint of the real end, by someone else's key.
    let other = SigningKey::generate();
    let forged = Checkpoint::sign(&other, "esq audit audit.jsonl", RECORDS, &last_hash);
    let mut text = std::fs::read_to_string(log.checkpoints()).unwrap();
    text.push_str(&serde_json::to_string(&forged).unwrap());
    text.push('\n');
    std::fs::write(log.checkpoints(), text).unwrap();

    let report = log.verify(&log.files());
    assert!(report.problem.is_none());
    let expected = format!(
        "checkpoint at {} line 6 is not signed by key {}",
        log.checkpoints().display(),
        log.public().id()
    );
    assert!(
        problem(&report).starts_with(&expected),
        "{}",
        problem(&report)
    );
    let (status, json, _) = verify_cli(&log.files(), &log.checkpoints(), &log.pubkey);
    assert_eq!(status, 1, "{json}");
    assert_eq!(json["checkpoints"]["problem"]["line"], 6);

    // Checked with the wrong public key, every checkpoint is foreign.
    let wrong = tempfile::tempdir().unwrap();
    let wrong_pub = other.write(&wrong.path().join("other.key")).unwrap();
    let (status, json, _) = verify_cli(&log.files(), &log.checkpoints(), &wrong_pub);
    assert_eq!(status, 1, "{json}");
    assert_eq!(json["checkpoints"]["problem"]["line"], 1);
}

#[test]
fn checkpoints_and_pubkey_go_together_and_unreadable_input_exits_2() {
    let log = signed_log();
    let files = log.files();
    let alone = Run::of(
        esq_command()
            .args(["audit", "verify"])
            .args(&files)
            .arg("--checkpoints")
            .arg(log.checkpoints()),
    );
    assert_eq!(alone.status, 2, "{}", alone.stderr);
    let alone = Run::of(
        esq_command()
            .args(["audit", "verify"])
            .args(&files)
            .arg("--pubkey")
            .arg(&log.pubkey),
    );
    assert_eq!(alone.status, 2, "{}", alone.stderr);
    let missing = log.dir.path().join("missing.checkpoints");
    let (status, _, stderr) = verify_cli(&files, &missing, &log.pubkey);
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("missing.checkpoints"), "{stderr}");
}

#[test]
fn a_second_open_is_refused_while_the_first_keeps_a_valid_chain() {
    let log = signed_log();
    let metrics = Metrics::new();
    let first = AuditLog::open(&log.base(), &log.options(), &metrics).unwrap();
    let second = AuditLog::open(&log.base(), &log.options(), &metrics).map(|_| ());
    let error = second
        .expect_err("a second writer on the same log")
        .to_string();
    assert!(error.contains(&log.base().display().to_string()), "{error}");
    assert!(
        error.contains(&format!("pid {}", std::process::id())),
        "{error}"
    );
    let rt = runtime();
    for i in 0..7 {
        let seq = first.record(&event(&format!("more-{i}"))).unwrap();
        rt.block_on(first.durable(seq)).unwrap();
    }
    drop(first);
    let report = log.verify(&log.files());
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, RECORDS + 7);
    assert_eq!(report.checkpoints.unwrap().uncovered, 0);
}

/// `esq serve` on free ports with `env`; its stderr goes to `log`.
struct Served {
    child: Child,
    http: SocketAddr,
    log: PathBuf,
}

impl Doors for Served {
    fn pg_addr(&self) -> SocketAddr {
        unreachable!("the PostgreSQL door is not used here")
    }
    fn http_addr(&self) -> SocketAddr {
        self.http
    }
    fn metrics_addr(&self) -> SocketAddr {
        unreachable!("the metrics are not read here")
    }
    fn database(&self) -> &str {
        "esq_demo"
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(env: &[(&str, String)], log: PathBuf) -> Served {
    let http: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let pg: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let child = esq_command()
        .arg("--config")
        .arg(common::shipped_config())
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("ESQ_SERVER__PG_LISTEN", pg.to_string())
        .env("ESQ_SERVER__HTTP_LISTEN", http.to_string())
        .env("ESQ_METRICS__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Served { child, http, log }
}

impl Served {
    /// Waits for `/healthz` (the upstream is not needed to issue tickets).
    async fn wait_until_serving(&mut self) {
        let client = common::http::client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = client.get(self.url("/healthz")).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                matches!(self.child.try_wait(), Ok(None)),
                "esq serve exited:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "esq serve never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn issue_ticket(&self) {
        let (status, answer) =
            common::http::issue(self, "journalist", common::tickets::foia_request("5m")).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_esq_serve_on_the_same_log_exits_naming_the_log_and_pid() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let key_file = dir.path().join("esq.key");
    let pubkey = SigningKey::generate().write(&key_file).unwrap();
    // Nothing listens upstream: serving and issuing tickets need no database.
    let upstream = format!(
        "postgres://esq_service@127.0.0.1:{}/esq_demo",
        common::free_port()
    );
    let env = [
        ("ESQ_AUDIT__PATH", audit.display().to_string()),
        ("ESQ_UPSTREAM__URL", upstream),
        ("ESQ_SIGNING__KEY_FILE", key_file.display().to_string()),
        ("ESQ_AUDIT__CHECKPOINT_RECORDS", "2".to_string()),
    ];
    let mut first = serve(&env, dir.path().join("first.log"));
    first.wait_until_serving().await;
    first.issue_ticket().await;

    let second = esq_command()
        .arg("--config")
        .arg(common::shipped_config())
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env(
            "ESQ_SERVER__PG_LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env(
            "ESQ_SERVER__HTTP_LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second esq served: {stderr}");
    assert!(
        stderr.contains(&format!(
            "the audit log {} is already being written by another esq (pid {})",
            audit.display(),
            first.child.id()
        )),
        "{stderr}"
    );

    // The first carries on, and its log (with checkpoints) verifies.
    first.issue_ticket().await;
    first.issue_ticket().await;
    assert!(
        matches!(first.child.try_wait(), Ok(None)),
        "the first still runs"
    );
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while matches!(first.child.try_wait(), Ok(None)) {
        assert!(Instant::now() < deadline, "esq did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let files = files::log_files(&audit).unwrap();
    let (status, json, stderr) = verify_cli(&files, &files::checkpoints_path(&audit), &pubkey);
    assert_eq!(status, 0, "{json} {stderr}");
    assert!(json["records"].as_u64().unwrap() >= 3, "{json}");
    assert_eq!(
        json["checkpoints"]["uncovered"], 0,
        "the shutdown checkpoint covers the end: {json}"
    );
}

/// `esq evidence` on the log of `log` (signed with its key): exit status,
/// stderr and the zip's files.
fn evidence(log: &SignedLog) -> (i32, String, Vec<(String, Vec<u8>)>) {
    evidence_with(log, &[])
}

/// As [`evidence`], with more environment variables.
fn evidence_with(log: &SignedLog, env: &[(&str, &Path)]) -> (i32, String, Vec<(String, Vec<u8>)>) {
    use std::io::Read;
    let out = log.dir.path().join("evidence.zip");
    let _ = std::fs::remove_file(&out);
    let run = Run::of(
        esq_command()
            .arg("--config")
            .arg(common::shipped_config())
            .args(["evidence", "--since", "1h", "--out"])
            .arg(&out)
            .env("ESQ_AUDIT__PATH", log.base())
            .env("ESQ_SIGNING__KEY_FILE", log.dir.path().join("esq.key"))
            .envs(env.iter().map(|(k, v)| (*k, *v))),
    );
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    let files = (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            (file.name().unwrap().to_string(), bytes)
        })
        .collect();
    (run.status, run.stderr, files)
}

fn json_of(files: &[(String, Vec<u8>)], name: &str) -> Value {
    let (_, bytes) = files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn the_evidence_bundle_carries_and_checks_the_checkpoints() {
    let log = signed_log();
    let (status, stderr, files) = evidence(&log);
    assert_eq!(status, 0, "{stderr}");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"audit/audit.checkpoints"), "{names:?}");
    assert!(names.contains(&"signing/public.pem"), "{names:?}");
    let manifest = json_of(&files, "manifest.json");
    assert_eq!(manifest["chain_intact"], true, "{manifest}");
    assert_eq!(manifest["signing_key_id"], log.public().id());
    let verification = json_of(&files, "audit-verification.json");
    assert_eq!(
        verification["report"]["checkpoints"]["newest_seq"], RECORDS,
        "{verification}"
    );
    let (_, pem) = files
        .iter()
        .find(|(n, _)| n == "signing/public.pem")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(pem), log.public().to_pem());

    // The newest file removed: the chain holds, the checkpoints do not.
    let newest = log.files().pop().unwrap();
    std::fs::remove_file(&newest).unwrap();
    let (status, stderr, files) = evidence(&log);
    assert_eq!(status, 1, "{stderr}");
    assert_eq!(json_of(&files, "manifest.json")["chain_intact"], false);
    let verification = json_of(&files, "audit-verification.json");
    let what = verification["report"]["checkpoints"]["problem"]["what"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(what.contains("are missing"), "{verification}");
}

/// esq itself will not append to a log that ends before its own signed
/// checkpoints: the new records would hide the cut under a valid tail.
#[test]
fn esq_will_not_continue_a_log_cut_or_rewritten_below_its_checkpoints() {
    let log = signed_log();
    let newest = log.files().last().unwrap().clone();
    let original = std::fs::read_to_string(&newest).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 2, "{original}");

    // The last record (seq 23, checkpointed at shutdown) removed.
    let cut: String = lines[..lines.len() - 1]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&newest, cut).unwrap();
    let refused = AuditLog::open(&log.base(), &log.options(), &Metrics::new())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("covers record 23, but the log ends at record 22")
            && refused.contains("will not continue"),
        "{refused}"
    );

    // The last record rewritten in place (same seq, other content).
    let mut rewritten: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let last = rewritten.len() - 1;
    rewritten[last] = rewritten[last].replace("user-22", "user-XX");
    assert_ne!(rewritten[last], lines[last]);
    std::fs::write(&newest, rewritten.join("\n") + "\n").unwrap();
    let refused = AuditLog::open(&log.base(), &log.options(), &Metrics::new())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("the log's end was rewritten"), "{refused}");

    // Restored, it opens and continues.
    std::fs::write(&newest, original).unwrap();
    assert!(AuditLog::open(&log.base(), &log.options(), &Metrics::new()).is_ok());
}

/// A log cut together with the checkpoints beside it still fails against
/// the copy (another disk): the evidence bundle says so.
#[test]
fn the_evidence_bundle_checks_the_checkpoint_copy_too() {
    let log = signed_log();
    let copy = log.dir.path().join("copy.checkpoints");
    std::fs::copy(log.checkpoints(), &copy).unwrap();
    // The newest file gone, and the local checkpoints trimmed to match.
    let newest = log.files().pop().unwrap();
    std::fs::remove_file(&newest).unwrap();
    let left = log.lines().len() as u64;
    let trimmed: String = std::fs::read_to_string(log.checkpoints())
        .unwrap()
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
                <= left
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(log.checkpoints(), trimmed).unwrap();
    let (status, stderr, _) = evidence(&log);
    assert_eq!(status, 0, "without the copy the cut goes unseen: {stderr}");

    let (status, stderr, files) = evidence_with(&log, &[("ESQ_AUDIT__CHECKPOINT_COPY", &copy)]);
    assert_eq!(status, 1, "{stderr}");
    assert_eq!(json_of(&files, "manifest.json")["chain_intact"], false);
    let verification = json_of(&files, "audit-verification.json");
    let what = verification["copy_report"]["checkpoints"]["problem"]["what"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(what.contains("are missing"), "{verification}");
}
