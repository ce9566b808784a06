//! The breach sentinel: watches how tickets are used and trips named rules
//! (`[[sentinel.rules]]`: so many uses of one ticket in a window, so many
//! different statements, so many denials in a row). The doors report each
//! use and decision here without waiting: counts gather in memory and every
//! `sentinel.flush_interval` are added to windows shared by all replicas
//! (Redis) or held by this one (memory store). A rule that reaches its
//! limit trips once per window across replicas: the ticket is revoked, the
//! breach is audited, counted, listed and POSTed to the webhook.

pub mod breach;
mod redis_windows;
mod webhook;
mod windows;

use chrono::{SecondsFormat, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use crate::audit::AuditSink;
use crate::config::{SentinelConfig, SentinelMeasure, SentinelRule, SentinelSubject};
use crate::metrics::Metrics;
use crate::shared::{Redis, Unavailable};
use crate::tickets::{TicketHash, TicketStore};
pub use breach::{Breach, Source};
pub use redis_windows::RedisWindows;
pub use webhook::{Delivery, DeliveryLabels};
use webhook::{Webhook, WebhookSettings};
pub use windows::{MemoryWindows, Windows};

/// Fingerprints remembered per subject between two flushes.
const STATEMENTS_PER_FLUSH: usize = 10_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

/// Whose activity a rule counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Ticket(TicketHash),
    User(String),
}

impl Subject {
    fn kind(&self) -> SentinelSubject {
        match self {
            Subject::Ticket(_) => SentinelSubject::Ticket,
            Subject::User(_) => SentinelSubject::User,
        }
    }

    /// The braces make every key of one subject share a cluster hash slot.
    fn tag(&self) -> String {
        match self {
            Subject::Ticket(hash) => format!("{{t:{}}}", hash.to_hex()),
            Subject::User(user) => format!("{{u:{user}}}"),
        }
    }
}

/// What one subject did since the last flush.
#[derive(Debug, Default)]
struct Activity {
    user: String,
    /// The (last) ticket in use: the one a trip revokes.
    ticket: Option<TicketHash>,
    uses: u64,
    statements: HashSet<u64>,
    /// Denials since the last allowed statement.
    denials: u64,
    /// An allowed statement came after earlier denials (or the last flush).
    restarted: bool,
}

/// Which facts the configured rules need at all.
#[derive(Debug, Default, Clone, Copy)]
struct Needs {
    ticket: bool,
    user: bool,
    statements: bool,
    streaks: bool,
}

/// A breach reported by an operator.
#[derive(Debug, Clone)]
pub struct Report {
    pub ticket: Option<TicketHash>,
    pub user: Option<String>,
    pub reason: String,
    pub raised_by: String,
}

pub struct Sentinel {
    config: SentinelConfig,
    needs: Needs,
    pending: Mutex<HashMap<Subject, Activity>>,
    windows: Arc<dyn Windows>,
    store: Arc<dyn TicketStore>,
    audit: Arc<dyn AuditSink>,
    webhook: OnceLock<Webhook>,
    trips: Family<RuleLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    replica: String,
}

impl Sentinel {
    /// A sentinel counting in `redis` when given (shared by replicas), in
    /// memory otherwise.
    pub fn new(
        config: &SentinelConfig,
        redis: Option<Arc<Redis>>,
        store: Arc<dyn TicketStore>,
        audit: Arc<dyn AuditSink>,
        metrics: &Metrics,
        replica: String,
    ) -> Sentinel {
        let windows: Arc<dyn Windows> = match redis {
            Some(redis) => Arc::new(RedisWindows::new(redis)),
            None => Arc::new(MemoryWindows::default()),
        };
        let mut needs = Needs::default();
        if config.enabled {
            for rule in &config.rules {
                match rule.per {
                    SentinelSubject::Ticket => needs.ticket = true,
                    SentinelSubject::User => needs.user = true,
                }
                match rule.measure {
                    SentinelMeasure::DistinctStatements => needs.statements = true,
                    SentinelMeasure::DenialsInARow => needs.streaks = true,
                    SentinelMeasure::Uses => {}
                }
            }
        }
        let trips = Family::<RuleLabels, Counter>::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        {
            let mut registry = metrics.registry();
            registry.register(
                "sentinel_trips",
                "Breaches raised, by sentinel rule (manual: raised by an operator)",
                trips.clone(),
            );
            registry.register(
                "sentinel_alerts",
                "Breach alerts to the webhook by result",
                deliveries.clone(),
            );
        }
        // Every configured rule's series exists from the start (at 0), so
        // dashboards and alerts see it before the first trip.
        for rule in config
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .chain(["manual"])
        {
            let _ = trips.get_or_create(&RuleLabels { rule: rule.into() });
        }
        Sentinel {
            config: config.clone(),
            needs,
            pending: Mutex::new(HashMap::new()),
            windows,
            store,
            audit,
            webhook: OnceLock::new(),
            trips,
            deliveries,
            replica,
        }
    }

    /// Starts the webhook and the flush loop in the current runtime; the
    /// loop ends when `shutdown` turns true (after a last flush).
    pub fn start(
        self: &Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        if let Some(url) = &self.config.webhook {
            let settings = WebhookSettings {
                url: url.clone(),
                timeout: self.config.webhook_timeout,
                attempts: self.config.webhook_attempts,
            };
            match Webhook::start(settings, self.deliveries.clone()) {
                Ok(webhook) => {
                    let _ = self.webhook.set(webhook);
                }
                Err(err) => tracing::error!(error = %err, "breach webhook cannot start"),
            }
        }
        let sentinel = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sentinel.config.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => sentinel.flush().await,
                    _ = shutdown.changed() => {
                        sentinel.flush().await;
                        return;
                    }
                }
            }
        })
    }

    /// One use of a ticket (a statement run, an Execute, an HTTP query),
    /// with the [`fingerprint`] of the statement's text.
    pub fn used(&self, ticket: &TicketHash, user: &str, statement: u64) {
        if !(self.needs.ticket || self.needs.user) {
            return;
        }
        let statements = self.needs.statements;
        self.note(Some(ticket), user, |activity| {
            activity.uses += 1;
            if statements && activity.statements.len() < STATEMENTS_PER_FLUSH {
                activity.statements.insert(statement);
            }
        });
    }

    /// An allowed statement that runs now: [`Sentinel::decided`] and
    /// [`Sentinel::used`] in one update (one lock on the hot path).
    pub fn ran(&self, ticket: &TicketHash, user: &str, statement: u64) {
        let (streaks, statements) = (self.needs.streaks, self.needs.statements);
        if !(streaks || self.needs.ticket || self.needs.user) {
            return;
        }
        self.note(Some(ticket), user, |activity| {
            if streaks {
                activity.denials = 0;
                activity.restarted = true;
            }
            activity.uses += 1;
            if statements && activity.statements.len() < STATEMENTS_PER_FLUSH {
                activity.statements.insert(statement);
            }
        });
    }

    /// One guard decision: denials in a row make a streak, an allowed
    /// statement ends it.
    pub fn decided(&self, user: &str, ticket: Option<&TicketHash>, denied: bool) {
        if !self.needs.streaks {
            return;
        }
        self.note(ticket, user, |activity| {
            if denied {
                activity.denials += 1;
            } else {
                activity.denials = 0;
                activity.restarted = true;
            }
        });
    }

    fn note(&self, ticket: Option<&TicketHash>, user: &str, update: impl Fn(&mut Activity)) {
        let mut pending = self.lock();
        let mut touch = |subject: Subject| {
            let activity = pending.entry(subject).or_default();
            if activity.user.is_empty() {
                activity.user = user.to_string();
            }
            if ticket.is_some() {
                activity.ticket = ticket.copied();
            }
            update(activity);
        };
        if self.needs.ticket {
            if let Some(ticket) = ticket {
                touch(Subject::Ticket(*ticket));
            }
        }
        if self.needs.user && !user.is_empty() {
            touch(Subject::User(user.to_string()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Activity>> {
        // Updates are single map operations: a poisoned map is consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what was noted since the last flush to the windows and trips
    /// the rules that reach their limit.
    pub async fn flush(&self) {
        let pending = std::mem::take(&mut *self.lock());
        if pending.is_empty() {
            return;
        }
        let now_ms = Utc::now().timestamp_millis();
        for (subject, activity) in pending {
            for rule in self.config.rules.iter().filter(|r| r.per == subject.kind()) {
                let key = format!("esq:{}:sentinel:{}", subject.tag(), rule.name);
                let count = match rule.measure {
                    SentinelMeasure::Uses if activity.uses > 0 => {
                        self.windows
                            .add_uses(&key, activity.uses, now_ms, rule.window)
                            .await
                    }
                    SentinelMeasure::DistinctStatements if !activity.statements.is_empty() => {
                        let statements: Vec<u64> = activity.statements.iter().copied().collect();
                        self.windows
                            .add_statements(&key, &statements, now_ms, rule.window)
                            .await
                    }
                    SentinelMeasure::DenialsInARow
                        if activity.denials > 0 || activity.restarted =>
                    {
                        self.windows
                            .streak(&key, activity.restarted, activity.denials, rule.window)
                            .await
                    }
                    _ => continue,
                };
                match count {
                    Ok(count) if count >= rule.limit => {
                        let streak_ended =
                            rule.measure == SentinelMeasure::DenialsInARow && activity.denials == 0;
                        if !streak_ended {
                            self.trip(rule, &subject, &activity, count).await;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(rule = %rule.name, error = %err, "sentinel cannot count: uses of this interval are lost");
                    }
                }
            }
        }
    }

    async fn trip(&self, rule: &SentinelRule, subject: &Subject, activity: &Activity, count: u64) {
        let claim = format!("esq:{}:trip:{}", subject.tag(), rule.name);
        match self.windows.claim_trip(&claim, rule.window).await {
            Ok(true) => {}
            Ok(false) => return, // another replica (or an earlier flush) has it
            Err(err) => {
                tracing::error!(rule = %rule.name, error = %err, "sentinel rule reached its limit but the trip cannot be claimed");
                return;
            }
        }
        let revoked = match activity.ticket {
            Some(ticket) => self.revoke(&ticket).await,
            None => false,
        };
        let breach = Breach {
            event: "esq.breach".into(),
            id: breach::new_id(),
            at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            source: Source::Sentinel,
            rule: rule.name.clone(),
            measure: measure_name(rule.measure).into(),
            per: match rule.per {
                SentinelSubject::Ticket => "ticket",
                SentinelSubject::User => "user",
            }
            .into(),
            user: Some(activity.user.clone()).filter(|u| !u.is_empty()),
            ticket_hash: activity.ticket.map(|t| t.to_hex()),
            count,
            limit: rule.limit,
            window_seconds: rule.window.as_secs(),
            revoked,
            replica: self.replica.clone(),
            reason: describe(rule, count),
            raised_by: None,
        };
        self.publish(breach).await;
    }

    /// An operator's report: revokes the named ticket (if any) and raises
    /// the breach like a trip.
    pub async fn raise(&self, report: Report) -> Result<Breach, Unavailable> {
        let mut user = report.user;
        let revoked = match &report.ticket {
            Some(ticket) => {
                if user.is_none() {
                    user = self
                        .store
                        .owner(ticket, Utc::now())
                        .await
                        .map_err(|err| Unavailable(err.to_string()))?;
                }
                self.store
                    .revoke(ticket, Utc::now())
                    .await
                    .map_err(|err| Unavailable(err.to_string()))?
            }
            None => false,
        };
        let breach = Breach {
            event: "esq.breach".into(),
            id: breach::new_id(),
            at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            source: Source::Operator,
            rule: "manual".into(),
            measure: "manual".into(),
            per: if report.ticket.is_some() {
                "ticket"
            } else {
                "user"
            }
            .into(),
            user,
            ticket_hash: report.ticket.map(|t| t.to_hex()),
            count: 0,
            limit: 0,
            window_seconds: 0,
            revoked,
            replica: self.replica.clone(),
            reason: report.reason,
            raised_by: Some(report.raised_by),
        };
        self.publish(breach.clone()).await;
        Ok(breach)
    }

    /// The newest breaches, from every replica when Redis is shared.
    pub async fn recent(&self, limit: usize) -> Result<Vec<Breach>, Unavailable> {
        self.windows.recent_breaches(limit).await
    }

    async fn revoke(&self, ticket: &TicketHash) -> bool {
        match self.store.revoke(ticket, Utc::now()).await {
            Ok(revoked) => revoked,
            Err(err) => {
                tracing::error!(ticket = %ticket, error = %err, "sentinel cannot revoke the ticket");
                false
            }
        }
    }

    async fn publish(&self, breach: Breach) {
        self.trips
            .get_or_create(&RuleLabels {
                rule: breach.rule.clone(),
            })
            .inc();
        tracing::warn!(
            target: "esq::breach",
            breach = %breach.id,
            rule = %breach.rule,
            user = breach.user.as_deref().unwrap_or(""),
            count = breach.count,
            revoked = breach.revoked,
            "breach raised"
        );
        breach::record(self.audit.as_ref(), &breach);
        if let Err(err) = self.windows.push_breach(&breach).await {
            tracing::error!(breach = %breach.id, error = %err, "breach not listed");
        }
        if let Some(webhook) = self.webhook.get() {
            webhook.send(breach);
        }
    }
}

/// A statement text's fingerprint for the `distinct_statements` measure
/// (a fast hash; replicas of the same build agree on it).
pub fn fingerprint(statement: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    statement.hash(&mut hasher);
    hasher.finish()
}

fn measure_name(measure: SentinelMeasure) -> &'static str {
    match measure {
        SentinelMeasure::Uses => "uses",
        SentinelMeasure::DistinctStatements => "distinct_statements",
        SentinelMeasure::DenialsInARow => "denials_in_a_row",
    }
}

fn describe(rule: &SentinelRule, count: u64) -> String {
    let window = humantime::format_duration(rule.window);
    match rule.measure {
        SentinelMeasure::Uses => format!("{count} uses within {window} (limit {})", rule.limit),
        SentinelMeasure::DistinctStatements => format!(
            "{count} different statements within {window} (limit {})",
            rule.limit
        ),
        SentinelMeasure::DenialsInARow => {
            format!("{count} denials in a row (limit {})", rule.limit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::TracingAudit;
    use crate::tickets::{Lookup, MemoryTicketStore, Scope, Ticket, TicketId};
    use std::time::Duration;

    fn rule(
        name: &str,
        measure: SentinelMeasure,
        per: SentinelSubject,
        limit: u64,
    ) -> SentinelRule {
        SentinelRule {
            name: name.into(),
            measure,
            per,
            limit,
            window: Duration::from_secs(30),
        }
    }

    async fn sentinel(rules: Vec<SentinelRule>) -> (Sentinel, Arc<MemoryTicketStore>, TicketId) {
        let config = SentinelConfig {
            rules,
            ..SentinelConfig::default()
        };
        let store = Arc::new(MemoryTicketStore::new());
        let id = TicketId::generate().unwrap();
        let now = Utc::now();
        let scope = Scope {
            id: "test".into(),
            dataset: "burial_2024".into(),
            fields: vec!["state".into()],
            aggregate: None,
            min_group_size: 11,
            row_filters: Default::default(),
            retention_cutoff: None,
            privacy: None,
            purpose: "test".into(),
            user: "journalist".into(),
            policy_ids: vec![],
            issued_at: now,
            expires_at: now + chrono::Duration::minutes(5),
            exception: None,
        };
        store.put(&id, &Ticket { scope }).await.unwrap();
        let metrics = Metrics::new();
        let sentinel = Sentinel::new(
            &config,
            None,
            store.clone(),
            Arc::new(TracingAudit),
            &metrics,
            "test".into(),
        );
        (sentinel, store, id)
    }

    #[tokio::test]
    async fn a_volume_rule_trips_once_and_revokes_the_ticket() {
        let (sentinel, store, id) = sentinel(vec![rule(
            "volume",
            SentinelMeasure::Uses,
            SentinelSubject::Ticket,
            10,
        )])
        .await;
        for _ in 0..9 {
            sentinel.used(&id.hash(), "journalist", 1);
        }
        sentinel.flush().await;
        assert!(sentinel.recent(10).await.unwrap().is_empty(), "9 < 10");
        assert!(matches!(
            store.get(&id, Utc::now()).await.unwrap(),
            Lookup::Valid(_)
        ));
        for _ in 0..5 {
            sentinel.used(&id.hash(), "journalist", 1);
        }
        sentinel.flush().await;
        sentinel.used(&id.hash(), "journalist", 1);
        sentinel.flush().await;
        let breaches = sentinel.recent(10).await.unwrap();
        assert_eq!(breaches.len(), 1, "{breaches:?}");
        let breach = &breaches[0];
        assert_eq!(breach.rule, "volume");
        assert_eq!(breach.count, 14);
        assert_eq!(
            breach.ticket_hash.as_deref(),
            Some(id.hash().to_hex().as_str())
        );
        assert_eq!(breach.user.as_deref(), Some("journalist"));
        assert!(breach.revoked);
        assert_eq!(
            store.get(&id, Utc::now()).await.unwrap(),
            Lookup::Stale(crate::tickets::Stale::Revoked)
        );
    }

    #[tokio::test]
    async fn distinct_statements_and_denial_streaks_trip_their_rules() {
        let (sentinel, _store, id) = sentinel(vec![
            rule(
                "many",
                SentinelMeasure::DistinctStatements,
                SentinelSubject::Ticket,
                5,
            ),
            rule(
                "streak",
                SentinelMeasure::DenialsInARow,
                SentinelSubject::User,
                4,
            ),
        ])
        .await;
        // The same statement many times is not many statements.
        for _ in 0..20 {
            sentinel.used(&id.hash(), "journalist", 7);
        }
        // Three denials, an allowed statement, three denials: no streak of 4.
        for denied in [true, true, true, false, true, true, true] {
            sentinel.decided("journalist", None, denied);
        }
        sentinel.flush().await;
        assert!(sentinel.recent(10).await.unwrap().is_empty());
        for statement in 0..5 {
            sentinel.used(&id.hash(), "journalist", statement);
        }
        sentinel.decided("journalist", None, true);
        sentinel.flush().await;
        assert_eq!(tripped(&sentinel).await, ["many", "streak"]);
    }

    /// The rules of the breaches raised so far, sorted.
    async fn tripped(sentinel: &Sentinel) -> Vec<String> {
        let mut rules: Vec<String> = sentinel
            .recent(10)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.rule)
            .collect();
        rules.sort();
        rules
    }

    #[tokio::test]
    async fn a_statement_that_ran_is_a_use_and_ends_a_streak() {
        let (sentinel, _store, id) = sentinel(vec![
            rule("volume", SentinelMeasure::Uses, SentinelSubject::Ticket, 3),
            rule(
                "streak",
                SentinelMeasure::DenialsInARow,
                SentinelSubject::User,
                3,
            ),
        ])
        .await;
        sentinel.decided("journalist", Some(&id.hash()), true);
        sentinel.decided("journalist", Some(&id.hash()), true);
        sentinel.ran(&id.hash(), "journalist", 1);
        sentinel.decided("journalist", Some(&id.hash()), true);
        sentinel.flush().await;
        assert!(
            sentinel.recent(10).await.unwrap().is_empty(),
            "no streak of 3, 1 use"
        );
        sentinel.ran(&id.hash(), "journalist", 2);
        sentinel.ran(&id.hash(), "journalist", 3);
        sentinel.flush().await;
        assert_eq!(tripped(&sentinel).await, ["volume"]);
    }

    #[tokio::test]
    async fn a_disabled_sentinel_counts_nothing_but_operators_can_still_raise() {
        let config = SentinelConfig {
            enabled: false,
            ..SentinelConfig::default()
        };
        let store = Arc::new(MemoryTicketStore::new());
        let sentinel = Sentinel::new(
            &config,
            None,
            store,
            Arc::new(TracingAudit),
            &Metrics::new(),
            "test".into(),
        );
        let id = TicketId::generate().unwrap();
        for _ in 0..20_000 {
            sentinel.used(&id.hash(), "journalist", 1);
        }
        sentinel.flush().await;
        assert!(sentinel.recent(10).await.unwrap().is_empty());
        let breach = sentinel
            .raise(Report {
                ticket: None,
                user: Some("journalist".into()),
                reason: "exported a spreadsheet to a personal account".into(),
                raised_by: "admin".into(),
            })
            .await
            .unwrap();
        assert_eq!(breach.source, Source::Operator);
        assert_eq!(sentinel.recent(10).await.unwrap(), vec![breach]);
    }
}
