//! The guard's table-driven cases: every `tests/guard_cases/*.yaml` file is
//! a list of cases, each a statement under one of the scopes below with the
//! expected outcome — a denial with its SQLSTATE, or an allow with the exact
//! rewrite (and the dropped columns). All failures are reported together.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::sync::Arc;

use esq::catalog::Catalog;
use esq::guard::{Decision, Guard};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    scope: String,
    sql: String,
    #[serde(default)]
    deny: Option<String>,
    #[serde(default)]
    codes: Vec<String>,
    #[serde(default)]
    allow: Option<Allow>,
    #[serde(default)]
    dropped: Option<Vec<String>>,
    #[serde(default)]
    why: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Allow {
    Flag(bool),
    Rewrite(String),
}

fn load_cases() -> Vec<(String, Case)> {
    let dir = common::repo().join("tests/guard_cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Case> =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        cases.extend(parsed.into_iter().map(|c| (stem.clone(), c)));
    }
    cases
}

fn guard() -> Guard {
    let catalog = Catalog::load_dir(&common::repo().join("catalog")).unwrap();
    Guard::new(Arc::new(catalog))
}

#[test]
fn every_case_decides_as_expected() {
    let guard = guard();
    let cases = load_cases();
    let mut names = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    // ESQ_DUMP_REWRITES=path writes the rewrites of `allow: true` cases
    // (for review before pinning them in the case files).
    let mut dump = serde_json::Map::new();
    for (file, case) in &cases {
        assert!(
            names.insert(case.name.clone()),
            "duplicate case name {}",
            case.name
        );
        let scope = common::tickets::guard_scope(&case.scope);
        let decision = guard.decide(scope.as_ref(), &case.sql);
        let mut expected_codes = case.codes.clone();
        if let Some(code) = &case.deny {
            expected_codes.push(code.clone());
        }
        let problem = match (&decision, expected_codes.is_empty(), &case.allow) {
            (Decision::Deny(denial), false, _) => {
                (!expected_codes.iter().any(|c| c == denial.code)).then(|| {
                    format!(
                        "denied with {} ({}), expected {:?}",
                        denial.code, denial.reason, expected_codes
                    )
                })
            }
            (Decision::Allow(allowed), false, _) => {
                Some(format!("ALLOWED, expected a denial: {}", allowed.sql))
            }
            (Decision::Deny(denial), true, _) => Some(format!(
                "denied with {}: {} — {}",
                denial.code, denial.reason, denial.detail
            )),
            (Decision::Allow(allowed), true, allow) => {
                let mut problems = Vec::new();
                // The forwarded text round-trips: it parses and prints again
                // as itself, so what PostgreSQL runs is what was analysed.
                let reparsed = sqlparser::parser::Parser::parse_sql(
                    &sqlparser::dialect::PostgreSqlDialect {},
                    &allowed.sql,
                )
                .map(|statements| {
                    statements
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                if reparsed.as_deref() != Ok(allowed.sql.as_str()) {
                    problems.push(format!("rewrite does not round-trip: {reparsed:?}"));
                }
                if let Some(Allow::Flag(true)) = allow {
                    dump.insert(case.name.clone(), allowed.sql.clone().into());
                }
                if let Some(Allow::Rewrite(expected)) = allow {
                    if allowed.sql != expected.trim() {
                        problems.push(format!(
                            "rewrite\n   got: {}\n  want: {}",
                            allowed.sql,
                            expected.trim()
                        ));
                    }
                }
                if matches!(allow, None | Some(Allow::Flag(false))) {
                    problems.push("case has neither deny nor allow".into());
                }
                let dropped = case.dropped.clone().unwrap_or_default();
                let got: Vec<String> = allowed
                    .dropped
                    .iter()
                    .map(|d| d.rsplit('.').next().unwrap_or(d).to_string())
                    .collect();
                if got != dropped {
                    problems.push(format!(
                        "dropped {:?}, expected {:?}",
                        allowed.dropped, dropped
                    ));
                }
                (!problems.is_empty()).then(|| problems.join("; "))
            }
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{file}/{} [{}]: {}\n  sql: {}\n  why: {}",
                case.name,
                case.scope,
                problem,
                case.sql,
                case.why.as_deref().unwrap_or("")
            ));
        }
    }
    if let Ok(path) = std::env::var("ESQ_DUMP_REWRITES") {
        std::fs::write(path, serde_json::to_string_pretty(&dump).unwrap()).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
