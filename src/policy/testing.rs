//! The Rego test runner behind `esq check`: regorus has no `opa test`, so
//! esq finds every `test_*` rule of every `*_test` package and evaluates it.
//! A test passes only when it evaluates to `true`; false, undefined, an error
//! or a time-out fail.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// `esq.policies.foia_test.test_public_requester_gets_counts`
    pub name: String,
    pub file: PathBuf,
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub outcomes: Vec<TestOutcome>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.passed).count()
    }

    pub fn failed(&self) -> impl Iterator<Item = &TestOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }

    pub fn all_passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }
}

/// A `*_test` package as loaded.
#[derive(Debug, Clone)]
pub(super) struct TestSource {
    pub package: String,
    pub file: PathBuf,
    pub text: String,
}

pub(super) fn run(template: &regorus::Engine, sources: &[TestSource]) -> TestReport {
    let mut report = TestReport::default();
    for TestSource {
        package,
        file,
        text,
    } in sources
    {
        for rule in declared_test_rules(template, file, text) {
            let mut engine = template.clone();
            engine.set_input(regorus::Value::new_object());
            let name = format!("{package}.{rule}");
            let (passed, detail) = match engine.eval_rule(name.clone()) {
                Ok(regorus::Value::Bool(true)) => (true, String::new()),
                Ok(regorus::Value::Undefined) => (false, "undefined (a condition failed)".into()),
                Ok(other) => (false, format!("evaluated to {other}, not true")),
                Err(err) => (false, format!("error: {err}")),
            };
            report.outcomes.push(TestOutcome {
                name: name.trim_start_matches("data.").to_string(),
                file: file.clone(),
                passed,
                detail,
            });
        }
    }
    report
}

/// Rule names starting with `test_` that the parser saw declared in `file`:
/// every `test_…` word of the text is a candidate, confirmed by regorus.
fn declared_test_rules(
    engine: &regorus::Engine,
    file: &std::path::Path,
    text: &str,
) -> Vec<String> {
    let source = file.display().to_string();
    let mut names: Vec<String> = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("test_") && !names.iter().any(|n| n == word) {
            let declared = engine
                .has_declared_rule_rooted_at(&source, word)
                .unwrap_or(false);
            if declared {
                names.push(word.to_string());
            }
        }
    }
    names
}
