//! `esq forget` (right-to-delete, or `--reapply` after a backup restore)
//! and `esq receipt verify` (see [`crate::lifecycle::forget`] and
//! [`crate::lifecycle::receipt`]). The receipt is the operator's proof:
//! `--json` prints it whole, to keep or hand over.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::lifecycle::forget::{self, Caller, ForgetError, Forgotten, Request};
use crate::lifecycle::reapply::{self, Reapplied};
use crate::lifecycle::receipt::Receipt;
use crate::lifecycle::MaintenanceError;
use crate::metrics::Door;
use crate::signing::PublicKey;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The dataset whose subject is forgotten.
    #[arg(long, value_name = "D")]
    pub dataset: Option<String>,
    /// The subject's key (the dataset's subject_key value).
    #[arg(long, value_name = "KEY")]
    pub subject: Option<String>,
    /// Why (kept in the receipt and the audit log).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Who asked (kept in the receipt and the audit log).
    #[arg(long, value_name = "P")]
    pub requested_by: Option<String>,
    /// Delete again the rows of every tombstoned subject (after a backup
    /// restore); with --dataset, only that dataset's subjects.
    #[arg(long, conflicts_with_all = ["subject", "reason", "requested_by"])]
    pub reapply: bool,
    /// With --reapply: audit log files whose forgets re-create the
    /// tombstones schema esq lacks (after restoring schema esq itself from
    /// a backup); the chain must verify.
    #[arg(long, value_name = "FILE", num_args = 1.., requires = "reapply")]
    pub audit: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt (JSON) to check.
    pub receipt: PathBuf,
    /// Audit log files that must hold the record the receipt cites.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub audit: Vec<PathBuf>,
    /// The public key (default: the `[signing]` key's public half).
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
}

pub fn run(config_path: &Path, args: ForgetArgs) -> u8 {
    let request = if args.reapply {
        None
    } else {
        match request(&args) {
            Ok(request) => Some(request),
            Err(missing) => {
                eprintln!("esq forget: {missing} (or --reapply)");
                return EXIT_BAD_INPUT;
            }
        }
    };
    let app = match super::load_app(config_path) {
        Ok(app) => app,
        Err(status) => return status,
    };
    let runtime = match super::runtime_or_exit() {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "esq".into());
    let caller = Caller {
        user: &user,
        roles: &[],
        door: Door::process,
        client: None,
    };
    match request {
        Some(request) => {
            let result = runtime.block_on(forget::forget(&app, caller, &request));
            match result {
                Ok(done) => print_forgotten(&done, args.json),
                Err(err) => failed(&err),
            }
        }
        None => {
            let result = runtime.block_on(reapply::reapply(
                &app,
                caller,
                args.dataset.as_deref(),
                &args.audit,
            ));
            match result {
                Ok(done) => print_reapplied(&done, args.json),
                Err(err) => failed(&err),
            }
        }
    }
}

/// The four fields a forget needs, or which is missing.
fn request(args: &ForgetArgs) -> Result<Request, String> {
    let need = |value: &Option<String>, flag: &str| {
        value
            .clone()
            .ok_or_else(|| format!("{flag} is required to forget a subject"))
    };
    Ok(Request {
        dataset: need(&args.dataset, "--dataset D")?,
        subject: need(&args.subject, "--subject KEY")?,
        reason: need(&args.reason, "--reason R")?,
        requested_by: need(&args.requested_by, "--requested-by P")?,
    })
}

fn failed(err: &ForgetError) -> u8 {
    eprintln!("esq forget: {err}");
    match err {
        ForgetError::BadInput { .. }
        | ForgetError::NotSetUp(_)
        | ForgetError::Maintenance(MaintenanceError::NotConfigured)
        | ForgetError::Maintenance(MaintenanceError::Config(_)) => EXIT_BAD_INPUT,
        _ => EXIT_FAILED,
    }
}

fn print_forgotten(done: &Forgotten, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&done.receipt).unwrap_or_default()
        );
        return 0;
    }
    let receipt = &done.receipt;
    if done.already() {
        println!(
            "already forgotten: subject {} of {} (receipt {} of {}); nothing deleted now",
            receipt.subject_hash, receipt.dataset, receipt.receipt_id, receipt.at
        );
    } else {
        println!(
            "forgotten: subject {} of {}",
            receipt.subject_hash, receipt.dataset
        );
        for (dataset, rows) in &receipt.rows_deleted {
            println!("  {dataset}: {rows} rows deleted");
        }
        println!(
            "receipt {} (audit record {}); print it whole with --json",
            receipt.receipt_id, receipt.audit_seq
        );
    }
    0
}

fn print_reapplied(done: &Reapplied, json: bool) -> u8 {
    if json {
        println!("{}", serde_json::to_string_pretty(done).unwrap_or_default());
    } else {
        for (dataset, count) in &done.recovered {
            println!("{dataset}: {count} tombstones re-created from the audit log");
        }
        for (dataset, subjects) in &done.subjects {
            println!("{dataset}: {subjects} forgotten subjects reapplied");
        }
        for (dataset, rows) in &done.rows_deleted {
            println!("  {dataset}: {rows} rows deleted again");
        }
        if done.subjects.is_empty() {
            println!("no tombstones to reapply");
        }
    }
    for dataset in &done.unreadable {
        eprintln!(
            "esq forget --reapply: tombstones of {dataset} do not open with this esq's key (lifecycle.subject_key_file or the signing key changed?): their rows were not looked for"
        );
    }
    if done.unreadable.is_empty() {
        0
    } else {
        EXIT_FAILED
    }
}

/// `esq receipt verify`: 0 valid, 1 not (says why), 2 unusable input.
pub fn verify(config_path: &Path, args: VerifyArgs) -> u8 {
    let key = match public_key(config_path, args.pubkey.as_deref()) {
        Ok(key) => key,
        Err(err) => {
            eprintln!("esq receipt verify: {err}");
            return EXIT_BAD_INPUT;
        }
    };
    let checked = Receipt::read(&args.receipt).and_then(|receipt| {
        receipt.verify(&key)?;
        if !args.audit.is_empty() {
            receipt.verify_audit(&args.audit)?;
        }
        Ok(receipt)
    });
    match checked {
        Ok(receipt) => {
            let audit = if args.audit.is_empty() {
                String::new()
            } else {
                format!(
                    "; audit record {} is in the chain with the hash it cites",
                    receipt.audit_seq
                )
            };
            println!(
                "valid: receipt {} signed by key {}{audit}",
                receipt.receipt_id,
                key.id()
            );
            0
        }
        Err(err) => {
            println!("not valid: {err}");
            EXIT_FAILED
        }
    }
}

/// `--pubkey`, else the public half of `[signing] key_file`.
fn public_key(config_path: &Path, given: Option<&Path>) -> Result<PublicKey, String> {
    if let Some(path) = given {
        return PublicKey::load(path).map_err(|err| err.to_string());
    }
    let config = crate::config::Config::load(config_path).map_err(|err| err.to_string())?;
    let private = config.signing.key_file.ok_or(
        "no --pubkey and no [signing] key_file in the config: say which key signed the receipt",
    )?;
    let public = crate::signing::public_path_for(&private);
    let path = if public.exists() { public } else { private };
    PublicKey::load(&path).map_err(|err| err.to_string())
}
