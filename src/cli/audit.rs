//! `esq audit verify <files…> [--checkpoints F --pubkey P]`: checks the
//! audit log's hash chain and names the first bad record; with the signed
//! checkpoints and the public key of esq's signing key, also a forged
//! checkpoint, a rewritten tail and a cut end (see
//! [`crate::audit::verify`]). Exit status 0 intact, 1 broken, 2 unreadable.

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::audit::verify::{verify_files, verify_with_checkpoints, VerifyReport};
use crate::signing::PublicKey;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit files (any order: they are chained by their records' seq).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The signed checkpoints (`audit.checkpoints` beside `audit.jsonl`, or
    /// the `audit.checkpoint_copy`); needs --pubkey.
    #[arg(long, value_name = "FILE", requires = "pubkey")]
    pub checkpoints: Option<PathBuf>,
    /// The public key of esq's `[signing]` key (`esq keys generate` wrote
    /// it as `<key>.pub`); needs --checkpoints.
    #[arg(long, value_name = "FILE", requires = "checkpoints")]
    pub pubkey: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn verify(args: VerifyArgs) -> u8 {
    let verified = match (&args.checkpoints, &args.pubkey) {
        (Some(checkpoints), Some(pubkey)) => match PublicKey::load(pubkey) {
            Ok(key) => verify_with_checkpoints(&args.files, checkpoints, &key),
            Err(err) => {
                eprintln!("esq audit verify: {err}");
                return EXIT_BAD_INPUT;
            }
        },
        _ => verify_files(&args.files),
    };
    let report = match verified {
        Ok(report) => report,
        Err(err) => {
            eprintln!("esq audit verify: {err}");
            return EXIT_BAD_INPUT;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("esq audit verify: {err}");
                return EXIT_FAILED;
            }
        }
    } else {
        print_summary(&report);
    }
    if report.ok() {
        0
    } else {
        EXIT_FAILED
    }
}

fn print_summary(report: &VerifyReport) {
    for torn in &report.torn {
        println!(
            "note: {} line {} is an incomplete record (a torn write from a crash; never reported durable)",
            torn.file.display(),
            torn.line
        );
    }
    match &report.problem {
        Some(problem) => println!(
            "BROKEN: {} line {}{}: {}",
            problem.at.file.display(),
            problem.at.line,
            problem
                .at
                .seq
                .map(|s| format!(" (seq {s})"))
                .unwrap_or_default(),
            problem.what
        ),
        None => println!(
            "ok: {} records in {} file(s), seq {}..{}{}; last hash {}",
            report.records,
            report.files.len(),
            report.first_seq.unwrap_or(0),
            report.last_seq.unwrap_or(0),
            if report.from_genesis {
                ", from the first record"
            } else {
                " (the chain starts after record 1: earlier files not given)"
            },
            report.last_hash.as_deref().unwrap_or("-")
        ),
    }
    let Some(checkpoints) = &report.checkpoints else {
        return;
    };
    match &checkpoints.problem {
        Some(problem) => println!("BROKEN: {}", problem.what),
        None => println!(
            "ok: {} checkpoint(s) in {} signed by key {}, {} matching the chain; newest covers seq {} ({}){}",
            checkpoints.count,
            checkpoints.file.display(),
            checkpoints.key_id,
            checkpoints.matched,
            checkpoints.newest_seq.unwrap_or(0),
            checkpoints.newest_time.as_deref().unwrap_or("none"),
            match checkpoints.uncovered {
                0 => String::new(),
                n => format!("; {n} later record(s) are covered by the chain only"),
            }
        ),
    }
}
