//! `esq migrate`: creates or upgrades schema `esq` in the upstream database
//! as the maintenance role (see [`crate::lifecycle::migrate`]).

use std::path::Path;

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::config::Config;
use crate::lifecycle::{migrate, Maintenance, MaintenanceError};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn migrate(config_path: &Path, args: MigrateArgs) -> u8 {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_BAD_INPUT;
        }
    };
    let runtime = match super::runtime_or_exit() {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    let outcome = runtime.block_on(async {
        let mut maintenance = Maintenance::connect(&config).await?;
        migrate::migrate(&mut maintenance.client).await
    });
    match outcome {
        Ok(done) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&done).unwrap_or_default()
            );
            0
        }
        Ok(done) => {
            if done.applied.is_empty() {
                println!("schema esq is current (version {})", done.version);
            } else {
                println!(
                    "schema esq: applied {} (now version {})",
                    done.applied.join(", "),
                    done.version
                );
            }
            0
        }
        Err(err @ MaintenanceError::NotConfigured) | Err(err @ MaintenanceError::Config(_)) => {
            eprintln!("error: {err}");
            EXIT_BAD_INPUT
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_FAILED
        }
    }
}
