//! The writer against a real directory: chain, group commit, rotation,
//! resuming after a torn write, failing closed.

use super::*;
use crate::audit::verify::verify_files;
use crate::audit::{AuditKind, CheckpointOptions};
use crate::metrics::Door;

fn event(user: &str) -> AuditEvent<'_> {
    AuditEvent {
        fingerprint: format!("fp-{user}"),
        ..AuditEvent::event(AuditKind::Decision, Door::pg, user)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn files_of(base: &Path) -> Vec<PathBuf> {
    files::existing(base)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn records_are_numbered_chained_durable_and_continue_after_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let metrics = Metrics::new();
    let log = AuditLog::open(
        &base,
        &LogOptions::new(1 << 20, SyncPolicy::EveryBatch),
        &metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seqs: Vec<_> = (0..50)
        .map(|i| log.record(&event(&format!("u{i}"))))
        .collect();
    assert_eq!(seqs.first().copied().flatten(), Some(1));
    assert_eq!(seqs.last().copied().flatten(), Some(50));
    runtime()
        .block_on(log.durable(50))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(log.durable_seq() >= 50);
    drop(log);
    let log = AuditLog::open(
        &base,
        &LogOptions::new(1 << 20, SyncPolicy::EveryBatch),
        &metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.record(&event("after")), Some(51));
    drop(log);
    let report = verify_files(&files_of(&base)).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 51);
    assert!(report.from_genesis);
    let text = std::fs::read_to_string(&base).unwrap_or_default();
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(first["kind"], "decision");
    assert_eq!(first["user"], "u0");
    assert_eq!(first["door"], "pg");
    assert_eq!(first["prev"], GENESIS);
}

#[test]
fn rotation_starts_numbered_files_and_the_chain_runs_through_them() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let metrics = Metrics::new();
    let log = AuditLog::open(
        &base,
        &LogOptions::new(2048, SyncPolicy::EveryBatch),
        &metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..100 {
        log.record(&event(&format!("user-{i}")));
    }
    drop(log);
    let files = files_of(&base);
    assert!(files.len() > 3, "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("audit.000001.jsonl")));
    for file in &files {
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        assert!(size <= 2048, "{} is {size} bytes", file.display());
    }
    let report = verify_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 100);
}

#[test]
fn a_torn_last_record_starts_a_new_file_chained_to_the_last_complete_one() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let metrics = Metrics::new();
    let log = AuditLog::open(
        &base,
        &LogOptions::new(1 << 20, SyncPolicy::EveryBatch),
        &metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..5 {
        log.record(&event(&format!("u{i}")));
    }
    drop(log);
    let mut bytes = std::fs::read(&base).unwrap_or_default();
    bytes.extend_from_slice(br#"{"seq":6,"prev":"abc","ti"#);
    std::fs::write(&base, bytes).unwrap_or_else(|e| panic!("{e}"));

    let log = AuditLog::open(
        &base,
        &LogOptions::new(1 << 20, SyncPolicy::EveryBatch),
        &metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.record(&event("next")), Some(6));
    drop(log);
    let files = files_of(&base);
    assert_eq!(files.len(), 2, "{files:?}");
    let report = verify_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 6);
    assert_eq!(report.torn.len(), 1);
}

#[test]
fn a_deleted_log_fails_closed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let metrics = Metrics::new();
    let log = AuditLog::open(
        &base,
        &LogOptions::new(1 << 20, SyncPolicy::EveryBatch),
        &metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    let first = log.record(&event("a")).unwrap_or(0);
    rt.block_on(log.durable(first))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(log.check().is_ok());
    std::fs::remove_file(&base).unwrap_or_else(|e| panic!("{e}"));
    let second = log.record(&event("b")).unwrap_or(0);
    let waited = rt.block_on(log.durable(second));
    assert!(
        matches!(&waited, Err(AuditError::Failed { reason, .. }) if reason.contains("deleted")),
        "{waited:?}"
    );
    assert!(log.check().is_err());
    assert_eq!(log.record(&event("c")), None);
}

#[test]
fn write_durability_answers_once_written_and_syncs_on_close() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let metrics = Metrics::new();
    // An hour between fsyncs: waiting for one would hang this test.
    let policy = SyncPolicy::Within(Duration::from_secs(3600));
    let log = AuditLog::open(&base, &LogOptions::new(1 << 20, policy), &metrics)
        .unwrap_or_else(|e| panic!("{e}"));
    let seq = log.record(&event("w")).unwrap_or_else(|| panic!("queued"));
    runtime()
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), log.durable(seq)).await })
        .unwrap_or_else(|_| panic!("durable waited for the fsync"))
        .unwrap_or_else(|e| panic!("{e}"));
    // Written to the file (the OS has it) before any fsync.
    let text = std::fs::read_to_string(&base).unwrap_or_default();
    assert!(text.contains("\"user\":\"w\""), "{text}");
    drop(log);
    let report = verify_files(&files_of(&base)).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 1);
}

#[test]
fn write_durability_keeps_the_chain_across_rotations_and_idle_syncs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let metrics = Metrics::new();
    let policy = SyncPolicy::Within(Duration::from_millis(20));
    let log = AuditLog::open(&base, &LogOptions::new(2048, policy), &metrics)
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    for i in 0..60 {
        let seq = log
            .record(&event(&format!("r{i}")))
            .unwrap_or_else(|| panic!("queued"));
        rt.block_on(log.durable(seq))
            .unwrap_or_else(|e| panic!("{e}"));
        if i % 20 == 0 {
            // Idle past the interval: the writer syncs without new records.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(log.check().is_ok());
    drop(log);
    let files = files_of(&base);
    assert!(files.len() > 1, "rotated");
    let report = verify_files(&files).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 60);
}

fn signed(records: u64, copy: Option<PathBuf>) -> (LogOptions, Arc<crate::signing::SigningKey>) {
    let key = Arc::new(crate::signing::SigningKey::generate());
    let options = LogOptions {
        checkpoints: Some(CheckpointOptions {
            key: key.clone(),
            interval: Duration::from_secs(3600),
            records,
            copy,
        }),
        ..LogOptions::new(1 << 20, SyncPolicy::EveryBatch)
    };
    (options, key)
}

#[test]
fn every_record_carries_the_bundle_in_force_when_it_was_queued() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let log = AuditLog::open(
        &base,
        &LogOptions::new(1 << 20, SyncPolicy::EveryBatch),
        &Metrics::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    log.record(&event("before"));
    log.set_bundle("aaaa");
    log.record(&event("first"));
    log.set_bundle("bbbb");
    log.record(&event("second"));
    drop(log);
    let text = std::fs::read_to_string(&base).unwrap_or_default();
    let bundles: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default())
        .map(|r| r["bundle"].as_str().unwrap_or("-").to_string())
        .collect();
    assert_eq!(bundles, ["-", "aaaa", "bbbb"]);
    assert!(
        text.contains(r#"Z","bundle":"aaaa","kind":"decision""#),
        "{text}"
    );
    let report = verify_files(&files_of(&base)).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
}

#[test]
fn checkpoints_follow_the_record_count_and_shutdown_and_verify() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let copy = dir.path().join("elsewhere.checkpoints");
    let (options, key) = signed(10, Some(copy.clone()));
    let log = AuditLog::open(&base, &options, &Metrics::new()).unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    for i in 0..35 {
        let seq = log
            .record(&event(&format!("u{i}")))
            .unwrap_or_else(|| panic!("queued"));
        // One record per batch, so the count is exact.
        rt.block_on(log.durable(seq))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    drop(log);
    let path = files::checkpoints_path(&base);
    let written = crate::audit::checkpoint::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let seqs: Vec<u64> = written.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [10, 20, 30, 35], "every 10 records and at shutdown");
    assert!(written.iter().all(|c| c.origin == "esq audit audit.jsonl"));
    assert_eq!(
        crate::audit::checkpoint::read(&copy).unwrap_or_default(),
        written,
        "the copy holds the same checkpoints"
    );
    let report =
        crate::audit::verify::verify_log(&base, key.public()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{report:?}");
    let found = report.checkpoints.unwrap_or_default();
    assert_eq!(
        (found.matched, found.newest_seq, found.uncovered),
        (4, Some(35), 0)
    );

    // A restart with nothing new still checkpoints once at shutdown.
    let log = AuditLog::open(&base, &options, &Metrics::new()).unwrap_or_else(|e| panic!("{e}"));
    drop(log);
    let again = crate::audit::checkpoint::read(&path).unwrap_or_default();
    assert_eq!(
        again.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [10, 20, 30, 35, 35]
    );
}

#[test]
fn a_checkpoint_falls_due_by_time_while_the_log_is_idle() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let (mut options, _) = signed(1_000_000, None);
    if let Some(checkpoints) = options.checkpoints.as_mut() {
        checkpoints.interval = Duration::from_millis(100);
    }
    let log = AuditLog::open(&base, &options, &Metrics::new()).unwrap_or_else(|e| panic!("{e}"));
    let seq = log.record(&event("a")).unwrap_or(0);
    runtime()
        .block_on(log.durable(seq))
        .unwrap_or_else(|e| panic!("{e}"));
    let path = files::checkpoints_path(&base);
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::audit::checkpoint::read(&path)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no checkpoint after the interval"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = crate::audit::checkpoint::read(&path).unwrap_or_default();
    assert_eq!(written.iter().map(|c| c.seq).collect::<Vec<_>>(), [1]);
    drop(log);
}

#[test]
fn a_checkpoint_that_cannot_be_written_fails_the_log_closed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    // Writes to /dev/full fail with "no space left on device".
    let (options, _) = signed(1, Some(PathBuf::from("/dev/full")));
    let log = AuditLog::open(&base, &options, &Metrics::new()).unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    let seq = log.record(&event("a")).unwrap_or(0);
    // The record itself was durable before the checkpoint was attempted.
    let _ = rt.block_on(log.durable(seq));
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.check().is_ok() {
        assert!(Instant::now() < deadline, "the log did not fail");
        std::thread::sleep(Duration::from_millis(10));
    }
    let error = log
        .check()
        .map(|()| String::new())
        .unwrap_or_else(|e| e.to_string());
    assert!(error.contains("/dev/full"), "{error}");
    assert_eq!(log.record(&event("b")), None);

    let missing = dir.path().join("no-such-dir").join("copy.checkpoints");
    let (options, _) = signed(1, Some(missing));
    drop(log);
    let refused = AuditLog::open(&base, &options, &Metrics::new()).map(|_| ());
    let text = refused
        .map(|()| String::new())
        .unwrap_or_else(|e| e.to_string());
    assert!(text.contains("no-such-dir"), "{text}");
}

#[test]
fn a_second_writer_is_refused_while_the_first_keeps_its_chain() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let metrics = Metrics::new();
    let options = LogOptions::new(1 << 20, SyncPolicy::EveryBatch);
    let first = AuditLog::open(&base, &options, &metrics).unwrap_or_else(|e| panic!("{e}"));
    first.record(&event("a"));
    let second = AuditLog::open(&base, &options, &metrics).map(|_| ());
    let text = second
        .map(|()| String::new())
        .unwrap_or_else(|e| e.to_string());
    assert!(text.contains(&base.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(text.contains("one writer per log"), "{text}");
    let seq = first.record(&event("b")).unwrap_or(0);
    runtime()
        .block_on(first.durable(seq))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(first);
    let report = verify_files(&files_of(&base)).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 2);
    // Released with the first log: a restart opens it.
    assert!(AuditLog::open(&base, &options, &metrics).is_ok());
}

#[test]
fn with_write_durability_checkpoints_cover_only_synced_records_and_verify() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().join("audit.jsonl");
    let (mut options, key) = signed(3, None);
    options.sync = SyncPolicy::Within(Duration::from_millis(20));
    options.rotate_bytes = 2048;
    let log = AuditLog::open(&base, &options, &Metrics::new()).unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    for i in 0..40 {
        let seq = log
            .record(&event(&format!("w{i}")))
            .unwrap_or_else(|| panic!("queued"));
        rt.block_on(log.durable(seq))
            .unwrap_or_else(|e| panic!("{e}"));
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    drop(log);
    let report =
        crate::audit::verify::verify_log(&base, key.public()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{report:?}");
    let found = report.checkpoints.unwrap_or_default();
    assert!(found.count >= 2, "{found:?}");
    assert_eq!(found.matched, found.count);
    assert_eq!((found.newest_seq, found.uncovered), (Some(40), 0));
}
