//! Signed checkpoints. The hash chain shows a changed, removed or inserted
//! record, but not a cut end (drop the newest records and the rest still
//! chains) nor a rewritten tail (change a record and recompute every
//! `prev` after it). So, when esq has a signing key, the writer signs
//! where the chain stood — the last record's `seq` and line hash — from
//! time to time and at shutdown, and appends that checkpoint to
//! `<stem>.checkpoints` beside the log and to `audit.checkpoint_copy`
//! (another disk or share, so that whoever cuts the log cannot take its
//! checkpoints with it). Only records already fsynced are checkpointed.
//!
//! A checkpoint is one JSON line:
//! `{"origin":"esq audit audit.jsonl","seq":N,"hash":"<hex>","time":"<RFC 3339>","key_id":"<hex>","signature":"<base64>"}`.
//! The signature is Ed25519 over a fixed text (in the spirit of C2SP's
//! tlog-checkpoint), so it does not depend on how the JSON is written:
//!
//! ```text
//! esq-audit-checkpoint/v1
//! <origin>
//! <seq>
//! <hash>
//! <time>
//! ```
//!
//! `hash` is the hex SHA-256 of record `seq`'s line: what the next
//! record's `prev` will be. [`super::verify`] checks checkpoints against
//! the chain.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::signing::{BadSignature, PublicKey, SigningKey};

/// The first line of the signed text: names the format.
pub const FORMAT: &str = "esq-audit-checkpoint/v1";

/// One signed statement: "record `seq` of `origin` hashed to `hash` at
/// `time`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Names the log (`esq audit <file name of file 0>`).
    pub origin: String,
    /// The last record on disk when the checkpoint was made.
    pub seq: u64,
    /// Its line hash.
    pub hash: String,
    /// When it was made (RFC 3339, UTC), exactly as signed.
    pub time: String,
    /// The [`PublicKey::id`] of the key that signed it.
    pub key_id: String,
    /// Base64 Ed25519 signature of [`Checkpoint::signed_text`].
    pub signature: String,
    /// The 1-based line of the checkpoints file it was read from (0 when
    /// made in this process).
    #[serde(skip)]
    pub line: u64,
}

impl Checkpoint {
    /// Signs `seq` and `hash` of the log named `origin`, now.
    pub fn sign(key: &SigningKey, origin: &str, seq: u64, hash: &str) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            origin: origin.to_string(),
            seq,
            hash: hash.to_string(),
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            key_id: key.public().id().to_string(),
            signature: String::new(),
            line: 0,
        };
        checkpoint.signature = key.sign(checkpoint.signed_text().as_bytes());
        checkpoint
    }

    /// The text the signature covers.
    pub fn signed_text(&self) -> String {
        format!(
            "{FORMAT}\n{}\n{}\n{}\n{}\n",
            self.origin, self.seq, self.hash, self.time
        )
    }

    /// Whether `key` made this checkpoint (its `key_id` is not trusted:
    /// only the signature counts).
    pub fn verify(&self, key: &PublicKey) -> Result<(), BadSignature> {
        key.verify(self.signed_text().as_bytes(), &self.signature)
    }

    /// `time`, parsed.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The `origin` of the log whose file 0 is `base`.
pub fn origin(base: &Path) -> String {
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("esq audit {name}")
}

/// A checkpoints file that cannot be read, or a line that is not a
/// checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line} is not a checkpoint: {reason}")]
    Malformed {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// The checkpoints of a file, in file order, each with its line number. A
/// last line without a newline that does not parse is a write cut short
/// by a crash (never reported) and is skipped; any other line that is not
/// a checkpoint is an error.
pub fn read(path: &Path) -> Result<Vec<Checkpoint>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let ends_clean = bytes.is_empty() || bytes.ends_with(b"\n");
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if ends_clean {
        lines.pop();
    }
    let count = lines.len();
    let mut found = Vec::with_capacity(count);
    for (index, line) in lines.into_iter().enumerate() {
        let number = index as u64 + 1;
        match serde_json::from_slice::<Checkpoint>(line) {
            Ok(checkpoint) => found.push(Checkpoint {
                line: number,
                ..checkpoint
            }),
            Err(_) if index + 1 == count && !ends_clean => {}
            Err(e) => {
                return Err(CheckpointError::Malformed {
                    path: path.to_path_buf(),
                    line: number,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(found)
}

/// Refuses to continue a log whose end is behind its own signed
/// checkpoints (beside it, or the copy): records were removed, or the log
/// replaced, and appending would hide that under a new, valid-looking tail.
/// Only checkpoints this key signed count (a key rotation leaves old ones
/// behind). A rewrite further back is for `esq audit verify` to find.
pub fn check_not_cut(
    base: &Path,
    options: &CheckpointOptions,
    last_seq: u64,
    last_hash: &str,
) -> Result<(), String> {
    let public = options.key.public();
    let beside = super::files::checkpoints_path(base);
    for path in std::iter::once(beside).chain(options.copy.clone()) {
        // Only files: a copy may be a device or a pipe (never read whole).
        if !super::files::is_regular_file(&path) {
            continue;
        }
        let checkpoints = read(&path).map_err(|e| e.to_string())?;
        let newest = checkpoints
            .iter()
            .filter(|c| c.verify(public).is_ok())
            .max_by_key(|c| c.seq);
        let Some(newest) = newest else { continue };
        let refuse = |what: String| {
            Err(format!(
                "{what}; esq will not continue a cut or rewritten log: investigate (esq audit verify --checkpoints), then move the log and its checkpoints aside to start a new one"
            ))
        };
        if newest.seq > last_seq {
            return refuse(format!(
                "the signed checkpoint at {} line {} ({}) covers record {}, but the log ends at record {last_seq}: records {}..{} were removed or the log replaced",
                path.display(),
                newest.line,
                newest.time,
                newest.seq,
                last_seq + 1,
                newest.seq
            ));
        }
        if newest.seq == last_seq && newest.hash != last_hash {
            return refuse(format!(
                "record {last_seq} differs from the signed checkpoint at {} line {} ({}): the log's end was rewritten",
                path.display(),
                newest.line,
                newest.time
            ));
        }
    }
    Ok(())
}

/// How the writer checkpoints (from `[signing]` and `[audit]`).
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub key: Arc<SigningKey>,
    /// A checkpoint at least this often while records arrive.
    pub interval: Duration,
    /// … and after at most this many records.
    pub records: u64,
    /// A second checkpoints file (`audit.checkpoint_copy`).
    pub copy: Option<PathBuf>,
}

/// The writer thread's checkpointing: when one is due, and writing it.
pub(super) struct Checkpointer {
    key: Arc<SigningKey>,
    origin: String,
    targets: Vec<(PathBuf, File)>,
    interval: Duration,
    records: u64,
    /// The `seq` the last checkpoint covered (at start: where the chain
    /// resumed, so the count starts there).
    covered: u64,
    /// The last checkpoint of this process covered `covered`.
    written: bool,
    since: Instant,
    /// The highest `seq` known to be on disk.
    seen: u64,
}

impl Checkpointer {
    /// Opens (creating) the checkpoints files of the log whose file 0 is
    /// `base`, whose chain ends at `resumed`.
    pub(super) fn open(
        base: &Path,
        options: &CheckpointOptions,
        resumed: u64,
    ) -> Result<Checkpointer, String> {
        let mut targets = Vec::new();
        let beside = super::files::checkpoints_path(base);
        for path in std::iter::once(beside).chain(options.copy.clone()) {
            // Opening a pipe for writing waits for a reader: refuse it.
            if std::fs::metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_fifo() || m.file_type().is_socket()
            }) {
                return Err(format!(
                    "the checkpoints file {} is a pipe or socket: give a file",
                    path.display()
                ));
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("cannot open the checkpoints file {}: {e}", path.display()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))?;
            }
            targets.push((path, file));
        }
        Ok(Checkpointer {
            key: options.key.clone(),
            origin: origin(base),
            targets,
            interval: options.interval,
            records: options.records.max(1),
            covered: resumed,
            written: false,
            since: Instant::now(),
            seen: resumed,
        })
    }

    /// When a checkpoint falls due by time, if records wait for one.
    pub(super) fn deadline(&self) -> Option<Instant> {
        (self.seen > self.covered).then(|| self.since + self.interval)
    }

    /// Records up to `seq` are on disk: is a checkpoint due?
    pub(super) fn due(&mut self, seq: u64) -> bool {
        self.seen = self.seen.max(seq);
        let new = self.seen.saturating_sub(self.covered);
        new > 0 && (new >= self.records || self.since.elapsed() >= self.interval)
    }

    /// At shutdown: one checkpoint of the end, unless this process already
    /// wrote exactly that one (or the log is empty).
    pub(super) fn due_at_close(&mut self, seq: u64) -> bool {
        self.seen = self.seen.max(seq);
        self.seen > 0 && !(self.written && self.covered == self.seen)
    }

    /// Signs `seq` and `hash` and appends the checkpoint to every file,
    /// fsynced.
    pub(super) fn write(&mut self, seq: u64, hash: &str) -> Result<(), String> {
        let checkpoint = Checkpoint::sign(&self.key, &self.origin, seq, hash);
        let mut line = serde_json::to_vec(&checkpoint).map_err(|e| format!("a checkpoint: {e}"))?;
        line.push(b'\n');
        for (path, file) in &mut self.targets {
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(|e| format!("cannot write the checkpoint to {}: {e}", path.display()))?;
        }
        self.covered = seq;
        self.seen = self.seen.max(seq);
        self.written = true;
        self.since = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only_and_covers_every_field() {
        let key = SigningKey::generate();
        let made = Checkpoint::sign(&key, "esq audit a.jsonl", 42, "ab");
        assert_eq!(made.key_id, key.public().id());
        assert!(made.verify(key.public()).is_ok());
        assert!(made.time().is_some());
        let other = SigningKey::generate();
        assert!(made.verify(other.public()).is_err());
        for changed in [
            Checkpoint {
                seq: 43,
                ..made.clone()
            },
            Checkpoint {
                hash: "cd".into(),
                ..made.clone()
            },
            Checkpoint {
                origin: "esq audit b.jsonl".into(),
                ..made.clone()
            },
            Checkpoint {
                time: "2020-01-01T00:00:00Z".into(),
                ..made.clone()
            },
        ] {
            assert!(changed.verify(key.public()).is_err(), "{changed:?}");
        }
        assert!(made.signed_text().starts_with("esq-audit-checkpoint/v1\n"));
    }

    #[test]
    fn a_pipe_as_the_copy_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("copy.checkpoints");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let options = CheckpointOptions {
            key: Arc::new(SigningKey::generate()),
            interval: Duration::from_secs(3600),
            records: 2,
            copy: Some(fifo),
        };
        let refused = Checkpointer::open(&dir.path().join("audit.jsonl"), &options, 0)
            .map(|_| ())
            .unwrap_err();
        assert!(refused.contains("is a pipe or socket"), "{refused}");
    }

    #[test]
    fn a_file_reads_back_with_line_numbers_and_a_torn_end_is_skipped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = Arc::new(SigningKey::generate());
        let base = dir.path().join("audit.jsonl");
        let copy = dir.path().join("copy.checkpoints");
        let options = CheckpointOptions {
            key,
            interval: Duration::from_secs(3600),
            records: 2,
            copy: Some(copy.clone()),
        };
        let mut writer = Checkpointer::open(&base, &options, 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(!writer.due(1), "one record of two");
        assert!(writer.due(2));
        writer.write(2, "h2").unwrap_or_else(|e| panic!("{e}"));
        assert!(!writer.due(2));
        assert!(!writer.due_at_close(2), "already covered");
        assert!(writer.due_at_close(3));
        writer.write(3, "h3").unwrap_or_else(|e| panic!("{e}"));

        let path = super::super::files::checkpoints_path(&base);
        let read_back = read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_back
                .iter()
                .map(|c| (c.line, c.seq))
                .collect::<Vec<_>>(),
            vec![(1, 2), (2, 3)]
        );
        assert_eq!(read_back[0].origin, "esq audit audit.jsonl");
        assert!(read_back[1].verify(options.key.public()).is_ok());
        assert_eq!(read(&copy).unwrap_or_default(), read_back);

        let mut bytes = std::fs::read(&path).unwrap_or_default();
        bytes.extend_from_slice(br#"{"origin":"esq au"#);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(&path).map(|c| c.len()).ok(), Some(2), "torn end");
        bytes.extend_from_slice(b"\n");
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let error = read(&path).map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("line 3"), "{error}");
    }

    #[test]
    fn time_makes_a_checkpoint_due_only_when_records_wait() {
        let key = Arc::new(SigningKey::generate());
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let options = CheckpointOptions {
            key,
            interval: Duration::ZERO,
            records: 1000,
            copy: None,
        };
        let base = dir.path().join("audit.jsonl");
        let mut writer = Checkpointer::open(&base, &options, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(writer.deadline(), None, "nothing new since the resume");
        assert!(!writer.due(10));
        assert!(writer.due(11));
        assert!(writer.deadline().is_some());
    }
}
