//! How the log's files are named and where the chain left off.
//!
//! The configured path (`audit.jsonl`) is file 0; rotation adds
//! `audit.000001.jsonl`, `audit.000002.jsonl`, … in the same directory. The
//! chain runs through them in that order. Beside them live the signed
//! checkpoints (`audit.checkpoints`, see [`super::checkpoint`]) and the
//! writer's lock (`audit.lock`, see [`super::lock`]); neither matches the
//! rotated-file pattern nor an `audit*.jsonl` glob.
//!
//! A crash can leave the newest file ending in an incomplete record (bytes
//! written but not yet fsynced; no client was told that record was durable).
//! On start esq finds the last complete record, leaves the damaged file as
//! it is, and continues the chain in a new file; `esq audit verify` reports
//! the incomplete tail as torn, not as tampering.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::record::{hash_line, Link};

/// The path of file number `n` of the log whose file 0 is `base`.
pub fn numbered(base: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{n:06}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n:06}"),
    };
    base.with_file_name(name)
}

/// `<dir>/<stem>.<suffix>` beside the log whose file 0 is `base`.
fn beside(base: &Path, suffix: &str) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    base.with_file_name(format!("{stem}.{suffix}"))
}

/// Where the writer appends its signed checkpoints: `audit.checkpoints`
/// for `audit.jsonl`.
pub fn checkpoints_path(base: &Path) -> PathBuf {
    beside(base, "checkpoints")
}

/// The lock file that keeps a second writer off the log: `audit.lock` for
/// `audit.jsonl`.
pub fn lock_path(base: &Path) -> PathBuf {
    beside(base, "lock")
}

/// The log's existing files, oldest first (what `esq audit verify` takes).
pub fn log_files(base: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(existing(base)?.into_iter().map(|(_, path)| path).collect())
}

/// The log's existing files, oldest first, with their numbers.
pub fn existing(base: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let dir = match base.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut found = Vec::new();
    if base.exists() {
        found.push((0, base.to_path_buf()));
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = number_of(base, &name) {
            found.push((n, dir.join(name.as_ref())));
        }
    }
    found.sort();
    Ok(found)
}

/// The rotation number of file `name` if it belongs to the log of `base`.
fn number_of(base: &Path, name: &str) -> Option<u32> {
    let stem = base.file_stem()?.to_string_lossy();
    let rest = name.strip_prefix(stem.as_ref())?.strip_prefix('.')?;
    let digits = match base.extension() {
        Some(ext) => rest.strip_suffix(&format!(".{}", ext.to_string_lossy()))?,
        None => rest,
    };
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

/// The last complete record of a file: its `seq` and line hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEnd {
    pub seq: u64,
    pub hash: String,
}

/// What the end of a file looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last record that reads as one, if any.
    pub end: Option<ChainEnd>,
    /// Bytes follow that record (or fill a file without records): an
    /// incomplete write from a crash.
    pub torn: bool,
    pub len: u64,
}

/// Reads the end of `path` backwards until it finds a complete record.
pub fn tail(path: &Path) -> std::io::Result<Tail> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::with_capacity((len - start) as usize);
        file.by_ref().take(len - start).read_to_end(&mut bytes)?;
        // Complete lines end in '\n'; the piece before the first '\n' of a
        // window that does not start the file may be part of a line.
        let mut end = bytes.len();
        while let Some(newline) = bytes[..end].iter().rposition(|b| *b == b'\n') {
            let line_start = bytes[..newline]
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| i + 1);
            let Some(line_start) = line_start.or((start == 0).then_some(0)) else {
                break;
            };
            let line = &bytes[line_start..newline];
            if let Ok(link) = serde_json::from_slice::<Link>(line) {
                return Ok(Tail {
                    end: Some(ChainEnd {
                        seq: link.seq,
                        hash: hash_line(line),
                    }),
                    torn: newline + 1 != bytes.len(),
                    len,
                });
            }
            end = line_start;
        }
        if start == 0 {
            return Ok(Tail {
                end: None,
                torn: len > 0,
                len,
            });
        }
        window = window.saturating_mul(4);
    }
}

/// Whether `path` is a regular file: what esq reads whole (a checkpoints
/// file, a copy of it). A pipe would block the read, a device never end it.
pub fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// The seal esq served last, as its newest start or reload record says
/// (`detail.sealed_at`), with that record's `seq`: what a new start must
/// not go back behind. Reads the log from its newest file backwards.
pub fn last_served_seal(base: &Path) -> std::io::Result<Option<(u64, String)>> {
    #[derive(serde::Deserialize)]
    struct Served {
        seq: u64,
        #[serde(default)]
        detail: Option<Detail>,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        sealed_at: Option<String>,
    }
    for (_, path) in existing(base)?.iter().rev() {
        let bytes = std::fs::read(path)?;
        for line in bytes.split(|b| *b == b'\n').rev() {
            let Ok(served) = serde_json::from_slice::<Served>(line) else {
                continue;
            };
            if let Some(at) = served.detail.and_then(|d| d.sealed_at) {
                return Ok(Some((served.seq, at)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_keep_order_and_are_recognised() {
        let base = Path::new("/var/log/esq/audit.jsonl");
        assert_eq!(numbered(base, 0), base);
        assert_eq!(
            numbered(base, 12),
            Path::new("/var/log/esq/audit.000012.jsonl")
        );
        assert_eq!(number_of(base, "audit.000012.jsonl"), Some(12));
        assert_eq!(number_of(base, "audit.jsonl"), None);
        assert_eq!(number_of(base, "audit.12.jsonl"), None);
        assert_eq!(number_of(base, "other.000001.jsonl"), None);
        assert_eq!(
            number_of(Path::new("log"), "log.000003"),
            Some(3),
            "no extension"
        );
        let checkpoints = checkpoints_path(base);
        let lock = lock_path(base);
        assert_eq!(checkpoints, Path::new("/var/log/esq/audit.checkpoints"));
        assert_eq!(lock, Path::new("/var/log/esq/audit.lock"));
        for beside in [&checkpoints, &lock] {
            let name = beside.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            assert_eq!(number_of(base, &name), None, "{name} is not a log file");
            assert!(!name.ends_with(".jsonl"), "{name} escapes audit*.jsonl");
        }
        assert_eq!(
            checkpoints_path(Path::new("log")),
            Path::new("log.checkpoints")
        );
    }

    #[test]
    fn tail_finds_the_last_complete_record_and_notices_a_torn_end() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.jsonl");
        let one = br#"{"seq":1,"prev":"00"}"#;
        let two = br#"{"seq":2,"prev":"ab"}"#;
        let mut clean = Vec::new();
        clean.extend_from_slice(one);
        clean.push(b'\n');
        clean.extend_from_slice(two);
        clean.push(b'\n');
        std::fs::write(&path, &clean)?;
        let found = tail(&path)?;
        assert_eq!(found.end.as_ref().map(|e| e.seq), Some(2));
        assert_eq!(found.end.map(|e| e.hash), Some(hash_line(two)));
        assert!(!found.torn);

        let mut torn = clean.clone();
        torn.extend_from_slice(br#"{"seq":3,"pr"#);
        std::fs::write(&path, &torn)?;
        let found = tail(&path)?;
        assert_eq!(found.end.map(|e| e.seq), Some(2));
        assert!(found.torn);

        std::fs::write(&path, b"")?;
        assert_eq!(
            tail(&path)?,
            Tail {
                end: None,
                torn: false,
                len: 0
            }
        );
        std::fs::write(&path, b"garbage\n")?;
        assert!(tail(&path)?.torn);
        Ok(())
    }
}
