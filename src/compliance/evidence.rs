//! `esq evidence`: one zip an auditor can check without esq's help — the
//! audit files that cover the period (exact copies, so `esq audit verify`
//! re-checks them), the signed checkpoints and the public key that checks
//! them (so a cut or rewritten tail shows too), the verification of the
//! whole log, the System Security Plan of the running configuration, the
//! config file, hashes of the catalog and the policies, and a manifest
//! with the SHA-256 of every file in the bundle.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ssp::{dir_sha256, file_sha256, system_security_plan_blocking, SspInputs};
use crate::app::App;
use crate::audit::{files, verify};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("cannot read the audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{0}")]
    Encode(String),
}

/// One file of the bundle, as the manifest lists it.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub name: String,
    pub bytes: usize,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub created_at: String,
    pub since: String,
    pub esq_version: &'static str,
    /// The whole chain verified (not just the files in the bundle), and so
    /// did its checkpoints when there are any.
    pub chain_intact: bool,
    pub audit_files: Vec<String>,
    /// The checkpoints files in the bundle (`audit/audit.checkpoints`, and
    /// `audit/copy/…` for `audit.checkpoint_copy`).
    pub checkpoint_files: Vec<String>,
    /// The id of the key that signs the checkpoints (`signing/public.pem`).
    pub signing_key_id: Option<String>,
    /// The bundle in force (what every audit record names) and whether its
    /// seal verifies; the seal itself is `seal/esq.seal` when there is one.
    pub bundle: super::ssp::BundleSummary,
    pub config_sha256: String,
    pub catalog_sha256: String,
    pub policies_sha256: String,
    pub policy_files: Vec<Entry>,
    pub files: Vec<Entry>,
}

/// What was written.
#[derive(Debug)]
pub struct Bundle {
    pub manifest: Manifest,
    pub records_in_period: u64,
}

/// Writes the bundle to `out`. The chain's verdict is in the manifest
/// (`chain_intact`) and in `audit-verification.json`; a broken chain still
/// gets a bundle (that is evidence too).
pub fn write_bundle(
    app: &App,
    config_path: &Path,
    since: DateTime<Utc>,
    out: &Path,
) -> Result<Bundle, EvidenceError> {
    let base = &app.config.audit.path;
    let audit_err = |source| EvidenceError::Audit {
        path: base.clone(),
        source,
    };
    let log_files: Vec<PathBuf> = files::existing(base)
        .map_err(audit_err)?
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    let checkpoints = files::checkpoints_path(base);
    let public = app.signing.as_ref().map(|key| key.public().clone());
    let report = match (&public, log_files.is_empty()) {
        (_, true) => None,
        (Some(key), false) if files::is_regular_file(&checkpoints) => Some(
            verify::verify_with_checkpoints(&log_files, &checkpoints, key)
                .map_err(|e| EvidenceError::Encode(e.to_string()))?,
        ),
        _ => Some(
            verify::verify_files(&log_files).map_err(|e| EvidenceError::Encode(e.to_string()))?,
        ),
    };
    // The copy of the checkpoints (another disk): a log cut and re-grown
    // together with the checkpoints beside it still shows against it.
    let copy_report = match (&public, &app.config.audit.checkpoint_copy) {
        (Some(key), Some(copy)) if !log_files.is_empty() && files::is_regular_file(copy) => Some(
            verify::verify_with_checkpoints(&log_files, copy, key)
                .map_err(|e| EvidenceError::Encode(e.to_string()))?,
        ),
        _ => None,
    };
    let chain_intact = report.as_ref().is_some_and(verify::VerifyReport::ok)
        && copy_report.as_ref().is_none_or(verify::VerifyReport::ok);

    // The files holding records of the period: a file is included when its
    // last record is at or after `since` (whole files, so they verify).
    let mut contents: Vec<(String, Vec<u8>)> = Vec::new();
    let mut audit_files = Vec::new();
    let mut records_in_period = 0;
    for path in &log_files {
        let bytes = std::fs::read(path).map_err(audit_err)?;
        let in_period = records_since(&bytes, since);
        if in_period == 0 {
            continue;
        }
        records_in_period += in_period;
        let name = format!(
            "audit/{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        audit_files.push(name.clone());
        contents.push((name, bytes));
    }
    let mut checkpoint_files = Vec::new();
    let copy = app.config.audit.checkpoint_copy.as_ref();
    for (dir, path) in [("audit", Some(&checkpoints)), ("audit/copy", copy)] {
        let Some(path) = path.filter(|p| files::is_regular_file(p)) else {
            continue;
        };
        let bytes = std::fs::read(path).map_err(|source| EvidenceError::Audit {
            path: path.clone(),
            source,
        })?;
        let name = format!(
            "{dir}/{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        checkpoint_files.push(name.clone());
        contents.push((name, bytes));
    }
    if let Some(key) = &public {
        contents.push(("signing/public.pem".into(), key.to_pem().into_bytes()));
    }
    contents.push((
        "audit-verification.json".into(),
        pretty(&VerificationFile {
            files: log_files.iter().map(|p| p.display().to_string()).collect(),
            report: report.as_ref(),
            copy_report: copy_report.as_ref(),
            note: "esq audit verify over every file of the log (with its signed checkpoints when esq has a signing key, and again with their copy, audit.checkpoint_copy), not only those in this bundle",
        })?,
    ));
    let (ssp, _) = system_security_plan_blocking(
        app,
        &SspInputs {
            config_path: Some(config_path.to_path_buf()),
            profiles: Vec::new(),
        },
    );
    contents.push(("SSP.json".into(), pretty(&ssp)?));
    if let Ok(config) = std::fs::read(config_path) {
        contents.push(("config/esq.toml".into(), config));
    }
    if let Ok(seal) = std::fs::read(crate::bundle::seal::seal_path(&app.config)) {
        contents.push(("seal/esq.seal".into(), seal));
    }

    let policy_files = hashed_files(&app.config.policy.dir);
    let manifest = Manifest {
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        since: since.to_rfc3339_opts(SecondsFormat::Secs, true),
        esq_version: env!("CARGO_PKG_VERSION"),
        chain_intact,
        audit_files,
        checkpoint_files,
        signing_key_id: public.as_ref().map(|k| k.id().to_string()),
        bundle: super::ssp::bundle_summary(app),
        config_sha256: file_sha256(config_path),
        catalog_sha256: dir_sha256(&app.config.catalog.dir),
        policies_sha256: dir_sha256(&app.config.policy.dir),
        policy_files,
        files: contents
            .iter()
            .map(|(name, bytes)| Entry {
                name: name.clone(),
                bytes: bytes.len(),
                sha256: hex::encode(Sha256::digest(bytes)),
            })
            .collect(),
    };
    contents.push(("manifest.json".into(), pretty(&manifest)?));
    write_zip(out, &contents)?;
    Ok(Bundle {
        manifest,
        records_in_period,
    })
}

#[derive(Serialize)]
struct VerificationFile<'a> {
    files: Vec<String>,
    report: Option<&'a verify::VerifyReport>,
    /// The same log against the checkpoints' copy.
    copy_report: Option<&'a verify::VerifyReport>,
    note: &'static str,
}

/// Records in `bytes` (JSON Lines) whose `time` is at or after `since`.
fn records_since(bytes: &[u8], since: DateTime<Utc>) -> u64 {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter_map(|record| {
            record
                .get("time")?
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        })
        .filter(|time| *time >= since)
        .count() as u64
}

fn hashed_files(dir: &Path) -> Vec<Entry> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
        .iter()
        .map(|path| Entry {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes: std::fs::metadata(path)
                .map(|m| m.len() as usize)
                .unwrap_or(0),
            sha256: file_sha256(path),
        })
        .collect()
}

fn write_zip(out: &Path, contents: &[(String, Vec<u8>)]) -> Result<(), EvidenceError> {
    let failed = |reason: String| EvidenceError::Write {
        path: out.to_path_buf(),
        reason,
    };
    let file = std::fs::File::create(out).map_err(|e| failed(e.to_string()))?;
    let mut zip = zip::ZipWriter::new(file);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in contents {
        zip.start_file(name.as_str(), options)
            .map_err(|e| failed(e.to_string()))?;
        zip.write_all(bytes).map_err(|e| failed(e.to_string()))?;
    }
    let file = zip.finish().map_err(|e| failed(e.to_string()))?;
    file.sync_all().map_err(|e| failed(e.to_string()))?;
    Ok(())
}

fn pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, EvidenceError> {
    serde_json::to_vec_pretty(value).map_err(|e| EvidenceError::Encode(e.to_string()))
}
