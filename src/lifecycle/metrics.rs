//! The lifecycle's Prometheus series: what purges deleted and how long
//! they took, forgets, tombstones held and tombstoned rows still present
//! (a restored backup that `esq forget --reapply` has not cleaned yet).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::metrics::{DatasetLabels, Metrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgetLabels {
    /// `forgotten`, `already_forgotten`, `bad_input` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug)]
pub struct LifecycleMetrics {
    /// Rows deleted past retention, per dataset.
    pub purged_rows: Family<DatasetLabels, Counter>,
    /// How long one dataset's purge run took.
    pub purge_seconds: Family<DatasetLabels, Histogram>,
    /// Purge runs that failed, per dataset.
    pub purge_failures: Family<DatasetLabels, Counter>,
    pub forgets: Family<ForgetLabels, Counter>,
    /// Tombstones in force, per subject dataset.
    pub tombstones: Family<DatasetLabels, Gauge>,
    /// 1 when an audit log tombstones were recovered from at start did not
    /// verify (its forgets are hidden in memory; what it lost is unknown).
    pub recovery_unverified: Gauge,
    /// 1 when rows of forgotten subjects are in the dataset's table (the
    /// count goes to esq's log), per dataset.
    pub tombstoned_rows_present: Family<DatasetLabels, Gauge>,
}

impl LifecycleMetrics {
    pub fn register(metrics: &Metrics) -> LifecycleMetrics {
        let lifecycle = LifecycleMetrics {
            purged_rows: Family::default(),
            purge_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 4.0, 10))
            }),
            purge_failures: Family::default(),
            forgets: Family::default(),
            tombstones: Family::default(),
            tombstoned_rows_present: Family::default(),
            recovery_unverified: Gauge::default(),
        };
        let mut registry = metrics.registry();
        registry.register(
            "purged_rows",
            "Rows deleted because they were past their dataset's retention",
            lifecycle.purged_rows.clone(),
        );
        registry.register(
            "purge_seconds",
            "Duration of one dataset's retention purge run",
            lifecycle.purge_seconds.clone(),
        );
        registry.register(
            "purge_failures",
            "Retention purge runs that failed (the next run resumes)",
            lifecycle.purge_failures.clone(),
        );
        registry.register(
            "forgets",
            "Right-to-delete requests: forgotten, already_forgotten or failed",
            lifecycle.forgets.clone(),
        );
        registry.register(
            "tombstones",
            "Right-to-delete tombstones in force, per subject dataset",
            lifecycle.tombstones.clone(),
        );
        registry.register(
            "tombstoned_rows_present",
            "1 when rows of forgotten subjects are back in the dataset's table (hidden from every answer; esq forget --reapply deletes them; the count is in esq's log)",
            lifecycle.tombstoned_rows_present.clone(),
        );
        registry.register(
            "tombstone_recovery_unverified",
            "1 when an audit log esq recovered tombstones from at start did not verify (its forgets are hidden in memory only; check it with esq audit verify)",
            lifecycle.recovery_unverified.clone(),
        );
        drop(registry);
        lifecycle
    }
}

impl LifecycleMetrics {
    /// Creates every series at zero (each dataset's purge and tombstone
    /// series, each forget outcome), so dashboards and alerts see them
    /// before the first purge or forget.
    pub fn preset(&self, catalog: &crate::catalog::Catalog) {
        for data in catalog.datasets() {
            let labels = dataset(&data.id);
            if data.retention_years.is_some() {
                let _ = self.purged_rows.get_or_create(&labels);
                let _ = self.purge_seconds.get_or_create(&labels);
                let _ = self.purge_failures.get_or_create(&labels);
            }
            if data.subject_key.is_some() {
                let _ = self.tombstones.get_or_create(&labels);
            }
            if !catalog.subject_fields(data).is_empty() {
                let _ = self.tombstoned_rows_present.get_or_create(&labels);
            }
        }
        for outcome in ["forgotten", "already_forgotten", "bad_input", "failed"] {
            let _ = self.forgets.get_or_create(&ForgetLabels {
                outcome: outcome.into(),
            });
        }
    }
}

/// The label set for `dataset`.
pub fn dataset(dataset: &str) -> DatasetLabels {
    DatasetLabels {
        dataset: dataset.to_string(),
    }
}
