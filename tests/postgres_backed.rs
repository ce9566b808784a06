//! Foundation features against a real PostgreSQL started by the test: the
//! sample data loads as documented, `esq check --against` compares catalog
//! and schema, and `esq passwd` verifiers are real SCRAM-SHA-256 secrets
//! that PostgreSQL itself accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::io::Write;
use std::process::Stdio;

use common::postgres::TestPostgres;
use common::process::{esq_command, Run};
use common::upstream::load_sample_data;

fn check_against(url: &str) -> (i32, String, String) {
    check_against_as(url, &[])
}

/// `esq check --against url` with `env` (`ESQ_…` overrides naming the roles).
fn check_against_as(url: &str, env: &[(String, String)]) -> (i32, String, String) {
    let run = esq_with(env, &["check", "--against", url]);
    (run.status, run.stdout, run.stderr)
}

fn esq_with(env: &[(String, String)], args: &[&str]) -> Run {
    let mut command = esq_command();
    command.current_dir(common::repo()).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    Run::of(&mut command)
}

/// A read-only service role (as docs/lifecycle.md documents it) and, with
/// `maintenance`, a maintenance role; the `ESQ_…` overrides naming them.
async fn roles(pg: &TestPostgres, maintenance: bool) -> Vec<(String, String)> {
    let n = std::process::id();
    let url: tokio_postgres::Config = pg.url().parse().unwrap();
    let database = url.get_dbname().unwrap().to_string();
    let service = format!("esq_check_service_{n}");
    let mut sql = format!(
        "DROP ROLE IF EXISTS {service};
         CREATE ROLE {service} LOGIN;
         ALTER ROLE {service} SET log_statement = none;
         ALTER ROLE {service} SET log_min_error_statement = panic;
         ALTER ROLE {service} SET log_min_duration_statement = -1;
         ALTER ROLE {service} SET log_min_duration_sample = -1;
         ALTER ROLE {service} SET log_transaction_sample_rate = 0;
         GRANT USAGE ON SCHEMA public TO {service};
         GRANT SELECT ON public.burial_2024, public.staff_notes TO {service};"
    );
    pg.drop_role_with_database(&service);
    let at = |role: &str| format!("postgres://{role}@127.0.0.1:{}/{database}", pg.port());
    let mut env = vec![("ESQ_UPSTREAM__URL".to_string(), at(&service))];
    if maintenance {
        let role = format!("esq_check_maint_{n}");
        sql.push_str(&common::upstream::maintenance_grants(&role, &database));
        pg.drop_role_with_database(&role);
        env.push(("ESQ_MAINTENANCE__URL".into(), at(&role)));
        env.push((
            "ESQ_MAINTENANCE__PASSWORD".into(),
            common::upstream::MAINTENANCE_PASSWORD.into(),
        ));
    }
    pg.connect().await.batch_execute(&sql).await.unwrap();
    env
}

#[tokio::test]
async fn sample_data_loads_and_check_against_compares_catalog_and_schema() {
    let pg = TestPostgres::start().await;
    let client = load_sample_data(&pg, 5_000).await;
    let per_state = client
        .query(
            "SELECT state, count(*) FROM public.burial_2024 GROUP BY state",
            &[],
        )
        .await
        .expect("query");
    let small = per_state.iter().filter(|r| r.get::<_, i64>(1) < 11).count();
    assert!(
        small >= 4,
        "some states stay under k=11 so suppression shows"
    );

    let env = roles(&pg, false).await;
    let (status, stdout, stderr) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("every catalog table and field exists"),
        "{stdout}"
    );

    // A column the catalog does not know is forbidden by default (not an error).
    client
        .batch_execute("ALTER TABLE public.burial_2024 ADD COLUMN notes text")
        .await
        .expect("alter");
    let (status, stdout, _) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 0);
    assert!(
        stdout.contains("public.burial_2024.notes: not in the catalog, forbidden by default"),
        "{stdout}"
    );

    // A catalog field missing from the database is an error naming the file.
    client
        .batch_execute("ALTER TABLE public.burial_2024 DROP COLUMN county")
        .await
        .expect("alter");
    let (status, _, stderr) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 1);
    assert!(stderr.contains("burial_2024.yaml"), "{stderr}");
    assert!(stderr.contains("\"county\" is not a column"), "{stderr}");

    client
        .batch_execute("DROP TABLE public.burial_2024")
        .await
        .expect("drop");
    let (status, _, stderr) = check_against(&pg.url());
    assert_eq!(status, 1);
    assert!(
        stderr.contains("does not exist in the database"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_against_verifies_what_each_role_may_do() {
    let pg = TestPostgres::start().await;
    let admin = load_sample_data(&pg, 500).await;
    let env = roles(&pg, true).await;
    let service = env[0].1.split(['/', '@']).nth(2).unwrap().to_string();
    let maintenance = env[1].1.split(['/', '@']).nth(2).unwrap().to_string();

    // Before `esq migrate` there is no schema esq for the maintenance role to own.
    let (status, _, stderr) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{maintenance}: owns schema esq: NOT MET")),
        "{stderr}"
    );
    let migrated = esq_with(&env, &["migrate"]);
    assert_eq!(migrated.status, 0, "{}", migrated.stderr);
    assert!(
        migrated.stdout.contains("applied V1__lifecycle"),
        "{}",
        migrated.stdout
    );
    let again = esq_with(&env, &["migrate"]);
    assert!(again.stdout.contains("is current"), "{}", again.stdout);
    let (status, stdout, stderr) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("grants    {service}:")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("grants    {maintenance}:")),
        "{stdout}"
    );

    // A service role that can write, or read schema esq, is refused.
    admin
        .batch_execute(&format!(
            "GRANT INSERT ON public.burial_2024 TO {service}; GRANT USAGE ON SCHEMA esq TO {service};"
        ))
        .await
        .unwrap();
    let (status, _, stderr) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("cannot write public.burial_2024 (service role stays read-only): NOT MET")
            && stderr.contains(&format!(
                "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.burial_2024 FROM {service};"
            )),
        "{stderr}"
    );
    assert!(stderr.contains("cannot read schema esq"), "{stderr}");
    // Its statements kept out of PostgreSQL's log, or the keys of forgotten
    // subjects (in esq's rewrites) would land there.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {service} RESET log_min_error_statement"
        ))
        .await
        .unwrap();
    let (_, _, stderr) = check_against_as(&pg.url(), &env);
    assert!(
        stderr.contains(&format!(
            "ALTER ROLE {service} SET log_min_error_statement = panic;"
        )),
        "{stderr}"
    );
    admin
        .batch_execute(&format!(
            "ALTER ROLE {service} SET log_min_error_statement = panic"
        ))
        .await
        .unwrap();
    // A setting for the role in this database overrides the role's own.
    let database: String = admin
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "ALTER ROLE {service} IN DATABASE \"{database}\" SET log_min_error_statement = error"
        ))
        .await
        .unwrap();
    let (status, _, stderr) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 1, "{stderr}");
    assert!(
        stderr.contains("log_min_error_statement = panic"),
        "{stderr}"
    );
    admin
        .batch_execute(&format!(
            "ALTER ROLE {service} IN DATABASE \"{database}\" RESET log_min_error_statement"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "REVOKE INSERT ON public.burial_2024 FROM {service}; REVOKE USAGE ON SCHEMA esq FROM {service};
             REVOKE DELETE ON public.staff_notes FROM {maintenance};"
        ))
        .await
        .unwrap();
    // A maintenance role that cannot delete linked rows cannot forget.
    let (status, _, stderr) = check_against_as(&pg.url(), &env);
    assert_eq!(status, 1);
    assert!(
        stderr.contains(
            "may SELECT and DELETE public.staff_notes (purges, right-to-delete): NOT MET"
        ) && stderr.contains(&format!(
            "GRANT SELECT, DELETE ON public.staff_notes TO {maintenance};"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_against_an_unreachable_database_fails_clearly() {
    let (status, _, stderr) = check_against("postgres://nobody@127.0.0.1:1/none");
    assert_eq!(status, 1);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[tokio::test]
async fn esq_passwd_verifiers_are_accepted_by_postgresql_scram() {
    let pg = TestPostgres::start_private().await;
    let mut child = esq_command()
        .args(["passwd", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run esq passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse battery\n")
        .expect("write password");
    let out = child.wait_with_output().expect("esq passwd");
    assert!(out.status.success());
    let verifier = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");

    let admin = pg.connect().await;
    admin
        .batch_execute(&format!("CREATE ROLE alice LOGIN PASSWORD '{verifier}'"))
        .await
        .expect("create role with the verifier");
    pg.require_scram_for("alice").await;

    let url = |password: &str| {
        format!(
            "host=127.0.0.1 port={} user=alice dbname=postgres password='{password}'",
            pg.port()
        )
    };
    let (client, connection) =
        tokio_postgres::connect(&url("correct horse battery"), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL accepts the password behind the esq verifier");
    tokio::spawn(connection);
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, "alice");

    let wrong = tokio_postgres::connect(&url("wrong"), tokio_postgres::NoTls).await;
    assert!(
        wrong.is_err(),
        "a wrong password is refused (so SCRAM was really used)"
    );
}
