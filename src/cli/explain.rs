//! `esq explain "SQL"`: what the guard decides for a statement under a scope
//! — the rewritten SQL, dropped columns and classification, or the denial
//! with detail and hint. The scope comes from a file (`--scope-file`, the
//! JSON that `esq ticket issue --json` prints, or its `scope`), or from a
//! ticket request issued in-process (`--user … --dataset … --fields …`).

use std::path::{Path, PathBuf};

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::app::App;
use crate::guard::Decision;
use crate::tickets::{IssueError, Scope, TicketRequest};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The statement(s) to decide.
    pub sql: String,
    /// A scope as JSON (a whole `esq ticket issue --json` answer or its `scope`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["user", "ticket"])]
    pub scope_file: Option<PathBuf>,
    /// A ticket id (needs a shared ticket store; see --scope-file).
    #[arg(long, conflicts_with = "user")]
    pub ticket: Option<String>,
    /// Issue a scope in-process for this configured user…
    #[arg(long, requires_all = ["dataset", "fields", "purpose"])]
    pub user: Option<String>,
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, value_delimiter = ',')]
    pub fields: Option<Vec<String>>,
    #[arg(long)]
    pub aggregate: Option<String>,
    #[arg(long)]
    pub purpose: Option<String>,
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub where_: Vec<String>,
    /// Decide as a session without a ticket.
    #[arg(long, conflicts_with_all = ["scope_file", "ticket", "user"])]
    pub no_ticket: bool,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config_path: &Path, args: ExplainArgs) -> u8 {
    let app = match super::load_app_without_audit_log(config_path) {
        Ok(app) => app,
        Err(status) => return status,
    };
    let scope = match scope(&app, &args) {
        Ok(scope) => scope,
        Err((status, message)) => {
            eprintln!("error: {message}");
            return status;
        }
    };
    // explain releases nothing, so it may show private rewrites and their
    // release plan (the doors' guard refuses them until they release).
    let guard = app.bundle().guard.clone();
    let decision = guard.decide(scope.as_ref(), &args.sql);
    if args.json {
        match serde_json::to_string_pretty(&decision) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("error: {err}"),
        }
    } else {
        print(&decision);
    }
    match decision {
        Decision::Allow(_) => 0,
        Decision::Deny(_) => EXIT_FAILED,
    }
}

type Failure = (u8, String);

fn scope(app: &App, args: &ExplainArgs) -> Result<Option<Scope>, Failure> {
    if args.no_ticket {
        return Ok(None);
    }
    if let Some(path) = &args.scope_file {
        return read_scope_file(path).map(Some);
    }
    if args.ticket.is_some() {
        return Err((
            EXIT_BAD_INPUT,
            "--ticket needs a ticket store shared with the server (Redis); with the in-memory \
             store use --scope-file or --user/--dataset/--fields/--purpose"
                .into(),
        ));
    }
    let Some(user) = &args.user else {
        return Err((
            EXIT_BAD_INPUT,
            "say whose scope: --scope-file FILE, --user … --dataset … --fields … --purpose …, or --no-ticket".into(),
        ));
    };
    let principal = app
        .bundle()
        .users
        .principal(user)
        .cloned()
        .ok_or_else(|| (EXIT_BAD_INPUT, format!("no user {user:?} in the config")))?;
    let where_ = super::parse_where(&args.where_).map_err(|message| (EXIT_BAD_INPUT, message))?;
    let request = TicketRequest {
        dataset: args.dataset.clone().unwrap_or_default(),
        purpose: args.purpose.clone().unwrap_or_default(),
        fields: args.fields.clone().unwrap_or_default(),
        aggregate: args.aggregate.clone(),
        ttl: None,
        where_,
        privacy: None,
        exception: None,
    };
    let runtime =
        super::runtime().map_err(|err| (EXIT_FAILED, format!("cannot start runtime: {err}")))?;
    match runtime.block_on(
        app.bundle()
            .tickets
            .issue(&principal, &request, chrono::Utc::now()),
    ) {
        Ok(issued) => Ok(Some(issued.scope)),
        Err(IssueError::Denied(verdict)) => Err((
            EXIT_FAILED,
            format!(
                "no ticket: denied by {}: {}",
                verdict.denied_by.join(", "),
                verdict.reasons.join("; ")
            ),
        )),
        Err(err) => Err((EXIT_BAD_INPUT, err.to_string())),
    }
}

fn read_scope_file(path: &Path) -> Result<Scope, Failure> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        (
            EXIT_BAD_INPUT,
            format!("cannot read {}: {err}", path.display()),
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|err| {
        (
            EXIT_BAD_INPUT,
            format!("{}: not JSON: {err}", path.display()),
        )
    })?;
    let scope = value.get("scope").cloned().unwrap_or(value);
    serde_json::from_value(scope).map_err(|err| {
        (
            EXIT_BAD_INPUT,
            format!("{}: not a scope: {err}", path.display()),
        )
    })
}

fn print(decision: &Decision) {
    match decision {
        Decision::Allow(allowed) => {
            println!("decision  allow");
            println!("sql       {}", allowed.sql);
            if !allowed.dropped.is_empty() {
                println!("dropped   {}", allowed.dropped.join(", "));
            }
            println!("class     {}", allowed.classification);
            if let Some(plan) = &allowed.private {
                println!(
                    "private   epsilon {} per answer, budget {} per {} s; at most {} group(s) per person; groups shown above a noisy threshold (never below k = {}); count in column {}",
                    crate::privacy::params::from_micro(plan.epsilon_per_query_micro),
                    crate::privacy::params::from_micro(plan.epsilon_budget_micro),
                    plan.budget_period_seconds,
                    plan.max_groups_per_unit,
                    plan.min_group_size,
                    plan.count_column + 1,
                );
            }
        }
        Decision::Deny(denial) => {
            println!("decision  deny ({})", denial.code);
            println!("reason    {}", denial.reason);
            println!("detail    {}", denial.detail);
            if let Some(policy) = &denial.policy_id {
                println!("policy    {policy}");
            }
            println!("hint      {}", denial.hint);
        }
    }
}
