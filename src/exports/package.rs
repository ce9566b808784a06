//! The export ZIP: the CSV files, `manifest.json` (what the export is and,
//! per file, its rows, size, SHA-256 and columns) and `manifest.sha256`
//! (`sha256sum` format), so a recipient can check the bundle with standard
//! tools and [`verify`] can prove nothing was added, dropped or changed.
//!
//! Everything streams (`io::copy` into the ZIP writer, hashing on the way)
//! so memory stays flat for multi-GB CSVs. Entries are deflated and carry
//! mode 0600. This file also holds the small file helpers the bundle
//! modules share: private creation, temp file + rename, hashing I/O.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use super::csv_sink::{self, CsvFile};
pub use super::envelope::BundleError;

/// `manifest.json`'s `format`.
pub const FORMAT: &str = "esq-export/1";
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SHA256: &str = "manifest.sha256";
/// A manifest lists files, not data: anything larger is not one of ours.
const MAX_MANIFEST: u64 = 16 * 1024 * 1024;
/// Entries above this get ZIP64 sizes (deflate may grow incompressible data).
const LARGE_FILE: u64 = 1 << 31;

/// What an export bundle holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub job: String,
    pub dataset: String,
    /// RFC 3339.
    pub created_at: DateTime<Utc>,
    /// Fields whose values were replaced by keyed hashes.
    pub hash_fields: Vec<String>,
    pub hash_mode: String,
    /// The guard scope the answer was materialised under.
    pub scope: serde_json::Value,
    /// The CSV files, in ZIP order.
    pub files: Vec<CsvFile>,
}

impl Manifest {
    /// A manifest of `files` for `job`, created now, no hashed fields.
    pub fn new(job: &str, dataset: &str, files: Vec<CsvFile>) -> Manifest {
        Manifest {
            format: FORMAT.to_string(),
            job: job.to_string(),
            dataset: dataset.to_string(),
            created_at: Utc::now(),
            hash_fields: Vec::new(),
            hash_mode: "none".to_string(),
            scope: serde_json::Value::Null,
            files,
        }
    }
}

/// What [`package`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packaged {
    /// SHA-256 (hex) of the ZIP.
    pub sha256: String,
    pub bytes: u64,
}

/// Streams the CSV files of `manifest` into a new ZIP at `out` (mode 0600;
/// an existing file is an error), then `manifest.json` and
/// `manifest.sha256`. Each CSV is re-hashed on the way in: one that changed
/// since [`csv_sink::CsvSink::finish`] fails the packaging. On failure `out`
/// is removed.
pub fn package(manifest: &Manifest, out: &Path) -> Result<Packaged, BundleError> {
    check_manifest(manifest, out)?;
    let json = manifest_json(manifest)?;
    let file = create_private(out)?;
    let mut cleanup = Cleanup(Some(out.to_path_buf()));
    let failed = |e: zip::result::ZipError| BundleError::Package {
        path: out.to_path_buf(),
        reason: e.to_string(),
    };
    let io_failed = |e| BundleError::io("write", out, e);
    let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600);
    for csv in &manifest.files {
        let mut src = HashReader::new(
            File::open(&csv.path).map_err(|e| BundleError::io("open", &csv.path, e))?,
        );
        zip.start_file(
            csv.name.as_str(),
            options.large_file(csv.bytes >= LARGE_FILE),
        )
        .map_err(failed)?;
        std::io::copy(&mut src, &mut zip).map_err(|e| BundleError::io("package", &csv.path, e))?;
        let (_, sha256, bytes) = src.finish();
        if sha256 != csv.sha256 || bytes != csv.bytes {
            return Err(BundleError::Package {
                path: csv.path.clone(),
                reason: "changed since it was written (size or SHA-256 differs from the manifest)"
                    .into(),
            });
        }
    }
    zip.start_file(MANIFEST, options).map_err(failed)?;
    zip.write_all(&json).map_err(io_failed)?;
    zip.start_file(MANIFEST_SHA256, options).map_err(failed)?;
    zip.write_all(sums_line(&json).as_bytes())
        .map_err(io_failed)?;
    let file = zip
        .finish()
        .map_err(failed)?
        .into_inner()
        .map_err(|e| io_failed(e.into_error()))?;
    file.sync_all().map_err(io_failed)?;
    let (sha256, bytes) = sha256_file(out)?;
    cleanup.0 = None;
    Ok(Packaged { sha256, bytes })
}

/// Opens a ZIP written by [`package`] and checks it: `manifest.sha256`
/// against `manifest.json`, every listed file's size, SHA-256, header,
/// field count, typed values and row count (streaming), and that nothing
/// unlisted is present. Returns the manifest (its files' `path`s empty).
pub fn verify(zip_path: &Path) -> Result<Manifest, BundleError> {
    let bad = |reason: String| BundleError::Package {
        path: zip_path.to_path_buf(),
        reason,
    };
    let file = File::open(zip_path).map_err(|e| BundleError::io("open", zip_path, e))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|_| bad("not a readable ZIP archive".into()))?;
    if archive.has_duplicate_names() {
        return Err(bad("two entries have the same name".into()));
    }
    let sums = read_entry(&mut archive, MANIFEST_SHA256, 1024, zip_path)?;
    let json = read_entry(&mut archive, MANIFEST, MAX_MANIFEST, zip_path)?;
    if sums != sums_line(&json).as_bytes() {
        return Err(bad(format!("{MANIFEST} does not match {MANIFEST_SHA256}")));
    }
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| {
        bad(format!(
            "{MANIFEST} is not an esq export manifest (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    check_manifest(&manifest, zip_path)?;
    let mut expected: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    expected.extend([MANIFEST, MANIFEST_SHA256]);
    let unlisted = archive
        .file_names_raw()
        .find(|n| !expected.contains(std::str::from_utf8(n).unwrap_or("")))
        .map(|n| String::from_utf8_lossy(n).into_owned());
    if let Some(name) = unlisted {
        return Err(bad(format!(
            "it holds a file its manifest does not list ({name:?})"
        )));
    }
    if archive.len() != expected.len() {
        return Err(bad("a file listed in the manifest is missing".into()));
    }
    for csv in &manifest.files {
        let entry = archive
            .by_name(&csv.name)
            .map_err(|_| bad(format!("{} is missing or unreadable", csv.name)))?;
        let mut src = HashReader::new(entry.take(csv.bytes.saturating_add(1)));
        let label = format!("{}: {}", zip_path.display(), csv.name);
        let rows = csv_sink::validate_reader(&mut src, &csv.columns, &label)?;
        std::io::copy(&mut src, &mut std::io::sink())
            .map_err(|e| bad(format!("{}: {e}", csv.name)))?;
        let (_, sha256, bytes) = src.finish();
        for (what, ok) in [
            ("size", bytes == csv.bytes),
            ("SHA-256", sha256 == csv.sha256),
            ("row count", rows == csv.rows),
        ] {
            if !ok {
                return Err(bad(format!(
                    "{}: its {what} differs from the manifest",
                    csv.name
                )));
            }
        }
    }
    Ok(manifest)
}

fn check_manifest(manifest: &Manifest, path: &Path) -> Result<(), BundleError> {
    let bad = |reason: String| BundleError::Package {
        path: path.to_path_buf(),
        reason,
    };
    if manifest.format != FORMAT {
        return Err(bad(format!("manifest format is not {FORMAT}")));
    }
    if manifest.files.is_empty() {
        return Err(bad("the manifest lists no file".into()));
    }
    let mut seen = BTreeSet::new();
    for file in &manifest.files {
        if !valid_file_name(&file.name) || !seen.insert(file.name.as_str()) {
            return Err(bad(format!(
                "file name {:?} is not a plain, unique name",
                file.name
            )));
        }
    }
    Ok(())
}

/// A name a ZIP entry and an extracted file may safely have.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name != MANIFEST
        && name != MANIFEST_SHA256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn manifest_json(manifest: &Manifest) -> Result<Vec<u8>, BundleError> {
    let mut json = serde_json::to_vec_pretty(manifest)
        .map_err(|e| BundleError::Invalid(format!("cannot encode the manifest: {e}")))?;
    json.push(b'\n');
    Ok(json)
}

fn sums_line(json: &[u8]) -> String {
    format!("{}  {MANIFEST}\n", hex::encode(Sha256::digest(json)))
}

fn read_entry<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    max: u64,
    path: &Path,
) -> Result<Vec<u8>, BundleError> {
    let bad = |reason: String| BundleError::Package {
        path: path.to_path_buf(),
        reason,
    };
    let entry = archive
        .by_name(name)
        .map_err(|_| bad(format!("{name} is missing or unreadable")))?;
    let mut bytes = Vec::new();
    entry
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| bad(format!("{name} is unreadable")))?;
    if bytes.len() as u64 > max {
        return Err(bad(format!("{name} is too large")));
    }
    Ok(bytes)
}

/// Removes a file it names when dropped (a failed write's leftovers).
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates `path` for writing: mode 0600, never an existing file.
pub(crate) fn create_private(path: &Path) -> Result<File, BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BundleError::Exists {
                path: path.to_path_buf(),
            },
            _ => BundleError::io("create", path, e),
        })
}

/// A file written under a hidden temporary name next to its destination,
/// renamed into place by [`TempFile::persist`], removed if dropped before.
pub(crate) struct TempFile {
    dest: PathBuf,
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    pub(crate) fn new(dest: &Path) -> Result<TempFile, BundleError> {
        let name = dest.file_name().ok_or_else(|| {
            BundleError::Invalid(format!("{} does not name a file", dest.display()))
        })?;
        let mut random = [0u8; 8];
        rand_core::OsRng.fill_bytes(&mut random);
        let temp_name = format!(".{}.{}.tmp", name.to_string_lossy(), hex::encode(random));
        let path = parent_dir(dest).join(temp_name);
        let file = create_private(&path)?;
        Ok(TempFile {
            dest: dest.to_path_buf(),
            path,
            file,
            persisted: false,
        })
    }

    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// fsync, rename over the destination, fsync the directory.
    pub(crate) fn persist(mut self) -> Result<(), BundleError> {
        let dest = self.dest.clone();
        self.file
            .sync_all()
            .map_err(|e| BundleError::io("write", &dest, e))?;
        std::fs::rename(&self.path, &dest).map_err(|e| BundleError::io("rename into", &dest, e))?;
        self.persisted = true;
        File::open(parent_dir(&dest))
            .and_then(|dir| dir.sync_all())
            .map_err(|e| BundleError::io("sync the directory of", &dest, e))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Counts and hashes what passes through to `inner`.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer (not flushed), SHA-256 hex, byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes what is read from `inner`.
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub(crate) fn finish(self) -> (R, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// SHA-256 (hex) and size of a file, streaming.
pub fn sha256_file(path: &Path) -> Result<(String, u64), BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io("open", path, e))?;
    let mut reader = HashReader::new(file);
    std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(|e| BundleError::io("read", path, e))?;
    let (_, sha256, bytes) = reader.finish();
    Ok((sha256, bytes))
}

#[cfg(test)]
#[path = "package_tests.rs"]
mod tests;
