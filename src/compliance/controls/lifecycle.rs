//! The lifecycle: MP-6 (right-to-delete: forgotten subjects are deleted,
//! stay hidden, and receipts prove it) and SI-12 (rows past retention are
//! hidden and purged on schedule), from what the maintenance role observed
//! in the database — what has run, not what the configuration promises.

use std::time::Duration;

use serde_json::json;

use super::{Checks, Facts, Finding};
use crate::app::App;
use crate::compliance::observe::{LifecycleFacts, Observations};
use crate::config::PurgeSchedule;

/// The lifecycle facts, or a failed must-check saying why there are none.
fn observed<'o>(checks: &mut Checks, observations: &'o Observations) -> Option<&'o LifecycleFacts> {
    match &observations.lifecycle {
        Ok(facts) => {
            let current = facts.schema_version == facts.schema_needed;
            checks.must(
                "schema esq is current",
                current,
                if current {
                    format!("schema esq at version {}", facts.schema_version)
                } else {
                    format!(
                        "schema esq is at version {}, esq needs {}: run esq migrate",
                        facts.schema_version, facts.schema_needed
                    )
                },
            );
            Some(facts)
        }
        Err(reason) => {
            checks.must("the maintenance role is reachable", false, reason.clone());
            None
        }
    }
}

/// The maintenance role's grants on the tables of `datasets` all hold.
fn may_delete(checks: &mut Checks, facts: &LifecycleFacts, app: &App, datasets: &[String]) {
    let bundle = app.bundle();
    let tables: Vec<String> = datasets
        .iter()
        .filter_map(|id| bundle.catalog.dataset(id))
        .map(|d| d.table.to_string())
        .collect();
    let missing: Vec<&str> = facts
        .grants
        .iter()
        .filter(|g| !g.ok && tables.iter().any(|t| g.requirement.contains(t.as_str())))
        .map(|g| g.fix.as_str())
        .collect();
    checks.must(
        "the maintenance role may delete from every table it must clean",
        missing.is_empty(),
        if missing.is_empty() {
            format!("SELECT and DELETE granted on {}", tables.join(", "))
        } else {
            format!("missing privileges: {}", missing.join(" "))
        },
    );
}

pub(super) fn right_to_delete(app: &App, observations: &Observations) -> Finding {
    let bundle = app.bundle();
    let subjects: Vec<String> = bundle
        .catalog
        .datasets()
        .filter(|d| d.subject_key.is_some())
        .map(|d| d.id.clone())
        .collect();
    let mut cleaned: Vec<String> = subjects.clone();
    for dataset in bundle.catalog.datasets() {
        if !bundle.catalog.subject_fields(dataset).is_empty() && !cleaned.contains(&dataset.id) {
            cleaned.push(dataset.id.clone());
        }
    }
    let mut facts = Facts::from([("catalog.datasets_with_subject_key", json!(subjects))]);
    let mut checks = Checks::default();
    checks.must(
        "the catalog names whose rows right-to-delete removes",
        !subjects.is_empty(),
        "no dataset has a subject_key",
    );
    checks.must(
        "deletion receipts are signed",
        app.signing.is_some(),
        "no [signing] key_file: receipts cannot be signed",
    );
    checks.must(
        "tombstones name subjects by a keyed hash",
        app.subject_keys.is_some(),
        "neither lifecycle.subject_key_file nor a signing key to key subject hashes",
    );
    if let Some(found) = observed(&mut checks, observations) {
        facts.insert("lifecycle.maintenance", json!(found.target));
        facts.insert("lifecycle.tombstones", json!(found.tombstones));
        facts.insert(
            "lifecycle.tombstoned_rows_present",
            json!(found.rows_present),
        );
        may_delete(&mut checks, found, app, &cleaned);
        let logged: Vec<&str> = found
            .grants
            .iter()
            .filter(|g| !g.ok && g.requirement.starts_with("statements are not written"))
            .map(|g| g.fix.as_str())
            .collect();
        checks.must(
            "the service role's statements stay out of PostgreSQL's log (they carry forgotten keys)",
            logged.is_empty(),
            format!("the service role's statements may be logged: {}", logged.join(" ")),
        );
        checks.must(
            "every tombstone opens with esq's key (so its subject stays hidden)",
            found.unreadable.is_empty(),
            format!(
                "tombstones of {} do not open with esq's key: those datasets are refused",
                found.unreadable.join(", ")
            ),
        );
        let back: i64 = found.rows_present.values().sum();
        checks.must(
            "no row of a forgotten subject is in the database",
            back == 0,
            format!("{back} rows of forgotten subjects are back (a restored backup?): hidden from every answer; run esq forget --reapply"),
        );
    }
    checks.verdict(
        facts,
        "esq forget deletes a subject's rows and linked rows in one transaction as the maintenance role, keeps a keyed-hash tombstone that the guard hides from every answer, and signs a receipt tied to the audit log; no forgotten subject's row is present",
    )
}

/// How long after the previous purge the next one is due, with slack.
fn purge_due_within(schedule: PurgeSchedule) -> Option<Duration> {
    match schedule {
        PurgeSchedule::Off => None,
        PurgeSchedule::Daily { .. } => Some(Duration::from_secs(2 * 24 * 3600)),
        PurgeSchedule::Every(every) => Some(every * 2 + Duration::from_secs(60)),
    }
}

pub(super) fn retention(app: &App, observations: &Observations) -> Finding {
    let bundle = app.bundle();
    let kept: Vec<String> = bundle
        .catalog
        .datasets()
        .filter(|d| d.retention_years.is_some())
        .map(|d| d.id.clone())
        .collect();
    let schedule = app.config.lifecycle.purge_schedule;
    let mut facts = Facts::from([
        ("catalog.datasets_with_retention", json!(kept)),
        ("lifecycle.purge_schedule", json!(String::from(schedule))),
    ]);
    let mut checks = Checks::default();
    let unhidden: Vec<&str> = bundle
        .catalog
        .datasets()
        .filter(|d| d.retention_years.is_some() != d.retention_field.is_some())
        .map(|d| d.id.as_str())
        .collect();
    checks.must(
        "every dataset with a retention period names the field it runs on",
        !kept.is_empty() && unhidden.is_empty(),
        if kept.is_empty() {
            "no dataset has retention_years".to_string()
        } else {
            format!(
                "retention_years without retention_field (or the reverse): {}",
                unhidden.join(", ")
            )
        },
    );
    let due = purge_due_within(schedule);
    checks.must(
        "purges are scheduled",
        due.is_some(),
        "lifecycle.purge_schedule = \"off\": rows past retention are hidden but never deleted",
    );
    if let Some(found) = observed(&mut checks, observations) {
        facts.insert("lifecycle.last_purge", json!(found.last_purge));
        may_delete(&mut checks, found, app, &kept);
        let now = observations.at;
        let late: Vec<String> = kept
            .iter()
            .filter(|id| match (found.last_purge.get(*id), due) {
                (Some(at), Some(due)) => (now - *at).to_std().unwrap_or_default() > due,
                _ => true,
            })
            .map(|id| match found.last_purge.get(id) {
                Some(at) => format!("{id} (last purged {})", at.to_rfc3339()),
                None => format!("{id} (never purged)"),
            })
            .collect();
        checks.must(
            "every dataset with a retention period was purged on schedule",
            late.is_empty(),
            format!("not purged on schedule: {}; run esq purge", late.join(", ")),
        );
    }
    checks.verdict(
        facts,
        "rows past each dataset's retention are hidden from every answer and deleted in batches on schedule by the maintenance role; each run is audited",
    )
}
