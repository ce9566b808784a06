//! Private answers on the PostgreSQL door (DESIGN 3.7). The session checks
//! the budget before it forwards a private statement (a spent budget is a
//! refusal like any other, in protocol order); the relay then collects the
//! statement's `DataRow`s instead of relaying them and, where PostgreSQL's
//! `CommandComplete` would go, sends the released rows, a notice saying
//! what was spent, and `SELECT <released rows>` — nothing that tells how
//! many groups the release left out. A statement with no rows is released
//! too (and charged): whether it had any is itself an answer.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::completion::Pending;
use super::error::DoorError;
use super::wire::{self, WireError};
use crate::app::App;
use crate::decide::private::{Bound, PrivateQuery, Releasing, Spend};
use crate::privacy::Row;

/// One run of a private statement: the statement, what it was bound with,
/// and the release step.
pub struct PrivateRun {
    pub query: Arc<PrivateQuery>,
    pub bound: Bound,
    pub releaser: Arc<crate::privacy::Releaser>,
}

impl std::fmt::Debug for PrivateRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateRun")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// The rows of a private statement, fed to its release as they arrive.
pub struct Collector {
    releasing: Releasing,
    releaser: Arc<crate::privacy::Releaser>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

/// What goes to the client in place of the statement's `CommandComplete`.
#[derive(Debug)]
pub struct Replacement {
    pub bytes: Bytes,
    /// Rows released (what the audit record counts).
    pub rows: u64,
    /// The SQLSTATE when the answer was refused.
    pub refused: Option<&'static str>,
    pub spend: Option<Spend>,
}

impl Collector {
    pub fn new(run: Arc<PrivateRun>) -> Collector {
        Collector {
            releasing: Releasing::new(run.query.clone(), run.bound.clone()),
            releaser: run.releaser.clone(),
        }
    }

    /// Adds one `DataRow` body.
    pub fn push(&mut self, body: &[u8]) -> Result<(), String> {
        let row = data_row(body).map_err(|e| e.to_string())?;
        self.releasing.push(&self.releaser, row);
        Ok(())
    }

    /// Releases the rows: the bytes to send and what to record.
    pub async fn release(self, app: &App) -> Replacement {
        match self.releasing.finish(app).await {
            Ok((rows, spend)) => {
                let mut out = BytesMut::new();
                for row in &rows {
                    put_data_row(&mut out, row);
                }
                wire::notice_response(
                    &mut out,
                    &[
                        (b'S', "NOTICE"),
                        (b'V', "NOTICE"),
                        (b'C', crate::sqlstate::WARNING),
                        (b'M', &spend.notice()),
                    ],
                );
                wire::command_complete(&mut out, &format!("SELECT {}", rows.len()));
                Replacement {
                    bytes: out.freeze(),
                    rows: rows.len() as u64,
                    refused: None,
                    spend: Some(spend),
                }
            }
            Err(refusal) => {
                let error = DoorError::Refused(refusal);
                Replacement {
                    refused: Some(error.sqlstate()),
                    bytes: error.to_bytes(),
                    rows: 0,
                    spend: None,
                }
            }
        }
    }
}

/// Reads a message body front to back.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Cursor<'a> {
        Cursor { bytes, at: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let taken = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| WireError::Invalid(format!("a malformed {}", self.what)))?;
        self.at += n;
        Ok(taken)
    }

    fn int16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A length-prefixed value (`None`: NULL).
    fn value(&mut self) -> Result<Option<Bytes>, WireError> {
        let b = self.take(4)?;
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        match usize::try_from(len) {
            Ok(len) => Ok(Some(Bytes::copy_from_slice(self.take(len)?))),
            Err(_) => Ok(None),
        }
    }

    /// A count, then that many of `item`.
    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let count = u16::from_be_bytes(self.int16()?.to_be_bytes());
        (0..count).map(|_| item(self)).collect()
    }
}

/// The relay's side: whether the statement answering now is private, its
/// rows while they are collected, and the release waiting to replace its
/// `CommandComplete`.
#[derive(Debug, Default)]
pub struct Relaying {
    answering: Answering,
    replacement: Option<Replacement>,
}

#[derive(Debug, Default)]
enum Answering {
    /// Not known yet (no row or completion of this statement seen).
    #[default]
    Unknown,
    Plain,
    Collecting(Collector),
    /// Collected; its release runs before the `CommandComplete` is relayed.
    Releasing,
}

impl Relaying {
    fn learn(&mut self, pending: &Pending, round: u64) {
        if matches!(self.answering, Answering::Unknown) {
            self.answering = match pending.private_in_front(round) {
                Some(run) => Answering::Collecting(Collector::new(run)),
                None => Answering::Plain,
            };
        }
    }

    /// A `DataRow` (body): `true` when it was collected (not to relay).
    pub fn row(&mut self, pending: &Pending, round: u64, body: &[u8]) -> Result<bool, String> {
        self.learn(pending, round);
        match &mut self.answering {
            Answering::Collecting(collector) => collector.push(body).map(|()| true),
            _ => Ok(false),
        }
    }

    /// At a `CommandComplete`: the collected rows to release first, if the
    /// statement is private and its release has not run yet.
    pub fn release_due(&mut self, pending: &Pending, round: u64) -> Option<Collector> {
        if self.replacement.is_some() {
            return None;
        }
        self.learn(pending, round);
        match std::mem::replace(&mut self.answering, Answering::Releasing) {
            Answering::Collecting(collector) => Some(collector),
            other => {
                self.answering = other;
                None
            }
        }
    }

    /// The release, to send in place of the `CommandComplete`.
    pub fn released(&mut self, replacement: Replacement) {
        self.replacement = Some(replacement);
    }

    pub fn take_replacement(&mut self) -> Option<Replacement> {
        self.replacement.take()
    }

    /// The statement ended (completed, failed or skipped).
    pub fn ended(&mut self) {
        self.answering = Answering::Unknown;
        self.replacement = None;
    }
}

/// A `DataRow` body's values.
fn data_row(body: &[u8]) -> Result<Row, WireError> {
    Cursor::new(body, "DataRow").list(Cursor::value)
}

fn put_data_row(out: &mut BytesMut, row: &Row) {
    use bytes::BufMut;
    wire::put_message(out, b'D', |b| {
        b.put_u16(row.len() as u16);
        for value in row {
            match value {
                None => b.put_i32(-1),
                Some(bytes) => {
                    b.put_i32(bytes.len() as i32);
                    b.put_slice(bytes);
                }
            }
        }
    });
}

/// What a `Bind` after its two names carries: parameter formats and
/// values, and result formats.
pub fn bound(rest: &[u8]) -> Result<Bound, WireError> {
    let mut cursor = Cursor::new(rest, "Bind");
    Ok(Bound {
        param_formats: cursor.list(Cursor::int16)?,
        params: cursor.list(Cursor::value)?,
        result_formats: cursor.list(Cursor::int16)?,
    })
}

/// An `Execute`'s row limit (0: all rows).
pub fn row_limit(rest: &[u8]) -> i32 {
    rest.get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_and_data_rows_decode() {
        // One text parameter "CA", one result format (binary).
        let rest = [
            0u8, 1, 0, 0, // one parameter format: text
            0, 1, 0, 0, 0, 2, b'C', b'A', // one value
            0, 1, 0, 1, // one result format: binary
        ];
        let decoded = bound(&rest).expect("decodes");
        assert_eq!(decoded.param_formats, vec![0]);
        assert_eq!(decoded.params, vec![Some(Bytes::from_static(b"CA"))]);
        assert_eq!(decoded.result_formats, vec![1]);
        assert!(bound(&rest[..7]).is_err(), "truncated");

        let mut out = BytesMut::new();
        let row = vec![Some(Bytes::from_static(b"CA")), None];
        put_data_row(&mut out, &row);
        assert_eq!(data_row(&out[5..]).expect("decodes"), row);
        assert!(data_row(&out[5..8]).is_err());
    }
}
