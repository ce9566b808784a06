//! One whole statement on a lent connection, for a door that answers
//! statements rather than relaying a session (the HTTP door): the guard's
//! SQL in the extended protocol with every result column in binary (or in
//! text, for private answers), under
//! the door's own statement time-out, its rows read one at a time so an
//! answer of any size streams in flat memory.
//!
//! The pipeline is written at once: `SET statement_timeout`, the statement
//! (Parse, Bind, Describe, Execute), `Sync`, then a simple `RESET
//! statement_timeout`, which runs even when the statement failed. A
//! connection read to its last `ReadyForQuery` is idle again and can be
//! kept as it is ([`Rows::finished`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::{backend, frontend};

use super::{UpstreamConn, UpstreamError};

/// How result columns come back: binary (the HTTP door's rows) or text
/// (private answers, whose memo both doors share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Results {
    Binary,
    Text,
}

impl Results {
    fn code(self) -> i16 {
        match self {
            Results::Binary => 1,
            Results::Text => 0,
        }
    }
}

/// A result column: its name, its type's OID and, for a plain reference
/// to a table column (also through subqueries), that column's table OID
/// and attribute number (0 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub table_oid: u32,
    pub column_id: i16,
}

/// The answer of one statement, read as it arrives.
pub struct Rows<'c> {
    conn: &'c mut UpstreamConn,
    columns: Vec<Column>,
    /// `ReadyForQuery` messages still to read (the statement's, the reset's).
    ready_left: u8,
    /// The statement's rows are all read.
    ended: bool,
    /// The transaction status of the last `ReadyForQuery` read.
    status: u8,
}

/// Sends `sql` and reads up to its row description. A statement the
/// database refuses is an `Err` (the connection is drained and idle).
pub async fn start<'c>(
    conn: &'c mut UpstreamConn,
    sql: &str,
    timeout: Duration,
    results: Results,
) -> Result<Rows<'c>, UpstreamError> {
    let mut out = BytesMut::new();
    let protocol = |err: std::io::Error| UpstreamError::Protocol(err.to_string());
    let set = format!("SET statement_timeout = {}", timeout.as_millis().max(1));
    frontend::parse("", &set, [], &mut out).map_err(protocol)?;
    bind(&mut out, Results::Text)?;
    frontend::execute("", 0, &mut out).map_err(protocol)?;
    frontend::parse("", sql, [], &mut out).map_err(protocol)?;
    bind(&mut out, results)?;
    frontend::describe(b'P', "", &mut out).map_err(protocol)?;
    frontend::execute("", 0, &mut out).map_err(protocol)?;
    frontend::sync(&mut out);
    frontend::query("RESET statement_timeout", &mut out).map_err(protocol)?;
    conn.send(&out).await?;
    let mut rows = Rows {
        conn,
        columns: Vec::new(),
        ready_left: 2,
        ended: false,
        status: 0,
    };
    // The SET's answers, then the statement's description.
    loop {
        match rows.read().await? {
            backend::Message::RowDescription(body) => {
                rows.columns = columns(&body)?;
                return Ok(rows);
            }
            backend::Message::NoData => return Ok(rows),
            backend::Message::ErrorResponse(body) => return Err(rows.fail(&body).await),
            _ => {}
        }
    }
}

impl Rows<'_> {
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The next row's column values (`None` for NULL), or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<Option<Bytes>>>, UpstreamError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            match self.read().await? {
                backend::Message::DataRow(body) => return Ok(Some(values(&body)?)),
                backend::Message::CommandComplete(_) | backend::Message::EmptyQueryResponse => {
                    self.ended = true;
                    self.drain().await?;
                    return Ok(None);
                }
                backend::Message::ErrorResponse(body) => return Err(self.fail(&body).await),
                _ => {}
            }
        }
    }

    /// Read to the end, and idle outside any transaction: the connection is
    /// as esq lent it and may serve the next query as it is.
    pub fn finished(&self) -> bool {
        self.ready_left == 0 && self.status == b'I'
    }

    async fn read(&mut self) -> Result<backend::Message, UpstreamError> {
        let message = self.conn.read_message().await?;
        if let backend::Message::ReadyForQuery(body) = &message {
            self.status = body.status();
            self.ready_left = self.ready_left.saturating_sub(1);
            if self.ready_left == 0 && !self.ended {
                return Err(UpstreamError::Protocol(
                    "the statement ended without an answer".into(),
                ));
            }
        }
        Ok(message)
    }

    /// Reads past both `ReadyForQuery` messages.
    async fn drain(&mut self) -> Result<(), UpstreamError> {
        while self.ready_left > 0 {
            self.read().await?;
        }
        Ok(())
    }

    /// The statement failed: drain, and report the database's error (a
    /// statement time-out as [`UpstreamError::Timeout`]).
    async fn fail(&mut self, body: &backend::ErrorResponseBody) -> UpstreamError {
        self.ended = true;
        let error = super::connect::server_error(body);
        if let Err(lost) = self.drain().await {
            return lost;
        }
        match error {
            UpstreamError::Server { code, .. } if code == "57014" => UpstreamError::Timeout,
            other => other,
        }
    }
}

/// Binds the unnamed statement with no parameters, every result column
/// in `results`.
fn bind(out: &mut BytesMut, results: Results) -> Result<(), UpstreamError> {
    frontend::bind(
        "",
        "",
        std::iter::empty::<i16>(),
        std::iter::empty::<()>(),
        |_, _| Ok(postgres_protocol::IsNull::Yes),
        [results.code()],
        out,
    )
    .map_err(|_| UpstreamError::Protocol("cannot encode Bind".into()))
}

fn columns(body: &backend::RowDescriptionBody) -> Result<Vec<Column>, UpstreamError> {
    use fallible_iterator::FallibleIterator;
    body.fields()
        .map(|field| {
            Ok(Column {
                name: field.name().to_string(),
                type_oid: field.type_oid(),
                table_oid: field.table_oid(),
                column_id: field.column_id(),
            })
        })
        .collect()
        .map_err(|err: std::io::Error| UpstreamError::Protocol(err.to_string()))
}

fn values(body: &backend::DataRowBody) -> Result<Vec<Option<Bytes>>, UpstreamError> {
    use fallible_iterator::FallibleIterator;
    let buffer = body.buffer_bytes();
    body.ranges()
        .map(|range| Ok(range.map(|r| buffer.slice(r))))
        .collect()
        .map_err(|err: std::io::Error| UpstreamError::Protocol(err.to_string()))
}
