//! One client session on the PostgreSQL door: the handshake (TLS, startup,
//! authentication, an upstream connection with the client's settings), then
//! the client → upstream direction: every statement (simple `Query`,
//! extended `Parse`) goes through the guard and only its rewritten text is
//! forwarded; `Bind`/`Describe`/`Execute`/`Close`/`Sync`/`Flush` pass
//! through (parameters stay parameters). The other direction is
//! [`super::relay`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::auth::{self, AuthError};
use super::cancel::CancelKeys;
use super::relay::{self, Control, Shared, Substitution};
use super::startup::{self, Opening, StartupPacket};
use super::statement::{
    error_bytes, marker, ticket_problem_error, Forward, SessionView, TicketChange,
};
use super::ticket_statement::{self, TicketStatement};
use super::wire::{self, Frame, FrameReader, WireError};
use crate::app::App;
use crate::auth::Principal;
use crate::metrics::{Door, DoorLabels};
use crate::stream::BoxedStream;
use crate::tickets::TicketId;
use crate::upstream::{Lease, UpstreamConn, UpstreamPool};

/// What every session shares.
pub struct DoorState {
    pub app: Arc<App>,
    pub upstream: Arc<UpstreamPool>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub cancel_keys: CancelKeys,
    /// Open sessions per user (see `pg.max_sessions_per_user`).
    pub sessions_per_user: Arc<std::sync::Mutex<HashMap<String, u32>>>,
}

/// One user's claim on a session; released when dropped.
struct UserSlot {
    counts: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    user: String,
}

impl UserSlot {
    fn claim(door: &DoorState, user: &str) -> Option<UserSlot> {
        let limit = door.app.config.pg.max_sessions_per_user;
        let mut counts = door
            .sessions_per_user
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(user.to_string()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            counts: door.sessions_per_user.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// Runs one connection to its end. Errors are answered on the connection
/// (when it still can be) and logged; they never reach other sessions.
pub async fn run(
    door: Arc<DoorState>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let handshake_timeout = door.app.config.pg.handshake_timeout;
    let opened = tokio::time::timeout(handshake_timeout, handshake(&door, tcp, peer)).await;
    let ready = match opened {
        Ok(Ok(Some(ready))) => ready,
        Ok(Ok(None)) => return,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "connection closed during handshake");
            protocol_error(&door);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            protocol_error(&door);
            return;
        }
    };
    let labels = DoorLabels { door: Door::pg };
    door.app
        .metrics
        .active_sessions
        .get_or_create(&labels)
        .inc();
    let key = ready.cancel_key.0;
    serve(&door, ready, shutdown).await;
    door.cancel_keys.unregister(key);
    door.app
        .metrics
        .active_sessions
        .get_or_create(&labels)
        .dec();
}

fn protocol_error(door: &DoorState) {
    door.app
        .metrics
        .protocol_errors
        .get_or_create(&DoorLabels { door: Door::pg })
        .inc();
}

/// A session past its handshake.
struct Ready {
    client: BoxedStream,
    frames: FrameReader,
    principal: Principal,
    ticket: Option<TicketId>,
    lease: Lease,
    cancel_key: (i32, i32),
    peer: SocketAddr,
    /// Held for the session's lifetime.
    _slot: UserSlot,
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{message}")]
    Refused { code: &'static str, message: String },
}

async fn handshake(
    door: &DoorState,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Ready>, HandshakeError> {
    let (mut client, tls, packet) = match startup::open(tcp, door.tls.as_ref()).await? {
        Opening::Cancel { pid, secret } => {
            if let Some(backend_key) = door.cancel_keys.lookup(pid, &secret) {
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
        Err(HandshakeError::Refused { code, message }) => {
            let mut out = BytesMut::new();
            wire::error(&mut out, "FATAL", code, &message, "", "");
            let _ = client.write_all(&out).await;
            let _ = client.shutdown().await;
            Err(HandshakeError::Refused { code, message })
        }
        Err(err) => Err(err),
    }
}

fn refused(code: &'static str, message: impl Into<String>) -> HandshakeError {
    HandshakeError::Refused {
        code,
        message: message.into(),
    }
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
        return Err(refused(
            "28000",
            "esq requires TLS: connect with sslmode=require",
        ));
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
        Err(err) => return Err(refused(err.sqlstate(), err.to_string())),
    };
    check_database(door.upstream.database(), packet.database.as_deref())?;
    let slot = UserSlot::claim(door, &authenticated.principal.name).ok_or_else(|| {
        refused(
            "53300",
            format!(
                "too many sessions for user \"{}\" (pg.max_sessions_per_user = {})",
                authenticated.principal.name, app.config.pg.max_sessions_per_user
            ),
        )
    })?;
    let mut lease = door.upstream.acquire().await.map_err(|err| {
        tracing::warn!(%err, "no upstream connection for a new session");
        refused("08006", format!("esq cannot reach the database: {err}"))
    })?;
    let Some(conn) = lease.conn() else {
        return Err(refused("08006", "esq cannot reach the database"));
    };
    if !settings.is_empty() {
        conn.apply_settings(&settings)
            .await
            .map_err(|err| refused("22023", format!("a startup setting was refused: {err}")))?;
    }
    let mut ticket = authenticated.ticket;
    if let Some(text) = ticket_setting {
        let view = SessionView {
            app,
            principal: &authenticated.principal,
            ticket: None,
            client: Some(peer),
            marker_prefix: "",
        };
        match view.accept_ticket(&text).await {
            Ok(id) => ticket = Some(id),
            Err(_) => return Err(refused("28000", "ticket stale")),
        }
    }
    let cancel_key = door.cancel_keys.register(conn.backend_key);
    for (name, value) in &conn.parameters {
        let value = match name.as_str() {
            "is_superuser" => "off",
            "session_authorization" => authenticated.principal.name.as_str(),
            _ => value.as_str(),
        };
        wire::parameter_status(&mut out, name, value);
    }
    wire::backend_key_data(&mut out, cancel_key.0, cancel_key.1);
    wire::ready_for_query(&mut out, b'I');
    client.write_all(&out).await.map_err(WireError::from)?;
    client.flush().await.map_err(WireError::from)?;
    tracing::info!(user = %authenticated.principal.name, %peer, tls, "session started");
    Ok(Ready {
        client: std::mem::replace(client, Box::new(tokio::io::empty())),
        frames,
        principal: authenticated.principal,
        ticket,
        lease,
        cancel_key,
        peer,
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
            ticket_statement::SETTING => ticket = Some(value),
            // The upstream session always speaks UTF8 (what the guard
            // parsed is what PostgreSQL reads); clients are told so.
            "client_encoding" => {}
            "replication" => {
                return Err(refused(
                    "42501",
                    "esq does not serve replication connections",
                ))
            }
            name if crate::guard::is_settable(name) => settings.push((name.to_string(), value)),
            name => {
                return Err(refused(
                    "42501",
                    format!("esq does not allow the startup parameter \"{name}\""),
                ))
            }
        }
    }
    Ok((ticket, settings))
}

/// esq serves one database; a client asking for another is told which.
fn check_database(served: &str, asked: Option<&str>) -> Result<(), HandshakeError> {
    match asked {
        Some(asked) if !asked.is_empty() && asked != served => Err(refused(
            "3D000",
            format!("database \"{asked}\" does not exist; esq serves \"{served}\""),
        )),
        _ => Ok(()),
    }
}

/// The session's main loop; returns when the session ends.
async fn serve(door: &DoorState, ready: Ready, mut shutdown: watch::Receiver<bool>) {
    let Ready {
        client,
        mut frames,
        principal,
        mut ticket,
        mut lease,
        peer,
        ..
    } = ready;
    let Some(conn) = lease.take() else {
        return;
    };
    let UpstreamConn {
        stream: upstream_stream,
        read_buf,
        backend_key,
        parameters,
    } = conn;
    let (mut client_read, client_write) = tokio::io::split(client);
    let (upstream_read, mut upstream_write) = tokio::io::split(upstream_stream);
    let shared = Arc::new(Shared::new());
    let (control, control_rx) = mpsc::unbounded_channel();
    let mut relay_task = tokio::spawn(relay::run(
        upstream_read,
        read_buf,
        client_write,
        shared.clone(),
        control_rx,
    ));

    let marker_prefix = format!("esq_refused_{:08x}", rand_u32());
    let mut state = ProtocolState::default();
    let mut out = BytesMut::with_capacity(8192);
    let idle_timeout = door.app.config.pg.idle_timeout;
    let mut draining = *shutdown.borrow();
    let relay_end = 'session: loop {
        loop {
            let frame = match frames.next_buffered() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    protocol_error(door);
                    let _ = control.send(Control::Fatal(fatal("08P01", &err.to_string())));
                    break 'session relay_task.await.ok();
                }
            };
            reconcile(&mut state, &shared, &mut ticket);
            let view = SessionView {
                app: &door.app,
                principal: &principal,
                ticket: ticket.as_ref(),
                client: Some(peer),
                marker_prefix: &marker_prefix,
            };
            match handle(&view, &mut state, &shared, frame, &mut out).await {
                Ok(Step::Continue) => {}
                Ok(Step::Terminate) => {
                    if !out.is_empty() {
                        let _ = upstream_write.write_all(&out).await;
                    }
                    let _ = control.send(Control::Stop);
                    break 'session relay_task.await.ok();
                }
                Err(message) => {
                    protocol_error(door);
                    let _ = control.send(Control::Fatal(fatal("08P01", &message)));
                    break 'session relay_task.await.ok();
                }
            }
        }
        if !out.is_empty() {
            if upstream_write.write_all(&out).await.is_err()
                || upstream_write.flush().await.is_err()
            {
                break 'session relay_task.await.ok();
            }
            out.clear();
        }
        tokio::select! {
            filled = frames.fill(&mut client_read) => match filled {
                Ok(()) => {}
                Err(WireError::Closed) => {
                    let _ = control.send(Control::Stop);
                    break 'session relay_task.await.ok();
                }
                Err(err) => {
                    tracing::debug!(%err, "client read failed");
                    let _ = control.send(Control::Stop);
                    break 'session relay_task.await.ok();
                }
            },
            ended = &mut relay_task => break 'session ended.ok(),
            changed = shutdown.changed(), if !draining => {
                // A closed channel means the door is gone: drain as well.
                let _ = changed;
                draining = true;
            }
            // While draining, end the session as soon as it is idle (its
            // answers all delivered, no transaction open).
            _ = tokio::time::sleep(DRAIN_CHECK), if draining => {
                if is_idle(&shared, &state) {
                    let _ = control.send(Control::Fatal(fatal(
                        "57P01",
                        "terminating connection because esq is shutting down",
                    )));
                    break 'session relay_task.await.ok();
                }
            }
            _ = tokio::time::sleep(idle_timeout) => {
                // Only a session waiting for its client is idle; one waiting
                // for a long answer is not.
                if is_idle(&shared, &state) {
                    let _ = control.send(Control::Fatal(fatal(
                        "57P05",
                        "terminating connection due to idle-session timeout",
                    )));
                    break 'session relay_task.await.ok();
                }
            }
        }
    };
    // Give the upstream connection back when it is idle and in sync.
    if let Some(end) = relay_end {
        let reusable = end.upstream_ok && is_idle(&shared, &state);
        let stream = end.upstream.unsplit(upstream_write);
        lease.restore(UpstreamConn {
            stream,
            read_buf: end.upstream_buf,
            backend_key,
            parameters,
        });
        door.upstream.release(lease, reusable).await;
    }
    tracing::info!(user = %principal.name, %peer, "session ended");
}

/// How often a draining session checks whether it has become idle.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Nothing outstanding upstream and no transaction open.
fn is_idle(shared: &Shared, state: &ProtocolState) -> bool {
    shared.rounds_done.load(Ordering::Acquire) == state.rounds_sent
        && shared.status.load(Ordering::Relaxed) == b'I'
}

fn fatal(code: &str, message: &str) -> Bytes {
    let mut out = BytesMut::new();
    wire::error(&mut out, "FATAL", code, message, "", "");
    out.freeze()
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    u32::from_be_bytes(bytes)
}

/// Prepared statements and portals, as far as esq must know them.
#[derive(Default)]
struct ProtocolState {
    /// `Sync` and `Query` messages sent upstream (each ends a round).
    rounds_sent: u64,
    /// Statements decided so far (numbers the denial stand-ins).
    sequence: u64,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Prepared>,
    /// Statement and portal names created per round. When a round errs,
    /// PostgreSQL skipped what followed the error, so esq forgets every
    /// name created in that round: binding or executing it is refused
    /// until it is prepared again (never run on esq's guess).
    created: Vec<(u64, Created)>,
}

enum Created {
    Statement(String),
    Portal(String),
}

/// Catches up with the relay: forgets names from rounds that erred and
/// applies the ticket changes PostgreSQL confirmed.
fn reconcile(state: &mut ProtocolState, shared: &Shared, ticket: &mut Option<TicketId>) {
    for change in shared.take_ticket_changes() {
        *ticket = match change {
            TicketChange::Set(id) => Some(id),
            TicketChange::Clear => None,
        };
    }
    if state.created.is_empty() {
        return;
    }
    let done = shared.rounds_done.load(Ordering::Acquire);
    let errored = shared.take_errored_before(done);
    let (finished, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut state.created)
        .into_iter()
        .partition(|(round, _)| *round < done);
    state.created = pending;
    for (round, created) in finished {
        if errored.contains(&round) {
            match created {
                Created::Statement(name) => state.statements.remove(&name),
                Created::Portal(name) => state.portals.remove(&name),
            };
        }
    }
}

/// What a prepared statement was decided under.
#[derive(Clone)]
struct Prepared {
    /// The ticket it was rewritten for; it must still be live to run it.
    ticket: Option<TicketId>,
    /// A ticket statement, applied when executed.
    ticket_statement: Option<TicketStatement>,
}

enum Step {
    Continue,
    Terminate,
}

async fn handle(
    view: &SessionView<'_>,
    state: &mut ProtocolState,
    shared: &Shared,
    frame: Frame,
    out: &mut BytesMut,
) -> Result<Step, String> {
    match frame.tag {
        b'Q' => {
            let mut at = 0;
            let sql = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            state.sequence += 1;
            let forward = view.decide(&sql, state.sequence, false).await;
            let step = apply(
                state,
                shared,
                forward,
                |sql, out| put_message(out, b'Q', |b| put_cstr(b, sql)),
                out,
            );
            state.rounds_sent += 1;
            Ok(step)
        }
        b'P' => {
            let mut at = 0;
            let name = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let sql = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let types = frame.body.get(at..).unwrap_or_default().to_vec();
            state.sequence += 1;
            if !name.is_empty() && state.statements.contains_key(&name) {
                // As PostgreSQL: a named statement is not replaced. (Never
                // forward it: the old statement would stay upstream under
                // a name esq then thinks means something else.)
                let marker = marker(view.marker_prefix, state.sequence);
                shared.push(
                    state.rounds_sent,
                    Substitution::Error {
                        marker: marker.clone(),
                        answer: error_bytes(
                            "42P05",
                            &format!("prepared statement \"{name}\" already exists"),
                            "",
                            "Close it first, or use another name",
                        ),
                    },
                );
                put_parse(out, &name, &marker, &types);
                return Ok(Step::Continue);
            }
            // PostgreSQL drops the unnamed statement before parsing.
            state.statements.remove(&name);
            let special = ticket_statement::recognise(&sql)
                .filter(|statement| *statement != TicketStatement::Show);
            let prepared = match special {
                Some(statement) => {
                    // Answered when executed; upstream prepares empty text.
                    put_parse(out, &name, "", &types);
                    Some(Prepared {
                        ticket: None,
                        ticket_statement: Some(statement),
                    })
                }
                None => {
                    let forward = view.decide(&sql, state.sequence, true).await;
                    let refused = forward
                        .substitutions
                        .iter()
                        .any(|s| matches!(s, Substitution::Error { .. }));
                    for substitution in forward.substitutions {
                        shared.push(state.rounds_sent, substitution);
                    }
                    put_parse(out, &name, &forward.sql, &types);
                    (!refused).then(|| Prepared {
                        ticket: view.ticket.cloned(),
                        ticket_statement: None,
                    })
                }
            };
            if let Some(prepared) = prepared {
                state
                    .created
                    .push((state.rounds_sent, Created::Statement(name.clone())));
                state.statements.insert(name, prepared);
            }
            Ok(Step::Continue)
        }
        b'B' => {
            let mut at = 0;
            let portal = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let statement = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let prepared = state.statements.get(&statement).cloned();
            let refusal = match &prepared {
                // esq did not see this statement prepared (or refused it):
                // never let it run.
                None => Some(error_bytes(
                    "26000",
                    &format!("prepared statement \"{statement}\" does not exist"),
                    "",
                    "",
                )),
                Some(Prepared {
                    ticket: Some(ticket),
                    ..
                }) => {
                    let check = SessionView {
                        ticket: Some(ticket),
                        ..*view
                    };
                    check.scope().await.err().map(|p| ticket_problem_error(&p))
                }
                Some(_) => None,
            };
            match refusal {
                Some(answer) => {
                    // Bind to a statement that does not exist; its error
                    // answer is replaced by the refusal.
                    state.sequence += 1;
                    let marker = marker(view.marker_prefix, state.sequence);
                    shared.push(
                        state.rounds_sent,
                        Substitution::Error {
                            marker: marker.clone(),
                            answer,
                        },
                    );
                    put_message(out, b'B', |b| {
                        put_cstr(b, &portal);
                        put_cstr(b, &marker);
                        b.put_slice(frame.body.get(at..).unwrap_or_default());
                    });
                    state.portals.remove(&portal);
                }
                None => {
                    frame.encode_into(out);
                    match prepared {
                        Some(p) => {
                            state
                                .created
                                .push((state.rounds_sent, Created::Portal(portal.clone())));
                            state.portals.insert(portal, p);
                        }
                        None => {
                            state.portals.remove(&portal);
                        }
                    }
                }
            }
            Ok(Step::Continue)
        }
        b'E' => {
            let mut at = 0;
            let portal = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let prepared = state.portals.get(&portal).cloned();
            let refusal = match &prepared {
                None => Some(error_bytes(
                    "34000",
                    &format!("portal \"{portal}\" does not exist"),
                    "",
                    "",
                )),
                // The ticket is checked again at every Execute: a portal
                // must not keep streaming after revocation.
                Some(Prepared {
                    ticket: Some(ticket),
                    ..
                }) => {
                    let check = SessionView {
                        ticket: Some(ticket),
                        ..*view
                    };
                    check.scope().await.err().map(|p| ticket_problem_error(&p))
                }
                Some(_) => None,
            };
            if let Some(answer) = refusal {
                state.sequence += 1;
                let marker = marker(view.marker_prefix, state.sequence);
                shared.push(
                    state.rounds_sent,
                    Substitution::Error {
                        marker: marker.clone(),
                        answer,
                    },
                );
                put_message(out, b'E', |b| {
                    put_cstr(b, &marker);
                    b.put_slice(frame.body.get(at..).unwrap_or_default());
                });
                return Ok(Step::Continue);
            }
            let special = prepared.and_then(|p| p.ticket_statement);
            frame.encode_into(out);
            if let Some(statement) = special {
                // The stand-in is empty text: its EmptyQueryResponse is
                // replaced by the statement's answer (or its refusal).
                state.sequence += 1;
                let forward = view
                    .ticket_statement(statement, state.sequence, false)
                    .await;
                for substitution in forward.substitutions {
                    let substitution = match substitution {
                        Substitution::Error { answer, .. } => Substitution::Empty {
                            answer,
                            ticket: None,
                        },
                        other => other,
                    };
                    shared.push(state.rounds_sent, substitution);
                }
            }
            Ok(Step::Continue)
        }
        b'C' => {
            let kind = frame.body.first().copied();
            let mut at = 1;
            let name = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            match kind {
                Some(b'S') => {
                    state.statements.remove(&name);
                }
                Some(b'P') => {
                    state.portals.remove(&name);
                }
                _ => return Err("Close of neither a statement nor a portal".into()),
            }
            frame.encode_into(out);
            Ok(Step::Continue)
        }
        b'D' | b'H' => {
            frame.encode_into(out);
            Ok(Step::Continue)
        }
        b'S' => {
            frame.encode_into(out);
            state.rounds_sent += 1;
            Ok(Step::Continue)
        }
        b'X' => Ok(Step::Terminate),
        b'F' => {
            state.sequence += 1;
            let marker = marker(view.marker_prefix, state.sequence);
            shared.push(
                state.rounds_sent,
                Substitution::Error {
                    marker: marker.clone(),
                    answer: error_bytes(
                        "0A000",
                        "fast-path function calls are not supported by esq",
                        "esq forwards only SQL statements it has analysed",
                        "call the function in a SELECT statement",
                    ),
                },
            );
            put_message(out, b'Q', |b| put_cstr(b, &marker));
            state.rounds_sent += 1;
            Ok(Step::Continue)
        }
        // Copy messages outside a COPY are ignored, as PostgreSQL does.
        b'd' | b'c' | b'f' => Ok(Step::Continue),
        other => Err(format!("invalid frontend message type {:?}", other as char)),
    }
}

/// Queues a decision's substitutions and writes its forwarded text.
fn apply(
    state: &mut ProtocolState,
    shared: &Shared,
    forward: Forward,
    write: impl FnOnce(&str, &mut BytesMut),
    out: &mut BytesMut,
) -> Step {
    for substitution in forward.substitutions {
        shared.push(state.rounds_sent, substitution);
    }
    write(&forward.sql, out);
    Step::Continue
}

fn put_parse(out: &mut BytesMut, name: &str, sql: &str, types: &[u8]) {
    put_message(out, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, sql);
        b.put_slice(types);
    });
}

fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, text: &str) {
    out.put_slice(text.as_bytes());
    out.put_u8(0);
}
