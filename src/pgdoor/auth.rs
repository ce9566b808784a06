//! Client authentication on the PostgreSQL door. Configured users prove
//! their password with SCRAM-SHA-256 (pgwire's server implementation,
//! checked against the stored verifier). The reserved login name
//! `pg.ticket_user` (default `ticket`) instead sends a ticket as its
//! password, for tools that can only fill a user and a password; the
//! session then runs as the ticket's owner. No md5, no trust.

use bytes::BytesMut;
use chrono::Utc;
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth};
use tokio::io::AsyncWriteExt;

use super::wire::{self, Frame, FrameReader, WireError};
use crate::app::App;
use crate::auth::scram::ScramVerifier;
use crate::auth::Principal;
use crate::stream::BoxedStream;
use crate::tickets::{Lookup, TicketId};

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Who the session is, and the ticket it logged in with, if any.
pub struct Authenticated {
    pub principal: Principal,
    pub ticket: Option<TicketId>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    #[error("ticket stale")]
    TicketStale,
    #[error("the ticket store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

pub async fn authenticate(
    app: &App,
    stream: &mut BoxedStream,
    frames: &mut FrameReader,
    user: &str,
) -> Result<Authenticated, AuthError> {
    if user == app.config.pg.ticket_user {
        return ticket_password(app, stream, frames).await;
    }
    let bundle = app.bundle();
    let verifier = bundle.users.scram_verifier(user).cloned();
    // Unknown users and users without a verifier go through the same
    // exchange against a random verifier, so the answer does not tell
    // whether the user exists.
    let (secret, known) = match verifier {
        Some(v) => (v, true),
        None => (decoy_verifier(), false),
    };
    let proven = scram(stream, frames, secret).await?;
    match (proven, known, bundle.users.principal(user)) {
        (Some(server_final), true, Some(principal)) => {
            let mut out = BytesMut::new();
            wire::authentication(&mut out, wire::AUTH_SASL_FINAL, server_final.as_bytes());
            wire::authentication(&mut out, wire::AUTH_OK, &[]);
            stream.write_all(&out).await.map_err(WireError::from)?;
            Ok(Authenticated {
                principal: principal.clone(),
                ticket: None,
            })
        }
        _ => Err(AuthError::Failed(user.to_string())),
    }
}

/// Runs SCRAM-SHA-256; `Some(server-final-message)` when the proof holds.
async fn scram(
    stream: &mut BoxedStream,
    frames: &mut FrameReader,
    verifier: ScramVerifier,
) -> Result<Option<String>, AuthError> {
    let mut out = BytesMut::new();
    wire::authentication(&mut out, wire::AUTH_SASL, b"SCRAM-SHA-256\0\0");
    stream.write_all(&out).await.map_err(WireError::from)?;

    let initial = password_frame(stream, frames).await?;
    let mut at = 0;
    let mechanism = wire::cstr(&initial.body, &mut at)?;
    if mechanism != SCRAM_SHA_256 {
        return Err(WireError::Invalid(format!("unsupported SASL mechanism {mechanism:?}")).into());
    }
    let data = initial
        .body
        .get(at + 4..)
        .ok_or_else(|| WireError::Invalid("SASLInitialResponse without data".into()))?;
    let secret = ScramSecret::Verifier {
        salt: verifier.salt.clone(),
        iterations: verifier.iterations as usize,
        stored_key: verifier.stored_key.to_vec(),
        server_key: verifier.server_key.to_vec(),
    };
    let (server_first, waiting) = ScramServerAuth::new()
        .on_client_first_message_with_secret(data, secret)
        .map_err(|err| WireError::Invalid(format!("SCRAM: {err}")))?;
    out.clear();
    wire::authentication(&mut out, wire::AUTH_SASL_CONTINUE, server_first.as_bytes());
    stream.write_all(&out).await.map_err(WireError::from)?;

    let last = password_frame(stream, frames).await?;
    Ok(waiting.on_client_final_message(&last.body).ok())
}

/// The `ticket` login: the password is a ticket id.
async fn ticket_password(
    app: &App,
    stream: &mut BoxedStream,
    frames: &mut FrameReader,
) -> Result<Authenticated, AuthError> {
    let mut out = BytesMut::new();
    wire::authentication(&mut out, wire::AUTH_CLEARTEXT, &[]);
    stream.write_all(&out).await.map_err(WireError::from)?;
    let frame = password_frame(stream, frames).await?;
    let mut at = 0;
    let password = wire::cstr(&frame.body, &mut at)?;
    let ticket = TicketId::parse(password.trim()).map_err(|_| AuthError::TicketStale)?;
    let principal = match app.ticket_store.get(&ticket, Utc::now()).await {
        Ok(Lookup::Valid(found)) => app
            .bundle()
            .users
            .principal(&found.scope.user)
            .cloned()
            .ok_or(AuthError::TicketStale)?,
        Ok(Lookup::Stale(_)) => return Err(AuthError::TicketStale),
        Err(err) => return Err(AuthError::StoreUnavailable(err.to_string())),
    };
    out.clear();
    wire::authentication(&mut out, wire::AUTH_OK, &[]);
    stream.write_all(&out).await.map_err(WireError::from)?;
    Ok(Authenticated {
        principal,
        ticket: Some(ticket),
    })
}

async fn password_frame(
    stream: &mut BoxedStream,
    frames: &mut FrameReader,
) -> Result<Frame, AuthError> {
    loop {
        if let Some(frame) = frames.next_buffered()? {
            if frame.tag != b'p' {
                return Err(WireError::Invalid(format!(
                    "expected a password message, got {:?}",
                    frame.tag as char
                ))
                .into());
            }
            return Ok(frame);
        }
        frames.fill(stream).await?;
    }
}

/// A verifier no password matches (random keys), for unknown users.
fn decoy_verifier() -> ScramVerifier {
    let mut random = [0u8; 80];
    let _ = getrandom::fill(&mut random);
    let mut stored_key = [0u8; 32];
    let mut server_key = [0u8; 32];
    stored_key.copy_from_slice(&random[16..48]);
    server_key.copy_from_slice(&random[48..80]);
    ScramVerifier {
        iterations: 4096,
        salt: random[..16].to_vec(),
        stored_key,
        server_key,
    }
}
