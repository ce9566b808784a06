//! What the audit log on disk shows: whether its hash chain verifies (and
//! where it breaks), whether the signed checkpoints beside it — and in
//! `audit.checkpoint_copy` — verify with the configured key and match the
//! chain, and what the newest record holds and when it was written.
//!
//! This reads the files only; it never opens the log for writing, so it
//! runs beside a serving esq.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::audit::files;
use crate::audit::verify::{self, CheckpointReport, VerifyReport};
use crate::signing::PublicKey;

/// How far back from a file's end the newest record is looked for.
const NEWEST_WINDOW: u64 = 1024 * 1024;

/// The audit log as found on disk.
#[derive(Debug, Clone)]
pub struct AuditFacts {
    /// File 0 of the log (`audit.path`).
    pub log: PathBuf,
    pub chain: ChainFacts,
    pub checkpoints: CheckpointFacts,
    /// The newest complete record, when there is one.
    pub newest: Option<NewestRecord>,
}

/// The hash chain through every file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFacts {
    /// `audit.enabled = false`: nothing was read.
    Disabled,
    /// No file of the log exists yet (and no checkpoint names a record).
    NoRecords,
    Intact {
        files: usize,
        records: u64,
        first_seq: Option<u64>,
        last_seq: Option<u64>,
        /// The chain starts at record 1.
        from_genesis: bool,
        /// Incomplete last lines left by a crash.
        torn: usize,
    },
    /// The first record that does not fit, and why.
    Broken { record: String, what: String },
    /// A file could not be read.
    Unreadable(String),
}

/// The signed checkpoints, checked against the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointFacts {
    /// No `[signing] key_file`: nothing signs checkpoints.
    NoKey,
    /// Nothing to checkpoint: no record and no checkpoint yet.
    NoRecords,
    /// Records exist, but no checkpoint does (`file`: where it should be).
    Missing {
        file: PathBuf,
    },
    /// A forged checkpoint, a rewritten record, a cut log or a cut
    /// checkpoints file.
    Bad {
        what: String,
    },
    /// Every checkpoint verifies and matches the chain.
    Verified {
        count: usize,
        key_id: String,
        newest_seq: u64,
        newest_time: Option<DateTime<Utc>>,
        /// Records after the newest checkpoint (covered by the chain only).
        uncovered: u64,
        /// `audit.checkpoint_copy` was checked too.
        copy_checked: bool,
    },
    Unreadable(String),
}

/// The newest record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewestRecord {
    pub seq: Option<u64>,
    pub time: Option<DateTime<Utc>>,
    /// Its field names.
    pub fields: Vec<String>,
}

/// Verifies the log of `app.config.audit` (see the module docs).
pub fn observe(app: &App) -> AuditFacts {
    let log = app.config.audit.path.clone();
    if !app.config.audit.enabled {
        return AuditFacts {
            log,
            chain: ChainFacts::Disabled,
            checkpoints: CheckpointFacts::NoRecords,
            newest: None,
        };
    }
    let paths = match files::log_files(&log) {
        Ok(paths) => paths,
        Err(err) => {
            let what = format!("cannot list the audit log {}: {err}", log.display());
            return AuditFacts {
                log,
                chain: ChainFacts::Unreadable(what.clone()),
                checkpoints: CheckpointFacts::Unreadable(what),
                newest: None,
            };
        }
    };
    let key = app.signing.as_ref().map(|k| k.public());
    let beside = files::checkpoints_path(&log);
    let report = match key {
        Some(key) if files::is_regular_file(&beside) => {
            Some(verify::verify_with_checkpoints(&paths, &beside, key))
        }
        _ if paths.is_empty() => None,
        _ => Some(verify::verify_files(&paths)),
    };
    let report = match report.transpose() {
        Ok(report) => report,
        Err(err) => {
            return AuditFacts {
                log,
                chain: ChainFacts::Unreadable(err.to_string()),
                checkpoints: CheckpointFacts::Unreadable(err.to_string()),
                newest: None,
            }
        }
    };
    let checkpoints = match key {
        None => CheckpointFacts::NoKey,
        Some(key) => {
            let copy = app.config.audit.checkpoint_copy.as_deref();
            checkpoint_facts(report.as_ref(), &beside, copy, &paths, key)
        }
    };
    AuditFacts {
        chain: chain_facts(report.as_ref(), paths.len()),
        checkpoints,
        newest: paths.last().and_then(|path| newest_record(path)),
        log,
    }
}

fn chain_facts(report: Option<&VerifyReport>, files: usize) -> ChainFacts {
    let Some(report) = report else {
        return ChainFacts::NoRecords;
    };
    if let Some(problem) = &report.problem {
        let file = problem
            .at
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let record = match problem.at.seq {
            Some(seq) => format!("record {seq} ({file} line {})", problem.at.line),
            None => format!("{file} line {}", problem.at.line),
        };
        return ChainFacts::Broken {
            record,
            what: problem.what.clone(),
        };
    }
    if files == 0 && report.records == 0 {
        return ChainFacts::NoRecords;
    }
    ChainFacts::Intact {
        files,
        records: report.records,
        first_seq: report.first_seq,
        last_seq: report.last_seq,
        from_genesis: report.from_genesis,
        torn: report.torn.len(),
    }
}

/// The checkpoint check: the checkpoints beside the log (already checked
/// with the chain in `report`), then those of `audit.checkpoint_copy`,
/// which must verify too and must not reach further than those beside
/// the log (else the file beside the log was cut).
fn checkpoint_facts(
    report: Option<&VerifyReport>,
    beside: &Path,
    copy: Option<&Path>,
    paths: &[PathBuf],
    key: &PublicKey,
) -> CheckpointFacts {
    let records = report.map_or(0, |r| r.records);
    let main = match report.and_then(|r| r.checkpoints.as_ref()) {
        Some(found) => one_file(found, records, beside),
        None if records == 0 => CheckpointFacts::NoRecords,
        None => CheckpointFacts::Missing {
            file: beside.to_path_buf(),
        },
    };
    let Some(copy) = copy.filter(|c| files::is_regular_file(c)) else {
        return main;
    };
    let copied = match verify::verify_with_checkpoints(paths, copy, key) {
        Ok(report) => match &report.checkpoints {
            Some(found) => one_file(found, report.records, copy),
            None => CheckpointFacts::NoRecords,
        },
        Err(err) => return CheckpointFacts::Unreadable(err.to_string()),
    };
    match (main, copied) {
        (_, CheckpointFacts::Bad { what }) => CheckpointFacts::Bad {
            what: format!("the checkpoint copy {}: {what}", copy.display()),
        },
        (bad @ CheckpointFacts::Bad { .. }, _) => bad,
        (
            CheckpointFacts::Verified {
                count,
                key_id,
                newest_seq,
                newest_time,
                uncovered,
                ..
            },
            copied,
        ) => {
            let further = match &copied {
                CheckpointFacts::Verified { newest_seq: s, .. } => Some(*s),
                _ => None,
            };
            match further {
                Some(s) if s > newest_seq => CheckpointFacts::Bad {
                    what: format!(
                        "the checkpoints beside the log end at record {newest_seq}, their copy {} at record {s}: the checkpoints beside the log were cut",
                        copy.display()
                    ),
                },
                _ => CheckpointFacts::Verified {
                    count,
                    key_id,
                    newest_seq,
                    newest_time,
                    uncovered,
                    copy_checked: true,
                },
            }
        }
        (CheckpointFacts::Missing { file }, CheckpointFacts::Verified { newest_seq, .. }) => {
            CheckpointFacts::Bad {
                what: format!(
                    "no checkpoint is beside the log ({}), but its copy {} covers up to record {newest_seq}: the checkpoints beside the log were removed",
                    file.display(),
                    copy.display()
                ),
            }
        }
        (main, _) => main,
    }
}

/// One checkpoints file's verdict from its report.
fn one_file(found: &CheckpointReport, records: u64, file: &Path) -> CheckpointFacts {
    if let Some(problem) = &found.problem {
        return CheckpointFacts::Bad {
            what: problem.what.clone(),
        };
    }
    match found.newest_seq {
        Some(newest_seq) => CheckpointFacts::Verified {
            count: found.count,
            key_id: found.key_id.clone(),
            newest_seq,
            newest_time: found
                .newest_time
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            uncovered: found.uncovered,
            copy_checked: false,
        },
        None if records == 0 => CheckpointFacts::NoRecords,
        None => CheckpointFacts::Missing {
            file: file.to_path_buf(),
        },
    }
}

/// The last complete record of `path` (read from its end).
fn newest_record(path: &Path) -> Option<NewestRecord> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(NEWEST_WINDOW);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.take(len - start).read_to_end(&mut bytes).ok()?;
    let complete = &bytes[..bytes.iter().rposition(|b| *b == b'\n')?];
    let line = match complete.iter().rposition(|b| *b == b'\n') {
        Some(i) => &complete[i + 1..],
        None if start == 0 => complete,
        None => return None,
    };
    let record: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    Some(NewestRecord {
        seq: record.get("seq").and_then(|s| s.as_u64()),
        time: record
            .get("time")
            .and_then(|t| t.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        fields: record.keys().cloned().collect(),
    })
}
