//! `esq purge`: deletes rows past retention now, in short batches (see
//! [`crate::lifecycle::purge`]), and prints what it did per dataset. Its
//! audit records go to `audit.path`, so it needs the log to itself.

use std::path::Path;

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::app::LoadError;
use crate::audit::AuditError;
use crate::lifecycle::purge::{self, DatasetReport, Options, Status, Trigger};

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Only this dataset (default: every dataset with a retention).
    #[arg(long, value_name = "D")]
    pub dataset: Option<String>,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_path: &Path, args: PurgeArgs) -> u8 {
    let app = match crate::app::App::load(config_path) {
        Ok(app) => app,
        Err(LoadError::Audit(err @ AuditError::InUse { .. })) => {
            eprintln!(
                "error: {err}\n\
                 esq purge records each dataset's purge in the audit log: while `esq serve` \
                 writes it, let serve purge on its `[lifecycle] purge_schedule`, or give this \
                 run an audit log of its own (ESQ_AUDIT__PATH=...)"
            );
            return EXIT_BAD_INPUT;
        }
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_BAD_INPUT;
        }
    };
    let runtime = match super::runtime_or_exit() {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    let options = Options::new(&app, args.dry_run, Trigger::Cli);
    // Nothing stops a command-line purge but the end of its work (or a kill:
    // the next run resumes).
    let (_keep, stop) = tokio::sync::watch::channel(false);
    let outcome = runtime.block_on(purge::run(&app, args.dataset.as_deref(), options, &stop));
    let reports = match outcome {
        Ok(reports) => reports,
        Err(err) => {
            eprintln!("error: {err}; nothing was deleted");
            return if err.is_bad_input() {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILED
            };
        }
    };
    // Expired export bundles go with the rows (not for a one-dataset run).
    let bundles = match (&args.dataset, app.config.exports.enabled()) {
        (None, true) => match runtime.block_on(crate::exports::retention::purge_expired(
            &app.config,
            &*app.audit,
            args.dry_run,
        )) {
            Ok(purged) => Some(purged),
            Err(err) => {
                eprintln!("error: expired export bundles were not purged: {err}");
                return EXIT_FAILED;
            }
        },
        _ => None,
    };
    if args.json {
        let json = serde_json::json!({
            "dry_run": args.dry_run, "datasets": reports, "export_bundles": bundles,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else if reports.is_empty() {
        println!(
            "no dataset has a retention (retention_years and retention_field): nothing to purge"
        );
    } else {
        for report in &reports {
            println!("{}", describe(report));
        }
    }
    if let (Some(bundles), false) = (&bundles, args.json) {
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        println!(
            "exports: {verb} {} expired bundles{}",
            bundles.bundles.len(),
            if bundles.failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} could not be deleted (see the log)",
                    bundles.failed.len()
                )
            }
        );
    }
    if bundles.as_ref().is_some_and(|b| !b.failed.is_empty()) {
        return EXIT_FAILED;
    }
    if reports.iter().any(|r| r.status == Status::Failed) {
        EXIT_FAILED
    } else {
        0
    }
}

/// One dataset's line (and a second one for interrupted runs it closed).
fn describe(r: &DatasetReport) -> String {
    let past = format!("{} before {}", r.retention_field, r.cutoff);
    let mut line = match r.status {
        Status::Skipped => format!("{}: skipped: another esq is purging it", r.dataset),
        Status::Failed => format!(
            "{}: FAILED after deleting {} rows in {} batches ({past}): {}",
            r.dataset,
            r.rows_deleted,
            r.batches,
            r.error.as_deref().unwrap_or("unknown error")
        ),
        Status::Finished if r.dry_run => format!(
            "{}: dry run: {} rows past retention ({past}) would be deleted; nothing deleted",
            r.dataset,
            r.rows_past_retention.unwrap_or(0)
        ),
        Status::Finished => format!(
            "{}: deleted {} rows past retention ({past}) in {} batches, {:.1}s",
            r.dataset, r.rows_deleted, r.batches, r.seconds
        ),
    };
    if !r.interrupted_runs.is_empty() {
        let ids: Vec<String> = r
            .interrupted_runs
            .iter()
            .map(|id| format!("#{id}"))
            .collect();
        line.push_str(&format!(
            "\n{}: earlier run {} had been interrupted (marked failed; its deleted rows stay deleted)",
            r.dataset,
            ids.join(", ")
        ));
    }
    line
}
