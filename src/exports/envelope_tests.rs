//! Tests of [`super`] (envelope.rs).

use super::*;
use crate::exports::kek::FileKek;

struct Fixture {
    dir: tempfile::TempDir,
    kek: FileKek,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kek = FileKek::generate(&dir.path().join("kek")).unwrap();
        Fixture { dir, kek }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Seals `plain` as job E-1; returns the sealed bytes.
    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        std::fs::write(self.path("plain"), plain).unwrap();
        let sealed = seal(&self.kek, "E-1", &self.path("plain"), &self.path("e.enc")).unwrap();
        let bytes = std::fs::read(self.path("e.enc")).unwrap();
        assert_eq!(sealed.bytes, bytes.len() as u64);
        bytes
    }

    /// Opens `sealed` (written to a file) into `out`.
    fn open(&self, sealed: &[u8]) -> Result<Opened, BundleError> {
        std::fs::write(self.path("in.enc"), sealed).unwrap();
        let result = open(&self.kek, &self.path("in.enc"), &self.path("out"));
        if result.is_err() {
            assert!(!self.path("out").exists(), "a failed open leaves no output");
        }
        result
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn header_len(sealed: &[u8]) -> usize {
    PREFIX + u32::from_be_bytes([sealed[5], sealed[6], sealed[7], sealed[8]]) as usize
}

#[test]
fn round_trips_at_every_chunk_edge() {
    let f = Fixture::new();
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK] {
        let plain = pattern(len);
        let sealed = f.seal(&plain);
        let chunks = len / CHUNK + 1;
        assert_eq!(
            sealed.len(),
            header_len(&sealed) + len + chunks * TAG,
            "{len}"
        );
        let opened = f.open(&sealed).unwrap();
        assert_eq!(std::fs::read(f.path("out")).unwrap(), plain, "{len}");
        assert_eq!(opened.bytes, len as u64);
        assert_eq!(opened.job, "E-1");
        assert_eq!(opened.kek_id, f.kek.id());
        std::fs::remove_file(f.path("out")).unwrap();
    }
}

#[test]
fn twenty_megabytes_stream_through() {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let plain = pattern(20 * 1024 * 1024 + 12345);
    f.seal(&plain);
    let mode = std::fs::metadata(f.path("e.enc"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let opened = open(&f.kek, &f.path("e.enc"), &f.path("out")).unwrap();
    assert_eq!(opened.sha256, hex::encode(Sha256::digest(&plain)));
    assert!(std::fs::read(f.path("out")).unwrap() == plain);
    let mode = std::fs::metadata(f.path("out"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        header(&f.path("e.enc")).unwrap(),
        Header {
            job: "E-1".into(),
            kek_id: f.kek.id().into()
        }
    );
}

#[test]
fn any_flipped_bit_truncation_or_extension_fails() {
    let f = Fixture::new();
    let sealed = f.seal(&pattern(2 * CHUNK + 100));
    f.open(&sealed).unwrap();
    std::fs::remove_file(f.path("out")).unwrap();
    let head = header_len(&sealed);
    let mut positions: Vec<usize> = (0..head).collect();
    positions.extend((head..sealed.len()).step_by(997));
    positions.extend([
        head,
        head + CHUNK + TAG - 1,
        head + CHUNK + TAG,
        sealed.len() - 1,
    ]);
    for at in positions {
        for bit in [0x01u8, 0x80] {
            let mut bad = sealed.clone();
            bad[at] ^= bit;
            assert!(
                f.open(&bad).is_err(),
                "flip {bit:#x} at byte {at} of {}",
                sealed.len()
            );
        }
    }
    for cut in [
        0,
        3,
        PREFIX,
        head,
        head + 1,
        head + CHUNK + TAG,
        head + 2 * (CHUNK + TAG),
        sealed.len() - 1,
    ] {
        assert!(f.open(&sealed[..cut]).is_err(), "cut at {cut}");
    }
    for extra in [&b"\0"[..], &[0u8; TAG], &pattern(CHUNK + TAG)] {
        let mut long = sealed.clone();
        long.extend_from_slice(extra);
        assert!(f.open(&long).is_err(), "{} bytes appended", extra.len());
    }
}

#[test]
fn hostile_headers_are_refused_before_any_allocation() {
    let f = Fixture::new();
    let sealed = f.seal(b"zip bytes");
    let head = header_len(&sealed);
    let json = std::str::from_utf8(&sealed[PREFIX..head])
        .unwrap()
        .to_string();
    let rebuild = |json: &str| {
        let mut out = b"ESQX\x01".to_vec();
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(&sealed[head..]);
        out
    };
    let err = |bytes: &[u8]| f.open(bytes).unwrap_err().to_string();
    let edit = |from: &str, to: &str| {
        assert!(json.contains(from), "{json}");
        rebuild(&json.replacen(from, to, 1))
    };

    for len in [0u32, MAX_HEADER + 1, u32::MAX] {
        let mut bad = sealed.clone();
        bad[5..9].copy_from_slice(&len.to_be_bytes());
        assert!(err(&bad).contains("outside"), "{len}");
    }
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    assert!(err(&rebuild(&pretty)).contains("canonical"));
    assert!(err(&edit("{\"job\"", "{ \"job\"")).contains("canonical"));
    assert!(err(&edit("\"E-1\"", "\"E\\u002d1\"")).contains("canonical"));
    assert!(err(&edit("\"job\"", "\"comment\":\"hi\",\"job\"")).contains("unreadable header"));
    assert!(err(&edit("\"chunk\":65536", "\"chunk\":1000000000")).contains("chunk size"));
    assert!(err(&edit("\"E-1\"", "\"E-2\"")).contains("does not unwrap"));
    let mut v2 = sealed.clone();
    v2[4] = 2;
    assert!(err(&v2).contains("version 2"));
    assert!(f.open(&rebuild(&json)).is_ok());
}

#[test]
fn rewrap_moves_a_bundle_to_the_new_kek_and_leaves_the_body_alone() {
    let f = Fixture::new();
    let new = FileKek::generate(&f.path("new")).unwrap();
    let third = FileKek::generate(&f.path("third")).unwrap();
    let sealed = f.seal(&pattern(CHUNK + 7));
    let bundle = f.path("e.enc");
    assert_eq!(rewrap(&f.kek, &new, &bundle).unwrap(), Rewrapped::Done);
    let rotated = std::fs::read(&bundle).unwrap();
    assert_eq!(
        rotated[header_len(&rotated)..],
        sealed[header_len(&sealed)..],
        "the body is copied unchanged"
    );
    assert_eq!(header(&bundle).unwrap().kek_id, new.id());
    let err = open(&f.kek, &bundle, &f.path("out")).unwrap_err();
    assert!(matches!(err, BundleError::WrongKek { .. }), "{err}");
    let opened = open(&new, &bundle, &f.path("out")).unwrap();
    assert_eq!(std::fs::read(f.path("out")).unwrap(), pattern(CHUNK + 7));
    assert_eq!(opened.kek_id, new.id());

    assert_eq!(
        rewrap(&f.kek, &new, &bundle).unwrap(),
        Rewrapped::AlreadyCurrent
    );
    let err = rewrap(&third, &f.kek, &bundle).unwrap_err().to_string();
    assert!(err.contains(&bundle.display().to_string()), "{err}");
    let files: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        files.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
        "{files:?}"
    );
}

#[test]
fn job_ids_must_be_file_names() {
    let f = Fixture::new();
    std::fs::write(f.path("plain"), b"x").unwrap();
    for job in ["", "../E-1", "a/b", ".hidden", "E 1"] {
        assert!(
            seal(&f.kek, job, &f.path("plain"), &f.path("x.enc")).is_err(),
            "{job:?}"
        );
    }
    assert!(!f.path("x.enc").exists());
}
