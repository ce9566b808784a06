//! Step one of a job: the guard decides the job's statement under the
//! scope it was submitted with (as of now: current tombstones, a ticket
//! revoked since is refused), and the answer streams from the shared
//! upstream pool into a CSV on disk a row at a time, so an export of
//! millions of rows keeps esq's memory flat.
//!
//! On the way, the `hash_fields` columns are written as a keyed hash
//! (HMAC-SHA256 under a key made for this export and then forgotten: the
//! recipient can join rows within the export, not across exports or back
//! to the source), and for a row-level export the subject key of every
//! row is hashed the way right-to-delete names subjects, into a side
//! file the consent ledger reads. A private answer (DESIGN 3.7) goes
//! through the same release step as on the doors: noised, thresholded
//! and paid for from the requester's budget.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::csv_sink::{ColumnSpec, CsvFile, CsvSink};
use super::job::Job;
use crate::app::App;
use crate::decide::{self, private, Asker, Completion, Refusal, Timing};
use crate::metrics::Door;
use crate::tickets::TicketHash;
use crate::upstream::{query, Reuse, UpstreamPool};

/// The answer's file name inside the bundle.
pub const ANSWER_FILE: &str = "answer.csv";

/// Rows between two progress reports.
pub const PROGRESS_ROWS: u64 = 10_000;

/// A materialised answer.
pub struct Materialised {
    pub csv: CsvFile,
    /// One subject hash per line (row-level exports of datasets with a
    /// subject key), unsorted, with repeats.
    pub subjects: Option<PathBuf>,
    /// The dataset whose subjects `subjects` names.
    pub subject_dataset: Option<String>,
    /// What the ledger says of the hashed columns.
    pub hash_mode: String,
    /// The allowed decision's record, written when the job ends.
    pub completion: Arc<Completion>,
    /// A private answer's spend, for the audit record.
    pub spend: Option<serde_json::Value>,
}

/// Why a job cannot be materialised. `Refused` and `Invalid` are the
/// requester's to read; the others are logged and shown as a failure.
#[derive(Debug, thiserror::Error)]
pub enum MaterialiseError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the database failed while materialising ({0})")]
    Upstream(String),
    #[error("writing the answer failed: {0}")]
    Disk(String),
}

impl MaterialiseError {
    /// What the requester reads in the job's `error`.
    pub fn public(&self) -> String {
        match self {
            MaterialiseError::Refused(why) | MaterialiseError::Invalid(why) => why.clone(),
            MaterialiseError::Upstream(_) => {
                "the database failed while materialising the answer".into()
            }
            MaterialiseError::Disk(_) => "esq could not write the answer to disk".into(),
        }
    }
}

/// Where a job's origin facts come from: the table the subject key lives
/// in, to recognise its column in the answer.
pub struct SubjectColumn {
    /// The subject dataset its values are keys of.
    pub dataset: String,
    pub table_oid: u32,
    pub column_id: i16,
}

/// Told the rows written so far, every [`PROGRESS_ROWS`] rows.
#[async_trait::async_trait]
pub trait Progress: Send + Sync {
    async fn report(&self, rows: u64) -> Result<(), MaterialiseError>;
}

/// Decides and materialises `job` into `work` (a fresh directory).
pub async fn materialise(
    app: &App,
    upstream: &UpstreamPool,
    job: &Job,
    subject: Option<SubjectColumn>,
    work: &Path,
    progress: &dyn Progress,
) -> Result<Materialised, MaterialiseError> {
    let ticket = ticket_hash(&job.request.ticket_hash)?;
    let bundle = app.bundle();
    let roles = bundle.users.roles(&job.requester).to_vec();
    let asker = Asker {
        door: Door::http,
        user: &job.requester,
        roles: &roles,
        client: None,
    };
    let verdict = decide::decide(
        app,
        asker,
        Some(&ticket),
        Some(&job.scope),
        &job.request.sql,
        Timing::Now,
    );
    let run = verdict.result.map_err(refused)?;
    let row_level = job.scope.aggregate.is_none() && run.private.is_none();
    if row_level && subject.is_some() {
        // Both readings: what was asked, and what runs (the guard's
        // rendering, which is what PostgreSQL executes: a text the two
        // parsers read differently is checked as it runs).
        reads_one_table(&job.request.sql).map_err(MaterialiseError::Invalid)?;
        reads_one_table(&run.allowed.sql).map_err(MaterialiseError::Invalid)?;
    }
    let max_rows = app.config.exports.max_rows;
    let timeout = app.config.exports.statement_timeout;
    let mut lease = upstream
        .acquire(Door::http, &job.requester)
        .await
        .map_err(|e| MaterialiseError::Upstream(e.to_string()))?;
    let Some(conn) = lease.conn() else {
        return Err(MaterialiseError::Upstream("no connection".into()));
    };
    // Text: what a CSV holds, and what the private release step reads.
    let mut rows = query::start(conn, &run.allowed.sql, timeout, query::Results::Text)
        .await
        .map_err(|e| MaterialiseError::Upstream(e.to_string()))?;
    let columns = rows.columns().to_vec();
    let outcome = async {
        let hashed = hashed_columns(&columns, &job.request.hash_fields)?;
        let mut specs = specs(&columns);
        for &at in &hashed {
            // A keyed hash is text, whatever the column was.
            specs[at].r#type = "text".into();
        }
        let subject_at = match (row_level, &subject) {
            (false, _) | (true, None) => None,
            (true, Some(origin)) => Some(
                columns
                    .iter()
                    .position(|c| c.table_oid == origin.table_oid && c.column_id == origin.column_id)
                    .ok_or_else(|| {
                        MaterialiseError::Invalid(
                            "a row-level export must select the dataset's subject key column as it is, so that the consent ledger can list whom it holds".into(),
                        )
                    })?,
            ),
        };
        let subjects_path = work.join("subjects.txt");
        let mut subjects = match subject_at {
            Some(_) => Some(std::io::BufWriter::new(
                std::fs::File::create(&subjects_path).map_err(disk)?,
            )),
            None => None,
        };
        let keys = match subject_at {
            Some(_) => Some(app.subject_keys.clone().ok_or_else(|| {
                MaterialiseError::Invalid(
                    "row-level exports need subject keys ([signing] key_file or lifecycle.subject_key_file), so that the consent ledger can name whom they hold".into(),
                )
            })?),
            None => None,
        };
        let subject_dataset = subject.as_ref().map_or("", |s| s.dataset.as_str());
        let pseudonyms = Pseudonyms::new().map_err(disk)?;
        let mut sink = CsvSink::create_typed(&work.join(ANSWER_FILE), &specs)
            .map_err(|e| MaterialiseError::Disk(e.to_string()))?;
        let mut write = |row: &[Option<Bytes>], sink: &mut CsvSink| -> Result<(), MaterialiseError> {
            if let (Some(at), Some(out), Some(keys)) = (subject_at, subjects.as_mut(), keys.as_ref()) {
                // A row without its subject's key cannot be ledgered: the
                // export fails rather than ship someone unnamed.
                let Some(Some(key)) = row.get(at) else {
                    return Err(MaterialiseError::Invalid(
                        "a row of the answer has no subject key, so the consent ledger could not name whom it belongs to".into(),
                    ));
                };
                let key = std::str::from_utf8(key).map_err(|_| {
                    MaterialiseError::Invalid("a subject key is not text".into())
                })?;
                writeln!(out, "{}", keys.hash(subject_dataset, key)).map_err(disk)?;
            }
            // Values go to the CSV as they came; only hashed ones are new.
            let cells: Vec<Option<Cow<[u8]>>> = row
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    value.as_deref().map(|value| {
                        if hashed.contains(&i) {
                            Cow::Owned(pseudonyms.of(value))
                        } else {
                            Cow::Borrowed(value)
                        }
                    })
                })
                .collect();
            let cells: Vec<Option<&[u8]>> = cells.iter().map(|c| c.as_deref()).collect();
            sink.write_row(&cells)
                .map_err(|e| MaterialiseError::Disk(e.to_string()))
        };
        let mut spend = None;
        match &run.private {
            None => {
                while let Some(row) = rows
                    .next()
                    .await
                    .map_err(|e| MaterialiseError::Upstream(e.to_string()))?
                {
                    write(&row, &mut sink)?;
                    let done = sink.rows();
                    if done > max_rows {
                        return Err(MaterialiseError::Invalid(format!(
                            "the answer has more than {max_rows} rows (exports.max_rows); narrow it"
                        )));
                    }
                    if done % PROGRESS_ROWS == 0 {
                        progress.report(done).await?;
                    }
                }
            }
            Some(query) => {
                let bound = private::Bound::default();
                private::check(app, query, &bound).await.map_err(refused)?;
                let mut releasing = private::Releasing::new(query.clone(), bound);
                while let Some(row) = rows
                    .next()
                    .await
                    .map_err(|e| MaterialiseError::Upstream(e.to_string()))?
                {
                    releasing.push(&app.privacy, row);
                }
                let (released, spent) = releasing.finish(app).await.map_err(refused)?;
                for row in &released {
                    write(row, &mut sink)?;
                }
                spend = Some(spent.detail());
            }
        }
        if let Some(out) = subjects.as_mut() {
            out.flush().map_err(disk)?;
            out.get_ref().sync_all().map_err(disk)?;
        }
        let csv = sink
            .finish()
            .map_err(|e| MaterialiseError::Disk(e.to_string()))?;
        let hash_mode = if hashed.is_empty() {
            "none".to_string()
        } else {
            "hmac-sha256 under a key made for this export and discarded".to_string()
        };
        Ok(Materialised {
            csv,
            subjects: subject_at.map(|_| subjects_path.clone()),
            subject_dataset: subject_at.and(subject.as_ref()).map(|s| s.dataset.clone()),
            hash_mode,
            completion: run.completion.clone(),
            spend,
        })
    }
    .await;
    let reuse = if rows.finished() {
        Reuse::AsIs
    } else {
        Reuse::Close
    };
    drop(rows);
    upstream.release(lease, reuse).await;
    if let Err(err) = &outcome {
        let sqlstate = match err {
            MaterialiseError::Refused(_) => crate::sqlstate::INSUFFICIENT_PRIVILEGE,
            MaterialiseError::Upstream(_) => crate::sqlstate::CONNECTION_FAILURE,
            _ => crate::sqlstate::INTERNAL_ERROR,
        };
        app.audit
            .record(&run.completion.event(None, Some(sqlstate)));
    }
    outcome
}

/// A row-level export must read the dataset's table once: with a join,
/// a union or a subquery over a second copy, the subject key column could
/// come from another row (or be NULL) than the data beside it, and the
/// consent ledger would name the wrong people, or none.
pub fn reads_one_table(sql: &str) -> Result<(), String> {
    let parsed = pg_query::parse(sql, 0)
        .map_err(|_| "PostgreSQL's parser rejects the statement".to_string())?;
    let nodes = parsed.protobuf.nodes();
    let relations = nodes
        .iter()
        .filter(|(node, _, _, _)| matches!(node, pg_query::NodeRef::RangeVar(_)))
        .count();
    // A window function (lag, lead, first_value, …) moves values between
    // rows: a value beside a subject key could be another person's.
    let windows = nodes.iter().any(|(node, _, _, _)| match node {
        pg_query::NodeRef::FuncCall(call) => call.over.is_some(),
        pg_query::NodeRef::WindowDef(_) => true,
        _ => false,
    });
    if relations == 1 && !windows {
        Ok(())
    } else {
        Err("a row-level export reads its dataset's table once, row by row (no join, union, subquery over another copy or window function), so that the consent ledger names whom each row belongs to".into())
    }
}

fn ticket_hash(hex_text: &str) -> Result<TicketHash, MaterialiseError> {
    let bytes = hex::decode(hex_text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| MaterialiseError::Invalid("the job's ticket hash is damaged".into()))?;
    Ok(TicketHash(bytes))
}

/// What the requester reads when the guard (or the budget) refuses.
fn refused(refusal: Refusal) -> MaterialiseError {
    MaterialiseError::Refused(match refusal {
        Refusal::Denied { denial, .. } => {
            format!("the guard refuses this export: {}", denial.reason)
        }
        Refusal::PrivacyBudgetSpent { renews_at, .. } => {
            format!(
                "the privacy budget is spent until {}",
                renews_at.to_rfc3339()
            )
        }
        Refusal::AuditUnavailable => {
            "the audit log cannot be written, so esq runs no export".into()
        }
        Refusal::TicketStale(_) | Refusal::NotATicket | Refusal::TicketOfAnotherUser => {
            "the ticket is stale".into()
        }
        Refusal::TicketStoreUnavailable
        | Refusal::PrivacyUnavailable
        | Refusal::PrivateAnswerFailed => {
            "a dependency of esq was unavailable; submit the export again".into()
        }
    })
}

fn disk(err: std::io::Error) -> MaterialiseError {
    MaterialiseError::Disk(err.to_string())
}

/// The result columns as the manifest lists them.
fn specs(columns: &[query::Column]) -> Vec<ColumnSpec> {
    columns
        .iter()
        .map(|c| ColumnSpec {
            name: c.name.clone(),
            r#type: tokio_postgres::types::Type::from_oid(c.type_oid)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|| format!("oid {}", c.type_oid)),
        })
        .collect()
}

/// The positions of the `hash_fields` columns; each must be in the answer.
fn hashed_columns(
    columns: &[query::Column],
    hash_fields: &[String],
) -> Result<Vec<usize>, MaterialiseError> {
    let mut hashed = Vec::new();
    for field in hash_fields {
        let at: Vec<usize> = (0..columns.len())
            .filter(|&i| &columns[i].name == field)
            .collect();
        if at.is_empty() {
            return Err(MaterialiseError::Invalid(format!(
                "hash_fields names {field:?}, which is not a column of the answer"
            )));
        }
        // Every column of that name: `SELECT id, id` hashes both.
        hashed.extend(at);
    }
    Ok(hashed)
}

/// Keyed hashes of one export's `hash_fields` values.
struct Pseudonyms {
    key: [u8; 32],
}

impl Pseudonyms {
    fn new() -> std::io::Result<Pseudonyms> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Pseudonyms { key })
    }

    fn of(&self, value: &[u8]) -> Vec<u8> {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => return Vec::new(),
        };
        mac.update(value);
        hex::encode(mac.finalize().into_bytes()).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_within_an_export_and_differ_across() {
        let (a, b) = (Pseudonyms::new().unwrap(), Pseudonyms::new().unwrap());
        assert_eq!(a.of(b"123"), a.of(b"123"));
        assert_ne!(a.of(b"123"), a.of(b"124"));
        assert_ne!(a.of(b"123"), b.of(b"123"));
        assert_eq!(a.of(b"123").len(), 64);
    }

    #[test]
    fn a_row_level_export_reads_one_table() {
        assert!(reads_one_table("SELECT id, name FROM burial_2024 WHERE state = 'CA'").is_ok());
        assert!(reads_one_table("SELECT id FROM (SELECT id FROM burial_2024) s").is_ok());
        for sql in [
            "SELECT t.id, b.name FROM burial_2024 b LEFT JOIN burial_2024 t ON false",
            "SELECT id FROM burial_2024 UNION ALL SELECT id FROM burial_2024",
            "SELECT id, (SELECT name FROM burial_2024 x WHERE x.id = b.id + 1) FROM burial_2024 b",
            "WITH c AS (SELECT id FROM burial_2024) SELECT id FROM c",
            "SELECT id, lead(name) OVER (ORDER BY id) FROM burial_2024",
            "SELECT id, n FROM (SELECT id, lag(name) OVER w AS n FROM burial_2024 WINDOW w AS (ORDER BY id)) s",
            "SELECT 1 +",
        ] {
            assert!(reads_one_table(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn hash_fields_must_be_columns_of_the_answer() {
        let columns = vec![query::Column {
            name: "id".into(),
            type_oid: 20,
            table_oid: 0,
            column_id: 0,
        }];
        assert_eq!(hashed_columns(&columns, &["id".into()]).unwrap(), vec![0]);
        let twice = vec![columns[0].clone(), columns[0].clone()];
        assert_eq!(hashed_columns(&twice, &["id".into()]).unwrap(), vec![0, 1]);
        let err = hashed_columns(&columns, &["ssn".into()]).unwrap_err();
        assert!(err.public().contains("ssn"));
    }
}
