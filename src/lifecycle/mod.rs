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

/// Why esq could not hide forgotten subjects with this configuration and
/// catalog: no `[maintenance]` role to read tombstones with, while the
/// catalog names subjects. `None`: nothing to say.
pub fn tombstones_unenforced(
    config: &crate::config::Config,
    catalog: &crate::catalog::Catalog,
) -> Option<String> {
    if config.maintenance.is_some() {
        return None;
    }
    let with_subjects: Vec<&str> = catalog
        .datasets()
        .filter(|d| !catalog.subject_fields(d).is_empty())
        .map(|d| d.id.as_str())
        .collect();
    (!with_subjects.is_empty()).then(|| {
        format!(
            "no [maintenance] role: esq cannot read the right-to-delete tombstones, so forgotten subjects of {} would show if a backup brought their rows back",
            with_subjects.join(", ")
        )
    })
}

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
