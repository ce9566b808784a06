//! Real drivers through esq's PostgreSQL door: pgJDBC (DatabaseMetaData),
//! psqlODBC (the ODBC catalog functions, through pyodbc), node-postgres,
//! psycopg 3, asyncpg and SQLAlchemy's inspector. Each driver program under
//! `tests/drivers/` logs in, makes its catalog calls, sets a ticket and runs
//! a permitted aggregate query and a denied one, printing one JSON line per
//! step; the tests here assert what each step saw: the tables, columns,
//! keys and indexes are listed, index statistics come back unknown (NULL),
//! the query answers with groups of at least k, the denial is 42501, and no
//! PII value of the sample data appears anywhere in the output.
//!
//! The drivers come from `scripts/test`: a virtual environment under
//! `target/venv` (tests/drivers/requirements.txt), `target/node`
//! (tests/drivers/node/package-lock.json) and Debian packages (a JDK,
//! libpostgresql-jdbc-java, odbc-postgresql). It exports their paths
//! (`ESQ_TEST_PYTHON`, `ESQ_TEST_NODE_PATH`, `ESQ_TEST_PGJDBC_JAR`) and
//! `ESQ_REQUIRE_DRIVERS=1`. A missing driver fails the test when that is set
//! or `CI` is; otherwise (a developer's `cargo test`) it is skipped with a
//! message saying how to install it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::esq::Esq;
use common::Doors;
use serde_json::Value;

/// Exit status of a driver program whose driver module is not installed.
const MISSING_DRIVER: i32 = 3;

/// One step a driver program reported.
struct Step {
    name: String,
    json: Value,
}

/// Everything a driver program printed, for assertions and messages.
struct Run {
    driver: &'static str,
    steps: Vec<Step>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn step(&self, name: &str) -> &Value {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .map(|s| &s.json)
            .unwrap_or_else(|| panic!("{}: no step {name}\n{}", self.driver, self.output()))
    }

    /// The rows of a step that must have succeeded.
    fn rows(&self, name: &str) -> Vec<Vec<Option<String>>> {
        let step = self.step(name);
        assert_eq!(
            step["ok"],
            Value::Bool(true),
            "{}: step {name} failed: {step}\n{}",
            self.driver,
            self.output()
        );
        step["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .collect()
    }

    /// Column `index` of every row of a successful step.
    fn column(&self, name: &str, index: usize) -> Vec<String> {
        self.rows(name)
            .into_iter()
            .map(|row| row.get(index).cloned().flatten().unwrap_or_default())
            .collect()
    }

    /// The SQLSTATE of a step that must have failed.
    fn sqlstate(&self, name: &str) -> String {
        let step = self.step(name);
        assert_eq!(
            step["ok"],
            Value::Bool(false),
            "{}: step {name} was answered: {step}",
            self.driver
        );
        step["sqlstate"].as_str().unwrap_or_default().to_string()
    }

    fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Whether a missing driver fails the test (CI, scripts/test) or skips it.
fn drivers_required() -> bool {
    ["CI", "ESQ_REQUIRE_DRIVERS"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false"))
}

/// Fails or skips (see the module docs); `true` when the test should go on.
fn driver_available(driver: &str, problem: Option<String>) -> bool {
    let Some(problem) = problem else {
        return true;
    };
    let message = format!(
        "{driver} is not installed: {problem}. scripts/test installs every driver \
         (a virtual environment in target/venv, node-postgres in target/node, \
         default-jdk-headless, libpostgresql-jdbc-java, odbc-postgresql)"
    );
    assert!(!drivers_required(), "{message}");
    eprintln!("SKIPPED (not in CI): {message}");
    false
}

fn repo_path(path: &str) -> PathBuf {
    common::repo().join(path)
}

/// The Python of the drivers' virtual environment, running `family` of
/// tests/drivers/python_drivers.py; `None` (after the skip-or-fail rule)
/// when there is no such environment.
fn python_drivers(family: &str) -> Option<tokio::process::Command> {
    let python = match std::env::var_os("ESQ_TEST_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => repo_path("target/venv/bin/python"),
    };
    let missing = (!python.exists()).then(|| format!("{} not found", python.display()));
    if !driver_available("the Python drivers", missing) {
        return None;
    }
    let mut command = tokio::process::Command::new(python);
    command
        .arg(repo_path("tests/drivers/python_drivers.py"))
        .arg(family);
    Some(command)
}

/// Runs `program` with the environment of a login as the journalist (whose
/// demo password is the user name) and the journalist's FOIA ticket.
async fn run(
    driver: &'static str,
    esq: &Esq,
    ticket: &str,
    mut program: tokio::process::Command,
) -> Option<Run> {
    let out: Output = program
        .env("ESQ_HOST", "127.0.0.1")
        .env("ESQ_PORT", esq.pg_addr().port().to_string())
        .env("ESQ_DB", esq.database())
        .env("ESQ_USER", "journalist")
        .env("ESQ_PASSWORD", "journalist")
        .env("ESQ_TICKET", ticket)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{driver}: cannot start the driver program: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.code() == Some(MISSING_DRIVER) {
        driver_available(driver, Some(stderr.trim().to_string()));
        return None;
    }
    assert!(
        out.status.success(),
        "{driver} exited with {}\n{stdout}\n{stderr}",
        out.status
    );
    let steps = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|line| {
            let json: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{driver}: not JSON ({e}): {line}"));
            Step {
                name: json["step"].as_str().unwrap_or_default().to_string(),
                json,
            }
        })
        .collect();
    println!("{driver}:\n{stdout}");
    Some(Run {
        driver,
        steps,
        stdout,
        stderr,
    })
}

/// esq over the sample data, a FOIA ticket, and some PII values of the
/// sample data that must never appear in a driver's output.
async fn start() -> (Esq, String, Vec<String>) {
    let esq = Esq::builder().rows(3_000).start().await;
    let ticket = esq.foia_ticket().await;
    let admin = esq.pg().connect().await;
    let markers = admin
        .query(
            "SELECT name, ssn FROM public.burial_2024 ORDER BY id LIMIT 25",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .flat_map(|row| (0..2).map(move |i| row.get::<_, String>(i)))
        .collect();
    (esq, ticket, markers)
}

/// What every driver's query steps must show: answered groups of at least
/// k, the prepared query's California group, a 42501 for `SELECT ssn`, and
/// no PII value anywhere.
fn assert_query_steps(run: &Run, markers: &[String]) {
    let counts = run.column("query", 1);
    assert!(
        counts.len() > 5,
        "{}: too few groups: {counts:?}",
        run.driver
    );
    for count in &counts {
        let n: u64 = count.parse().unwrap_or_else(|_| panic!("a count: {count}"));
        assert!(n >= 11, "{}: a group below k: {counts:?}", run.driver);
    }
    let prepared = run.rows("preparedQuery");
    assert_eq!(prepared.len(), 1, "{}: {prepared:?}", run.driver);
    assert_eq!(prepared[0][0].as_deref(), Some("CA"));
    assert_eq!(run.sqlstate("deniedQuery"), "42501", "{}", run.driver);
    assert_no_pii(run, markers);
}

fn assert_no_pii(run: &Run, markers: &[String]) {
    for marker in markers {
        assert!(
            !run.stdout.contains(marker.as_str()) && !run.stderr.contains(marker.as_str()),
            "{}: a PII value of the sample data reached the client: {marker}",
            run.driver
        );
    }
}

fn assert_lists_sample_tables(run: &Run, step: &str, index: usize) {
    let tables = run.column(step, index);
    for table in ["burial_2024", "staff_notes"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{}: {step} lists {tables:?}",
            run.driver
        );
    }
}

fn assert_lists_sample_columns(run: &Run, step: &str, index: usize) {
    let columns = run.column(step, index);
    for column in ["id", "state", "county", "burial_date", "branch"] {
        assert!(
            columns.iter().any(|c| c == column),
            "{}: {step} lists {columns:?}",
            run.driver
        );
    }
}

/// Index statistics (CARDINALITY, PAGES) come back unknown: NULL, or the 0
/// a driver puts for NULL. The sample table has thousands of rows.
fn assert_no_statistics(run: &Run, step: &str, columns: &[usize]) {
    for row in run.rows(step) {
        for &i in columns {
            let value = row.get(i).cloned().flatten();
            assert!(
                matches!(value.as_deref(), None | Some("0") | Some("0.0")),
                "{}: {step} revealed a statistic: {row:?}",
                run.driver
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_database_metadata_and_a_query_under_a_ticket() {
    let jar = std::env::var("ESQ_TEST_PGJDBC_JAR")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".to_string());
    let missing = [("javac", "-version"), ("java", "-version")]
        .iter()
        .find(|(tool, arg)| std::process::Command::new(tool).arg(arg).output().is_err())
        .map(|(tool, _)| format!("{tool} not found"))
        .or_else(|| (!Path::new(&jar).exists()).then(|| format!("{jar} not found")));
    if !driver_available("pgJDBC", missing) {
        return;
    }
    let classes = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jdbc-driver");
    std::fs::create_dir_all(&classes).unwrap();
    let compiled = tokio::process::Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(repo_path("tests/drivers/JdbcDriver.java"))
        .output()
        .await
        .unwrap();
    assert!(
        compiled.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let (esq, ticket, markers) = start().await;
    let mut java = tokio::process::Command::new("java");
    java.arg("-cp")
        .arg(format!("{}:{jar}", classes.display()))
        .arg("JdbcDriver");
    let run = run("pgJDBC", &esq, &ticket, java).await.unwrap();

    assert!(run.column("getSchemas", 0).contains(&"public".to_string()));
    assert_lists_sample_tables(&run, "getTables", 1);
    assert_lists_sample_columns(&run, "getColumns", 0);
    let columns = run.rows("getColumns");
    assert!(columns.contains(&vec![
        Some("state".into()),
        Some("text".into()),
        Some("NO".into())
    ]));
    assert_eq!(
        run.rows("getPrimaryKeys"),
        vec![vec![Some("id".into()), Some("burial_2024_pkey".into())]]
    );
    let indexes = run.column("getIndexInfo", 0);
    for index in ["burial_2024_pkey", "burial_2024_state_idx"] {
        assert!(indexes.iter().any(|i| i == index), "{indexes:?}");
    }
    assert_no_statistics(&run, "getIndexInfo", &[3, 4]);
    let types = run.column("getTypeInfo", 0);
    assert!(types.iter().any(|t| t == "int8") && types.iter().any(|t| t == "text"));
    run.rows("setTicket");
    assert_query_steps(&run, &markers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psqlodbc_catalog_functions_and_a_query_under_a_ticket() {
    let Some(python) = python_drivers("odbc") else {
        return;
    };
    let (esq, ticket, markers) = start().await;
    let Some(run) = run("psqlODBC", &esq, &ticket, python).await else {
        return;
    };
    assert!(run.rows("connect")[0][0]
        .as_deref()
        .is_some_and(|d| d.starts_with("psqlodbc")));
    assert_lists_sample_tables(&run, "tables", 1);
    assert_lists_sample_columns(&run, "columns", 0);
    assert_eq!(
        run.rows("primaryKeys"),
        vec![vec![Some("id".into()), Some("burial_2024_pkey".into())]]
    );
    let indexes = run.column("statistics", 0);
    for index in ["burial_2024_pkey", "burial_2024_state_idx"] {
        assert!(indexes.iter().any(|i| i == index), "{indexes:?}");
    }
    assert_no_statistics(&run, "statistics", &[3, 4]);
    assert!(run.column("getTypeInfo", 0).iter().any(|t| t == "int8"));
    run.rows("setTicket");
    assert_query_steps(&run, &markers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_information_schema_and_a_query_under_a_ticket() {
    let node_path = std::env::var_os("ESQ_TEST_NODE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target/node/node_modules"));
    let missing = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
        .then(|| "node not found".to_string());
    if !driver_available("node-postgres", missing) {
        return;
    }
    let (esq, ticket, markers) = start().await;
    let mut node = tokio::process::Command::new("node");
    node.arg(repo_path("tests/drivers/node/node_driver.js"))
        .env("NODE_PATH", &node_path);
    let Some(run) = run("node-postgres", &esq, &ticket, node).await else {
        return;
    };
    run.rows("connect");
    assert_lists_sample_tables(&run, "informationSchema", 1);
    assert_lists_sample_columns(&run, "columns", 0);
    run.rows("setTicket");
    assert_query_steps(&run, &markers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_with_a_ticket_as_password() {
    let Some(python) = python_drivers("psycopg") else {
        return;
    };
    let (esq, ticket, markers) = start().await;
    let Some(run) = run("psycopg", &esq, &ticket, python).await else {
        return;
    };
    assert_lists_sample_tables(&run, "informationSchema", 1);
    // A denial carries a hint.
    assert_eq!(run.rows("deniedHint"), vec![vec![Some("True".into())]]);
    assert_query_steps(&run, &markers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_inspector_and_pandas() {
    let Some(python) = python_drivers("sqlalchemy") else {
        return;
    };
    let (esq, ticket, markers) = start().await;
    let Some(run) = run("SQLAlchemy", &esq, &ticket, python).await else {
        return;
    };
    assert!(run
        .column("get_schema_names", 0)
        .contains(&"public".to_string()));
    assert_lists_sample_tables(&run, "get_table_names", 0);
    assert_lists_sample_columns(&run, "get_columns", 0);
    assert_eq!(
        run.rows("get_pk_constraint"),
        vec![vec![Some("burial_2024_pkey".into()), Some("id".into())]]
    );
    let indexes = run.column("get_indexes", 0);
    for index in ["burial_2024_state_idx", "burial_2024_burial_date_idx"] {
        assert!(indexes.iter().any(|i| i == index), "{indexes:?}");
    }
    assert_eq!(
        run.rows("get_foreign_keys"),
        Vec::<Vec<Option<String>>>::new()
    );
    let counts = run.column("query", 1);
    assert!(counts.len() > 5 && counts.iter().all(|n| n.parse::<u64>().unwrap() >= 11));
    assert_no_pii(&run, &markers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_information_schema_and_a_query_under_a_ticket() {
    let Some(python) = python_drivers("asyncpg") else {
        return;
    };
    let (esq, ticket, markers) = start().await;
    let Some(run) = run("asyncpg", &esq, &ticket, python).await else {
        return;
    };
    assert_lists_sample_columns(&run, "informationSchema", 0);
    run.rows("setTicket");
    assert_query_steps(&run, &markers);
}
