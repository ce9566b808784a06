//! The one test harness of the integration tests: every test file does
//! `mod common;` and finds here what it needs to start and talk to esq.
//!
//! | file          | what it gives                                                        |
//! | ------------- | -------------------------------------------------------------------- |
//! | `esq.rs`      | [`esq::Esq`]: PostgreSQL (plain or TLS-only), Redis and esq in-process |
//! | `process.rs`  | the real `esq` binary: serving in its own process, or one CLI run    |
//! | `upstream.rs` | the sample database esq reads: sample rows, pgbench, service role, TLS |
//! | `postgres.rs` | a throwaway PostgreSQL cluster (or a database on `ESQ_TEST_DATABASE_URL`) |
//! | `redis.rs`    | throwaway `redis-server`s (one, a cluster, a sentinel), or `ESQ_TEST_REDIS_URL` |
//! | `http.rs`     | HTTP door clients: tokens, ticket issuing, queries, metrics          |
//! | `pg_client.rs`| PostgreSQL door clients: tokio-postgres sessions, psql, SQLSTATEs    |
//! | `wire.rs`     | a raw PostgreSQL protocol client for message sequences drivers never send |
//! | `wire_session.rs` | raw sessions to PostgreSQL or esq, their answers traced line by line |
//! | `wire_compare.rs` | scripts played against PostgreSQL and through esq, compared |
//! | `tickets.rs`  | ticket requests and guard scopes the tests share                     |
//! | `lifecycle.rs`| right-to-delete fixtures: esq with a maintenance role, CLI runs, forget |
//! | `exceptions.rs`| exception waivers: esq with two data stewards, requests, decisions |
//! | `webhook.rs`  | a local receiver standing in for the breach webhook                  |
//!
//! Everything runs on free 127.0.0.1 ports, so test binaries and the tests
//! inside them run in parallel.
#![allow(dead_code)]

pub mod esq;
pub mod exceptions;
pub mod exports;
pub mod http;
pub mod lifecycle;
pub mod pg_client;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod tickets;
pub mod upstream;
pub mod webhook;
pub mod wire;
pub mod wire_compare;
pub mod wire_session;

use std::net::SocketAddr;
use std::path::PathBuf;

/// The repository root (where `config/`, `catalog/` and `policies/` are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Set for every esq a test starts: the policy time-out is wall-clock, and
/// on a loaded machine a descheduled evaluation must not deny a ticket.
pub const POLICY_EVAL_TIMEOUT: (&str, &str) = ("ESQ_POLICY__EVAL_TIMEOUT", "10s");

/// The shipped demo configuration.
pub fn shipped_config() -> PathBuf {
    repo().join("config/esq.toml")
}

/// A copy of the shipped policies in `under/policies`, for a test to edit
/// (a reload's input).
pub fn editable_policies(under: &std::path::Path) -> PathBuf {
    let dir = under.join("policies");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(repo().join("policies")).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    dir
}

/// Loads the shipped config, catalog and policies (no audit log opened).
pub fn shipped_app() -> ::esq::app::App {
    ::esq::app::App::load_without_audit_log(&shipped_config())
        .expect("the shipped configuration loads")
}

/// A 127.0.0.1 port nobody listened on a moment ago: for a server the test
/// starts, or as an address where nothing answers.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("picking a free port: {e}"))
}

/// Where a running esq — in-process ([`esq::Esq`]) or the binary
/// ([`process::EsqProcess`]) — can be reached. The client helpers in
/// `http.rs` and `pg_client.rs` take any of them.
pub trait Doors {
    /// The PostgreSQL door.
    fn pg_addr(&self) -> SocketAddr;
    /// The HTTP door.
    fn http_addr(&self) -> SocketAddr;
    /// The metrics listener (`metrics.listen`).
    fn metrics_addr(&self) -> SocketAddr;
    /// The database name clients ask for (the upstream's).
    fn database(&self) -> &str;

    /// `http://<HTTP door><path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr())
    }

    /// `http://<metrics listener>/metrics`.
    fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr())
    }

    /// A connection string for libpq tools (psql, pgbench) through esq.
    fn libpq_url(&self, user: &str, password: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{}?sslmode=disable",
            self.pg_addr().port(),
            self.database()
        )
    }
}
