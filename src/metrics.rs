//! Prometheus metrics shared by both doors (`esq_` prefix), rendered in the
//! text exposition format by `GET /metrics`. One [`Metrics`] per process,
//! held by the [`crate::app::App`].

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which door a decision came through.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue, serde::Serialize)]
#[allow(non_camel_case_types)]
pub enum Door {
    pg,
    http,
    /// esq itself: a signal to the process (a reload), a timer.
    process,
}

impl Door {
    /// Whether the door keeps a client session on its upstream connection
    /// (so transaction and session statements have somewhere to live).
    /// The HTTP door runs each query on a connection it then lends to
    /// others: it runs queries only.
    pub fn runs_sessions(self) -> bool {
        matches!(self, Door::pg)
    }
}

/// What the guard decided.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue, serde::Serialize)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Forwarded unchanged in meaning (session statements, metadata).
    allow,
    /// Forwarded after a rewrite.
    rewrite,
    deny,
    /// The ticket was expired, revoked or unknown.
    stale,
}

/// A private answer's dataset.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatasetLabels {
    pub dataset: String,
}

/// Why a private answer was refused: `budget` (spent), `unavailable` (the
/// ledger did not answer), `failed` (the answer did not fit its plan).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrivacyRefusalLabels {
    pub dataset: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub door: Door,
    pub outcome: Outcome,
}

/// A reload's outcome: `allow` (in force) or `deny` (refused).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

impl From<Outcome> for OutcomeLabels {
    fn from(outcome: Outcome) -> OutcomeLabels {
        OutcomeLabels { outcome }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoorLabels {
    pub door: Door,
}

/// An HTTP door answer's status code, e.g. `"200"`, `"403"`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpStatusLabels {
    pub code: String,
}

/// One door's share of the upstream pool, resolved once so the pool's hot
/// path does no label lookup.
#[derive(Debug, Clone)]
pub struct PoolGauges {
    pub in_use: Gauge,
    pub waiting: Gauge,
    /// Requests refused because the pool or the user's share was full.
    pub busy: Counter,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Seconds the guard took per decision (cache hits included).
    pub guard_seconds: Histogram,
    /// Seconds from a statement's arrival to its completion, per door.
    pub statement_seconds: Family<DoorLabels, Histogram>,
    pub active_sessions: Family<DoorLabels, Gauge>,
    pub tickets_issued: Counter,
    pub tickets_revoked: Counter,
    /// Upstream connections lent out by the one pool, per door.
    pub upstream_in_use: Family<DoorLabels, Gauge>,
    /// Upstream connections idle in the pool (shared by both doors).
    pub upstream_idle: Gauge,
    /// Sessions or requests refused a connection (pool or user share full).
    pub upstream_busy: Family<DoorLabels, Counter>,
    pub upstream_waiting: Family<DoorLabels, Gauge>,
    pub upstream_errors: Counter,
    /// Connections closed because of a protocol error or a limit.
    pub protocol_errors: Family<DoorLabels, Counter<u64, AtomicU64>>,
    /// HTTP door answers by status code.
    pub http_responses: Family<HttpStatusLabels, Counter>,
    /// Seconds per audit batch (write + fsync).
    pub audit_write_seconds: Histogram,
    /// Audit records queued but not yet on disk.
    pub audit_backlog: Gauge,
    /// Audit records written and synced.
    pub audit_records: Counter,
    /// 1 while the audit log is on; 0 when `audit.enabled = false`.
    pub audit_enabled: Gauge,
    /// Epsilon charged for private answers (repeats cost nothing).
    pub privacy_epsilon_spent: Family<DatasetLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Private answers released, charged or recalled.
    pub privacy_answers: Family<DatasetLabels, Counter>,
    pub privacy_refusals: Family<PrivacyRefusalLabels, Counter>,
    /// Reloads of users, catalog and policies, applied or refused.
    pub reloads: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("esq");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Guard decisions by door and outcome",
            decisions.clone(),
        );
        let privacy_epsilon_spent =
            Family::<DatasetLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "privacy_epsilon_spent",
            "Epsilon charged to privacy budgets for private answers, per dataset",
            privacy_epsilon_spent.clone(),
        );
        let privacy_answers = Family::<DatasetLabels, Counter>::default();
        registry.register(
            "privacy_answers",
            "Private answers released (charged or recalled), per dataset",
            privacy_answers.clone(),
        );
        let privacy_refusals = Family::<PrivacyRefusalLabels, Counter>::default();
        registry.register(
            "privacy_refusals",
            "Private answers refused: budget spent, ledger unavailable, or failed",
            privacy_refusals.clone(),
        );
        let guard_seconds = Histogram::new(exponential_buckets(0.000_001, 4.0, 10));
        registry.register(
            "guard_seconds",
            "Time the guard took per decision",
            guard_seconds.clone(),
        );
        let statement_seconds = Family::<DoorLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 4.0, 10))
        });
        registry.register(
            "statement_seconds",
            "Time from a statement's arrival to its completion",
            statement_seconds.clone(),
        );
        let active_sessions = Family::<DoorLabels, Gauge>::default();
        registry.register(
            "active_sessions",
            "Open client sessions",
            active_sessions.clone(),
        );
        let tickets_issued = Counter::default();
        registry.register("tickets_issued", "Tickets issued", tickets_issued.clone());
        let tickets_revoked = Counter::default();
        registry.register(
            "tickets_revoked",
            "Tickets revoked",
            tickets_revoked.clone(),
        );
        let upstream_in_use = Family::<DoorLabels, Gauge>::default();
        registry.register(
            "upstream_in_use",
            "Upstream connections lent to a session or request, per door",
            upstream_in_use.clone(),
        );
        let upstream_idle = Gauge::default();
        registry.register(
            "upstream_idle",
            "Upstream connections idle in the pool both doors share",
            upstream_idle.clone(),
        );
        let upstream_busy = Family::<DoorLabels, Counter>::default();
        registry.register(
            "upstream_busy",
            "Sessions or requests refused an upstream connection because the pool or the user's share was full",
            upstream_busy.clone(),
        );
        let upstream_waiting = Family::<DoorLabels, Gauge>::default();
        registry.register(
            "upstream_waiting",
            "Sessions or requests waiting for an upstream connection, per door's pool",
            upstream_waiting.clone(),
        );
        let upstream_errors = Counter::default();
        registry.register(
            "upstream_errors",
            "Failures to connect to or talk with the upstream database",
            upstream_errors.clone(),
        );
        let protocol_errors = Family::<DoorLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "protocol_errors",
            "Client connections closed for a protocol error or a limit",
            protocol_errors.clone(),
        );
        let http_responses = Family::<HttpStatusLabels, Counter>::default();
        registry.register(
            "http_responses",
            "HTTP door answers by status code",
            http_responses.clone(),
        );
        // Every known label set starts at zero, so its series exists (and
        // `rate()` works) before the first event, and dashboards find it.
        for door in [Door::pg, Door::http] {
            for outcome in [
                Outcome::allow,
                Outcome::rewrite,
                Outcome::deny,
                Outcome::stale,
            ] {
                let _ = decisions.get_or_create(&DecisionLabels { door, outcome });
            }
            let labels = DoorLabels { door };
            let _ = statement_seconds.get_or_create(&labels);
            let _ = active_sessions.get_or_create(&labels);
            let _ = upstream_in_use.get_or_create(&labels);
            let _ = upstream_busy.get_or_create(&labels);
            let _ = upstream_waiting.get_or_create(&labels);
            let _ = protocol_errors.get_or_create(&labels);
        }
        let audit_write_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "audit_write_seconds",
            "Time per audit batch: one write and one fsync",
            audit_write_seconds.clone(),
        );
        let audit_backlog = Gauge::default();
        registry.register(
            "audit_backlog",
            "Audit records queued but not yet on disk",
            audit_backlog.clone(),
        );
        let audit_records = Counter::default();
        registry.register(
            "audit_records",
            "Audit records written and synced",
            audit_records.clone(),
        );
        let audit_enabled = Gauge::default();
        audit_enabled.set(1);
        registry.register(
            "audit_enabled",
            "1 while the audit log is on, 0 when audit.enabled = false",
            audit_enabled.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reloads",
            "Reloads of users, catalog and policies: allow (applied) or deny (refused, the bundle in force stays)",
            reloads.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            decisions,
            guard_seconds,
            statement_seconds,
            active_sessions,
            tickets_issued,
            tickets_revoked,
            upstream_in_use,
            upstream_idle,
            upstream_busy,
            upstream_waiting,
            upstream_errors,
            protocol_errors,
            http_responses,
            audit_write_seconds,
            audit_backlog,
            audit_records,
            audit_enabled,
            privacy_epsilon_spent,
            privacy_answers,
            privacy_refusals,
            reloads,
        }
    }

    pub fn decision(&self, door: Door, outcome: Outcome) {
        self.decisions
            .get_or_create(&DecisionLabels { door, outcome })
            .inc();
    }

    /// A door's upstream pool gauges (in use, idle, waiting).
    pub fn pool(&self, door: Door) -> PoolGauges {
        let labels = DoorLabels { door };
        PoolGauges {
            in_use: self.upstream_in_use.get_or_create(&labels).clone(),
            waiting: self.upstream_waiting.get_or_create(&labels).clone(),
            busy: self.upstream_busy.get_or_create(&labels).clone(),
        }
    }

    /// The registry for a door that wants to add metrics of its own.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }

    /// The classic Prometheus text format (`text/plain; version=0.0.4`),
    /// which `promtool check metrics` and older scrapers read: counter
    /// families are named with their `_total` suffix, and the OpenMetrics
    /// `# UNIT` and `# EOF` lines are left out.
    pub fn render_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.render())
    }
}

fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(pending) = help.replace(line) {
                out.push_str(pending);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some(pending) = help.take() {
                let text = pending
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.split_once(' '))
                    .map(|(_, text)| text)
                    .unwrap_or("");
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(pending) = help.take() {
            out.push_str(pending);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(pending) = help {
        out.push_str(pending);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_total_and_drops_eof() {
        let metrics = Metrics::new();
        metrics.decision(Door::http, Outcome::deny);
        let text = metrics.render_prometheus_text();
        assert!(
            text.contains("# HELP esq_decisions_total Guard decisions"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE esq_decisions_total counter"),
            "{text}"
        );
        assert!(
            text.contains("esq_decisions_total{door=\"http\",outcome=\"deny\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE esq_guard_seconds histogram"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }
}
