//! Frontend messages, decoded once into a typed [`Message`]: the names and
//! texts esq reads, plus the raw bytes of what it passes through unchanged
//! (a Parse's parameter types, a Bind's parameters, an Execute's row
//! limit). A message that does not decode is a protocol violation and ends
//! the session.

use bytes::Bytes;

use super::names::Space;
use super::wire::{cstr, Frame, WireError};

#[derive(Debug, Clone)]
pub enum Message {
    /// `Q`: a simple query (one round).
    Query { sql: String },
    /// `P`: prepare `sql` as statement `name` (`""`: the unnamed one).
    Parse {
        name: String,
        sql: String,
        /// The parameter type count and OIDs, as sent.
        types: Bytes,
    },
    /// `B`: bind `statement` into `portal`.
    Bind {
        portal: String,
        statement: String,
        /// Formats, parameter values and result formats, as sent.
        rest: Bytes,
    },
    /// `E`: run `portal`.
    Execute {
        portal: String,
        /// The row limit, as sent.
        rest: Bytes,
    },
    /// `D`: describe a statement or portal.
    Describe { space: Space, name: String },
    /// `C`: close a statement or portal.
    Close { space: Space, name: String },
    /// `S`: end of an extended-protocol batch (one round).
    Sync,
    /// `H`: send what is buffered.
    Flush,
    /// `X`: the client leaves.
    Terminate,
    /// `F`: a fast-path function call (never run through esq).
    FunctionCall,
    /// `d`, `c`, `f` outside a COPY (ignored, as PostgreSQL does).
    CopyOutOfPlace,
}

/// PostgreSQL keeps the first 63 bytes of a statement or portal name
/// (NAMEDATALEN - 1): two longer names equal there are one name to it, so
/// esq refuses longer names rather than track them differently.
pub const MAX_NAME_BYTES: usize = 63;

/// Names esq's own stand-ins use ([`super::answers::marker`]); a client
/// may not use them.
pub const RESERVED_NAME_PREFIX: &str = "esq_refused_";

/// A statement or portal name as esq and PostgreSQL both read it.
fn name(body: &[u8], at: &mut usize) -> Result<String, WireError> {
    let name = cstr(body, at)?;
    if name.len() > MAX_NAME_BYTES {
        return Err(WireError::Invalid(format!(
            "statement and portal names longer than {MAX_NAME_BYTES} bytes are not accepted"
        )));
    }
    if name.starts_with(RESERVED_NAME_PREFIX) {
        return Err(WireError::Invalid(format!(
            "statement and portal names starting with {RESERVED_NAME_PREFIX} are reserved"
        )));
    }
    Ok(name)
}

impl Message {
    /// Decodes one frame.
    pub fn decode(frame: &Frame) -> Result<Message, WireError> {
        let body = &frame.body;
        let mut at = 0;
        let rest = |at: usize| body.slice(at.min(body.len())..);
        Ok(match frame.tag {
            b'Q' => Message::Query {
                sql: cstr(body, &mut at)?,
            },
            b'P' => {
                let name = name(body, &mut at)?;
                let sql = cstr(body, &mut at)?;
                Message::Parse {
                    name,
                    sql,
                    types: rest(at),
                }
            }
            b'B' => {
                let portal = name(body, &mut at)?;
                let statement = name(body, &mut at)?;
                Message::Bind {
                    portal,
                    statement,
                    rest: rest(at),
                }
            }
            b'E' => {
                let portal = name(body, &mut at)?;
                Message::Execute {
                    portal,
                    rest: rest(at),
                }
            }
            b'D' | b'C' => {
                let space = match body.first() {
                    Some(b'S') => Space::Statement,
                    Some(b'P') => Space::Portal,
                    _ => {
                        return Err(WireError::Invalid(
                            "Describe or Close of neither a statement nor a portal".into(),
                        ))
                    }
                };
                at = 1;
                let name = name(body, &mut at)?;
                if frame.tag == b'D' {
                    Message::Describe { space, name }
                } else {
                    Message::Close { space, name }
                }
            }
            b'S' => Message::Sync,
            b'H' => Message::Flush,
            b'X' => Message::Terminate,
            b'F' => Message::FunctionCall,
            b'd' | b'c' | b'f' => Message::CopyOutOfPlace,
            other => {
                return Err(WireError::Invalid(format!(
                    "invalid frontend message type {:?}",
                    other as char
                )))
            }
        })
    }

    /// Messages PostgreSQL answers once each in an extended batch (their
    /// answers are counted to tell which one an error ended).
    pub fn answers_once(&self) -> bool {
        matches!(
            self,
            Message::Parse { .. }
                | Message::Bind { .. }
                | Message::Execute { .. }
                | Message::Describe { .. }
                | Message::Close { .. }
        )
    }

    /// Messages that open (or continue) an extended-protocol batch.
    pub fn is_extended(&self) -> bool {
        self.answers_once() || matches!(self, Message::Flush)
    }

    /// Messages that start the clock of a round (end-to-end latency).
    pub fn starts_round(&self) -> bool {
        self.answers_once()
            || matches!(
                self,
                Message::Query { .. } | Message::Sync | Message::FunctionCall
            )
    }

    /// The statement and portal names this message reads or changes.
    pub fn names(&self) -> Vec<(Space, &str)> {
        match self {
            Message::Parse { name, .. } => vec![(Space::Statement, name)],
            Message::Bind {
                portal, statement, ..
            } => vec![(Space::Portal, portal), (Space::Statement, statement)],
            Message::Execute { portal, .. } => vec![(Space::Portal, portal)],
            Message::Describe { space, name } | Message::Close { space, name } => {
                vec![(*space, name)]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame {
            tag,
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn decodes_names_texts_and_keeps_what_passes_through() {
        let parse = Message::decode(&frame(b'P', b"s1\0SELECT 1\0\0\x01\0\0\0\x17"));
        match parse {
            Ok(Message::Parse { name, sql, types }) => {
                assert_eq!((name.as_str(), sql.as_str()), ("s1", "SELECT 1"));
                assert_eq!(&types[..], b"\0\x01\0\0\0\x17");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Message::decode(&frame(b'C', b"Pp1\0")),
            Ok(Message::Close { space: Space::Portal, name }) if name == "p1"
        ));
    }

    #[test]
    fn malformed_messages_do_not_decode() {
        assert!(Message::decode(&frame(b'Q', b"no terminator")).is_err());
        assert!(Message::decode(&frame(b'D', b"Xname\0")).is_err());
        assert!(Message::decode(&frame(b'z', b"")).is_err());
        assert!(
            Message::decode(&frame(b'Q', b"\xff\xfe\0")).is_err(),
            "not UTF-8"
        );
    }
}
