//! A raw PostgreSQL protocol client for the door's red-team regressions:
//! message sequences drivers never send (pipelines cut by errors, skipped
//! Parse and Close, rounds without end). Builders for frontend messages,
//! and readers of what came back (SQLSTATEs, data rows).

use super::Doors;

/// A session logged in with a ticket as the password.
pub struct Raw {
    tcp: tokio::net::TcpStream,
}

impl Raw {
    pub async fn login(esq: &(impl Doors + ?Sized), ticket: &str) -> Raw {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(esq.pg_addr()).await.unwrap();
        let params = format!("user\0ticket\0database\0{}\0\0", esq.database());
        let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
        startup.extend_from_slice(&196_608u32.to_be_bytes());
        startup.extend_from_slice(params.as_bytes());
        tcp.write_all(&startup).await.unwrap();
        let mut request = [0u8; 9];
        tcp.read_exact(&mut request).await.unwrap();
        let mut raw = Raw { tcp };
        raw.send(&[message(b'p', &[ticket.as_bytes(), b"\0"].concat())])
            .await;
        raw.until_ready().await;
        raw
    }

    pub async fn send(&mut self, messages: &[Vec<u8>]) {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(&messages.concat()).await.unwrap();
    }

    /// Messages until the connection closes (or a ReadyForQuery).
    pub async fn until_ready_or_close(&mut self) -> Vec<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        loop {
            let Ok(tag) = self.tcp.read_u8().await else {
                return got;
            };
            let Ok(len) = self.tcp.read_u32().await else {
                return got;
            };
            let mut body = vec![0u8; len as usize - 4];
            if self.tcp.read_exact(&mut body).await.is_err() {
                return got;
            }
            let done = tag == b'Z';
            got.push((tag, body));
            if done {
                return got;
            }
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        loop {
            let tag = self.tcp.read_u8().await.unwrap();
            let len = self.tcp.read_u32().await.unwrap() as usize;
            let mut body = vec![0u8; len - 4];
            self.tcp.read_exact(&mut body).await.unwrap();
            let done = tag == b'Z';
            got.push((tag, body));
            if done {
                return got;
            }
        }
    }
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    message(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

pub fn bind(portal: &str, statement: &str) -> Vec<u8> {
    message(
        b'B',
        format!("{portal}\0{statement}\0\0\0\0\0\0\0").as_bytes(),
    )
}

pub fn execute(portal: &str, rows: u32) -> Vec<u8> {
    let mut body = format!("{portal}\0").into_bytes();
    body.extend_from_slice(&rows.to_be_bytes());
    message(b'E', &body)
}

pub fn sync() -> Vec<u8> {
    message(b'S', b"")
}

pub fn query(sql: &str) -> Vec<u8> {
    message(b'Q', format!("{sql}\0").as_bytes())
}

pub fn codes(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'E')
        .map(|(_, body)| {
            let at = body.iter().position(|b| *b == b'C').unwrap();
            String::from_utf8_lossy(&body[at + 1..at + 6]).into_owned()
        })
        .collect()
}

pub fn rows(messages: &[(u8, Vec<u8>)]) -> usize {
    messages.iter().filter(|(tag, _)| *tag == b'D').count()
}

pub fn close_statement(name: &str) -> Vec<u8> {
    message(b'C', format!("S{name}\0").as_bytes())
}

pub fn data_row_widths(messages: &[(u8, Vec<u8>)]) -> Vec<u16> {
    messages
        .iter()
        .filter(|(tag, _)| *tag == b'D')
        .map(|(_, body)| u16::from_be_bytes([body[0], body[1]]))
        .collect()
}
