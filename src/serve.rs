//! `esq serve`: starts both doors (and the metrics listener) on one shared
//! [`App`] and stops them gracefully. [`start`] returns a handle with the
//! bound addresses, so tests and embedders can listen on port 0. What is
//! unsafe for a deployment is said at start ([`warnings`]).

pub mod warnings;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::http::metrics_door::MetricsDoor;
use crate::http::HttpDoor;
use crate::pgdoor::PgDoor;
use crate::upstream::UpstreamPool;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({door} door): {source}")]
    Listen {
        door: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("upstream: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("{0}")]
    Lifecycle(String),
    #[error("exports: {0}")]
    Exports(String),
}

/// A running esq: both doors, until [`Running::stop`].
pub struct Running {
    pub pg_addr: SocketAddr,
    /// Where the HTTP door listens (the bound port when configured as 0).
    pub http_addr: SocketAddr,
    /// Where `/metrics` is served, when it has a listener of its own
    /// (`metrics.listen`; the bound port when configured as 0).
    pub metrics_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    pub upstream: Arc<UpstreamPool>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds both doors and starts serving in the current tokio runtime.
pub async fn start(app: Arc<App>) -> Result<Running, ServeError> {
    check_tombstones_enforced(&app)?;
    let tls = crate::tls::server_config(&app.config.tls)?;
    warnings::at_start(&app);
    let upstream = Arc::new(UpstreamPool::new(&app.config, app.metrics.clone())?);
    let (shutdown, watch_shutdown) = watch::channel(false);

    let pg = PgDoor::bind(app.clone(), upstream.clone(), tls.clone())
        .await
        .map_err(|source| ServeError::Listen {
            door: "PostgreSQL",
            addr: app.config.server.pg_listen,
            source,
        })?;
    let pg_addr = pg.local_addr();
    let http = HttpDoor::bind(app.clone(), upstream.clone(), tls.clone())
        .await
        .map_err(|source| ServeError::Listen {
            door: "HTTP",
            addr: app.config.server.http_listen,
            source,
        })?;
    let http_addr = http.local_addr();
    let metrics = match app.config.metrics.own_listener() {
        Some(addr) => Some(
            MetricsDoor::bind(app.clone(), addr, tls.clone())
                .await
                .map_err(|source| ServeError::Listen {
                    door: "metrics",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(MetricsDoor::local_addr);
    let exports = crate::exports::runner::start(&app, &upstream, &watch_shutdown)
        .map_err(ServeError::Exports)?;
    let mut tasks = vec![
        tokio::spawn(pg.run(watch_shutdown.clone())),
        tokio::spawn(http.run(watch_shutdown.clone(), app.config.pg.shutdown_grace)),
        app.sentinel.start(watch_shutdown.clone()),
        tokio::spawn(count_active_tickets(app.clone(), watch_shutdown.clone())),
        tokio::spawn(crate::lifecycle::watch::run(
            app.clone(),
            watch_shutdown.clone(),
        )),
        tokio::spawn(crate::lifecycle::schedule::run(
            app.clone(),
            watch_shutdown.clone(),
        )),
        tokio::spawn(crate::exceptions::sweep::run(
            app.clone(),
            watch_shutdown.clone(),
        )),
    ];
    tasks.extend(exports);
    if let Some(metrics) = metrics {
        tasks.push(tokio::spawn(metrics.run(watch_shutdown.clone())));
    }
    // Not awaited: an upstream that hangs must not hold the doors shut.
    tokio::spawn(warnings::check_upstream(upstream.clone()));
    record_start(&app, pg_addr, http_addr).await;
    tracing::info!(%pg_addr, tls = tls.is_some(), "PostgreSQL door listening");
    tracing::info!(%http_addr, tls = tls.is_some(), "HTTP door listening");
    match metrics_addr {
        Some(addr) => {
            tracing::info!(%addr, tls = tls.is_some(), "metrics listening (GET /metrics)")
        }
        None => tracing::info!("metrics on the HTTP door (GET /metrics, with the scrape token)"),
    }
    Ok(Running {
        pg_addr,
        http_addr,
        metrics_addr,
        app,
        upstream,
        shutdown,
        tasks,
    })
}

impl Running {
    /// Stops accepting, lets sessions and HTTP requests finish (up to
    /// `pg.shutdown_grace`), then returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.upstream.close_idle();
    }
}

/// Without `[maintenance]` esq cannot read the right-to-delete tombstones,
/// so it hides no forgotten subject: a restored backup would show them.
/// Production refuses that when the catalog names subjects; elsewhere it
/// is a loud warning (a query-only demo or test).
fn check_tombstones_enforced(app: &App) -> Result<(), ServeError> {
    let Some(problem) = crate::lifecycle::tombstones_unenforced(&app.config, &app.bundle().catalog)
    else {
        return Ok(());
    };
    if crate::bundle::is_production(&app.config) {
        return Err(ServeError::Lifecycle(format!(
            "{problem}; production needs [maintenance] url (docs/lifecycle.md)"
        )));
    }
    tracing::warn!("{problem} (refused in production)");
    Ok(())
}

/// The start's audit record: which bundle is served, and its seal (what
/// the next start compares with, so a restart cannot roll back).
async fn record_start(app: &App, pg_addr: SocketAddr, http_addr: SocketAddr) {
    let bundle = app.bundle();
    let event = crate::audit::AuditEvent {
        detail: Some(serde_json::json!({
            "bundle": bundle.hash,
            "sealed_at": bundle.sealed.as_ref().map(|s| s.sealed_at.as_str()),
            "sealed_by": bundle.sealed.as_ref().map(|s| s.key_id.as_str()),
            "pg_listen": pg_addr.to_string(),
            "http_listen": http_addr.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
        })),
        ..crate::audit::AuditEvent::event(
            crate::audit::AuditKind::Serve,
            crate::metrics::Door::process,
            "esq",
        )
    };
    if let Err(err) = crate::audit::record_durably(app.audit.as_ref(), &event).await {
        tracing::error!(%err, "the start could not be audited");
    }
}

/// Keeps `esq_tickets_active` current (every few seconds; a store that
/// cannot answer leaves the last value).
async fn count_active_tickets(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Ok(active) = app.ticket_store.active(chrono::Utc::now()).await {
                    app.tickets_active.set(active.min(i64::MAX as u64) as i64);
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs until SIGINT or SIGTERM, then stops gracefully. SIGHUP reloads
/// users, catalog and policies (see [`crate::bundle::reload`]).
pub async fn run_until_signalled(app: Arc<App>) -> Result<(), ServeError> {
    let running = start(app.clone()).await?;
    serve_signals(&app).await;
    tracing::info!("shutting down: draining sessions");
    running.stop().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM, reloading on every SIGHUP meanwhile.
async fn serve_signals(app: &Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!(
            "cannot watch SIGTERM and SIGHUP: only Ctrl-C stops esq, and nothing reloads it"
        );
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading users, catalog and policies");
                // The outcome is logged and audited by the reload itself.
                let _ = crate::bundle::reload::reload(app, crate::bundle::reload::Trigger::Signal).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(env: &[(&str, &str)]) -> App {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/esq.toml");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let config = crate::config::Config::load_with_env(&path, env).unwrap();
        App::without_audit_log(config).unwrap()
    }

    #[test]
    fn production_does_not_serve_subjects_it_cannot_hide() {
        let production = ("ESQ_SERVER__ENVIRONMENT", "production");
        let refused = check_tombstones_enforced(&app(&[production]));
        let Err(ServeError::Lifecycle(message)) = refused else {
            panic!("production without [maintenance] must not serve: {refused:?}");
        };
        assert!(
            message.contains("burial_2024") && message.contains("[maintenance]"),
            "{message}"
        );
        assert!(
            check_tombstones_enforced(&app(&[])).is_ok(),
            "development warns"
        );
        let maintenance = (
            "ESQ_MAINTENANCE__URL",
            "postgres://esq_maintenance@127.0.0.1/db",
        );
        assert!(check_tombstones_enforced(&app(&[production, maintenance])).is_ok());
    }
}
