//! `[metrics]`: where Prometheus scrapes esq. Operational data (decision
//! counts, pool sizes, tombstone state) is not for the API's clients, so
//! `GET /metrics` has a listener of its own (default `127.0.0.1:9433`,
//! reachable only from the host) and the HTTP door answers it with 404.
//! An operator who can expose one port only puts it on the HTTP door
//! (`listen = "http"`), and then a bearer token is required.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// The default metrics listener: loopback only.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9433,
));

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served: an address of its own (default
    /// `127.0.0.1:9433`; the HTTP door then answers `/metrics` with 404),
    /// or `"http"` for the HTTP door itself, which needs `token_file`.
    /// The listener speaks TLS when `[tls]` is set, like the doors.
    #[serde(default)]
    pub listen: MetricsListen,
    /// A file whose first line is the token a scraper must send as
    /// `Authorization: Bearer <token>` (Prometheus: `authorization:
    /// credentials_file`). Without it the metrics listener answers anyone
    /// who can reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` at load time.
    #[serde(skip)]
    pub token: Option<Secret>,
}

impl MetricsConfig {
    /// The address of the metrics listener, when it has one of its own.
    pub fn own_listener(&self) -> Option<SocketAddr> {
        match self.listen {
            MetricsListen::Addr(addr) => Some(addr),
            MetricsListen::HttpDoor => None,
        }
    }
}

/// See [`MetricsConfig::listen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum MetricsListen {
    Addr(SocketAddr),
    /// On the HTTP door, behind the token.
    HttpDoor,
}

impl Default for MetricsListen {
    fn default() -> Self {
        MetricsListen::Addr(DEFAULT_LISTEN)
    }
}

impl TryFrom<String> for MetricsListen {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text.trim() == "http" {
            return Ok(MetricsListen::HttpDoor);
        }
        text.trim().parse().map(MetricsListen::Addr).map_err(|_| {
            format!("{text:?} is neither an address (127.0.0.1:9433) nor \"http\" (the HTTP door)")
        })
    }
}

impl From<MetricsListen> for String {
    fn from(listen: MetricsListen) -> String {
        listen.to_string()
    }
}

impl fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsListen::Addr(addr) => addr.fmt(f),
            MetricsListen::HttpDoor => f.write_str("http"),
        }
    }
}

/// Resolves `token_file` against `base` (the config file's directory),
/// reads the token, and refuses what would leave the metrics open or
/// unreachable: the HTTP door without a token, an empty token, the
/// listener on a door's address.
pub(super) fn load(
    metrics: &mut MetricsConfig,
    server: &super::ServerConfig,
    base: &Path,
    config_path: &Path,
) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        path: config_path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    if let Some(file) = metrics.token_file.as_mut() {
        if file.is_relative() {
            *file = base.join(&*file);
        }
        let text = std::fs::read_to_string(&*file).map_err(|err| {
            invalid(
                "metrics.token_file",
                format!("cannot read {}: {err}", file.display()),
            )
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(invalid(
                "metrics.token_file",
                format!("{} holds no token on its first line", file.display()),
            ));
        }
        metrics.token = Some(Secret::new(token));
    }
    match metrics.listen {
        MetricsListen::HttpDoor if metrics.token.is_none() => Err(invalid(
            "metrics.listen",
            "metrics on the HTTP door (\"http\") need metrics.token_file: the API's clients must not read operational data".into(),
        )),
        MetricsListen::Addr(addr)
            if addr.port() != 0 && (addr == server.http_listen || addr == server.pg_listen) =>
        {
            Err(invalid(
                "metrics.listen",
                format!("{addr} is a door's address: give the metrics a port of their own, or \"http\" (with token_file)"),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_an_address_or_the_http_door() {
        assert_eq!(
            MetricsListen::try_from("127.0.0.1:0".to_string()),
            Ok(MetricsListen::Addr(SocketAddr::from(([127, 0, 0, 1], 0))))
        );
        assert_eq!(
            MetricsListen::try_from("http".to_string()),
            Ok(MetricsListen::HttpDoor)
        );
        assert!(MetricsListen::try_from("9433".to_string()).is_err());
        assert_eq!(MetricsListen::default().to_string(), "127.0.0.1:9433");
    }

    fn loaded(listen: MetricsListen, token: Option<&str>) -> Result<MetricsConfig, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut metrics = MetricsConfig {
            listen,
            token_file: None,
            token: None,
        };
        if let Some(token) = token {
            std::fs::write(dir.path().join("token"), token).map_err(|e| e.to_string())?;
            metrics.token_file = Some(PathBuf::from("token"));
        }
        let server = super::super::ServerConfig::default();
        load(
            &mut metrics,
            &server,
            dir.path(),
            &dir.path().join("esq.toml"),
        )
        .map_err(|e| e.to_string())?;
        Ok(metrics)
    }

    #[test]
    fn the_http_door_serves_metrics_only_behind_a_token() {
        let refused = loaded(MetricsListen::HttpDoor, None).unwrap_err();
        assert!(refused.contains("metrics.token_file"), "{refused}");
        let refused = loaded(MetricsListen::HttpDoor, Some("\n")).unwrap_err();
        assert!(refused.contains("no token"), "{refused}");
        let ok = loaded(MetricsListen::HttpDoor, Some("s3cret\nignored\n"));
        assert_eq!(
            ok.ok()
                .and_then(|m| m.token)
                .map(|t| t.expose().to_string()),
            Some("s3cret".to_string())
        );
    }

    #[test]
    fn the_listener_is_not_a_door() {
        let door = super::super::ServerConfig::default().http_listen;
        let refused = loaded(MetricsListen::Addr(door), None).unwrap_err();
        assert!(refused.contains("a door's address"), "{refused}");
        assert!(loaded(MetricsListen::default(), None).is_ok());
    }
}
