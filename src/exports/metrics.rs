//! The exports' Prometheus series: jobs by state (a gauge read from
//! schema `esq`, so every replica reports the whole queue), jobs ended by
//! outcome, how long a job took, and the bytes of the bundles written.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::job::State;
use crate::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug)]
pub struct ExportMetrics {
    /// Jobs in each state (from schema `esq`, refreshed by the runner).
    pub jobs: Family<StateLabels, Gauge>,
    /// Jobs this esq ended, by final state (`COMPLETED`, `FAILED`).
    pub ended: Family<StateLabels, Counter>,
    /// Seconds from claim to completion of one job.
    pub seconds: Histogram,
    /// Bytes of the sealed bundles this esq wrote.
    pub bytes: Counter,
}

impl ExportMetrics {
    pub fn register(metrics: &Metrics) -> ExportMetrics {
        let exports = ExportMetrics {
            jobs: Family::default(),
            ended: Family::default(),
            seconds: Histogram::new(exponential_buckets(0.1, 3.0, 10)),
            bytes: Counter::default(),
        };
        for state in State::ALL {
            exports.jobs.get_or_create(&labels(state)).set(0);
        }
        for state in [State::Completed, State::Failed] {
            exports.ended.get_or_create(&labels(state)).inc_by(0);
        }
        let mut registry = metrics.registry();
        registry.register(
            "export_jobs",
            "Export jobs in each state (all replicas, from schema esq)",
            exports.jobs.clone(),
        );
        registry.register(
            "export_jobs_ended",
            "Export jobs this esq ended, by final state",
            exports.ended.clone(),
        );
        registry.register(
            "export_seconds",
            "Duration of one export job, from claim to completion",
            exports.seconds.clone(),
        );
        registry.register(
            "export_bytes",
            "Bytes of the sealed export bundles this esq wrote",
            exports.bytes.clone(),
        );
        exports
    }
}

pub fn labels(state: State) -> StateLabels {
    StateLabels {
        state: state.as_str().to_string(),
    }
}
