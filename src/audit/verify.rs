//! `esq audit verify`: walks the chain through the given files and names the
//! first record that does not fit — a line that is not a record, a `seq`
//! out of order (a record removed, inserted or moved), or a `prev` that is
//! not the hash of the record before it (that record was changed).
//!
//! Files may be given in any order: they are read in the order of their
//! first record's `seq`. A file's last line that is not a record and has no
//! newline is a torn write from a crash (see [`super::files`]), reported
//! but not counted as tampering. What the chain cannot show: the loss of
//! the newest records (a truncated end), and edits to the very last record.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::record::{hash_line, GENESIS};

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
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
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
    let mut contents = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| VerifyError {
            path: path.clone(),
            source,
        })?;
        contents.push((path.clone(), bytes));
    }
    contents.sort_by_key(|(_, bytes)| first_seq(bytes).unwrap_or(u64::MAX));
    let mut chain = Chain::default();
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
    Ok(report)
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
            self.last = Some(Last {
                seq: link.seq,
                hash: hash_line(line),
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
mod tests {
    use super::*;
    use crate::audit::record::compose;

    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS.to_string();
        let time = chrono::Utc::now();
        (1..=n)
            .map(|seq| {
                let event = format!(r#"{{"kind":"decision","user":"u{seq}"}}"#);
                let line = compose(seq, &prev, &time, event.as_bytes());
                prev = hash_line(&line);
                line
            })
            .collect()
    }

    fn write(dir: &Path, name: &str, lines: &[Vec<u8>]) -> PathBuf {
        let path = dir.join(name);
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line);
            bytes.push(b'\n');
        }
        std::fs::write(&path, bytes).unwrap_or_default();
        path
    }

    fn verify(dir: &Path, lines: &[Vec<u8>]) -> VerifyReport {
        let path = write(dir, "log.jsonl", lines);
        verify_files(&[path]).unwrap_or_default()
    }

    #[test]
    fn an_intact_chain_verifies_across_files_in_any_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lines = chain(10);
        let a = write(dir.path(), "a.jsonl", &lines[..4]);
        let b = write(dir.path(), "b.jsonl", &lines[4..]);
        let report = verify_files(&[b, a]).unwrap_or_default();
        assert!(report.ok(), "{:?}", report.problem);
        assert_eq!(report.records, 10);
        assert!(report.from_genesis);
        assert_eq!(report.last_seq, Some(10));
    }

    #[test]
    fn each_kind_of_tampering_names_the_record() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lines = chain(10);

        let mut edited = lines.clone();
        edited[4] = String::from_utf8_lossy(&edited[4])
            .replace("\"u5\"", "\"someone\"")
            .into_bytes();
        let problem = verify(dir.path(), &edited).problem;
        assert_eq!(
            problem.as_ref().map(|p| (p.at.line, p.at.seq)),
            Some((5, Some(5))),
            "{problem:?}"
        );

        let mut deleted = lines.clone();
        deleted.remove(3);
        let problem = verify(dir.path(), &deleted).problem;
        assert_eq!(
            problem.as_ref().map(|p| (p.at.line, p.at.seq)),
            Some((4, Some(5))),
            "{problem:?}"
        );
        assert!(problem.is_some_and(|p| p.what.contains("4..4 are missing")));

        let mut inserted = lines.clone();
        inserted.insert(6, lines[2].clone());
        let problem = verify(dir.path(), &inserted).problem;
        assert_eq!(problem.map(|p| (p.at.line, p.at.seq)), Some((7, Some(3))));

        let mut reordered = lines.clone();
        reordered.swap(7, 8);
        let problem = verify(dir.path(), &reordered).problem;
        assert_eq!(problem.map(|p| (p.at.line, p.at.seq)), Some((8, Some(9))));

        let mut garbage = lines.clone();
        garbage[2] = b"{not json".to_vec();
        let problem = verify(dir.path(), &garbage).problem;
        assert_eq!(problem.map(|p| (p.at.line, p.at.seq)), Some((3, None)));
    }

    #[test]
    fn a_torn_last_line_is_reported_not_failed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lines = chain(5);
        let first = write(dir.path(), "a.jsonl", &lines[..3]);
        let mut bytes = std::fs::read(&first).unwrap_or_default();
        bytes.extend_from_slice(br#"{"seq":4,"pre"#);
        std::fs::write(&first, bytes).unwrap_or_default();
        let second = write(dir.path(), "b.jsonl", &lines[3..]);
        let report = verify_files(&[first, second]).unwrap_or_default();
        assert!(report.ok(), "{:?}", report.problem);
        assert_eq!(report.torn.len(), 1);
        assert_eq!(report.records, 5);
    }
}
