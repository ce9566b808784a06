//! The loaded, validated state every command and door shares: config,
//! catalog, policies, users, the ticket store, the privacy releaser (its
//! budgets live beside the tickets) and the guard. Built once, passed as an
//! `Arc` (no globals).

use std::sync::Arc;

use crate::audit::{AuditError, AuditLog, AuditSink, DisabledAudit, TracingAudit};
use crate::auth::UserDirectory;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, ConfigError};
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::policy::{PolicyError, PolicySet};
use crate::privacy::Releaser;
use crate::sentinel::Sentinel;
use crate::shared::{BadRedisUrl, Redis, RedisTarget};
use crate::tickets::{
    IssuePolicy, MemoryTicketStore, RedisTicketStore, TicketCheck, TicketIssuer, TicketStore,
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("tickets.store: {0}")]
    Store(#[from] BadRedisUrl),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

pub struct App {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub policies: Arc<PolicySet>,
    pub users: UserDirectory,
    pub tickets: TicketIssuer,
    /// Releases private answers and keeps privacy budgets, in the ticket
    /// store's place (memory, or the same Redis, shared by replicas).
    pub privacy: Arc<Releaser>,
    /// The guard both doors call.
    pub guard: Arc<Guard>,
    pub metrics: Arc<Metrics>,
    /// Where every decision is recorded.
    pub audit: Arc<dyn AuditSink>,
    /// Watches ticket use and raises breaches.
    pub sentinel: Arc<Sentinel>,
    /// `esq_tickets_active`, refreshed by `esq serve`.
    pub tickets_active: prometheus_client::metrics::gauge::Gauge,
}

impl App {
    /// Loads catalog and policies named by an already validated config, and
    /// opens the audit log (continuing its chain).
    pub fn from_config(config: Config) -> Result<App, LoadError> {
        App::build(config, true)
    }

    /// As [`App::from_config`], for commands that serve nothing (`esq
    /// check`, `esq explain`): audit events are logged, no file is opened.
    pub fn without_audit_log(config: Config) -> Result<App, LoadError> {
        App::build(config, false)
    }

    fn build(config: Config, open_audit_log: bool) -> Result<App, LoadError> {
        let catalog = Arc::new(Catalog::load_dir(&config.catalog.dir)?);
        let policies = Arc::new(PolicySet::load_dir(
            &config.policy.dir,
            config.policy.eval_timeout,
        )?);
        let users = UserDirectory::from_config(&config);
        let redis = match config.tickets.store.as_str() {
            "memory" => None,
            url => Some(Arc::new(Redis::new(
                RedisTarget::parse(url)?,
                config.tickets.store_timeout,
            ))),
        };
        let store: Arc<dyn TicketStore> = match &redis {
            Some(redis) => Arc::new(RedisTicketStore::new(redis.clone())),
            None => Arc::new(MemoryTicketStore::new()),
        };
        let privacy = Arc::new(match &redis {
            Some(redis) => Releaser::redis(redis.clone()),
            None => Releaser::memory(),
        });
        let metrics = Arc::new(Metrics::new());
        let audit: Arc<dyn AuditSink> = if !open_audit_log {
            Arc::new(TracingAudit)
        } else if !config.audit.enabled {
            metrics.audit_enabled.set(0);
            Arc::new(DisabledAudit)
        } else {
            Arc::new(AuditLog::open(
                &config.audit.path,
                config.audit.rotate_bytes,
                sync_policy(&config.audit),
                &metrics,
            )?)
        };
        let sentinel = Arc::new(Sentinel::new(
            &config.sentinel,
            redis,
            store.clone(),
            audit.clone(),
            &metrics,
            format!("{} pid {}", config.server.http_listen, std::process::id()),
        ));
        let tickets_active = prometheus_client::metrics::gauge::Gauge::default();
        metrics.registry().register(
            "tickets_active",
            "Live tickets (unexpired, unrevoked) in the ticket store",
            tickets_active.clone(),
        );
        let tickets = TicketIssuer {
            catalog: catalog.clone(),
            policies: policies.clone(),
            store,
            limits: IssuePolicy {
                default_ttl: config.tickets.default_ttl,
                max_ttl: config.tickets.max_ttl,
                min_group_size: config.guard.min_group_size,
                environment: config.server.environment.clone(),
            },
        };
        // Both doors run private counts through `privacy` (the release
        // step): the guard may allow them.
        let guard = Arc::new(Guard::new(catalog.clone()).serving_private_answers());
        Ok(App {
            config,
            guard,
            catalog,
            policies,
            users,
            tickets,
            privacy,
            metrics,
            audit,
            sentinel,
            tickets_active,
        })
    }

    /// The ticket checks of one connection (see [`TicketCheck`]).
    pub fn ticket_check(&self) -> TicketCheck {
        TicketCheck::new(
            self.tickets.store.clone(),
            self.config.tickets.validation_cache,
        )
    }

    /// A ticket check that asks the store every time (a request that
    /// checks its ticket once).
    pub fn ticket_check_now(&self) -> TicketCheck {
        TicketCheck::new(self.tickets.store.clone(), std::time::Duration::ZERO)
    }

    pub fn load(path: &std::path::Path) -> Result<App, LoadError> {
        App::from_config(Config::load(path)?)
    }

    /// Loads without opening the audit log (see [`App::without_audit_log`]).
    pub fn load_without_audit_log(path: &std::path::Path) -> Result<App, LoadError> {
        App::without_audit_log(Config::load(path)?)
    }
}

/// The audit sync policy `audit.durability` and `audit.sync_interval` ask for.
fn sync_policy(config: &crate::config::AuditConfig) -> crate::audit::SyncPolicy {
    match config.durability {
        crate::config::AuditDurability::Fsync => crate::audit::SyncPolicy::EveryBatch,
        crate::config::AuditDurability::Write => {
            crate::audit::SyncPolicy::Within(config.sync_interval)
        }
    }
}
