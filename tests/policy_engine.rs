//! The policy engine fails closed: only an explicit `allow: true` from every
//! applicable package allows; undefined, malformed, erroring or slow
//! decisions deny; no applicable package denies; broken policy files are
//! load errors that name file and line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use esq::auth::Principal;
use esq::policy::input::{DatasetInput, RequestInput};
use esq::policy::{PolicySet, TicketPolicyInput, Verdict};
use esq::sensitivity::Sensitivity;

const APPLIES: &str = "default applies := false\napplies if input.action == \"issue_ticket\"\n";

fn input() -> TicketPolicyInput {
    TicketPolicyInput {
        action: "issue_ticket",
        user: Principal {
            name: "u".into(),
            roles: vec!["r".into()],
            attributes: BTreeMap::new(),
            clearance: Sensitivity::Public,
        },
        dataset: DatasetInput {
            id: "d".into(),
            table: "public.d".into(),
            sensitivity: Sensitivity::Pii,
            owner: "o".into(),
            steward: "s".into(),
            subject_key: None,
            privacy_unit: None,
            retention_years: None,
            retention_field: None,
            min_group_size: None,
            fields: vec![],
        },
        request: RequestInput {
            fields: vec!["a".into()],
            aggregate: None,
            purpose: "p".into(),
            ttl_seconds: 300,
            where_: BTreeMap::new(),
            privacy: None,
        },
        now: "2026-11-25T18:00:00Z".into(),
        environment: "test".into(),
        exception: None,
    }
}

/// Longest a policy may run in these tests: far beyond what a quick
/// policy needs on a loaded machine (the time-out is wall-clock).
const EVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `policies` (file name → text) into a temp dir and loads it.
fn load(policies: &[(&str, &str)]) -> Result<PolicySet, String> {
    load_with(policies, EVAL_TIMEOUT)
}

fn load_with(policies: &[(&str, &str)], timeout: Duration) -> Result<PolicySet, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in policies {
        std::fs::write(dir.path().join(name), text).expect("write policy");
    }
    PolicySet::load_dir(dir.path(), timeout).map_err(|e| e.to_string())
}

fn evaluate(policies: &[(&str, &str)]) -> Verdict {
    load(policies).expect("policies load").evaluate(&input())
}

fn package(name: &str, body: &str) -> String {
    format!("package esq.policies.{name}\n{APPLIES}{body}\n")
}

const ALLOW: &str = r#"decision := {"allow": true, "policy_id": "P-OK"}"#;

#[test]
fn an_explicit_allow_allows() {
    let verdict = evaluate(&[("ok.rego", &package("ok", ALLOW))]);
    assert!(verdict.allow, "{verdict:?}");
    assert_eq!(verdict.policy_ids, vec!["P-OK"]);
}

#[test]
fn no_applicable_package_denies_by_default() {
    let text =
        "package esq.policies.never\ndefault applies := false\ndecision := {\"allow\": true}\n";
    let verdict = evaluate(&[("never.rego", text)]);
    assert!(!verdict.allow);
    assert_eq!(verdict.denied_by, vec!["esq-default-deny"]);
}

#[test]
fn anything_but_an_explicit_true_denies() {
    let bodies = [
        ("undefined", "decision := {\"allow\": true} if false"),
        ("string_true", r#"decision := {"allow": "true", "policy_id": "X"}"#),
        ("not_object", "decision := true"),
        ("array", "decision := [true, \"X\"]"),
        ("missing_allow", r#"decision := {"policy_id": "X"}"#),
        ("unknown_obligation", r#"decision := {"allow": true, "obligations": {"watermark": 1}}"#),
        ("error", "decision := {\"allow\": 1 / 0 == 1}"),
        ("type_error", "decision := {\"allow\": upper(5) == \"5\"}"),
        (
            "slow",
            "decision := {\"allow\": count([x | some x in numbers.range(1, 5000); some y in numbers.range(1, 5000); x == y + 9999]) == 0}",
        ),
    ];
    for (name, body) in bodies {
        // The slow one must run into a short limit.
        let timeout = match name {
            "slow" => Duration::from_millis(200),
            _ => EVAL_TIMEOUT,
        };
        let verdict = load_with(
            &[
                ("ok.rego", &package("ok", ALLOW)),
                ("bad.rego", &package(name, body)),
            ],
            timeout,
        )
        .expect("policies load")
        .evaluate(&input());
        assert!(!verdict.allow, "{name}: {verdict:?}");
        assert!(
            verdict
                .denied_by
                .iter()
                .any(|p| p.contains(name) || p == "X"),
            "{name}: {verdict:?}"
        );
    }
}

#[test]
fn an_erroring_applies_denies() {
    let text =
        "package esq.policies.broken\napplies if 1 / 0 == 1\ndecision := {\"allow\": true}\n";
    let verdict = evaluate(&[("ok.rego", &package("ok", ALLOW)), ("broken.rego", text)]);
    assert!(!verdict.allow, "{verdict:?}");
}

#[test]
fn syntax_errors_name_file_and_line() {
    let text =
        "package esq.policies.bad\n\ndefault applies := false\ndecision := {\"allow\": true\n";
    let message = load(&[("bad.rego", text)]).expect_err("syntax error");
    assert!(message.contains("bad.rego:"), "{message}");
    assert!(
        message.contains(":4:") || message.contains(":5:"),
        "{message}"
    );
}

#[test]
fn a_policy_package_must_define_applies_and_decision() {
    let message = load(&[(
        "half.rego",
        "package esq.policies.half\ndecision := {\"allow\": true}\n",
    )])
    .expect_err("no applies");
    assert!(message.contains("half.rego"), "{message}");
    assert!(message.contains("applies"), "{message}");
}

#[test]
fn rego_tests_run_and_failures_are_reported() {
    let tests = "package esq.policies.ok_test\nimport data.esq.policies.ok\n\
                 test_allows if ok.decision.allow\n\
                 test_wrong if ok.decision.policy_id == \"P-OTHER\"\n\
                 test_errors if 1 / 0 == 1\n";
    let set = load(&[("ok.rego", &package("ok", ALLOW)), ("ok_test.rego", tests)]).expect("loads");
    let report = set.run_tests();
    let by_name: BTreeMap<&str, bool> = report
        .outcomes
        .iter()
        .map(|o| (o.name.rsplit('.').next().unwrap_or(""), o.passed))
        .collect();
    assert_eq!(
        by_name,
        BTreeMap::from([
            ("test_allows", true),
            ("test_errors", false),
            ("test_wrong", false)
        ])
    );
    assert!(!report.all_passed());
    // Test packages are not policies.
    assert_eq!(set.packages(), ["data.esq.policies.ok"]);
}

#[test]
fn the_shipped_policies_pass_their_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let set = PolicySet::load_dir(&dir, EVAL_TIMEOUT).expect("shipped policies load");
    let report = set.run_tests();
    let failures: Vec<String> = report
        .failed()
        .map(|f| format!("{}: {}", f.name, f.detail))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        report.outcomes.len() >= 40,
        "{} tests",
        report.outcomes.len()
    );
    // The exception policy is not a ticket policy, but its tests run.
    assert!(set.has_exception_policy());
    assert!(!set.packages().iter().any(|p| p.contains("exceptions")));
    let exception_tests = report
        .outcomes
        .iter()
        .filter(|o| o.name.starts_with("esq.exceptions_test."))
        .count();
    assert!(exception_tests >= 10, "{exception_tests} exception tests");
    for policy in ["foia", "hipaa", "retention", "state_scope", "open_data"] {
        let package = format!("esq.policies.{policy}_test.");
        let count = report
            .outcomes
            .iter()
            .filter(|o| o.name.starts_with(&package))
            .count();
        assert!(count >= 5, "{policy} has {count} tests");
    }
}

/// Issue 18: under an exception waiver, denials are waived, obligations of
/// the allowing packages still apply, and failures still deny.
#[test]
fn a_waiver_lifts_denials_but_not_failures() {
    let deny = r#"decision := {"allow": false, "policy_id": "P-NO", "reasons": ["no"]}"#;
    let narrow = r#"decision := {"allow": true, "policy_id": "P-OK", "obligations": {"max_ttl_seconds": 60}}"#;
    let set = load(&[
        ("no.rego", &package("no", deny)),
        ("ok.rego", &package("ok", narrow)),
    ])
    .unwrap();
    assert!(
        !set.evaluate(&input()).allow,
        "without a waiver the denial stands"
    );
    let (verdict, waived) = set.evaluate_waiving(&input());
    assert!(verdict.allow, "{verdict:?}");
    assert_eq!(waived, ["P-NO"]);
    assert_eq!(verdict.policy_ids, ["P-NO", "P-OK"]);
    assert_eq!(verdict.obligations.max_ttl_seconds, Some(60));

    // Every applicable package denies: the waiver is the grant.
    let only = load(&[("no.rego", &package("no", deny))]).unwrap();
    let (verdict, waived) = only.evaluate_waiving(&input());
    assert!(verdict.allow && waived == ["P-NO"], "{verdict:?}");

    for (name, body) in [
        ("error", "decision := {\"allow\": 1 / 0 == 1}"),
        ("undefined", "decision := {\"allow\": true} if false"),
        (
            "malformed",
            r#"decision := {"allow": true, "obligations": {"watermark": 1}}"#,
        ),
    ] {
        let set = load(&[
            ("no.rego", &package("no", deny)),
            ("bad.rego", &package(name, body)),
        ])
        .unwrap();
        let (verdict, waived) = set.evaluate_waiving(&input());
        assert!(
            !verdict.allow,
            "{name}: a failure is never waived: {verdict:?}"
        );
        assert!(waived.is_empty(), "{name}");
    }
}

/// `package esq.exceptions` is found, is no ticket policy, must define
/// `decision`, and its tests (`esq.exceptions_test`) run.
#[test]
fn the_exception_package_is_found_and_tested_but_not_a_ticket_policy() {
    let exceptions =
        "package esq.exceptions\ndecision := {\"allow\": input.x == 1, \"policy_id\": \"P-X\"}\n";
    let tests = "package esq.exceptions_test\nimport data.esq.exceptions\n\
                 test_allows if exceptions.decision.allow with input as {\"x\": 1}\n";
    let set = load(&[
        ("ok.rego", &package("ok", ALLOW)),
        ("exceptions.rego", exceptions),
        ("exceptions_test.rego", tests),
    ])
    .unwrap();
    assert!(set.has_exception_policy());
    assert_eq!(set.packages(), ["data.esq.policies.ok"]);
    let report = set.run_tests();
    assert_eq!(report.outcomes.len(), 1);
    assert!(report.all_passed(), "{:?}", report.outcomes);
    let decided = set
        .evaluate_exception(&serde_json::json!({"x": 1}))
        .unwrap();
    assert_eq!(decided["allow"], true);
    assert!(set
        .evaluate_exception(&serde_json::json!({"x": 2}))
        .is_ok_and(|d| d["allow"] == false));

    let without = load(&[("ok.rego", &package("ok", ALLOW))]).unwrap();
    assert!(!without.has_exception_policy());
    assert!(without.evaluate_exception(&serde_json::json!({})).is_err());
    let undefined = load(&[(
        "exceptions.rego",
        "package esq.exceptions\ndecision := {\"allow\": true} if input.x == 1\n",
    )])
    .unwrap();
    assert!(undefined
        .evaluate_exception(&serde_json::json!({}))
        .is_err());
    let message = load(&[("exceptions.rego", "package esq.exceptions\nallow := true\n")])
        .expect_err("no decision");
    assert!(message.contains("decision"), "{message}");
}
