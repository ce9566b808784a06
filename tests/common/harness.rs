//! esq started in-process for door tests: a throwaway PostgreSQL with the
//! sample data (and optionally pgbench's tables), esq's low-privilege
//! service role, and both doors on free ports. Tickets are issued through
//! the same issuer the HTTP door uses.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use esq::serve::Running;
use esq::tickets::TicketRequest;

use super::postgres::TestPostgres;

static NEXT_ROLE: AtomicU64 = AtomicU64::new(0);

pub const SERVICE_PASSWORD: &str = "service-secret";

#[derive(Default, Clone)]
pub struct Options {
    /// Rows of sample data (default 20,000).
    pub rows: Option<u64>,
    /// Load pgbench's tables (scale 1) and add them to the catalog.
    pub pgbench: bool,
    /// A private cluster (for tests that restart it).
    pub private: bool,
    /// More `ESQ_…` overrides.
    pub env: Vec<(String, String)>,
    /// Connect upstream with `sslmode=require`, verifying against this CA.
    pub upstream_ca: Option<PathBuf>,
}

pub struct Esq {
    pub pg: TestPostgres,
    /// esq's service role in the test database.
    pub role: String,
    pub running: Option<Running>,
    pub database: String,
    pub catalog_dir: tempfile::TempDir,
    pub config_env: Vec<(String, String)>,
    /// Holds esq's audit log (`audit.jsonl` and rotated files).
    pub audit_dir: tempfile::TempDir,
}

impl Esq {
    pub async fn start(options: Options) -> Esq {
        let pg = if options.private {
            TestPostgres::start_private().await
        } else {
            TestPostgres::start().await
        };
        let client = pg.connect().await;
        client
            .batch_execute(&esq::sample_data::sql(
                options.rows.unwrap_or(20_000),
                esq::sample_data::DEFAULT_SEED,
            ))
            .await
            .expect("sample data loads");
        let url: tokio_postgres::Config = pg.url().parse().unwrap();
        let database = url.get_dbname().unwrap().to_string();
        let role = format!(
            "esq_service_{}_{}",
            std::process::id(),
            NEXT_ROLE.fetch_add(1, Ordering::Relaxed)
        );
        let mut grants = format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{SERVICE_PASSWORD}';
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT ON public.burial_2024 TO {role};"
        );
        let catalog_dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            super::repo().join("catalog/burial_2024.yaml"),
            catalog_dir.path().join("burial_2024.yaml"),
        )
        .unwrap();
        if options.pgbench {
            let status = tokio::process::Command::new("pgbench")
                .args(["-i", "-s", "1", "-q", "--no-vacuum"])
                .arg(pg.url())
                .output()
                .await
                .expect(
                    "pgbench is installed (apt-get install -y postgresql-contrib or postgresql)",
                );
            assert!(
                status.status.success(),
                "pgbench -i: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            grants.push_str(&format!(
                "GRANT SELECT ON public.pgbench_accounts TO {role};"
            ));
            std::fs::copy(
                super::repo().join("bench/catalog/pgbench_accounts.yaml"),
                catalog_dir.path().join("pgbench_accounts.yaml"),
            )
            .unwrap();
        }
        client.batch_execute(&grants).await.expect("service role");
        let mut upstream = format!("postgres://{role}@127.0.0.1:{}/{database}", pg.port());
        let mut tls_env = Vec::new();
        if let Some(ca) = &options.upstream_ca {
            upstream.push_str("?sslmode=require");
            tls_env.push((
                "ESQ_UPSTREAM__CA_FILE".to_string(),
                ca.display().to_string(),
            ));
        }
        let audit_dir = tempfile::tempdir().unwrap();
        let mut config_env = vec![
            (
                "ESQ_AUDIT__PATH".to_string(),
                audit_dir.path().join("audit.jsonl").display().to_string(),
            ),
            ("ESQ_UPSTREAM__URL".to_string(), upstream),
            (
                "ESQ_UPSTREAM__PASSWORD".to_string(),
                SERVICE_PASSWORD.to_string(),
            ),
            (
                "ESQ_SERVER__PG_LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            (
                "ESQ_SERVER__HTTP_LISTEN".to_string(),
                "127.0.0.1:0".to_string(),
            ),
            (
                "ESQ_CATALOG__DIR".to_string(),
                catalog_dir.path().display().to_string(),
            ),
            (
                super::POLICY_EVAL_TIMEOUT.0.to_string(),
                super::POLICY_EVAL_TIMEOUT.1.to_string(),
            ),
        ];
        config_env.extend(tls_env);
        config_env.extend(options.env);
        let mut esq = Esq {
            pg,
            role,
            running: None,
            database,
            catalog_dir,
            config_env,
            audit_dir,
        };
        esq.restart().await;
        esq
    }

    /// (Re)starts esq with the fixture's configuration.
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        esq::tls::install_crypto_provider();
        let config =
            esq::config::Config::load_with_env(&super::shipped_config(), self.config_env.clone())
                .expect("test config loads");
        let app = Arc::new(esq::app::App::from_config(config).expect("app loads"));
        self.running = Some(esq::serve::start(app).await.expect("esq starts"));
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("esq is running")
    }

    pub fn app(&self) -> &esq::app::App {
        &self.running().app
    }

    pub fn pg_port(&self) -> u16 {
        self.running().pg_addr.port()
    }

    /// Issues a ticket for `user` as the HTTP door would.
    pub async fn ticket(&self, user: &str, request: serde_json::Value) -> String {
        let principal = self
            .app()
            .users
            .principal(user)
            .expect("known user")
            .clone();
        let request: TicketRequest = serde_json::from_value(request).expect("ticket request");
        self.app()
            .tickets
            .issue(&principal, &request, chrono::Utc::now())
            .await
            .unwrap_or_else(|e| panic!("ticket for {user}: {e}"))
            .ticket
    }

    /// The FOIA ticket of the seed story.
    pub async fn foia_ticket(&self) -> String {
        self.ticket(
            "journalist",
            serde_json::json!({"dataset": "burial_2024", "purpose": "FOIA aggregation",
                               "fields": ["state", "id"], "aggregate": "count", "ttl": "5m"}),
        )
        .await
    }

    /// A connection string for libpq tools (psql, pgbench) through esq.
    pub fn libpq_url(&self, user: &str, password: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/{}?sslmode=disable",
            self.pg_port(),
            self.database
        )
    }

    /// Runs psql through esq: `(exit status, stdout, stderr)`.
    /// Each command is one `-c` (one simple Query message).
    pub async fn psql(
        &self,
        url: &str,
        options: Option<&str>,
        commands: &[&str],
    ) -> (i32, String, String) {
        let mut command = tokio::process::Command::new("psql");
        command
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=0",
                "-P",
                "pager=off",
                "-d",
                url,
            ])
            .env_remove("PGOPTIONS");
        for sql in commands {
            command.args(["-c", sql]);
        }
        if let Some(options) = options {
            command.env("PGOPTIONS", options);
        }
        let out = command.output().await.expect("psql is installed");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The audit log's file 0.
    pub fn audit_path(&self) -> PathBuf {
        self.audit_dir.path().join("audit.jsonl")
    }

    /// Every record of the audit log so far (all files, in order).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        for (_, path) in esq::audit::files::existing(&self.audit_path()).unwrap() {
            let text = std::fs::read_to_string(&path).unwrap();
            records.extend(
                text.lines()
                    .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()),
            );
        }
        records
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.catalog_dir.path().to_path_buf()
    }
}
