//! What the upstream database says about esq's service role, read over a
//! connection made exactly as esq makes them ([`UpstreamPool`]: the same
//! URL, password, TLS per `sslmode` and `upstream.ca_file`, the same
//! read-only session settings): the role's attributes, the roles it can act
//! as, the tables it can write or read, the schemas it can create in, and
//! whether this connection is encrypted (`pg_stat_ssl`).
//!
//! Every query is fixed text (no value is spliced in); answers come back in
//! text format. When the database cannot be reached, the reason names only
//! `host:port` and the kind of failure: the database's own words go to the
//! log.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::app::App;
use crate::metrics::Door;
use crate::upstream::query::{self, Results};
use crate::upstream::{UpstreamConn, UpstreamError, UpstreamPool};

/// How long one observation query may run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The pool's fair-share key for this connection (esq's own work).
const OBSERVER: &str = "esq compliance";

/// The service role and its connection, as the database reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamFacts {
    /// `host:port` of the upstream.
    pub endpoint: String,
    /// `current_user` of the connection.
    pub role: String,
    pub superuser: bool,
    pub bypass_rls: bool,
    pub create_role: bool,
    pub create_db: bool,
    pub replication: bool,
    /// The role may create schemas in the database.
    pub create_in_database: bool,
    /// Roles the service role is a member of (and so can act as) that hold
    /// a privileged attribute or are privileged predefined roles, each as
    /// `name (what it holds)`.
    pub privileged_memberships: Vec<String>,
    /// `schema.table` the role can write (INSERT, UPDATE, DELETE or
    /// TRUNCATE, on the table or on any of its columns).
    pub writable: Vec<String>,
    /// `schema.table` the role can read (SELECT on the table or any column).
    pub readable: Vec<String>,
    /// Schemas the role can create objects in.
    pub create_schemas: Vec<String>,
    /// The role may create temporary tables (`TEMPORARY` on the database,
    /// granted to PUBLIC by default).
    pub temporary: bool,
    /// The role may create large objects (`lo_create`, `lo_creat`,
    /// `lo_from_bytea`: PUBLIC's by default).
    pub large_objects: bool,
    /// SECURITY DEFINER functions owned by another role that the role can
    /// execute: each runs with its owner's rights (a write path the grants
    /// on tables do not show).
    pub definer_functions: Vec<String>,
    /// `default_transaction_read_only` of esq's session.
    pub read_only_session: bool,
    /// This connection is encrypted, and with what (`TLSv1.3`).
    pub ssl: bool,
    pub ssl_version: String,
}

/// The role's attributes, the database's `CREATE` privilege, the session's
/// read-only setting and this connection's TLS.
const ROLE: &str = "SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole, \
     r.rolcreatedb, r.rolreplication, \
     pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CREATE'), \
     pg_catalog.current_setting('default_transaction_read_only') = 'on', \
     coalesce((SELECT s.ssl FROM pg_catalog.pg_stat_ssl s WHERE s.pid = pg_catalog.pg_backend_pid()), false), \
     coalesce((SELECT s.version FROM pg_catalog.pg_stat_ssl s WHERE s.pid = pg_catalog.pg_backend_pid()), ''), \
     pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'TEMPORARY'), \
     pg_catalog.has_function_privilege(current_user, 'pg_catalog.lo_from_bytea(oid, bytea)', 'EXECUTE') \
       OR pg_catalog.has_function_privilege(current_user, 'pg_catalog.lo_create(oid)', 'EXECUTE') \
       OR pg_catalog.has_function_privilege(current_user, 'pg_catalog.lo_creat(integer)', 'EXECUTE') \
     FROM pg_catalog.pg_roles r WHERE r.rolname = current_user";

/// SECURITY DEFINER functions outside the system schemas, owned by another
/// role, that the role can execute.
const DEFINERS: &str = "SELECT n.nspname || '.' || p.proname || '(' || \
     pg_catalog.pg_get_function_identity_arguments(p.oid) || ') (owned by ' || \
     pg_catalog.pg_get_userbyid(p.proowner) || ')' \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.prosecdef AND p.proowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) \
     AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
     AND pg_catalog.has_function_privilege(current_user, p.oid, 'EXECUTE') ORDER BY 1";

/// Roles the service role can act as that hold a privileged attribute, and
/// privileged predefined roles it is a member of.
const MEMBERSHIPS: &str = "SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole, \
     r.rolcreatedb, r.rolreplication \
     FROM pg_catalog.pg_roles r \
     WHERE r.rolname <> current_user \
     AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') \
     AND (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication \
          OR r.rolname IN ('pg_read_server_files', 'pg_write_server_files', \
                           'pg_execute_server_program', 'pg_write_all_data', 'pg_read_all_data')) \
     ORDER BY 1";

/// Tables, views, materialized views, foreign tables and sequences outside
/// the system schemas that the role can write (a sequence: `setval`) or
/// read.
const RELATIONS: &str = "SELECT nspname, relname, writable, readable FROM ( \
     SELECT n.nspname, c.relname, \
     CASE WHEN c.relkind = 'S' \
       THEN pg_catalog.has_sequence_privilege(current_user, c.oid, 'UPDATE') \
       ELSE pg_catalog.has_table_privilege(current_user, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') \
         OR pg_catalog.has_any_column_privilege(current_user, c.oid, 'INSERT, UPDATE') END AS writable, \
     CASE WHEN c.relkind = 'S' \
       THEN pg_catalog.has_sequence_privilege(current_user, c.oid, 'SELECT') \
       ELSE pg_catalog.has_any_column_privilege(current_user, c.oid, 'SELECT') END AS readable \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
     AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
     ) AS r WHERE writable OR readable ORDER BY 1, 2";

/// Schemas outside the system ones the role can create objects in.
const CREATE_SCHEMAS: &str = "SELECT n.nspname FROM pg_catalog.pg_namespace n \
     WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
     AND pg_catalog.has_schema_privilege(current_user, n.oid, 'CREATE') ORDER BY 1";

/// Connects as esq does and reads the facts; `Err` is the reason the
/// database could not be asked ("could not verify: …").
pub async fn observe(app: &App) -> Result<UpstreamFacts, String> {
    let endpoint = endpoint(&app.config.upstream.url);
    let pool = UpstreamPool::new(&app.config, app.metrics.clone())
        .map_err(|err| unreachable(&endpoint, &err))?;
    let mut lease = pool
        .acquire(Door::process, OBSERVER)
        .await
        .map_err(|err| unreachable(&endpoint, &err))?;
    let Some(conn) = lease.conn() else {
        return Err(format!("could not verify: no connection to {endpoint}"));
    };
    let facts = read_facts(conn, endpoint.clone()).await.map_err(|err| {
        tracing::warn!(upstream = %endpoint, error = %err, "compliance: the upstream did not answer esq's privilege queries");
        match err {
            UpstreamError::Server { code, .. } => format!(
                "could not verify: the database at {endpoint} refused esq's privilege queries (SQLSTATE {code})"
            ),
            _ => format!(
                "could not verify: the connection to {endpoint} failed while reading the service role's privileges"
            ),
        }
    })?;
    let mut out = BytesMut::new();
    frontend::terminate(&mut out);
    let _ = conn.send(&out).await;
    Ok(facts)
}

async fn read_facts(
    conn: &mut UpstreamConn,
    endpoint: String,
) -> Result<UpstreamFacts, UpstreamError> {
    let mut facts = UpstreamFacts {
        endpoint,
        ..UpstreamFacts::default()
    };
    let role = rows(conn, ROLE).await?;
    let Some(row) = role.first() else {
        return Err(UpstreamError::Protocol(
            "current_user is not in pg_roles".into(),
        ));
    };
    facts.role = text(row, 0);
    facts.superuser = flag(row, 1);
    facts.bypass_rls = flag(row, 2);
    facts.create_role = flag(row, 3);
    facts.create_db = flag(row, 4);
    facts.replication = flag(row, 5);
    facts.create_in_database = flag(row, 6);
    facts.read_only_session = flag(row, 7);
    facts.ssl = flag(row, 8);
    facts.ssl_version = text(row, 9);
    facts.temporary = flag(row, 10);
    facts.large_objects = flag(row, 11);

    for row in rows(conn, MEMBERSHIPS).await? {
        let held: Vec<&str> = [
            (1, "SUPERUSER"),
            (2, "BYPASSRLS"),
            (3, "CREATEROLE"),
            (4, "CREATEDB"),
            (5, "REPLICATION"),
        ]
        .into_iter()
        .filter(|(i, _)| flag(&row, *i))
        .map(|(_, name)| name)
        .collect();
        let name = text(&row, 0);
        facts.privileged_memberships.push(if held.is_empty() {
            name
        } else {
            format!("{name} ({})", held.join(", "))
        });
    }
    for row in rows(conn, RELATIONS).await? {
        let table = format!("{}.{}", text(&row, 0), text(&row, 1));
        if flag(&row, 2) {
            facts.writable.push(table.clone());
        }
        if flag(&row, 3) {
            facts.readable.push(table);
        }
    }
    facts.definer_functions = rows(conn, DEFINERS)
        .await?
        .iter()
        .map(|row| text(row, 0))
        .collect();
    facts.create_schemas = rows(conn, CREATE_SCHEMAS)
        .await?
        .iter()
        .map(|row| text(row, 0))
        .collect();
    Ok(facts)
}

type Row = Vec<Option<bytes::Bytes>>;

/// Every row of `sql` (text format).
async fn rows(conn: &mut UpstreamConn, sql: &str) -> Result<Vec<Row>, UpstreamError> {
    let mut answer = query::start(conn, sql, QUERY_TIMEOUT, Results::Text).await?;
    let mut all = Vec::new();
    while let Some(row) = answer.next().await? {
        all.push(row);
    }
    Ok(all)
}

fn text(row: &Row, i: usize) -> String {
    row.get(i)
        .and_then(|v| v.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// A boolean in text format (`t`); NULL is false.
fn flag(row: &Row, i: usize) -> bool {
    row.get(i)
        .and_then(|v| v.as_ref())
        .is_some_and(|v| v.as_ref() == b"t")
}

/// `host:port` of the upstream URL (nothing else of it).
pub fn endpoint(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(url) => {
            let host = match url.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                _ => "localhost".to_string(),
            };
            let port = url.get_ports().first().copied().unwrap_or(5432);
            format!("{host}:{port}")
        }
        Err(_) => "an unparsable upstream.url".to_string(),
    }
}

/// "could not verify: …" for a connection that failed, naming only
/// `host:port` and the kind of failure (the details go to the log).
fn unreachable(endpoint: &str, err: &UpstreamError) -> String {
    tracing::warn!(upstream = %endpoint, error = %err, "compliance: cannot reach the upstream as the service role");
    let why = match err {
        UpstreamError::Config(text) if text.contains("refused TLS") => {
            "the database refused TLS"
        }
        UpstreamError::Config(_) => {
            "the upstream connection settings are incomplete (password, upstream.ca_file or sslmode: see the log)"
        }
        UpstreamError::Unavailable(text) if text.contains("refused esq's login") => {
            "the database refused the service role's login"
        }
        UpstreamError::Unavailable(text) if text.starts_with("TLS") => {
            "the TLS handshake failed"
        }
        UpstreamError::Unavailable(_) => "no connection",
        UpstreamError::Busy(_) => "the upstream pool is busy",
        _ => "the connection failed",
    };
    format!("could not verify: cannot reach the upstream database at {endpoint} as the service role ({why})")
}
