//! Expiry, inside `esq serve`: every [`INTERVAL`] the approved exceptions
//! past their `expires_at` become `expired`, each audited once (the update
//! that moves it is the one that records it, whichever replica runs it
//! first), and `esq_exceptions_open` is refreshed. Ticket issuance checks
//! `expires_at` itself, so an exception is unusable from that instant
//! whether or not the sweep has run; the sweep makes its state say so.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;

use super::store::{self, Exception};
use super::ExceptionError;
use crate::app::App;
use crate::audit::{fingerprint, AuditEvent, AuditKind};
use crate::metrics::{Door, Outcome};

/// How often `esq serve` sweeps.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Runs until shutdown (does nothing without `[maintenance]`).
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    if app.config.maintenance.is_none() {
        return;
    }
    let mut failing = false;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match sweep(&app, Utc::now()).await {
            Ok(_) => failing = false,
            // Once per failing spell (before `esq migrate`, the database away).
            Err(err) if !failing => {
                tracing::warn!(%err, "cannot sweep expired exceptions; retrying every {}s", INTERVAL.as_secs());
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// One sweep as of `now`: the exceptions it expired.
pub async fn sweep(app: &App, now: DateTime<Utc>) -> Result<Vec<Exception>, ExceptionError> {
    let mut maintenance = super::connect(&app.config).await?;
    let transaction = maintenance
        .client
        .transaction()
        .await
        .map_err(|e| ExceptionError::database("starting a transaction", e))?;
    let expired = store::expire_due(&transaction, now).await?;
    if !expired.is_empty() {
        // On record before the change is committed; a failing log rolls
        // it back (the next sweep tries again).
        let mut last = None;
        for exception in &expired {
            let detail = json!({
                "action": "expired",
                "requester": exception.requester,
                "expires_at": exception.expires_at.as_ref().map(store::rfc3339),
                "uses": exception.uses,
            });
            let event = AuditEvent {
                dataset: Some(&exception.dataset),
                outcome: Outcome::allow,
                fingerprint: fingerprint(&format!("exception expired {}", exception.dataset)),
                detail: Some(detail),
                exception: Some(&exception.id),
                ..AuditEvent::event(AuditKind::Exception, Door::process, "esq")
            };
            last = Some(
                app.audit
                    .record(&event)
                    .ok_or(ExceptionError::Audit(crate::audit::AuditError::NotQueued))?,
            );
        }
        if let Some(seq) = last {
            app.audit
                .durable(seq)
                .await
                .map_err(ExceptionError::Audit)?;
        }
        transaction
            .commit()
            .await
            .map_err(|e| ExceptionError::database("committing expiries", e))?;
        for exception in &expired {
            tracing::info!(exception = exception.id, "exception expired");
        }
    } else {
        drop(transaction);
    }
    super::refresh_open(app, &maintenance.client).await;
    Ok(expired)
}
