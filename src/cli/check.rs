//! `esq check`: validate config, catalog and policies, run the policy tests,
//! optionally require compliance profiles' controls (`--profile`) and
//! compare the catalog with a live database schema (`--against`).

use std::path::Path;

use clap::Args;

use super::EXIT_FAILED;
use crate::app::App;
use crate::catalog::schema_check;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Compare the catalog with this database's schema (postgres://…).
    #[arg(long, value_name = "URL")]
    pub against: Option<String>,
    /// Also require the controls of these compliance profiles
    /// (comma-separated: HIPAA, FISMA-Low, FedRAMP-Moderate); fails when
    /// one is not satisfied by the configuration and what is observed of
    /// the upstream database (as the service role) and the audit log.
    #[arg(long, value_name = "LIST", value_parser = super::ssp::profile_list)]
    pub profile: Option<super::ssp::ProfileList>,
}

pub fn run(config_path: &Path, args: CheckArgs) -> u8 {
    let app = match super::load_app_without_audit_log(config_path) {
        Ok(app) => app,
        Err(status) => return status,
    };
    let bundle = app.bundle();
    println!(
        "config    {}: ok ({} users, ticket store {}, environment {})",
        config_path.display(),
        bundle.users.names().count(),
        app.config.tickets.store,
        app.config.server.environment
    );
    let ids: Vec<&str> = bundle.catalog.datasets().map(|d| d.id.as_str()).collect();
    println!(
        "catalog   {}: {} datasets ({})",
        app.config.catalog.dir.display(),
        ids.len(),
        ids.join(", ")
    );

    let report = bundle.policies.run_tests();
    let names: Vec<&str> = bundle
        .policies
        .packages()
        .iter()
        .map(|p| p.trim_start_matches(crate::policy::POLICY_ROOT))
        .collect();
    println!(
        "policies  {}: {} policies ({}), {} of {} tests passed",
        app.config.policy.dir.display(),
        names.len(),
        names.join(", "),
        report.passed(),
        report.outcomes.len()
    );
    let summary = crate::compliance::bundle_summary(&app);
    println!("bundle    {}: {}", summary.hash, summary.seal);
    let mut status = 0;
    for failure in report.failed() {
        eprintln!(
            "{}: test {} failed: {}",
            failure.file.display(),
            failure.name,
            failure.detail
        );
        status = EXIT_FAILED;
    }
    if report.outcomes.is_empty() {
        eprintln!(
            "{}: no test_* rules found: every policy needs tests in a *_test.rego file",
            app.config.policy.dir.display()
        );
        status = EXIT_FAILED;
    }

    if let Some(profiles) = &args.profile {
        if super::ssp::check_profiles(&app, config_path, &profiles.0) != 0 {
            status = EXIT_FAILED;
        }
    }

    if let Some(url) = &args.against {
        match check_against(&app, url) {
            Ok(ok) if ok => {}
            Ok(_) => status = EXIT_FAILED,
            Err(err) => {
                eprintln!("error: {err}");
                status = EXIT_FAILED;
            }
        }
    }
    status
}

fn check_against(app: &App, url: &str) -> Result<bool, String> {
    let runtime = super::runtime().map_err(|err| format!("cannot start runtime: {err}"))?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|err| format!("cannot connect to the database given by --against: {err}"))?;
        let connection = tokio::spawn(connection);
        let report = schema_check::compare(&app.bundle().catalog, &client)
            .await
            .map_err(|err| format!("cannot read the database schema: {err}"))?;
        let grants = crate::lifecycle::grants::check(&client, &app.config, &app.bundle().catalog)
            .await
            .map_err(|err| format!("cannot read the roles' privileges: {err}"))?;
        drop(client);
        let _ = connection.await;
        for error in &report.errors {
            eprintln!("{error}");
        }
        for (table, column) in &report.forbidden_by_default {
            println!("schema    {table}.{column}: not in the catalog, forbidden by default");
        }
        if report.is_ok() {
            println!("schema    every catalog table and field exists in the database");
        }
        let mut roles: Vec<&str> = grants.iter().map(|g| g.role.as_str()).collect();
        roles.dedup();
        for role in roles {
            let mine: Vec<_> = grants.iter().filter(|g| g.role == role).collect();
            let missing: Vec<_> = mine.iter().filter(|g| !g.ok).collect();
            if missing.is_empty() {
                println!(
                    "grants    {role}: {} of {} as required",
                    mine.len(),
                    mine.len()
                );
            }
            for check in missing {
                eprintln!(
                    "grants    {role}: {}: NOT MET; fix: {}",
                    check.requirement, check.fix
                );
            }
        }
        Ok(report.is_ok() && grants.iter().all(|g| g.ok))
    })
}
