//! The upstream side: connections to the backing PostgreSQL under esq's own
//! low-privilege service role, in read-only sessions with esq's settings,
//! kept in a bounded pool. Pooling is per session: a client session holds
//! one upstream connection from its start to its end; on release the
//! connection is reset with `DISCARD ALL` and kept for the next session.

mod connect;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::{backend, frontend};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use connect::{ConnectParams, UpstreamConn};

use crate::config::Config;
use crate::metrics::{Door, Metrics, PoolGauges};

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
    #[error("upstream error {code}: {message}")]
    Server { code: String, message: String },
    #[error("all {0} upstream connections are in use")]
    Exhausted(u32),
}

/// How long a session waits for a free upstream connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening one upstream connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a health check or reset of a pooled connection may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

pub struct UpstreamPool {
    params: ConnectParams,
    size: u32,
    idle: Mutex<Vec<UpstreamConn>>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    gauges: PoolGauges,
}

/// One upstream connection lent to a session; give it back with
/// [`UpstreamPool::release`] (dropping it closes the connection).
pub struct Lease {
    conn: Option<UpstreamConn>,
    _permit: OwnedSemaphorePermit,
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

impl UpstreamPool {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<UpstreamPool, UpstreamError> {
        let params = connect_params(config)?;
        let size = config.upstream.pool_size;
        Ok(UpstreamPool {
            params,
            size,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            gauges: metrics.pool(Door::pg),
            metrics,
        })
    }

    /// The one database esq serves.
    pub fn database(&self) -> &str {
        &self.params.database
    }

    /// Where cancel requests for upstream backends go.
    pub fn address(&self) -> (&str, u16) {
        (&self.params.host, self.params.port)
    }

    /// A healthy connection: a pooled one that answers, or a new one.
    pub async fn acquire(&self) -> Result<Lease, UpstreamError> {
        self.gauges.waiting.inc();
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned()).await;
        self.gauges.waiting.dec();
        let permit = match permit {
            Ok(Ok(permit)) => permit,
            _ => return Err(UpstreamError::Exhausted(self.size)),
        };
        self.gauges.in_use.inc();
        let lease = |conn| Lease {
            conn: Some(conn),
            _permit: permit,
            in_use: self.gauges.in_use.clone(),
        };
        while let Some(mut conn) = self.take_idle() {
            if ping(&mut conn).await.is_ok() {
                return Ok(lease(conn));
            }
        }
        match connect::connect(&self.params).await {
            Ok(conn) => Ok(lease(conn)),
            Err(err) => {
                self.gauges.in_use.dec();
                self.metrics.upstream_errors.inc();
                Err(err)
            }
        }
    }

    fn take_idle(&self) -> Option<UpstreamConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conn = idle.pop();
        self.gauges.idle.set(idle.len() as i64);
        conn
    }

    /// Takes a connection back: reset with `DISCARD ALL` and kept, or closed
    /// when it is not idle or the reset fails.
    pub async fn release(&self, mut lease: Lease, idle_in_sync: bool) {
        if !idle_in_sync {
            return;
        }
        let Some(mut conn) = lease.take() else {
            return;
        };
        let reset = tokio::time::timeout(RESET_TIMEOUT, conn.simple("DISCARD ALL")).await;
        if matches!(reset, Ok(Ok(()))) {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(conn);
            self.gauges.idle.set(idle.len() as i64);
        }
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

/// Session settings every upstream session starts with. They are startup
/// options, so `DISCARD ALL` (which runs `RESET ALL`) returns to them.
fn session_options(config: &Config) -> String {
    let timeout_ms = config.upstream.statement_timeout.as_millis();
    [
        "default_transaction_read_only=on".to_string(),
        format!("statement_timeout={timeout_ms}"),
        "standard_conforming_strings=on".to_string(),
        "search_path=public".to_string(),
        "client_min_messages=notice".to_string(),
    ]
    .iter()
    .map(|setting| format!("-c {setting}"))
    .collect::<Vec<_>>()
    .join(" ")
}

fn connect_params(config: &Config) -> Result<ConnectParams, UpstreamError> {
    let url: tokio_postgres::Config = config
        .upstream
        .url
        .parse()
        .map_err(|err| UpstreamError::Config(format!("upstream.url: {err}")))?;
    let host = match url.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        None => "localhost".to_string(),
        #[allow(unreachable_patterns)]
        Some(_) => {
            return Err(UpstreamError::Config(
                "upstream.url must name a TCP host (Unix sockets are not supported)".into(),
            ))
        }
    };
    let port = url.get_ports().first().copied().unwrap_or(5432);
    let user = url
        .get_user()
        .ok_or_else(|| UpstreamError::Config("upstream.url names no user".into()))?
        .to_string();
    let database = url.get_dbname().unwrap_or(&user).to_string();
    let tls = match url.get_ssl_mode() {
        tokio_postgres::config::SslMode::Require => Some(client_tls(config, &host)?),
        _ => None,
    };
    Ok(ConnectParams {
        host,
        port,
        user,
        database,
        password: config.upstream_password().cloned(),
        options: session_options(config),
        tls,
        connect_timeout: CONNECT_TIMEOUT,
    })
}

fn client_tls(
    config: &Config,
    host: &str,
) -> Result<
    (
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    ),
    UpstreamError,
> {
    let ca_file = config.upstream.ca_file.as_ref().ok_or_else(|| {
        UpstreamError::Config(
            "upstream.url says sslmode=require: set upstream.ca_file to the CA that signed the upstream certificate".into(),
        )
    })?;
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::load_certs(ca_file).map_err(|e| UpstreamError::Config(e.to_string()))? {
        roots
            .add(cert)
            .map_err(|err| UpstreamError::Config(format!("upstream.ca_file: {err}")))?;
    }
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|err| UpstreamError::Config(format!("upstream host {host:?}: {err}")))?;
    Ok((Arc::new(client), name))
}
