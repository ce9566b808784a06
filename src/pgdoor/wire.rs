//! PostgreSQL v3 framing on the client side: reading the startup packet and
//! length-checked frontend messages, and building the few backend messages
//! esq writes itself (errors, notices, authentication, session facts).
//! Backend messages from upstream are relayed as bytes, never rebuilt.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Startup packet codes (the first four bytes after the length).
pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// PostgreSQL's own limit for a startup packet.
const MAX_STARTUP_BYTES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// A whole frontend message: its type byte and its body (without length).
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl Frame {
    /// The frame as it was on the wire (to forward unchanged).
    pub fn encode_into(&self, out: &mut BytesMut) {
        out.put_u8(self.tag);
        out.put_i32(self.body.len() as i32 + 4);
        out.put_slice(&self.body);
    }

    /// The frame with its length, as pgwire's decoders expect it.
    pub fn to_bytes_mut(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.body.len() + 5);
        self.encode_into(&mut out);
        out
    }
}

/// Reads a startup-phase packet: `(code, payload after the code)`.
pub async fn read_startup<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(i32, Bytes), WireError> {
    let len = match reader.read_i32().await {
        Ok(len) => len,
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(WireError::Closed)
        }
        Err(err) => return Err(err.into()),
    };
    let len = usize::try_from(len).unwrap_or(0);
    if !(8..=MAX_STARTUP_BYTES).contains(&len) {
        return Err(WireError::Invalid(format!("startup packet length {len}")));
    }
    let code = reader.read_i32().await?;
    let mut payload = vec![0u8; len - 8];
    reader.read_exact(&mut payload).await?;
    Ok((code, Bytes::from(payload)))
}

/// Reads frames from a buffered reader, enforcing the size limit before
/// reading a body.
pub struct FrameReader {
    buf: BytesMut,
    limit: usize,
}

impl FrameReader {
    pub fn new(limit: usize) -> FrameReader {
        FrameReader {
            buf: BytesMut::with_capacity(8192),
            limit,
        }
    }

    /// A frame already complete in the buffer, if any.
    pub fn next_buffered(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len).map_err(|_| WireError::Invalid(format!("length {len}")))?;
        if len < 4 {
            return Err(WireError::Invalid(format!("length {len}")));
        }
        if len > self.limit {
            return Err(WireError::TooLarge {
                size: len,
                limit: self.limit,
            });
        }
        if self.buf.len() < len + 1 {
            self.buf.reserve(len + 1 - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(len + 1);
        let _ = frame.split_to(5);
        Ok(Some(Frame {
            tag,
            body: frame.freeze(),
        }))
    }

    /// Reads more bytes; `Closed` at end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Result<(), WireError> {
        if reader.read_buf(&mut self.buf).await? == 0 {
            return Err(WireError::Closed);
        }
        Ok(())
    }

    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes read ahead (e.g. a message pipelined behind the startup).
    pub fn prime(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

/// Reads a NUL-terminated string from `body` at `*at`.
pub fn cstr(body: &[u8], at: &mut usize) -> Result<String, WireError> {
    let rest = body
        .get(*at..)
        .ok_or_else(|| WireError::Invalid("truncated message".into()))?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| WireError::Invalid("unterminated string".into()))?;
    let text = std::str::from_utf8(&rest[..end])
        .map_err(|_| WireError::Invalid("string is not UTF-8".into()))?
        .to_string();
    *at += end + 1;
    Ok(text)
}

/// Writes one message: `tag`, length, and the body `body` writes.
pub fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, text: &str) {
    // A NUL inside would end the string early: PostgreSQL strings cannot hold one.
    out.put_slice(text.replace('\0', "").as_bytes());
    out.put_u8(0);
}

/// One field of an ErrorResponse / NoticeResponse.
pub type Field<'a> = (u8, &'a str);

pub fn error_response(out: &mut BytesMut, fields: &[Field<'_>]) {
    fields_message(out, b'E', fields);
}

pub fn notice_response(out: &mut BytesMut, fields: &[Field<'_>]) {
    fields_message(out, b'N', fields);
}

fn fields_message(out: &mut BytesMut, tag: u8, fields: &[Field<'_>]) {
    put_message(out, tag, |out| {
        for (kind, value) in fields {
            if !value.is_empty() {
                out.put_u8(*kind);
                put_cstr(out, value);
            }
        }
        out.put_u8(0);
    });
}

/// A NOTICE of esq's own (SQLSTATE 01000) with `text`.
pub fn notice(text: &str) -> bytes::Bytes {
    let mut out = BytesMut::new();
    notice_response(
        &mut out,
        &[
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', crate::sqlstate::WARNING),
            (b'M', text),
        ],
    );
    out.freeze()
}

/// An ERROR (or FATAL) with SQLSTATE, message, detail and hint.
pub fn error(out: &mut BytesMut, severity: &str, code: &str, text: &str, detail: &str, hint: &str) {
    error_response(
        out,
        &[
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', text),
            (b'D', detail),
            (b'H', hint),
        ],
    );
}

pub fn authentication(out: &mut BytesMut, code: i32, data: &[u8]) {
    put_message(out, b'R', |out| {
        out.put_i32(code);
        out.put_slice(data);
    });
}

pub const AUTH_OK: i32 = 0;
pub const AUTH_CLEARTEXT: i32 = 3;
pub const AUTH_SASL: i32 = 10;
pub const AUTH_SASL_CONTINUE: i32 = 11;
pub const AUTH_SASL_FINAL: i32 = 12;

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    put_message(out, b'S', |out| {
        put_cstr(out, name);
        put_cstr(out, value);
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    put_message(out, b'K', |out| {
        out.put_i32(pid);
        out.put_i32(secret);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    put_message(out, b'Z', |out| out.put_u8(status));
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    put_message(out, b'C', |out| put_cstr(out, tag));
}

pub fn negotiate_protocol_version(out: &mut BytesMut, minor: i32, unknown: &[String]) {
    put_message(out, b'v', |out| {
        out.put_i32(minor);
        out.put_i32(unknown.len() as i32);
        for name in unknown {
            put_cstr(out, name);
        }
    });
}

/// A one-column text result: RowDescription and one DataRow.
pub fn single_text_row(out: &mut BytesMut, column: &str, value: &str) {
    text_row(out, &[column], &[Some(value)]);
}

/// A result of text columns: RowDescription and one DataRow (`None` is
/// NULL).
pub fn text_row(out: &mut BytesMut, columns: &[&str], values: &[Option<&str>]) {
    const TEXT_OID: i32 = 25;
    put_message(out, b'T', |out| {
        out.put_i16(columns.len() as i16);
        for column in columns {
            put_cstr(out, column);
            out.put_i32(0);
            out.put_i16(0);
            out.put_i32(TEXT_OID);
            out.put_i16(-1);
            out.put_i32(-1);
            out.put_i16(0);
        }
    });
    put_message(out, b'D', |out| {
        out.put_i16(values.len() as i16);
        for value in values {
            match value {
                Some(value) => {
                    out.put_i32(value.len() as i32);
                    out.put_slice(value.as_bytes());
                }
                None => out.put_i32(-1),
            }
        }
    });
}
