//! A throwaway PostgreSQL for integration tests.
//!
//! [`TestPostgres::start`] gives every caller its own database:
//!
//! * If `ESQ_TEST_DATABASE_URL` is set (e.g.
//!   `postgres://postgres@127.0.0.1:5432/postgres`), no server is started: a
//!   fresh database `esq_test_<pid>_<n>` is created on that server and dropped
//!   again (best effort) when the handle is dropped.
//! * Otherwise a private cluster is created with `initdb` in a temporary
//!   directory under `/tmp` and started with `pg_ctl` on a free
//!   127.0.0.1 port. Dropping the handle runs `pg_ctl stop -m immediate` and
//!   removes the directory. `initdb` refuses to run as root, so when the
//!   effective uid is 0 both commands run via `runuser -u postgres --`.
//!
//! The server log is `<tmpdir>/postgres.log`; on start failure the panic
//! message includes its tail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::process::Command;

const MISSING_BINARIES: &str =
    "PostgreSQL server binaries not found: apt-get install -y postgresql";
const ENV_URL: &str = "ESQ_TEST_DATABASE_URL";
const RUN_AS: &str = "postgres";

static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// A running, private PostgreSQL database; see the module docs.
pub struct TestPostgres {
    url: String,
    port: u16,
    kind: Kind,
}

enum Kind {
    Cluster {
        bindir: PathBuf,
        data: PathBuf,
        as_postgres: bool,
        /// The server options (`pg_ctl -o`), for starting it again.
        opts: String,
        /// Removed (recursively) when dropped, after the server is stopped.
        dir: tempfile::TempDir,
    },
    External {
        /// URL of the server's original database (used to drop ours).
        admin_url: String,
        dbname: String,
        /// Roles made for this database, dropped with it (roles are
        /// cluster-wide: they would pile up on a shared server).
        roles: std::sync::Mutex<Vec<String>>,
    },
}

impl TestPostgres {
    /// Starts a new cluster (or creates a new database on
    /// `ESQ_TEST_DATABASE_URL`). Panics with a diagnostic on failure.
    pub async fn start() -> TestPostgres {
        match std::env::var(ENV_URL) {
            Ok(url) if !url.trim().is_empty() => Self::start_external(url.trim()).await,
            _ => Self::start_cluster().await,
        }
    }

    /// Starts a private cluster even when `ESQ_TEST_DATABASE_URL` is set, for
    /// tests that change server configuration (such as `pg_hba.conf`).
    pub async fn start_private() -> TestPostgres {
        Self::start_cluster().await
    }

    /// Makes TCP logins of `role` use SCRAM-SHA-256 (private clusters only):
    /// prepends a `pg_hba.conf` line and reloads the configuration.
    pub async fn require_scram_for(&self, role: &str) {
        let Kind::Cluster { data, .. } = &self.kind else {
            panic!("require_scram_for needs a private cluster (TestPostgres::start_private)");
        };
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba)
            .unwrap_or_else(|e| panic!("reading {}: {e}", hba.display()));
        let line = format!("host all {role} 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&hba, format!("{line}{old}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", hba.display()));
        self.reload().await;
    }

    /// Turns on TLS with `cert`/`key` (private clusters only) and lets
    /// `role` in over TCP only with TLS (`hostssl`; plain `host` rejected).
    pub async fn require_tls_for(&self, role: &str, cert: &Path, key: &Path) {
        let Kind::Cluster {
            data, as_postgres, ..
        } = &self.kind
        else {
            panic!("require_tls_for needs a private cluster (TestPostgres::start_private)");
        };
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = data.join(name);
            std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            let mut chmod = std::process::Command::new("chmod");
            chmod.arg("600").arg(&to);
            let _ = chmod.status();
            if *as_postgres {
                let _ = std::process::Command::new("chown")
                    .arg(RUN_AS)
                    .arg(&to)
                    .status();
            }
        }
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba)
            .unwrap_or_else(|e| panic!("reading {}: {e}", hba.display()));
        let lines =
            format!("hostssl all {role} 127.0.0.1/32 trust\nhost all {role} 127.0.0.1/32 reject\n");
        std::fs::write(&hba, format!("{lines}{old}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", hba.display()));
        let client = self.connect().await;
        // One statement per call: ALTER SYSTEM refuses an implicit transaction.
        for setting in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
        ] {
            client
                .batch_execute(setting)
                .await
                .unwrap_or_else(|e| panic!("enabling ssl: {}", describe(&e)));
        }
        self.reload().await;
    }

    /// Drops `role` (made by the test for this database) when this handle
    /// drops; a private cluster goes away whole anyway.
    pub fn drop_role_with_database(&self, role: &str) {
        if let Kind::External { roles, .. } = &self.kind {
            roles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(role.to_string());
        }
    }

    /// Reloads the configuration and waits until new connections use it:
    /// the postmaster reloads asynchronously, and each new backend inherits
    /// its last load time.
    async fn reload(&self) {
        let before = self.conf_load_time().await;
        self.connect()
            .await
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap_or_else(|e| panic!("pg_reload_conf: {}", describe(&e)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.conf_load_time().await == before {
            assert!(Instant::now() < deadline, "PostgreSQL did not reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When a new connection's backend last loaded the configuration.
    async fn conf_load_time(&self) -> String {
        self.connect()
            .await
            .query_one("SELECT pg_conf_load_time()::text", &[])
            .await
            .unwrap_or_else(|e| panic!("pg_conf_load_time: {}", describe(&e)))
            .get(0)
    }

    /// Restarts a private cluster (`pg_ctl restart -m fast`): every
    /// connection to it is cut.
    pub async fn restart(&self) {
        self.pg_ctl("restart", &["-m", "fast"]).await;
    }

    /// Stops a private cluster (`pg_ctl stop -m fast`): the database is
    /// down until [`TestPostgres::start_again`].
    pub async fn stop(&self) {
        self.pg_ctl("stop", &["-m", "fast"]).await;
    }

    /// Starts a stopped private cluster again, on the same port.
    pub async fn start_again(&self) {
        let Kind::Cluster { opts, .. } = &self.kind else {
            panic!("start_again needs a private cluster (TestPostgres::start_private)");
        };
        self.pg_ctl("start", &["-o", opts]).await;
    }

    /// `pg_ctl <action>` on a private cluster, waiting for it to finish.
    async fn pg_ctl(&self, action: &str, args: &[&str]) {
        let Kind::Cluster {
            bindir,
            data,
            as_postgres,
            dir,
            ..
        } = &self.kind
        else {
            panic!("pg_ctl {action} needs a private cluster (TestPostgres::start_private)");
        };
        run(pg_command(bindir, "pg_ctl", *as_postgres, dir.path())
            .arg("-D")
            .arg(data)
            // A log file, or the server would hold our output pipe open.
            .arg("-l")
            .arg(dir.path().join("postgres.log"))
            .args(args)
            .args(["-w", "-t", "60", action]))
        .await
        .unwrap_or_else(|e| panic!("pg_ctl {action}: {e}"));
    }

    /// `postgres://user@127.0.0.1:port/dbname`, usable by tokio-postgres
    /// (`NoTls`) and by `psql`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's temporary directory (`None` for `ESQ_TEST_DATABASE_URL`).
    pub fn dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Cluster { dir, .. } => Some(dir.path()),
            Kind::External { .. } => None,
        }
    }

    /// Server log of a private cluster (`None` for `ESQ_TEST_DATABASE_URL`).
    pub fn log_path(&self) -> Option<PathBuf> {
        self.dir().map(|d| d.join("postgres.log"))
    }

    /// Connects with tokio-postgres (`NoTls`), driving the connection on a
    /// spawned task.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    async fn start_external(base: &str) -> TestPostgres {
        let dbname = format!(
            "esq_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let config: tokio_postgres::Config = base
            .parse()
            .unwrap_or_else(|e| panic!("{ENV_URL}={base:?} is not a valid URL: {e}"));
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let url = with_dbname(base, &dbname);
        let admin = connect(base).await;
        // One statement per call: a multi-statement simple query is an
        // implicit transaction, and CREATE/DROP DATABASE refuse to run in one.
        for stmt in [
            format!("DROP DATABASE IF EXISTS {dbname}"),
            format!("CREATE DATABASE {dbname}"),
        ] {
            admin
                .batch_execute(&stmt)
                .await
                .unwrap_or_else(|e| panic!("{stmt} via {ENV_URL}={base}: {}", describe(&e)));
        }
        TestPostgres {
            url,
            port,
            kind: Kind::External {
                admin_url: base.to_string(),
                dbname,
                roles: Default::default(),
            },
        }
    }

    async fn start_cluster() -> TestPostgres {
        let bindir = find_bindir();
        let as_postgres = is_root().await;
        let dir = tempfile::Builder::new()
            .prefix("esq-pg-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("creating temp dir under /tmp: {e}"));
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.path().display()));
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&data)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", data.display()));
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        }
        if as_postgres {
            let out = Command::new("chown")
                .arg(format!("{RUN_AS}:{RUN_AS}"))
                .arg(&data)
                .arg(&log)
                .output()
                .await
                .unwrap_or_else(|e| panic!("running chown: {e}"));
            assert!(
                out.status.success(),
                "chown {RUN_AS} {} failed (does user {RUN_AS} exist?): {}",
                data.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let initdb = run(pg_command(&bindir, "initdb", as_postgres, dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .arg("--locale=C"))
        .await;
        if let Err(msg) = initdb {
            panic!("initdb failed: {msg}");
        }

        // A port picked by binding :0 can be taken by someone else before the
        // postmaster binds it; retry a few times on a fresh port.
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = super::free_port();
            let opts = format!(
                "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off",
                data.display()
            );
            let started = run(pg_command(&bindir, "pg_ctl", as_postgres, dir.path())
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(&opts)
                .args(["-w", "-t", "60", "start"]))
            .await;
            match started {
                Ok(()) => {
                    return TestPostgres {
                        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                        port,
                        kind: Kind::Cluster {
                            bindir,
                            data,
                            as_postgres,
                            opts,
                            dir,
                        },
                    };
                }
                Err(msg) => {
                    let tail = log_tail(&log, 40);
                    last_err = format!("{msg}\n--- {} (tail) ---\n{tail}", log.display());
                    if !tail.contains("could not bind") && !tail.contains("already in use") {
                        break;
                    }
                }
            }
        }
        panic!("pg_ctl start failed: {last_err}");
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Cluster {
                bindir,
                data,
                as_postgres,
                dir,
                ..
            } => {
                let mut cmd = if *as_postgres {
                    let mut c = std::process::Command::new("runuser");
                    c.args(["-u", RUN_AS, "--"]).arg(bindir.join("pg_ctl"));
                    c
                } else {
                    std::process::Command::new(bindir.join("pg_ctl"))
                };
                let _ = cmd
                    .arg("-D")
                    .arg(data)
                    .args(["-m", "immediate", "-w", "stop"])
                    .current_dir(dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                // `dir` (a TempDir) is removed when the fields drop, right after this.
            }
            Kind::External {
                admin_url,
                dbname,
                roles,
            } => {
                let admin_url = admin_url.clone();
                let dbname = dbname.clone();
                let roles = std::mem::take(&mut *roles.lock().unwrap_or_else(|e| e.into_inner()));
                // We may be inside a runtime (can't block_on here): use a
                // fresh thread with its own small runtime. Best effort.
                let handle = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        let fut = async {
                            let (client, conn) =
                                tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                                    .await
                                    .ok()?;
                            tokio::spawn(conn);
                            let forced = format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)");
                            if client.batch_execute(&forced).await.is_err() {
                                // Pre-13 servers have no FORCE.
                                let plain = format!("DROP DATABASE IF EXISTS {dbname}");
                                client.batch_execute(&plain).await.ok()?;
                            }
                            // Their privileges went with the database.
                            for role in roles {
                                let drop = format!("DROP ROLE IF EXISTS {role}");
                                client.batch_execute(&drop).await.ok()?;
                            }
                            Some(())
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(30), fut).await;
                    });
                });
                let _ = handle.join();
            }
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {}", describe(&e)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Replaces the database name (path) of a `postgres://` URL.
fn with_dbname(url: &str, dbname: &str) -> String {
    let (main, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let Some(scheme_end) = main.find("://") else {
        panic!("{ENV_URL} must be a postgres:// URL, got {url:?}");
    };
    let authority_start = scheme_end + 3;
    let base = match main[authority_start..].find('/') {
        Some(i) => &main[..authority_start + i],
        None => main,
    };
    format!("{base}/{dbname}{query}")
}

async fn is_root() -> bool {
    match Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

/// `pg_config --bindir` if it has `initdb`, else the highest
/// `/usr/lib/postgresql/*/bin`, else the directory of `initdb` on `PATH`.
fn find_bindir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u64> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_server(&dir) {
                return dir;
            }
        }
    }
    panic!("{MISSING_BINARIES}");
}

fn pg_command(bindir: &Path, tool: &str, as_postgres: bool, cwd: &Path) -> Command {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", RUN_AS, "--"]).arg(bindir.join(tool));
        c
    } else {
        Command::new(bindir.join(tool))
    };
    // The postgres user may not be able to enter the caller's cwd (e.g. /root).
    cmd.current_dir(cwd)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(cmd: &mut Command) -> Result<(), String> {
    let desc = format!("{:?}", cmd.as_std());
    let out = cmd.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{MISSING_BINARIES} ({desc}: {e})")
        } else {
            format!("{desc}: {e}")
        }
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{desc} exited with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// tokio-postgres' `Display` for server errors is just "db error".
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}
