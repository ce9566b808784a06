//! Operations: IR-4 (the sentinel revokes and alerts), SI-4 (the sentinel
//! watches with rules) and CM-14
//! (the bundle that decides is sealed with a key from outside it).

use serde_json::{json, Value};

use super::{Checks, Facts, Finding};
use crate::app::App;
use crate::compliance::observe::Observations;

/// The webhook's scheme and host only: its path may hold a secret.
fn webhook_host(url: &str) -> Value {
    match reqwest::Url::parse(url) {
        Ok(url) => json!(format!(
            "{}://{}",
            url.scheme(),
            url.host_str().unwrap_or("")
        )),
        Err(_) => json!("unparsable"),
    }
}

fn sentinel_enabled(checks: &mut Checks, app: &App, without: &str) -> bool {
    let enabled = app.config.sentinel.enabled;
    checks.must(
        "the breach sentinel is enabled",
        enabled,
        if enabled {
            "sentinel.enabled = true".to_string()
        } else {
            format!("sentinel.enabled = false: {without}")
        },
    )
}

pub(super) fn incident_handling(app: &App, _: &Observations) -> Finding {
    let sentinel = &app.config.sentinel;
    let facts = Facts::from([
        ("sentinel.enabled", json!(sentinel.enabled)),
        (
            "sentinel.webhook",
            sentinel
                .webhook
                .as_deref()
                .map(webhook_host)
                .unwrap_or(Value::Null),
        ),
        (
            "sentinel.webhook_attempts",
            json!(sentinel.webhook_attempts),
        ),
    ]);
    let mut checks = Checks::default();
    if sentinel_enabled(
        &mut checks,
        app,
        "ticket abuse is neither detected nor handled",
    ) {
        let url = sentinel
            .webhook
            .as_deref()
            .map(reqwest::Url::parse)
            .transpose();
        match url {
            Ok(Some(url)) => {
                let web = matches!(url.scheme(), "http" | "https");
                checks.must(
                    "the incident webhook is an http(s) URL",
                    web,
                    if web {
                        format!("breaches are POSTed to {}", webhook_host(url.as_str()))
                    } else {
                        format!(
                            "sentinel.webhook is a {}: URL, not http(s): nobody is alerted",
                            url.scheme()
                        )
                    },
                );
            }
            Ok(None) => {
                checks.should(
                    "an incident webhook alerts someone",
                    false,
                    "a sentinel trip revokes the ticket and is audited, but nobody is alerted: set sentinel.webhook",
                );
            }
            Err(_) => {
                checks.must(
                    "the incident webhook is an http(s) URL",
                    false,
                    "sentinel.webhook is not a URL: nobody is alerted",
                );
            }
        }
    }
    checks.verdict(
        facts,
        "a sentinel trip revokes the ticket, is audited and is POSTed to the incident webhook (retried)",
    )
}

/// Where Prometheus scrapes, and whether a token guards it.
fn metrics_fact(metrics: &crate::config::MetricsConfig) -> String {
    let place = match metrics.own_listener() {
        Some(addr) => format!("its own listener {addr}"),
        None => "the HTTP door".to_string(),
    };
    let token = if metrics.token.is_some() {
        ", scrape token required"
    } else {
        ""
    };
    format!("GET /metrics on {place} (Prometheus, esq_ prefix{token})")
}

pub(super) fn monitoring(app: &App, _: &Observations) -> Finding {
    let sentinel = &app.config.sentinel;
    let rules: Vec<Value> = sentinel
        .rules
        .iter()
        .map(|r| json!({"name": r.name, "measure": r.measure, "per": r.per, "limit": r.limit, "window_seconds": r.window.as_secs()}))
        .collect();
    let facts = Facts::from([
        ("sentinel.enabled", json!(sentinel.enabled)),
        ("sentinel.rules", json!(rules)),
        ("metrics", json!(metrics_fact(&app.config.metrics))),
    ]);
    let mut checks = Checks::default();
    if sentinel_enabled(
        &mut checks,
        app,
        "ticket abuse is not monitored (metrics alone do not detect it)",
    ) {
        checks.must(
            "the sentinel has rules to watch",
            !sentinel.rules.is_empty(),
            if sentinel.rules.is_empty() {
                "the sentinel is enabled with no rules: nothing is watched".to_string()
            } else {
                let names: Vec<&str> = sentinel.rules.iter().map(|r| r.name.as_str()).collect();
                format!("{} rule(s): {}", names.len(), names.join(", "))
            },
        );
    }
    checks.verdict(
        facts,
        "the breach sentinel watches ticket use against its rules and trips on abuse; decisions, latencies and pool state are exported as metrics",
    )
}

pub(super) fn signed_components(app: &App, _: &Observations) -> Finding {
    let bundle = app.bundle();
    let facts = Facts::from([
        ("bundle.hash", json!(bundle.hash)),
        (
            "bundle.seal_file",
            json!(crate::bundle::seal::seal_path(&app.config)),
        ),
        ("ESQ_SEAL_KEY", json!(app.config.seal_key)),
    ]);
    let mut checks = Checks::default();
    let anchored = checks.must(
        "the key seals must verify with comes from outside the configuration",
        app.config.seal_key.is_some(),
        match &app.config.seal_key {
            Some(path) => format!("ESQ_SEAL_KEY = {}", path.display()),
            None => "ESQ_SEAL_KEY is not set: nothing outside the configuration vouches for it"
                .to_string(),
        },
    );
    if anchored {
        let verified = crate::bundle::seal::check_for_serving(&app.config, &bundle.parts);
        checks.must(
            "the bundle in force is the sealed one",
            verified.is_ok(),
            match &verified {
                Ok(verified) => format!(
                    "bundle {} sealed with key {} at {}",
                    bundle.hash, verified.key_id, verified.sealed_at
                ),
                Err(error) => error.to_string(),
            },
        );
    }
    checks.verdict(
        facts,
        "the configuration, catalog and policies that decide are the bundle a release key sealed after review; esq serves no other",
    )
}
