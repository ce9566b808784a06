//! The observation step: live facts gathered before the controls are
//! evaluated, so that a `satisfied` rests on what the systems say and not
//! only on what the configuration promises.
//!
//! - [`upstream`]: the service role's attributes, memberships and grants,
//!   and whether esq's own connection is encrypted, asked of the database
//!   over a connection made as esq makes them;
//! - [`audit`]: whether the audit log's chain and its signed checkpoints
//!   verify, and what the newest record holds.
//!
//! Observing never fails: what could not be observed is recorded as such
//! ("could not verify: …"), and the controls that need it are not met.

pub mod audit;
pub mod lifecycle;
pub mod upstream;

use chrono::{DateTime, Utc};

pub use audit::{AuditFacts, ChainFacts, CheckpointFacts, NewestRecord};
pub use lifecycle::LifecycleFacts;
pub use upstream::UpstreamFacts;

use crate::app::App;

/// Everything observed, and when.
#[derive(Debug, Clone)]
pub struct Observations {
    pub at: DateTime<Utc>,
    /// The service role as the database reports it, or why it could not be
    /// asked ("could not verify: …", naming only `host:port`).
    pub upstream: Result<UpstreamFacts, String>,
    pub audit: AuditFacts,
    /// The lifecycle as the maintenance role sees it, or why not.
    pub lifecycle: Result<LifecycleFacts, String>,
}

/// Gathers the facts (connects upstream, reads the audit log).
pub async fn observe(app: &App) -> Observations {
    let upstream = upstream::observe(app).await;
    let lifecycle = lifecycle::observe(app).await;
    // Reads every audit file; the callers are commands, not a door.
    let audit = audit::observe(app);
    Observations {
        at: Utc::now(),
        upstream,
        audit,
        lifecycle,
    }
}

/// [`observe`] for synchronous callers (the CLI, the evidence bundle): runs
/// it on a runtime of its own in a thread of its own, so it also works
/// when the caller is inside a runtime.
pub fn observe_blocking(app: &App) -> Observations {
    std::thread::scope(|scope| {
        let observed = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| format!("could not verify: cannot start a runtime: {err}"))?;
            Ok::<_, String>(runtime.block_on(observe(app)))
        });
        match observed.join() {
            Ok(Ok(observations)) => observations,
            Ok(Err(reason)) => Observations {
                at: Utc::now(),
                upstream: Err(reason.clone()),
                audit: audit::observe(app),
                lifecycle: Err(reason),
            },
            Err(_) => {
                let reason = "could not verify: the observation failed".to_string();
                Observations {
                    at: Utc::now(),
                    upstream: Err(reason.clone()),
                    lifecycle: Err(reason.clone()),
                    audit: AuditFacts {
                        log: app.config.audit.path.clone(),
                        chain: ChainFacts::Unreadable(reason.clone()),
                        checkpoints: CheckpointFacts::Unreadable(reason),
                        newest: None,
                    },
                }
            }
        }
    })
}
