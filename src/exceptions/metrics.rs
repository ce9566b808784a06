//! The exception waivers' Prometheus series: how many are asked for, how
//! stewards decide, how often approved ones are used, and how many are open
//! now (pending, or approved and unexpired) — a number that should stay
//! small: many open exceptions mean the policies no longer fit the work.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `approved` or `denied`.
    pub decision: String,
}

#[derive(Clone, Debug)]
pub struct ExceptionMetrics {
    /// Exceptions asked for (stored as pending).
    pub requests: Counter,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Tickets issued under an approved exception.
    pub uses: Counter,
    /// Pending, or approved and unexpired (refreshed on every change and
    /// by the sweep of `esq serve`).
    pub open: Gauge,
}

impl ExceptionMetrics {
    pub fn register(metrics: &Metrics) -> ExceptionMetrics {
        let exceptions = ExceptionMetrics {
            requests: Counter::default(),
            decisions: Family::default(),
            uses: Counter::default(),
            open: Gauge::default(),
        };
        for decision in ["approved", "denied"] {
            let _ = exceptions.decisions.get_or_create(&DecisionLabels {
                decision: decision.into(),
            });
        }
        let mut registry = metrics.registry();
        registry.register(
            "exception_requests",
            "Exception waivers requested",
            exceptions.requests.clone(),
        );
        registry.register(
            "exception_decisions",
            "Exception waivers decided by a data steward: approved or denied",
            exceptions.decisions.clone(),
        );
        registry.register(
            "exception_uses",
            "Tickets issued under an approved exception waiver",
            exceptions.uses.clone(),
        );
        registry.register(
            "exceptions_open",
            "Exception waivers open now: pending, or approved and not expired",
            exceptions.open.clone(),
        );
        drop(registry);
        exceptions
    }

    /// Counts a decision.
    pub fn decided(&self, approved: bool) {
        let decision = if approved { "approved" } else { "denied" };
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: decision.into(),
            })
            .inc();
    }
}
