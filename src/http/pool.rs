//! The HTTP door's own small pool of upstream connections (tokio-postgres):
//! esq's service role, read-only sessions, the configured
//! `statement_timeout`, at most `upstream.pool_size` connections. A
//! connection goes back to the pool only after its answer was read to the
//! end; anything else is closed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::num::NonZeroUsize;

use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls, Statement};

use crate::config::Config;
use crate::metrics::{Door, Metrics, PoolGauges};

/// How long a request waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection, by the guard's SQL text: a
/// cached decision then costs one round trip instead of two.
const STATEMENTS_PER_CONNECTION: usize = 64;

/// An upstream connection and the statements prepared on it.
pub struct Connection {
    client: Client,
    statements: LruCache<String, Statement>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("upstream.url is not a PostgreSQL URL: {0}")]
    Config(String),
    #[error("all upstream connections are busy")]
    Busy,
    #[error("cannot connect to the upstream database: {0}")]
    Connect(String),
}

pub struct HttpPool {
    config: tokio_postgres::Config,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// `esq_upstream_{in_use,idle,waiting}{door="http"}`.
    gauges: PoolGauges,
}

/// A connection lent to one request. Dropped without [`Lease::release`] it
/// is closed (its answer may not have been read to the end).
pub struct Lease {
    connection: Option<Connection>,
    pool: Arc<HttpPool>,
    _permit: OwnedSemaphorePermit,
}

impl HttpPool {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<HttpPool>, PoolError> {
        let mut pg: tokio_postgres::Config = config
            .upstream
            .url
            .parse()
            .map_err(|err: tokio_postgres::Error| PoolError::Config(err.to_string()))?;
        if let Some(password) = config.upstream_password() {
            pg.password(password.expose());
        }
        let timeout_ms = config.upstream.statement_timeout.as_millis();
        pg.options(format!(
            "-c default_transaction_read_only=on -c statement_timeout={timeout_ms}"
        ));
        pg.application_name("esq-http");
        pg.connect_timeout(CONNECT_TIMEOUT);
        let size = usize::try_from(config.upstream.pool_size.max(1)).unwrap_or(16);
        Ok(Arc::new(HttpPool {
            config: pg,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            gauges: metrics.pool(Door::http),
            metrics,
        }))
    }

    /// A connection: an idle one, or a new one when none is idle.
    pub async fn get(self: &Arc<Self>) -> Result<Lease, PoolError> {
        self.gauges.waiting.inc();
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned()).await;
        self.gauges.waiting.dec();
        let permit = permit
            .map_err(|_| PoolError::Busy)?
            .map_err(|_| PoolError::Busy)?;
        let reused = {
            let mut idle = self.lock();
            let mut found = None;
            while let Some(connection) = idle.pop() {
                if !connection.client.is_closed() {
                    found = Some(connection);
                    break;
                }
            }
            self.gauges.idle.set(idle.len() as i64);
            found
        };
        let connection = match reused {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        self.gauges.in_use.inc();
        Ok(Lease {
            connection: Some(connection),
            pool: self.clone(),
            _permit: permit,
        })
    }

    /// Opens a connection and checks that it answers (used by `/readyz`).
    pub async fn check(self: &Arc<Self>) -> Result<(), PoolError> {
        let mut lease = self.get().await?;
        lease
            .client()
            .simple_query("SELECT 1")
            .await
            .map_err(|err| PoolError::Connect(describe(&err)))?;
        lease.release();
        Ok(())
    }

    async fn connect(&self) -> Result<Connection, PoolError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|err| {
            self.metrics.upstream_errors.inc();
            PoolError::Connect(describe(&err))
        })?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(
                    sqlstate = sqlstate(&err),
                    "upstream connection (HTTP door) ended"
                );
            }
        });
        let size = NonZeroUsize::new(STATEMENTS_PER_CONNECTION).unwrap_or(NonZeroUsize::MIN);
        Ok(Connection {
            client,
            statements: LruCache::new(size),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes idle connections (on shutdown).
    pub fn close_idle(&self) {
        self.lock().clear();
        self.gauges.idle.set(0);
    }
}

impl Lease {
    fn connection(&mut self) -> &mut Connection {
        // Only `release` takes the connection, and it consumes the lease.
        self.connection
            .as_mut()
            .unwrap_or_else(|| unreachable!("lease without connection"))
    }

    pub fn client(&mut self) -> &Client {
        &self.connection().client
    }

    /// The statement prepared for `sql` on this connection (cached).
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let connection = self.connection();
        if let Some(statement) = connection.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = connection.client.prepare(sql).await?;
        connection
            .statements
            .put(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Returns the connection for reuse: call only after the answer was read
    /// to the end.
    pub fn release(mut self) {
        if let Some(connection) = self.connection.take() {
            if !connection.client.is_closed() {
                let mut idle = self.pool.lock();
                idle.push(connection);
                self.pool.gauges.idle.set(idle.len() as i64);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.gauges.in_use.dec();
    }
}

/// The database's message when there is one (it names no secret), else the
/// error's kind.
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => err.to_string(),
    }
}

/// The SQLSTATE of a database error (`"connection"` for others): what the
/// log says of an upstream failure, since the message may quote a value.
pub fn sqlstate(err: &tokio_postgres::Error) -> &str {
    match err.as_db_error() {
        Some(db) => db.code().code(),
        None => "connection",
    }
}
