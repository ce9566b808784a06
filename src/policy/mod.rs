//! Rego policies (regorus): compiled once at start, evaluated per ticket
//! request with a time limit. Every package under `esq.policies` is a policy
//! with an `applies` and a `decision` rule; a package whose name ends in
//! `_test` holds `test_*` rules that `esq check` runs. Only an explicit
//! `allow: true` from every applicable package allows; an undefined decision,
//! an evaluation error or a time-out denies.

pub mod decision;
pub mod input;
mod testing;

use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;

pub use decision::{FilterValue, Obligations, PackageDecision, Verdict};
pub use input::TicketPolicyInput;
pub use testing::{TestOutcome, TestReport};

/// Packages below this prefix are policies (or, ending in `_test`, tests).
pub const POLICY_ROOT: &str = "data.esq.policies.";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("policy directory {0} holds no *.rego file")]
    Empty(PathBuf),
    /// regorus' message carries `file:line:column` and the offending text.
    #[error("{message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Structure { path: PathBuf, message: String },
}

/// The loaded policies: an engine template that every evaluation clones.
#[derive(Clone)]
pub struct PolicySet {
    engine: regorus::Engine,
    /// Policy packages, e.g. `data.esq.policies.foia`.
    packages: Vec<String>,
    /// Test packages with their source files and text (as loaded).
    test_packages: Vec<testing::TestSource>,
    files: Vec<PathBuf>,
    /// The digest of the loaded files (see [`crate::digest`]).
    digest: String,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("packages", &self.packages)
            .finish_non_exhaustive()
    }
}

impl PolicySet {
    /// Loads every `*.rego` file in `dir` (Rego v1), checks that each policy
    /// package defines `applies` and `decision`, and compiles once.
    pub fn load_dir(dir: &Path, eval_timeout: Duration) -> Result<PolicySet, PolicyError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| PolicyError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "rego"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(PolicyError::Empty(dir.to_path_buf()));
        }
        let mut engine = regorus::Engine::new();
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: eval_timeout,
            check_interval: std::num::NonZeroU32::MIN,
        });
        let mut packages = Vec::new();
        let mut package_files = Vec::new();
        let mut test_packages = Vec::new();
        let mut digest = crate::digest::FilesDigest::default();
        for path in &files {
            let text = std::fs::read_to_string(path).map_err(|err| PolicyError::Structure {
                path: path.clone(),
                message: err.to_string(),
            })?;
            digest.add(&crate::digest::file_name(path), text.as_bytes());
            let package = engine
                .add_policy(path.display().to_string(), text.clone())
                .map_err(|err| PolicyError::Syntax {
                    path: path.clone(),
                    message: err.to_string(),
                })?;
            let Some(name) = package.strip_prefix(POLICY_ROOT) else {
                continue; // a helper library, e.g. `package esq.lib`
            };
            package_files.push((package.clone(), path.clone()));
            if name.ends_with("_test") {
                test_packages.push(testing::TestSource {
                    package: package.clone(),
                    file: path.clone(),
                    text,
                });
            } else if !packages.contains(&package) {
                packages.push(package.clone());
            }
        }
        for package in &packages {
            let sources: Vec<&PathBuf> = package_files
                .iter()
                .filter(|(p, _)| p == package)
                .map(|(_, path)| path)
                .collect();
            for rule in ["applies", "decision"] {
                let declared = sources.iter().any(|path| {
                    engine
                        .has_declared_rule_rooted_at(&path.display().to_string(), rule)
                        .unwrap_or(false)
                });
                if !declared {
                    let path = sources.first().map(|p| p.to_path_buf()).unwrap_or_default();
                    return Err(PolicyError::Structure {
                        path,
                        message: format!(
                            "package {} must define `{rule}` (see DESIGN.md 3.5)",
                            package.trim_start_matches("data.")
                        ),
                    });
                }
            }
        }
        Ok(PolicySet {
            engine,
            packages,
            test_packages,
            files,
            digest: digest.finish(),
        })
    }

    /// SHA-256 over the files these policies were loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The policy packages (`data.esq.policies.<name>`).
    pub fn packages(&self) -> &[String] {
        &self.packages
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Evaluates a ticket request against every policy package.
    pub fn evaluate(&self, input: &TicketPolicyInput) -> Verdict {
        let mut engine = self.engine.clone();
        let json = match serde_json::to_string(input) {
            Ok(json) => json,
            Err(err) => {
                return Verdict::deny(
                    "esq-input",
                    format!("cannot build policy input: {err}"),
                    vec![],
                )
            }
        };
        if let Err(err) = engine.set_input_json(&json) {
            return Verdict::deny(
                "esq-input",
                format!("cannot build policy input: {err}"),
                vec![],
            );
        }
        let mut decisions = Vec::new();
        for package in &self.packages {
            let short = package.trim_start_matches(POLICY_ROOT);
            match engine.eval_rule(format!("{package}.applies")) {
                Ok(regorus::Value::Bool(true)) => {}
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(package = short, error = %err, "policy `applies` failed");
                    decisions.push(failed(short, "its `applies` rule failed to evaluate"));
                    continue;
                }
            }
            let decision = match engine.eval_rule(format!("{package}.decision")) {
                Ok(value) => read_decision(short, &value),
                Err(err) => {
                    tracing::warn!(package = short, error = %err, "policy `decision` failed");
                    failed(
                        short,
                        "its `decision` rule failed to evaluate (error or time-out)",
                    )
                }
            };
            decisions.push(decision);
        }
        decision::combine(&decisions)
    }

    /// Runs every `test_*` rule of every `*_test` package.
    pub fn run_tests(&self) -> TestReport {
        testing::run(&self.engine, &self.test_packages)
    }
}

/// A decision that denies because the package could not give a usable answer.
fn failed(package: &str, why: &str) -> PackageDecision {
    PackageDecision {
        allow: false,
        policy_id: package.to_string(),
        reasons: vec![format!("policy {package} denies: {why}")],
        alternatives: vec![],
        obligations: Obligations::default(),
    }
}

/// Reads a package's `decision` value; anything but a well-formed object with
/// `allow` exactly `true` or `false` is a denial.
fn read_decision(package: &str, value: &regorus::Value) -> PackageDecision {
    if *value == regorus::Value::Undefined {
        return failed(package, "its `decision` is undefined for this request");
    }
    let json = match value.to_json_str() {
        Ok(json) => json,
        Err(_) => return failed(package, "its `decision` is not a JSON object"),
    };
    match serde_json::from_str::<PackageDecision>(&json) {
        Ok(mut decision) => {
            if decision.policy_id.is_empty() {
                decision.policy_id = package.to_string();
            }
            decision
        }
        Err(err) => failed(
            package,
            &format!("its `decision` does not follow the contract ({err})"),
        ),
    }
}
