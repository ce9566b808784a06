//! The privileges the two roles need, checked against the database
//! (`esq check --against`, and the SSP's MP-6 and SI-12): the service
//! role reads the governed tables and can write nothing, not even in
//! schema `esq`; the maintenance role owns schema `esq` and may read and
//! delete rows of the tables it purges or forgets in. docs/lifecycle.md
//! prints the SQL that grants exactly this.

use tokio_postgres::Client;

use crate::catalog::Catalog;
use crate::config::Config;

/// One privilege checked: what, for whom, and how to fix it when missing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrantCheck {
    pub role: String,
    pub requirement: String,
    pub ok: bool,
    /// The SQL (or command) that fixes it; empty when `ok`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

/// The role a `postgres://role@…` URL logs in as.
pub fn role_of(url: &str) -> Option<String> {
    let parsed: tokio_postgres::Config = url.parse().ok()?;
    parsed.get_user().map(str::to_string)
}

/// Checks both roles' privileges on every governed table.
pub async fn check(
    client: &Client,
    config: &Config,
    catalog: &Catalog,
) -> Result<Vec<GrantCheck>, tokio_postgres::Error> {
    let mut checks = Vec::new();
    let esq_schema: bool = client
        .query_one("SELECT to_regnamespace('esq') IS NOT NULL", &[])
        .await?
        .get(0);
    if let Some(service) = role_of(&config.upstream.url) {
        if exists(client, &service).await? {
            for dataset in catalog.datasets() {
                let table = dataset.table.to_string();
                let unreadable = unreadable_fields(client, &service, dataset).await?;
                checks.push(GrantCheck {
                    role: service.clone(),
                    requirement: format!("may SELECT the catalog's fields of {table}"),
                    ok: unreadable.is_empty(),
                    fix: fix(
                        !unreadable.is_empty(),
                        format!(
                            "GRANT SELECT ({}) ON {table} TO {service}; (esq setup upstream prints it all)",
                            unreadable.join(", ")
                        ),
                    ),
                });
                let write =
                    privilege(client, &service, &table, "INSERT,UPDATE,DELETE,TRUNCATE").await?;
                checks.push(GrantCheck {
                    role: service.clone(),
                    requirement: format!("cannot write {table} (service role stays read-only)"),
                    ok: !write,
                    fix: fix(
                        write,
                        format!(
                            "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM {service};"
                        ),
                    ),
                });
            }
            let logged = unlogged_settings(client, &service).await?;
            checks.push(GrantCheck {
                role: service.clone(),
                requirement: "statements are not written to PostgreSQL's log (esq's rewrites carry the keys of forgotten subjects; esq audits every statement itself)".into(),
                ok: logged.is_empty(),
                fix: logged
                    .iter()
                    .map(|(name, value)| format!("ALTER ROLE {service} SET {name} = {value};"))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
            if esq_schema {
                let usage: bool = client
                    .query_one(
                        "SELECT has_schema_privilege($1, 'esq', 'USAGE')",
                        &[&service],
                    )
                    .await?
                    .get(0);
                checks.push(GrantCheck {
                    role: service.clone(),
                    requirement: "cannot read schema esq (tombstones, purge runs)".into(),
                    ok: !usage,
                    fix: fix(
                        usage,
                        format!("REVOKE ALL ON SCHEMA esq FROM {service}, PUBLIC;"),
                    ),
                });
            }
        } else {
            checks.push(missing(&service, "the service role (upstream.url) exists"));
        }
    }
    let Some(maintenance) = config.maintenance.as_ref().and_then(|m| role_of(&m.url)) else {
        return Ok(checks);
    };
    if !exists(client, &maintenance).await? {
        checks.push(missing(
            &maintenance,
            "the maintenance role (maintenance.url) exists",
        ));
        return Ok(checks);
    }
    for dataset in catalog.datasets() {
        let deletes = dataset.retention_years.is_some()
            || dataset.subject_key.is_some()
            || !catalog.subject_fields(dataset).is_empty();
        if !deletes {
            continue;
        }
        let table = dataset.table.to_string();
        let ok = privilege(client, &maintenance, &table, "SELECT").await?
            && privilege(client, &maintenance, &table, "DELETE").await?;
        checks.push(GrantCheck {
            role: maintenance.clone(),
            requirement: format!("may SELECT and DELETE {table} (purges, right-to-delete)"),
            ok,
            fix: fix(
                !ok,
                format!("GRANT SELECT, DELETE ON {table} TO {maintenance};"),
            ),
        });
    }
    let owner: Option<String> = client
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'esq'",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    let owns = owner.as_deref() == Some(maintenance.as_str());
    checks.push(GrantCheck {
        role: maintenance.clone(),
        requirement: "owns schema esq".into(),
        ok: owns,
        fix: match owner {
            _ if owns => String::new(),
            None => format!("GRANT CREATE ON DATABASE <db> TO {maintenance}; then esq migrate"),
            Some(_) => format!("ALTER SCHEMA esq OWNER TO {maintenance};"),
        },
    });
    Ok(checks)
}

/// The role settings that keep `role`'s statements out of PostgreSQL's
/// log (name, value), and which of them are not in force for the role in
/// this database: the most specific setting wins (the role in this
/// database, then the role everywhere), so a database-specific setting
/// that logs again counts against it.
pub(crate) const UNLOGGED: [(&str, &str); 5] = [
    ("log_statement", "none"),
    ("log_min_error_statement", "panic"),
    ("log_min_duration_statement", "-1"),
    ("log_min_duration_sample", "-1"),
    ("log_transaction_sample_rate", "0"),
];

async fn unlogged_settings(
    client: &Client,
    role: &str,
) -> Result<Vec<(&'static str, &'static str)>, tokio_postgres::Error> {
    // (setting, specific to this database), most specific first.
    let rows = client
        .query(
            "SELECT unnest(setconfig), s.setdatabase <> 0 FROM pg_db_role_setting s
             JOIN pg_roles r ON r.oid = s.setrole
             WHERE r.rolname = $1
               AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
             ORDER BY 2 DESC",
            &[&role],
        )
        .await?;
    let settings: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    Ok(UNLOGGED
        .into_iter()
        .filter(|(name, value)| {
            let in_force = settings
                .iter()
                .find_map(|s| s.strip_prefix(&format!("{name}=")));
            in_force != Some(value)
        })
        .collect())
}

async fn exists(client: &Client, role: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&role],
        )
        .await?
        .get(0))
}

/// The catalog fields of `dataset` that `role` cannot SELECT: neither the
/// table nor the column is granted (`esq setup upstream` grants columns
/// only, so a column added to the table later stays unreadable), or the
/// column does not exist (the schema check names it).
async fn unreadable_fields(
    client: &Client,
    role: &str,
    dataset: &crate::catalog::Dataset,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let fields: Vec<&str> = dataset.fields.iter().map(|f| f.name.as_str()).collect();
    let rows = client
        .query(
            "SELECT f FROM unnest($3::text[]) WITH ORDINALITY AS u(f, n)
             WHERE NOT coalesce((SELECT has_column_privilege($1, a.attrelid, a.attnum, 'SELECT')
                                 FROM pg_attribute a
                                 WHERE a.attrelid = to_regclass($2) AND a.attname = u.f
                                   AND a.attnum > 0 AND NOT a.attisdropped), false)
             ORDER BY n",
            &[&role, &dataset.table.to_string(), &fields],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Whether `role` holds any of `privileges` on `table` (false when the
/// table does not exist: the schema check reports that).
async fn privilege(
    client: &Client,
    role: &str,
    table: &str,
    privileges: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT coalesce(has_table_privilege($1, to_regclass($2), $3), false)",
            &[&role, &table, &privileges],
        )
        .await?
        .get(0))
}

fn fix(needed: bool, sql: String) -> String {
    if needed {
        sql
    } else {
        String::new()
    }
}

fn missing(role: &str, requirement: &str) -> GrantCheck {
    GrantCheck {
        role: role.to_string(),
        requirement: requirement.to_string(),
        ok: false,
        fix: format!("CREATE ROLE {role} LOGIN …; (docs/lifecycle.md)"),
    }
}
