//! Compliance: the NIST SP 800-53 controls esq takes part in, each with a
//! status backed by checks that can fail, the profiles (`HIPAA`,
//! `FISMA-Low`, `FedRAMP-Moderate`) that say which of them are required,
//! and the System Security Plan (`esq ssp`) that reports them.
//!
//! ```text
//! observe (live facts: the service role's privileges and TLS as the
//!          database reports them; the audit chain and signed checkpoints)
//!    └─► controls (config + observations → checks → status) ─► profiles ─► SSP
//! ```
//!
//! Every control lists what it checked ([`Check`]: the check, whether it
//! passed, what was observed). A status is never better than its checks:
//!
//! | status | meaning | `esq check --profile` |
//! |---|---|---|
//! | `satisfied` | every check of the control passed | passes |
//! | `partially_satisfied` | a check the control should pass failed; `reason` names it | fails |
//! | `not_satisfied` | a check the control must pass failed, could not be made ("could not verify: …"), or the feature is not built | fails |
//! | `external` | rests on something esq cannot observe (disk encryption, …): the operator must attest it | passes, listed as "attest" |

mod controls;
pub mod evidence;
pub mod observe;
mod profiles;
mod ssp;

use std::collections::BTreeMap;

use serde::Serialize;

pub use controls::serving_properties;
pub use observe::{observe, observe_blocking, Observations};
pub use profiles::{parse_profiles, Profile, UnknownProfile};
pub use ssp::{
    bundle_summary, plan, system_security_plan, system_security_plan_blocking, SspInputs,
    SystemSecurityPlan,
};

use crate::app::App;

/// A control's implementation status (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Satisfied,
    PartiallySatisfied,
    NotSatisfied,
    External,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Satisfied => "satisfied",
            Status::PartiallySatisfied => "partially_satisfied",
            Status::NotSatisfied => "not_satisfied",
            Status::External => "external",
        }
    }

    /// Whether a profile that requires the control is met by this status.
    pub fn meets_requirement(self) -> bool {
        matches!(self, Status::Satisfied | Status::External)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One control as this configuration implements it.
#[derive(Debug, Clone, Serialize)]
pub struct Control {
    /// NIST SP 800-53 rev. 5 identifier, e.g. `SC-8`.
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// Why this status: what satisfies it, or what was found missing.
    pub reason: String,
    /// What was checked; `satisfied` only when every check passed.
    pub checks: Vec<Check>,
    /// The configuration facts the status rests on (config keys and what
    /// was loaded), so a reader can check the reasoning.
    pub facts: BTreeMap<&'static str, serde_json::Value>,
    /// The requested profiles that require this control.
    pub required_by: Vec<Profile>,
}

/// One check a control made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`the service role is not a superuser`).
    pub check: String,
    pub passed: bool,
    /// What was found (`the service role esq_service is a superuser`).
    pub observed: String,
}

/// Every control esq reports, evaluated against `app` and what was
/// `observed` of the systems it runs with.
pub fn evaluate(app: &App, observed: &Observations) -> Vec<Control> {
    controls::evaluate(app, observed)
}

/// A required control a profile is not met on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub id: &'static str,
    pub status: Status,
    pub reason: String,
    pub profiles: Vec<Profile>,
}

/// Marks which of `profiles` require each control, and returns the
/// required controls whose status does not meet the requirement.
pub fn apply_profiles(controls: &mut [Control], profiles: &[Profile]) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    for control in controls.iter_mut() {
        control.required_by = profiles
            .iter()
            .copied()
            .filter(|p| p.requires(control.id))
            .collect();
        if !control.required_by.is_empty() && !control.status.meets_requirement() {
            unmet.push(Unmet {
                id: control.id,
                status: control.status,
                reason: control.reason.clone(),
                profiles: control.required_by.clone(),
            });
        }
    }
    unmet
}

#[cfg(test)]
mod tests;
