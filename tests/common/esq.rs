//! esq for any test, built in one place: [`Esq::builder`] starts the sample
//! database (plain or TLS-only PostgreSQL, see `upstream.rs`), optionally a
//! Redis ticket store, and esq itself in this process (`esq::serve::start`,
//! both doors on port 0) on the shipped configuration plus `ESQ_…`
//! overrides. The same fixture starts the real binary where a test needs a
//! separate process (`process.rs`: [`Esq::spawn_binary`]).
//!
//! ```ignore
//! // Plain PostgreSQL with the sample data, esq in-process.
//! let esq = Esq::builder().start().await;
//! let ticket = esq.foia_ticket().await;                    // issued in-process
//! let client = pg_client::connect_with_ticket(&esq, &ticket).await;
//! let (status, rows) = http::query(&esq, &ticket, json!({"groupBy": "state"})).await;
//!
//! // A TLS-only upstream: the service role gets in over TLS only.
//! let esq = Esq::builder().tls_only_upstream().start().await;
//!
//! // Tickets in a Redis of the test's own (pause, kill, restart it).
//! let mut esq = Esq::builder().private_redis().start().await;
//! esq.redis_mut().kill();
//!
//! // Everything prepared, nothing serving; then the real binary.
//! let esq = Esq::builder().prepare().await;
//! let process = esq.spawn_binary(&[("ESQ_AUDIT__DURABILITY", "write")]).await;
//! ```
//!
//! Overrides are kept one value per variable: a later [`EsqBuilder::env`]
//! or [`Esq::set_env`] replaces the harness's own setting (esq's loader
//! sorts its environment, so a duplicate would not reliably win).

use std::path::PathBuf;
use std::sync::Arc;

use esq::serve::Running;
use esq::tickets::TicketRequest;

use super::postgres::TestPostgres;
use super::redis::TestRedis;
use super::upstream::{Upstream, UpstreamOptions, SERVICE_PASSWORD};
use super::Doors;

/// What esq reads as its upstream.
enum Source {
    /// A sample database of its own (see `upstream.rs`).
    Sample,
    /// Only this URL: nothing is started there (an address where nothing
    /// answers, a listener that never speaks).
    Url(String),
    /// Another fixture's database (its URL, password, CA and catalog).
    Shared {
        env: Vec<(String, String)>,
        database: String,
        catalog_files: Vec<PathBuf>,
    },
}

enum RedisChoice {
    /// `ESQ_TEST_REDIS_URL` when set, else a private server.
    Any,
    /// Always a server of the test's own, to stop or freeze.
    Private,
}

/// Options for [`Esq`]; every one is optional.
pub struct EsqBuilder {
    upstream: UpstreamOptions,
    source: Source,
    upstream_ca: Option<PathBuf>,
    redis: Option<RedisChoice>,
    env: Vec<(String, String)>,
    k_only_counts: bool,
}

impl EsqBuilder {
    /// Policies as shipped, except that FOIA tickets carry no privacy
    /// obligation: count-only tickets with k-suppression (the answers of a
    /// deployment whose policies impose no privacy).
    pub fn k_only_counts(mut self) -> Self {
        self.k_only_counts = true;
        self
    }

    /// Rows of sample data (default [`super::upstream::SAMPLE_ROWS`]).
    pub fn rows(mut self, rows: u64) -> Self {
        self.upstream.rows = rows;
        self
    }

    /// Loads pgbench's tables (scale 1) and adds `pgbench_accounts` to the
    /// catalog.
    pub fn pgbench(mut self) -> Self {
        self.upstream.pgbench = true;
        self
    }

    /// A PostgreSQL cluster of the test's own even when
    /// `ESQ_TEST_DATABASE_URL` is set: for tests that restart it.
    pub fn private_postgres(mut self) -> Self {
        self.upstream.private = true;
        self
    }

    /// PostgreSQL with `ssl = on` (test certificates) and a `hostssl`-only
    /// `pg_hba.conf` entry for esq's service role: a plaintext login of
    /// that role is refused (the harness checks). esq connects with
    /// `sslmode=require` and verifies the server against the test CA
    /// (`ESQ_UPSTREAM__CA_FILE`). A private cluster.
    ///
    /// ```ignore
    /// let esq = Esq::builder().tls_only_upstream().start().await;
    /// let ticket = http::ticket(&esq, "journalist", tickets::foia_request("5m")).await;
    /// let (status, rows) = http::query(&esq, &ticket, json!({"groupBy": "state"})).await;
    /// assert_eq!(status, StatusCode::OK, "{rows}");
    /// ```
    pub fn tls_only_upstream(mut self) -> Self {
        self.upstream.tls_only = true;
        self
    }

    /// The CA esq verifies the upstream with, instead of the one that
    /// signed a TLS-only upstream's certificate (to see a wrong CA refused).
    pub fn upstream_ca(mut self, ca: PathBuf) -> Self {
        self.upstream_ca = Some(ca);
        self
    }

    /// The lifecycle set up as docs/lifecycle.md says: a maintenance role
    /// (`ESQ_MAINTENANCE__…`), a signing key (`ESQ_SIGNING__KEY_FILE`, in
    /// the audit directory) and schema `esq` migrated, before esq starts.
    pub fn lifecycle(mut self) -> Self {
        self.upstream.maintenance = true;
        self
    }

    /// esq reads `url`; no PostgreSQL is started (so [`Esq::pg`] panics).
    pub fn upstream_url(mut self, url: &str) -> Self {
        self.source = Source::Url(url.to_string());
        self
    }

    /// esq reads the same database as `other` (its PostgreSQL, role and
    /// catalog); `other` must outlive this one.
    pub fn upstream_of(mut self, other: &Esq) -> Self {
        self.source = Source::Shared {
            env: other
                .env
                .iter()
                .filter(|(k, _)| k.starts_with("ESQ_UPSTREAM__"))
                .cloned()
                .collect(),
            database: other.database.clone(),
            catalog_files: other.catalog_files.clone(),
        };
        self
    }

    /// Tickets in Redis: `ESQ_TEST_REDIS_URL` when set, else a private
    /// `redis-server`.
    pub fn redis(mut self) -> Self {
        self.redis = Some(RedisChoice::Any);
        self
    }

    /// Tickets in a `redis-server` of the test's own ([`Esq::redis`],
    /// [`Esq::redis_mut`]: pause, kill, restart).
    pub fn private_redis(mut self) -> Self {
        self.redis = Some(RedisChoice::Private);
        self
    }

    /// An `ESQ_…` configuration override; replaces the harness's own value.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        set(&mut self.env, name, value.into());
        self
    }

    /// Everything ready and esq serving in this process.
    pub async fn start(self) -> Esq {
        let mut esq = self.prepare().await;
        esq.restart().await;
        esq
    }

    /// Everything ready, nothing serving: for [`Esq::spawn_binary`], or a
    /// later [`Esq::restart`].
    pub async fn prepare(self) -> Esq {
        let mut env = Vec::new();
        let (upstream, database, catalog_files) = match self.source {
            Source::Sample => {
                let upstream = Upstream::start(&self.upstream).await;
                set(&mut env, "ESQ_UPSTREAM__URL", upstream.service_url());
                set(&mut env, "ESQ_UPSTREAM__PASSWORD", SERVICE_PASSWORD.into());
                if let Some(ca) = upstream.ca_file() {
                    set(&mut env, "ESQ_UPSTREAM__CA_FILE", ca.display().to_string());
                }
                if let Some(url) = upstream.maintenance_url() {
                    set(&mut env, "ESQ_MAINTENANCE__URL", url);
                    set(
                        &mut env,
                        "ESQ_MAINTENANCE__PASSWORD",
                        super::upstream::MAINTENANCE_PASSWORD.into(),
                    );
                }
                let database = upstream.database.clone();
                let catalog = upstream.catalog_files();
                (Some(upstream), database, catalog)
            }
            Source::Url(url) => {
                let parsed: tokio_postgres::Config = url.parse().expect("a postgres:// URL");
                let database = parsed.get_dbname().unwrap_or("postgres").to_string();
                set(&mut env, "ESQ_UPSTREAM__URL", url);
                let catalog = vec![
                    super::repo().join("catalog/burial_2024.yaml"),
                    super::repo().join("catalog/staff_notes.yaml"),
                ];
                (None, database, catalog)
            }
            Source::Shared {
                env: shared,
                database,
                catalog_files,
            } => {
                for (k, v) in shared {
                    set(&mut env, &k, v);
                }
                (None, database, catalog_files)
            }
        };
        if let Some(ca) = &self.upstream_ca {
            set(&mut env, "ESQ_UPSTREAM__CA_FILE", ca.display().to_string());
        }
        let catalog_dir = tempfile::tempdir().expect("a catalog directory");
        for file in &catalog_files {
            let name = file.file_name().expect("a catalog file name");
            std::fs::copy(file, catalog_dir.path().join(name))
                .unwrap_or_else(|e| panic!("copying {}: {e}", file.display()));
        }
        let audit_dir = tempfile::tempdir().expect("an audit directory");
        let (redis, redis_url) = match self.redis {
            None => (None, None),
            Some(RedisChoice::Any) => {
                let (url, server) = super::redis::some_redis();
                (server, Some(url))
            }
            Some(RedisChoice::Private) => {
                let server = TestRedis::start();
                let url = server.url();
                (Some(server), Some(url))
            }
        };
        let audit = audit_dir.path().join("audit.jsonl");
        set(&mut env, "ESQ_AUDIT__PATH", audit.display().to_string());
        set(&mut env, "ESQ_SERVER__PG_LISTEN", "127.0.0.1:0".into());
        set(&mut env, "ESQ_SERVER__HTTP_LISTEN", "127.0.0.1:0".into());
        set(&mut env, "ESQ_METRICS__LISTEN", "127.0.0.1:0".into());
        let catalog = catalog_dir.path().display().to_string();
        set(&mut env, "ESQ_CATALOG__DIR", catalog);
        let (timeout, value) = super::POLICY_EVAL_TIMEOUT;
        set(&mut env, timeout, value.into());
        if let Some(url) = redis_url {
            set(&mut env, "ESQ_TICKETS__STORE", url);
            // The test Redis fsyncs every write: give a slow disk time (a
            // stopped Redis still fails at once: connection refused).
            set(&mut env, "ESQ_TICKETS__STORE_TIMEOUT", "10s".into());
        }
        if self.k_only_counts {
            let dir = k_only_policies(audit_dir.path());
            set(&mut env, "ESQ_POLICY__DIR", dir.display().to_string());
        }
        if self.upstream.maintenance {
            let key = audit_dir.path().join("signing.key");
            esq::signing::SigningKey::generate()
                .write(&key)
                .expect("a signing key");
            set(&mut env, "ESQ_SIGNING__KEY_FILE", key.display().to_string());
            // No purge at 03:00 UTC under a test's feet; a test that wants
            // the schedule sets it.
            set(&mut env, "ESQ_LIFECYCLE__PURGE_SCHEDULE", "off".into());
        }
        for (k, v) in self.env {
            set(&mut env, &k, v);
        }
        if self.upstream.maintenance {
            migrate(&env).await;
        }
        Esq {
            upstream,
            redis,
            env,
            running: None,
            database,
            catalog_files,
            catalog_dir,
            audit_dir,
        }
    }
}

/// `esq migrate`, in this process, with the fixture's configuration.
async fn migrate(env: &[(String, String)]) {
    let config = esq::config::Config::load_with_env(&super::shipped_config(), env.to_vec())
        .expect("test config loads");
    let mut maintenance = esq::lifecycle::Maintenance::connect(&config)
        .await
        .expect("the maintenance role connects");
    esq::lifecycle::migrate::migrate(&mut maintenance.client)
        .await
        .expect("schema esq migrates");
}

/// The shipped policies without the FOIA privacy obligation, in `under`.
fn k_only_policies(under: &std::path::Path) -> PathBuf {
    let dir = under.join("k-only-policies");
    std::fs::create_dir_all(&dir).expect("a policy directory");
    for entry in std::fs::read_dir(super::repo().join("policies")).expect("policies/") {
        let path = entry.expect("a policy file").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".rego") || name.ends_with("_test.rego") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).expect("a policy");
        if name == "foia.rego" {
            let imposed = "\t\"privacy\": privacy,\n";
            assert!(
                text.contains(imposed),
                "foia.rego no longer imposes privacy this way"
            );
            text = text.replace(imposed, "");
        }
        std::fs::write(dir.join(name), text).expect("writing a policy");
    }
    dir
}

/// A prepared esq fixture; see the module docs. Dropping it stops
/// everything it started.
pub struct Esq {
    upstream: Option<Upstream>,
    redis: Option<TestRedis>,
    env: Vec<(String, String)>,
    running: Option<Running>,
    database: String,
    catalog_files: Vec<PathBuf>,
    catalog_dir: tempfile::TempDir,
    /// Holds the audit log (`audit.jsonl` and rotated files), and the
    /// audit logs and output of binaries this fixture spawns.
    audit_dir: tempfile::TempDir,
}

impl Esq {
    pub fn builder() -> EsqBuilder {
        EsqBuilder {
            upstream: UpstreamOptions::default(),
            source: Source::Sample,
            upstream_ca: None,
            redis: None,
            env: Vec::new(),
            k_only_counts: false,
        }
    }

    /// (Re)starts esq in this process with the fixture's configuration.
    pub async fn restart(&mut self) {
        self.stop().await;
        esq::tls::install_crypto_provider();
        let config = esq::config::Config::load_with_env(&super::shipped_config(), self.env.clone())
            .expect("test config loads");
        let app = Arc::new(esq::app::App::from_config(config).expect("app loads"));
        self.running = Some(esq::serve::start(app).await.expect("esq starts"));
    }

    /// Stops the in-process esq (if it runs): answers in flight finish.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("esq is running in-process")
    }

    pub fn app(&self) -> &esq::app::App {
        &self.running().app
    }

    /// The sample database (`None` for [`EsqBuilder::upstream_url`] and
    /// [`EsqBuilder::upstream_of`]).
    pub fn upstream(&self) -> &Upstream {
        self.upstream
            .as_ref()
            .expect("this esq has a sample database of its own")
    }

    /// The PostgreSQL behind esq: a superuser session is `pg().connect()`.
    pub fn pg(&self) -> &TestPostgres {
        &self.upstream().pg
    }

    /// esq's service role.
    pub fn role(&self) -> &str {
        &self.upstream().role
    }

    /// The Redis of [`EsqBuilder::private_redis`] (or a private one of
    /// [`EsqBuilder::redis`]).
    pub fn redis(&self) -> &TestRedis {
        self.redis
            .as_ref()
            .expect("this esq has a Redis of its own")
    }

    pub fn redis_mut(&mut self) -> &mut TestRedis {
        self.redis
            .as_mut()
            .expect("this esq has a Redis of its own")
    }

    /// The `ESQ_…` overrides esq runs with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Sets an override for the next [`Esq::restart`] or binary.
    /// The System Security Plan (JSON) of this fixture's configuration
    /// (its database, roles, catalog and audit log) plus `env`, observed
    /// in this process.
    pub async fn plan(&self, env: &[(&str, String)]) -> serde_json::Value {
        let mut vars = self.env.clone();
        for (name, value) in env {
            set(&mut vars, name, value.clone());
        }
        let config = esq::config::Config::load_with_env(&super::shipped_config(), vars)
            .expect("test config loads");
        let app = esq::app::App::without_audit_log(config).expect("app loads");
        let (ssp, _) =
            esq::compliance::system_security_plan(&app, &esq::compliance::SspInputs::default())
                .await;
        serde_json::to_value(&ssp).expect("the plan is JSON")
    }

    pub fn set_env(&mut self, name: &str, value: impl Into<String>) {
        set(&mut self.env, name, value.into());
    }

    /// Issues a ticket for `user` as the HTTP door would, in-process.
    pub async fn ticket(&self, user: &str, request: serde_json::Value) -> String {
        let principal = self
            .app()
            .bundle()
            .users
            .principal(user)
            .expect("known user")
            .clone();
        let request: TicketRequest = serde_json::from_value(request).expect("ticket request");
        self.app()
            .bundle()
            .tickets
            .issue(&principal, &request, chrono::Utc::now())
            .await
            .unwrap_or_else(|e| panic!("ticket for {user}: {e}"))
            .ticket
    }

    /// The FOIA ticket of the seed story (the journalist's, 5 minutes).
    pub async fn foia_ticket(&self) -> String {
        self.ticket("journalist", super::tickets::foia_request("5m"))
            .await
    }

    /// Revokes `ticket` in the ticket store, as an admin would.
    pub async fn revoke(&self, ticket: &str) {
        let id = esq::tickets::TicketId::parse(ticket).expect("a well-formed ticket");
        let revoked = self
            .app()
            .ticket_store
            .revoke(&id.hash(), chrono::Utc::now())
            .await
            .expect("the ticket store answers");
        assert!(revoked, "the ticket was live before its revocation");
    }

    /// The audit log's file 0.
    pub fn audit_path(&self) -> PathBuf {
        self.audit_dir.path().join("audit.jsonl")
    }

    /// A directory that lives as long as the fixture (audit logs and
    /// output of the binaries it spawns).
    pub fn dir(&self) -> &std::path::Path {
        self.audit_dir.path()
    }

    /// Every record of the audit log so far (all files, in order).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        for (_, path) in esq::audit::files::existing(&self.audit_path()).expect("audit files") {
            let text = std::fs::read_to_string(&path).expect("an audit file");
            records.extend(
                text.lines()
                    .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON")),
            );
        }
        records
    }

    /// The catalog directory esq reads (a copy of the datasets it serves).
    pub fn catalog_path(&self) -> PathBuf {
        self.catalog_dir.path().to_path_buf()
    }
}

impl Doors for Esq {
    fn pg_addr(&self) -> std::net::SocketAddr {
        self.running().pg_addr
    }

    fn http_addr(&self) -> std::net::SocketAddr {
        self.running().http_addr
    }

    fn metrics_addr(&self) -> std::net::SocketAddr {
        self.running()
            .metrics_addr
            .expect("metrics have a listener of their own")
    }

    fn database(&self) -> &str {
        &self.database
    }
}

/// Sets `name` to `value`, replacing an earlier value.
fn set(env: &mut Vec<(String, String)>, name: &str, value: String) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_string(), value));
}
