//! Checks on values that parse but are not acceptable. Each failure names the
//! key (`tickets.default_ttl`) so the loader can point at the file or the
//! environment variable it came from.

use std::time::Duration;

use super::Config;
use crate::credentials::{scram::ScramVerifier, token};

type Invalid = (String, String);

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

pub(super) fn validate(config: &Config) -> Result<(), Invalid> {
    validate_upstream(config)?;
    validate_tickets(config)?;
    validate_sentinel(config)?;
    if config.guard.min_group_size < 2 {
        return Err(invalid(
            "guard.min_group_size",
            "must be at least 2 (1 would let single records through)",
        ));
    }
    if config.policy.eval_timeout.is_zero() || config.policy.eval_timeout > Duration::from_secs(10)
    {
        return Err(invalid(
            "policy.eval_timeout",
            "must be between 1ms and 10s",
        ));
    }
    if config.server.environment.trim().is_empty() {
        return Err(invalid("server.environment", "must not be empty"));
    }
    if config.audit.rotate_bytes < 1024 {
        return Err(invalid("audit.rotate_bytes", "must be at least 1024"));
    }
    if config.audit.sync_interval.is_zero() || config.audit.sync_interval > Duration::from_secs(60)
    {
        return Err(invalid(
            "audit.sync_interval",
            "must be between 1ms and 60s",
        ));
    }
    validate_doors(config)?;
    validate_maintenance(config)?;
    tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .map_err(|err| invalid("log.filter", format!("not a tracing filter: {err}")))?;
    validate_users(config)
}

fn validate_upstream(config: &Config) -> Result<(), Invalid> {
    let parsed: tokio_postgres::Config = config
        .upstream
        .url
        .parse()
        .map_err(|err| invalid("upstream.url", format!("not a PostgreSQL URL: {err}")))?;
    if parsed.get_password().is_some() {
        return Err(invalid(
            "upstream.url",
            "must not contain a password; use ESQ_UPSTREAM__PASSWORD or upstream.password_file",
        ));
    }
    if parsed.get_user().is_none() {
        return Err(invalid(
            "upstream.url",
            "must name esq's service role (postgres://ROLE@host/db)",
        ));
    }
    if config.upstream.pool_size == 0 {
        return Err(invalid("upstream.pool_size", "must be at least 1"));
    }
    if config.upstream.statement_timeout.is_zero() {
        return Err(invalid(
            "upstream.statement_timeout",
            "must be positive (0 would disable the timeout)",
        ));
    }
    match config.upstream.max_per_user {
        Some(0) => return Err(invalid("upstream.max_per_user", "must be at least 1")),
        Some(n) if n > config.upstream.pool_size => {
            return Err(invalid(
                "upstream.max_per_user",
                "must not exceed upstream.pool_size",
            ))
        }
        _ => {}
    }
    if config.upstream.acquire_timeout.is_zero() {
        return Err(invalid("upstream.acquire_timeout", "must be positive"));
    }
    Ok(())
}

fn validate_doors(config: &Config) -> Result<(), Invalid> {
    let tls = &config.tls;
    match (&tls.cert, &tls.key) {
        (Some(_), None) => return Err(invalid("tls.key", "is required when tls.cert is set")),
        (None, Some(_)) => return Err(invalid("tls.cert", "is required when tls.key is set")),
        (None, None) if tls.required => {
            return Err(invalid(
                "tls.required",
                "needs tls.cert and tls.key (make development ones with `esq certs dev`)",
            ))
        }
        _ => {}
    }
    let pg = &config.pg;
    if pg.handshake_timeout.is_zero() || pg.idle_timeout.is_zero() {
        return Err(invalid(
            "pg.handshake_timeout / pg.idle_timeout",
            "must be positive",
        ));
    }
    if pg.max_sessions_per_user == 0 {
        return Err(invalid("pg.max_sessions_per_user", "must be at least 1"));
    }
    if pg.max_message_bytes < 8 * 1024 {
        return Err(invalid("pg.max_message_bytes", "must be at least 8192"));
    }
    if pg.ticket_user.trim().is_empty() || config.users.contains_key(&pg.ticket_user) {
        return Err(invalid(
            "pg.ticket_user",
            "must be a non-empty name that is not also a configured user",
        ));
    }
    let http = &config.http;
    if http.max_body_bytes < 1024
        || http.request_timeout.is_zero()
        || http.rate_limit_per_minute == 0
    {
        return Err(invalid(
            "http",
            "max_body_bytes must be at least 1024, request_timeout and rate_limit_per_minute positive",
        ));
    }
    if http.max_in_flight_per_user == 0 {
        return Err(invalid("http.max_in_flight_per_user", "must be at least 1"));
    }
    if http.statement_timeout.is_zero()
        || http.statement_timeout > config.upstream.statement_timeout
    {
        return Err(invalid(
            "http.statement_timeout",
            "must be positive and at most upstream.statement_timeout",
        ));
    }
    Ok(())
}

fn validate_tickets(config: &Config) -> Result<(), Invalid> {
    let tickets = &config.tickets;
    match tickets.store.as_str() {
        "memory" => {}
        url => {
            crate::shared::RedisTarget::parse(url)
                .map_err(|err| invalid("tickets.store", err.to_string()))?;
        }
    }
    if tickets.store_timeout.is_zero() || tickets.store_timeout > Duration::from_secs(30) {
        return Err(invalid(
            "tickets.store_timeout",
            "must be between 1ms and 30s",
        ));
    }
    if tickets.validation_cache > Duration::from_secs(60) {
        return Err(invalid(
            "tickets.validation_cache",
            "must be at most 60s: it is how late a revocation may take effect",
        ));
    }
    if tickets.default_ttl.is_zero() {
        return Err(invalid("tickets.default_ttl", "must be positive"));
    }
    if tickets.max_ttl > Duration::from_secs(24 * 3600) {
        return Err(invalid(
            "tickets.max_ttl",
            "must be at most 24h: tickets are meant to be short-lived",
        ));
    }
    if tickets.default_ttl > tickets.max_ttl {
        return Err(invalid(
            "tickets.default_ttl",
            format!(
                "{} exceeds tickets.max_ttl ({})",
                humantime::format_duration(tickets.default_ttl),
                humantime::format_duration(tickets.max_ttl)
            ),
        ));
    }
    Ok(())
}

fn validate_sentinel(config: &Config) -> Result<(), Invalid> {
    let sentinel = &config.sentinel;
    if sentinel.flush_interval.is_zero() || sentinel.flush_interval > Duration::from_secs(10) {
        return Err(invalid(
            "sentinel.flush_interval",
            "must be between 1ms and 10s",
        ));
    }
    if let Some(url) = &sentinel.webhook {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "sentinel.webhook",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    if sentinel.webhook_timeout.is_zero() || sentinel.webhook_attempts == 0 {
        return Err(invalid(
            "sentinel.webhook_timeout",
            "webhook_timeout and webhook_attempts must be positive",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, rule) in sentinel.rules.iter().enumerate() {
        let key = |field: &str| format!("sentinel.rules[{index}].{field}");
        if !is_identifier(&rule.name) || !seen.insert(rule.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!(
                    "{:?} must be a unique lowercase name (a-z, 0-9, _ - .)",
                    rule.name
                ),
            ));
        }
        if rule.limit == 0 {
            return Err(invalid(key("limit"), "must be positive"));
        }
        if rule.window < Duration::from_secs(1) || rule.window > Duration::from_secs(24 * 3600) {
            return Err(invalid(key("window"), "must be between 1s and 24h"));
        }
    }
    Ok(())
}

fn validate_users(config: &Config) -> Result<(), Invalid> {
    for (name, user) in &config.users {
        let key = |field: &str| format!("users.{name}.{field}");
        if !is_identifier(name) {
            return Err(invalid(
                format!("users.{name}"),
                "user names are lowercase letters, digits, '_', '-' and '.', starting with a letter",
            ));
        }
        if let Some(role) = user.roles.iter().find(|r| !is_identifier(r)) {
            return Err(invalid(
                key("roles"),
                format!("{role:?} is not a valid role name"),
            ));
        }
        if let Some(attr) = user.attributes.keys().find(|a| !is_identifier(a)) {
            return Err(invalid(
                key("attributes"),
                format!("{attr:?} is not a valid attribute name"),
            ));
        }
        if let Some(verifier) = &user.scram_verifier {
            ScramVerifier::parse(verifier)
                .map_err(|err| invalid(key("scram_verifier"), err.to_string()))?;
        }
        for hash in &user.api_token_sha256 {
            token::parse_token_hash(hash)
                .map_err(|err| invalid(key("api_token_sha256"), err.to_string()))?;
        }
        super::standing::validate(name, user)?;
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
}

fn validate_maintenance(config: &Config) -> Result<(), Invalid> {
    let exports = &config.exports;
    if exports.dir.is_some() != exports.kek_file.is_some() {
        return Err(invalid(
            "exports",
            "set both dir and kek_file to turn exports on, or neither",
        ));
    }
    if exports.enabled() && config.maintenance.is_none() {
        return Err(invalid(
            "exports",
            "exports keep their jobs and the consent ledger in schema esq: configure [maintenance] too",
        ));
    }
    if exports.workers == 0 || exports.max_attempts == 0 {
        return Err(invalid(
            "exports",
            "workers and max_attempts must be at least 1",
        ));
    }
    if exports.default_retention_days == 0
        || exports.default_retention_days > exports.max_retention_days
    {
        return Err(invalid(
            "exports.default_retention_days",
            "must be between 1 and max_retention_days",
        ));
    }
    if config.lifecycle.purge_batch_rows == 0 {
        return Err(invalid("lifecycle.purge_batch_rows", "must be at least 1"));
    }
    if config.lifecycle.tombstone_check < std::time::Duration::from_secs(1) {
        return Err(invalid("lifecycle.tombstone_check", "must be at least 1s"));
    }
    let Some(maintenance) = &config.maintenance else {
        return Ok(());
    };
    let parsed: tokio_postgres::Config = maintenance
        .url
        .parse()
        .map_err(|err| invalid("maintenance.url", format!("not a PostgreSQL URL: {err}")))?;
    if parsed.get_password().is_some() {
        return Err(invalid(
            "maintenance.url",
            "must not contain a password; use ESQ_MAINTENANCE__PASSWORD or maintenance.password_file",
        ));
    }
    let Some(role) = parsed.get_user() else {
        return Err(invalid(
            "maintenance.url",
            "must name the maintenance role (postgres://ROLE@host/db)",
        ));
    };
    let service: Option<tokio_postgres::Config> = config.upstream.url.parse().ok();
    if service.as_ref().and_then(|s| s.get_user()) == Some(role) {
        return Err(invalid(
            "maintenance.url",
            "must name a role other than the service role: the query doors' role stays read-only",
        ));
    }
    Ok(())
}
