//! `esq audit verify <files…>`: checks the audit log's hash chain and names
//! the first bad record. Exit status 0 intact, 1 broken, 2 unreadable.

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::audit::verify::{verify_files, VerifyReport};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit files (any order: they are chained by their records' seq).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn verify(args: VerifyArgs) -> u8 {
    let report = match verify_files(&args.files) {
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
}
