//! The `esq` command as a user runs it: `check` passes on what ships and
//! fails with file:line messages on broken inputs; `ticket issue` prints a
//! ticket or the denial with reasons and alternatives; `token`,
//! `sample-data` and `passwd` behave.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::PathBuf;

use common::process::{esq_command, Run};

/// A copy of the shipped config, catalog and policies to break.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["config", "catalog", "policies"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(common::repo().join(sub)).expect("read dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name");
            std::fs::copy(&path, dir.path().join(sub).join(name)).expect("copy");
        }
    }
    dir
}

fn edit(path: PathBuf, from: &str, to: &str) {
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn check_passes_on_what_ships() {
    let run = Run::esq(&["check"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("2 datasets (burial_2024, staff_notes)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("5 policies"), "{}", run.stdout);
    let tests_line = run
        .stdout
        .lines()
        .find(|l| l.contains("tests passed"))
        .expect("tests line");
    let counts: Vec<&str> = tests_line.split_whitespace().collect();
    let of = counts.iter().position(|w| *w == "of").expect("N of M");
    assert_eq!(counts[of - 1], counts[of + 1], "{tests_line}");
}

#[test]
fn check_names_file_and_line_of_broken_yaml() {
    let ws = workspace();
    edit(
        ws.path().join("catalog/burial_2024.yaml"),
        "  - { name: state }",
        "  - { name: state ",
    );
    let run = Run::esq_in(ws.path(), &["check"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("burial_2024.yaml:"), "{}", run.stderr);
    let line: u32 = run
        .stderr
        .split("burial_2024.yaml:")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("a line number after the file name");
    assert!((18..=23).contains(&line), "{}", run.stderr);
}

#[test]
fn check_names_unknown_keys_in_catalog_and_config() {
    let ws = workspace();
    edit(
        ws.path().join("catalog/burial_2024.yaml"),
        "owner: NCA",
        "ownr: NCA",
    );
    let run = Run::esq_in(ws.path(), &["check"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("burial_2024.yaml:4:"), "{}", run.stderr);
    assert!(run.stderr.contains("ownr"), "{}", run.stderr);

    let ws = workspace();
    edit(
        ws.path().join("config/esq.toml"),
        "default_ttl = \"5m\"",
        "default_tll = \"5m\"",
    );
    let run = Run::esq_in(ws.path(), &["check"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("config/esq.toml"), "{}", run.stderr);
    assert!(run.stderr.contains("default_tll"), "{}", run.stderr);
    assert!(run.stderr.contains("line "), "{}", run.stderr);
}

#[test]
fn check_names_the_environment_variable_of_a_bad_override() {
    let run = Run::of(
        esq_command()
            .arg("check")
            .env("ESQ_TICKETS__MAX_TTL", "forever"),
    );
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains("ESQ_TICKETS__MAX_TTL"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_names_file_and_line_of_a_rego_syntax_error() {
    let ws = workspace();
    edit(
        ws.path().join("policies/foia.rego"),
        "default applies := false",
        "default applies := ",
    );
    let run = Run::esq_in(ws.path(), &["check"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("foia.rego:"), "{}", run.stderr);
    let after = run.stderr.split("foia.rego:").nth(1).unwrap_or("");
    assert!(
        after
            .split(':')
            .next()
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        "a line number follows the file: {}",
        run.stderr
    );
}

#[test]
fn check_fails_on_a_failing_rego_test() {
    let ws = workspace();
    // Weaken FOIA: the tests must notice.
    edit(
        ws.path().join("policies/foia.rego"),
        "policy_id := \"P-FOIA-001\"",
        "policy_id := \"P-FOIA-999\"",
    );
    let run = Run::esq_in(ws.path(), &["check"]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("foia_test.rego"), "{}", run.stderr);
    assert!(
        run.stderr.contains("esq.policies.foia_test.test_"),
        "{}",
        run.stderr
    );
}

#[test]
fn ticket_issue_prints_the_ticket_and_scope() {
    let run = Run::esq(&[
        "ticket",
        "issue",
        "--user",
        "ca_official",
        "--dataset",
        "burial_2024",
        "--fields",
        "state,id",
        "--aggregate",
        "count",
        "--purpose",
        "state report",
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("ticket    T-"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("differentially private: epsilon 0.5 an answer, 4 per 86400s"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("rows      state = \"CA\""),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("P-ABAC-STATE-001"), "{}", run.stdout);
}

#[test]
fn ticket_issue_json_has_the_http_shape() {
    let run = Run::esq(&[
        "ticket",
        "issue",
        "--user",
        "journalist",
        "--dataset",
        "burial_2024",
        "--fields",
        "state,id",
        "--aggregate",
        "count",
        "--purpose",
        "FOIA",
        "--ttl",
        "10m",
        "--json",
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let body: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(body["ticket"].as_str().is_some_and(|t| t.starts_with("T-")));
    assert_eq!(body["expires"], "10m");
    assert!(body["expires_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(body["scope"]["aggregate"], "count");
    assert_eq!(body["scope"]["min_group_size"], 11);
}

#[test]
fn ticket_issue_prints_denials_with_reasons_and_alternatives() {
    let run = Run::esq(&[
        "ticket",
        "issue",
        "--user",
        "journalist",
        "--dataset",
        "burial_2024",
        "--fields",
        "state,ssn",
        "--aggregate",
        "count",
        "--purpose",
        "FOIA",
    ]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr.contains("denied by P-FOIA-001"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("reason:"), "{}", run.stderr);
    assert!(run.stderr.contains("alternative:"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "no ticket on denial");
}

#[test]
fn ticket_issue_rejects_bad_input_clearly() {
    let run = Run::esq(&[
        "ticket",
        "issue",
        "--user",
        "mallory",
        "--dataset",
        "burial_2024",
        "--fields",
        "state",
        "--purpose",
        "x",
    ]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("no user \"mallory\""), "{}", run.stderr);

    let run = Run::esq(&[
        "ticket",
        "issue",
        "--user",
        "journalist",
        "--dataset",
        "burial_2024",
        "--fields",
        "state",
        "--aggregate",
        "count",
        "--purpose",
        "x",
        "--ttl",
        "3h",
    ]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains("ttl: 3h exceeds the maximum of 1h"),
        "{}",
        run.stderr
    );
}

#[test]
fn token_prints_a_token_and_its_hash() {
    let run = Run::esq(&["token"]);
    assert_eq!(run.status, 0);
    let token = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:  "))
        .expect("token");
    let hash = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .expect("hash");
    assert_eq!(esq::auth::token::hash_hex(token), hash);
}

#[test]
fn sample_data_is_deterministic() {
    let a = Run::esq(&["sample-data", "--rows", "500"]);
    let b = Run::esq(&["sample-data", "--rows", "500"]);
    assert_eq!(a.status, 0);
    assert_eq!(a.stdout, b.stdout);
    assert!(
        a.stdout.contains("CREATE TABLE public.burial_2024"),
        "{}",
        &a.stdout[..200.min(a.stdout.len())]
    );
    let c = Run::esq(&["sample-data", "--rows", "500", "--seed", "7"]);
    assert_ne!(a.stdout, c.stdout);
}

#[test]
fn passwd_refuses_an_empty_password() {
    let mut child = esq_command()
        .args(["passwd", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

const FOIA: &[&str] = &[
    "--user",
    "journalist",
    "--dataset",
    "burial_2024",
    "--fields",
    "state,id",
    "--aggregate",
    "count",
    "--purpose",
    "FOIA",
];

#[test]
fn explain_shows_the_rewrite_of_an_allowed_statement() {
    let mut args = vec![
        "explain",
        "SELECT state, count(*) FROM burial_2024 GROUP BY state",
    ];
    args.extend_from_slice(FOIA);
    let run = Run::esq(&args);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("decision  allow"), "{}", run.stdout);
    // FOIA answers are private (issue 14): contribution bounding instead of
    // HAVING count(*) >= k, and the release plan.
    assert!(
        run.stdout.contains(r#""esq_rank" <= 1"#) && !run.stdout.contains("HAVING"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("private   epsilon 0.5 per answer, budget 4 per 86400 s"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("FROM (SELECT \"id\", \"state\" FROM \"public\".\"burial_2024\""),
        "{}",
        run.stdout
    );
}

#[test]
fn explain_shows_a_denial_with_detail_and_hint() {
    let mut args = vec!["explain", "SELECT ssn FROM burial_2024"];
    args.extend_from_slice(FOIA);
    let run = Run::esq(&args);
    assert_eq!(run.status, 1);
    assert!(
        run.stdout.starts_with("decision  deny (42501)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("hint      "), "{}", run.stdout);
    assert!(
        run.stdout.contains("policy    P-FOIA-001"),
        "{}",
        run.stdout
    );
}

#[test]
fn explain_reads_a_scope_file_and_decides_without_a_ticket() {
    let mut args = vec!["ticket", "issue", "--json"];
    args.extend_from_slice(FOIA);
    let issued = Run::esq(&args);
    assert_eq!(issued.status, 0, "{}", issued.stderr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ticket.json");
    std::fs::write(&file, &issued.stdout).unwrap();
    let file = file.to_string_lossy().to_string();
    let run = Run::esq(&[
        "explain",
        "--scope-file",
        &file,
        "SELECT state FROM burial_2024",
        "--json",
    ]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let decision: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        decision["Allow"]["sql"]
            .as_str()
            .unwrap()
            .contains("count(*) AS \"count\""),
        "{decision}"
    );

    let run = Run::esq(&["explain", "--no-ticket", "SELECT version()"]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    let run = Run::esq(&["explain", "--no-ticket", "SELECT state FROM burial_2024"]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.contains("no ticket"), "{}", run.stdout);

    std::fs::write(dir.path().join("bad.json"), "{\"scope\": 1}").unwrap();
    let bad = dir.path().join("bad.json").to_string_lossy().to_string();
    let run = Run::esq(&["explain", "--scope-file", &bad, "SELECT 1"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("not a scope"), "{}", run.stderr);
}

#[test]
fn a_malformed_where_is_refused_by_both_commands() {
    let mut args = vec!["ticket", "issue", "--where", "stateCA"];
    args.extend_from_slice(FOIA);
    let run = Run::esq(&args);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("write FIELD=VALUE"), "{}", run.stderr);

    let mut args = vec!["explain", "SELECT 1", "--where", "stateCA"];
    args.extend_from_slice(FOIA);
    let run = Run::esq(&args);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("write FIELD=VALUE"), "{}", run.stderr);
}
