//! The digest of a set of loaded files (the catalog's, the policies'): each
//! file's name, a NUL, the hex SHA-256 of its bytes and a newline, in name
//! order, hashed again. Computed from the very bytes that were parsed, so
//! what a seal or an audit record names is what esq runs.

use sha2::{Digest, Sha256};

/// Collects files in the order they are added (callers add them sorted).
#[derive(Default)]
pub struct FilesDigest {
    hasher: Sha256,
}

impl FilesDigest {
    pub fn add(&mut self, name: &str, bytes: &[u8]) {
        self.hasher.update(name.as_bytes());
        self.hasher.update([0]);
        self.hasher
            .update(hex::encode(Sha256::digest(bytes)).as_bytes());
        self.hasher.update(b"\n");
    }

    /// The hex SHA-256.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// The file name part of `path`, as the digest records it.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
