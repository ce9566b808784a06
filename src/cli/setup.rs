//! `esq setup upstream`: the SQL that gives esq's two database roles exactly
//! the privileges the catalog needs, so an operator does not copy grants
//! by hand. The service role (`upstream.url`) logs in, reads the catalog's
//! columns only (a column added to a table later stays unreadable), runs
//! read-only sessions whose statements stay out of PostgreSQL's log, and can
//! create nothing; the maintenance role (`[maintenance] url`) owns schema
//! `esq` and may read and delete rows of the tables it purges or forgets in.
//! `esq check --against` verifies the result.
//!
//! The SQL is one transaction and idempotent (running it twice changes
//! nothing the first run did not). Every identifier is double-quoted and
//! every literal single-quoted here, never taken as SQL text. Passwords are
//! either psql variables (`:'esq_service_password'`, filled with
//! `psql -v`) or SCRAM-SHA-256 verifiers of the passwords esq logs in with,
//! so a plaintext password never reaches the database or its log.

use std::collections::BTreeSet;
use std::path::Path;

use clap::{Args, Subcommand};

use super::{EXIT_BAD_INPUT, EXIT_FAILED};
use crate::auth::scram::ScramVerifier;
use crate::catalog::{Catalog, TableName};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Print the SQL that creates esq's service and maintenance roles with
    /// exactly the grants the catalog needs; `--apply` runs it.
    Upstream(UpstreamArgs),
}

#[derive(Debug, Args)]
pub struct UpstreamArgs {
    /// Run the SQL (one transaction) on the administrator connection
    /// `--admin-url` instead of printing it; sets the roles' passwords to
    /// the ones esq logs in with (implies --with-passwords).
    #[arg(long)]
    pub apply: bool,
    /// An administrator's connection (a superuser, or a role with CREATEROLE
    /// that owns the catalog's tables), for --apply.
    #[arg(
        long,
        env = "ESQ_ADMIN_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub admin_url: Option<String>,
    /// Put SCRAM-SHA-256 verifiers of the passwords esq logs in with in the
    /// SQL (ESQ_UPSTREAM__PASSWORD or upstream.password_file, and
    /// ESQ_MAINTENANCE__PASSWORD or maintenance.password_file) instead of
    /// psql variables.
    #[arg(long)]
    pub with_passwords: bool,
}

/// The database this SQL is for and what each role needs there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub database: String,
    pub service: String,
    pub maintenance: Option<String>,
    /// Every governed table, the catalog's fields, and whether the
    /// maintenance role deletes from it (retention, subjects or links).
    pub tables: Vec<(TableName, Vec<String>, bool)>,
}

/// How the SQL sets passwords.
pub enum Passwords {
    /// psql variables `esq_service_password` / `esq_maintenance_password`.
    Placeholders,
    /// SCRAM verifiers (service, maintenance).
    Verifiers(String, Option<String>),
}

pub fn run(config_path: &Path, command: SetupCommand) -> u8 {
    let SetupCommand::Upstream(args) = command;
    let (config, catalog) = match load(config_path) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let plan = match plan(&config, &catalog) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let passwords = if args.apply || args.with_passwords {
        match verifiers(&config) {
            Ok(passwords) => passwords,
            Err(message) => {
                eprintln!("error: {message}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        Passwords::Placeholders
    };
    let text = sql(&plan, &passwords);
    if !args.apply {
        print!("{text}");
        return 0;
    }
    let Some(admin_url) = args.admin_url else {
        eprintln!(
            "error: --apply needs an administrator's connection: --admin-url URL or ESQ_ADMIN_URL"
        );
        return EXIT_BAD_INPUT;
    };
    let runtime = match super::runtime_or_exit() {
        Ok(runtime) => runtime,
        Err(status) => return status,
    };
    match runtime.block_on(apply(&admin_url, &text)) {
        Ok(()) => {
            println!(
                "set up {} in database {}: run `esq migrate`, then `esq check --against` to verify",
                roles_of(&plan),
                plan.database
            );
            0
        }
        Err(message) => {
            eprintln!("error: {message} (nothing was changed)");
            EXIT_FAILED
        }
    }
}

fn load(config_path: &Path) -> Result<(Config, Catalog), String> {
    let config = Config::load(config_path).map_err(|err| err.to_string())?;
    let catalog = Catalog::load_dir(&config.catalog.dir).map_err(|err| err.to_string())?;
    Ok((config, catalog))
}

/// The roles, database and tables the configuration and catalog name.
pub fn plan(config: &Config, catalog: &Catalog) -> Result<Plan, String> {
    let (service, database) = role_and_database(&config.upstream.url, "upstream.url")?;
    let maintenance = match &config.maintenance {
        None => None,
        Some(section) => {
            let (role, db) = role_and_database(&section.url, "maintenance.url")?;
            if db != database {
                return Err(format!(
                    "maintenance.url names database {db:?}, upstream.url {database:?}: both roles work in one database"
                ));
            }
            Some(role)
        }
    };
    let tables = catalog
        .datasets()
        .map(|dataset| {
            let deletes = dataset.retention_years.is_some()
                || dataset.subject_key.is_some()
                || !catalog.subject_fields(dataset).is_empty();
            let fields = dataset.fields.iter().map(|f| f.name.clone()).collect();
            (dataset.table.clone(), fields, deletes)
        })
        .collect();
    Ok(Plan {
        database,
        service,
        maintenance,
        tables,
    })
}

/// The role a URL logs in as, and its database (libpq's default: the
/// role's name).
fn role_and_database(url: &str, key: &str) -> Result<(String, String), String> {
    let parsed: tokio_postgres::Config = url
        .parse()
        .map_err(|err| format!("{key}: not a PostgreSQL URL: {err}"))?;
    let role = parsed
        .get_user()
        .filter(|role| !role.is_empty())
        .ok_or_else(|| format!("{key}: must name a role (postgres://ROLE@host/db)"))?
        .to_string();
    let database = parsed.get_dbname().unwrap_or(&role).to_string();
    Ok((role, database))
}

fn verifiers(config: &Config) -> Result<Passwords, String> {
    let missing = |role: &str, var: &str, key: &str| {
        format!(
            "no password for the {role} role: set {var} or {key} (the password esq logs in with)"
        )
    };
    let service = config.upstream_password().ok_or_else(|| {
        missing(
            "service",
            "ESQ_UPSTREAM__PASSWORD",
            "upstream.password_file",
        )
    })?;
    let maintenance = match &config.maintenance {
        None => None,
        Some(_) => Some(config.maintenance_password().ok_or_else(|| {
            missing(
                "maintenance",
                "ESQ_MAINTENANCE__PASSWORD",
                "maintenance.password_file",
            )
        })?),
    };
    for secret in std::iter::once(service).chain(maintenance) {
        if secret.expose().is_empty() {
            return Err("a role's password is empty".into());
        }
    }
    Ok(Passwords::Verifiers(
        ScramVerifier::generate(service.expose()),
        maintenance.map(|secret| ScramVerifier::generate(secret.expose())),
    ))
}

async fn apply(admin_url: &str, text: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .map_err(|err| format!("cannot connect to the administrator's database: {err}"))?;
    let connection = tokio::spawn(connection);
    let result = client.batch_execute(text).await.map_err(|err| {
        let message = match err.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => err.to_string(),
        };
        format!("the setup SQL failed: {message}")
    });
    drop(client);
    let _ = connection.await;
    result
}

fn roles_of(plan: &Plan) -> String {
    match &plan.maintenance {
        Some(maintenance) => format!("roles {} and {maintenance}", plan.service),
        None => format!("role {}", plan.service),
    }
}

/// `"name"`: an identifier PostgreSQL reads back exactly.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` (or `E'…'` when it holds a backslash): a literal PostgreSQL
/// reads back exactly whatever `standard_conforming_strings` says.
pub fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `body` between dollar quotes whose tag it does not contain.
fn dollar_quoted(body: &str) -> String {
    let mut tag = "$esq$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$esq{n}$");
    }
    format!("{tag}\n{body}{tag}")
}

// The settings that keep a role's statements out of PostgreSQL's log, as
// `esq check --against` verifies them.
use crate::lifecycle::grants::UNLOGGED;

/// A role that logs in and holds no privileged attribute: created when
/// missing; an existing one is stripped of privileged attributes (only
/// then, so an administrator without SUPERUSER can run this too).
fn login_role(role: &str) -> String {
    let body = format!(
        "BEGIN\n  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN\n    \
         CREATE ROLE {id} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;\n  \
         ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {lit}\n      \
         AND (rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls OR NOT rolcanlogin)) THEN\n    \
         ALTER ROLE {id} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;\n  \
         END IF;\nEND\n",
        lit = literal(role),
        id = ident(role),
    );
    format!("DO {};\n", dollar_quoted(&body))
}

fn password(role: &str, value: Option<&str>, variable: &str) -> String {
    match value {
        Some(verifier) => format!(
            "ALTER ROLE {} PASSWORD {};\n",
            ident(role),
            literal(verifier)
        ),
        None => format!("ALTER ROLE {} PASSWORD :'{variable}';\n", ident(role)),
    }
}

fn unlogged(role: &str, database: &str) -> String {
    let mut out = String::new();
    for (name, value) in UNLOGGED {
        out.push_str(&format!(
            "ALTER ROLE {} SET {name} = {value};\n",
            ident(role)
        ));
        // A setting for the role in this database would win over the one above.
        out.push_str(&format!(
            "ALTER ROLE {} IN DATABASE {} RESET {name};\n",
            ident(role),
            ident(database)
        ));
    }
    out
}

/// The setup SQL for `plan` (see the module docs).
pub fn sql(plan: &Plan, passwords: &Passwords) -> String {
    let (service_password, maintenance_password) = match passwords {
        Passwords::Placeholders => (None, None),
        Passwords::Verifiers(service, maintenance) => {
            (Some(service.as_str()), maintenance.as_deref())
        }
    };
    let db = ident(&plan.database);
    let service = ident(&plan.service);
    let mut out = String::new();
    out.push_str(&format!(
        "-- esq setup upstream: esq's roles in database {:?}, with exactly the grants its catalog needs.\n",
        // Debug-escaped: a newline in the name cannot end the comment.
        plan.database
    ));
    if matches!(passwords, Passwords::Placeholders) {
        out.push_str(
            "-- Run it as an administrator, with the passwords (or SCRAM verifiers from `esq passwd`):\n\
             --   psql -v ON_ERROR_STOP=1 -v esq_service_password=… -v esq_maintenance_password=… -f setup.sql\n",
        );
    }
    out.push_str("-- One transaction; running it again changes nothing.\nBEGIN;\n\n");
    out.push_str(
        "-- The service role (upstream.url): reads the catalog's columns, writes and creates nothing.\n",
    );
    out.push_str(&login_role(&plan.service));
    out.push_str(&password(
        &plan.service,
        service_password,
        "esq_service_password",
    ));
    out.push_str(&format!(
        "ALTER ROLE {service} SET default_transaction_read_only = on;\n\
         ALTER ROLE {service} IN DATABASE {db} RESET default_transaction_read_only;\n"
    ));
    out.push_str(
        "-- Its statements stay out of PostgreSQL's log: esq's rewrites carry the keys of\n\
         -- forgotten subjects, and esq audits every statement itself.\n",
    );
    out.push_str(&unlogged(&plan.service, &plan.database));
    out.push_str(&format!("GRANT CONNECT ON DATABASE {db} TO {service};\n"));
    out.push_str(
        "-- PUBLIC may create temporary tables and large objects by default, so the service\n\
         -- role could too (esq check --profile, AC-6); grant them by name to roles that need them.\n",
    );
    out.push_str(&format!(
        "REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC;\n\
         REVOKE EXECUTE ON FUNCTION pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer), \
         pg_catalog.lo_from_bytea(oid, bytea) FROM PUBLIC;\n"
    ));
    let schemas: BTreeSet<&str> = plan
        .tables
        .iter()
        .map(|(t, _, _)| t.schema.as_str())
        .collect();
    for schema in &schemas {
        out.push_str(&format!(
            "GRANT USAGE ON SCHEMA {s} TO {service};\nREVOKE CREATE ON SCHEMA {s} FROM PUBLIC, {service};\n",
            s = ident(schema)
        ));
    }
    for (table, fields, _) in &plan.tables {
        let columns: Vec<String> = fields.iter().map(|f| ident(f)).collect();
        out.push_str(&format!(
            "REVOKE ALL ON TABLE {t} FROM {service};\nGRANT SELECT ({}) ON TABLE {t} TO {service};\n",
            columns.join(", "),
            t = table.quoted()
        ));
    }
    match &plan.maintenance {
        Some(role) => out.push_str(&maintenance_sql(plan, role, maintenance_password)),
        None => {
            let body = format!(
                "BEGIN\n  IF pg_catalog.to_regnamespace('esq') IS NOT NULL THEN\n    \
                 REVOKE ALL ON SCHEMA esq FROM PUBLIC, {service};\n  END IF;\nEND\n"
            );
            out.push_str(&format!(
                "-- Schema esq (tombstones, purge runs) is not the service role's.\nDO {};\n",
                dollar_quoted(&body)
            ));
        }
    }
    out.push_str("\nCOMMIT;\n");
    if plan.maintenance.is_some() {
        out.push_str(
            "-- Then: esq migrate (creates esq's tables in schema esq as the maintenance role).\n",
        );
    }
    out.push_str("-- Verify: esq check --against postgres://ADMIN@HOST/DATABASE\n");
    out
}

fn maintenance_sql(plan: &Plan, role: &str, verifier: Option<&str>) -> String {
    let db = ident(&plan.database);
    let id = ident(role);
    let service = ident(&plan.service);
    let mut out = String::from(
        "\n-- The maintenance role (maintenance.url): owns schema esq, deletes rows past\n\
         -- retention and of forgotten subjects.\n",
    );
    out.push_str(&login_role(role));
    out.push_str(&password(role, verifier, "esq_maintenance_password"));
    out.push_str(
        "-- Its deletes name the subjects they forget: keep them out of PostgreSQL's log too.\n",
    );
    out.push_str(&unlogged(role, &plan.database));
    out.push_str(&format!(
        "GRANT CONNECT ON DATABASE {db} TO {id};\n\
         CREATE SCHEMA IF NOT EXISTS esq AUTHORIZATION {id};\n\
         REVOKE ALL ON SCHEMA esq FROM PUBLIC, {service};\n"
    ));
    let deleting: Vec<&TableName> = plan
        .tables
        .iter()
        .filter(|(_, _, deletes)| *deletes)
        .map(|(t, _, _)| t)
        .collect();
    let schemas: BTreeSet<&str> = deleting.iter().map(|t| t.schema.as_str()).collect();
    for schema in schemas {
        out.push_str(&format!(
            "GRANT USAGE ON SCHEMA {} TO {id};\n",
            ident(schema)
        ));
    }
    for table in deleting {
        out.push_str(&format!(
            "GRANT SELECT, DELETE ON TABLE {} TO {id};\n",
            table.quoted()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            database: "arch\"ive\nDROP TABLE x; --".into(),
            service: "svc\"; DROP ROLE x; --".into(),
            maintenance: Some("o'brien\\m".into()),
            tables: vec![(
                TableName {
                    schema: "public".into(),
                    name: "burial".into(),
                },
                vec!["id".into(), "user".into()],
                true,
            )],
        }
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal("a\\b'"), "E'a\\\\b'''");
        let text = sql(&plan(), &Passwords::Placeholders);
        assert!(text.contains("\"svc\"\"; DROP ROLE x; --\""), "{text}");
        // The name as a literal keeps its double quote; as an identifier, never.
        assert!(
            text.contains("rolname = 'svc\"; DROP ROLE x; --'"),
            "{text}"
        );
        assert!(
            !text.contains(" svc\"; DROP"),
            "an unquoted identifier: {text}"
        );
        assert!(text.contains("rolname = E'o''brien\\\\m'"), "{text}");
        assert!(text.contains("GRANT SELECT (\"id\", \"user\") ON TABLE \"public\".\"burial\""));
        assert!(
            text.contains("ON DATABASE \"arch\"\"ive\nDROP TABLE x; --\""),
            "{text}"
        );
        assert!(
            !text.contains("\nDROP TABLE x; --\n"),
            "out of a comment: {text}"
        );
    }

    #[test]
    fn every_statement_parses_as_postgresql_reads_it() {
        let verifiers = Passwords::Verifiers("SCRAM-SHA-256$4096:x$y:z".into(), Some("v".into()));
        let text = sql(&plan(), &verifiers);
        let parsed = pg_query::parse(&text, 0).unwrap_or_else(|e| panic!("{e}: {text}"));
        let kinds = parsed.statement_types();
        assert_eq!(kinds.first().copied(), Some("TransactionStmt"), "{kinds:?}");
        assert_eq!(kinds.last().copied(), Some("TransactionStmt"), "{kinds:?}");
        // The injected DROP ROLE stays inside an identifier.
        assert!(
            !kinds.contains(&"DropRoleStmt") && !kinds.contains(&"DropStmt"),
            "{kinds:?}"
        );
        assert_eq!(kinds.iter().filter(|k| **k == "DoStmt").count(), 2);
    }

    #[test]
    fn a_dollar_tag_in_the_body_gets_another() {
        let quoted = dollar_quoted("x $esq$ y\n");
        assert!(
            quoted.starts_with("$esq1$\n") && quoted.ends_with("$esq1$"),
            "{quoted}"
        );
    }

    #[test]
    fn placeholders_are_psql_variables_and_verifiers_literals() {
        let text = sql(&plan(), &Passwords::Placeholders);
        assert!(text.contains("PASSWORD :'esq_service_password';"));
        assert!(text.contains("PASSWORD :'esq_maintenance_password';"));
        let text = sql(
            &plan(),
            &Passwords::Verifiers(
                "SCRAM-SHA-256$4096:s$a:b".into(),
                Some("SCRAM-SHA-256$4096:t$c:d".into()),
            ),
        );
        assert!(
            text.contains("PASSWORD 'SCRAM-SHA-256$4096:s$a:b';"),
            "{text}"
        );
        assert!(!text.contains(":'esq_"), "{text}");
    }
}
