//! Tests of [`super`] (package.rs).

use super::*;
use crate::exports::csv_sink::{ColumnSpec, CsvSink};

fn csv(dir: &Path, name: &str, rows: u64) -> CsvFile {
    let columns = [
        ColumnSpec {
            name: "id".into(),
            r#type: "int8".into(),
        },
        ColumnSpec {
            name: "state".into(),
            r#type: "text".into(),
        },
    ];
    let mut sink = CsvSink::create_typed(&dir.join(name), &columns).unwrap();
    for i in 0..rows {
        let id = i.to_string();
        sink.write_row(&[
            Some(id.as_bytes()),
            (i % 7 != 0).then_some(b"CA".as_slice()),
        ])
        .unwrap();
    }
    sink.finish().unwrap()
}

fn bundle(dir: &Path) -> (Manifest, PathBuf) {
    let files = vec![csv(dir, "a.csv", 1000), csv(dir, "b.csv", 0)];
    let mut manifest = Manifest::new("E-1", "burial_2024", files);
    manifest.hash_fields = vec!["id".into()];
    manifest.hash_mode = "hmac-sha256".into();
    manifest.scope = serde_json::json!({"fields": ["id", "state"]});
    let out = dir.join("bundle.zip");
    package(&manifest, &out).unwrap();
    (manifest, out)
}

/// The entries of a ZIP, in order.
fn entries(zip_path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(File::open(zip_path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().unwrap().to_string(), bytes)
        })
        .collect()
}

fn rezip(entries: &[(String, Vec<u8>)], out: &Path) {
    let mut zip = zip::ZipWriter::new(File::create(out).unwrap());
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn verify_error(entries: &[(String, Vec<u8>)], dir: &Path) -> String {
    let path = dir.join("tampered.zip");
    let _ = std::fs::remove_file(&path);
    rezip(entries, &path);
    verify(&path).map(|_| ()).unwrap_err().to_string()
}

fn with_manifest(entries: &mut [(String, Vec<u8>)], edit: impl Fn(&mut serde_json::Value)) {
    let mut json: serde_json::Value = serde_json::from_slice(&entries[2].1).unwrap();
    edit(&mut json);
    entries[2].1 = serde_json::to_vec_pretty(&json).unwrap();
    entries[3].1 = sums_line(&entries[2].1).into_bytes();
}

#[test]
fn a_package_verifies_and_lists_its_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (manifest, out) = bundle(dir.path());
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let back = verify(&out).unwrap();
    assert_eq!(back.format, FORMAT);
    assert_eq!(back.job, "E-1");
    assert_eq!(back.scope, manifest.scope);
    assert_eq!(back.created_at, manifest.created_at);
    let listed: Vec<_> = back
        .files
        .iter()
        .map(|f| (&f.name, f.rows, &f.sha256))
        .collect();
    let written: Vec<_> = manifest
        .files
        .iter()
        .map(|f| (&f.name, f.rows, &f.sha256))
        .collect();
    assert_eq!(listed, written);

    let names: Vec<String> = entries(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a.csv", "b.csv", MANIFEST, MANIFEST_SHA256]);
    let all = entries(&out);
    assert_eq!(all[0].1, std::fs::read(&manifest.files[0].path).unwrap());
    assert_eq!(all[3].1, sums_line(&all[2].1).into_bytes());
    assert!(String::from_utf8_lossy(&all[3].1).ends_with("  manifest.json\n"));
    assert!(matches!(
        package(&manifest, &out),
        Err(BundleError::Exists { .. })
    ));
}

#[test]
fn tampering_with_the_package_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = bundle(dir.path());
    let good = entries(&out);
    let untouched = dir.path().join("untouched.zip");
    rezip(&good, &untouched);
    verify(&untouched).unwrap();

    let mut e = good.clone();
    e[2].1 = String::from_utf8(e[2].1.clone())
        .unwrap()
        .replace("E-1", "E-2")
        .into_bytes();
    assert!(verify_error(&e, dir.path()).contains("does not match manifest.sha256"));

    let mut e = good.clone();
    e[0].1.extend_from_slice(b"1001,CA\n");
    assert!(verify_error(&e, dir.path()).contains("a.csv: data row 1001"));

    let mut e = good.clone();
    let at = e[0].1.len() - 3;
    e[0].1[at] = b'X';
    assert!(verify_error(&e, dir.path()).contains("a.csv: its SHA-256 differs"));

    let mut e = good.clone();
    with_manifest(&mut e, |m| m["files"][0]["rows"] = 999.into());
    assert!(verify_error(&e, dir.path()).contains("a.csv: its row count differs"));

    let mut e = good.clone();
    with_manifest(&mut e, |m| {
        m["files"][0]["columns"][0]["type"] = "date".into()
    });
    assert!(verify_error(&e, dir.path()).contains("not a valid date"));

    let mut e = good.clone();
    with_manifest(&mut e, |m| m["extra"] = true.into());
    assert!(verify_error(&e, dir.path()).contains("not an esq export manifest"));

    let mut e = good.clone();
    e.push(("notes.txt".into(), b"hello".to_vec()));
    assert!(verify_error(&e, dir.path()).contains("does not list (\"notes.txt\")"));

    let mut e = good.clone();
    e.remove(1);
    assert!(verify_error(&e, dir.path()).contains("missing"));

    let mut e = good.clone();
    e.remove(3);
    assert!(verify_error(&e, dir.path()).contains("manifest.sha256 is missing"));

    let mut e = good.clone();
    with_manifest(&mut e, |m| m["files"][1]["name"] = "../b.csv".into());
    e[1].0 = "../b.csv".into();
    assert!(verify_error(&e, dir.path()).contains("not a plain, unique name"));

    let junk = dir.path().join("junk.zip");
    std::fs::write(&junk, b"PK not really").unwrap();
    assert!(verify(&junk)
        .unwrap_err()
        .to_string()
        .contains("not a readable ZIP"));
}

#[test]
fn a_csv_changed_after_finish_is_not_packaged() {
    let dir = tempfile::tempdir().unwrap();
    let file = csv(dir.path(), "a.csv", 10);
    std::fs::write(&file.path, b"id,state\n1,NY\n").unwrap();
    let out = dir.path().join("bundle.zip");
    let err = package(&Manifest::new("E-1", "d", vec![file]), &out).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was written"),
        "{err}"
    );
    assert!(!out.exists(), "a failed package leaves nothing behind");
    assert!(package(&Manifest::new("E-1", "d", vec![]), &out).is_err());
}

#[test]
fn temp_files_vanish_unless_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    {
        let mut tmp = TempFile::new(&dest).unwrap();
        tmp.file().write_all(b"half").unwrap();
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let mut tmp = TempFile::new(&dest).unwrap();
    tmp.file().write_all(b"whole").unwrap();
    tmp.persist().unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
