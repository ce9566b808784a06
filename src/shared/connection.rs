//! One Redis connection per process, shared by the ticket store and the
//! breach sentinel. Connected lazily on first use (so esq starts, and stays
//! up, while Redis is down), every command bounded by
//! `tickets.store_timeout`, and re-established by itself when Redis comes
//! back: a single server through the `redis` crate's `ConnectionManager`, a
//! cluster through its cluster connection, a Sentinel-watched primary by
//! asking the sentinels again after a connection error or a `READONLY`
//! answer (a failover).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisFuture, ScriptInvocation, Value};
use tokio::sync::Mutex;

use super::target::RedisTarget;

/// Redis could not answer in time: callers fail closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A live connection of either kind; both are cheap to clone.
#[derive(Clone)]
enum Live {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Live {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Live::Manager(c) => c.req_packed_command(cmd),
            Live::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Live::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Live::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Live::Manager(c) => c.get_db(),
            Live::Cluster(c) => c.get_db(),
        }
    }
}

pub struct Redis {
    target: RedisTarget,
    timeout: Duration,
    live: Mutex<Option<Live>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis({:?})", self.target)
    }
}

impl Redis {
    /// Nothing is connected yet; the first command connects.
    pub fn new(target: RedisTarget, timeout: Duration) -> Redis {
        Redis {
            target,
            timeout,
            live: Mutex::new(None),
        }
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Unavailable> {
        let mut live = self.connection().await?;
        let result = self.bounded(cmd.query_async(&mut live)).await;
        self.check(result).await
    }

    /// Runs a pipeline (its commands must share one hash slot on a cluster).
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, Unavailable> {
        let mut live = self.connection().await?;
        let result = self.bounded(pipeline.query_async(&mut live)).await;
        self.check(result).await
    }

    /// Runs a Lua script (its keys must share one hash slot on a cluster).
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut live = self.connection().await?;
        let result = self.bounded(invocation.invoke_async(&mut live)).await;
        self.check(result).await
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "no answer within tickets.store_timeout",
            ))),
        }
    }

    /// Passes a result on; after a connection error (or a `READONLY`
    /// answer from a demoted primary) a cluster or sentinel connection is
    /// dropped so that the next command connects afresh. A single server's
    /// `ConnectionManager` reconnects by itself.
    async fn check<T>(&self, result: Result<T, RedisError>) -> Result<T, Unavailable> {
        result.map_err(|err| {
            let lost = err.is_io_error()
                || err.is_connection_dropped()
                || err.is_timeout()
                || err.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
            if lost && !matches!(self.target, RedisTarget::Single(_)) {
                if let Ok(mut live) = self.live.try_lock() {
                    *live = None;
                }
            }
            Unavailable(format!("Redis: {err}"))
        })
    }

    async fn connection(&self) -> Result<Live, Unavailable> {
        let mut live = self.live.lock().await;
        if let Some(connection) = live.as_ref() {
            return Ok(connection.clone());
        }
        let connected = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| Unavailable("Redis: no connection within tickets.store_timeout".into()))?
            .map_err(|err| Unavailable(format!("Redis: {err}")))?;
        *live = Some(connected.clone());
        Ok(connected)
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1))
    }

    async fn connect(&self) -> Result<Live, RedisError> {
        match &self.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                Ok(Live::Manager(ConnectionManager::new_lazy_with_config(
                    client,
                    self.manager_config(),
                )?))
            }
            RedisTarget::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(1)
                    .build()?;
                Ok(Live::Cluster(client.get_async_connection().await?))
            }
            RedisTarget::Sentinel {
                sentinels,
                service,
                tls,
            } => {
                let mut node = SentinelNodeConnectionInfo::default();
                if *tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    service.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )?;
                let primary = sentinel.async_get_client().await?;
                Ok(Live::Manager(
                    ConnectionManager::new_with_config(primary, self.manager_config()).await?,
                ))
            }
        }
    }
}
