//! The database esq reads in tests, set up in one place: a [`TestPostgres`]
//! with the sample data (and optionally pgbench's tables), esq's
//! low-privilege, read-only service role as in production, and — for a
//! TLS-only upstream — test certificates, `ssl = on` and a `hostssl`-only
//! `pg_hba.conf` entry for that role, so that a plaintext login is refused.
//!
//! [`super::esq::Esq`] builds on this; tests that need the sample data but
//! no esq call [`load_sample_data`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::postgres::{describe, TestPostgres};

/// Rows of sample data unless a test asks for another number.
pub const SAMPLE_ROWS: u64 = 20_000;

/// The service role's password (the test clusters trust local logins, but
/// esq is configured as in production, with `ESQ_UPSTREAM__PASSWORD`).
pub const SERVICE_PASSWORD: &str = "service-secret";

/// The maintenance role's password (`ESQ_MAINTENANCE__PASSWORD`).
pub const MAINTENANCE_PASSWORD: &str = "maintenance-secret";

static NEXT_ROLE: AtomicU64 = AtomicU64::new(0);

/// What the sample database holds and how esq may reach it.
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// Rows of sample data (`burial_2024`).
    pub rows: u64,
    /// Load pgbench's tables (scale 1) and grant `pgbench_accounts`.
    pub pgbench: bool,
    /// A private cluster even when `ESQ_TEST_DATABASE_URL` is set (for
    /// tests that restart PostgreSQL or change its configuration).
    pub private: bool,
    /// The service role may log in over TLS only (implies `private`).
    pub tls_only: bool,
    /// Also a maintenance role (owns schema `esq` once `esq migrate` ran,
    /// may delete from the sample tables), as in docs/lifecycle.md.
    pub maintenance: bool,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            rows: SAMPLE_ROWS,
            pgbench: false,
            private: false,
            tls_only: false,
            maintenance: false,
        }
    }
}

/// A running sample database; see the module docs.
pub struct Upstream {
    /// The PostgreSQL itself: [`TestPostgres::connect`] is a superuser
    /// session over plain TCP (the TLS-only rule covers the service role).
    pub pg: TestPostgres,
    /// esq's service role, unique to this database.
    pub role: String,
    /// The maintenance role, when asked for.
    pub maintenance_role: Option<String>,
    pub database: String,
    /// Loaded with pgbench's tables.
    pub pgbench: bool,
    /// The test certificates of a TLS-only upstream (their directory is
    /// removed when this drops).
    tls: Option<(tempfile::TempDir, esq::tls::DevCerts)>,
}

impl Upstream {
    pub async fn start(options: &UpstreamOptions) -> Upstream {
        let pg = if options.private || options.tls_only {
            TestPostgres::start_private().await
        } else {
            TestPostgres::start().await
        };
        let client = load_sample_data(&pg, options.rows).await;
        let url: tokio_postgres::Config = pg.url().parse().expect("the test URL parses");
        let database = url.get_dbname().expect("a database name").to_string();
        let role = format!(
            "esq_service_{}_{}",
            std::process::id(),
            NEXT_ROLE.fetch_add(1, Ordering::Relaxed)
        );
        let mut grants = format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN PASSWORD '{SERVICE_PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
             ALTER ROLE {role} SET default_transaction_read_only = on;
             ALTER ROLE {role} SET log_statement = none;
             ALTER ROLE {role} SET log_min_error_statement = panic;
             ALTER ROLE {role} SET log_min_duration_statement = -1;
             ALTER ROLE {role} SET log_min_duration_sample = -1;
             ALTER ROLE {role} SET log_transaction_sample_rate = 0;
             REVOKE TEMPORARY ON DATABASE \"{database}\" FROM PUBLIC;
             REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) FROM PUBLIC;
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT ON public.burial_2024, public.staff_notes TO {role};"
        );
        let maintenance_role = options.maintenance.then(|| {
            let maintenance = format!("{}_maint", role.replace("esq_service_", "esq_m_"));
            grants.push_str(&maintenance_grants(&maintenance, &database));
            maintenance
        });
        if options.pgbench {
            load_pgbench(&pg).await;
            grants.push_str(&format!(
                "GRANT SELECT ON public.pgbench_accounts TO {role};"
            ));
        }
        pg.drop_role_with_database(&role);
        if let Some(maintenance) = &maintenance_role {
            pg.drop_role_with_database(maintenance);
        }
        client
            .batch_execute(&grants)
            .await
            .unwrap_or_else(|e| panic!("creating the service role: {}", describe(&e)));
        let mut upstream = Upstream {
            pg,
            role,
            maintenance_role,
            database,
            pgbench: options.pgbench,
            tls: None,
        };
        if options.tls_only {
            upstream.require_tls().await;
        }
        upstream
    }

    /// Turns on TLS with fresh test certificates and lets the service role
    /// in only over TLS; checks that a plaintext login is now refused.
    async fn require_tls(&mut self) {
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        let certs = esq::tls::make_dev_certs(dir.path()).expect("test certificates");
        self.pg
            .require_tls_for(&self.role, &certs.server_cert, &certs.server_key)
            .await;
        let plaintext = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.pg.port())
            .user(&self.role)
            .password(SERVICE_PASSWORD)
            .dbname(&self.database)
            .connect(tokio_postgres::NoTls)
            .await;
        match plaintext {
            Ok(_) => panic!("the TLS-only upstream let {} in without TLS", self.role),
            Err(e) => assert!(
                describe(&e).contains("pg_hba.conf rejects connection"),
                "a plaintext login failed, but not by the hostssl rule: {}",
                describe(&e)
            ),
        }
        self.tls = Some((dir, certs));
    }

    /// The service role's URL, with `sslmode=require` on a TLS-only upstream.
    pub fn service_url(&self) -> String {
        let mut url = format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.role,
            self.pg.port(),
            self.database
        );
        if self.tls.is_some() {
            url.push_str("?sslmode=require");
        }
        url
    }

    /// The maintenance role's URL (plain TCP: its pg_hba rule is `host`).
    pub fn maintenance_url(&self) -> Option<String> {
        self.maintenance_role.as_ref().map(|role| {
            format!(
                "postgres://{role}@127.0.0.1:{}/{}",
                self.pg.port(),
                self.database
            )
        })
    }

    /// The CA that signed a TLS-only upstream's certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, certs)| certs.ca_cert.as_path())
    }

    /// The catalog files of the datasets this database holds.
    pub fn catalog_files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            super::repo().join("catalog/burial_2024.yaml"),
            super::repo().join("catalog/staff_notes.yaml"),
        ];
        if self.pgbench {
            files.push(super::repo().join("bench/catalog/pgbench_accounts.yaml"));
        }
        files
    }
}

/// The maintenance role as docs/lifecycle.md documents it: it may create
/// schema `esq` (and so owns it), read and delete the governed tables.
pub fn maintenance_grants(role: &str, database: &str) -> String {
    format!(
        "DROP ROLE IF EXISTS {role};
         CREATE ROLE {role} LOGIN PASSWORD '{MAINTENANCE_PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE;
         GRANT CREATE ON DATABASE \"{database}\" TO {role};
         GRANT USAGE ON SCHEMA public TO {role};
         GRANT SELECT, DELETE ON public.burial_2024, public.staff_notes TO {role};"
    )
}

/// Loads `rows` of sample data into `pg` (deterministic: the default seed)
/// and returns the superuser session that did it.
pub async fn load_sample_data(pg: &TestPostgres, rows: u64) -> tokio_postgres::Client {
    let client = pg.connect().await;
    client
        .batch_execute(&esq::sample_data::sql(rows, esq::sample_data::DEFAULT_SEED))
        .await
        .unwrap_or_else(|e| panic!("loading the sample data: {}", describe(&e)));
    client
}

/// `pgbench -i -s 1`: pgbench's tables, for `-M` mode tests through esq.
async fn load_pgbench(pg: &TestPostgres) {
    let out = tokio::process::Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "--no-vacuum"])
        .arg(pg.url())
        .output()
        .await
        .expect("pgbench is installed (apt-get install -y postgresql-contrib or postgresql)");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
