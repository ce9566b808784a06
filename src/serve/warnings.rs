//! What `esq serve` says loudly at start: settings that are fine for the
//! demo on a laptop and wrong in a deployment. None stops esq (the demo and
//! the tests run this way); each is one WARN line, also printed to stderr
//! when the log filter hides warnings.
//!
//! - demo credentials: a user who accepts a password or API token published
//!   in the shipped `config/esq.toml` (anyone who read the README can log
//!   in as them), or the development certificate of `esq certs dev`;
//! - plaintext: doors without TLS (or with TLS optional), an upstream
//!   connection to another host without `sslmode=require`;
//! - an upstream that does not answer (checked once; `/readyz` keeps
//!   saying so until it does).

use std::sync::Arc;

use crate::app::App;
use crate::config::{Config, UserConfig};
use crate::credentials::token;
use crate::upstream::UpstreamPool;

/// The demo configuration shipped with esq: its credentials are public.
const SHIPPED_CONFIG: &str = include_str!("../../config/esq.toml");

/// Common name of the CA `esq certs dev` makes.
const DEV_CA_NAME: &[u8] = b"esq development CA";

/// Logs every start-up warning that the configuration alone shows.
pub fn at_start(app: &App) {
    for message in config_warnings(&app.config) {
        warn(&message);
    }
}

/// Asks the upstream once; a failure is a warning, not a refusal to start.
pub async fn check_upstream(upstream: Arc<UpstreamPool>) {
    if let Err(err) = upstream.check().await {
        warn(&format!(
            "THE UPSTREAM DATABASE DOES NOT ANSWER ({err}): every query is refused and /readyz says \"not ready\" until it does; check upstream.url, the password and pg_hba.conf"
        ));
    }
}

/// One warning: a WARN log line, and stderr when warnings are filtered out.
fn warn(message: &str) {
    if tracing::enabled!(target: "esq::start", tracing::Level::WARN) {
        tracing::warn!(target: "esq::start", "{message}");
    } else {
        eprintln!("WARNING: {message}");
    }
}

/// The warnings `config` deserves, in the order they are logged.
pub fn config_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let demo_users = users_with_demo_credentials(&config.users);
    if !demo_users.is_empty() {
        warnings.push(format!(
            "DEMO CREDENTIALS IN USE: {} accept the password or API token published in esq's demo configuration; anyone can log in as them. Make new ones with `esq passwd` and `esq token`",
            demo_users.join(", ")
        ));
    }
    if let Some(cert) = &config.tls.cert {
        if is_development_certificate(cert) {
            warnings.push(format!(
                "DEVELOPMENT TLS CERTIFICATE: {} was made by `esq certs dev`; clients cannot trust it beyond this machine. Use a certificate from your CA",
                cert.display()
            ));
        }
    }
    if config.tls.cert.is_none() {
        warnings.push(
            "PLAINTEXT DOORS: the PostgreSQL door and the HTTP door (and the metrics listener) have no TLS, so passwords, tokens, tickets and answers cross the network readable. Set tls.cert, tls.key and tls.required = true"
                .to_string(),
        );
    } else if !config.tls.required {
        warnings.push(
            "TLS IS OPTIONAL (tls.required = false): a client that does not ask for TLS still talks in plaintext. Set tls.required = true"
                .to_string(),
        );
    }
    if let Some(host) = plaintext_remote_upstream(&config.upstream.url) {
        warnings.push(format!(
            "PLAINTEXT UPSTREAM: the connection to {host} is not encrypted. Add sslmode=require to upstream.url and set upstream.ca_file"
        ));
    }
    warnings
}

/// Users (sorted) with a SCRAM verifier or API token hash that appears in
/// the shipped demo configuration, or a token following its
/// `demo-<user>-token` pattern.
fn users_with_demo_credentials(
    users: &std::collections::BTreeMap<String, UserConfig>,
) -> Vec<String> {
    let published = published_credentials();
    users
        .iter()
        .filter(|(name, user)| {
            let pattern = token::hash_hex(&format!("demo-{}-token", name.replace('_', "-")));
            let verifier = user
                .scram_verifier
                .as_deref()
                .is_some_and(|v| published.contains(&v.trim().to_string()));
            let token = user.api_token_sha256.iter().any(|hash| {
                let hash = hash.trim().to_ascii_lowercase();
                hash == pattern || published.contains(&hash)
            });
            verifier || token
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Every `scram_verifier` and `api_token_sha256` in the shipped config.
fn published_credentials() -> Vec<String> {
    let Ok(table) = SHIPPED_CONFIG.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(users) = table.get("users").and_then(|u| u.as_table()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for user in users.values().filter_map(|u| u.as_table()) {
        if let Some(verifier) = user.get("scram_verifier").and_then(|v| v.as_str()) {
            found.push(verifier.to_string());
        }
        let hashes = user.get("api_token_sha256").and_then(|v| v.as_array());
        for hash in hashes.into_iter().flatten().filter_map(|h| h.as_str()) {
            found.push(hash.to_ascii_lowercase());
        }
    }
    found
}

/// Whether the PEM certificate chain at `path` was issued by the CA of
/// `esq certs dev` (its name appears in the leaf's DER).
fn is_development_certificate(path: &std::path::Path) -> bool {
    crate::tls::load_certs(path)
        .ok()
        .and_then(|chain| chain.into_iter().next())
        .is_some_and(|leaf| leaf.windows(DEV_CA_NAME.len()).any(|w| w == DEV_CA_NAME))
}

/// The upstream host, when it is another machine reached without TLS.
fn plaintext_remote_upstream(url: &str) -> Option<String> {
    use tokio_postgres::config::{Host, SslMode};
    let parsed: tokio_postgres::Config = url.parse().ok()?;
    if parsed.get_ssl_mode() == SslMode::Require {
        return None;
    }
    parsed.get_hosts().iter().find_map(|host| match host {
        Host::Tcp(name) if !is_loopback(name) => Some(name.clone()),
        _ => None,
    })
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/esq.toml");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(&path, env).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_shipped_config_warns_of_demo_credentials_and_plaintext() {
        let warnings = config_warnings(&config(&[]));
        let demo = warnings
            .iter()
            .find(|w| w.starts_with("DEMO CREDENTIALS"))
            .unwrap_or_else(|| panic!("{warnings:?}"));
        for user in ["admin", "ca_official", "clinician", "journalist"] {
            assert!(demo.contains(user), "{demo}");
        }
        assert!(
            warnings.iter().any(|w| w.starts_with("PLAINTEXT DOORS")),
            "{warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.starts_with("PLAINTEXT UPSTREAM")),
            "127.0.0.1 is this machine: {warnings:?}"
        );
    }

    #[test]
    fn own_credentials_are_not_demo_credentials() {
        let (_, hash) = token::generate().unwrap_or_else(|e| panic!("{e}"));
        let verifier = crate::credentials::scram::ScramVerifier::generate("journalist");
        let user = UserConfig {
            scram_verifier: Some(verifier),
            api_token_sha256: vec![hash],
            ..UserConfig::default()
        };
        let users = [("journalist".to_string(), user)].into_iter().collect();
        assert!(users_with_demo_credentials(&users).is_empty());
        let demo = UserConfig {
            api_token_sha256: vec![token::hash_hex("demo-new-hire-token")],
            ..UserConfig::default()
        };
        let users = [("new_hire".to_string(), demo)].into_iter().collect();
        assert_eq!(users_with_demo_credentials(&users), vec!["new_hire"]);
    }

    #[test]
    fn remote_upstreams_without_tls_are_named() {
        assert_eq!(
            plaintext_remote_upstream("postgres://esq@db.internal:5432/x"),
            Some("db.internal".to_string())
        );
        assert_eq!(
            plaintext_remote_upstream("postgres://esq@db.internal/x?sslmode=require"),
            None
        );
        assert_eq!(plaintext_remote_upstream("postgres://esq@[::1]/x"), None);
        assert_eq!(
            plaintext_remote_upstream("postgres://esq@localhost/x"),
            None
        );
    }

    #[test]
    fn required_tls_does_not_warn_of_plaintext() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let certs = crate::tls::make_dev_certs(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let cert = certs.server_cert.display().to_string();
        let key = certs.server_key.display().to_string();
        let tls = [
            ("ESQ_TLS__CERT", cert.as_str()),
            ("ESQ_TLS__KEY", key.as_str()),
            ("ESQ_TLS__REQUIRED", "true"),
        ];
        let warnings = config_warnings(&config(&tls));
        assert!(
            !warnings
                .iter()
                .any(|w| w.contains("PLAINTEXT") || w.contains("OPTIONAL")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.starts_with("DEVELOPMENT TLS")),
            "{warnings:?}"
        );
        let optional = config_warnings(&config(&tls[..2]));
        assert!(
            optional.iter().any(|w| w.starts_with("TLS IS OPTIONAL")),
            "{optional:?}"
        );
    }
}
