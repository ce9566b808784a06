//! The controls on the shipped configuration with overrides, observed for
//! real: the upstream is an address where nothing answers (so every
//! control that needs the database says "could not verify"), and the audit
//! log is one these tests write with esq's own writer (and then damage).
//! What the database reports of a service role is tested against a real
//! PostgreSQL in `tests/compliance.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};

use super::*;
use crate::audit::{AuditEvent, AuditKind};
use crate::metrics::Door;

/// Nothing listens on port 1: a connection is refused at once.
const NOWHERE: &str = "postgres://esq_service@127.0.0.1:1/esq_demo";
const PASSWORD: &str = "upstream-password-never-shown";

fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/esq.toml")
}

/// The shipped config with an unreachable upstream, an audit log in `dir`
/// and `env` on top.
fn config(dir: &Path, env: &[(&str, &str)]) -> crate::config::Config {
    let audit = dir.join("audit.jsonl").display().to_string();
    let mut vars: Vec<(String, String)> = vec![
        ("ESQ_UPSTREAM__URL".into(), NOWHERE.into()),
        ("ESQ_UPSTREAM__PASSWORD".into(), PASSWORD.into()),
        ("ESQ_AUDIT__PATH".into(), audit),
    ];
    for (k, v) in env {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    crate::config::Config::load_with_env(&shipped_config(), vars).unwrap()
}

fn app(dir: &Path, env: &[(&str, &str)]) -> App {
    App::without_audit_log(config(dir, env)).unwrap()
}

/// The controls of `app`, observed.
fn controls(app: &App) -> Vec<Control> {
    evaluate(app, &observe_blocking(app))
}

fn control<'a>(controls: &'a [Control], id: &str) -> &'a Control {
    controls.iter().find(|c| c.id == id).unwrap()
}

fn check<'a>(control: &'a Control, name: &str) -> &'a Check {
    control
        .checks
        .iter()
        .find(|c| c.check.contains(name))
        .unwrap_or_else(|| panic!("{} has no check {name:?}: {:?}", control.id, control.checks))
}

/// Development certificates, and the overrides that require TLS with them.
fn tls_env(dir: &Path) -> Vec<(String, String)> {
    let certs = crate::tls::make_dev_certs(dir).unwrap();
    vec![
        (
            "ESQ_TLS__CERT".into(),
            certs.server_cert.display().to_string(),
        ),
        (
            "ESQ_TLS__KEY".into(),
            certs.server_key.display().to_string(),
        ),
        ("ESQ_TLS__REQUIRED".into(), "true".into()),
    ]
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn every_satisfied_control_rests_on_checks_that_all_passed() {
    let dir = tempfile::tempdir().unwrap();
    let env = tls_env(dir.path());
    for app in [app(dir.path(), &[]), app(dir.path(), &pairs(&env))] {
        for control in controls(&app) {
            match control.status {
                Status::Satisfied => {
                    assert!(!control.checks.is_empty(), "{}: no check", control.id);
                    assert!(
                        control.checks.iter().all(|c| c.passed),
                        "{}: {:?}",
                        control.id,
                        control.checks
                    );
                }
                Status::NotSatisfied | Status::PartiallySatisfied => {
                    assert!(
                        control.checks.iter().any(|c| !c.passed),
                        "{} is {} with every check passed",
                        control.id,
                        control.status
                    );
                }
                Status::External => {}
            }
        }
    }
}

#[test]
fn the_demo_config_without_tls_does_not_satisfy_sc8() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    let mut controls = controls(&app);
    let sc8 = control(&controls, "SC-8");
    assert_eq!(sc8.status, Status::NotSatisfied);
    assert!(sc8.reason.contains("plaintext"), "{}", sc8.reason);
    assert!(!check(sc8, "both doors have a TLS certificate").passed);
    assert!(!check(sc8, "sslmode=require").passed);
    assert_eq!(sc8.facts["tls.required"], serde_json::json!(false));
    let unmet = apply_profiles(&mut controls, &[Profile::FedrampModerate]);
    assert!(unmet.iter().any(|u| u.id == "SC-8"), "{unmet:?}");
    // FISMA-Low does not require SC-8.
    let unmet = apply_profiles(&mut controls, &[Profile::FismaLow]);
    assert!(!unmet.iter().any(|u| u.id == "SC-8"), "{unmet:?}");
}

#[test]
fn door_tls_is_checked_but_an_unverified_upstream_hop_keeps_sc8_unmet() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = tls_env(dir.path());
    env.pop();
    let offered = controls(&app(dir.path(), &pairs(&env)));
    let sc8 = control(&offered, "SC-8");
    assert!(check(sc8, "both doors have a TLS certificate").passed);
    let required = check(sc8, "refuse plaintext");
    assert!(!required.passed);
    assert!(required.observed.contains("tls.required = false"));
    assert_eq!(control(&offered, "SC-13").status, Status::Satisfied);

    let env = tls_env(dir.path());
    let controls = controls(&app(dir.path(), &pairs(&env)));
    let sc8 = control(&controls, "SC-8");
    assert!(check(sc8, "refuse plaintext").passed);
    // TLS-only doors are one hop of three: the upstream is still
    // plaintext by configuration and unverified by observation.
    assert_eq!(sc8.status, Status::NotSatisfied, "{}", sc8.reason);
    assert!(sc8.reason.contains("sslmode=prefer"), "{}", sc8.reason);
    assert!(sc8.reason.contains("127.0.0.1:1"), "{}", sc8.reason);
    let observed = check(sc8, "pg_stat_ssl");
    assert!(!observed.passed);
    assert!(
        observed.observed.contains("could not verify"),
        "{observed:?}"
    );
}

#[test]
fn a_plaintext_ticket_store_or_webhook_is_a_plaintext_hop() {
    let dir = tempfile::tempdir().unwrap();
    let controls = controls(&app(
        dir.path(),
        &[
            ("ESQ_TICKETS__STORE", "redis://127.0.0.1:1"),
            ("ESQ_SENTINEL__WEBHOOK", "http://hooks.example/alerts"),
        ],
    ));
    let sc8 = control(&controls, "SC-8");
    assert!(!check(sc8, "rediss://").passed);
    assert!(!check(sc8, "webhook uses https").passed);
    assert!(sc8.reason.contains("redis://"), "{}", sc8.reason);
}

#[test]
fn sentinel_and_webhook_decide_si4_and_ir4() {
    let dir = tempfile::tempdir().unwrap();
    let found = controls(&app(dir.path(), &[]));
    assert_eq!(control(&found, "SI-4").status, Status::Satisfied);
    assert_eq!(control(&found, "IR-4").status, Status::PartiallySatisfied);

    let found = controls(&app(
        dir.path(),
        &[(
            "ESQ_SENTINEL__WEBHOOK",
            "https://hooks.example/secret-path-token",
        )],
    ));
    let ir4 = control(&found, "IR-4");
    assert_eq!(ir4.status, Status::Satisfied);
    // Only scheme and host: the path of a webhook may be its secret.
    assert_eq!(
        ir4.facts["sentinel.webhook"],
        serde_json::json!("https://hooks.example")
    );
    let json = serde_json::to_string(ir4).unwrap();
    assert!(!json.contains("secret-path-token"), "{json}");

    let found = controls(&app(dir.path(), &[("ESQ_SENTINEL__ENABLED", "false")]));
    assert_eq!(control(&found, "SI-4").status, Status::NotSatisfied);
    assert_eq!(control(&found, "IR-4").status, Status::NotSatisfied);
}

#[test]
fn at_rest_is_never_satisfied_and_the_lifecycle_needs_a_maintenance_role() {
    let dir = tempfile::tempdir().unwrap();
    let found = controls(&app(dir.path(), &[]));
    assert_eq!(control(&found, "SC-28").status, Status::External);
    for id in ["MP-6", "SI-12"] {
        let lifecycle = control(&found, id);
        assert_eq!(lifecycle.status, Status::NotSatisfied, "{id}");
        assert!(
            lifecycle
                .reason
                .contains("no [maintenance] role is configured"),
            "{id}: {}",
            lifecycle.reason
        );
        assert!(Profile::ALL.iter().all(|p| !p.requires(id)), "{id}");
    }
}

#[test]
fn an_unreachable_database_leaves_least_privilege_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let found = controls(&app(dir.path(), &[]));
    let ac6 = control(&found, "AC-6");
    assert_eq!(ac6.status, Status::NotSatisfied);
    assert!(
        ac6.reason.starts_with(
            "could not verify: cannot reach the upstream database at 127.0.0.1:1 as the service role"
        ),
        "{}",
        ac6.reason
    );
    // Neither the password nor the database's words reach the plan.
    let json = serde_json::to_string(&found).unwrap();
    assert!(!json.contains(PASSWORD), "{json}");
    assert_eq!(control(&found, "AC-3").status, Status::Satisfied);
}

#[test]
fn audit_controls_follow_audit_enabled_and_the_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let found = controls(&app(dir.path(), &[]));
    assert_eq!(control(&found, "AU-2").status, Status::Satisfied);
    assert_eq!(control(&found, "AU-3").status, Status::Satisfied);
    // A chain without signed checkpoints cannot show a cut end.
    let au9 = control(&found, "AU-9");
    assert_eq!(au9.status, Status::PartiallySatisfied, "{}", au9.reason);
    assert!(au9.reason.contains("[signing] key_file"), "{}", au9.reason);
    assert!(check(au9, "chain verifies").passed);
    // A hash chain is not a signature.
    assert_eq!(control(&found, "AU-10").status, Status::PartiallySatisfied);
    // Answering before the fsync is reported, with what it can lose.
    let found = controls(&app(
        dir.path(),
        &[
            ("ESQ_AUDIT__DURABILITY", "write"),
            ("ESQ_AUDIT__SYNC_INTERVAL", "250ms"),
        ],
    ));
    assert_eq!(control(&found, "AU-2").status, Status::Satisfied);
    let au9 = control(&found, "AU-9");
    assert_eq!(au9.status, Status::PartiallySatisfied);
    assert!(au9.reason.contains("250ms"), "{}", au9.reason);
    assert_eq!(au9.facts["audit.durability"], serde_json::json!("write"));
    let found = controls(&app(dir.path(), &[("ESQ_AUDIT__ENABLED", "false")]));
    for id in ["AU-2", "AU-3", "AU-9", "AU-10"] {
        assert_eq!(control(&found, id).status, Status::NotSatisfied, "{id}");
    }
}

/// Writes `records` decision records with esq's writer (signing
/// checkpoints when `key` is set); the writer checkpoints at its close.
fn write_log(dir: &Path, env: &[(&str, &str)], records: usize) {
    let writer = App::from_config(config(dir, env)).unwrap();
    for _ in 0..records {
        let event = AuditEvent::event(AuditKind::Decision, Door::pg, "journalist");
        writer.audit.record(&event).unwrap();
    }
    drop(writer);
}

fn signing_key(dir: &Path) -> String {
    let path = dir.join("esq.key");
    crate::signing::SigningKey::generate().write(&path).unwrap();
    path.display().to_string()
}

#[test]
fn a_verified_recent_checkpoint_satisfies_au9_and_au10() {
    let dir = tempfile::tempdir().unwrap();
    let key = signing_key(dir.path());
    let env = [("ESQ_SIGNING__KEY_FILE", key.as_str())];
    write_log(dir.path(), &env, 3);
    let found = controls(&app(dir.path(), &env));
    let au9 = control(&found, "AU-9");
    assert_eq!(au9.status, Status::Satisfied, "{}", au9.reason);
    assert!(check(au9, "chain verifies").observed.contains("3 records"));
    assert!(check(au9, "recent").passed);
    let au10 = control(&found, "AU-10");
    assert_eq!(au10.status, Status::Satisfied, "{}", au10.reason);
    let au3 = control(&found, "AU-3");
    assert_eq!(au3.status, Status::Satisfied, "{}", au3.reason);
    assert!(check(au3, "newest record").observed.contains("record 3"));
}

#[test]
fn a_broken_chain_fails_au9_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let key = signing_key(dir.path());
    let env = [("ESQ_SIGNING__KEY_FILE", key.as_str())];
    write_log(dir.path(), &env, 4);
    let log = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("journalist", "clinician", 1)).unwrap();
    let mut found = controls(&app(dir.path(), &env));
    let au9 = control(&found, "AU-9");
    assert_eq!(au9.status, Status::NotSatisfied);
    assert!(
        au9.reason.contains("the audit chain is broken at record 1"),
        "{}",
        au9.reason
    );
    let unmet = apply_profiles(&mut found, &[Profile::FedrampModerate]);
    assert!(unmet.iter().any(|u| u.id == "AU-9"), "{unmet:?}");
}

#[test]
fn a_cut_log_or_a_foreign_key_fails_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let key = signing_key(dir.path());
    let env = [("ESQ_SIGNING__KEY_FILE", key.as_str())];
    write_log(dir.path(), &env, 3);
    // Drop the newest record: the rest still chains.
    let log = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let kept: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&log, kept.join("\n") + "\n").unwrap();
    let found = controls(&app(dir.path(), &env));
    let au9 = control(&found, "AU-9");
    assert_eq!(au9.status, Status::NotSatisfied, "{}", au9.reason);
    assert!(check(au9, "chain verifies").passed);
    assert!(!check(au9, "checkpoints verify").passed);

    // Checked with another key, the checkpoints are not the writer's.
    let other_dir = tempfile::tempdir().unwrap();
    let other = signing_key(other_dir.path());
    let found = controls(&app(
        dir.path(),
        &[("ESQ_SIGNING__KEY_FILE", other.as_str())],
    ));
    let au10 = control(&found, "AU-10");
    assert_eq!(au10.status, Status::NotSatisfied, "{}", au10.reason);
}

#[test]
fn records_no_checkpoint_covers_leave_au9_partial() {
    let dir = tempfile::tempdir().unwrap();
    let key = signing_key(dir.path());
    let signed = [("ESQ_SIGNING__KEY_FILE", key.as_str())];
    // Written before esq had a key: nothing checkpointed them.
    write_log(dir.path(), &[], 2);
    let found = controls(&app(dir.path(), &signed));
    let au9 = control(&found, "AU-9");
    assert_eq!(au9.status, Status::PartiallySatisfied, "{}", au9.reason);
    assert!(
        au9.reason
            .contains("no signed checkpoint covers the audit log"),
        "{}",
        au9.reason
    );
    assert_eq!(control(&found, "AU-10").status, Status::PartiallySatisfied);

    // Checkpointed, then five more records without a key: more than twice
    // audit.checkpoint_records behind the end.
    write_log(dir.path(), &signed, 1);
    write_log(dir.path(), &[], 5);
    let stale = [
        ("ESQ_SIGNING__KEY_FILE", key.as_str()),
        ("ESQ_AUDIT__CHECKPOINT_RECORDS", "2"),
    ];
    let found = controls(&app(dir.path(), &stale));
    let au9 = control(&found, "AU-9");
    assert_eq!(au9.status, Status::PartiallySatisfied, "{}", au9.reason);
    assert!(
        au9.reason.contains("is stale: 5 record(s)"),
        "{}",
        au9.reason
    );
    assert!(check(au9, "checkpoints verify").passed);
}

#[test]
fn profiles_parse_combine_and_refuse_unknown_names() {
    assert_eq!(
        parse_profiles("fedramp-moderate, HIPAA,HIPAA").unwrap(),
        vec![Profile::Hipaa, Profile::FedrampModerate]
    );
    assert!(parse_profiles("SOC2").is_err());
    assert!(parse_profiles("").is_err());
}

#[test]
fn the_ssp_lists_datasets_checks_and_required_controls() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    let inputs = SspInputs {
        config_path: Some(shipped_config()),
        profiles: vec![Profile::Hipaa],
    };
    let (ssp, unmet) = system_security_plan_blocking(&app, &inputs);
    let json = serde_json::to_value(&ssp).unwrap();
    assert_eq!(json["datasets"][0]["id"], "burial_2024");
    assert_eq!(json["datasets"][0]["sensitivity"], "PHI");
    assert!(json["datasets"][0]["pii_fields"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("ssn")));
    assert_eq!(
        json["system"]["hashes"]["config"].as_str().unwrap().len(),
        64
    );
    assert!(json["observed_at"].as_str().is_some());
    let sc8 = json["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "SC-8")
        .unwrap();
    assert_eq!(sc8["status"], "not_satisfied");
    assert_eq!(sc8["required_by"], serde_json::json!(["HIPAA"]));
    let first = &sc8["checks"][0];
    assert!(first["check"].is_string() && first["observed"].is_string());
    assert_eq!(first["passed"], false);
    assert_eq!(json["profiles"][0]["met"], false);
    assert!(unmet.iter().any(|u| u.id == "SC-8"));
    // No secret of the config reaches the plan.
    let text = json.to_string();
    assert!(!text.contains("SCRAM-SHA-256$"), "verifier leaked");
    assert!(!text.contains(PASSWORD), "password leaked");
}
