//! `esq setup upstream` on a real PostgreSQL: applied twice on a fresh
//! cluster, `esq check --against` passes for both roles, the service role
//! logs in with its SCRAM password, reads the catalog's columns and nothing
//! else, creates nothing, and serves the FOIA story through esq; the
//! maintenance role migrates and purges. The printed SQL keeps role names
//! with quotes, spaces and dollar signs as identifiers and runs with psql.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::esq::Esq;
use common::postgres::{describe, TestPostgres};
use common::process::{esq_command, Run};
use common::upstream::load_sample_data;
use serde_json::json;

const SERVICE_PASSWORD: &str = "setup-service-'pw\"$1";
const MAINTENANCE_PASSWORD: &str = "setup-maintenance-pw";

fn database_of(pg: &TestPostgres) -> String {
    let url: tokio_postgres::Config = pg.url().parse().expect("the test URL parses");
    url.get_dbname().expect("a database").to_string()
}

/// `postgres://ROLE@127.0.0.1:PORT/DB` with ROLE percent-encoded.
fn role_url(pg: &TestPostgres, role: &str) -> String {
    let encoded: String = role
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!(
        "postgres://{encoded}@127.0.0.1:{}/{}",
        pg.port(),
        database_of(pg)
    )
}

fn env_for(
    pg: &TestPostgres,
    service: &str,
    maintenance: &str,
    audit: &std::path::Path,
) -> Vec<(String, String)> {
    vec![
        ("ESQ_UPSTREAM__URL".into(), role_url(pg, service)),
        ("ESQ_UPSTREAM__PASSWORD".into(), SERVICE_PASSWORD.into()),
        ("ESQ_MAINTENANCE__URL".into(), role_url(pg, maintenance)),
        (
            "ESQ_MAINTENANCE__PASSWORD".into(),
            MAINTENANCE_PASSWORD.into(),
        ),
        ("ESQ_AUDIT__PATH".into(), audit.display().to_string()),
        ("ESQ_LIFECYCLE__PURGE_SCHEDULE".into(), "off".into()),
    ]
}

fn esq(env: &[(String, String)], args: &[&str]) -> Run {
    Run::of(esq_command().envs(env.iter().cloned()).args(args))
}

fn assert_ok(run: &Run, what: &str) {
    assert_eq!(
        run.status, 0,
        "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
        run.status, run.stdout, run.stderr
    );
}

/// The service role's own session, with its password (SCRAM on this cluster).
async fn connect_as(pg: &TestPostgres, role: &str, password: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port())
        .user(role)
        .password(password)
        .dbname(database_of(pg))
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{role} logs in with its password: {}", describe(&e)));
    tokio::spawn(connection);
    client
}

/// The SQLSTATE `sql` fails with in a READ WRITE transaction: the session
/// default (read-only) is the role's own setting, which it may change, so
/// what counts is the privileges behind it.
async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> String {
    let result = client
        .batch_execute(&format!("BEGIN READ WRITE; {sql}"))
        .await;
    client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    match result {
        Ok(()) => panic!("{sql}: allowed"),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn applied_twice_the_roles_pass_check_against_and_read_only_the_catalog() {
    let pg = TestPostgres::start_private().await;
    let admin = load_sample_data(&pg, 2_000).await;
    admin
        .batch_execute("CREATE TABLE public.outside (secret text); INSERT INTO public.outside VALUES ('MARKER-outside')")
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let (service, maintenance) = ("esq_setup_service", "esq_setup_maintenance");
    pg.require_scram_for(service).await;
    pg.require_scram_for(maintenance).await;
    let dir = tempfile::tempdir().expect("a directory");
    let env = env_for(&pg, service, maintenance, &dir.path().join("audit.jsonl"));

    for run in ["first", "second"] {
        let applied = esq(
            &env,
            &["setup", "upstream", "--apply", "--admin-url", &pg.url()],
        );
        assert_ok(&applied, &format!("setup upstream --apply ({run} run)"));
        assert!(
            !applied.stdout.contains(SERVICE_PASSWORD)
                && !applied.stderr.contains(SERVICE_PASSWORD),
            "the password is printed"
        );
    }
    assert_ok(
        &esq(&env, &["migrate"]),
        "esq migrate as the maintenance role",
    );
    let check = esq(&env, &["check", "--against", &pg.url()]);
    assert_ok(&check, "esq check --against");
    for role in [service, maintenance] {
        assert!(
            check.stdout.contains(&format!("grants    {role}:"))
                && check.stdout.contains("as required"),
            "{}",
            check.stdout
        );
    }

    let client = connect_as(&pg, service, SERVICE_PASSWORD).await;
    let count: i64 = client
        .query_one("SELECT count(*) FROM public.burial_2024", &[])
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)))
        .get(0);
    assert_eq!(count, 2_000);
    assert_eq!(
        sqlstate(&client, "SELECT secret FROM public.outside").await,
        "42501"
    );
    assert_eq!(
        sqlstate(&client, "CREATE TEMPORARY TABLE t (x int)").await,
        "42501"
    );
    assert_eq!(sqlstate(&client, "SELECT lo_create(0)").await, "42501");
    assert_eq!(
        sqlstate(&client, "CREATE TABLE public.mine (x int)").await,
        "42501"
    );
    assert_eq!(
        sqlstate(&client, "DELETE FROM public.burial_2024").await,
        "42501"
    );
    assert_eq!(
        sqlstate(&client, "SELECT * FROM esq.tombstones").await,
        "42501"
    );
    let read_only: String = client
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .expect("SHOW")
        .get(0);
    assert_eq!(read_only, "on");
    // Columns, not tables: one the catalog does not name stays unreadable.
    admin
        .batch_execute(
            "ALTER TABLE public.burial_2024 ADD COLUMN added_later text DEFAULT 'MARKER-added'",
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(
        sqlstate(&client, "SELECT added_later FROM public.burial_2024").await,
        "42501"
    );
    assert_eq!(
        sqlstate(&client, "SELECT * FROM public.burial_2024").await,
        "42501"
    );

    // The maintenance role purges with what it was given.
    assert_ok(
        &esq(&env, &["purge", "--json"]),
        "esq purge as the maintenance role",
    );

    // And the FOIA story runs through esq on the service role's grants.
    let mut builder = Esq::builder().upstream_url(&role_url(&pg, service));
    builder = builder.env("ESQ_UPSTREAM__PASSWORD", SERVICE_PASSWORD);
    let esq = builder.start().await;
    let ticket = esq.foia_ticket().await;
    let (status, body) = common::http::query(&esq, &ticket, json!({"groupBy": "state"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.as_array().is_some_and(|rows| !rows.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn printed_sql_keeps_odd_role_names_identifiers_and_runs_twice_with_psql() {
    let pg = TestPostgres::start().await;
    let _admin = load_sample_data(&pg, 500).await;
    let pid = std::process::id();
    let service = format!("esq \"setup\" o'svc $esq$ {pid}");
    let maintenance = format!("esq_m'{pid}; DROP ROLE postgres; --");
    pg.drop_role_with_database(&service);
    pg.drop_role_with_database(&maintenance);
    let dir = tempfile::tempdir().expect("a directory");
    let env = env_for(&pg, &service, &maintenance, &dir.path().join("audit.jsonl"));

    let printed = esq(&env, &["setup", "upstream"]);
    assert_ok(&printed, "setup upstream");
    assert!(
        printed.stdout.contains(":'esq_service_password'"),
        "{}",
        printed.stdout
    );
    assert!(
        !printed.stdout.contains(SERVICE_PASSWORD),
        "a password printed"
    );
    let with_passwords = esq(&env, &["setup", "upstream", "--with-passwords"]);
    assert_ok(&with_passwords, "setup upstream --with-passwords");
    assert!(with_passwords
        .stdout
        .contains("PASSWORD 'SCRAM-SHA-256$4096:"));
    assert!(
        !with_passwords.stdout.contains(SERVICE_PASSWORD)
            && !with_passwords.stdout.contains(MAINTENANCE_PASSWORD),
        "a plaintext password printed"
    );

    for run in ["first", "second"] {
        let mut psql = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-v")
            .arg(format!("esq_service_password={SERVICE_PASSWORD}"))
            .arg("-v")
            .arg(format!("esq_maintenance_password={MAINTENANCE_PASSWORD}"))
            .args(["-d", &pg.url(), "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql runs (apt-get install -y postgresql-client)");
        psql.stdin
            .take()
            .expect("stdin")
            .write_all(printed.stdout.as_bytes())
            .expect("writing the SQL");
        let out = psql.wait_with_output().expect("psql ends");
        assert!(
            out.status.success(),
            "psql ({run} run): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let admin = pg.connect().await;
    let roles = admin
        .query(
            "SELECT rolname::text, rolsuper, rolcreaterole FROM pg_roles WHERE rolname::text = ANY($1::text[])",
            &[&vec![service.clone(), maintenance.clone(), "postgres".to_string()]],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let names: Vec<String> = roles.iter().map(|r| r.get(0)).collect();
    assert_eq!(roles.len(), 3, "{names:?}");
    for row in &roles {
        let name: String = row.get(0);
        if name != "postgres" {
            assert!(
                !row.get::<_, bool>(1) && !row.get::<_, bool>(2),
                "{name} is privileged"
            );
        }
    }
    assert_ok(&esq(&env, &["migrate"]), "esq migrate");
    assert_ok(
        &esq(&env, &["check", "--against", &pg.url()]),
        "esq check --against",
    );
}

#[test]
fn apply_without_an_admin_url_or_a_password_says_what_is_missing() {
    let run = Run::of(
        esq_command()
            .env_remove("ESQ_ADMIN_URL")
            .env("ESQ_UPSTREAM__PASSWORD", "x")
            .args(["setup", "upstream", "--apply"]),
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--admin-url"), "{}", run.stderr);
    let run = Run::of(esq_command().args(["setup", "upstream", "--with-passwords"]));
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("ESQ_UPSTREAM__PASSWORD"),
        "{}",
        run.stderr
    );
}
