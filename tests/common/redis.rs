//! A throwaway `redis-server` on a free port for tests, with its data in a
//! temporary directory (append-only file, fsync always, so a restart keeps
//! the tickets, as a production Redis with persistence would). Tests that
//! only need some Redis use `ESQ_TEST_REDIS_URL` when it is set; tests that
//! stop and restart Redis always start their own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Some Redis for a test that only needs one: `ESQ_TEST_REDIS_URL` when it
/// is set, else a private server (returned, to keep it running).
pub fn some_redis() -> (String, Option<TestRedis>) {
    match std::env::var("ESQ_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => (url.trim().to_string(), None),
        _ => {
            let server = TestRedis::start();
            (server.url(), Some(server))
        }
    }
}

/// A private `redis-server`; killed when dropped.
pub struct TestRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl TestRedis {
    /// Starts a private redis-server.
    pub fn start() -> TestRedis {
        TestRedis::start_with(&[])
    }

    /// Starts a private redis-server with more arguments.
    pub fn start_with(extra: &[&str]) -> TestRedis {
        let port = free_port();
        let mut redis = TestRedis {
            port,
            dir: tempfile::tempdir().expect("temporary directory"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.launch();
        redis
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: nothing is flushed on the way out).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let binary = which("redis-server").unwrap_or_else(|| {
            panic!("redis-server is not installed: apt-get install -y redis-server")
        });
        let child = Command::new(binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ping(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A three-node Redis Cluster (no replicas) on free ports.
pub struct TestCluster {
    pub nodes: Vec<TestRedis>,
}

impl TestCluster {
    pub fn start() -> TestCluster {
        let nodes: Vec<TestRedis> = (0..3)
            .map(|_| TestRedis::start_with(&["--cluster-enabled", "yes"]))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (Debian: redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        TestCluster { nodes }
    }

    /// `redis+cluster://` naming two of the three nodes as seeds.
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }
}

/// A primary watched by one Redis Sentinel under the service name `esqtest`.
pub struct TestSentinel {
    pub primary: TestRedis,
    pub sentinel: TestRedis,
}

impl TestSentinel {
    pub fn start() -> TestSentinel {
        let primary = TestRedis::start();
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "sentinel monitor esqtest 127.0.0.1 {} 1\nsentinel down-after-milliseconds esqtest 5000\n",
                primary.port
            ),
        )
        .expect("sentinel.conf");
        let port = free_port();
        let child = Command::new(which("redis-server").expect("redis-server"))
            .arg(&config)
            .args([
                "--sentinel",
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ping(port) {
            assert!(
                Instant::now() < deadline,
                "the sentinel did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TestSentinel {
            primary,
            sentinel: TestRedis {
                port,
                dir,
                child: Some(child),
                extra: Vec::new(),
            },
        }
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/esqtest", self.sentinel.port)
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
