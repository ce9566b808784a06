//! The loaded, validated state every command and door shares: the config,
//! the bundle (catalog, policies, users, guard — swapped whole by a
//! reload), the ticket store, the privacy releaser (its budgets live beside
//! the tickets), the audit sink and the sentinel. Built once, passed as an
//! `Arc` (no globals).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::{AuditError, AuditLog, AuditSink, DisabledAudit, TracingAudit};
use crate::bundle::{Bundle, BundleError};
use crate::config::{Config, ConfigError};
use crate::lifecycle::subject::SubjectKeyError;
use crate::lifecycle::{LifecycleMetrics, SubjectKeys, Tombstones};
use crate::metrics::Metrics;
use crate::privacy::Releaser;
use crate::sentinel::Sentinel;
use crate::shared::{BadRedisUrl, Redis, RedisTarget};
use crate::signing::{KeyError, SigningKey};
use crate::tickets::{MemoryTicketStore, RedisTicketStore, TicketCheck, TicketStore};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("tickets.store: {0}")]
    Store(#[from] BadRedisUrl),
    #[error("signing.key_file: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    SubjectKey(#[from] SubjectKeyError),
}

pub struct App {
    /// The configuration esq started with. Only its `users` section can
    /// change while esq runs (by a reload, into [`App::bundle`]); a reload
    /// that would change any other section is refused.
    pub config: Config,
    /// What decides (catalog, policies, users, guard), swapped whole by a
    /// reload: read it once per statement with [`App::bundle`].
    bundle: ArcSwap<Bundle>,
    /// One reload at a time.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// The ticket store (memory, or Redis shared by replicas).
    pub ticket_store: Arc<dyn TicketStore>,
    /// Signs audit checkpoints, seals and receipts (`[signing] key_file`).
    pub signing: Option<Arc<SigningKey>>,
    /// Names forgotten subjects and seals their keys (`None`: neither
    /// `lifecycle.subject_key_file` nor a signing key, so no forgetting).
    pub subject_keys: Option<Arc<SubjectKeys>>,
    /// Forgotten subjects the guard hides (shared by every bundle).
    pub tombstones: Arc<Tombstones>,
    /// Purges, forgets and tombstones, for Prometheus.
    pub lifecycle_metrics: LifecycleMetrics,
    /// Export jobs and bundles, for Prometheus.
    pub export_metrics: crate::exports::metrics::ExportMetrics,
    /// Exception waivers requested, decided, used and open, for Prometheus.
    pub exception_metrics: crate::exceptions::ExceptionMetrics,
    /// Releases private answers and keeps privacy budgets, in the ticket
    /// store's place (memory, or the same Redis, shared by replicas).
    pub privacy: Arc<Releaser>,
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
        // Commands that serve nothing check no seal (`esq seal` itself,
        // `esq check` on a change about to be sealed); serving does.
        // Serving with a maintenance role: whom to hide is read from the
        // database (`esq serve` does, and refuses datasets with subjects
        // until then). Without one, esq has deleted no one.
        let tombstones = Arc::new(if open_audit_log && config.maintenance.is_some() {
            Tombstones::unread()
        } else {
            Tombstones::none()
        });
        let bundle = Bundle::load(&config, store.clone(), tombstones.clone(), open_audit_log)?;
        if let (true, Some(sealed)) = (open_audit_log && config.audit.enabled, &bundle.sealed) {
            crate::bundle::seal::not_older_than_served(&config.audit.path, sealed)
                .map_err(BundleError::from)?;
        }
        let signing = match &config.signing.key_file {
            Some(path) => Some(Arc::new(SigningKey::load(path)?)),
            None => None,
        };
        let subject_keys = match SubjectKeys::from_config(&config, signing.as_deref()) {
            Ok(keys) => Some(Arc::new(keys)),
            Err(SubjectKeyError::Missing) => None,
            Err(err) => return Err(err.into()),
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
                &crate::audit::LogOptions {
                    rotate_bytes: config.audit.rotate_bytes,
                    sync: sync_policy(&config.audit),
                    checkpoints: signing.as_ref().map(|key| crate::audit::CheckpointOptions {
                        key: key.clone(),
                        interval: config.audit.checkpoint_interval,
                        records: config.audit.checkpoint_records,
                        copy: config.audit.checkpoint_copy.clone(),
                    }),
                },
                &metrics,
            )?)
        };
        audit.set_bundle(&bundle.hash);
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
        let lifecycle_metrics = LifecycleMetrics::register(&metrics);
        lifecycle_metrics.preset(&bundle.catalog);
        Ok(App {
            lifecycle_metrics,
            export_metrics: crate::exports::metrics::ExportMetrics::register(&metrics),
            exception_metrics: crate::exceptions::ExceptionMetrics::register(&metrics),
            config,
            bundle: ArcSwap::from_pointee(bundle),
            reloading: tokio::sync::Mutex::new(()),
            ticket_store: store,
            signing,
            subject_keys,
            tombstones,
            privacy,
            metrics,
            audit,
            sentinel,
            tickets_active,
        })
    }

    /// The bundle in force: take it once and decide a whole statement with
    /// it, so a reload never mixes two bundles in one decision.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.load_full()
    }

    /// Puts `bundle` in force (see [`crate::bundle::reload`]).
    pub(crate) fn swap_bundle(&self, bundle: Bundle) -> Arc<Bundle> {
        self.bundle.swap(Arc::new(bundle))
    }

    /// The ticket checks of one connection (see [`TicketCheck`]).
    pub fn ticket_check(&self) -> TicketCheck {
        TicketCheck::new(
            self.ticket_store.clone(),
            self.config.tickets.validation_cache,
        )
    }

    /// A ticket check that asks the store every time (a request that
    /// checks its ticket once).
    pub fn ticket_check_now(&self) -> TicketCheck {
        TicketCheck::new(self.ticket_store.clone(), std::time::Duration::ZERO)
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
