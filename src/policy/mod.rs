//! Rego policies (regorus): compiled once at start, evaluated per ticket
//! request with a time limit. Every package under `esq.policies` is a policy
//! with an `applies` and a `decision` rule; a package under `esq` whose name
//! ends in `_test` holds `test_*` rules that `esq check` runs. Only an
//! explicit `allow: true` from every applicable package allows; an undefined
//! decision, an evaluation error or a time-out denies.
//!
//! One more package has a `decision` of its own and is not a ticket policy:
//! `esq.exceptions` ([`EXCEPTION_PACKAGE`]) decides who may approve or deny
//! which exception waiver (DESIGN 3.9). It lives outside `esq.policies` so
//! the ticket evaluation never asks it; without it no waiver is approved.

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

/// The package that decides exception waivers (`package esq.exceptions`).
pub const EXCEPTION_PACKAGE: &str = "data.esq.exceptions";

/// Packages below this prefix whose name ends in `_test` are tests.
const TEST_ROOT: &str = "data.esq.";

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
    /// Whether [`EXCEPTION_PACKAGE`] was loaded (with its `decision`).
    exception_policy: bool,
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
            if package.starts_with(TEST_ROOT) && package.ends_with("_test") {
                test_packages.push(testing::TestSource {
                    package: package.clone(),
                    file: path.clone(),
                    text,
                });
                continue;
            }
            if package == EXCEPTION_PACKAGE {
                package_files.push((package.clone(), path.clone()));
                continue;
            }
            if package.strip_prefix(POLICY_ROOT).is_none() {
                continue; // a helper library, e.g. `package esq.lib`
            }
            package_files.push((package.clone(), path.clone()));
            if !packages.contains(&package) {
                packages.push(package.clone());
            }
        }
        let declares = |package: &str, rule: &str| {
            package_files
                .iter()
                .filter(|(p, _)| p == package)
                .any(|(_, path)| {
                    engine
                        .has_declared_rule_rooted_at(&path.display().to_string(), rule)
                        .unwrap_or(false)
                })
        };
        let exception_policy = package_files.iter().any(|(p, _)| p == EXCEPTION_PACKAGE);
        if exception_policy && !declares(EXCEPTION_PACKAGE, "decision") {
            let path = package_files
                .iter()
                .find(|(p, _)| p == EXCEPTION_PACKAGE)
                .map(|(_, path)| path.clone())
                .unwrap_or_default();
            return Err(PolicyError::Structure {
                path,
                message: "package esq.exceptions must define `decision` (see docs/exports-and-exceptions.md)".into(),
            });
        }
        for package in &packages {
            let sources: Vec<&PathBuf> = package_files
                .iter()
                .filter(|(p, _)| p == package)
                .map(|(_, path)| path)
                .collect();
            for rule in ["applies", "decision"] {
                if !declares(package, rule) {
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
            exception_policy,
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
        match self.decisions(input) {
            Ok(evaluated) => {
                let decisions: Vec<PackageDecision> =
                    evaluated.into_iter().map(|e| e.decision).collect();
                decision::combine(&decisions)
            }
            Err(verdict) => *verdict,
        }
    }

    /// Evaluates a ticket request made under an exception waiver the
    /// caller has checked the request against: the denials of applicable
    /// packages are waived (their ids come back second), the allowing ones
    /// still contribute their obligations. A package that could not give a
    /// usable answer (an error, a time-out, an undefined or malformed
    /// decision) still denies: a waiver lifts a policy's judgement, never a
    /// failure to judge.
    pub fn evaluate_waiving(&self, input: &TicketPolicyInput) -> (Verdict, Vec<String>) {
        let evaluated = match self.decisions(input) {
            Ok(evaluated) => evaluated,
            Err(verdict) => return (*verdict, Vec::new()),
        };
        if evaluated.iter().any(|e| !e.usable) {
            let decisions: Vec<PackageDecision> =
                evaluated.into_iter().map(|e| e.decision).collect();
            return (decision::combine(&decisions), Vec::new());
        }
        let policy_ids: Vec<String> = evaluated
            .iter()
            .map(|e| e.decision.policy_id.clone())
            .collect();
        // A waiver lifts a denial, never an obligation: a denying
        // package's obligations (what it states still holds under a
        // waiver, e.g. FOIA's privacy, a state's row filter) narrow the
        // grant like an allowing package's.
        let waived: Vec<String> = evaluated
            .iter()
            .filter(|e| !e.decision.allow)
            .map(|e| e.decision.policy_id.clone())
            .collect();
        let kept: Vec<PackageDecision> = evaluated
            .into_iter()
            .map(|e| PackageDecision {
                allow: true,
                reasons: Vec::new(),
                alternatives: Vec::new(),
                ..e.decision
            })
            .collect();
        let mut verdict = if kept.is_empty() {
            // Nothing applied: the waiver's scope is the grant.
            Verdict {
                allow: true,
                policy_ids: Vec::new(),
                denied_by: Vec::new(),
                reasons: Vec::new(),
                alternatives: Vec::new(),
                obligations: Obligations::default(),
            }
        } else {
            decision::combine(&kept)
        };
        verdict.policy_ids = policy_ids;
        (verdict, waived)
    }

    /// Whether `package esq.exceptions` is loaded.
    pub fn has_exception_policy(&self) -> bool {
        self.exception_policy
    }

    /// The `decision` of [`EXCEPTION_PACKAGE`] for `input`, as JSON; `Err`
    /// (for the log) when there is no such package, or it errs, times out
    /// or is undefined for this input. The caller reads the decision and
    /// denies on anything but an explicit `allow: true`.
    pub fn evaluate_exception(
        &self,
        input: &impl serde::Serialize,
    ) -> Result<serde_json::Value, String> {
        if !self.exception_policy {
            return Err("no policy package esq.exceptions is loaded".into());
        }
        let mut engine = self.engine.clone();
        let json = serde_json::to_string(input).map_err(|err| format!("input: {err}"))?;
        engine
            .set_input_json(&json)
            .map_err(|err| format!("input: {err}"))?;
        let value = engine
            .eval_rule(format!("{EXCEPTION_PACKAGE}.decision"))
            .map_err(|err| format!("evaluation failed (error or time-out): {err}"))?;
        if value == regorus::Value::Undefined {
            return Err("its `decision` is undefined for this input".into());
        }
        let text = value
            .to_json_str()
            .map_err(|_| "its `decision` is not JSON".to_string())?;
        serde_json::from_str(&text).map_err(|err| format!("its `decision` is not JSON: {err}"))
    }

    /// Every applicable package's decision (`Err`: the input could not be
    /// given to the engine, which denies).
    fn decisions(&self, input: &TicketPolicyInput) -> Result<Vec<Evaluated>, Box<Verdict>> {
        let mut engine = self.engine.clone();
        let json = match serde_json::to_string(input) {
            Ok(json) => json,
            Err(err) => {
                return Err(Box::new(Verdict::deny(
                    "esq-input",
                    format!("cannot build policy input: {err}"),
                    vec![],
                )))
            }
        };
        if let Err(err) = engine.set_input_json(&json) {
            return Err(Box::new(Verdict::deny(
                "esq-input",
                format!("cannot build policy input: {err}"),
                vec![],
            )));
        }
        let mut decisions = Vec::new();
        for package in &self.packages {
            let short = package.trim_start_matches(POLICY_ROOT);
            match engine.eval_rule(format!("{package}.applies")) {
                Ok(regorus::Value::Bool(true)) => {}
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(package = short, error = %err, "policy `applies` failed");
                    decisions.push(Evaluated::failed(
                        short,
                        "its `applies` rule failed to evaluate",
                    ));
                    continue;
                }
            }
            let decision = match engine.eval_rule(format!("{package}.decision")) {
                Ok(value) => read_decision(short, &value),
                Err(err) => {
                    tracing::warn!(package = short, error = %err, "policy `decision` failed");
                    Evaluated::failed(
                        short,
                        "its `decision` rule failed to evaluate (error or time-out)",
                    )
                }
            };
            decisions.push(decision);
        }
        Ok(decisions)
    }

    /// Runs every `test_*` rule of every `*_test` package.
    pub fn run_tests(&self) -> TestReport {
        testing::run(&self.engine, &self.test_packages)
    }
}

/// One applicable package's decision, and whether the package gave one
/// (`usable: false`: it failed to, and the decision is a denial standing
/// in for it, which no waiver lifts).
struct Evaluated {
    decision: PackageDecision,
    usable: bool,
}

impl Evaluated {
    /// A decision that denies because the package could not give a usable
    /// answer.
    fn failed(package: &str, why: &str) -> Evaluated {
        Evaluated {
            decision: PackageDecision {
                allow: false,
                policy_id: package.to_string(),
                reasons: vec![format!("policy {package} denies: {why}")],
                alternatives: vec![],
                obligations: Obligations::default(),
            },
            usable: false,
        }
    }
}

/// Reads a package's `decision` value; anything but a well-formed object with
/// `allow` exactly `true` or `false` is a denial.
fn read_decision(package: &str, value: &regorus::Value) -> Evaluated {
    if *value == regorus::Value::Undefined {
        return Evaluated::failed(package, "its `decision` is undefined for this request");
    }
    let json = match value.to_json_str() {
        Ok(json) => json,
        Err(_) => return Evaluated::failed(package, "its `decision` is not a JSON object"),
    };
    // serde would read a struct from an array too (`[true]`): only an
    // object is a decision.
    if !json.trim_start().starts_with('{') {
        return Evaluated::failed(package, "its `decision` is not a JSON object");
    }
    match serde_json::from_str::<PackageDecision>(&json) {
        Ok(mut decision) => {
            if decision.policy_id.is_empty() {
                decision.policy_id = package.to_string();
            }
            Evaluated {
                decision,
                usable: true,
            }
        }
        Err(err) => Evaluated::failed(
            package,
            &format!("its `decision` does not follow the contract ({err})"),
        ),
    }
}
