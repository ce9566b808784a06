//! The start of a client connection, before authentication: `SSLRequest`
//! (TLS via rustls, or a plain `N`), `GSSENCRequest` (always `N`),
//! `CancelRequest`, and the v3 startup packet with its parameters and the
//! `-c name=value` settings inside `options`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{self, WireError};
use crate::stream::BoxedStream;

/// What a new connection turned out to be.
pub enum Opening {
    Session {
        stream: BoxedStream,
        tls: bool,
        startup: StartupPacket,
    },
    /// A cancel request for the session with this key.
    Cancel { pid: i32, secret: Vec<u8> },
}

/// The startup packet's parameters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StartupPacket {
    pub minor_version: i32,
    pub user: String,
    pub database: Option<String>,
    /// `-c name=value` / `--name=value` settings from `options`.
    pub settings: Vec<(String, String)>,
    /// Every other parameter (`application_name`, `client_encoding`, …).
    pub parameters: BTreeMap<String, String>,
    /// `_pq_.` protocol options esq does not support.
    pub unknown_protocol_options: Vec<String>,
}

pub async fn open(
    mut tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Opening, WireError> {
    loop {
        let (code, payload) = wire::read_startup(&mut tcp).await?;
        match code {
            wire::SSL_REQUEST => match tls {
                Some(config) => {
                    tcp.write_all(b"S").await?;
                    let mut stream: BoxedStream = Box::new(
                        tokio_rustls::TlsAcceptor::from(config.clone())
                            .accept(tcp)
                            .await?,
                    );
                    return after_tls(&mut stream).await.map(|opening| match opening {
                        After::Startup(startup) => Opening::Session {
                            stream,
                            tls: true,
                            startup,
                        },
                        After::Cancel(pid, secret) => Opening::Cancel { pid, secret },
                    });
                }
                None => tcp.write_all(b"N").await?,
            },
            wire::GSSENC_REQUEST => tcp.write_all(b"N").await?,
            wire::CANCEL_REQUEST => return cancel(&payload),
            code if code >> 16 == 3 => {
                return Ok(Opening::Session {
                    stream: Box::new(tcp),
                    tls: false,
                    startup: parse_startup(code, &payload)?,
                })
            }
            code => {
                return Err(WireError::Invalid(format!(
                    "unsupported protocol {}.{}",
                    code >> 16,
                    code & 0xffff
                )))
            }
        }
    }
}

enum After {
    Startup(StartupPacket),
    Cancel(i32, Vec<u8>),
}

async fn after_tls(stream: &mut BoxedStream) -> Result<After, WireError> {
    let (code, payload) = wire::read_startup(stream).await?;
    match code {
        wire::CANCEL_REQUEST => match cancel(&payload)? {
            Opening::Cancel { pid, secret } => Ok(After::Cancel(pid, secret)),
            Opening::Session { .. } => Err(WireError::Invalid("cancel".into())),
        },
        code if code >> 16 == 3 => Ok(After::Startup(parse_startup(code, &payload)?)),
        _ => Err(WireError::Invalid(
            "expected a startup packet after TLS negotiation".into(),
        )),
    }
}

fn cancel(payload: &Bytes) -> Result<Opening, WireError> {
    if payload.len() < 8 || payload.len() > 256 {
        return Err(WireError::Invalid("cancel request length".into()));
    }
    let pid = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    Ok(Opening::Cancel {
        pid,
        secret: payload[4..].to_vec(),
    })
}

/// Parses the startup packet body: `name\0value\0 … \0`.
pub fn parse_startup(code: i32, payload: &[u8]) -> Result<StartupPacket, WireError> {
    let mut packet = StartupPacket {
        minor_version: code & 0xffff,
        ..StartupPacket::default()
    };
    let mut at = 0;
    loop {
        let name = wire::cstr(payload, &mut at)?;
        if name.is_empty() {
            break;
        }
        let value = wire::cstr(payload, &mut at)?;
        match name.as_str() {
            "user" => packet.user = value,
            "database" => packet.database = Some(value),
            "options" => packet.settings = parse_options(&value)?,
            _ if name.starts_with("_pq_.") => packet.unknown_protocol_options.push(name),
            _ => {
                packet.parameters.insert(name, value);
            }
        }
    }
    if packet.user.is_empty() {
        return Err(WireError::Invalid(
            "the startup packet names no user".into(),
        ));
    }
    Ok(packet)
}

/// Splits `options` as PostgreSQL does (whitespace separates, a backslash
/// escapes the next character) and reads `-c name=value` / `--name=value`.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, WireError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words
                .next()
                .ok_or_else(|| WireError::Invalid("options: -c without a setting".into()))?
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_string()
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_string()
        } else {
            return Err(WireError::Invalid(format!(
                "options: esq accepts only -c name=value settings, not {word:?}"
            )));
        };
        let (name, value) = assignment.split_once('=').ok_or_else(|| {
            WireError::Invalid(format!("options: {assignment:?} is not name=value"))
        })?;
        settings.push((
            name.trim().to_ascii_lowercase().replace('-', "_"),
            value.to_string(),
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_the_ticket_and_settings() {
        assert_eq!(
            parse_options("-c esq.ticket=T-abc  -c\\ ignored --application-name=x\\ y").ok(),
            None,
            "'-c\\ ignored' is one word without '='"
        );
        assert_eq!(
            parse_options("-c esq.ticket=T-abc --application-name=x\\ y").unwrap_or_default(),
            vec![
                ("esq.ticket".to_string(), "T-abc".to_string()),
                ("application_name".to_string(), "x y".to_string())
            ]
        );
        assert!(parse_options("-X").is_err());
        assert!(parse_options("-c").is_err());
    }

    #[test]
    fn startup_packet_parameters() {
        let body = b"user\0journalist\0database\0esq\0options\0-c esq.ticket=T-1\0application_name\0psql\0\0";
        let packet = parse_startup(wire::PROTOCOL_3_0, body).unwrap_or_default();
        assert_eq!(packet.user, "journalist");
        assert_eq!(packet.database.as_deref(), Some("esq"));
        assert_eq!(packet.settings, vec![("esq.ticket".into(), "T-1".into())]);
        assert_eq!(
            packet
                .parameters
                .get("application_name")
                .map(String::as_str),
            Some("psql")
        );
        assert!(parse_startup(wire::PROTOCOL_3_0, b"user\0x").is_err());
        assert!(parse_startup(wire::PROTOCOL_3_0, b"database\0x\0\0").is_err());
    }
}
