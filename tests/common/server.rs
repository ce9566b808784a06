//! An esq started in-process by the test (`serve::start`, both doors on
//! port 0) over a throwaway PostgreSQL holding the sample data, read by a
//! low-privilege, read-only service role as in production.
#![allow(dead_code)]

use std::sync::Arc;

use super::postgres::TestPostgres;

pub const SAMPLE_ROWS: u64 = 5_000;
pub const SERVICE_ROLE: &str = "esq_service";

pub struct TestEsq {
    /// `None` for an esq whose upstream is not a test PostgreSQL.
    pub pg: Option<TestPostgres>,
    pub running: Option<esq::serve::Running>,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// Holds this esq's audit log (`audit.jsonl`).
    pub audit_dir: tempfile::TempDir,
}

/// Loads the sample data and creates the read-only service role.
pub async fn sample_postgres() -> TestPostgres {
    let pg = TestPostgres::start().await;
    let client = pg.connect().await;
    client
        .batch_execute(&esq::sample_data::sql(
            SAMPLE_ROWS,
            esq::sample_data::DEFAULT_SEED,
        ))
        .await
        .expect("sample data loads");
    client
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') THEN
                 CREATE ROLE {SERVICE_ROLE} LOGIN;
               END IF;
             END $$;
             ALTER ROLE {SERVICE_ROLE} NOSUPERUSER NOCREATEDB NOCREATEROLE;
             ALTER ROLE {SERVICE_ROLE} SET default_transaction_read_only = on;
             GRANT USAGE ON SCHEMA public TO {SERVICE_ROLE};
             GRANT SELECT ON public.burial_2024 TO {SERVICE_ROLE};"
        ))
        .await
        .expect("service role");
    pg
}

/// The service role's URL on `pg` (no password: the test cluster trusts).
pub fn service_url(pg: &TestPostgres) -> String {
    let url = pg.url();
    let (scheme, rest) = url.split_once("://").expect("URL");
    let rest = rest.split_once('@').map(|(_, r)| r).unwrap_or(rest);
    format!("{scheme}://{SERVICE_ROLE}@{rest}")
}

impl TestEsq {
    /// Starts esq on the shipped config with `overrides` (`ESQ_…` variables).
    pub async fn start(overrides: &[(&str, &str)]) -> TestEsq {
        let pg = sample_postgres().await;
        let url = service_url(&pg);
        Self::start_on(Some(pg), &url, overrides).await
    }

    /// As [`TestEsq::start`], with an explicit upstream URL.
    pub async fn start_on(
        pg: Option<TestPostgres>,
        upstream: &str,
        overrides: &[(&str, &str)],
    ) -> TestEsq {
        esq::tls::install_crypto_provider();
        let audit_dir = tempfile::tempdir().expect("audit dir");
        let mut env: Vec<(String, String)> = vec![
            (
                "ESQ_AUDIT__PATH".into(),
                audit_dir.path().join("audit.jsonl").display().to_string(),
            ),
            ("ESQ_UPSTREAM__URL".into(), upstream.to_string()),
            ("ESQ_SERVER__PG_LISTEN".into(), "127.0.0.1:0".into()),
            ("ESQ_SERVER__HTTP_LISTEN".into(), "127.0.0.1:0".into()),
            (
                super::POLICY_EVAL_TIMEOUT.0.into(),
                super::POLICY_EVAL_TIMEOUT.1.into(),
            ),
        ];
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let config = esq::config::Config::load_with_env(&super::shipped_config(), env)
            .expect("config loads");
        let app = Arc::new(esq::app::App::from_config(config).expect("app loads"));
        let running = esq::serve::start(app).await.expect("esq starts");
        let base = format!("http://{}", running.http_addr);
        TestEsq {
            pg,
            running: Some(running),
            base,
            audit_dir,
        }
    }

    /// The test PostgreSQL behind this esq.
    pub fn pg(&self) -> &TestPostgres {
        self.pg.as_ref().expect("this esq has a test PostgreSQL")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

/// The demo users' API tokens (config/esq.toml).
pub fn token(user: &str) -> String {
    format!("demo-{}-token", user.replace('_', "-"))
}
