//! esq's configuration: one TOML file (`config/esq.toml`), every key
//! overridable by an `ESQ_…` environment variable, loaded and validated once
//! into an immutable [`Config`] that is passed around explicitly (no globals).
//!
//! Relative paths in the file are resolved against the directory that holds
//! the file, so `esq --config /etc/esq/esq.toml` works from any directory.
//! Secrets (the upstream password) never come from the file: they come from
//! the environment or from a file named in the config.

mod duration;
mod exports;
mod lifecycle;
mod load;
mod metrics;
mod standing;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sensitivity::Sensitivity;

pub use exports::ExportsConfig;
pub use lifecycle::{LifecycleConfig, MaintenanceConfig, PurgeSchedule};
pub use load::{env_var_for, ConfigError, ENV_PREFIX, ENV_SEPARATOR};
pub use metrics::{MetricsConfig, MetricsListen};

/// The whole configuration, as loaded from the file plus environment overrides.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the two doors listen and which environment this is.
    #[serde(default)]
    pub server: ServerConfig,
    /// The backing PostgreSQL that esq forwards approved statements to.
    pub upstream: UpstreamConfig,
    /// Where the dataset descriptions (`<dataset>.yaml`) live.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Where the Rego policies live and how long one evaluation may take.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The ticket store and ticket lifetimes.
    #[serde(default)]
    pub tickets: TicketsConfig,
    /// Guard defaults that a dataset or policy may only tighten.
    #[serde(default)]
    pub guard: GuardConfig,
    /// Where the audit log is written.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The breach sentinel: ticket-abuse rules and the alert webhook.
    #[serde(default)]
    pub sentinel: SentinelConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// TLS for both doors (certificates from `certs/`).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Limits and timeouts of the PostgreSQL door.
    #[serde(default)]
    pub pg: PgDoorConfig,
    /// Limits and timeouts of the HTTP door.
    #[serde(default)]
    pub http: HttpDoorConfig,
    /// Where Prometheus scrapes `/metrics` (a listener of its own).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// esq's Ed25519 key and the seal of what decides (config, catalog,
    /// policies).
    #[serde(default)]
    pub signing: SigningConfig,
    /// The credentials that may delete (purges, right-to-delete) and own
    /// schema `esq`; without them esq deletes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceConfig>,
    /// Retention purges and tombstones.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// Encrypted export bundles (off unless `dir` and `kek_file` are set).
    #[serde(default)]
    pub exports: ExportsConfig,
    /// The people and services allowed to use esq, keyed by user name.
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// SHA-256 (hex) of the configuration as written: the file's keys plus
    /// the `ESQ_…` overrides, without secrets. Set by [`Config::load`]; part
    /// of the bundle hash that seals and audit records carry.
    #[serde(skip)]
    pub digest: String,
    /// The file this configuration was loaded from.
    #[serde(skip)]
    pub source: PathBuf,
    /// The public key seals must verify with: `ESQ_SEAL_KEY`, from the
    /// environment only (a configuration must not name the key that vouches
    /// for it). When set, esq serves only a sealed bundle, whatever
    /// `server.environment` says.
    #[serde(skip)]
    pub seal_key: Option<PathBuf>,
    /// The `ESQ_…` environment it was loaded with (a reload re-reads the
    /// file with the same environment). Values may be secrets.
    #[serde(skip)]
    pub env: Vec<(String, Secret)>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The Ed25519 private key (PKCS#8 PEM, from `esq keys generate`). It
    /// signs audit checkpoints, seals and deletion receipts. Without it
    /// there are no checkpoints and nothing can be sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The seal `esq seal` writes and `esq serve` checks. Default: the
    /// config file's path with `.seal` added (`esq.toml.seal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The PostgreSQL door. Default `127.0.0.1:6432`.
    #[serde(default = "defaults::pg_listen")]
    pub pg_listen: SocketAddr,
    /// The HTTP door. Default `127.0.0.1:8080`.
    #[serde(default = "defaults::http_listen")]
    pub http_listen: SocketAddr,
    /// Passed to policies as `input.environment` (e.g. `production`), so a
    /// policy can be stricter in production. Default `development`.
    #[serde(default = "defaults::environment")]
    pub environment: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `postgres://user@host:port/db` of esq's own low-privilege service role.
    /// Must not contain a password: use `password_file` or
    /// `ESQ_UPSTREAM__PASSWORD`.
    pub url: String,
    /// A file whose first line is the upstream password (mode 0600 advised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Only from the environment (`ESQ_UPSTREAM__PASSWORD`); a `password` key
    /// in the file is an error so that no secret is ever committed.
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
    /// `statement_timeout` set on every upstream session. Default `30s`.
    #[serde(default = "defaults::statement_timeout", with = "duration")]
    pub statement_timeout: Duration,
    /// Upstream connections at most, both doors together: with session
    /// pooling, the most client sessions plus HTTP queries served at once.
    /// Default 16.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: u32,
    /// Upstream connections one user may hold at once, both doors together,
    /// so that one user cannot take the whole pool. Default: half of
    /// `pool_size` (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_user: Option<u32>,
    /// Sessions and requests that may wait for a connection at once; more
    /// are refused at once (`53300` / `503`). Default 64.
    #[serde(default = "defaults::max_waiting")]
    pub max_waiting: u32,
    /// How long a session or request waits for a connection. Default `10s`.
    #[serde(default = "defaults::acquire_timeout", with = "duration")]
    pub acquire_timeout: Duration,
    /// CA certificate (PEM) that verifies the upstream server when the URL
    /// says `sslmode=require`; TLS to upstream is used only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Directory of `<dataset>.yaml` files. Default `catalog`.
    #[serde(default = "defaults::catalog_dir")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory of `*.rego` policies and `*_test.rego` tests. Default `policies`.
    #[serde(default = "defaults::policy_dir")]
    pub dir: PathBuf,
    /// Longest one policy evaluation may run; past it the request is denied.
    /// Default `250ms`.
    #[serde(default = "defaults::eval_timeout", with = "duration")]
    pub eval_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TicketsConfig {
    /// `memory` (one node, the default) or a `redis://` / `rediss://` URL
    /// (shared by replicas).
    #[serde(default = "defaults::ticket_store")]
    pub store: String,
    /// Lifetime of a ticket whose request names none. Default `5m`.
    #[serde(default = "defaults::default_ttl", with = "duration")]
    pub default_ttl: Duration,
    /// Longest lifetime any ticket may have. Default `60m`.
    #[serde(default = "defaults::max_ttl", with = "duration")]
    pub max_ttl: Duration,
    /// How long one connection may reuse a positive ticket check before
    /// asking a shared (Redis) store again: the longest a revocation made
    /// on another replica (or another connection) can take to reach an open
    /// connection. The memory store is always checked directly. Default
    /// `1s`; `0s` checks every statement.
    #[serde(default = "defaults::validation_cache", with = "duration")]
    pub validation_cache: Duration,
    /// Longest a Redis command may take before the ticket check fails
    /// closed (`08006` / HTTP 503). Default `1s`.
    #[serde(default = "defaults::store_timeout", with = "duration")]
    pub store_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// Watch ticket use and trip the rules. Default `true`.
    #[serde(default = "defaults::sentinel_enabled")]
    pub enabled: bool,
    /// How often each replica adds its counts to the shared windows; the
    /// detection delay is about this plus one Redis round trip. Default
    /// `200ms`.
    #[serde(default = "defaults::sentinel_flush_interval", with = "duration")]
    pub flush_interval: Duration,
    /// Where an alert is POSTed as JSON on every trip (e.g. the incident
    /// channel that mails the CIO and the Privacy Officer). No webhook: the
    /// trip is still revoked, audited, counted and listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Time one webhook attempt may take. Default `5s`.
    #[serde(default = "defaults::webhook_timeout", with = "duration")]
    pub webhook_timeout: Duration,
    /// Attempts per alert before it is given up (logged). Default 8, with
    /// exponential backoff from 250 ms.
    #[serde(default = "defaults::webhook_attempts")]
    pub webhook_attempts: u32,
    /// The rules; without any, the defaults: `ticket_volume` (10,000 uses
    /// of one ticket in 30 s), `distinct_statements` (1,000 different
    /// statements under one ticket in 60 s), `denial_streak` (50 denials in
    /// a row from one user).
    #[serde(default = "defaults::sentinel_rules")]
    pub rules: Vec<SentinelRule>,
}

/// One named abuse pattern.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelRule {
    /// Named in alerts, audit records and the `rule` metric label.
    pub name: String,
    pub measure: SentinelMeasure,
    /// Whose behaviour is counted. Default `ticket`.
    #[serde(default)]
    pub per: SentinelSubject,
    /// Trips when the count reaches this.
    pub limit: u64,
    /// The sliding window (`uses`, `distinct_statements`); for
    /// `denials_in_a_row`, how long a streak is remembered. Default `30s`.
    #[serde(default = "defaults::sentinel_window", with = "duration")]
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SentinelMeasure {
    /// Statements and executions run under the ticket.
    Uses,
    /// Different statement texts (by fingerprint).
    DistinctStatements,
    /// Denials with no allowed statement in between.
    DenialsInARow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SentinelSubject {
    #[default]
    Ticket,
    User,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Minimum group size `k` of aggregate answers when neither the dataset
    /// nor a policy asks for more. Default 11 (the CMS cell-size rule).
    #[serde(default = "defaults::min_group_size")]
    pub min_group_size: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The hash-chained JSON Lines audit log (file 0; rotated files are
    /// `<stem>.000001.<ext>`, … beside it). Default `esq-audit.jsonl`.
    #[serde(default = "defaults::audit_path")]
    pub path: PathBuf,
    /// A file that reaches this size is closed and the chain continues in
    /// the next one. Default 64 MiB; at least 1024.
    #[serde(default = "defaults::audit_rotate_bytes")]
    pub rotate_bytes: u64,
    /// `false` turns the audit log off (benchmarks only): loudly logged at
    /// start-up and shown as `esq_audit_enabled 0`; an unmet AU control.
    /// Default `true`.
    #[serde(default = "defaults::audit_enabled")]
    pub enabled: bool,
    /// When a record counts as kept, i.e. when the client may see its
    /// statement complete: `fsync` (default) once it is on disk, so not even
    /// a power loss loses it; `write` once the operating system holds it
    /// (it survives an esq crash, not an OS crash or power loss), with an
    /// `fsync` at least every `sync_interval`.
    #[serde(default)]
    pub durability: AuditDurability,
    /// With `durability = "write"`, the longest a written record waits for
    /// its `fsync`: what an OS crash can lose. Default 100ms.
    #[serde(default = "defaults::audit_sync_interval", with = "duration")]
    pub sync_interval: Duration,
    /// A signed checkpoint (last seq, last hash, time) is written at least
    /// this often while records arrive, and at shutdown. Default `1m`.
    #[serde(default = "defaults::checkpoint_interval", with = "duration")]
    pub checkpoint_interval: Duration,
    /// … and after at most this many records. Default 10,000.
    #[serde(default = "defaults::checkpoint_records")]
    pub checkpoint_records: u64,
    /// A second file every checkpoint is also appended to (another disk or
    /// a mounted remote share), so that a cut log cannot take its
    /// checkpoints with it. Checkpoints are always written beside the log
    /// too (`audit.checkpoints` for `audit.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_copy: Option<PathBuf>,
}

/// See [`AuditConfig::durability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    #[default]
    Fsync,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `esq=debug`. Default `info`.
    #[serde(default = "defaults::log_filter")]
    pub filter: String,
    /// Put each statement's text (the `sql` field of its `statement` span)
    /// in the log. Statement text may hold PII (`WHERE ssn = '…'`), so the
    /// default `false` logs only its fingerprint (the SHA-256 prefix the
    /// audit log also records).
    #[serde(default)]
    pub statements: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first) served by both doors. Without
    /// `cert` and `key` the doors speak plaintext only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Refuse plaintext clients (PostgreSQL door: no `SSLRequest`, no
    /// session). Default `false`.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PgDoorConfig {
    /// Time a client has from connecting to finishing authentication.
    /// Default `10s`.
    #[serde(default = "defaults::handshake_timeout", with = "duration")]
    pub handshake_timeout: Duration,
    /// A session waiting this long for its client (outside a transaction
    /// or inside one) is closed: it holds an upstream connection. Default
    /// `15m`.
    #[serde(default = "defaults::idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Largest frontend message accepted; a larger one closes the
    /// connection. Default 1 MiB.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: u32,
    /// Sessions one user may hold at once (each holds an upstream
    /// connection, so one user cannot take the whole pool). Default 8.
    #[serde(default = "defaults::max_sessions_per_user")]
    pub max_sessions_per_user: u32,
    /// The login name that means "my password is a ticket", for tools that
    /// can only fill a user and a password. Default `ticket`.
    #[serde(default = "defaults::ticket_user")]
    pub ticket_user: String,
    /// On shutdown, sessions get this long to finish. Default `10s`.
    #[serde(default = "defaults::shutdown_grace", with = "duration")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDoorConfig {
    /// Largest request body accepted. Default 64 KiB.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u32,
    /// Longest a request may take, answer included. Default `60s`.
    #[serde(default = "defaults::request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// Requests per user per minute. Default 600.
    #[serde(default = "defaults::rate_limit_per_minute")]
    pub rate_limit_per_minute: u32,
    /// Queries one user may have running at once on this door; more are
    /// refused with `429`. Default 4.
    #[serde(default = "defaults::max_in_flight_per_user")]
    pub max_in_flight_per_user: u32,
    /// Longest one query of this door may run in the database (shorter than
    /// `upstream.statement_timeout`, which the PostgreSQL door's sessions
    /// get). Default `10s`.
    #[serde(default = "defaults::http_statement_timeout", with = "duration")]
    pub statement_timeout: Duration,
}

/// One user: who they are to policies, and how they prove it.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Roles that policies match on (e.g. `foia_requester`, `clinician`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Key/value attributes that policies may turn into row filters
    /// (e.g. `state = "CA"` for a state official).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Highest sensitivity this user is cleared for. Default `PUBLIC`.
    #[serde(default)]
    pub clearance: Sensitivity,
    /// PostgreSQL-format SCRAM-SHA-256 verifier for the PostgreSQL door, as
    /// printed by `esq passwd`. Without one the user cannot log in there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_verifier: Option<String>,
    /// SHA-256 (hex) of each API token accepted on the HTTP door, as printed
    /// by `esq token`. The tokens themselves are never stored.
    #[serde(default)]
    pub api_token_sha256: Vec<String>,
    /// A ticket request esq makes for this user at each PostgreSQL-door
    /// login that presents no ticket, and again when that ticket expires
    /// mid-session: for BI tools that can only fill host, user and
    /// password. The same fields as the body of `POST /api/esq/ticket`
    /// (`dataset`, `purpose`, `fields`, `aggregate`, `ttl`, `where`,
    /// `privacy`; not `exception`), decided by the same policies, audited
    /// the same way. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing_ticket: Option<crate::tickets::TicketRequest>,
}

/// A secret string that never prints.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

mod defaults {
    use super::*;

    pub fn pg_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 6432))
    }
    pub fn http_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn environment() -> String {
        "development".to_string()
    }
    pub fn statement_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn pool_size() -> u32 {
        16
    }
    pub fn max_waiting() -> u32 {
        64
    }
    pub fn acquire_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_in_flight_per_user() -> u32 {
        4
    }
    pub fn http_statement_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn catalog_dir() -> PathBuf {
        PathBuf::from("catalog")
    }
    pub fn policy_dir() -> PathBuf {
        PathBuf::from("policies")
    }
    pub fn eval_timeout() -> Duration {
        Duration::from_millis(250)
    }
    pub fn ticket_store() -> String {
        "memory".to_string()
    }
    pub fn default_ttl() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn max_ttl() -> Duration {
        Duration::from_secs(60 * 60)
    }
    pub fn validation_cache() -> Duration {
        Duration::from_secs(1)
    }
    pub fn store_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn sentinel_enabled() -> bool {
        true
    }
    pub fn sentinel_flush_interval() -> Duration {
        Duration::from_millis(200)
    }
    pub fn webhook_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn webhook_attempts() -> u32 {
        8
    }
    pub fn sentinel_window() -> Duration {
        Duration::from_secs(30)
    }
    pub fn sentinel_rules() -> Vec<SentinelRule> {
        vec![
            SentinelRule {
                name: "ticket_volume".into(),
                measure: SentinelMeasure::Uses,
                per: SentinelSubject::Ticket,
                limit: 10_000,
                window: Duration::from_secs(30),
            },
            SentinelRule {
                name: "distinct_statements".into(),
                measure: SentinelMeasure::DistinctStatements,
                per: SentinelSubject::Ticket,
                limit: 1_000,
                window: Duration::from_secs(60),
            },
            SentinelRule {
                name: "denial_streak".into(),
                measure: SentinelMeasure::DenialsInARow,
                per: SentinelSubject::User,
                limit: 50,
                window: Duration::from_secs(600),
            },
        ]
    }
    pub fn min_group_size() -> u32 {
        11
    }
    pub fn audit_path() -> PathBuf {
        PathBuf::from("esq-audit.jsonl")
    }
    pub fn audit_rotate_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn audit_sync_interval() -> Duration {
        Duration::from_millis(100)
    }
    pub fn checkpoint_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn checkpoint_records() -> u64 {
        10_000
    }
    pub fn audit_enabled() -> bool {
        true
    }
    pub fn log_filter() -> String {
        "info".to_string()
    }
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn max_sessions_per_user() -> u32 {
        8
    }
    pub fn max_message_bytes() -> u32 {
        1024 * 1024
    }
    pub fn ticket_user() -> String {
        "ticket".to_string()
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_body_bytes() -> u32 {
        64 * 1024
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn rate_limit_per_minute() -> u32 {
        600
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            pg_listen: defaults::pg_listen(),
            http_listen: defaults::http_listen(),
            environment: defaults::environment(),
        }
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            dir: defaults::catalog_dir(),
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: defaults::policy_dir(),
            eval_timeout: defaults::eval_timeout(),
        }
    }
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig {
            store: defaults::ticket_store(),
            default_ttl: defaults::default_ttl(),
            max_ttl: defaults::max_ttl(),
            validation_cache: defaults::validation_cache(),
            store_timeout: defaults::store_timeout(),
        }
    }
}

impl Default for SentinelConfig {
    fn default() -> Self {
        SentinelConfig {
            enabled: defaults::sentinel_enabled(),
            flush_interval: defaults::sentinel_flush_interval(),
            webhook: None,
            webhook_timeout: defaults::webhook_timeout(),
            webhook_attempts: defaults::webhook_attempts(),
            rules: defaults::sentinel_rules(),
        }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            min_group_size: defaults::min_group_size(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: defaults::audit_path(),
            rotate_bytes: defaults::audit_rotate_bytes(),
            enabled: defaults::audit_enabled(),
            durability: AuditDurability::default(),
            sync_interval: defaults::audit_sync_interval(),
            checkpoint_interval: defaults::checkpoint_interval(),
            checkpoint_records: defaults::checkpoint_records(),
            checkpoint_copy: None,
        }
    }
}

impl Default for PgDoorConfig {
    fn default() -> Self {
        PgDoorConfig {
            handshake_timeout: defaults::handshake_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_message_bytes: defaults::max_message_bytes(),
            max_sessions_per_user: defaults::max_sessions_per_user(),
            ticket_user: defaults::ticket_user(),
            shutdown_grace: defaults::shutdown_grace(),
        }
    }
}

impl Default for HttpDoorConfig {
    fn default() -> Self {
        HttpDoorConfig {
            max_body_bytes: defaults::max_body_bytes(),
            request_timeout: defaults::request_timeout(),
            rate_limit_per_minute: defaults::rate_limit_per_minute(),
            max_in_flight_per_user: defaults::max_in_flight_per_user(),
            statement_timeout: defaults::http_statement_timeout(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            filter: defaults::log_filter(),
            statements: false,
        }
    }
}

impl Config {
    /// Loads `path`, applies `ESQ_…` overrides from the process environment,
    /// resolves relative paths and validates. Any problem is an error that
    /// names the file (and line) or the environment variable, and the key.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        load::load(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &std::path::Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        load::load(path, env)
    }

    /// The upstream password, from `ESQ_UPSTREAM__PASSWORD` or
    /// `upstream.password_file` (resolved at load time).
    /// Upstream connections one user may hold (see `upstream.max_per_user`).
    pub fn upstream_max_per_user(&self) -> u32 {
        self.upstream
            .max_per_user
            .unwrap_or((self.upstream.pool_size / 2).max(1))
    }

    pub fn upstream_password(&self) -> Option<&Secret> {
        self.upstream.password.as_ref()
    }

    /// The maintenance password, from `ESQ_MAINTENANCE__PASSWORD` or
    /// `maintenance.password_file` (resolved at load time).
    pub fn maintenance_password(&self) -> Option<&Secret> {
        self.maintenance.as_ref()?.password.as_ref()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod reference_tests;
