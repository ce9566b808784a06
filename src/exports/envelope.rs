//! The sealed bundle `<job>.enc`: the export ZIP encrypted with
//! AES-256-GCM under a fresh [`DataKey`], which is itself wrapped by the
//! key-encryption key ([`Kek`]). Streaming in 64 KiB chunks keeps memory
//! flat for any size, and every byte of the file is authenticated, so a
//! bundle that opens is exactly the bundle esq wrote.
//!
//! # Format (version 1)
//!
//! ```text
//! "ESQX"            4 bytes magic
//! 0x01              1 byte  version
//! n                 u32 big-endian: header length, 1 ..= 65536
//! header            n bytes: JSON, exactly as serde_json writes it compactly:
//!                   {"job":"E-…","alg":"AES-256-GCM-STREAM-BE32","chunk":65536,
//!                    "nonce":"<base64, 7 bytes>","kek_id":"file:…",
//!                    "wrapped_key":"<base64: nonce ‖ AES-256-GCM(data key) ‖ tag>"}
//! body              chunks of `chunk` plaintext bytes + 16-byte tag, STREAM
//!                   construction (aead::stream, BE32: 7-byte nonce prefix,
//!                   32-bit counter, last-chunk flag). The last chunk holds
//!                   0 ..= chunk-1 bytes and is always present, so a body cut
//!                   at a chunk boundary fails too.
//! ```
//!
//! Why every flipped bit fails: magic, version, `alg` and `chunk` must be
//! the known values; the header must be in canonical form (re-serialising
//! it gives the same bytes, so no whitespace or escape can vary); every
//! body chunk's associated data is magic ‖ version ‖ {job, alg, chunk,
//! nonce}; the wrapped key's associated data binds magic, version, job and
//! `kek_id`, and its own tag covers `wrapped_key`; nothing may follow the
//! last chunk. `kek_id` and `wrapped_key` are left out of the body's
//! associated data on purpose: rotation ([`rewrap`]) replaces only them and
//! copies the body unchanged.
//!
//! Files are written under a temporary name in the destination's directory
//! (mode 0600), fsynced and renamed, so `out` is either absent or complete.
//! A process killed mid-way may leave a hidden `.<name>.<random>.tmp`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aead::generic_array::GenericArray;
use aead::stream::{DecryptorBE32, EncryptorBE32};
use base64::Engine as _;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use super::kek::{DataKey, Kek, WrappedKey};
use super::package::{HashWriter, TempFile};

const MAGIC: &[u8; 4] = b"ESQX";
const VERSION: u8 = 1;
const ALG: &str = "AES-256-GCM-STREAM-BE32";
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// STREAM BE32 with a 12-byte AES-GCM nonce leaves 7 bytes of prefix.
const NONCE_PREFIX: usize = 7;
/// No honest header comes near this; a hostile one cannot make esq
/// allocate more.
pub const MAX_HEADER: u32 = 64 * 1024;
const PREFIX: usize = 4 + 1 + 4;

/// Why a bundle could not be written, read, verified or opened. Messages
/// name files, rows and columns, never key material or data values.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists; esq does not overwrite it")]
    Exists { path: PathBuf },
    #[error("{file}: {reason}")]
    Csv { file: String, reason: String },
    #[error("{path}: {reason}")]
    Package { path: PathBuf, reason: String },
    #[error("KEK file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("{path} is not an intact esq export bundle: {reason}")]
    Envelope { path: PathBuf, reason: String },
    #[error("{path} is sealed under KEK {bundle_kek}, not under {kek}")]
    WrongKek {
        path: PathBuf,
        bundle_kek: String,
        kek: String,
    },
    #[error("the data key does not unwrap with KEK {kek_id} (another key, or an altered header)")]
    Unwrap { kek_id: String },
    #[error("{0}")]
    Crypto(&'static str),
    #[error("{0}")]
    Invalid(String),
}

impl BundleError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> BundleError {
        BundleError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What [`seal`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Size of the sealed file.
    pub bytes: u64,
}

/// What [`open`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub job: String,
    pub kek_id: String,
    /// Size of the plaintext (the ZIP).
    pub bytes: u64,
    /// SHA-256 (hex) of the plaintext: the bundle SHA-256 of the job.
    pub sha256: String,
}

/// What [`rewrap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrapped {
    /// The data key was under the old KEK and is now under the new one.
    Done,
    /// The data key already was under the new KEK (a resumed rotation).
    AlreadyCurrent,
}

/// The clear part of a bundle, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub job: String,
    pub kek_id: String,
}

/// The header as stored. Field order is the canonical order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    job: String,
    alg: String,
    chunk: u32,
    nonce: String,
    kek_id: String,
    wrapped_key: String,
}

/// The header fields that never change: the body's associated data.
#[derive(Serialize)]
struct Fixed<'a> {
    job: &'a str,
    alg: &'a str,
    chunk: u32,
    nonce: &'a str,
}

impl RawHeader {
    fn body_aad(&self) -> Result<Vec<u8>, BundleError> {
        let fixed = Fixed {
            job: &self.job,
            alg: &self.alg,
            chunk: self.chunk,
            nonce: &self.nonce,
        };
        let mut aad = MAGIC.to_vec();
        aad.push(VERSION);
        serde_json::to_writer(&mut aad, &fixed)
            .map_err(|_| BundleError::Crypto("cannot encode the header"))?;
        Ok(aad)
    }

    fn wrapped(&self) -> Option<WrappedKey> {
        let bytes = b64().decode(&self.wrapped_key).ok()?;
        Some(WrappedKey {
            kek_id: self.kek_id.clone(),
            bytes,
        })
    }

    fn nonce(&self) -> Option<[u8; NONCE_PREFIX]> {
        b64().decode(&self.nonce).ok()?.try_into().ok()
    }

    fn encode(&self) -> Result<Vec<u8>, BundleError> {
        let json = serde_json::to_vec(self)
            .map_err(|_| BundleError::Crypto("cannot encode the header"))?;
        let len = u32::try_from(json.len())
            .ok()
            .filter(|n| (1..=MAX_HEADER).contains(n))
            .ok_or_else(|| BundleError::Invalid("the bundle header is too long".into()))?;
        let mut out = Vec::with_capacity(PREFIX + json.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&json);
        Ok(out)
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The wrapped key's associated data: it belongs to this job, under this KEK.
fn wrap_aad(job: &str, kek_id: &str) -> Vec<u8> {
    let mut aad = MAGIC.to_vec();
    aad.push(VERSION);
    for part in [job, kek_id] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Job ids name files (`<job>.enc`): letters, digits, `.`, `_`, `-`.
pub fn valid_job_id(job: &str) -> bool {
    !job.is_empty()
        && job.len() <= 128
        && !job.starts_with('.')
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Streams `plain` (the ZIP) into `out` under a fresh data key wrapped by
/// `kek`. `out` appears complete or not at all (an existing `out` is
/// replaced atomically, so a retried job can seal again).
pub fn seal(kek: &dyn Kek, job: &str, plain: &Path, out: &Path) -> Result<Sealed, BundleError> {
    if !valid_job_id(job) {
        return Err(BundleError::Invalid(format!(
            "job id {job:?} is not usable as a file name"
        )));
    }
    let key = DataKey::generate();
    let mut nonce = [0u8; NONCE_PREFIX];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let wrapped = kek.wrap(&key, &wrap_aad(job, kek.id()))?;
    let header = RawHeader {
        job: job.to_string(),
        alg: ALG.to_string(),
        chunk: CHUNK as u32,
        nonce: b64().encode(nonce),
        kek_id: kek.id().to_string(),
        wrapped_key: b64().encode(&wrapped.bytes),
    };
    let aad = header.body_aad()?;
    let mut input = File::open(plain).map_err(|e| BundleError::io("open", plain, e))?;
    let mut tmp = TempFile::new(out)?;
    let failed = |e| BundleError::io("write", out, e);
    let mut w = HashWriter::new(std::io::BufWriter::with_capacity(CHUNK + TAG, tmp.file()));
    w.write_all(&header.encode()?).map_err(failed)?;
    let mut stream = EncryptorBE32::from_aead(key.cipher(), GenericArray::from_slice(&nonce));
    let mut buf = Vec::with_capacity(CHUNK + TAG);
    loop {
        buf.clear();
        read_up_to(&mut input, &mut buf, CHUNK).map_err(|e| BundleError::io("read", plain, e))?;
        if buf.len() == CHUNK {
            stream
                .encrypt_next_in_place(&aad, &mut buf)
                .map_err(|_| BundleError::Crypto("encryption failed"))?;
            w.write_all(&buf).map_err(failed)?;
        } else {
            stream
                .encrypt_last_in_place(&aad, &mut buf)
                .map_err(|_| BundleError::Crypto("encryption failed"))?;
            w.write_all(&buf).map_err(failed)?;
            break;
        }
    }
    let (inner, _, bytes) = w.finish();
    inner.into_inner().map_err(|e| failed(e.into_error()))?;
    tmp.persist()?;
    Ok(Sealed { bytes })
}

/// Decrypts `input` into `out` (temp file + rename: on any failure nothing
/// is left at `out`). Any altered, missing or extra byte is an error.
pub fn open(kek: &dyn Kek, input: &Path, out: &Path) -> Result<Opened, BundleError> {
    let corrupt = |reason: String| BundleError::Envelope {
        path: input.to_path_buf(),
        reason,
    };
    let mut file = File::open(input).map_err(|e| BundleError::io("open", input, e))?;
    let header = read_header(&mut file, input)?;
    let key = unwrap_key(kek, &header, input)?;
    let nonce = header.nonce().ok_or_else(|| corrupt("bad nonce".into()))?;
    let aad = header.body_aad()?;
    let mut tmp = TempFile::new(out)?;
    let failed = |e| BundleError::io("write", out, e);
    let mut w = HashWriter::new(std::io::BufWriter::with_capacity(CHUNK, tmp.file()));
    let mut stream = DecryptorBE32::from_aead(key.cipher(), GenericArray::from_slice(&nonce));
    let mut buf = Vec::with_capacity(CHUNK + TAG);
    let mut index: u64 = 0;
    let bad_chunk = |index: u64| {
        corrupt(format!(
            "chunk {index} does not authenticate (altered, truncated or extended)"
        ))
    };
    loop {
        buf.clear();
        read_up_to(&mut file, &mut buf, CHUNK + TAG)
            .map_err(|e| BundleError::io("read", input, e))?;
        if buf.len() < CHUNK + TAG {
            stream
                .decrypt_last_in_place(&aad, &mut buf)
                .map_err(|_| bad_chunk(index))?;
            w.write_all(&buf).map_err(failed)?;
            break;
        }
        stream
            .decrypt_next_in_place(&aad, &mut buf)
            .map_err(|_| bad_chunk(index))?;
        w.write_all(&buf).map_err(failed)?;
        index += 1;
    }
    let mut extra = [0u8; 1];
    if file
        .read(&mut extra)
        .map_err(|e| BundleError::io("read", input, e))?
        != 0
    {
        return Err(corrupt("bytes follow the last chunk".into()));
    }
    let (inner, sha256, bytes) = w.finish();
    inner.into_inner().map_err(|e| failed(e.into_error()))?;
    tmp.persist()?;
    Ok(Opened {
        job: header.job,
        kek_id: header.kek_id,
        bytes,
        sha256,
    })
}

/// Re-wraps the data key of the bundle at `path` from `old` to `new`: only
/// `kek_id` and `wrapped_key` in the header change; the body is copied
/// byte for byte (temp file + rename). Already under `new` (a rotation
/// resumed after a kill) → [`Rewrapped::AlreadyCurrent`], after checking
/// that `new` really unwraps it.
pub fn rewrap(old: &dyn Kek, new: &dyn Kek, path: &Path) -> Result<Rewrapped, BundleError> {
    let mut file = File::open(path).map_err(|e| BundleError::io("open", path, e))?;
    let header = read_header(&mut file, path)?;
    if header.kek_id == new.id() {
        unwrap_key(new, &header, path)?;
        return Ok(Rewrapped::AlreadyCurrent);
    }
    if header.kek_id != old.id() {
        return Err(BundleError::WrongKek {
            path: path.to_path_buf(),
            bundle_kek: header.kek_id,
            kek: format!("{} (old) or {} (new)", old.id(), new.id()),
        });
    }
    let key = unwrap_key(old, &header, path)?;
    let wrapped = new.wrap(&key, &wrap_aad(&header.job, new.id()))?;
    let rewrapped = RawHeader {
        kek_id: new.id().to_string(),
        wrapped_key: b64().encode(&wrapped.bytes),
        ..header
    };
    let mut tmp = TempFile::new(path)?;
    let failed = |e| BundleError::io("write", path, e);
    let mut w = std::io::BufWriter::with_capacity(CHUNK, tmp.file());
    w.write_all(&rewrapped.encode()?).map_err(failed)?;
    std::io::copy(&mut file, &mut w).map_err(|e| BundleError::io("copy", path, e))?;
    w.into_inner().map_err(|e| failed(e.into_error()))?;
    tmp.persist()?;
    Ok(Rewrapped::Done)
}

/// Reads only the header: which job, under which KEK.
pub fn header(path: &Path) -> Result<Header, BundleError> {
    let mut file = File::open(path).map_err(|e| BundleError::io("open", path, e))?;
    let raw = read_header(&mut file, path)?;
    Ok(Header {
        job: raw.job,
        kek_id: raw.kek_id,
    })
}

fn unwrap_key(kek: &dyn Kek, header: &RawHeader, path: &Path) -> Result<DataKey, BundleError> {
    if header.kek_id != kek.id() {
        return Err(BundleError::WrongKek {
            path: path.to_path_buf(),
            bundle_kek: header.kek_id.clone(),
            kek: kek.id().to_string(),
        });
    }
    let wrapped = header.wrapped().ok_or_else(|| BundleError::Envelope {
        path: path.to_path_buf(),
        reason: "bad wrapped key".into(),
    })?;
    kek.unwrap(&wrapped, &wrap_aad(&header.job, &header.kek_id))
}

/// Reads and checks the prefix and header; leaves `file` at the body.
fn read_header(file: &mut impl Read, path: &Path) -> Result<RawHeader, BundleError> {
    let corrupt = |reason: String| BundleError::Envelope {
        path: path.to_path_buf(),
        reason,
    };
    let mut prefix = [0u8; PREFIX];
    file.read_exact(&mut prefix).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("too short".into()),
        _ => BundleError::io("read", path, e),
    })?;
    if &prefix[..4] != MAGIC {
        return Err(corrupt("no ESQX magic".into()));
    }
    if prefix[4] != VERSION {
        return Err(corrupt(format!(
            "format version {} (this esq reads version {VERSION})",
            prefix[4]
        )));
    }
    let len = u32::from_be_bytes([prefix[5], prefix[6], prefix[7], prefix[8]]);
    if !(1..=MAX_HEADER).contains(&len) {
        return Err(corrupt(format!(
            "header length {len} is outside 1..={MAX_HEADER}"
        )));
    }
    let mut json = vec![0u8; len as usize];
    file.read_exact(&mut json).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt("truncated header".into()),
        _ => BundleError::io("read", path, e),
    })?;
    let header: RawHeader =
        serde_json::from_slice(&json).map_err(|_| corrupt("unreadable header".into()))?;
    if header.encode()?[PREFIX..] != json[..] {
        return Err(corrupt("header not in canonical form".into()));
    }
    if header.alg != ALG || header.chunk as usize != CHUNK {
        return Err(corrupt("unknown algorithm or chunk size".into()));
    }
    if !valid_job_id(&header.job) || header.kek_id.is_empty() || header.nonce().is_none() {
        return Err(corrupt("bad job id, KEK id or nonce".into()));
    }
    Ok(header)
}

/// Reads until `buf` holds `want` bytes or the input ends.
fn read_up_to(input: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> std::io::Result<()> {
    input.take(want as u64).read_to_end(buf).map(|_| ())
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
