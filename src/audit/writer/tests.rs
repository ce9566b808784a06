//! The writer against a real directory: chain, group commit, rotation,
//! resuming after a torn write, failing closed.

use super::*;
use crate::audit::verify::verify_files;
use crate::audit::AuditKind;
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
    let log = AuditLog::open(&base, 1 << 20, SyncPolicy::EveryBatch, &metrics)
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
    let log = AuditLog::open(&base, 1 << 20, SyncPolicy::EveryBatch, &metrics)
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
    let log = AuditLog::open(&base, 2048, SyncPolicy::EveryBatch, &metrics)
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
    let log = AuditLog::open(&base, 1 << 20, SyncPolicy::EveryBatch, &metrics)
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..5 {
        log.record(&event(&format!("u{i}")));
    }
    drop(log);
    let mut bytes = std::fs::read(&base).unwrap_or_default();
    bytes.extend_from_slice(br#"{"seq":6,"prev":"abc","ti"#);
    std::fs::write(&base, bytes).unwrap_or_else(|e| panic!("{e}"));

    let log = AuditLog::open(&base, 1 << 20, SyncPolicy::EveryBatch, &metrics)
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
    let log = AuditLog::open(&base, 1 << 20, SyncPolicy::EveryBatch, &metrics)
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
    let log = AuditLog::open(&base, 1 << 20, policy, &metrics).unwrap_or_else(|e| panic!("{e}"));
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
    let log = AuditLog::open(&base, 2048, policy, &metrics).unwrap_or_else(|e| panic!("{e}"));
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
