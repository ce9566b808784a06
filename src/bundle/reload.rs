//! Live reload (SIGHUP, or `POST /api/esq/reload` by an `esq_admin`):
//! re-read the configuration, catalog and policies, validate them, run the
//! Rego tests, check the seal in production — and only then swap the whole
//! bundle at once. A reload that fails at any step keeps the bundle in
//! force and says why. Either way the attempt is an audit record.
//!
//! What carries on: open sessions, HTTP requests in flight (each statement
//! is decided by the bundle it started with) and tickets. A ticket's scope
//! was fixed by the policies that issued it, so a ticket issued before a
//! reload keeps its scope until it expires or is revoked; new tickets get
//! the new policies. Only users, catalog and policies can change: a reload
//! that would change any other section of the configuration (listen
//! addresses, upstream, audit, …) is refused, naming the sections, since
//! they take effect only at a restart.

use std::sync::Arc;

use serde::Serialize;

use super::{Bundle, BundleError};
use crate::app::App;
use crate::audit::{AuditEvent, AuditKind};
use crate::config::{Config, ConfigError};
use crate::metrics::{Door, Outcome};

/// Who asked for the reload.
#[derive(Debug, Clone, Copy)]
pub enum Trigger<'a> {
    Signal,
    Api { user: &'a str },
}

/// A reload that took effect.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    /// The bundle now in force.
    pub bundle: String,
    pub previous: String,
    /// The files were the same as the bundle in force.
    pub unchanged: bool,
    /// The key id of the seal that verified (production).
    pub sealed_by: Option<String>,
    pub policy_tests: usize,
}

/// Why a reload was refused; the bundle in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("policy tests fail: {}", .0.join(", "))]
    TestsFail(Vec<String>),
    #[error("the policies have no tests (test_* rules in *_test.rego)")]
    NoTests,
    #[error("[{}] changed: only users, catalog and policies reload; restart esq for the rest", .0.join("], ["))]
    NeedsRestart(Vec<String>),
    #[error("the seal on disk (sealed {found}) is older than the one in force (sealed {in_force}): a rollback to an earlier release is refused; restart esq to serve an older release on purpose")]
    Rollback { found: String, in_force: String },
    #[error("{0}; production needs [maintenance] url before the catalog names subjects")]
    TombstonesUnenforced(String),
    #[error("the reload could not be audited, so it was not applied")]
    Unaudited,
    #[error("the reload stopped unexpectedly")]
    Interrupted,
}

/// Reloads `app`'s bundle (one reload at a time).
pub async fn reload(app: &Arc<App>, trigger: Trigger<'_>) -> Result<Reloaded, ReloadError> {
    let _one_at_a_time = app.reloading.lock().await;
    let previous = app.bundle();
    let loading = app.clone();
    let in_force = previous.sealed.clone();
    let loaded = tokio::task::spawn_blocking(move || prepare(&loading, in_force.as_ref()))
        .await
        .map_err(|_| ReloadError::Interrupted)
        .and_then(|r| r);
    let (bundle, tests) = match loaded {
        Ok(ready) => ready,
        Err(error) => {
            tracing::warn!(%error, "reload refused: the bundle in force stays");
            record(app, trigger, &previous.hash, None, Some(&error)).await;
            return Err(error);
        }
    };
    let reloaded = Reloaded {
        unchanged: bundle.hash == previous.hash,
        bundle: bundle.hash.clone(),
        previous: previous.hash.clone(),
        sealed_by: bundle.sealed.as_ref().map(|s| s.key_id.clone()),
        policy_tests: tests,
    };
    // The record names the new bundle before anything is decided by it.
    app.audit.set_bundle(&bundle.hash);
    if !record(app, trigger, &previous.hash, Some(&bundle), None).await {
        app.audit.set_bundle(&previous.hash);
        return Err(ReloadError::Unaudited);
    }
    app.swap_bundle(bundle);
    app.metrics
        .reloads
        .get_or_create(&Outcome::allow.into())
        .inc();
    tracing::info!(
        bundle = %reloaded.bundle,
        previous = %reloaded.previous,
        unchanged = reloaded.unchanged,
        "reloaded users, catalog and policies"
    );
    Ok(reloaded)
}

/// Loads and checks the new bundle without touching the running one.
fn prepare(
    app: &App,
    in_force: Option<&super::seal::Verified>,
) -> Result<(Bundle, usize), ReloadError> {
    let env = app.config.env.iter();
    let env = env.map(|(name, value)| (name.clone(), value.expose().to_string()));
    let config = Config::load_with_env(&app.config.source, env)?;
    let sections = restart_sections(&app.config, &config);
    if !sections.is_empty() {
        return Err(ReloadError::NeedsRestart(sections));
    }
    let bundle = Bundle::load(
        &config,
        app.ticket_store.clone(),
        app.tombstones.clone(),
        true,
    )?;
    // A catalog that now names subjects esq cannot hide (as at a start).
    if let Some(problem) = crate::lifecycle::tombstones_unenforced(&config, &bundle.catalog) {
        if super::is_production(&config) {
            return Err(ReloadError::TombstonesUnenforced(problem));
        }
        tracing::warn!("{problem} (refused in production)");
    }
    // Seals only move forward: an old release's seal still verifies, and
    // must not bring back what a later release took away.
    if let (Some(found), Some(in_force)) = (&bundle.sealed, in_force) {
        if found.time() < in_force.time() {
            return Err(ReloadError::Rollback {
                found: found.sealed_at.clone(),
                in_force: in_force.sealed_at.clone(),
            });
        }
    }
    let report = bundle.policies.run_tests();
    let failed: Vec<String> = report.failed().map(|t| t.name.clone()).collect();
    if !failed.is_empty() {
        return Err(ReloadError::TestsFail(failed));
    }
    if report.outcomes.is_empty() {
        return Err(ReloadError::NoTests);
    }
    Ok((bundle, report.outcomes.len()))
}

/// The sections other than `users` that differ between `running` and `new`.
fn restart_sections(running: &Config, new: &Config) -> Vec<String> {
    let as_map = |config: &Config| match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (old, new) = (as_map(running), as_map(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| key.as_str() != "users" && old.get(*key) != new.get(*key))
        .cloned()
        .collect()
}

/// The reload's audit record, durable before the new bundle decides
/// anything; `false` when it could not be written.
async fn record(
    app: &App,
    trigger: Trigger<'_>,
    previous: &str,
    bundle: Option<&Bundle>,
    error: Option<&ReloadError>,
) -> bool {
    let (door, user) = match trigger {
        Trigger::Signal => (Door::process, "SIGHUP"),
        Trigger::Api { user } => (Door::http, user),
    };
    if error.is_some() {
        app.metrics
            .reloads
            .get_or_create(&Outcome::deny.into())
            .inc();
    }
    let event = AuditEvent {
        outcome: if error.is_some() {
            Outcome::deny
        } else {
            Outcome::allow
        },
        detail: Some(serde_json::json!({
            "previous": previous,
            "bundle": bundle.map(|b| b.hash.as_str()),
            // What the next start compares its seal with (no rollback).
            "sealed_at": bundle.and_then(|b| b.sealed.as_ref()).map(|s| s.sealed_at.as_str()),
            "reason": error.map(ToString::to_string),
        })),
        ..AuditEvent::event(AuditKind::Reload, door, user)
    };
    crate::audit::record_durably(app.audit.as_ref(), &event)
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sections_other_than_users_need_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("esq.toml");
        let write = |text: &str| std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let load = || Config::load_with_env(&path, []).unwrap_or_else(|e| panic!("{e}"));
        write("[upstream]\nurl = \"postgres://esq@localhost/db\"\n[users.a]\nroles = []\n");
        let running = load();
        write("[upstream]\nurl = \"postgres://esq@localhost/db\"\n[users.b]\nroles = [\"x\"]\n");
        assert!(restart_sections(&running, &load()).is_empty());
        write("[upstream]\nurl = \"postgres://esq@localhost/db\"\npool_size = 3\n[guard]\nmin_group_size = 20\n");
        assert_eq!(restart_sections(&running, &load()), ["guard", "upstream"]);
    }
}
