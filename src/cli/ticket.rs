//! `esq ticket issue`: ask the policies for a ticket as a configured user and
//! print the ticket with its scope, or the denial with reasons and
//! alternatives; `--exception X-…` issues under an approved exception
//! waiver of the user's (DESIGN 3.9).

use std::path::Path;

use clap::Args;

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::exceptions::tickets::TicketError;
use crate::tickets::{IssueError, IssuedTicket, TicketRequest};

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The configured user asking.
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub dataset: String,
    /// Comma-separated field names.
    #[arg(long, value_delimiter = ',', required = true)]
    pub fields: Vec<String>,
    /// An aggregate the answers are restricted to (`count`).
    #[arg(long)]
    pub aggregate: Option<String>,
    /// Why the data is needed (recorded; policies decide on it).
    #[arg(long)]
    pub purpose: String,
    /// Lifetime, e.g. `10m` (default from config).
    #[arg(long)]
    pub ttl: Option<String>,
    /// Narrow the rows: `FIELD=VALUE`, repeatable.
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    pub where_: Vec<String>,
    /// An approved exception waiver of the user's (`X-…`) to issue the
    /// ticket under (needs `[maintenance]`).
    #[arg(long)]
    pub exception: Option<String>,
    /// Print the answer as JSON (the HTTP door's shape).
    #[arg(long)]
    pub json: bool,
}

pub fn issue(config_path: &Path, args: IssueArgs) -> u8 {
    let app = match super::load_app_without_audit_log(config_path) {
        Ok(app) => app,
        Err(status) => return status,
    };
    let bundle = app.bundle();
    let Some(user) = bundle.users.principal(&args.user).cloned() else {
        eprintln!(
            "error: no user {:?} in {}; configured users: {}",
            args.user,
            config_path.display(),
            bundle.users.names().collect::<Vec<_>>().join(", ")
        );
        return EXIT_BAD_INPUT;
    };
    let where_ = match super::parse_where(&args.where_) {
        Ok(where_) => where_,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let request = TicketRequest {
        dataset: args.dataset,
        purpose: args.purpose,
        fields: args.fields.iter().map(|f| f.trim().to_string()).collect(),
        aggregate: args.aggregate,
        ttl: args.ttl,
        where_,
        privacy: None,
        exception: args.exception.clone(),
    };
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start runtime: {err}");
            return EXIT_FAILED;
        }
    };
    let result = runtime.block_on(async {
        match request.exception {
            None => app
                .bundle()
                .tickets
                .issue(&user, &request, chrono::Utc::now())
                .await
                .map_err(TicketError::Issue),
            Some(_) => {
                let caller = crate::exceptions::Caller {
                    user: &user,
                    door: crate::metrics::Door::process,
                    client: None,
                };
                crate::exceptions::tickets::issue(&app, caller, &request, chrono::Utc::now()).await
            }
        }
    });
    let result = match result {
        Ok(issued) => Ok(issued),
        Err(TicketError::Issue(err)) => Err(err),
        Err(TicketError::Exception(err)) => {
            eprintln!("error: {err}");
            return EXIT_FAILED;
        }
    };
    match result {
        Ok(issued) => {
            print_issued(&issued, args.json);
            if app.config.tickets.store == "memory" {
                eprintln!(
                    "note: with tickets.store = \"memory\" this ticket lives only inside this esq process; \
                     it shows what the policies grant."
                );
            }
            0
        }
        Err(IssueError::Denied(mut verdict)) => {
            if request.exception.is_none() && app.config.maintenance.is_some() {
                verdict.alternatives.push(crate::exceptions::alternative(
                    request.dataset.trim(),
                    &request.fields,
                    request.aggregate.as_deref(),
                ));
            }
            if args.json {
                let body = serde_json::json!({
                    "error": "denied",
                    "reason": verdict.reasons.join("; "),
                    "reasons": verdict.reasons,
                    "policy_id": verdict.denied_by.join(","),
                    "alternatives": verdict.alternatives,
                });
                println!("{body:#}");
            } else {
                eprintln!("denied by {}", verdict.denied_by.join(", "));
                for reason in &verdict.reasons {
                    eprintln!("  reason:      {reason}");
                }
                for alternative in &verdict.alternatives {
                    eprintln!("  alternative: {alternative}");
                }
            }
            EXIT_FAILED
        }
        Err(IssueError::BadRequest(bad)) => {
            eprintln!("error: {bad}");
            EXIT_BAD_INPUT
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_FAILED
        }
    }
}

fn print_issued(issued: &IssuedTicket, json: bool) {
    if json {
        match serde_json::to_string_pretty(issued) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("error: {err}"),
        }
        return;
    }
    let scope = &issued.scope;
    println!("ticket    {}", issued.ticket);
    println!("expires   {} ({})", issued.expires, issued.expires_at);
    println!("scope     {} on dataset {}", scope.id, scope.dataset);
    println!("fields    {}", scope.fields.join(", "));
    match (scope.aggregate, &scope.privacy) {
        (Some(aggregate), Some(privacy)) => println!(
            "answers   aggregate {} only, differentially private: epsilon {} an answer, {} per {}s, each person in at most {} group(s); groups released above a noisy threshold (at least {})",
            aggregate.as_str(),
            privacy.epsilon_per_query,
            privacy.epsilon_budget,
            privacy.budget_period_seconds,
            privacy.max_groups_per_unit,
            scope.min_group_size
        ),
        (Some(aggregate), None) => println!(
            "answers   aggregate {} only, groups smaller than {} suppressed",
            aggregate.as_str(),
            scope.min_group_size
        ),
        (None, _) => println!("answers   row-level"),
    }
    for (field, value) in &scope.row_filters {
        println!("rows      {field} = {value}");
    }
    if let Some(cutoff) = scope.retention_cutoff {
        println!("rows      retained since {cutoff}");
    }
    println!("policies  {}", scope.policy_ids.join(", "));
    for note in &issued.notes {
        println!("note      {note}");
    }
}
