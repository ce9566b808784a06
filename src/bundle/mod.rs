//! The bundle: everything that decides what a user may see — the
//! configuration (its digest), the catalog, the policies and the users —
//! loaded together and named by one hash. Every audit record carries the
//! hash of the bundle in force; `esq seal` signs it; in production esq
//! serves only a bundle whose seal verifies; a reload swaps the whole bundle
//! at once or nothing.
//!
//! ```text
//! bundle hash = SHA-256("esq-bundle/v1\nconfig <digest>\ncatalog <digest>\npolicies <digest>\n")
//! ```
//! The config digest covers the file's keys and the `ESQ_…` overrides
//! (not the upstream password); the catalog and policy digests cover the
//! files as they were parsed (see [`crate::digest`]).

pub mod reload;
pub mod seal;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::auth::UserDirectory;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, UserConfig};
use crate::guard::Guard;
use crate::policy::{PolicyError, PolicySet};
use crate::tickets::{IssuePolicy, TicketIssuer, TicketStore};

pub use seal::{Seal, SealError};

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A user's standing ticket request names what the catalog lacks.
    #[error("users.{user}.standing_ticket: {problem}")]
    StandingTicket {
        user: String,
        problem: crate::tickets::BadRequest,
    },
}

/// One loaded bundle. Immutable: a reload builds a new one.
pub struct Bundle {
    /// The bundle hash (hex SHA-256).
    pub hash: String,
    pub parts: Parts,
    pub catalog: Arc<Catalog>,
    pub policies: Arc<PolicySet>,
    pub users: UserDirectory,
    /// The users as configured (for the SSP).
    pub user_configs: BTreeMap<String, UserConfig>,
    /// The guard both doors call.
    pub guard: Arc<Guard>,
    /// Issues tickets under these policies.
    pub tickets: TicketIssuer,
    /// The seal that verified, when one was checked.
    pub sealed: Option<seal::Verified>,
    pub loaded_at: DateTime<Utc>,
}

/// The digests a bundle hash is made of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parts {
    pub config: String,
    pub catalog: String,
    pub policies: String,
}

impl Parts {
    /// The bundle hash of these parts.
    pub fn hash(&self) -> String {
        let text = format!(
            "esq-bundle/v1\nconfig {}\ncatalog {}\npolicies {}\n",
            self.config, self.catalog, self.policies
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

impl Bundle {
    /// Loads catalog and policies named by `config`; with `serving`, a
    /// production config's seal must verify and match.
    pub fn load(
        config: &Config,
        store: Arc<dyn TicketStore>,
        tombstones: Arc<crate::lifecycle::Tombstones>,
        serving: bool,
    ) -> Result<Bundle, BundleError> {
        let catalog = Arc::new(Catalog::load_dir(&config.catalog.dir)?);
        let policies = Arc::new(PolicySet::load_dir(
            &config.policy.dir,
            config.policy.eval_timeout,
        )?);
        let parts = Parts {
            config: config.digest.clone(),
            catalog: catalog.digest().to_string(),
            policies: policies.digest().to_string(),
        };
        let sealed = if serving && seal_required(config) {
            Some(seal::check_for_serving(config, &parts)?)
        } else {
            None
        };
        // Both doors run private counts through the release step, so the
        // guard may allow them.
        let guard = Arc::new(
            Guard::new(catalog.clone())
                .serving_private_answers()
                .with_tombstones(tombstones),
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
        for (user, config) in &config.users {
            if let Some(request) = &config.standing_ticket {
                tickets
                    .check(request)
                    .map_err(|problem| BundleError::StandingTicket {
                        user: user.clone(),
                        problem,
                    })?;
            }
        }
        Ok(Bundle {
            hash: parts.hash(),
            parts,
            catalog,
            policies,
            users: UserDirectory::from_config(config),
            user_configs: config.users.clone(),
            guard,
            tickets,
            sealed,
            loaded_at: Utc::now(),
        })
    }
}

/// `server.environment = "production"` (any case, spaces around ignored).
pub fn is_production(config: &Config) -> bool {
    config
        .server
        .environment
        .trim()
        .eq_ignore_ascii_case("production")
}

/// Only a sealed bundle is served: in production, and wherever a seal key
/// is given (`ESQ_SEAL_KEY`), so that no configuration change — the
/// environment's name included — turns sealing off.
pub fn seal_required(config: &Config) -> bool {
    is_production(config) || config.seal_key.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_hash_changes_with_each_part() {
        let base = Parts {
            config: "1".into(),
            catalog: "2".into(),
            policies: "3".into(),
        };
        let hash = base.hash();
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, base.clone().hash(), "deterministic");
        for changed in [
            Parts {
                config: "x".into(),
                ..base.clone()
            },
            Parts {
                catalog: "x".into(),
                ..base.clone()
            },
            Parts {
                policies: "x".into(),
                ..base.clone()
            },
        ] {
            assert_ne!(changed.hash(), hash);
        }
    }

    #[test]
    fn the_config_digest_ignores_the_password_and_where_esq_is_installed() {
        let load = |dir: &std::path::Path, env: Vec<(String, String)>| {
            let path = dir.join("esq.toml");
            std::fs::write(
                &path,
                "[upstream]\nurl = \"postgres://esq@localhost/db\"\n[catalog]\ndir = \"catalog\"\n",
            )
            .unwrap_or_else(|e| panic!("{e}"));
            Config::load_with_env(&path, env)
                .unwrap_or_else(|e| panic!("{e}"))
                .digest
        };
        let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plain = load(a.path(), vec![]);
        assert_eq!(
            plain,
            load(b.path(), vec![]),
            "relative paths hash as written"
        );
        let password = vec![("ESQ_UPSTREAM__PASSWORD".to_string(), "s3cret".to_string())];
        assert_eq!(
            plain,
            load(a.path(), password),
            "secrets are not part of it"
        );
        let k = vec![("ESQ_GUARD__MIN_GROUP_SIZE".to_string(), "20".to_string())];
        assert_ne!(plain, load(a.path(), k), "an override is part of it");
    }
}
