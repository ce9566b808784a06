//! The real `esq` binary, for what needs a process of its own: serving
//! ([`Esq::spawn_binary`]: a second replica, or a server to `kill -9`) and
//! one-shot commands as a user runs them ([`esq_command`], [`Run`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::esq::Esq;
use super::Doors;

static NEXT_PROCESS: AtomicU64 = AtomicU64::new(0);

/// `esq` (the binary under test) run from the repository root, with no
/// `ESQ_CONFIG` inherited from the caller's environment.
pub fn esq_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esq"));
    command.current_dir(super::repo()).env_remove("ESQ_CONFIG");
    command
}

/// What one run of a command printed, and how it exited.
pub struct Run {
    /// The exit status (`-1` when ended by a signal).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `command` to its end.
    pub fn of(command: &mut Command) -> Run {
        let out = command.output().expect("esq runs");
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `esq <args>` in `dir`.
    pub fn esq_in(dir: &Path, args: &[&str]) -> Run {
        Run::of(esq_command().current_dir(dir).args(args))
    }

    /// `esq <args>` in the repository root.
    pub fn esq(args: &[&str]) -> Run {
        Run::esq_in(&super::repo(), args)
    }
}

/// `esq serve` in its own process, on free ports; killed when dropped.
pub struct EsqProcess {
    child: Child,
    pg_addr: SocketAddr,
    http_addr: SocketAddr,
    metrics_addr: SocketAddr,
    database: String,
    audit: PathBuf,
    log: PathBuf,
}

impl Esq {
    /// Starts the real binary on this fixture's configuration (its
    /// database, Redis, catalog and overrides) plus `env`, on free ports,
    /// with an audit log of its own; waits until `/readyz` answers 200.
    /// Its stderr (at `RUST_LOG=warn`) goes to [`EsqProcess::log`].
    pub async fn spawn_binary(&self, env: &[(&str, &str)]) -> EsqProcess {
        let n = NEXT_PROCESS.fetch_add(1, Ordering::Relaxed);
        let audit = self.dir().join(format!("binary-{n}.jsonl"));
        let log = self.dir().join(format!("binary-{n}.log"));
        let mut vars: Vec<(String, String)> = self.env().to_vec();
        vars.retain(|(k, _)| {
            !k.starts_with("ESQ_SERVER__") && k != "ESQ_AUDIT__PATH" && k != "ESQ_METRICS__LISTEN"
        });
        vars.push(("ESQ_AUDIT__PATH".into(), audit.display().to_string()));
        for (k, v) in env {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_string(), v.to_string()));
        }
        // A port picked by binding :0 can be taken before esq binds it:
        // a binary that exits before it is ready gets fresh ports.
        let mut last = String::new();
        let given = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse::<SocketAddr>().ok())
        };
        for _ in 0..3 {
            // The caller's addresses when it names them (a sealed
            // configuration covers them), else free ports.
            let pg_addr = given("ESQ_SERVER__PG_LISTEN")
                .unwrap_or_else(|| ([127, 0, 0, 1], super::free_port()).into());
            let http_addr = given("ESQ_SERVER__HTTP_LISTEN")
                .unwrap_or_else(|| ([127, 0, 0, 1], super::free_port()).into());
            let metrics_addr = given("ESQ_METRICS__LISTEN")
                .unwrap_or_else(|| ([127, 0, 0, 1], super::free_port()).into());
            let output = std::fs::File::create(&log).expect("a log file");
            let child = esq_command()
                .arg("--config")
                .arg(super::shipped_config())
                .arg("serve")
                .envs(vars.iter().cloned())
                .env("ESQ_SERVER__PG_LISTEN", pg_addr.to_string())
                .env("ESQ_SERVER__HTTP_LISTEN", http_addr.to_string())
                .env("ESQ_METRICS__LISTEN", metrics_addr.to_string())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(output)
                .spawn()
                .expect("the esq binary starts");
            let mut process = EsqProcess {
                child,
                pg_addr,
                http_addr,
                metrics_addr,
                database: self.database().to_string(),
                audit: audit.clone(),
                log: log.clone(),
            };
            if process.wait_until_ready().await {
                return process;
            }
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("the esq binary did not start:\n{last}");
    }
}

impl EsqProcess {
    /// Polls `/readyz` (a minute at most); `false` if the process exited.
    async fn wait_until_ready(&mut self) -> bool {
        let client = super::http::client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client.get(self.url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                return true;
            }
            if !self.alive() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "the esq binary never became ready:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: nothing is flushed on the way out.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// This process's audit log (file 0); it outlives the process.
    pub fn audit_path(&self) -> &Path {
        &self.audit
    }

    /// What the process wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EsqProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Doors for EsqProcess {
    fn pg_addr(&self) -> SocketAddr {
        self.pg_addr
    }

    fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    fn database(&self) -> &str {
        &self.database
    }
}
