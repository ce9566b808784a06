//! Each control's status, from the loaded [`App`] and the live
//! [`Observations`]: one function per control, grouped by family
//! ([`access`], [`audit`], [`transmission`], [`operations`],
//! [`lifecycle`]). A control
//! records every check it made ([`Checks`]) and its status follows from
//! them: `satisfied` only when there is at least one check and all passed;
//! otherwise the worst failure decides (`not_satisfied` for a check the
//! control must pass, `partially_satisfied` for one it should), and the
//! reason names what was found. `external` controls rest on what esq
//! cannot observe.

mod access;
mod audit;
mod lifecycle;
mod operations;
mod transmission;

use std::collections::BTreeMap;

use serde_json::Value;

use super::observe::Observations;
use super::{Check, Control, Status};
use crate::app::App;

pub use audit::serving_properties;

type Facts = BTreeMap<&'static str, Value>;

/// How a failed check counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weight {
    /// Failing it leaves the control not satisfied.
    Must,
    /// Failing it leaves the control partially satisfied.
    Should,
}

/// The checks one control made, in order.
#[derive(Default)]
struct Checks(Vec<(Check, Weight)>);

impl Checks {
    fn record(&mut self, weight: Weight, check: &str, passed: bool, observed: String) -> bool {
        self.0.push((
            Check {
                check: check.to_string(),
                passed,
                observed,
            },
            weight,
        ));
        passed
    }

    /// A check the control must pass.
    fn must(&mut self, check: &str, passed: bool, observed: impl Into<String>) -> bool {
        self.record(Weight::Must, check, passed, observed.into())
    }

    /// A check whose failure leaves the control partially satisfied.
    fn should(&mut self, check: &str, passed: bool, observed: impl Into<String>) -> bool {
        self.record(Weight::Should, check, passed, observed.into())
    }

    /// The status and reason these checks support: `satisfied` (with
    /// `satisfied`, the control's own account) when all passed, else the
    /// failures' observations.
    fn verdict(self, facts: Facts, satisfied: impl Into<String>) -> Finding {
        let failed: Vec<&(Check, Weight)> = self.0.iter().filter(|(c, _)| !c.passed).collect();
        let (status, reason) = if self.0.is_empty() {
            (
                Status::NotSatisfied,
                "nothing was checked, so nothing is shown".to_string(),
            )
        } else if failed.is_empty() {
            (Status::Satisfied, satisfied.into())
        } else {
            let status = if failed.iter().any(|(_, w)| *w == Weight::Must) {
                Status::NotSatisfied
            } else {
                Status::PartiallySatisfied
            };
            let found: Vec<&str> = failed.iter().map(|(c, _)| c.observed.as_str()).collect();
            (status, found.join("; "))
        };
        Finding {
            status,
            reason,
            facts,
            checks: self.0.into_iter().map(|(c, _)| c).collect(),
        }
    }

    /// A status that rests on something esq cannot observe: what it did
    /// check is listed, but does not decide.
    fn external(self, facts: Facts, reason: impl Into<String>) -> Finding {
        Finding {
            status: Status::External,
            reason: reason.into(),
            facts,
            checks: self.0.into_iter().map(|(c, _)| c).collect(),
        }
    }
}

struct Finding {
    status: Status,
    reason: String,
    facts: Facts,
    checks: Vec<Check>,
}

type Evaluate = fn(&App, &Observations) -> Finding;

/// The controls in report order: id, title, evaluation.
const CONTROLS: &[(&str, &str, Evaluate)] = &[
    ("AC-3", "Access Enforcement", access::enforcement),
    ("AC-6", "Least Privilege", access::least_privilege),
    ("AU-2", "Event Logging", audit::event_logging),
    ("AU-3", "Content of Audit Records", audit::content),
    ("AU-9", "Protection of Audit Information", audit::protection),
    ("AU-10", "Non-repudiation", audit::non_repudiation),
    ("CM-14", "Signed Components", operations::signed_components),
    (
        "IA-2",
        "Identification and Authentication (Organizational Users)",
        access::identification,
    ),
    ("IR-4", "Incident Handling", operations::incident_handling),
    (
        "MP-6",
        "Media Sanitization (right to delete)",
        lifecycle::right_to_delete,
    ),
    (
        "SC-8",
        "Transmission Confidentiality and Integrity",
        transmission::transmission,
    ),
    (
        "SC-13",
        "Cryptographic Protection",
        transmission::cryptography,
    ),
    (
        "SC-28",
        "Protection of Information at Rest",
        transmission::at_rest,
    ),
    ("SI-4", "System Monitoring", operations::monitoring),
    (
        "SI-12",
        "Information Management and Retention",
        lifecycle::retention,
    ),
];

pub fn evaluate(app: &App, observed: &Observations) -> Vec<Control> {
    CONTROLS
        .iter()
        .map(|&(id, title, evaluate)| {
            let Finding {
                status,
                reason,
                facts,
                checks,
            } = evaluate(app, observed);
            Control {
                id,
                title,
                status,
                reason,
                checks,
                facts,
                required_by: Vec::new(),
            }
        })
        .collect()
}

/// `a, b and c`.
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
