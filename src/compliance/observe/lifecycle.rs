//! What the lifecycle has done, asked of the database as the maintenance
//! role: the schema's version, both roles' privileges, the tombstones and
//! any rows of forgotten subjects that came back, the last purge of each
//! dataset, and the exception waivers open now. MP-6 and SI-12 are
//! computed from these, so they say what has run, not what the
//! configuration promises; the SSP lists the open exceptions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::lifecycle::grants::GrantCheck;
use crate::lifecycle::{migrate, tombstones, watch, Maintenance, MaintenanceError};

#[derive(Debug, Clone)]
pub struct LifecycleFacts {
    /// Where the maintenance role connects (`role@host:port/db`).
    pub target: String,
    pub schema_version: i64,
    pub schema_needed: i64,
    pub grants: Vec<GrantCheck>,
    /// Tombstones per subject dataset, as the database holds them.
    pub tombstones: BTreeMap<String, i64>,
    /// Subject datasets with tombstones esq cannot open.
    pub unreadable: Vec<String>,
    /// Rows of forgotten subjects present, per dataset.
    pub rows_present: BTreeMap<String, i64>,
    /// The last finished (not dry-run) purge of each dataset.
    pub last_purge: BTreeMap<String, DateTime<Utc>>,
    /// Exception waivers open now: pending, or approved and unexpired.
    pub open_exceptions: Vec<crate::exceptions::Exception>,
}

/// `Err`: not configured, or why it could not be observed.
pub async fn observe(app: &App) -> Result<LifecycleFacts, String> {
    if app.config.maintenance.is_none() {
        return Err("no [maintenance] role is configured".into());
    }
    match observe_inner(app).await {
        Ok(facts) => Ok(facts),
        Err(err) => {
            tracing::warn!(%err, "the lifecycle could not be observed");
            Err(match err {
                MaintenanceError::NotMigrated { .. } => err.to_string(),
                MaintenanceError::Connect { .. } => {
                    "could not verify: the maintenance role could not connect (see the log)".into()
                }
                _ => "could not verify: reading schema esq failed (see the log)".into(),
            })
        }
    }
}

async fn observe_inner(app: &App) -> Result<LifecycleFacts, MaintenanceError> {
    let maintenance = Maintenance::connect(&app.config).await?;
    let client = &maintenance.client;
    let bundle = app.bundle();
    let schema_version = migrate::current_version(client).await?;
    let schema_needed = migrate::latest_version();
    let grants = crate::lifecycle::grants::check(client, &app.config, &bundle.catalog)
        .await
        .map_err(MaintenanceError::database)?;
    let mut facts = LifecycleFacts {
        target: maintenance.target.clone(),
        schema_version,
        schema_needed,
        grants,
        tombstones: BTreeMap::new(),
        unreadable: Vec::new(),
        rows_present: BTreeMap::new(),
        last_purge: BTreeMap::new(),
        open_exceptions: Vec::new(),
    };
    if schema_version != schema_needed {
        return Ok(facts);
    }
    for row in client
        .query(
            "SELECT dataset, count(*) FROM esq.tombstones GROUP BY dataset",
            &[],
        )
        .await
        .map_err(MaintenanceError::database)?
    {
        facts.tombstones.insert(row.get(0), row.get(1));
    }
    if let Some(keys) = &app.subject_keys {
        let loaded = tombstones::load(client, keys).await?;
        facts.unreadable = loaded.unreadable.iter().cloned().collect();
        app.tombstones.merge(loaded);
        facts.rows_present = watch::present_rows(app, &maintenance).await?;
    } else if !facts.tombstones.is_empty() {
        facts.unreadable = facts.tombstones.keys().cloned().collect();
    }
    for row in client
        .query(
            "SELECT dataset, extract(epoch FROM max(finished_at))::float8 FROM esq.purge_runs
             WHERE status = 'finished' AND NOT dry_run GROUP BY dataset",
            &[],
        )
        .await
        .map_err(MaintenanceError::database)?
    {
        let epoch: Option<f64> = row.get(1);
        if let Some(at) = epoch.and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64)) {
            facts.last_purge.insert(row.get(0), at);
        }
    }
    facts.open_exceptions = crate::exceptions::store::open(client, Utc::now())
        .await
        .map_err(|err| MaintenanceError::Database(err.to_string()))?;
    Ok(facts)
}
