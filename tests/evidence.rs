//! `esq evidence`: the bundle holds the audit files of the period (which
//! verify), the whole chain's verification, SSP.json, the config, and a
//! manifest whose SHA-256s match every file; a tampered log still gets a
//! bundle, says so, and exits 1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::io::Read;
use std::path::Path;

use common::esq::Esq;
use common::pg_client::psql;
use common::process::esq_command;
use common::Doors;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn evidence(esq: &Esq, since: &str, out: &Path) -> (i32, String) {
    let run = esq_command()
        .arg("--config")
        .arg(common::shipped_config())
        .args(["evidence", "--since", since, "--out"])
        .arg(out)
        .envs(esq.env().iter().cloned())
        .output()
        .expect("esq runs");
    (
        run.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

fn entries(zip_path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip_path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            (file.name().unwrap().to_string(), bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_bundle_is_complete_and_self_checking() {
    let esq = Esq::builder().start().await;
    let ticket = esq.foia_ticket().await;
    let url = esq.libpq_url("journalist", "journalist");
    let (status, _, stderr) = psql(
        &url,
        Some(&format!("-c esq.ticket={ticket}")),
        &[
            "SELECT ssn FROM burial_2024",
            "SELECT state, count(*) FROM burial_2024 GROUP BY state",
        ],
    )
    .await;
    assert_eq!(status, 0, "{stderr}");
    let records = esq.audit_records().len();
    assert!(records >= 2, "{records} records");

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.zip");
    let (code, stderr) = evidence(&esq, "1h", &bundle);
    assert_eq!(code, 0, "{stderr}");
    let files = entries(&bundle);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "audit/audit.jsonl",
        "audit-verification.json",
        "SSP.json",
        "config/esq.toml",
        "manifest.json",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let manifest: Value =
        serde_json::from_slice(&files.iter().find(|(n, _)| n == "manifest.json").unwrap().1)
            .unwrap();
    assert_eq!(manifest["chain_intact"], true);
    let listed = manifest["files"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        files.len() - 1,
        "every file but the manifest is listed"
    );
    for entry in listed {
        let name = entry["name"].as_str().unwrap();
        let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(
            entry["sha256"].as_str().unwrap(),
            hex::encode(Sha256::digest(bytes)),
            "{name}"
        );
    }
    assert_eq!(manifest["policies_sha256"].as_str().unwrap().len(), 64);
    // The bundle every record names, as served.
    let bundle_hash = esq.app().bundle().hash.clone();
    assert_eq!(manifest["bundle"]["hash"], bundle_hash.as_str());
    assert!(esq
        .audit_records()
        .iter()
        .all(|r| r["bundle"] == bundle_hash.as_str()));
    let ssp: Value =
        serde_json::from_slice(&files.iter().find(|(n, _)| n == "SSP.json").unwrap().1).unwrap();
    assert!(ssp["controls"].as_array().is_some_and(|c| !c.is_empty()));

    // The audit file in the bundle verifies on its own (esq audit verify).
    let copy = dir.path().join("audit.jsonl");
    std::fs::write(
        &copy,
        &files
            .iter()
            .find(|(n, _)| n == "audit/audit.jsonl")
            .unwrap()
            .1,
    )
    .unwrap();
    let verify = esq_command()
        .args(["audit", "verify"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // A period after the last record holds no audit file.
    let (code, _) = evidence(&esq, "2999-01-01T00:00:00Z", &dir.path().join("empty.zip"));
    assert_eq!(code, 0);
    let later = entries(&dir.path().join("empty.zip"));
    assert!(!later.iter().any(|(n, _)| n.starts_with("audit/")));

    // Tampering: the bundle is still written, and says the chain is broken.
    let log = esq.audit_path();
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("journalist", "journalisT", 1)).unwrap();
    let (code, stderr) = evidence(&esq, "1h", &dir.path().join("tampered.zip"));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("BROKEN"), "{stderr}");
    let tampered = entries(&dir.path().join("tampered.zip"));
    let verification: Value = serde_json::from_slice(
        &tampered
            .iter()
            .find(|(n, _)| n == "audit-verification.json")
            .unwrap()
            .1,
    )
    .unwrap();
    assert!(
        !verification["report"]["problem"].is_null(),
        "{verification}"
    );
}

#[test]
fn a_bad_period_or_output_is_refused_with_a_clear_error() {
    let run = |args: &[&str]| {
        esq_command()
            .arg("--config")
            .arg(common::shipped_config())
            .arg("evidence")
            .args(args)
            .output()
            .expect("esq runs")
    };
    let bad_since = run(&["--since", "last tuesday", "--out", "/tmp/x.zip"]);
    assert_eq!(bad_since.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_since.stderr);
    assert!(
        stderr.contains("neither an RFC 3339 time nor a duration"),
        "{stderr}"
    );
    let bad_out = run(&["--since", "1h", "--out", "/nonexistent-dir/bundle.zip"]);
    assert_eq!(bad_out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_out.stderr);
    assert!(
        stderr.contains("cannot write /nonexistent-dir/bundle.zip"),
        "{stderr}"
    );
}
