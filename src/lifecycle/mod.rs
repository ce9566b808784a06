//! The data lifecycle (DESIGN 3.8): esq's own schema `esq` and its
//! migrations, the maintenance role that alone may write, retention purges,
//! right-to-delete with signed receipts, and the tombstones that hide a
//! forgotten subject from every answer even after a backup restore.
//!
//! Everything here writes as the maintenance role ([`Maintenance`]); the
//! doors' service role stays read-only and never reads schema `esq`.

pub mod forget;
pub mod grants;
pub mod lookup;
pub mod maintenance;
pub mod metrics;
pub mod migrate;
pub mod purge;
pub mod reapply;
pub mod receipt;
pub mod recover;
pub mod schedule;
pub mod subject;
pub mod tombstones;
pub mod watch;

pub use maintenance::{Maintenance, MaintenanceError};

/// A PostgreSQL advisory lock key for `label` (every esq computes the
/// same, so replicas exclude each other).
pub fn lock_key(label: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(label.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}
pub use metrics::LifecycleMetrics;
pub use subject::SubjectKeys;
pub use tombstones::Tombstones;
