//! The one way to the backing PostgreSQL, for both doors: connections under
//! esq's own low-privilege service role, in read-only sessions with esq's
//! settings (and TLS when the URL asks for it), made by one factory
//! ([`connect`]) and lent from one pool whose size is `upstream.pool_size` —
//! both doors together never hold more. Fair shares ([`share`]) keep one
//! user from taking the pool.
//!
//! The PostgreSQL door holds a connection for a whole client session and
//! gives it back reset with `DISCARD ALL`; the HTTP door holds one for one
//! query ([`query`]) and gives it back as it is. Upstream error messages
//! reach clients only through [`redact`].

mod connect;
mod params;

pub(crate) use connect::start_tls;
pub(crate) use params::client_tls;
pub mod query;
pub mod redact;
mod share;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::message::{backend, frontend};

pub use connect::{ConnectParams, UpstreamConn};
pub use share::Busy;

use crate::config::Config;
use crate::metrics::{Door, Metrics, PoolGauges};
use share::{Shares, Slot};

/// What went wrong upstream. The texts name addresses and the database's
/// own messages: they are for the log. Doors show clients only what their
/// error map says of each variant.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream configuration: {0}")]
    Config(String),
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream connection lost: {0}")]
    Lost(String),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// The database refused (`message` may quote a value: redact it).
    #[error("upstream error {code}: {message}")]
    Server { code: String, message: String },
    #[error("{0}")]
    Busy(Busy),
    /// The statement ran past the door's statement time-out.
    #[error("upstream statement timed out")]
    Timeout,
}

/// How long opening one upstream connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a health check or reset of a pooled connection may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// A pool whose connections are all lent out is ready if one of them
/// worked this recently.
const RECENTLY_HEALTHY: Duration = Duration::from_secs(60);

pub struct UpstreamPool {
    params: ConnectParams,
    idle: Mutex<Vec<UpstreamConn>>,
    shares: Arc<Shares>,
    metrics: Arc<Metrics>,
    pg: PoolGauges,
    http: PoolGauges,
    /// When a connection last opened or came back healthy.
    last_healthy: Mutex<Option<Instant>>,
}

/// One upstream connection lent to a session or a request; give it back
/// with [`UpstreamPool::release`] (dropped, the connection is closed).
pub struct Lease {
    conn: Option<UpstreamConn>,
    _slot: Slot,
    in_use: prometheus_client::metrics::gauge::Gauge,
}

impl Lease {
    pub fn conn(&mut self) -> Option<&mut UpstreamConn> {
        self.conn.as_mut()
    }

    /// Takes the connection out (to split it for relaying); put it back
    /// with [`Lease::restore`] or it is closed with the lease.
    pub fn take(&mut self) -> Option<UpstreamConn> {
        self.conn.take()
    }

    pub fn restore(&mut self, conn: UpstreamConn) {
        self.conn = Some(conn);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

/// What to do with a connection given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Keep it after `DISCARD ALL` (a client session may have changed
    /// settings or prepared statements).
    Reset,
    /// Keep it as it is (esq alone used it, and left it idle).
    AsIs,
    /// Close it (not idle, or in an unknown state).
    Close,
}

impl UpstreamPool {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<UpstreamPool, UpstreamError> {
        let upstream = &config.upstream;
        Ok(UpstreamPool {
            params: params::connect_params(config)?,
            idle: Mutex::new(Vec::new()),
            shares: Shares::new(
                upstream.pool_size,
                config.upstream_max_per_user(),
                upstream.max_waiting,
                upstream.acquire_timeout,
            ),
            pg: metrics.pool(Door::pg),
            http: metrics.pool(Door::http),
            metrics,
            last_healthy: Mutex::new(None),
        })
    }

    /// The one database esq serves.
    pub fn database(&self) -> &str {
        &self.params.database
    }

    fn gauges(&self, door: Door) -> &PoolGauges {
        match door {
            Door::pg => &self.pg,
            // esq's own work (none takes a connection yet) counts with HTTP.
            Door::http | Door::process => &self.http,
        }
    }

    /// A healthy connection for `user` on `door`: a pooled one that answers,
    /// or a new one, within the user's share of the pool.
    pub async fn acquire(&self, door: Door, user: &str) -> Result<Lease, UpstreamError> {
        let gauges = self.gauges(door);
        gauges.waiting.inc();
        let slot = self.shares.take(user).await;
        gauges.waiting.dec();
        let slot = slot.map_err(|busy| {
            gauges.busy.inc();
            UpstreamError::Busy(busy)
        })?;
        let conn = self.idle_or_new().await?;
        gauges.in_use.inc();
        Ok(Lease {
            conn: Some(conn),
            _slot: slot,
            in_use: gauges.in_use.clone(),
        })
    }

    async fn idle_or_new(&self) -> Result<UpstreamConn, UpstreamError> {
        while let Some(mut conn) = self.take_idle() {
            if ping(&mut conn).await.is_ok() {
                return Ok(conn);
            }
        }
        match connect::connect(&self.params).await {
            Ok(conn) => {
                self.healthy();
                Ok(conn)
            }
            Err(err) => {
                self.metrics.upstream_errors.inc();
                Err(err)
            }
        }
    }

    fn take_idle(&self) -> Option<UpstreamConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conn = idle.pop();
        self.metrics.upstream_idle.set(idle.len() as i64);
        conn
    }

    fn keep(&self, conn: UpstreamConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(conn);
        self.metrics.upstream_idle.set(idle.len() as i64);
        drop(idle);
        self.healthy();
    }

    fn healthy(&self) {
        *self.last_healthy.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Takes a connection back (see [`Reuse`]).
    pub async fn release(&self, mut lease: Lease, reuse: Reuse) {
        let Some(mut conn) = lease.take() else {
            return;
        };
        match reuse {
            Reuse::Close => {}
            Reuse::AsIs => self.keep(conn),
            Reuse::Reset => {
                let reset = tokio::time::timeout(RESET_TIMEOUT, conn.simple("DISCARD ALL")).await;
                if matches!(reset, Ok(Ok(()))) {
                    self.keep(conn);
                }
            }
        }
        // The slot is returned with the lease, after the connection is idle.
        drop(lease);
    }

    /// Whether the database answers (`/readyz`): an idle or new connection
    /// pings, or, with every connection lent out, one worked recently (a busy
    /// pool is not a broken one). Never opens a connection past the pool size.
    pub async fn check(&self) -> Result<(), UpstreamError> {
        let Ok(_slot) = self.shares.check_slot() else {
            let recent = self
                .last_healthy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < RECENTLY_HEALTHY);
            return if recent {
                Ok(())
            } else {
                Err(UpstreamError::Busy(Busy::Pool {
                    size: self.shares.size(),
                }))
            };
        };
        let mut conn = self.idle_or_new().await?;
        ping(&mut conn).await?;
        self.keep(conn);
        Ok(())
    }

    /// Closes idle connections (on shutdown).
    pub fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.metrics.upstream_idle.set(0);
    }

    /// Asks PostgreSQL to cancel what `backend_key`'s backend is running.
    pub async fn cancel(&self, backend_key: (i32, i32)) -> Result<(), UpstreamError> {
        use tokio::io::AsyncWriteExt;
        let mut request = BytesMut::new();
        frontend::cancel_request(backend_key.0, backend_key.1, &mut request);
        let mut tcp = tokio::net::TcpStream::connect((self.params.host.as_str(), self.params.port))
            .await
            .map_err(|err| UpstreamError::Unavailable(err.to_string()))?;
        tcp.write_all(&request)
            .await
            .map_err(|err| UpstreamError::Lost(err.to_string()))?;
        let _ = tcp.shutdown().await;
        Ok(())
    }
}

/// A connection that answers a `Sync` with `ReadyForQuery` is alive.
async fn ping(conn: &mut UpstreamConn) -> Result<(), UpstreamError> {
    let check = async {
        let mut out = BytesMut::new();
        frontend::sync(&mut out);
        conn.send(&out).await?;
        loop {
            if let backend::Message::ReadyForQuery(_) = conn.read_message().await? {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(RESET_TIMEOUT, check)
        .await
        .map_err(|_| UpstreamError::Lost("health check timed out".into()))?
}
