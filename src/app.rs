//! The loaded, validated state every command and door shares: config,
//! catalog, policies, users, the ticket store and the guard. Built once, passed as an
//! `Arc` (no globals).

use std::sync::Arc;

use crate::audit::{AuditError, AuditLog, AuditSink, DisabledAudit, TracingAudit};
use crate::auth::UserDirectory;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, ConfigError};
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::policy::{PolicyError, PolicySet};
use crate::tickets::{IssuePolicy, MemoryTicketStore, TicketIssuer, TicketStore};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

pub struct App {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub policies: Arc<PolicySet>,
    pub users: UserDirectory,
    pub tickets: TicketIssuer,
    /// The guard both doors call.
    pub guard: Arc<Guard>,
    pub metrics: Arc<Metrics>,
    /// Where every decision is recorded.
    pub audit: Arc<dyn AuditSink>,
}

impl App {
    /// Loads catalog and policies named by an already validated config, and
    /// opens the audit log (continuing its chain).
    pub fn from_config(config: Config) -> Result<App, LoadError> {
        let mut app = App::without_audit_log(config)?;
        if !app.config.audit.enabled {
            app.metrics.audit_enabled.set(0);
            app.audit = Arc::new(DisabledAudit);
            return Ok(app);
        }
        app.audit = Arc::new(AuditLog::open(
            &app.config.audit.path,
            app.config.audit.rotate_bytes,
            &app.metrics,
        )?);
        Ok(app)
    }

    /// As [`App::from_config`], for commands that serve nothing (`esq
    /// check`, `esq explain`): audit events are logged, no file is opened.
    pub fn without_audit_log(config: Config) -> Result<App, LoadError> {
        let catalog = Arc::new(Catalog::load_dir(&config.catalog.dir)?);
        let policies = Arc::new(PolicySet::load_dir(
            &config.policy.dir,
            config.policy.eval_timeout,
        )?);
        let users = UserDirectory::from_config(&config);
        // Validation admits only "memory" until the Redis store exists.
        let store: Arc<dyn TicketStore> = Arc::new(MemoryTicketStore::new());
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
        let guard = Arc::new(Guard::new(catalog.clone()));
        Ok(App {
            config,
            guard,
            catalog,
            policies,
            users,
            tickets,
            metrics: Arc::new(Metrics::new()),
            audit: Arc::new(TracingAudit),
        })
    }

    pub fn load(path: &std::path::Path) -> Result<App, LoadError> {
        App::from_config(Config::load(path)?)
    }

    /// Loads without opening the audit log (see [`App::without_audit_log`]).
    pub fn load_without_audit_log(path: &std::path::Path) -> Result<App, LoadError> {
        App::without_audit_log(Config::load(path)?)
    }
}
