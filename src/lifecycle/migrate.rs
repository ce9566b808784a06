//! Schema `esq`: created and upgraded by `esq migrate` with refinery, from
//! the ordered SQL files in `migrations/` (compiled into the binary, so
//! the schema always matches the code that reads it). refinery records
//! each applied version with its checksum in `esq.schema_history` and
//! refuses a migration edited after it was applied. Every other lifecycle
//! command checks the version first ([`super::Maintenance::require_current_schema`]).

use tokio_postgres::Client;

use super::MaintenanceError;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Where refinery keeps the applied versions.
pub const HISTORY_TABLE: &str = "esq.schema_history";

/// What `esq migrate` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    /// Versions applied by this run (`V1__lifecycle` …).
    pub applied: Vec<String>,
    /// The schema's version now.
    pub version: i64,
}

/// The newest version this esq carries.
pub fn latest_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The schema's applied version (0: not created yet).
pub async fn current_version(client: &Client) -> Result<i64, MaintenanceError> {
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await
        .map_err(MaintenanceError::database)?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0)::bigint FROM {HISTORY_TABLE}"),
            &[],
        )
        .await
        .map_err(MaintenanceError::database)?;
    Ok(row.get(0))
}

/// Creates schema `esq` (owned by the maintenance role) and applies the
/// migrations it lacks, each in its own transaction.
pub async fn migrate(client: &mut Client) -> Result<Migrated, MaintenanceError> {
    // Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the
    // database even when the schema exists, and `esq setup upstream`
    // creates schema esq for the maintenance role instead of granting that.
    client
        .batch_execute(
            "DO $esq$ BEGIN IF pg_catalog.to_regnamespace('esq') IS NULL THEN CREATE SCHEMA esq; END IF; END $esq$",
        )
        .await
        .map_err(MaintenanceError::database)?;
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner
        .run_async(client)
        .await
        .map_err(|err| MaintenanceError::Database(format!("migration failed: {err}")))?;
    let applied = report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect();
    Ok(Migrated {
        applied,
        version: current_version(client).await?,
    })
}
