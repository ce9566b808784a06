//! `esq ssp`: writes the System Security Plan of the running configuration
//! as JSON (to `--out` or stdout), and the `--profile` part of `esq check`.
//! Both first observe the upstream database (as esq's service role) and the
//! audit log, on a runtime of their own.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::app::App;
use crate::compliance::{self, Profile, SspInputs, Status, SystemSecurityPlan, Unmet};

#[derive(Debug, Args)]
pub struct SspArgs {
    /// Where to write the JSON (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Mark the controls these profiles require (comma-separated:
    /// HIPAA, FISMA-Low, FedRAMP-Moderate).
    #[arg(long, value_name = "LIST", value_parser = profile_list)]
    pub profile: Option<ProfileList>,
}

/// `--profile HIPAA,FedRAMP-Moderate` (one argument, comma-separated).
#[derive(Debug, Clone)]
pub struct ProfileList(pub Vec<Profile>);

pub fn profile_list(text: &str) -> Result<ProfileList, String> {
    compliance::parse_profiles(text)
        .map(ProfileList)
        .map_err(|err| err.to_string())
}

pub fn run(config_path: &Path, args: SspArgs) -> u8 {
    let app = match super::load_app_without_audit_log(config_path) {
        Ok(app) => app,
        Err(status) => return status,
    };
    let inputs = SspInputs {
        config_path: Some(config_path.to_path_buf()),
        profiles: args.profile.map(|p| p.0).unwrap_or_default(),
    };
    let Some((ssp, _)) = observed_plan(&app, &inputs) else {
        return EXIT_FAILED;
    };
    let json = match serde_json::to_string_pretty(&ssp) {
        Ok(json) => json + "\n",
        Err(err) => {
            eprintln!("error: cannot encode the SSP: {err}");
            return EXIT_FAILED;
        }
    };
    match &args.out {
        None => print!("{json}"),
        Some(path) => {
            if let Err(err) = std::fs::write(path, json) {
                eprintln!("error: cannot write {}: {err}", path.display());
                return EXIT_BAD_INPUT;
            }
            let counts: Vec<String> = ssp
                .summary
                .iter()
                .map(|(status, n)| format!("{n} {status}"))
                .collect();
            eprintln!(
                "wrote {}: {} controls ({})",
                path.display(),
                ssp.controls.len(),
                counts.join(", ")
            );
        }
    }
    0
}

/// `esq check --profile`: each requested profile's required controls; 1
/// when one is not met, naming each unmet control and why.
pub fn check_profiles(app: &App, config_path: &Path, profiles: &[Profile]) -> u8 {
    let inputs = SspInputs {
        config_path: Some(config_path.to_path_buf()),
        profiles: profiles.to_vec(),
    };
    let Some((ssp, unmet)) = observed_plan(app, &inputs) else {
        return EXIT_FAILED;
    };
    for result in &ssp.profiles {
        println!(
            "profile   {}: {} of {} required controls met{}",
            result.profile,
            result.required.len() - result.unmet.len(),
            result.required.len(),
            if result.met { "" } else { " (NOT MET)" }
        );
    }
    for control in ssp.controls.iter().filter(|c| !c.required_by.is_empty()) {
        if control.status == Status::External {
            println!(
                "attest    {} {}: {}",
                control.id, control.title, control.reason
            );
        }
    }
    for miss in &unmet {
        let by: Vec<&str> = miss.profiles.iter().map(|p| p.name()).collect();
        eprintln!(
            "{} required by {} is {}: {}",
            miss.id,
            by.join(", "),
            miss.status,
            miss.reason
        );
    }
    if unmet.is_empty() {
        0
    } else {
        EXIT_FAILED
    }
}

/// Observes and builds the plan on a runtime of its own (`None`, said on
/// stderr, when no runtime starts).
fn observed_plan(app: &App, inputs: &SspInputs) -> Option<(SystemSecurityPlan, Vec<Unmet>)> {
    match super::runtime() {
        Ok(runtime) => Some(runtime.block_on(compliance::system_security_plan(app, inputs))),
        Err(err) => {
            eprintln!("error: cannot start a runtime: {err}");
            None
        }
    }
}
