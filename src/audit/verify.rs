//! `esq audit verify`: walks the chain through the given files and names the
//! first record that does not fit — a line that is not a record, a `seq`
//! out of order (a record removed, inserted or moved), or a `prev` that is
//! not the hash of the record before it (that record was changed).
//!
//! Files may be given in any order: they are read in the order of their
//! first record's `seq`. A file's last line that is not a record and has no
//! newline is a torn write from a crash (see [`super::files`]), reported
//! but not counted as tampering.
//!
//! What the chain alone cannot show: the loss of the newest records (a cut
//! end still chains), and a rewritten tail (a record changed and every
//! `prev` after it recomputed). Signed checkpoints close that gap
//! ([`verify_with_checkpoints`], `esq audit verify --checkpoints F --pubkey
//! P`): every checkpoint must be signed by the given key (else it is
//! forged), the record it names must be in the chain with exactly its hash
//! (else the record was rewritten), and the chain must reach the highest
//! `seq` a checkpoint covers (else records were cut). Records written after
//! the newest checkpoint are covered by the chain only
//! ([`CheckpointReport::uncovered`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checkpoint::{self, Checkpoint, CheckpointError};
use super::record::{hash_line, GENESIS};
use crate::signing::PublicKey;

/// Where a record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// The record's `seq`, when it has one.
    pub seq: Option<u64>,
}

/// The first record that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub at: Location,
    pub what: String,
}

/// What verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// The files, in chain order.
    pub files: Vec<PathBuf>,
    /// Records read (up to the first problem).
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the last good record (what the next record's `prev` must be).
    pub last_hash: Option<String>,
    /// The chain starts at record 1 (nothing before it can be missing).
    pub from_genesis: bool,
    /// Incomplete last lines from a crash.
    pub torn: Vec<Location>,
    /// The first bad record, if any.
    pub problem: Option<Problem>,
    /// What the checkpoints showed, when they were checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointReport>,
}

impl VerifyReport {
    /// The chain is intact and, when checked, so are the checkpoints.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
            && self
                .checkpoints
                .as_ref()
                .is_none_or(|c| c.problem.is_none())
    }
}

/// The checkpoints, checked against the chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointReport {
    pub file: PathBuf,
    /// The id of the key they were checked with.
    pub key_id: String,
    /// Checkpoints read (including a bad one).
    pub count: usize,
    /// Checkpoints whose record was in the files given, with their hash.
    pub matched: usize,
    /// The log they name (`esq audit <file>`), from the newest.
    pub origin: Option<String>,
    /// The highest `seq` a checkpoint covers, and when it was made (the
    /// latest checkpoint of that `seq`).
    pub newest_seq: Option<u64>,
    pub newest_time: Option<String>,
    /// Records of the chain after the newest checkpoint: covered by the
    /// chain only, until the next checkpoint.
    pub uncovered: u64,
    /// The first problem: a forged checkpoint, a rewritten record, a cut end.
    pub problem: Option<CheckpointProblem>,
}

impl CheckpointReport {
    /// When the newest checkpoint was made. With no records after it
    /// ([`CheckpointReport::uncovered`] 0) an old one is no concern: the
    /// writer checkpoints by time only while records arrive.
    pub fn newest_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let time = chrono::DateTime::parse_from_rfc3339(self.newest_time.as_deref()?).ok()?;
        Some(time.with_timezone(&chrono::Utc))
    }
}

/// What is wrong with the checkpoints or the records they cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointProblem {
    /// The checkpoint's line in the checkpoints file.
    pub line: Option<u64>,
    /// The record concerned.
    pub seq: Option<u64>,
    pub what: String,
}

/// A file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct VerifyError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Checks the chain through `paths`.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    Ok(walk(paths, HashSet::new())?.0)
}

/// Checks the chain through `paths` and the checkpoints in `checkpoints`
/// (see the module docs); the verdict is [`VerifyReport::ok`], the
/// checkpoints' part in [`VerifyReport::checkpoints`].
pub fn verify_with_checkpoints(
    paths: &[PathBuf],
    checkpoints: &Path,
    key: &PublicKey,
) -> Result<VerifyReport, VerifyError> {
    let mut found = CheckpointReport {
        file: checkpoints.to_path_buf(),
        key_id: key.id().to_string(),
        ..CheckpointReport::default()
    };
    let read = match checkpoint::read(checkpoints) {
        Ok(read) => read,
        Err(CheckpointError::Read { path, source }) => return Err(VerifyError { path, source }),
        Err(CheckpointError::Malformed { line, reason, .. }) => {
            found.problem = Some(CheckpointProblem {
                line: Some(line),
                seq: None,
                what: format!(
                    "checkpoint at {} line {line} is not a checkpoint: {reason}",
                    checkpoints.display()
                ),
            });
            Vec::new()
        }
    };
    found.count = read.len();
    // Only signed checkpoints say anything about the chain.
    let mut signed = Vec::with_capacity(read.len());
    for checkpoint in read {
        if checkpoint.verify(key).is_err() {
            found.problem.get_or_insert(CheckpointProblem {
                line: Some(checkpoint.line),
                seq: Some(checkpoint.seq),
                what: format!(
                    "checkpoint at {} line {} is not signed by key {} (it names key {}): forged or signed by another key",
                    checkpoints.display(),
                    checkpoint.line,
                    key.id(),
                    checkpoint.key_id
                ),
            });
            continue;
        }
        signed.push(checkpoint);
    }
    let wanted = signed.iter().map(|c| c.seq).collect();
    let (mut report, hashes) = walk(paths, wanted)?;
    compare(&signed, &report, &hashes, &mut found);
    report.checkpoints = Some(found);
    Ok(report)
}

/// The log whose file 0 is `base`, every file of it, checked with the
/// checkpoints beside it ([`super::files::checkpoints_path`]).
pub fn verify_log(base: &Path, key: &PublicKey) -> Result<VerifyReport, VerifyError> {
    let paths = super::files::log_files(base).map_err(|source| VerifyError {
        path: base.to_path_buf(),
        source,
    })?;
    verify_with_checkpoints(&paths, &super::files::checkpoints_path(base), key)
}

/// Checks the signed checkpoints against the chain that was read.
fn compare(
    signed: &[Checkpoint],
    report: &VerifyReport,
    hashes: &HashMap<u64, String>,
    found: &mut CheckpointReport,
) {
    let newest = signed.iter().max_by_key(|c| (c.seq, c.line));
    if let Some(newest) = newest {
        found.newest_seq = Some(newest.seq);
        found.newest_time = Some(newest.time.clone());
        found.origin = Some(newest.origin.clone());
    }
    let last_seq = report.last_seq.unwrap_or(0);
    found.uncovered = last_seq.saturating_sub(found.newest_seq.unwrap_or(0));
    let mut by_seq: Vec<&Checkpoint> = signed.iter().collect();
    by_seq.sort_by_key(|c| (c.seq, c.line));
    let mut matched_up_to: Option<&Checkpoint> = None;
    for checkpoint in by_seq {
        let Some(hash) = hashes.get(&checkpoint.seq) else {
            // Before the files given, or after where the chain ends.
            continue;
        };
        if *hash == checkpoint.hash {
            found.matched += 1;
            matched_up_to = Some(checkpoint);
            continue;
        }
        let since = matched_up_to
            .map(|m| {
                format!(
                    " (records up to seq {} match the checkpoint of {})",
                    m.seq, m.time
                )
            })
            .unwrap_or_default();
        found.problem.get_or_insert(CheckpointProblem {
            line: Some(checkpoint.line),
            seq: Some(checkpoint.seq),
            what: format!(
                "record {} was rewritten: its hash differs from the checkpoint of {}{since}",
                checkpoint.seq, checkpoint.time
            ),
        });
        return;
    }
    // A chain broken earlier is reported as such; a clean one must reach
    // every checkpoint.
    if let (Some(newest), None) = (newest, &report.problem) {
        if newest.seq > last_seq {
            found.problem.get_or_insert(CheckpointProblem {
                line: Some(newest.line),
                seq: Some(newest.seq),
                what: format!(
                    "records {}..{} are missing: the log ends at seq {last_seq} but the checkpoint of {} covers seq {}",
                    last_seq + 1,
                    newest.seq,
                    newest.time,
                    newest.seq
                ),
            });
        }
    }
}

/// Walks the chain, keeping the line hashes of the records in `wanted`.
fn walk(
    paths: &[PathBuf],
    wanted: HashSet<u64>,
) -> Result<(VerifyReport, HashMap<u64, String>), VerifyError> {
    let mut contents = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| VerifyError {
            path: path.clone(),
            source,
        })?;
        contents.push((path.clone(), bytes));
    }
    contents.sort_by_key(|(_, bytes)| first_seq(bytes).unwrap_or(u64::MAX));
    let mut chain = Chain {
        wanted,
        ..Chain::default()
    };
    let mut report = VerifyReport::default();
    for (path, bytes) in &contents {
        report.files.push(path.clone());
        if let Err(problem) = chain.file(path, bytes, &mut report) {
            report.problem = Some(problem);
            break;
        }
    }
    report.last_seq = chain.last.as_ref().map(|l| l.seq);
    report.last_hash = chain.last.map(|l| l.hash);
    Ok((report, chain.found))
}

fn first_seq(bytes: &[u8]) -> Option<u64> {
    bytes
        .split(|b| *b == b'\n')
        .find_map(|line| serde_json::from_slice::<Head>(line).ok())
        .map(|h| h.seq)
}

#[derive(serde::Deserialize)]
struct Head {
    seq: u64,
}

#[derive(serde::Deserialize)]
struct RecordLink {
    seq: u64,
    prev: String,
}

/// The last good record.
struct Last {
    seq: u64,
    hash: String,
    at: Location,
}

#[derive(Default)]
struct Chain {
    last: Option<Last>,
    /// Records whose hashes a checkpoint names …
    wanted: HashSet<u64>,
    /// … and their hashes, once read.
    found: HashMap<u64, String>,
}

impl Chain {
    fn file(
        &mut self,
        path: &Path,
        bytes: &[u8],
        report: &mut VerifyReport,
    ) -> Result<(), Problem> {
        let ends_clean = bytes.is_empty() || bytes.ends_with(b"\n");
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        if ends_clean {
            // The empty piece after the final newline.
            lines.pop();
        }
        let count = lines.len();
        for (index, line) in lines.into_iter().enumerate() {
            let number = index as u64 + 1;
            let at = |seq: Option<u64>| Location {
                file: path.to_path_buf(),
                line: number,
                seq,
            };
            let link = match serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| serde_json::from_value::<RecordLink>(v).ok())
            {
                Some(link) => link,
                None if index + 1 == count && !ends_clean => {
                    report.torn.push(at(None));
                    return Ok(());
                }
                None => {
                    return Err(Problem {
                        at: at(None),
                        what: "not a record (invalid JSON, or no seq/prev)".into(),
                    })
                }
            };
            self.check(&link, &at(Some(link.seq)))?;
            report.records += 1;
            if report.first_seq.is_none() {
                report.first_seq = Some(link.seq);
                report.from_genesis = link.seq == 1 && link.prev == GENESIS;
            }
            let hash = hash_line(line);
            if self.wanted.contains(&link.seq) {
                self.found.insert(link.seq, hash.clone());
            }
            self.last = Some(Last {
                seq: link.seq,
                hash,
                at: at(Some(link.seq)),
            });
        }
        Ok(())
    }

    fn check(&self, link: &RecordLink, at: &Location) -> Result<(), Problem> {
        let problem = |what: String| {
            Err(Problem {
                at: at.clone(),
                what,
            })
        };
        let Some(last) = &self.last else {
            if link.seq == 1 && link.prev != GENESIS {
                return problem("record 1 must have the all-zero prev".into());
            }
            return Ok(());
        };
        let expected = last.seq + 1;
        if link.seq != expected {
            let why = if link.seq > expected {
                format!(
                    "seq {} where {expected} was expected: record(s) {expected}..{} are missing or this one was inserted or moved",
                    link.seq,
                    link.seq - 1
                )
            } else {
                format!(
                    "seq {} where {expected} was expected: this record was inserted, duplicated or moved",
                    link.seq
                )
            };
            return problem(why);
        }
        if link.prev != last.hash {
            // The record before no longer hashes to what this one says: it
            // was changed (or this record's prev was).
            return Err(Problem {
                at: last.at.clone(),
                what: format!(
                    "record {} was changed: its hash no longer matches the prev of record {} ({} line {})",
                    last.seq,
                    link.seq,
                    at.file.display(),
                    at.line
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
