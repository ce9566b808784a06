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
//!
//! A lock file is found by its path, and two paths can name one log (a
//! symlink, a hard link, another spelling). So the writer also locks the
//! log's files themselves, which are the same inode under every name: file
//! 0 for the log's life, and each rotated file while it is the one being
//! written (see `writer.rs`). What is left: a hard link to a rotated file
//! that is no longer written, named as another esq's file 0.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{files, AuditError};

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct LogLock {
    _file: File,
    /// File 0 of the log, locked under whatever name it is reached by.
    _log: File,
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
        let log = lock_log_file(base)?;
        Ok(LogLock {
            _file: file,
            _log: log,
            path,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Locks file 0 of the log itself (created if new).
fn lock_log_file(base: &Path) -> Result<File, AuditError> {
    let failed = |reason: String| AuditError::Failed {
        path: base.display().to_string(),
        reason,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(base)
        .map_err(|e| failed(format!("cannot open {}: {e}", base.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditError::InUse {
            path: base.display().to_string(),
            holder: "through another path to the same file".into(),
        }),
        Err(TryLockError::Error(e)) => Err(failed(format!("cannot lock {}: {e}", base.display()))),
    }
}

/// Locks a rotated file the writer is about to append to: another esq may
/// reach the same file under another name.
pub fn lock_rotated(file: &File, path: &Path) -> Result<(), String> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(format!(
            "{} is being written by another esq (through another path to the same file): one writer per log",
            path.display()
        )),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
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

    #[test]
    fn a_log_reached_through_a_link_is_locked_too() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = dir.path().join("audit.jsonl");
        let _first = LogLock::acquire(&base).unwrap_or_else(|e| panic!("{e}"));
        type Link = fn(&Path, &Path) -> std::io::Result<()>;
        let hard: Link = |a, b| std::fs::hard_link(a, b);
        let soft: Link = |a, b| std::os::unix::fs::symlink(a, b);
        for (name, link) in [("hard", hard), ("soft", soft)] {
            let other = dir.path().join(name);
            std::fs::create_dir(&other).unwrap_or_else(|e| panic!("{e}"));
            let alias = other.join("audit.jsonl");
            link(&base, &alias).unwrap_or_else(|e| panic!("{e}"));
            let second = LogLock::acquire(&alias).map(|_| ());
            assert!(
                matches!(&second, Err(AuditError::InUse { holder, .. }) if holder.contains("another path")),
                "{name} link: {second:?}"
            );
        }
    }
}
