//! Where and how esq connects upstream, derived once from the config: host,
//! port, role, database, the session settings every upstream session starts
//! with, and TLS when the URL says `sslmode=require`.

use std::sync::Arc;

use super::{ConnectParams, UpstreamError, CONNECT_TIMEOUT};
use crate::config::Config;

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

pub fn connect_params(config: &Config) -> Result<ConnectParams, UpstreamError> {
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

pub(crate) fn client_tls(
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
