//! `esq evidence --since … --out bundle.zip`: the compliance evidence
//! bundle (see [`crate::compliance::evidence`]). Exit status 0 with an
//! intact audit chain, 1 when the chain is broken (the bundle is still
//! written: it shows where), 2 on bad input.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::compliance::evidence;

#[derive(Debug, Args)]
pub struct EvidenceArgs {
    /// Start of the period: an RFC 3339 time (`2026-11-01T00:00:00Z`) or a
    /// duration before now (`24h`, `30d`).
    #[arg(long, value_parser = since)]
    pub since: DateTime<Utc>,
    /// The zip to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

fn since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration such as 24h"))?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{text:?} reaches too far back"))
}

pub fn run(config_path: &Path, args: EvidenceArgs) -> u8 {
    let app = match super::load_app_without_audit_log(config_path) {
        Ok(app) => app,
        Err(status) => return status,
    };
    match evidence::write_bundle(&app, config_path, args.since, &args.out) {
        Ok(bundle) => {
            let manifest = &bundle.manifest;
            eprintln!(
                "wrote {}: {} files, {} audit records since {} in {} audit file(s); audit chain {}",
                args.out.display(),
                manifest.files.len() + 1,
                bundle.records_in_period,
                manifest.since,
                manifest.audit_files.len(),
                if manifest.chain_intact {
                    "intact"
                } else {
                    "BROKEN (see audit-verification.json)"
                }
            );
            if manifest.chain_intact {
                0
            } else {
                EXIT_FAILED
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_BAD_INPUT
        }
    }
}
