//! One writer per log. Two esq processes appending to the same audit log
//! would interleave two chains in one file, and each would number its
//! records from where it found the end: the log could no longer be
//! verified. So [`super::AuditLog::open`] takes an exclusive OS lock on
//! `<dir>/<stem>.lock` (see [`super::files::lock_path`]) and holds it for
//! the log's life; the lock file holds the writer's pid, so a refused esq
//! can say who holds the log.
//!
//! The lock is an advisory `flock`, tied to the open file: the kernel
//! releases it when the writer exits, even on `kill -9`, so a lock file
//! left behind never blocks a restart. A second open in the same process
//! is refused too (each open is a file description of its own).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{files, AuditError};

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct LogLock {
    _file: File,
    path: PathBuf,
}

impl LogLock {
    /// Takes the lock of the log whose file 0 is `base`, or says who holds
    /// it ([`AuditError::InUse`]).
    pub fn acquire(base: &Path) -> Result<LogLock, AuditError> {
        let path = files::lock_path(base);
        let failed = |reason: String| AuditError::Failed {
            path: base.display().to_string(),
            reason,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| failed(format!("cannot open the lock file {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may not have written its pid yet.
                let _ = file.read_to_string(&mut text);
                return Err(AuditError::InUse {
                    path: base.display().to_string(),
                    holder: match text.trim().parse::<u32>() {
                        Ok(pid) => format!("pid {pid}"),
                        Err(_) => "pid unknown".into(),
                    },
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(failed(format!("cannot lock {}: {e}", path.display())))
            }
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
        Ok(LogLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_log_and_the_holder_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = dir.path().join("audit.jsonl");
        let first = LogLock::acquire(&base).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.path(), dir.path().join("audit.lock"));
        let pid = std::fs::read_to_string(first.path()).unwrap_or_default();
        assert_eq!(pid.trim(), std::process::id().to_string());

        let second = LogLock::acquire(&base).map(|_| ());
        let Err(error) = second else {
            panic!("a second writer got the lock")
        };
        assert!(matches!(error, AuditError::InUse { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains(&base.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );

        drop(first);
        let again = LogLock::acquire(&base);
        assert!(again.is_ok(), "released on drop: {again:?}");
    }
}
