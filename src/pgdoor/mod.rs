//! The PostgreSQL door: a v3 wire-protocol proxy that psql, drivers and BI
//! tools use unchanged. It accepts connections, hands each to a session
//! task, and stops accepting on shutdown while sessions drain. It parses no
//! SQL: what a statement is, and whether it runs, is the decision step's
//! answer ([`crate::decide`]).
//!
//! - [`startup`], [`auth`], [`handshake`] — a session's opening;
//! - [`session`] — the session loop; [`message`] — typed frontend messages;
//! - [`dispatch`] → [`simple`], [`extended`] — one message each;
//! - [`rounds`] — the life of a statement: rounds, stand-ins, confirmations;
//! - [`answers`] — decisions into forwarded text and substituted answers;
//! - [`private`] — private answers: collected, released, charged;
//! - [`relay`] — the upstream → client direction; [`completion`] — audit
//!   records of completed statements;
//! - [`error`] — every error a client sees, in one map;
//! - [`empty`] — texts PostgreSQL reads as no statement;
//! - [`standing`], [`ticket_request`] — tickets asked for on this door (a
//!   user's standing request, `SELECT esq.request_ticket(…)`);
//! - [`names`], [`cancel`], [`wire`].

pub mod answers;
pub mod auth;
pub mod cancel;
pub mod completion;
pub mod dispatch;
pub mod empty;
pub mod error;
pub mod extended;
pub mod handshake;
pub mod message;
pub mod names;
mod parameter_types;
pub mod private;
pub mod relay;
pub mod rounds;
pub mod session;
pub mod simple;
pub mod standing;
pub mod startup;
pub mod ticket_request;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::App;
use crate::upstream::UpstreamPool;
use session::DoorState;

pub struct PgDoor {
    listener: TcpListener,
    state: Arc<DoorState>,
}

impl PgDoor {
    pub async fn bind(
        app: Arc<App>,
        upstream: Arc<UpstreamPool>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<PgDoor> {
        let listener = TcpListener::bind(app.config.server.pg_listen).await?;
        let sessions = crate::per_user::PerUser::new(app.config.pg.max_sessions_per_user);
        Ok(PgDoor {
            listener,
            state: Arc::new(DoorState {
                app,
                upstream,
                tls,
                cancel_keys: cancel::CancelKeys::default(),
                sessions,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Accepts until `shutdown` turns true, then waits up to
    /// `pg.shutdown_grace` for sessions to finish and aborts the rest.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        sessions.spawn(session::run(self.state.clone(), tcp, peer, shutdown.clone()));
                    }
                    Err(err) => {
                        // e.g. too many open files: back off, keep serving.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(self.listener);
        let grace = self.state.app.config.pg.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = sessions.len(),
                "shutdown grace over: closing remaining sessions"
            );
            sessions.abort_all();
        }
    }
}
