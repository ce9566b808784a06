//! The command line: `esq check`, `esq passwd`, `esq token`,
//! `esq ticket issue`, `esq explain`, `esq sample-data`, `esq ssp`,
//! `esq audit verify`, `esq evidence`, `esq keys generate`, `esq seal`,
//! `esq migrate`, `esq purge`, `esq forget`, `esq receipt verify`,
//! `esq kek generate|rotate`, `esq export decrypt`, `esq setup upstream`. Each subcommand lives in its own
//! file; this one parses and dispatches. Exit status: 0 success, 1 a check
//! failed or a request was denied, 2 bad input or configuration.

mod audit;
mod check;
mod evidence;
mod explain;
mod export;
mod forget;
mod lifecycle;
mod purge;
mod seal;
mod secrets;
mod serve;
mod setup;
mod ssp;
mod ticket;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// A check failed or a request was denied.
pub const EXIT_FAILED: u8 = 1;
/// Bad input, config, catalog or policies.
pub const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "esq",
    version,
    about = "A data-access guard proxy in front of PostgreSQL"
)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        env = "ESQ_CONFIG",
        default_value = "config/esq.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run both doors (PostgreSQL and HTTP) until SIGINT or SIGTERM.
    Serve,
    /// TLS certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Validate config, catalog and policies, and run the policy tests.
    Check(check::CheckArgs),
    /// Print a SCRAM-SHA-256 verifier for a user's `scram_verifier`.
    Passwd(secrets::PasswdArgs),
    /// Print a new API token and the hash to put in `api_token_sha256`.
    Token,
    /// Tickets.
    #[command(subcommand)]
    Ticket(TicketCommand),
    /// Show what the guard decides for a statement under a scope.
    Explain(explain::ExplainArgs),
    /// Print SQL that creates and fills the sample table public.burial_2024.
    SampleData(SampleDataArgs),
    /// Write the System Security Plan (JSON) of the running configuration.
    Ssp(ssp::SspArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write a compliance evidence bundle (zip): audit files of the period,
    /// chain verification, SSP.json, config and policy hashes, manifest.
    Evidence(evidence::EvidenceArgs),
    /// The Ed25519 key that signs audit checkpoints, seals and receipts.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign the bundle (config without secrets, catalog, policies) with
    /// the `[signing]` key; production serves only a sealed bundle.
    Seal(seal::SealArgs),
    /// Create or upgrade schema `esq` (esq's own tables) in the upstream
    /// database, as the `[maintenance]` role.
    Migrate(lifecycle::MigrateArgs),
    /// Delete rows past their dataset's retention, in short batches.
    Purge(purge::PurgeArgs),
    /// Right-to-delete: delete a subject's rows (and linked rows), keep a
    /// tombstone, print a signed receipt; or `--reapply` the tombstones.
    Forget(forget::ForgetArgs),
    /// Deletion receipts.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// Key-encryption keys of export bundles.
    #[command(subcommand)]
    Kek(export::KekCommand),
    /// Sealed export bundles.
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Set up what esq needs outside itself.
    #[command(subcommand)]
    Setup(setup::SetupCommand),
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt's signature and, with --audit, that the audit log
    /// holds the record it cites. Exit status 0 valid, 1 not.
    Verify(forget::VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new key (private to --out, public to --out.pub) and print
    /// the public key.
    Generate(seal::GenerateArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit files; names the first bad record.
    /// Exit status 0 intact, 1 broken, 2 unreadable.
    Verify(audit::VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a development CA and a localhost server certificate signed by it.
    Dev(serve::CertsDevArgs),
}

#[derive(Debug, Subcommand)]
pub enum TicketCommand {
    /// Ask the policies for a ticket and print it, or the denial.
    Issue(ticket::IssueArgs),
}

#[derive(Debug, Args)]
pub struct SampleDataArgs {
    /// Rows to generate.
    #[arg(long, default_value_t = crate::sample_data::DEFAULT_ROWS)]
    pub rows: u64,
    /// Seed of the deterministic generator.
    #[arg(long, default_value_t = crate::sample_data::DEFAULT_SEED)]
    pub seed: u64,
}

pub fn run(cli: Cli) -> ExitCode {
    // `esq serve` sets up logging from its config instead.
    if !matches!(cli.command, Command::Serve) {
        init_logging();
    }
    let status = match cli.command {
        Command::Serve => serve::serve(&cli.config),
        Command::Certs(CertsCommand::Dev(args)) => serve::certs_dev(args),
        Command::Check(args) => check::run(&cli.config, args),
        Command::Passwd(args) => secrets::passwd(args),
        Command::Token => secrets::token(),
        Command::Ticket(TicketCommand::Issue(args)) => ticket::issue(&cli.config, args),
        Command::Explain(args) => explain::run(&cli.config, args),
        Command::SampleData(args) => sample_data(args),
        Command::Ssp(args) => ssp::run(&cli.config, args),
        Command::Audit(AuditCommand::Verify(args)) => audit::verify(args),
        Command::Evidence(args) => evidence::run(&cli.config, args),
        Command::Keys(KeysCommand::Generate(args)) => seal::generate(args),
        Command::Seal(args) => seal::run(&cli.config, args),
        Command::Migrate(args) => lifecycle::migrate(&cli.config, args),
        Command::Purge(args) => purge::run(&cli.config, args),
        Command::Forget(args) => forget::run(&cli.config, args),
        Command::Receipt(ReceiptCommand::Verify(args)) => forget::verify(&cli.config, args),
        Command::Kek(command) => export::kek(&cli.config, command),
        Command::Export(command) => export::export(&cli.config, command),
        Command::Setup(command) => setup::run(&cli.config, command),
    };
    ExitCode::from(status)
}

fn sample_data(args: SampleDataArgs) -> u8 {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match crate::sample_data::write_sql(&mut out, args.rows, args.seed)
        .and_then(|()| std::io::Write::flush(&mut out))
    {
        Ok(()) => 0,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(err) => {
            eprintln!("esq sample-data: {err}");
            EXIT_FAILED
        }
    }
}

/// Commands log warnings to stderr; `RUST_LOG` changes the level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(crate::telemetry::stderr_wants_colour())
        .try_init();
}

/// Logging for `esq serve`: the config's filter and format, unless
/// `RUST_LOG` says otherwise.
fn init_serve_logging(log: &crate::config::LogConfig) {
    let _ = crate::telemetry::try_init_stderr(log);
}

/// Loads config, catalog and policies and opens the audit log, or prints
/// why not (exit status 2).
fn load_app(config_path: &std::path::Path) -> Result<crate::app::App, u8> {
    crate::app::App::load(config_path).map_err(|err| {
        eprintln!("error: {err}");
        EXIT_BAD_INPUT
    })
}

/// As [`load_app`], for commands that record nothing: no audit log opened.
fn load_app_without_audit_log(config_path: &std::path::Path) -> Result<crate::app::App, u8> {
    crate::app::App::load_without_audit_log(config_path).map_err(|err| {
        eprintln!("error: {err}");
        EXIT_BAD_INPUT
    })
}

/// `--where FIELD=VALUE` pairs as a ticket request's `where`.
fn parse_where(
    pairs: &[String],
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, String> {
    pairs
        .iter()
        .map(|pair| {
            let (field, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("--where {pair:?}: write FIELD=VALUE"))?;
            Ok((
                field.trim().to_string(),
                serde_json::Value::String(value.trim().to_string()),
            ))
        })
        .collect()
}

/// [`runtime`], or the exit status after saying why there is none.
fn runtime_or_exit() -> Result<tokio::runtime::Runtime, u8> {
    runtime().map_err(|err| {
        eprintln!("error: cannot start runtime: {err}");
        EXIT_FAILED
    })
}

/// A current-thread runtime for the commands that talk to a database.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
