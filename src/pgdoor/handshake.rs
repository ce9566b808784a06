//! A session's opening: TLS, the startup packet, authentication, the
//! client's startup settings, a connection from the shared upstream pool
//! with those settings, the ticket given at startup, and the session facts
//! the client is told (`ParameterStatus`, its cancel key). What fails here
//! is answered with one `FATAL` from the door's error map and logged.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::auth::{self, AuthError};
use super::cancel::CancelRequests;
use super::error::Fatal;
use super::session::DoorState;
use super::startup::{self, Opening, StartupPacket};
use super::wire::{self, FrameReader, WireError};
use crate::auth::Principal;
use crate::decide::{self, Asker};
use crate::metrics::Door;
use crate::per_user::Claim;
use crate::stream::BoxedStream;
use crate::tickets::TicketId;
use crate::upstream::{Lease, UpstreamError};

/// A session past its handshake.
pub struct Ready {
    pub client: BoxedStream,
    pub frames: FrameReader,
    pub principal: Principal,
    pub ticket: Option<TicketId>,
    pub lease: Lease,
    pub cancel_key: (i32, i32),
    pub cancel_requests: CancelRequests,
    pub peer: SocketAddr,
    /// The ticket the user's standing request gave the session (renewed
    /// while it is the session's ticket).
    pub standing: Option<super::standing::Standing>,
    /// The user's session slot, held for the session's lifetime.
    pub _slot: Claim,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("refused: {0:?}")]
    Refused(Fatal),
}

/// Opens a session (`None`: the connection was a cancel request).
pub async fn open(
    door: &DoorState,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Ready>, HandshakeError> {
    let (mut client, tls, packet) = match startup::open(tcp, door.tls.as_ref()).await? {
        Opening::Cancel { pid, secret } => {
            if let Some(backend_key) = door.cancel_keys.request(pid, &secret) {
                if let Err(err) = door.upstream.cancel(backend_key).await {
                    tracing::warn!(%err, "forwarding a cancel request failed");
                }
            }
            return Ok(None);
        }
        Opening::Session {
            stream,
            tls,
            startup,
        } => (stream, tls, startup),
    };
    match accept(door, &mut client, tls, packet, peer).await {
        Ok(ready) => Ok(Some(ready)),
        Err(HandshakeError::Refused(error)) => {
            let _ = client.write_all(&error.to_bytes()).await;
            let _ = client.shutdown().await;
            Err(HandshakeError::Refused(error))
        }
        Err(err) => Err(err),
    }
}

fn refused(error: Fatal) -> HandshakeError {
    HandshakeError::Refused(error)
}

async fn accept(
    door: &DoorState,
    client: &mut BoxedStream,
    tls: bool,
    packet: StartupPacket,
    peer: SocketAddr,
) -> Result<Ready, HandshakeError> {
    let app = &door.app;
    if app.config.tls.required && !tls {
        return Err(refused(Fatal::TlsRequired));
    }
    let mut out = BytesMut::new();
    if packet.minor_version > 0 || !packet.unknown_protocol_options.is_empty() {
        wire::negotiate_protocol_version(&mut out, 0, &packet.unknown_protocol_options);
        client.write_all(&out).await.map_err(WireError::from)?;
        out.clear();
    }
    let (ticket_setting, settings) = client_settings(&packet)?;
    let mut frames = FrameReader::new(app.config.pg.max_message_bytes as usize);
    let authenticated = match auth::authenticate(app, client, &mut frames, &packet.user).await {
        Ok(done) => done,
        Err(AuthError::Wire(err)) => return Err(err.into()),
        Err(err) => {
            tracing::info!(%err, "authentication failed");
            return Err(refused(Fatal::from(&err)));
        }
    };
    let principal = authenticated.principal;
    crate::telemetry::record_user(&tracing::Span::current(), &principal.name);
    check_database(door.upstream.database(), packet.database.as_deref())?;
    let slot = door
        .sessions
        .claim(&principal.name)
        .ok_or(refused(Fatal::TooManySessions {
            limit: door.sessions.limit(),
        }))?;
    let mut lease = door
        .upstream
        .acquire(Door::pg, &principal.name)
        .await
        .map_err(|err| {
            tracing::warn!(%err, "no upstream connection for a new session");
            refused(match err {
                UpstreamError::Busy(_) => Fatal::UpstreamBusy,
                _ => Fatal::UpstreamUnavailable,
            })
        })?;
    let Some(conn) = lease.conn() else {
        return Err(refused(Fatal::UpstreamUnavailable));
    };
    if !settings.is_empty() {
        conn.apply_settings(&settings).await.map_err(|err| {
            tracing::info!(%err, "a startup setting was refused upstream");
            refused(Fatal::StartupSettingRefused)
        })?;
    }
    let mut ticket = authenticated.ticket;
    if let Some(text) = ticket_setting {
        let checks = app.ticket_check();
        let asker = Asker {
            door: Door::pg,
            user: &principal.name,
            roles: &principal.roles,
            client: Some(peer),
        };
        match decide::accept_ticket(&checks, asker, &text).await {
            Ok(id) => ticket = Some(id),
            Err(refusal) => {
                tracing::info!(?refusal, "the startup ticket was refused");
                return Err(refused(Fatal::StartupTicket));
            }
        }
    }
    // Nothing presented: the user's standing request, if any, is asked.
    let login = match ticket {
        None => super::standing::at_login(app, &principal, peer).await,
        Some(_) => super::standing::Login::default(),
    };
    if let Some(standing) = &login.standing {
        ticket = Some(standing.ticket());
    }
    let (cancel_key, cancel_requests) = door.cancel_keys.register(conn.backend_key);
    for (name, value) in &conn.parameters {
        let value = match name.as_str() {
            "is_superuser" => "off",
            "session_authorization" => principal.name.as_str(),
            _ => value.as_str(),
        };
        wire::parameter_status(&mut out, name, value);
    }
    wire::backend_key_data(&mut out, cancel_key.0, cancel_key.1);
    if let Some(notice) = &login.notice {
        out.extend_from_slice(notice);
    }
    wire::ready_for_query(&mut out, b'I');
    client.write_all(&out).await.map_err(WireError::from)?;
    client.flush().await.map_err(WireError::from)?;
    tracing::info!(user = %principal.name, %peer, tls, "session started");
    Ok(Ready {
        client: std::mem::replace(client, Box::new(tokio::io::empty())),
        frames,
        principal,
        ticket,
        lease,
        cancel_key,
        cancel_requests,
        peer,
        standing: login.standing,
        _slot: slot,
    })
}

/// Client settings to apply upstream, as (name, value).
type Settings = Vec<(String, String)>;

/// The client's startup parameters and `-c` settings: the ticket, and the
/// harmless client settings to apply upstream. Anything else is refused.
fn client_settings(packet: &StartupPacket) -> Result<(Option<String>, Settings), HandshakeError> {
    let mut ticket = None;
    let mut settings = Vec::new();
    let all = packet
        .parameters
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .chain(packet.settings.iter().cloned());
    for (name, value) in all {
        match name.as_str() {
            crate::guard::ticket_statement::SETTING => ticket = Some(value),
            // The upstream session always speaks UTF8 (what the guard
            // parsed is what PostgreSQL reads); clients are told so.
            "client_encoding" => {}
            "replication" => return Err(refused(Fatal::Replication)),
            name if crate::guard::is_settable_to(name, &value) => {
                settings.push((name.to_string(), value))
            }
            name => return Err(refused(Fatal::StartupParameter(name.to_string()))),
        }
    }
    Ok((ticket, settings))
}

/// esq serves one database; a client asking for another is told which.
fn check_database(served: &str, asked: Option<&str>) -> Result<(), HandshakeError> {
    match asked {
        Some(asked) if !asked.is_empty() && asked != served => {
            Err(refused(Fatal::NoSuchDatabase {
                asked: asked.to_string(),
                served: served.to_string(),
            }))
        }
        _ => Ok(()),
    }
}
