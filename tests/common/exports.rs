//! Export fixtures (issue 18) the export tests share: esq with exports on
//! in a directory of the test's own, the HTTP door's export endpoints, the
//! recipient's `esq export decrypt`, and reading a decrypted bundle.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::esq::Esq;
use super::lifecycle::esq_run;
use super::{http, Doors};

pub const ROWS: u64 = 2_000;

/// Exports on, in a directory of the test's own (kept by the TempDir).
pub struct Exports {
    _keep: tempfile::TempDir,
    pub dir: PathBuf,
    pub kek: PathBuf,
}

pub fn exports() -> Exports {
    let keep = tempfile::tempdir().expect("a temporary directory");
    let dir = keep.path().join("exports");
    let kek = keep.path().join("kek");
    esq::exports::kek::FileKek::generate(&kek).expect("a KEK");
    Exports {
        dir,
        kek,
        _keep: keep,
    }
}

pub fn builder(exports: &Exports) -> super::esq::EsqBuilder {
    Esq::builder()
        .lifecycle()
        .rows(ROWS)
        .k_only_counts()
        .env("ESQ_SENTINEL__ENABLED", "false")
        .env("ESQ_EXPORTS__DIR", exports.dir.display().to_string())
        .env("ESQ_EXPORTS__KEK_FILE", exports.kek.display().to_string())
        .env("ESQ_EXPORTS__POLL", "200ms")
        .env("ESQ_EXPORTS__STALE_AFTER", "2s")
}

pub async fn ready(esq: Esq) -> Esq {
    for _ in 0..300 {
        if esq.app().tombstones.is_read() {
            return esq;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("esq never read its tombstones");
}

/// A clinician's row-level ticket that includes the subject key.
pub fn clinician_with_id() -> Value {
    json!({"dataset": "burial_2024", "purpose": "treatment of the patient in my care",
           "fields": ["id", "state", "county", "burial_date"]})
}

pub const CA_ROWS: &str =
    "SELECT id, state, county, burial_date FROM burial_2024 WHERE state = 'CA' ORDER BY id";

pub async fn submit(esq: &(impl Doors + ?Sized), ticket: &str, body: Value) -> (StatusCode, Value) {
    let response = http::client()
        .post(esq.url("/api/dta/export"))
        .header("X-ESQ-Ticket", ticket)
        .json(&body)
        .send()
        .await
        .expect("the export request is answered");
    http::read(response).await
}

pub async fn status(esq: &(impl Doors + ?Sized), user: &str, job: &str) -> (StatusCode, Value) {
    let response = http::client()
        .get(esq.url(&format!("/api/dta/export/{job}")))
        .bearer_auth(http::token(user))
        .send()
        .await
        .expect("the status request is answered");
    http::read(response).await
}

/// Polls the job until it ends (a minute at most).
pub async fn finished(esq: &(impl Doors + ?Sized), user: &str, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = status(esq, user, job).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        if body["state"] == "COMPLETED" || body["state"] == "FAILED" {
            return body;
        }
        assert!(Instant::now() < deadline, "the job never ended: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the database until the job is in `state`.
pub async fn until_state(esq: &Esq, job: &str, state: &str) {
    let client = esq.pg().connect().await;
    for _ in 0..300 {
        let row = client
            .query_one("SELECT state FROM esq.export_jobs WHERE id = $1", &[&job])
            .await
            .unwrap();
        if row.get::<_, &str>(0) == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job} never reached {state}");
}

/// `esq export decrypt`; the CSV rows of the ZIP when it succeeded.
pub async fn decrypt(esq: &Esq, bundle: &Path, kek: &Path, out: &Path) -> (i32, Value) {
    let run = esq_run(
        esq,
        "decrypt",
        &[
            "export",
            "decrypt",
            "--in",
            &bundle.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--kek-file",
            &kek.display().to_string(),
        ],
    )
    .await;
    let summary = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.status, summary)
}

/// The records of `answer.csv` in a decrypted bundle (header first).
pub fn csv_rows(zip: &Path) -> Vec<Vec<String>> {
    let file = std::fs::File::open(zip).expect("the decrypted ZIP");
    let mut archive = zip::ZipArchive::new(file).expect("a ZIP");
    let answer = archive
        .by_name("answer.csv")
        .expect("answer.csv in the bundle");
    let rows = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(answer)
        .records()
        .map(|r| r.expect("a CSV record").iter().map(String::from).collect())
        .collect();
    rows
}

pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("the file")
        .permissions()
        .mode()
        & 0o777
}

pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("the file")))
}
