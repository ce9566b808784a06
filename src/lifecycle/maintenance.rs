//! The maintenance connection: the only one that may write. It logs in as
//! `[maintenance]`'s role (never the query doors' read-only service role),
//! over TLS when its URL says `sslmode=require` (verified with
//! `upstream.ca_file`, the same server), with short lock waits so a purge
//! or a forget never queues behind a long transaction holding up readers.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("no [maintenance] url is configured: esq deletes only as a maintenance role of its own (see docs/lifecycle.md)")]
    NotConfigured,
    #[error("maintenance.url: {0}")]
    Config(String),
    #[error("cannot connect as the maintenance role to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error("{0}")]
    Database(String),
    #[error(
        "schema esq is at version {found}, this esq needs version {needed}: run `esq migrate`"
    )]
    NotMigrated { found: i64, needed: i64 },
}

impl MaintenanceError {
    /// The database's own message (with its code when it has one): for the
    /// operator's log and CLI, never for a client of the doors.
    pub fn database(err: tokio_postgres::Error) -> MaintenanceError {
        match err.as_db_error() {
            Some(db) => {
                MaintenanceError::Database(format!("{} ({})", db.message(), db.code().code()))
            }
            None => MaintenanceError::Database(err.to_string()),
        }
    }

    /// The SQLSTATE when the database refused (e.g. `42501` no privilege).
    pub fn code(err: &tokio_postgres::Error) -> Option<&str> {
        err.as_db_error().map(|db| db.code().code())
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection as the maintenance role.
pub struct Maintenance {
    pub client: Client,
    /// `role@host:port/db`, for messages.
    pub target: String,
    /// The role it logged in as.
    pub role: String,
}

impl Maintenance {
    pub async fn connect(config: &Config) -> Result<Maintenance, MaintenanceError> {
        let section = config
            .maintenance
            .as_ref()
            .ok_or(MaintenanceError::NotConfigured)?;
        let mut url: tokio_postgres::Config = section
            .url
            .parse()
            .map_err(|err| MaintenanceError::Config(format!("not a PostgreSQL URL: {err}")))?;
        let role = url.get_user().unwrap_or_default().to_string();
        let host = match url.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            None => "localhost".to_string(),
            #[allow(unreachable_patterns)]
            Some(_) => {
                return Err(MaintenanceError::Config(
                    "must name a TCP host (Unix sockets are not supported)".into(),
                ))
            }
        };
        let port = url.get_ports().first().copied().unwrap_or(5432);
        let target = format!("{role}@{host}:{port}/{}", url.get_dbname().unwrap_or(&role));
        if let Some(password) = config.maintenance_password() {
            url.password(password.expose());
        }
        url.application_name("esq-maintenance")
            .options("-c lock_timeout=5s -c idle_in_transaction_session_timeout=60s");
        let connect = |detail: String| MaintenanceError::Connect {
            target: target.clone(),
            detail,
        };
        let require_tls = url.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
        url.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|err| connect(err.to_string()))?;
            let stream: crate::stream::BoxedStream = if require_tls {
                let (tls, name) = crate::upstream::client_tls(config, &host)
                    .map_err(|err| connect(err.to_string()))?;
                Box::new(
                    crate::upstream::start_tls(tcp, tls, name)
                        .await
                        .map_err(|err| connect(err.to_string()))?,
                )
            } else {
                Box::new(tcp)
            };
            url.connect_raw(stream, NoTls)
                .await
                .map_err(|err| connect(first_line(&err)))
        })
        .await
        .map_err(|_| connect(format!("no answer within {CONNECT_TIMEOUT:?}")))??;
        let (client, connection) = opened;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(%err, "maintenance connection ended");
            }
        });
        Ok(Maintenance {
            client,
            target,
            role,
        })
    }

    /// [`Maintenance::connect`], then [`Maintenance::require_current_schema`].
    pub async fn connect_current(config: &Config) -> Result<Maintenance, MaintenanceError> {
        let maintenance = Maintenance::connect(config).await?;
        maintenance.require_current_schema().await?;
        Ok(maintenance)
    }

    /// Fails unless schema `esq` is at the version this esq was built with.
    pub async fn require_current_schema(&self) -> Result<(), MaintenanceError> {
        let needed = super::migrate::latest_version();
        let found = super::migrate::current_version(&self.client).await?;
        if found != needed {
            return Err(MaintenanceError::NotMigrated { found, needed });
        }
        Ok(())
    }
}

fn first_line(err: &tokio_postgres::Error) -> String {
    let text = match err.as_db_error() {
        Some(db) => db.message().to_string(),
        None => err.to_string(),
    };
    text.lines().next().unwrap_or_default().to_string()
}
