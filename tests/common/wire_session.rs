//! A raw PostgreSQL protocol session for message-level comparisons: the
//! same frontend messages sent to PostgreSQL itself and through esq, and
//! the backend messages that come back written as one line each
//! ([`trace`]), so two sessions compare with `assert_eq!`.
//!
//! Unlike `wire.rs` (esq only, a ticket as the password), it logs in to
//! either server with any password method PostgreSQL asks for (trust,
//! cleartext, MD5, SCRAM-SHA-256), and it builds every extended-protocol
//! message with parameters, parameter types and row limits.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A read that takes longer than this fails the test instead of hanging
/// it (a lost ReadyForQuery); no answer here comes anywhere near it.
const STUCK: Duration = Duration::from_secs(30);

/// One backend message: its type byte and body.
pub type Backend = (u8, Vec<u8>);

/// A logged-in session (after its first ReadyForQuery).
pub struct Session {
    tcp: TcpStream,
}

/// How far to read after sending.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// This many ReadyForQuery messages.
    Ready(usize),
    /// The first message of this type (e.g. after a Flush).
    Tag(u8),
}

impl Session {
    /// Logs in as `user` to `database` at `addr`.
    pub async fn connect(addr: SocketAddr, user: &str, database: &str, password: &str) -> Session {
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let mut session = Session { tcp };
        let params = format!("user\0{user}\0database\0{database}\0\0");
        let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
        startup.extend_from_slice(&196_608u32.to_be_bytes());
        startup.extend_from_slice(params.as_bytes());
        session.write(&startup).await;
        session.authenticate(user, password).await;
        loop {
            let (tag, body) = session.read().await;
            match tag {
                b'Z' => return session,
                b'E' => panic!("login refused: {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: &str) {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        let mut scram = None;
        loop {
            let (tag, body) = self.read().await;
            if tag == b'E' {
                panic!("login refused: {}", String::from_utf8_lossy(&body));
            }
            assert_eq!(tag, b'R', "an authentication request");
            let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            match code {
                0 => return,
                3 => {
                    self.write(&message(b'p', &cstr(password))).await;
                }
                5 => {
                    let salt = [body[4], body[5], body[6], body[7]];
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        password.as_bytes(),
                        salt,
                    );
                    self.write(&message(b'p', &cstr(&hash))).await;
                }
                10 => {
                    let client =
                        ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    let first = client.message().to_vec();
                    let mut body = cstr("SCRAM-SHA-256");
                    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
                    body.extend_from_slice(&first);
                    self.write(&message(b'p', &body)).await;
                    scram = Some(client);
                }
                11 => {
                    let client = scram.as_mut().expect("SASL continue after SASL");
                    client
                        .update(&body[4..])
                        .expect("the server's SCRAM message");
                    let reply = client.message().to_vec();
                    self.write(&message(b'p', &reply)).await;
                }
                12 => {
                    let client = scram.as_mut().expect("SASL final after SASL");
                    client.finish(&body[4..]).expect("the server's SCRAM proof");
                }
                other => panic!("authentication method {other} is not supported here"),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send to the server");
    }

    /// Sends frontend messages in one write.
    pub async fn send(&mut self, messages: &[Vec<u8>]) {
        self.write(&messages.concat()).await;
    }

    async fn read(&mut self) -> Backend {
        self.next()
            .await
            .unwrap_or_else(|| panic!("the server closed the session"))
    }

    /// The next backend message; `None` when the server closed the session.
    async fn next(&mut self) -> Option<Backend> {
        let read = async {
            let tag = self.tcp.read_u8().await?;
            let len = self.tcp.read_u32().await? as usize;
            let mut body = vec![0u8; len.saturating_sub(4)];
            self.tcp.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>((tag, body))
        };
        match tokio::time::timeout(STUCK, read).await {
            Ok(Ok(message)) => Some(message),
            Ok(Err(_)) => None,
            Err(_) => Some((STUCK_TAG, Vec::new())),
        }
    }

    /// Reads backend messages up to `until` (included). If the server
    /// closes the session first, the last entry is [`CLOSED`]; if it stops
    /// answering, [`STUCK_TAG`].
    pub async fn receive(&mut self, until: Until) -> Vec<Backend> {
        let mut got = Vec::new();
        let mut ready = 0;
        loop {
            let Some((tag, body)) = self.next().await else {
                got.push((CLOSED, Vec::new()));
                return got;
            };
            got.push((tag, body));
            if tag == STUCK_TAG {
                return got;
            }
            let done = match until {
                Until::Ready(n) => {
                    ready += usize::from(tag == b'Z');
                    ready == n
                }
                Until::Tag(wanted) => tag == wanted,
            };
            if done {
                return got;
            }
        }
    }
}

/// Stands for the end of the session in what [`Session::receive`] read.
pub const CLOSED: u8 = 0;
/// Stands for an answer that never came (the last entry, after
/// [`STUCK`] without a message).
pub const STUCK_TAG: u8 = 0xff;

/// A frontend message: type, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &cstr(sql))
}

/// `Parse` with parameter type OIDs (`&[]`: PostgreSQL infers them).
pub fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend_from_slice(&(types.len() as u16).to_be_bytes());
    for oid in types {
        body.extend_from_slice(&oid.to_be_bytes());
    }
    message(b'P', &body)
}

/// `Bind` with text parameters (`None`: NULL) and text results.
pub fn bind(portal: &str, statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(cstr(statement));
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for param in params {
        match param {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(value) => {
                body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
        }
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    message(b'B', &body)
}

/// `Execute` with a row limit (`0`: all rows).
pub fn execute(portal: &str, rows: u32) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend_from_slice(&rows.to_be_bytes());
    message(b'E', &body)
}

pub fn describe_statement(name: &str) -> Vec<u8> {
    message(b'D', &[b"S".as_slice(), &cstr(name)].concat())
}

pub fn describe_portal(name: &str) -> Vec<u8> {
    message(b'D', &[b"P".as_slice(), &cstr(name)].concat())
}

pub fn close_statement(name: &str) -> Vec<u8> {
    message(b'C', &[b"S".as_slice(), &cstr(name)].concat())
}

pub fn close_portal(name: &str) -> Vec<u8> {
    message(b'C', &[b"P".as_slice(), &cstr(name)].concat())
}

pub fn sync() -> Vec<u8> {
    message(b'S', b"")
}

pub fn flush() -> Vec<u8> {
    message(b'H', b"")
}

/// Parse, Bind and Execute of the unnamed statement (no Sync).
pub fn run(sql: &str) -> Vec<Vec<u8>> {
    vec![parse("", sql, &[]), bind("", "", &[]), execute("", 0)]
}

/// Backend messages as lines: the type's name with what must match —
/// a CommandComplete's tag, an error's or notice's SQLSTATE, the
/// ReadyForQuery status, RowDescription names and type OIDs, DataRow
/// values, ParameterDescription OIDs, a ParameterStatus. Texts that
/// differ by design (messages, positions) are left out.
pub fn trace(messages: &[Backend]) -> Vec<String> {
    messages
        .iter()
        .map(|(tag, body)| line(*tag, body))
        .collect()
}

fn line(tag: u8, body: &[u8]) -> String {
    match tag {
        CLOSED => "Closed".into(),
        STUCK_TAG => "NoAnswer".into(),
        b'1' => "ParseComplete".into(),
        b'2' => "BindComplete".into(),
        b'3' => "CloseComplete".into(),
        b'n' => "NoData".into(),
        b'I' => "EmptyQueryResponse".into(),
        b's' => "PortalSuspended".into(),
        b'C' => format!("CommandComplete({})", text(body)),
        b'Z' => format!(
            "ReadyForQuery({})",
            body.first().map_or('?', |b| *b as char)
        ),
        b'E' => format!("ErrorResponse({})", field(body, b'C')),
        b'N' => format!("NoticeResponse({})", field(body, b'C')),
        b'S' => {
            let mut parts = body.split(|b| *b == 0);
            let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
            format!("ParameterStatus({name}={value})")
        }
        b't' => {
            let n = u16::from_be_bytes([body[0], body[1]]) as usize;
            let oids: Vec<String> = (0..n)
                .map(|i| u32::from_be_bytes(body[2 + 4 * i..6 + 4 * i].try_into().unwrap()))
                .map(|oid| oid.to_string())
                .collect();
            format!("ParameterDescription({})", oids.join(","))
        }
        b'T' => format!("RowDescription({})", columns(body).join(",")),
        b'D' => format!("DataRow({})", values(body).join(",")),
        other => format!("{}({} bytes)", other as char, body.len()),
    }
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// A field of an ErrorResponse or NoticeResponse (empty when absent).
pub fn field(body: &[u8], kind: u8) -> String {
    let mut at = 0;
    while at < body.len() && body[at] != 0 {
        let end = body[at + 1..]
            .iter()
            .position(|b| *b == 0)
            .map_or(body.len(), |p| at + 1 + p);
        if body[at] == kind {
            return String::from_utf8_lossy(&body[at + 1..end]).into_owned();
        }
        at = end + 1;
    }
    String::new()
}

/// `name:type-oid` per column.
fn columns(body: &[u8]) -> Vec<String> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let end = at + body[at..].iter().position(|b| *b == 0).unwrap();
        let name = String::from_utf8_lossy(&body[at..end]).into_owned();
        at = end + 1;
        // table oid (4), column number (2), then the type's OID.
        let oid = u32::from_be_bytes(body[at + 6..at + 10].try_into().unwrap());
        at += 18;
        out.push(format!("{name}:{oid}"));
    }
    out
}

/// Each value as text (`NULL` for a null).
fn values(body: &[u8]) -> Vec<String> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            out.push("NULL".into());
        } else {
            let len = len as usize;
            out.push(String::from_utf8_lossy(&body[at..at + len]).into_owned());
            at += len;
        }
    }
    out
}
