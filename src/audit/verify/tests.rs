//! Chains and checkpoints made here, each kind of damage named.

use super::*;
use crate::audit::record::compose;

fn chain(n: u64) -> Vec<Vec<u8>> {
    let mut prev = GENESIS.to_string();
    let time = chrono::Utc::now();
    (1..=n)
        .map(|seq| {
            let event = format!(r#"{{"kind":"decision","user":"u{seq}"}}"#);
            let line = compose(seq, &prev, &time, "", event.as_bytes());
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

/// Checkpoints of `lines` at `seqs`, signed by `key`, in a file.
fn checkpoints(
    dir: &Path,
    key: &crate::signing::SigningKey,
    lines: &[Vec<u8>],
    seqs: &[u64],
) -> PathBuf {
    let path = dir.join("log.checkpoints");
    let mut bytes = Vec::new();
    for seq in seqs {
        let hash = hash_line(&lines[*seq as usize - 1]);
        let made = Checkpoint::sign(key, "esq audit log.jsonl", *seq, &hash);
        bytes.extend_from_slice(&serde_json::to_vec(&made).unwrap_or_default());
        bytes.push(b'\n');
    }
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn with_checkpoints(
    dir: &Path,
    lines: &[Vec<u8>],
    checkpoints: &Path,
    key: &PublicKey,
) -> VerifyReport {
    let path = write(dir, "log.jsonl", lines);
    verify_with_checkpoints(&[path], checkpoints, key).unwrap_or_else(|e| panic!("{e}"))
}

fn checkpoint_problem(report: &VerifyReport) -> String {
    report
        .checkpoints
        .as_ref()
        .and_then(|c| c.problem.as_ref())
        .map(|p| p.what.clone())
        .unwrap_or_default()
}

#[test]
fn checkpoints_show_a_cut_end_a_rewritten_tail_and_a_forgery() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = crate::signing::SigningKey::generate();
    let public = key.public();
    let lines = chain(10);
    let file = checkpoints(dir.path(), &key, &lines, &[4, 8]);

    let intact = with_checkpoints(dir.path(), &lines, &file, public);
    assert!(intact.ok(), "{intact:?}");
    let found = intact.checkpoints.clone().unwrap_or_default();
    assert_eq!((found.count, found.matched), (2, 2));
    assert_eq!(found.newest_seq, Some(8));
    assert_eq!(found.uncovered, 2);
    assert_eq!(found.key_id, public.id());
    assert!(found.newest_at().is_some_and(|t| t <= chrono::Utc::now()));

    // The last three records cut: the chain alone still verifies.
    let cut = with_checkpoints(dir.path(), &lines[..7], &file, public);
    assert!(cut.problem.is_none());
    assert!(!cut.ok());
    let what = checkpoint_problem(&cut);
    assert!(
        what.starts_with("records 8..8 are missing: the log ends at seq 7"),
        "{what}"
    );

    // Record 3 edited and the chain recomputed after it.
    let mut prev = hash_line(&lines[1]);
    let time = chrono::Utc::now();
    let mut rewritten = lines[..2].to_vec();
    for seq in 3..=10u64 {
        let user = if seq == 3 {
            "someone".into()
        } else {
            format!("u{seq}")
        };
        let event = format!(r#"{{"kind":"decision","user":"{user}"}}"#);
        let line = compose(seq, &prev, &time, "", event.as_bytes());
        prev = hash_line(&line);
        rewritten.push(line);
    }
    let report = with_checkpoints(dir.path(), &rewritten, &file, public);
    assert!(report.problem.is_none(), "the chain itself holds");
    let what = checkpoint_problem(&report);
    assert!(
        what.starts_with("record 4 was rewritten: its hash differs from the checkpoint of"),
        "{what}"
    );

    // A checkpoint signed by another key.
    let other = crate::signing::SigningKey::generate();
    let forged = checkpoints(dir.path(), &other, &lines, &[4]);
    let report = with_checkpoints(dir.path(), &lines, &forged, public);
    assert!(!report.ok());
    let what = checkpoint_problem(&report);
    assert!(
        what.contains("line 1 is not signed by key") && what.contains(public.id()),
        "{what}"
    );

    // A line that is not a checkpoint.
    std::fs::write(&forged, "{}\n").unwrap_or_else(|e| panic!("{e}"));
    let report = with_checkpoints(dir.path(), &lines, &forged, public);
    assert!(checkpoint_problem(&report).contains("line 1 is not a checkpoint"));

    // A missing checkpoints file is unreadable, not a verdict.
    let path = write(dir.path(), "log.jsonl", &lines);
    let missing = verify_with_checkpoints(&[path], &dir.path().join("nope"), public);
    assert!(missing.is_err());
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
