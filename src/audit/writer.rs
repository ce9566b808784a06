//! The audit log sink: callers queue records without blocking; one writer
//! thread takes whatever is queued, appends it with one `write` and one
//! `fsync` (group commit), rotates by size, and publishes the highest
//! durable `seq` so a door can wait for its record before it answers.
//! With [`SyncPolicy::Within`] a record counts as kept once written to the
//! operating system: a door waiting for its record writes the queue itself
//! (no hand-off to the thread and back), and the thread writes what nobody
//! waits for and `fsync`s, both at least every half interval.
//!
//! With a signing key, the thread also writes signed checkpoints (see
//! [`super::checkpoint`]) of what is on disk: after an fsync, when
//! `checkpoint_interval` has passed or `checkpoint_records` records came
//! since the last one, and once at shutdown after the final write. Every
//! record carries the hash of the bundle in force when it was queued
//! ([`AuditSink::set_bundle`]). One log has one writer: `open` holds the
//! log's lock (see [`super::lock`]) until the log is dropped.
//!
//! Fail closed: once a write, sync, rotation or checkpoint fails — or the
//! file was deleted or replaced under esq — the log stays failed,
//! [`AuditSink::check`] says so and every wait for durability fails, so the
//! doors refuse statements rather than run them unaudited.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch;

use super::checkpoint::{CheckpointOptions, Checkpointer};
use super::files::{self, ChainEnd};
use super::lock::LogLock;
use super::record::{compose, hash_line, GENESIS};
use super::{AuditError, AuditEvent, AuditSink};
use crate::metrics::Metrics;

/// Records allowed to wait for the writer; beyond this `record` refuses
/// (and the door with it) instead of growing memory without bound.
pub const QUEUE_LIMIT: usize = 100_000;

/// The hash-chained, fsynced JSON Lines log.
pub struct AuditLog {
    shared: Arc<Queued>,
    durable: watch::Receiver<Durable>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held until the writer has stopped (fields drop after `drop`).
    _lock: LogLock,
}

/// How a log is written.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A file is closed and the next one started beyond this size.
    pub rotate_bytes: u64,
    pub sync: SyncPolicy,
    /// Signed checkpoints, when esq has a signing key.
    pub checkpoints: Option<CheckpointOptions>,
}

impl LogOptions {
    /// No checkpoints.
    pub fn new(rotate_bytes: u64, sync: SyncPolicy) -> LogOptions {
        LogOptions {
            rotate_bytes,
            sync,
            checkpoints: None,
        }
    }
}

/// What callers and the writer share.
struct Queued {
    queue: Mutex<Queue>,
    wake: Condvar,
    failed: AtomicBool,
    backlog: Gauge,
    path: String,
    sync: SyncPolicy,
    /// Hashes of the lines of cited records, by `seq`, until their
    /// [`AuditSink::record_cited`] takes them.
    cited: Mutex<std::collections::HashMap<u64, String>>,
    /// Whoever holds this writes: the thread, or (with
    /// [`SyncPolicy::Within`]) a door waiting for its record. Taken before
    /// `queue`, so batches reach the file in `seq` order.
    writer: Mutex<Writer>,
}

/// The file, the chain's end, and how progress is published.
struct Writer {
    active: Active,
    buf: Vec<u8>,
    publish: watch::Sender<Durable>,
    metrics: WriterMetrics,
}

struct Queue {
    next_seq: u64,
    items: Vec<Pending>,
    closed: bool,
    /// The bundle hash stamped on records queued from now on.
    bundle: Arc<str>,
}

struct Pending {
    seq: u64,
    time: DateTime<Utc>,
    bundle: Arc<str>,
    event: Vec<u8>,
    /// Keep the hash of this record's line for [`AuditSink::record_cited`].
    cited: bool,
}

/// When the writer syncs what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fsync` every batch before publishing it (`audit.durability = fsync`).
    EveryBatch,
    /// Publish a batch once written; `fsync` at the latest this long after
    /// the first unsynced write (`audit.durability = write`).
    Within(Duration),
}

/// The writer's progress, as callers see it.
#[derive(Debug, Clone)]
struct Durable {
    seq: u64,
    failed: Option<AuditError>,
}

/// The metrics the writer keeps.
struct WriterMetrics {
    write_seconds: Histogram,
    records: Counter,
    backlog: Gauge,
}

impl AuditLog {
    /// Opens the log whose file 0 is `base`, continuing the chain where the
    /// newest file left off, and starts the writer thread. Fails with
    /// [`AuditError::InUse`] while another writer holds the log.
    pub fn open(
        base: &Path,
        options: &LogOptions,
        metrics: &Metrics,
    ) -> Result<AuditLog, AuditError> {
        let sync = options.sync;
        let failed = |reason: String| AuditError::Failed {
            path: base.display().to_string(),
            reason,
        };
        if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let log_lock = LogLock::acquire(base)?;
        let active = Active::resume(base, options.rotate_bytes).map_err(failed)?;
        let checkpointer = match &options.checkpoints {
            Some(checkpoints) => {
                super::checkpoint::check_not_cut(base, checkpoints, active.last_seq, &active.prev)
                    .map_err(failed)?;
                Some(Checkpointer::open(base, checkpoints, active.last_seq).map_err(failed)?)
            }
            None => None,
        };
        let next_seq = active.last_seq + 1;
        let backlog = metrics.audit_backlog.clone();
        let (publish, durable) = watch::channel(Durable {
            seq: active.last_seq,
            failed: None,
        });
        let metrics = WriterMetrics {
            write_seconds: metrics.audit_write_seconds.clone(),
            records: metrics.audit_records.clone(),
            backlog: backlog.clone(),
        };
        let shared = Arc::new(Queued {
            queue: Mutex::new(Queue {
                next_seq,
                items: Vec::new(),
                closed: false,
                bundle: Arc::from(""),
            }),
            wake: Condvar::new(),
            failed: AtomicBool::new(false),
            backlog,
            path: base.display().to_string(),
            sync,
            cited: Mutex::new(std::collections::HashMap::new()),
            writer: Mutex::new(Writer {
                active,
                buf: Vec::with_capacity(64 * 1024),
                publish,
                metrics,
            }),
        });
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("esq-audit".into())
            .spawn(move || write_loop(&thread_shared, checkpointer))
            .map_err(|e| failed(format!("cannot start the writer thread: {e}")))?;
        Ok(AuditLog {
            shared,
            durable,
            writer: Mutex::new(Some(writer)),
            _lock: log_lock,
        })
    }

    /// The highest `seq` known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable.borrow().seq
    }

    /// Queues one record (see [`AuditSink::record`]); `cited`: keep the
    /// hash of its line for [`AuditSink::record_cited`].
    fn queue(&self, event: &AuditEvent<'_>, cited: bool) -> Option<u64> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return None;
        }
        let event = match serde_json::to_vec(event) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(%err, "an audit event could not be serialized");
                return None;
            }
        };
        let mut queue = lock(&self.shared.queue);
        if queue.closed || queue.items.len() >= QUEUE_LIMIT {
            return None;
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let bundle = queue.bundle.clone();
        queue.items.push(Pending {
            seq,
            time: Utc::now(),
            bundle,
            event,
            cited,
        });
        let first = queue.items.len() == 1;
        drop(queue);
        self.shared.backlog.inc();
        // With `Within`, the waiting door writes (or the thread's next round).
        if first && self.shared.sync == SyncPolicy::EveryBatch {
            self.shared.wake.notify_one();
        }
        Some(seq)
    }
}

impl Drop for AuditLog {
    /// Writes what is queued (and the shutdown checkpoint), then stops the
    /// writer; the lock goes last.
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait::async_trait]
impl AuditSink for AuditLog {
    fn record(&self, event: &AuditEvent<'_>) -> Option<u64> {
        self.queue(event, false)
    }

    async fn record_cited(&self, event: &AuditEvent<'_>) -> Result<(u64, String), AuditError> {
        let seq = self.queue(event, true).ok_or(AuditError::NotQueued)?;
        self.durable(seq).await?;
        lock(&self.shared.cited)
            .remove(&seq)
            .map(|hash| (seq, hash))
            .ok_or(AuditError::NotQueued)
    }

    async fn durable(&self, seq: u64) -> Result<(), AuditError> {
        if self.durable.borrow().seq >= seq {
            return Ok(());
        }
        if self.shared.sync != SyncPolicy::EveryBatch && !self.shared.failed.load(Ordering::Relaxed)
        {
            // Written is kept: write the queue now, in this task. Only a
            // `write` (no fsync) happens under the lock, so it is short.
            let mut writer = lock(&self.shared.writer);
            if self.durable.borrow().seq < seq {
                writer.drain(&self.shared);
            }
        }
        let mut durable = self.durable.clone();
        let reached = durable
            .wait_for(|d| d.seq >= seq || d.failed.is_some())
            .await
            .map_err(|_| AuditError::Closed)?;
        match &*reached {
            d if d.seq >= seq => Ok(()),
            d => Err(d.failed.clone().unwrap_or(AuditError::Closed)),
        }
    }

    fn check(&self) -> Result<(), AuditError> {
        if !self.shared.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        Err(self
            .durable
            .borrow()
            .failed
            .clone()
            .unwrap_or(AuditError::Failed {
                path: self.shared.path.clone(),
                reason: "an earlier write failed".into(),
            }))
    }

    fn set_bundle(&self, hash: &str) {
        lock(&self.shared.queue).bundle = Arc::from(hash);
    }
}

fn write_loop(shared: &Queued, mut checkpoints: Option<Checkpointer>) {
    loop {
        let closed = {
            let mut queue = lock(&shared.queue);
            // Records waiting for a checkpoint wake the thread in time.
            let deadline = checkpoints.as_ref().and_then(Checkpointer::deadline);
            match shared.sync {
                SyncPolicy::EveryBatch => {
                    while queue.items.is_empty() && !queue.closed {
                        let Some(deadline) = deadline else {
                            queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                            continue;
                        };
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        queue = shared
                            .wake
                            .wait_timeout(queue, deadline - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
                SyncPolicy::Within(interval) if !queue.closed => {
                    let wait = match deadline {
                        Some(d) => (interval / 2).min(d.saturating_duration_since(Instant::now())),
                        None => interval / 2,
                    };
                    queue = shared
                        .wake
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                SyncPolicy::Within(_) => {}
            }
            queue.closed
        };
        let (unsynced, end) = {
            let mut writer = lock(&shared.writer);
            if !writer.drain(shared) {
                return;
            }
            let checked = match shared.sync {
                SyncPolicy::EveryBatch => Ok(()),
                SyncPolicy::Within(_) => writer.active.check_identity(),
            };
            // What this round's fsync makes durable (every batch is synced
            // already with `EveryBatch`).
            let end = (writer.active.last_seq, writer.active.prev.clone());
            match checked.and_then(|()| writer.active.unsynced()) {
                Ok(file) => (file, end),
                Err(reason) => {
                    writer.fail(shared, reason);
                    return;
                }
            }
        };
        // The fsync runs without the lock: doors keep writing meanwhile.
        if let Some((file, path)) = unsynced {
            if let Err(e) = file.sync_data() {
                lock(&shared.writer).fail(shared, format!("fsync of {}: {e}", path.display()));
                return;
            }
        }
        if let Some(checkpoints) = checkpoints.as_mut() {
            let (seq, hash) = end;
            let due = if closed {
                checkpoints.due_at_close(seq)
            } else {
                checkpoints.due(seq)
            };
            if due {
                if let Err(reason) = checkpoints.write(seq, &hash) {
                    lock(&shared.writer).fail(shared, reason);
                    return;
                }
            }
        }
        if closed {
            return;
        }
    }
}

impl Writer {
    /// Appends whatever is queued and publishes it; `false` once the log
    /// has failed.
    fn drain(&mut self, shared: &Queued) -> bool {
        if shared.failed.load(Ordering::Relaxed) {
            return false;
        }
        let batch = std::mem::take(&mut lock(&shared.queue).items);
        if batch.is_empty() {
            return true;
        }
        let started = Instant::now();
        let written = self.active.append(&batch, &mut self.buf).and_then(|last| {
            if shared.sync == SyncPolicy::EveryBatch {
                self.active.sync()?;
                // With `Within`, the thread checks at each of its rounds.
                self.active.check_identity()?;
            }
            Ok(last)
        });
        match written {
            Ok(last) => {
                self.metrics
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.records.inc_by(batch.len() as u64);
                self.metrics.backlog.dec_by(batch.len() as i64);
                if !self.active.cited.is_empty() {
                    lock(&shared.cited).extend(self.active.cited.drain(..));
                }
                self.publish.send_modify(|d| d.seq = last);
                true
            }
            Err(reason) => {
                self.fail(shared, reason);
                false
            }
        }
    }

    /// The log failed: it stays failed, and every wait for durability fails.
    fn fail(&mut self, shared: &Queued, reason: String) {
        let error = AuditError::Failed {
            path: self.active.path.display().to_string(),
            reason,
        };
        tracing::error!(%error, "the audit log failed: esq refuses statements until it is fixed and esq restarted");
        shared.failed.store(true, Ordering::Relaxed);
        lock(&shared.queue).closed = true;
        self.publish.send_modify(|d| d.failed = Some(error));
    }
}

/// The file being appended to and the chain's end.
struct Active {
    base: PathBuf,
    number: u32,
    path: PathBuf,
    file: File,
    /// (device, inode) of `file`: the path must still lead to it.
    identity: (u64, u64),
    size: u64,
    rotate_bytes: u64,
    last_seq: u64,
    prev: String,
    /// Written since the last fsync.
    unsynced: bool,
    /// Hashes of cited records written and not yet handed over.
    cited: Vec<(u64, String)>,
}

impl Active {
    /// Finds where the chain ended and the file to continue in: the newest
    /// one, unless it is full or ends in an incomplete record.
    fn resume(base: &Path, rotate_bytes: u64) -> Result<Active, String> {
        let found =
            files::existing(base).map_err(|e| format!("cannot list the log's files: {e}"))?;
        let mut end: Option<ChainEnd> = None;
        let mut newest: Option<(u32, files::Tail)> = None;
        for (n, path) in found.iter().rev() {
            let tail =
                files::tail(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if newest.is_none() {
                newest = Some((*n, tail.clone()));
            }
            if tail.end.is_some() {
                end = tail.end;
                break;
            }
        }
        let number = match &newest {
            None => 0,
            Some((n, tail)) if tail.torn => {
                tracing::warn!(
                    file = %files::numbered(base, *n).display(),
                    "the audit log ends in an incomplete record (a crash during a write, never reported durable); the chain continues in a new file"
                );
                n + 1
            }
            Some((n, tail)) if tail.len >= rotate_bytes => n + 1,
            Some((n, _)) => *n,
        };
        let (last_seq, prev) = end
            .map(|e| (e.seq, e.hash))
            .unwrap_or((0, GENESIS.to_string()));
        let path = files::numbered(base, number);
        let (file, identity, size) = open_append(&path, number)?;
        Ok(Active {
            base: base.to_path_buf(),
            number,
            path,
            file,
            identity,
            size,
            rotate_bytes,
            last_seq,
            prev,
            unsynced: false,
            cited: Vec::new(),
        })
    }

    /// A handle to fsync what was written and not yet synced (taken as
    /// synced), to sync without holding the writer.
    fn unsynced(&mut self) -> Result<Option<(File, PathBuf)>, String> {
        if !std::mem::take(&mut self.unsynced) {
            return Ok(None);
        }
        let file = self
            .file
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", self.path.display()))?;
        Ok(Some((file, self.path.clone())))
    }

    /// Fsyncs what was written and not yet synced.
    fn sync(&mut self) -> Result<(), String> {
        if std::mem::take(&mut self.unsynced) {
            self.file
                .sync_data()
                .map_err(|e| format!("fsync of {}: {e}", self.path.display()))?;
        }
        Ok(())
    }

    /// Appends `batch` (rotating when a file is full); the last `seq`
    /// written.
    fn append(&mut self, batch: &[Pending], buf: &mut Vec<u8>) -> Result<u64, String> {
        buf.clear();
        for pending in batch {
            let line = compose(
                pending.seq,
                &self.prev,
                &pending.time,
                &pending.bundle,
                &pending.event,
            );
            let pending_size = self.size + buf.len() as u64;
            if pending_size > 0 && pending_size + line.len() as u64 + 1 > self.rotate_bytes {
                self.write_out(buf)?;
                self.rotate()?;
            }
            self.prev = hash_line(&line);
            self.last_seq = pending.seq;
            if pending.cited {
                self.cited.push((pending.seq, self.prev.clone()));
            }
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        self.write_out(buf)?;
        Ok(self.last_seq)
    }

    fn write_out(&mut self, buf: &mut Vec<u8>) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(buf)
            .map_err(|e| format!("write to {}: {e}", self.path.display()))?;
        self.unsynced = true;
        self.size += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// The path still leads to the file being written: not deleted, moved
    /// or replaced.
    fn check_identity(&self) -> Result<(), String> {
        let file = self.path.display();
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => Ok(()),
            Ok(_) => Err(format!("{file} was replaced by another file")),
            Err(e) => Err(format!("{file} was deleted or moved: {e}")),
        }
    }

    /// Closes the full file (synced, and still the one its path names) and
    /// continues in the next.
    fn rotate(&mut self) -> Result<(), String> {
        self.sync()?;
        self.check_identity()?;
        self.number += 1;
        self.path = files::numbered(&self.base, self.number);
        let (file, identity, size) = open_append(&self.path, self.number)?;
        self.file = file;
        self.identity = identity;
        self.size = size;
        Ok(())
    }
}

/// Opens (creating) `path` for appending, and makes its directory entry
/// durable. A rotated file (`number > 0`) is locked while it is written;
/// file 0 is locked for the log's life by [`LogLock`].
fn open_append(path: &Path, number: u32) -> Result<(File, (u64, u64), u64), String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if number > 0 {
        super::lock::lock_rotated(&file, path)?;
    }
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))?;
    }
    Ok((file, (meta.dev(), meta.ino()), meta.len()))
}

#[cfg(test)]
mod tests;
