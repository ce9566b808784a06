//! Audit controls: AU-2 (decisions are recorded), AU-3 (what a record
//! holds, read from the newest one), AU-9 (the chain and the signed
//! checkpoints verify, checkpoints are recent, records are fsynced) and
//! AU-10 (signed checkpoints bind the records to the writer's key).

use serde_json::json;

use super::{Checks, Facts, Finding};
use crate::app::App;
use crate::audit::AuditProperties;
use crate::compliance::observe::{ChainFacts, CheckpointFacts, Observations};
use crate::config::{AuditConfig, AuditDurability};

/// What a record must say for AU-3: what, when, where, who, outcome.
const RECORD_FIELDS: [&str; 5] = ["kind", "time", "door", "user", "outcome"];

/// What the sink `esq serve` installs for `config` guarantees (see
/// `App::from_config`): the hash-chained `AuditLog`, or nothing when
/// `audit.enabled = false`; `signed` when a signing key signs its
/// checkpoints. Commands that serve nothing log events instead, but the
/// plan is about the serving configuration.
pub fn serving_properties(config: &AuditConfig, signed: bool) -> AuditProperties {
    if config.enabled {
        AuditProperties {
            sink: "file",
            durable: true,
            synced_before_answer: config.durability == AuditDurability::Fsync,
            full_content: true,
            hash_chained: true,
            signed,
        }
    } else {
        AuditProperties {
            sink: "disabled",
            ..AuditProperties::default()
        }
    }
}

fn properties(app: &App) -> AuditProperties {
    serving_properties(&app.config.audit, app.signing.is_some())
}

fn audit_facts(app: &App) -> Facts {
    let properties = properties(app);
    Facts::from([
        ("audit.enabled", json!(app.config.audit.enabled)),
        ("audit.sink", json!(properties.sink)),
        ("audit.path", json!(app.config.audit.path)),
        ("audit.durable", json!(properties.durable)),
        ("audit.durability", json!(app.config.audit.durability)),
        (
            "audit.synced_before_answer",
            json!(properties.synced_before_answer),
        ),
        ("audit.full_content", json!(properties.full_content)),
        ("audit.hash_chained", json!(properties.hash_chained)),
        ("audit.signed", json!(properties.signed)),
        (
            "signing.key_id",
            json!(app.signing.as_ref().map(|k| k.public().id().to_string())),
        ),
    ])
}

/// The first check of every audit control.
fn enabled(checks: &mut Checks, app: &App) -> bool {
    checks.must(
        "the audit log is enabled",
        app.config.audit.enabled,
        if app.config.audit.enabled {
            format!(
                "audit.enabled = true: the hash-chained log {}",
                app.config.audit.path.display()
            )
        } else {
            "audit.enabled = false: decisions are not recorded".to_string()
        },
    )
}

pub(super) fn event_logging(app: &App, _: &Observations) -> Finding {
    let mut checks = Checks::default();
    enabled(&mut checks, app);
    let sync = if properties(app).synced_before_answer {
        "written and fsynced before the answer completes".to_string()
    } else {
        format!(
            "written before the answer completes and fsynced within {} (audit.durability = write)",
            humantime::format_duration(app.config.audit.sync_interval)
        )
    };
    checks.verdict(
        audit_facts(app),
        format!("every decision (allow, rewrite, deny, stale ticket) and ticket event on both doors is a record in the audit log, {sync}"),
    )
}

pub(super) fn content(app: &App, observed: &Observations) -> Finding {
    let mut checks = Checks::default();
    if enabled(&mut checks, app) {
        let audit = &observed.audit;
        let has_records = matches!(
            audit.chain,
            ChainFacts::Intact { records, .. } if records > 0
        );
        match &audit.newest {
            Some(newest) => {
                let missing: Vec<&str> = RECORD_FIELDS
                    .into_iter()
                    .filter(|f| !newest.fields.iter().any(|have| have == f))
                    .collect();
                let seq = newest.seq.map(|s| format!(" {s}")).unwrap_or_default();
                checks.must(
                    "the newest record says what, when, where, who and with what outcome",
                    missing.is_empty(),
                    if missing.is_empty() {
                        format!("record{seq} holds {}", newest.fields.join(", "))
                    } else {
                        format!("the newest audit record{seq} lacks {}", missing.join(", "))
                    },
                );
            }
            None if has_records => {
                checks.must(
                    "the newest record says what, when, where, who and with what outcome",
                    false,
                    "could not verify: the newest audit record could not be read",
                );
            }
            None => {
                checks.must(
                    "the newest record says what, when, where, who and with what outcome",
                    true,
                    "the log has no records yet: records will be this build's (time, user, client, ticket hash, door, dataset, fingerprint, rewritten SQL, outcome, SQLSTATE, rows)",
                );
            }
        }
    }
    checks.verdict(
        audit_facts(app),
        "records hold time, user, client, ticket hash, door, dataset, statement fingerprint, rewritten SQL, outcome, SQLSTATE and rows",
    )
}

pub(super) fn protection(app: &App, observed: &Observations) -> Finding {
    let mut checks = Checks::default();
    let mut facts = audit_facts(app);
    if enabled(&mut checks, app) {
        let audit = &app.config.audit;
        checks.should(
            "records are fsynced before their answer (audit.durability = fsync)",
            audit.durability == AuditDurability::Fsync,
            if audit.durability == AuditDurability::Fsync {
                "audit.durability = fsync".to_string()
            } else {
                format!(
                    "audit.durability = write answers before the fsync: an OS crash or power loss can lose up to {} of records whose answers clients saw",
                    humantime::format_duration(audit.sync_interval)
                )
            },
        );
        chain_checks(&mut checks, &observed.audit.chain);
        checks.should(
            "a signing key signs checkpoints",
            app.signing.is_some(),
            match &app.signing {
                Some(key) => format!("[signing] key {}", key.public().id()),
                None => "no [signing] key_file: nothing signs checkpoints, so a cut or rewritten tail of the log goes unnoticed".to_string(),
            },
        );
        if app.signing.is_some() {
            checkpoint_checks(&mut checks, app, observed);
        }
    }
    facts.insert(
        "audit.checkpoints",
        json!(crate::audit::files::checkpoints_path(
            &app.config.audit.path
        )),
    );
    checks.verdict(
        facts,
        "the chain verifies (each record carries the SHA-256 of the one before) and so do the signed checkpoints, the newest of which is recent: a changed, removed, reordered or cut record is found by `esq audit verify`; records are fsynced before their answer. File permissions and off-host copies are the host's",
    )
}

/// The hash chain: it verifies, and starts at record 1.
fn chain_checks(checks: &mut Checks, chain: &ChainFacts) {
    const CHECK: &str = "the audit chain verifies";
    match chain {
        ChainFacts::Disabled => {}
        ChainFacts::NoRecords => {
            checks.must(CHECK, true, "the log has no records yet");
        }
        ChainFacts::Intact {
            files,
            records,
            first_seq,
            last_seq,
            from_genesis,
            torn,
        } => {
            let range = match (first_seq, last_seq) {
                (Some(first), Some(last)) => format!(", records {first}..{last}"),
                _ => String::new(),
            };
            let torn = if *torn > 0 {
                format!(" ({torn} incomplete last line(s) from a crash, not tampering)")
            } else {
                String::new()
            };
            checks.must(
                CHECK,
                true,
                format!("{records} records in {files} file(s){range} chain intact{torn}"),
            );
            checks.should(
                "the chain starts at record 1",
                *from_genesis || *records == 0,
                if *from_genesis || *records == 0 {
                    "the oldest file starts at record 1".to_string()
                } else {
                    format!(
                        "the oldest audit file starts at record {}: the files before it are missing",
                        first_seq.unwrap_or(0)
                    )
                },
            );
        }
        ChainFacts::Broken { record, what } => {
            checks.must(
                CHECK,
                false,
                format!("the audit chain is broken at {record}: {what}"),
            );
        }
        ChainFacts::Unreadable(why) => {
            checks.must(CHECK, false, format!("could not verify: {why}"));
        }
    }
}

/// The newest signed checkpoint verifies, matches the chain, and is
/// recent: no more than twice `audit.checkpoint_records` records behind the
/// log's end, and made no more than twice `audit.checkpoint_interval`
/// before the newest record it does not cover.
fn checkpoint_checks(checks: &mut Checks, app: &App, observed: &Observations) {
    const CHECK: &str = "the signed checkpoints verify and match the chain";
    let audit = &app.config.audit;
    match &observed.audit.checkpoints {
        CheckpointFacts::NoKey | CheckpointFacts::NoRecords => {
            checks.must(CHECK, true, "no records yet: nothing to checkpoint");
        }
        CheckpointFacts::Missing { file } => {
            checks.should(
                CHECK,
                false,
                format!(
                    "no signed checkpoint covers the audit log ({} has none): a cut or rewritten tail would go unnoticed",
                    file.display()
                ),
            );
        }
        CheckpointFacts::Bad { what } => {
            checks.must(CHECK, false, format!("the audit checkpoints fail: {what}"));
        }
        CheckpointFacts::Unreadable(why) => {
            checks.must(CHECK, false, format!("could not verify: {why}"));
        }
        CheckpointFacts::Verified {
            count,
            key_id,
            newest_seq,
            newest_time,
            uncovered,
            copy_checked,
        } => {
            let copy = if *copy_checked {
                " (and their copy)"
            } else {
                ""
            };
            checks.must(
                CHECK,
                true,
                format!("{count} checkpoint(s){copy} signed by key {key_id} match the chain; the newest covers record {newest_seq}"),
            );
            let twice = audit
                .checkpoint_interval
                .checked_mul(2)
                .unwrap_or(std::time::Duration::MAX);
            let interval = chrono::Duration::from_std(twice).unwrap_or(chrono::Duration::MAX);
            let newest_record = observed.audit.newest.as_ref().and_then(|n| n.time);
            let lag = match (newest_time, *uncovered) {
                (_, 0) => None,
                (Some(made), _) => Some(newest_record.unwrap_or(observed.at) - *made),
                (None, _) => Some(chrono::Duration::MAX),
            };
            let too_many = *uncovered > audit.checkpoint_records.saturating_mul(2);
            let too_old = lag.is_some_and(|lag| lag > interval);
            checks.should(
                "the newest checkpoint is recent",
                !too_many && !too_old,
                if *uncovered == 0 {
                    "the newest checkpoint covers the log's last record".to_string()
                } else if too_many || too_old {
                    format!(
                        "the newest audit checkpoint (record {newest_seq}) is stale: {uncovered} record(s) after it are covered by the chain only (allowed: 2 x audit.checkpoint_records = {}, within 2 x audit.checkpoint_interval = {})",
                        audit.checkpoint_records.saturating_mul(2),
                        humantime::format_duration(twice)
                    )
                } else {
                    format!("{uncovered} record(s) after the newest checkpoint, within 2 x audit.checkpoint_interval")
                },
            );
        }
    }
}

pub(super) fn non_repudiation(app: &App, observed: &Observations) -> Finding {
    let mut checks = Checks::default();
    if enabled(&mut checks, app) {
        checks.should(
            "a signing key signs checkpoints",
            app.signing.is_some(),
            match &app.signing {
                Some(key) => format!("[signing] key {}", key.public().id()),
                None => "the hash chain shows integrity and order, but no signature binds records to their writer ([signing] key_file is not set)".to_string(),
            },
        );
        const CHECK: &str = "signed checkpoints verify with the configured key";
        match &observed.audit.checkpoints {
            CheckpointFacts::NoKey => {}
            CheckpointFacts::NoRecords => {
                checks.should(
                    CHECK,
                    false,
                    "no checkpoint has been signed yet: nothing binds records to the key so far",
                );
            }
            CheckpointFacts::Missing { file } => {
                checks.should(
                    CHECK,
                    false,
                    format!(
                        "no signed checkpoint ({} has none): nothing binds the records to the key",
                        file.display()
                    ),
                );
            }
            CheckpointFacts::Bad { what } => {
                checks.must(CHECK, false, format!("the audit checkpoints fail: {what}"));
            }
            CheckpointFacts::Unreadable(why) => {
                checks.must(CHECK, false, format!("could not verify: {why}"));
            }
            CheckpointFacts::Verified {
                count,
                key_id,
                newest_seq,
                ..
            } => {
                checks.must(
                    CHECK,
                    true,
                    format!(
                        "{count} checkpoint(s) signed by key {key_id}, up to record {newest_seq}"
                    ),
                );
            }
        }
    }
    checks.verdict(
        audit_facts(app),
        "signed checkpoints bind the records, through the chain, to the key of the esq that wrote them",
    )
}
