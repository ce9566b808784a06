#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::PathBuf;

use super::*;

fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/esq.toml")
}

fn app(env: &[(&str, &str)]) -> App {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let config = crate::config::Config::load_with_env(&shipped_config(), env).unwrap();
    App::without_audit_log(config).unwrap()
}

fn control<'a>(controls: &'a [Control], id: &str) -> &'a Control {
    controls.iter().find(|c| c.id == id).unwrap()
}

/// Development certificates, and the overrides that require TLS with them.
fn tls_env(dir: &std::path::Path) -> Vec<(String, String)> {
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

#[test]
fn the_demo_config_without_tls_does_not_satisfy_sc8() {
    let app = app(&[]);
    let mut controls = evaluate(&app);
    let sc8 = control(&controls, "SC-8");
    assert_eq!(sc8.status, Status::NotSatisfied);
    assert!(sc8.reason.contains("plaintext"), "{}", sc8.reason);
    assert_eq!(sc8.facts["tls.required"], serde_json::json!(false));
    let unmet = apply_profiles(&mut controls, &[Profile::FedrampModerate]);
    assert!(unmet.iter().any(|u| u.id == "SC-8"), "{unmet:?}");
    // FISMA-Low does not require SC-8.
    let unmet = apply_profiles(&mut controls, &[Profile::FismaLow]);
    assert!(!unmet.iter().any(|u| u.id == "SC-8"), "{unmet:?}");
}

#[test]
fn tls_offered_but_not_required_is_partial_and_required_is_satisfied() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = tls_env(dir.path());
    env.pop();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let controls = evaluate(&app(&pairs));
    assert_eq!(
        control(&controls, "SC-8").status,
        Status::PartiallySatisfied
    );
    assert_eq!(control(&controls, "SC-13").status, Status::Satisfied);

    let env = tls_env(dir.path());
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let controls = evaluate(&app(&pairs));
    let sc8 = control(&controls, "SC-8");
    assert_eq!(sc8.status, Status::Satisfied, "{}", sc8.reason);
    assert!(sc8.reason.contains("sslmode"), "{}", sc8.reason);
}

#[test]
fn sentinel_and_webhook_decide_si4_and_ir4() {
    let controls = evaluate(&app(&[]));
    assert_eq!(control(&controls, "SI-4").status, Status::Satisfied);
    assert_eq!(
        control(&controls, "IR-4").status,
        Status::PartiallySatisfied
    );

    let controls = evaluate(&app(&[(
        "ESQ_SENTINEL__WEBHOOK",
        "https://hooks.example/secret-path-token",
    )]));
    let ir4 = control(&controls, "IR-4");
    assert_eq!(ir4.status, Status::Satisfied);
    // Only scheme and host: the path of a webhook may be its secret.
    assert_eq!(
        ir4.facts["sentinel.webhook"],
        serde_json::json!("https://hooks.example")
    );

    let controls = evaluate(&app(&[("ESQ_SENTINEL__ENABLED", "false")]));
    assert_eq!(control(&controls, "SI-4").status, Status::NotSatisfied);
    assert_eq!(control(&controls, "IR-4").status, Status::NotSatisfied);
}

#[test]
fn at_rest_is_never_satisfied_and_right_to_delete_is_not_built() {
    let controls = evaluate(&app(&[]));
    assert_eq!(control(&controls, "SC-28").status, Status::External);
    assert_eq!(control(&controls, "MP-6").status, Status::NotSatisfied);
    assert!(Profile::ALL.iter().all(|p| !p.requires("MP-6")));
}

#[test]
fn a_superuser_upstream_role_fails_least_privilege() {
    let controls = evaluate(&app(&[(
        "ESQ_UPSTREAM__URL",
        "postgres://postgres@127.0.0.1:5432/esq_demo",
    )]));
    assert_eq!(control(&controls, "AC-6").status, Status::NotSatisfied);
    let controls = evaluate(&app(&[]));
    assert_eq!(control(&controls, "AC-6").status, Status::Satisfied);
    assert_eq!(control(&controls, "AC-3").status, Status::Satisfied);
}

#[test]
fn audit_controls_follow_audit_enabled() {
    let controls = evaluate(&app(&[]));
    assert_eq!(control(&controls, "AU-2").status, Status::Satisfied);
    assert_eq!(control(&controls, "AU-3").status, Status::Satisfied);
    assert_eq!(control(&controls, "AU-9").status, Status::Satisfied);
    // A hash chain is not a signature.
    assert_eq!(
        control(&controls, "AU-10").status,
        Status::PartiallySatisfied
    );
    // Answering before the fsync is reported, with what it can lose.
    let controls = evaluate(&app(&[
        ("ESQ_AUDIT__DURABILITY", "write"),
        ("ESQ_AUDIT__SYNC_INTERVAL", "250ms"),
    ]));
    assert_eq!(control(&controls, "AU-2").status, Status::Satisfied);
    let au9 = control(&controls, "AU-9");
    assert_eq!(au9.status, Status::PartiallySatisfied);
    assert!(au9.reason.contains("250ms"), "{}", au9.reason);
    assert_eq!(au9.facts["audit.durability"], serde_json::json!("write"));
    let controls = evaluate(&app(&[("ESQ_AUDIT__ENABLED", "false")]));
    for id in ["AU-2", "AU-3", "AU-9", "AU-10"] {
        assert_eq!(control(&controls, id).status, Status::NotSatisfied, "{id}");
    }
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
fn the_ssp_lists_datasets_with_sensitivity_and_marks_required_controls() {
    let app = app(&[]);
    let inputs = SspInputs {
        config_path: Some(shipped_config()),
        profiles: vec![Profile::Hipaa],
    };
    let (ssp, unmet) = system_security_plan(&app, &inputs);
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
    let sc8 = json["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "SC-8")
        .unwrap();
    assert_eq!(sc8["status"], "not_satisfied");
    assert_eq!(sc8["required_by"], serde_json::json!(["HIPAA"]));
    assert_eq!(json["profiles"][0]["met"], false);
    assert!(unmet.iter().any(|u| u.id == "SC-8"));
    // No secret of the config reaches the plan.
    let text = json.to_string();
    assert!(!text.contains("SCRAM-SHA-256$"), "verifier leaked");
}
