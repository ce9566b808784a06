//! The export bundle format as an operator meets it: a bundle built with
//! the library (CsvSink → package → seal) decrypts with the real
//! `esq export decrypt` to the very CSV that was written; any flipped bit,
//! cut or extra byte makes it fail and leaves no output; `esq kek rotate`
//! moves bundles to a new KEK without changing what they decrypt to, and
//! can be run again.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::process::{esq_command, Run};
use esq::exports::csv_sink::{ColumnSpec, CsvSink};
use esq::exports::envelope;
use esq::exports::kek::{FileKek, Kek};
use esq::exports::package::{self, Manifest};
use serde_json::Value;
use sha2::{Digest, Sha256};

const ROWS: u64 = 5_000;

/// A KEK made by `esq kek generate` and sealed bundles under it.
struct Fixture {
    dir: tempfile::TempDir,
    kek: PathBuf,
    exports: PathBuf,
}

/// One sealed bundle and what went into it.
struct Bundle {
    enc: PathBuf,
    csv: Vec<u8>,
    zip_sha256: String,
    csv_sha256: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kek = dir.path().join("kek");
        let exports = dir.path().join("exports");
        std::fs::create_dir(&exports).unwrap();
        let run = esq(&["kek", "generate", "--out", &kek.display().to_string()]);
        assert_eq!(run.status, 0, "{}", run.stderr);
        let id = run.stdout.trim();
        assert!(id.starts_with("file:") && id.len() == 21, "{id}");
        assert_eq!(FileKek::load(&kek).unwrap().id(), id);
        assert_eq!(mode(&kek), 0o600);
        Fixture { dir, kek, exports }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds `<exports>/<job>.enc` through the library, as export jobs do.
    fn bundle(&self, job: &str) -> Bundle {
        let work = self.path(&format!("work-{job}"));
        std::fs::create_dir(&work).unwrap();
        let columns = [
            ("id", "int8"),
            ("state", "text"),
            ("died", "date"),
            ("note", "text"),
        ]
        .map(|(name, ty)| ColumnSpec {
            name: name.into(),
            r#type: ty.into(),
        });
        let mut sink = CsvSink::create_typed(&work.join("answer.csv"), &columns).unwrap();
        for i in 0..ROWS {
            let id = i.to_string();
            let died = format!("20{:02}-{:02}-{:02}", i % 25, i % 12 + 1, i % 28 + 1);
            // Hashes keep the ZIP from compressing to a single chunk.
            let note = format!("{}, \"quoted\"\nline {i}", hex::encode(Sha256::digest(&id)));
            sink.write_row(&[
                Some(id.as_bytes()),
                (i % 9 != 0).then_some(b"CA".as_slice()),
                Some(died.as_bytes()),
                Some(note.as_bytes()),
            ])
            .unwrap();
        }
        let csv = sink.finish().unwrap();
        assert_eq!(
            esq::exports::csv_sink::validate_csv(&csv.path, &csv.columns).unwrap(),
            ROWS
        );
        let manifest = Manifest::new(job, "burial_2024", vec![csv.clone()]);
        let zip = work.join("bundle.zip");
        let packaged = package::package(&manifest, &zip).unwrap();
        let kek = FileKek::load(&self.kek).unwrap();
        let enc = self.exports.join(format!("{job}.enc"));
        let sealed = envelope::seal(&kek, job, &zip, &enc).unwrap();
        assert!(
            sealed.bytes > 3 * envelope::CHUNK as u64,
            "several chunks: {} bytes",
            sealed.bytes
        );
        assert_eq!(mode(&enc), 0o600);
        Bundle {
            enc,
            csv: std::fs::read(&csv.path).unwrap(),
            zip_sha256: packaged.sha256,
            csv_sha256: csv.sha256,
        }
    }

    /// `esq export decrypt --in enc --out out --kek-file kek`.
    fn decrypt(&self, enc: &Path, out: &Path, kek: &Path) -> Run {
        esq(&[
            "export",
            "decrypt",
            "--in",
            &enc.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--kek-file",
            &kek.display().to_string(),
        ])
    }

    /// Decrypts `bytes` (written to a file) and expects a clean failure.
    fn refused(&self, bytes: &[u8], what: &str) {
        let damaged = self.path("damaged.enc");
        std::fs::write(&damaged, bytes).unwrap();
        let out_dir = self.path("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let run = self.decrypt(&damaged, &out_dir.join("z.zip"), &self.kek);
        assert_eq!(run.status, 1, "{what}: {}{}", run.stdout, run.stderr);
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{what}: {}",
            run.stderr
        );
        assert!(run.stderr.starts_with("error: "), "{what}: {}", run.stderr);
        let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
        assert!(left.is_empty(), "{what}: left behind {left:?}");
    }
}

fn esq(args: &[&str]) -> Run {
    Run::of(esq_command().args(args))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", run.stdout, run.stderr))
}

fn zip_entry(zip: &Path, name: &str) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip).unwrap()).unwrap();
    let mut bytes = Vec::new();
    archive
        .by_name(name)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

#[test]
fn decrypt_gives_back_the_zip_with_the_csv_that_was_written() {
    let f = Fixture::new();
    let bundle = f.bundle("E-1");
    let out = f.path("E-1.zip");
    let run = f.decrypt(&bundle.enc, &out, &f.kek);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let summary = json(&run);
    assert_eq!(summary["job"], "E-1");
    assert_eq!(summary["bundle_sha256"], bundle.zip_sha256.as_str());
    assert_eq!(sha256(&out), bundle.zip_sha256);
    assert_eq!(summary["files"][0]["name"], "answer.csv");
    assert_eq!(summary["files"][0]["rows"], ROWS);
    assert_eq!(summary["files"][0]["sha256"], bundle.csv_sha256.as_str());
    assert_eq!(mode(&out), 0o600);
    assert!(zip_entry(&out, "answer.csv") == bundle.csv);

    // An existing output is never replaced.
    let run = f.decrypt(&bundle.enc, &out, &f.kek);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("exists"), "{}", run.stderr);
    assert_eq!(sha256(&out), bundle.zip_sha256);
}

#[test]
fn any_damage_fails_decryption_and_leaves_nothing() {
    let f = Fixture::new();
    let bundle = f.bundle("E-2");
    let sealed = std::fs::read(&bundle.enc).unwrap();
    let header = 9 + u32::from_be_bytes(sealed[5..9].try_into().unwrap()) as usize;
    let chunk = envelope::CHUNK + 16;
    let len = sealed.len();
    let mut positions: Vec<usize> = (0..header).collect();
    positions.extend((header..len).step_by(len / 40));
    positions.extend([
        header,
        header + chunk - 1,
        header + chunk,
        len - chunk,
        len - 17,
    ]);
    positions.extend(len - 16..len);
    for (n, at) in positions.into_iter().enumerate() {
        let mut bad = sealed.clone();
        bad[at] ^= 1 << (n % 8);
        f.refused(&bad, &format!("bit {} of byte {at}", n % 8));
    }
    for cut in [
        0,
        4,
        9,
        header,
        header + chunk,
        header + 3 * chunk,
        len - 16,
        len - 1,
    ] {
        f.refused(&sealed[..cut], &format!("cut at {cut}"));
    }
    for extra in [1, 16, chunk] {
        let mut long = sealed.clone();
        long.extend(std::iter::repeat_n(0u8, extra));
        f.refused(&long, &format!("{extra} bytes appended"));
    }

    // Intact encryption around a ZIP that does not verify: refused too.
    let plain = f.path("not-a-zip");
    std::fs::write(&plain, b"PK\x03\x04 but no archive").unwrap();
    let kek = FileKek::load(&f.kek).unwrap();
    let odd = f.path("odd.enc");
    envelope::seal(&kek, "E-2", &plain, &odd).unwrap();
    f.refused(&std::fs::read(&odd).unwrap(), "a sealed non-ZIP");

    // Another KEK is named as such, and no key material is printed.
    let other = f.path("other-kek");
    FileKek::generate(&other).unwrap();
    let out = f.path("z.zip");
    let run = f.decrypt(&bundle.enc, &out, &other);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("is sealed under KEK file:"),
        "{}",
        run.stderr
    );
    for key in [&f.kek, &other] {
        let secret = std::fs::read_to_string(key).unwrap();
        assert!(!run.stderr.contains(secret.trim()), "{}", run.stderr);
    }
    assert!(!out.exists());
}

#[test]
fn rotation_rewraps_every_bundle_and_can_run_again() {
    let f = Fixture::new();
    let bundles = [f.bundle("E-3"), f.bundle("E-4")];
    std::fs::write(f.exports.join("notes.txt"), "not a bundle").unwrap();
    let new = f.path("kek.new");
    let run = esq(&["kek", "generate", "--out", &new.display().to_string()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let new_id = run.stdout.trim().to_string();

    let rotate = |extra: &[&str]| {
        let mut args = vec!["kek", "rotate", "--new-kek-file"];
        let new = new.display().to_string();
        args.push(&new);
        args.extend_from_slice(extra);
        esq(&args)
    };
    let (dir, old) = (f.exports.display().to_string(), f.kek.display().to_string());
    let run = rotate(&["--dir", &dir, "--kek-file", &old]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let summary = json(&run);
    assert_eq!(summary["rewrapped"], 2, "{summary}");
    assert_eq!(summary["already_current"], 0, "{summary}");
    assert_eq!(summary["failed"], serde_json::json!([]), "{summary}");
    assert!(run.stderr.contains("exports.kek_file"), "{}", run.stderr);

    for (i, bundle) in bundles.iter().enumerate() {
        assert_eq!(mode(&bundle.enc), 0o600);
        assert_eq!(envelope::header(&bundle.enc).unwrap().kek_id, new_id);
        let stale = f.path(&format!("old-{i}.zip"));
        let run = f.decrypt(&bundle.enc, &stale, &f.kek);
        assert_eq!(run.status, 1, "the old KEK still opens it: {}", run.stdout);
        assert!(!stale.exists());
        let fresh = f.path(&format!("new-{i}.zip"));
        let run = f.decrypt(&bundle.enc, &fresh, &new);
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert_eq!(sha256(&fresh), bundle.zip_sha256, "the ZIP is unchanged");
        assert_eq!(json(&run)["bundle_sha256"], bundle.zip_sha256.as_str());
    }

    // Again, this time through the config's [exports] (a resumed rotation;
    // exports need [maintenance] to validate, though rotation never connects).
    let run = Run::of(
        esq_command()
            .args([
                "kek",
                "rotate",
                "--new-kek-file",
                &new.display().to_string(),
            ])
            .arg("--config")
            .arg(common::shipped_config())
            .env("ESQ_EXPORTS__DIR", &dir)
            .env("ESQ_EXPORTS__KEK_FILE", &old)
            .env(
                "ESQ_MAINTENANCE__URL",
                "postgres://esq_maintenance@127.0.0.1:9/none",
            )
            .env("ESQ_MAINTENANCE__PASSWORD", "unused"),
    );
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let summary = json(&run);
    assert_eq!(summary["rewrapped"], 0, "{summary}");
    assert_eq!(summary["already_current"], 2, "{summary}");

    // A bundle under neither KEK fails, by name; the others still count.
    let third = f.path("kek.third");
    FileKek::generate(&third).unwrap();
    let stray_zip = f.path("stray.zip");
    std::fs::write(&stray_zip, b"whatever").unwrap();
    let stray = f.exports.join("E-9.enc");
    envelope::seal(&FileKek::load(&third).unwrap(), "E-9", &stray_zip, &stray).unwrap();
    let run = rotate(&["--dir", &dir, "--kek-file", &old]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let summary = json(&run);
    assert_eq!(summary["already_current"], 2, "{summary}");
    let failed = summary["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{summary}");
    assert_eq!(failed[0]["file"], stray.display().to_string());
}

#[test]
fn a_kek_file_others_can_read_is_refused() {
    let f = Fixture::new();
    let bundle = f.bundle("E-5");
    std::fs::set_permissions(&f.kek, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = f.path("z.zip");
    let run = f.decrypt(&bundle.enc, &out, &f.kek);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&f.kek.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    assert!(!out.exists());
    let run = esq(&["kek", "generate", "--out", &f.kek.display().to_string()]);
    assert_eq!(run.status, 2, "an existing KEK is never replaced");
}
