//! Running esq as an operator does: `/metrics` on a listener of its own
//! (and behind a token when one is set), the warnings `esq serve` gives at
//! start for demo credentials, plaintext doors and an upstream that does
//! not answer, logs without colour codes in a file, and commands that end
//! quietly when their reader goes away (`esq check | head -2`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use common::esq::Esq;
use common::process::{esq_command, Run};
use common::Doors;

/// An upstream URL where nothing listens: serving and `/metrics` need no
/// database.
fn dead_upstream() -> String {
    format!(
        "postgres://esq_service@127.0.0.1:{}/esq_demo",
        common::free_port()
    )
}

async fn get(url: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = common::http::client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, response.text().await.expect("a body"))
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_not_on_the_api_port() {
    let mut esq = Esq::builder().upstream_url(&dead_upstream()).start().await;
    assert_ne!(esq.metrics_addr(), esq.http_addr());

    let (status, text) = get(&esq.metrics_url(), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("esq_audit_enabled 1"), "{text}");

    // The API's port knows no such endpoint, whatever the method.
    let (status, text) = get(&esq.url("/metrics"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(!text.contains("esq_"), "{text}");
    let body: Value = serde_json::from_str(&text).expect("a JSON error");
    assert_eq!(body["error"], "not found");
    let post = common::http::client()
        .post(esq.url("/metrics"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(post.status(), StatusCode::NOT_FOUND);

    // The metrics listener serves nothing else.
    let elsewhere = format!("http://{}/healthz", esq.metrics_addr());
    assert_eq!(get(&elsewhere, None).await.0, StatusCode::NOT_FOUND);
    esq.stop().await;
}

#[tokio::test]
async fn a_metrics_token_is_required_when_one_is_set() {
    let dir = tempfile::tempdir().expect("a directory");
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "scrape-me\n").expect("a token file");
    let mut esq = Esq::builder()
        .upstream_url(&dead_upstream())
        .env("ESQ_METRICS__TOKEN_FILE", token_file.display().to_string())
        .start()
        .await;

    let (status, text) = get(&esq.metrics_url(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(!text.contains("esq_"), "{text}");
    let (status, text) = get(&esq.metrics_url(), Some("scrape-you")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    // An API token is not the scrape token.
    let api = common::http::token("admin");
    assert_eq!(
        get(&esq.metrics_url(), Some(&api)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, text) = get(&esq.metrics_url(), Some("scrape-me")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("esq_audit_enabled"), "{text}");

    let (status, _) = get(&esq.url("/metrics"), Some("scrape-me")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the API port still has none");
    esq.stop().await;
}

#[tokio::test]
async fn metrics_on_the_http_door_are_behind_the_token() {
    let dir = tempfile::tempdir().expect("a directory");
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "scrape-me").expect("a token file");
    let mut esq = Esq::builder()
        .upstream_url(&dead_upstream())
        .env("ESQ_METRICS__LISTEN", "http")
        .env("ESQ_METRICS__TOKEN_FILE", token_file.display().to_string())
        .start()
        .await;
    assert_eq!(esq.running().metrics_addr, None, "no listener of its own");

    let (status, text) = get(&esq.url("/metrics"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(!text.contains("esq_"), "{text}");
    let (status, text) = get(&esq.url("/metrics"), Some("scrape-me")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("esq_audit_enabled"), "{text}");
    esq.stop().await;
}

#[test]
fn metrics_on_the_http_door_without_a_token_do_not_start() {
    let run = Run::of(
        esq_command()
            .args(["check"])
            .env("ESQ_METRICS__LISTEN", "http")
            .stdin(Stdio::null()),
    );
    assert_eq!(run.status, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("metrics.token_file"), "{}", run.stderr);
}

/// `esq serve` on the shipped configuration, on free ports, with `env`;
/// stderr (the log) to `log`.
fn serve(dir: &Path, env: &[(&str, String)], log: &Path) -> Child {
    let port = || format!("127.0.0.1:{}", common::free_port());
    esq_command()
        .arg("--config")
        .arg(common::shipped_config())
        .arg("serve")
        .env("ESQ_SERVER__PG_LISTEN", port())
        .env("ESQ_SERVER__HTTP_LISTEN", port())
        .env("ESQ_METRICS__LISTEN", port())
        .env("ESQ_AUDIT__PATH", dir.join("audit.jsonl"))
        .env("ESQ_UPSTREAM__URL", dead_upstream())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"))
        .spawn()
        .expect("esq serve starts")
}

/// The log once it holds `line` (the upstream check comes last); fails
/// when esq exits first or a minute passes.
fn log_once_it_says(child: &mut Child, log: &Path, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(line) {
            return text;
        }
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "esq serve exited:\n{text}"
        );
        assert!(Instant::now() < deadline, "never logged {line:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const UPSTREAM_DOWN: &str = "THE UPSTREAM DATABASE DOES NOT ANSWER";

#[test]
fn serve_warns_of_demo_credentials_plaintext_doors_and_a_dead_upstream() {
    let dir = tempfile::tempdir().expect("a directory");
    let log = dir.path().join("esq.log");
    let mut child = serve(dir.path(), &[], &log);
    let text = log_once_it_says(&mut child, &log, UPSTREAM_DOWN);
    let _ = child.kill();
    let _ = child.wait();
    let warning = |start: &str| {
        text.lines()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no {start:?} warning:\n{text}"))
            .to_string()
    };
    for start in ["DEMO CREDENTIALS IN USE", "PLAINTEXT DOORS", UPSTREAM_DOWN] {
        assert!(warning(start).contains("WARN"), "{}", warning(start));
    }
    assert!(warning("DEMO CREDENTIALS").contains("journalist"), "{text}");
    // stderr is a file here: no colour codes in it.
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{text}"
    );
}

#[test]
fn with_tls_required_serve_does_not_warn_of_plaintext() {
    let dir = tempfile::tempdir().expect("a directory");
    let certs = esq::tls::make_dev_certs(&dir.path().join("certs")).expect("dev certificates");
    let log = dir.path().join("esq.log");
    let tls = [
        ("ESQ_TLS__CERT", certs.server_cert.display().to_string()),
        ("ESQ_TLS__KEY", certs.server_key.display().to_string()),
        ("ESQ_TLS__REQUIRED", "true".to_string()),
    ];
    let mut child = serve(dir.path(), &tls, &log);
    let text = log_once_it_says(&mut child, &log, UPSTREAM_DOWN);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains("PLAINTEXT"), "{text}");
    assert!(!text.contains("TLS IS OPTIONAL"), "{text}");
    assert!(text.contains("DEVELOPMENT TLS CERTIFICATE"), "{text}");
    assert!(text.contains("DEMO CREDENTIALS IN USE"), "{text}");
}

#[test]
fn start_warnings_reach_stderr_when_the_log_filter_hides_them() {
    let dir = tempfile::tempdir().expect("a directory");
    let log = dir.path().join("esq.log");
    let quiet = [("RUST_LOG", "error".to_string())];
    let mut child = serve(dir.path(), &quiet, &log);
    let text = log_once_it_says(&mut child, &log, UPSTREAM_DOWN);
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("WARNING: PLAINTEXT DOORS"), "{text}");
    assert!(text.contains("WARNING: DEMO CREDENTIALS IN USE"), "{text}");
}

/// `esq <args>` with its stdout a pipe whose reader is already gone.
fn with_closed_stdout(args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = esq_command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("esq runs");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn commands_end_quietly_when_their_reader_is_gone() {
    for args in [
        &["check"][..],
        &["token"][..],
        &["sample-data", "--rows", "1000"][..],
        &[
            "explain",
            "--user",
            "journalist",
            "--dataset",
            "burial_2024",
            "--fields",
            "state,id",
            "--aggregate",
            "count",
            "--purpose",
            "FOIA aggregation",
            "SELECT state, count(*) FROM burial_2024 GROUP BY state",
        ][..],
    ] {
        let run = with_closed_stdout(args);
        assert!(
            !run.stderr.contains("panicked") && !run.stderr.contains("Broken pipe"),
            "esq {args:?} on a closed pipe:\n{}",
            run.stderr
        );
        assert!(
            run.status == 141 || run.status == 0,
            "esq {args:?}: exit {} (141: as if ended by SIGPIPE)\n{}",
            run.status,
            run.stderr
        );
    }
}

/// The demo prints every command through `shell_words` (scripts/lib.sh):
/// what it prints, pasted into a shell, must be the same arguments again
/// (quotes kept, JSON bodies and tickets whole).
#[test]
fn the_demo_prints_commands_a_shell_reads_back_unchanged() {
    let args = [
        "curl",
        "-s",
        "--cacert",
        "/tmp/my certs/ca.crt",
        "-H",
        "Authorization: Bearer demo-journalist-token",
        "-d",
        r#"{"dataset":"burial_2024","purpose":"FOIA aggregation","fields":["state","id"]}"#,
        "SET esq.ticket = 'T-gQtnWquKjK7fjKYvd4MAqMmPJUjLIM9c'",
        r#"{"reason":"family's deletion request"}"#,
        "postgresql://u:p@localhost:1/db?sslmode=verify-full&sslrootcert=/x/ca.crt",
        "$HOME `id` \\ \"quoted\" !bang",
        "",
        "two\nlines",
        "plain-word_1.2/x:y,z=@%+",
    ];
    // Prints the line, then (in a fresh shell) the arguments it reads back.
    let script = r#". scripts/lib.sh
line=$(shell_words "$@")
printf '%s' "$line" >"$LINE_FILE"
bash -c "for a in $line; do printf '%s\0' \"\$a\"; done""#;
    let dir = tempfile::tempdir().expect("a directory");
    let line_file = dir.path().join("line");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(args)
        .env("LINE_FILE", &line_file)
        .current_dir(common::repo())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read_back: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_terminator('\0')
        .map(str::to_string)
        .collect();
    let line = std::fs::read_to_string(&line_file).expect("the printed line");
    assert_eq!(read_back, args, "printed: {line}");
    // Words that need no quotes get none (the line stays readable).
    assert!(
        line.starts_with("curl -s --cacert '/tmp/my certs/ca.crt' -H "),
        "{line}"
    );
    assert!(
        line.contains(r#" "SET esq.ticket = 'T-gQtnWquKjK7fjKYvd4MAqMmPJUjLIM9c'" "#),
        "{line}"
    );
}
