//! Transmission and cryptography: SC-8 (TLS on every hop — both doors,
//! the upstream connection as the database reports it, the ticket store,
//! the incident webhook), SC-13 (the certificate loads, only AEAD suites)
//! and SC-28 (at rest: the operator's to attest).

use serde_json::json;

use super::{Checks, Facts, Finding};
use crate::app::App;
use crate::compliance::observe::upstream::endpoint;
use crate::compliance::observe::Observations;

/// The upstream URL's `sslmode` (`require`, `prefer`, `disable`).
fn sslmode(url: &str) -> &'static str {
    match url.parse::<tokio_postgres::Config>() {
        Ok(url) => match url.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => "require",
            tokio_postgres::config::SslMode::Prefer => "prefer",
            _ => "disable",
        },
        Err(_) => "unknown",
    }
}

fn tls_facts(app: &App) -> Facts {
    let config = &app.config;
    Facts::from([
        ("tls.cert", json!(config.tls.cert.is_some())),
        ("tls.key", json!(config.tls.key.is_some())),
        ("tls.required", json!(config.tls.required)),
        ("upstream.endpoint", json!(endpoint(&config.upstream.url))),
        ("upstream.sslmode", json!(sslmode(&config.upstream.url))),
        ("upstream.ca_file", json!(config.upstream.ca_file.is_some())),
    ])
}

/// Both doors' certificate and key load into a TLS configuration (`must`
/// for SC-8; SC-13's hashes and SCRAM work without it, so `should` there).
fn doors_certificate(checks: &mut Checks, app: &App, must: bool) -> bool {
    let (passed, observed) = match crate::tls::server_config(&app.config.tls) {
        Ok(Some(_)) => (
            true,
            "tls.cert and tls.key load into the doors' TLS configuration".to_string(),
        ),
        Ok(None) => (
            false,
            "no tls.cert/tls.key: both doors (PostgreSQL and HTTP) speak plaintext".to_string(),
        ),
        Err(err) => (
            false,
            format!("the doors' TLS certificate or key does not load: {err}"),
        ),
    };
    let check = "both doors have a TLS certificate and key that load";
    if must {
        checks.must(check, passed, observed)
    } else {
        checks.should(check, passed, observed)
    }
}

pub(super) fn transmission(app: &App, observed: &Observations) -> Finding {
    let config = &app.config;
    let at = endpoint(&config.upstream.url);
    let mut checks = Checks::default();
    let mut hops = vec!["both doors accept TLS only".to_string()];
    if doors_certificate(&mut checks, app, true) {
        checks.should(
            "both doors refuse plaintext clients (tls.required = true)",
            config.tls.required,
            if config.tls.required {
                "tls.required = true".to_string()
            } else {
                "both doors offer TLS, but tls.required = false lets clients connect in plaintext"
                    .to_string()
            },
        );
    }
    let mode = sslmode(&config.upstream.url);
    checks.must(
        "the upstream connection is configured with sslmode=require",
        mode == "require",
        if mode == "require" {
            format!("upstream.url to {at}: sslmode=require, verified against upstream.ca_file")
        } else {
            format!("the upstream connection to {at} is plaintext by configuration (sslmode={mode}; esq uses TLS upstream only with sslmode=require): both doors' queries and answers cross it")
        },
    );
    match &observed.upstream {
        Ok(seen) => {
            let version = if seen.ssl_version.is_empty() {
                String::new()
            } else {
                format!(" ({})", seen.ssl_version)
            };
            checks.must(
                "the upstream connection is encrypted, as the database reports it (pg_stat_ssl)",
                seen.ssl,
                if seen.ssl {
                    format!("pg_stat_ssl: esq's connection to {at} uses TLS{version}; both doors use this pool")
                } else {
                    format!("the upstream connection to {at} is plaintext (pg_stat_ssl.ssl = false); both doors use this pool")
                },
            );
            hops.push(format!(
                "the upstream connection both doors share is TLS{version} with sslmode=require, as pg_stat_ssl reports"
            ));
        }
        Err(reason) => {
            checks.must(
                "the upstream connection is encrypted, as the database reports it (pg_stat_ssl)",
                false,
                format!("the upstream hop is unverified: {reason}"),
            );
        }
    }
    let store = &config.tickets.store;
    if store != "memory" {
        let tls = store.starts_with("rediss");
        checks.must(
            "the ticket store connection uses TLS (rediss://)",
            tls,
            if tls {
                "tickets.store is a rediss:// URL".to_string()
            } else {
                "the ticket store connection (tickets.store) is plaintext redis://: tickets and budgets cross it unencrypted".to_string()
            },
        );
        hops.push("the ticket store over rediss://".into());
    }
    if let Some(webhook) = &config.sentinel.webhook {
        let https = reqwest::Url::parse(webhook).is_ok_and(|u| u.scheme() == "https");
        checks.must(
            "the incident webhook uses https",
            https,
            if https {
                "sentinel.webhook is https".to_string()
            } else {
                "the incident webhook (sentinel.webhook) is not https: breach alerts cross it in plaintext".to_string()
            },
        );
        hops.push("the incident webhook over https".into());
    }
    let mut facts = tls_facts(app);
    facts.insert(
        "tickets.store_tls",
        json!(store == "memory" || store.starts_with("rediss")),
    );
    checks.verdict(facts, format!("TLS on every hop: {}", hops.join("; ")))
}

/// The cipher suites of the TLS provider esq is built with.
fn cipher_suites() -> Vec<String> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .map(|suite| format!("{:?}", suite.suite()))
        .collect()
}

pub(super) fn cryptography(app: &App, _: &Observations) -> Finding {
    let mut facts = tls_facts(app);
    let suites = cipher_suites();
    facts.insert("crypto.provider", json!("rustls with ring"));
    facts.insert("crypto.fips_140_validated", json!(false));
    facts.insert(
        "crypto.uses",
        json!([
            "TLS 1.2/1.3 (AEAD suites)",
            "SCRAM-SHA-256",
            "SHA-256 token and ticket hashes",
            "Ed25519 signatures (audit checkpoints, seals)"
        ]),
    );
    facts.insert("crypto.cipher_suites", json!(suites));
    let mut checks = Checks::default();
    doors_certificate(&mut checks, app, false);
    let weak: Vec<&String> = suites
        .iter()
        .filter(|s| !(s.contains("_GCM_") || s.contains("CHACHA20_POLY1305")))
        .collect();
    checks.must(
        "TLS offers only AEAD cipher suites",
        !suites.is_empty() && weak.is_empty(),
        if weak.is_empty() {
            format!("{} suites, all AES-GCM or ChaCha20-Poly1305", suites.len())
        } else {
            format!(
                "the TLS provider offers suites that are not AEAD: {}",
                weak.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    );
    checks.verdict(
        facts,
        "TLS 1.2/1.3 with AEAD suites only on both doors, SCRAM-SHA-256 passwords, SHA-256 token and ticket hashes, Ed25519 signatures. FIPS 140 validation is not claimed: ring is not a validated module",
    )
}

pub(super) fn at_rest(app: &App, _: &Observations) -> Finding {
    let facts = Facts::from([
        ("audit.path", json!(app.config.audit.path)),
        (
            "esq.stores",
            json!("no dataset rows (answers stream through); the audit log holds fingerprints and rewritten SQL, which may carry literal values"),
        ),
    ]);
    Checks::default().external(
        facts,
        "rests on the database's storage encryption and on the encryption of the disk that holds the audit log, neither of which esq can observe: the operator must attest it",
    )
}
