//! `esq ssp` and `esq check --profile` as a user runs them on the demo
//! configuration: TLS off fails SC-8 and FedRAMP-Moderate; TLS required
//! (certificates from `esq certs dev`) satisfies SC-8.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::Path;

use common::process::{esq_command, Run};
use serde_json::Value;

/// `esq <args>` in the repository root with more environment variables.
fn esq(args: &[&str], env: &[(&str, String)]) -> Run {
    Run::of(esq_command().args(args).envs(env.iter().cloned()))
}

fn ssp(dir: &Path, env: &[(&str, String)]) -> Value {
    let out = dir.join("SSP.json");
    let run = esq(&["ssp", "--out", out.to_str().unwrap()], env);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("controls ("), "{}", run.stderr);
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn control<'a>(ssp: &'a Value, id: &str) -> &'a Value {
    ssp["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the SSP"))
}

/// Control ids named as unmet on stderr ("X required by … is …").
fn unmet(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter(|l| l.contains(" required by "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_config_without_tls_fails_sc8_and_fedramp_moderate() {
    let dir = tempfile::tempdir().unwrap();
    let plan = ssp(dir.path(), &[]);
    let sc8 = control(&plan, "SC-8");
    assert_eq!(sc8["status"], "not_satisfied", "{sc8}");
    assert!(
        sc8["reason"].as_str().unwrap().contains("plaintext"),
        "{sc8}"
    );
    assert_eq!(plan["datasets"][0]["sensitivity"], "PHI");
    assert_eq!(control(&plan, "SC-28")["status"], "external");
    assert_eq!(control(&plan, "MP-6")["status"], "not_satisfied");

    let run = esq(&["check", "--profile", "FedRAMP-Moderate"], &[]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("SC-8 required by FedRAMP-Moderate is not_satisfied: no tls.cert/tls.key"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("profile   FedRAMP-Moderate:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("attest    SC-28"), "{}", run.stdout);
    // FISMA-Low does not require SC-8.
    let run = esq(&["check", "--profile", "FISMA-Low"], &[]);
    assert!(!unmet(&run).contains(&"SC-8".to_string()), "{}", run.stderr);
}

#[test]
fn tls_required_satisfies_sc8() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let run = esq(&["certs", "dev", "--out", certs.to_str().unwrap()], &[]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let env = [
        (
            "ESQ_TLS__CERT",
            certs.join("server.crt").display().to_string(),
        ),
        (
            "ESQ_TLS__KEY",
            certs.join("server.key").display().to_string(),
        ),
        ("ESQ_TLS__REQUIRED", "true".to_string()),
        (
            "ESQ_SENTINEL__WEBHOOK",
            "https://hooks.example/esq-incidents".to_string(),
        ),
    ];
    let plan = ssp(dir.path(), &env);
    let sc8 = control(&plan, "SC-8");
    assert_eq!(sc8["status"], "satisfied", "{sc8}");
    assert_eq!(sc8["facts"]["tls.required"], true);
    assert_eq!(control(&plan, "IR-4")["status"], "satisfied");

    let run = esq(&["check", "--profile", "FedRAMP-Moderate,HIPAA"], &env);
    let missing = unmet(&run);
    assert!(!missing.contains(&"SC-8".to_string()), "{}", run.stderr);
    // Everything else FedRAMP-Moderate requires is satisfiable by config;
    // what is still unmet must rest on the audit sink alone (the tracing
    // sink until the hash-chained audit log is installed).
    let audit_sink = control(&plan, "AU-9")["facts"]["audit.hash_chained"] == true;
    if audit_sink {
        assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    } else {
        assert_eq!(missing, ["AU-2", "AU-3", "AU-9"], "{}", run.stderr);
        assert_eq!(run.status, 1, "{}", run.stderr);
    }
}

#[test]
fn unknown_profiles_are_refused() {
    let run = esq(&["check", "--profile", "SOC2"], &[]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown compliance profile"),
        "{}",
        run.stderr
    );
}
