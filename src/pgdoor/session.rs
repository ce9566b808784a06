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
use super::cancel::{self, CancelKeys, CancelRequests};
use super::completion::Expect;
use super::relay::{self, Control, Shared, Substitution};
use super::startup::{self, Opening, StartupPacket};
use super::statement::{
    error_bytes, marker, ticket_problem_error, Forward, SessionView, TicketChange,
};
use super::ticket_statement::{self, TicketStatement};
use super::wire::{self, put_cstr, put_message, Frame, FrameReader, WireError};
use crate::app::App;
use crate::auth::Principal;
use crate::metrics::{Door, DoorLabels};
use crate::stream::BoxedStream;
use crate::tickets::TicketId;
use crate::upstream::{Lease, UpstreamConn, UpstreamPool};

use super::names::{Names, Prepared, Space};

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

/// Runs one connection to its end, in its `session` span. Errors are
/// answered on the connection (when it still can be) and logged; they never
/// reach other sessions.
pub async fn run(
    door: Arc<DoorState>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    use tracing::Instrument;
    let span = crate::telemetry::session_span(Door::pg, peer);
    run_session(door, tcp, peer, shutdown)
        .instrument(span)
        .await
}

async fn run_session(
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
    cancel_requests: CancelRequests,
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
    crate::telemetry::record_user(&tracing::Span::current(), &authenticated.principal.name);
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
        let checks = app.ticket_check();
        let view = SessionView {
            app,
            principal: &authenticated.principal,
            ticket: None,
            checks: &checks,
            client: Some(peer),
            marker_prefix: "",
            pending: None,
        };
        match view.accept_ticket(&text).await {
            Ok(id) => ticket = Some(id),
            Err(_) => return Err(refused("28000", "ticket stale")),
        }
    }
    let (cancel_key, cancel_requests) = door.cancel_keys.register(conn.backend_key);
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
        cancel_requests,
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
        cancel_requests,
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
    let checks = door.app.ticket_check();
    let shared = Arc::new(Shared::new(
        door.app
            .metrics
            .statement_seconds
            .get_or_create(&DoorLabels { door: Door::pg })
            .clone(),
    ));
    let (control, control_rx) = mpsc::unbounded_channel();
    // Both directions run in this one task (joined futures, not two tasks):
    // a socket wake-up never crosses threads, yet neither direction waits
    // for the other, so a full socket on one side cannot stall the session.
    let (relay_ended, mut relay_ended_rx) = tokio::sync::oneshot::channel::<()>();
    let relay = async {
        let end = relay::run(
            upstream_read,
            read_buf,
            client_write,
            shared.clone(),
            control_rx,
            door.app.audit.clone(),
        )
        .await;
        let _ = relay_ended.send(());
        end
    };

    let marker_prefix = format!("esq_refused_{:08x}", rand_u32());
    let mut state = ProtocolState::default();
    let mut out = BytesMut::with_capacity(8192);
    let idle_timeout = door.app.config.pg.idle_timeout;
    let mut draining = *shutdown.borrow();
    let confirm_limit = door.app.config.upstream.statement_timeout + CONFIRM_SLACK;
    let session = async {
        // Dropped when the session side ends: the relay stops then.
        let control = control;
        // One idle timer for the session, moved on only when it fires (not
        // re-armed at every message: the timer wheel's lock is not free).
        let mut last_heard = tokio::time::Instant::now();
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        // Cancel requests counted when the client's last bytes arrived: one
        // sent while esq was still deciding is forwarded again below.
        let mut cancels_seen = cancel_requests.count();
        'session: loop {
            loop {
                let frame = match frames.next_buffered() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(err) => {
                        protocol_error(door);
                        let _ = control.send(Control::Fatal(fatal("08P01", &err.to_string())));
                        break 'session;
                    }
                };
                reconcile(&mut state, &shared, &mut ticket);
                if let Some(round) = depends_on(&frame, &state) {
                    // It names a statement or portal an earlier round changed:
                    // wait for PostgreSQL's verdict on that round first.
                    let sent = out.is_empty()
                        || (upstream_write.write_all(&out).await.is_ok()
                            && upstream_write.flush().await.is_ok());
                    out.clear();
                    if !sent || !wait_for_round(&shared, round, confirm_limit).await {
                        let _ = control.send(Control::Fatal(fatal(
                            "08006",
                            "esq lost track of the database's answers",
                        )));
                        break 'session;
                    }
                    reconcile(&mut state, &shared, &mut ticket);
                }
                let effective = state.effective_ticket(&ticket);
                let view = SessionView {
                    app: &door.app,
                    principal: &principal,
                    ticket: effective.as_ref(),
                    checks: &checks,
                    client: Some(peer),
                    marker_prefix: &marker_prefix,
                    pending: Some(&shared.audit),
                };
                match handle(&view, &mut state, &shared, frame, &mut out).await {
                    Ok(Step::Continue) => {}
                    Ok(Step::Terminate) => {
                        if !out.is_empty() {
                            let _ = upstream_write.write_all(&out).await;
                        }
                        let _ = control.send(Control::Stop);
                        break 'session;
                    }
                    Err(message) => {
                        protocol_error(door);
                        let _ = control.send(Control::Fatal(fatal("08P01", &message)));
                        break 'session;
                    }
                }
            }
            if !out.is_empty() {
                if upstream_write.write_all(&out).await.is_err()
                    || upstream_write.flush().await.is_err()
                {
                    break 'session;
                }
                out.clear();
                let cancels = cancel_requests.count();
                if cancels != cancels_seen {
                    // PostgreSQL was idle when the cancel came; now the
                    // statement has reached it.
                    cancels_seen = cancels;
                    let sent = state.rounds_sent;
                    let shared = shared.clone();
                    tokio::spawn(cancel::forward_held(
                        door.upstream.clone(),
                        backend_key,
                        move || shared.rounds_done.load(Ordering::Acquire) >= sent,
                    ));
                }
            }
            tokio::select! {
                filled = frames.fill(&mut client_read) => match filled {
                    Ok(()) => {
                        last_heard = tokio::time::Instant::now();
                        cancels_seen = cancel_requests.count();
                    }
                    Err(WireError::Closed) => {
                        let _ = control.send(Control::Stop);
                        break 'session;
                    }
                    Err(err) => {
                        tracing::debug!(%err, "client read failed");
                        let _ = control.send(Control::Stop);
                        break 'session;
                    }
                },
                _ = &mut relay_ended_rx => break 'session,
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
                        break 'session;
                    }
                }
                _ = &mut idle => {
                    let quiet_until = last_heard + idle_timeout;
                    if quiet_until > tokio::time::Instant::now() {
                        // The client spoke since the timer was set.
                        idle.as_mut().reset(quiet_until);
                        continue 'session;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    // Only a session waiting for its client is idle; one waiting
                    // for a long answer is not.
                    if is_idle(&shared, &state) {
                        let _ = control.send(Control::Fatal(fatal(
                            "57P05",
                            "terminating connection due to idle-session timeout",
                        )));
                        break 'session;
                    }
                }
            }
        }
    };
    let (end, ()) = tokio::join!(relay, session);
    // Give the upstream connection back when it is idle and in sync.
    let reusable = end.upstream_ok && is_idle(&shared, &state);
    let stream = end.upstream.unsplit(upstream_write);
    lease.restore(UpstreamConn {
        stream,
        read_buf: end.upstream_buf,
        backend_key,
        parameters,
    });
    door.upstream.release(lease, reusable).await;
    tracing::info!(user = %principal.name, %peer, "session ended");
}

/// Beyond the statement timeout, how long a session waits for the answers
/// to an earlier round it depends on.
const CONFIRM_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until `round` has ended (its ReadyForQuery relayed); `false` on
/// time-out.
async fn wait_for_round(shared: &Shared, round: u64, limit: std::time::Duration) -> bool {
    let wait = async {
        loop {
            let notified = shared.round_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.rounds_done.load(Ordering::Acquire) > round {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(limit, wait).await.is_ok()
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

/// What esq tracks of the session's protocol state.
#[derive(Default)]
struct ProtocolState {
    /// `Sync` and `Query` messages sent upstream (each ends a round).
    rounds_sent: u64,
    /// Statements decided so far (numbers the denial stand-ins).
    sequence: u64,
    /// Prepared statements and portals, confirmed against PostgreSQL.
    names: Names,
    /// Extended-protocol messages were sent since the last `Sync`.
    extended_open: bool,
    /// A ticket statement forwarded but not yet answered: its round and the
    /// ticket it sets. Later messages of that round are decided under it
    /// (PostgreSQL runs them only if it ran the statement); messages of
    /// later rounds wait for the answer.
    ticket_pending: Option<(u64, Option<TicketId>)>,
    /// When the first message of the round being assembled arrived
    /// (end-to-end latency: from here to its `ReadyForQuery`).
    round_started: Option<std::time::Instant>,
}

impl ProtocolState {
    /// A `Query` or `Sync` went upstream: the round is complete on the
    /// client's side and its clock is handed to the relay.
    fn end_round(&mut self, shared: &Shared) {
        self.rounds_sent += 1;
        let started = self
            .round_started
            .take()
            .unwrap_or_else(std::time::Instant::now);
        shared.round_sent(started);
    }

    /// Notes a forwarded ticket statement's effect (see `ticket_pending`).
    fn ticket_statement_sent(&mut self, round: u64, substitutions: &[Substitution]) {
        for substitution in substitutions {
            if let Substitution::Empty {
                ticket: Some(change),
                ..
            } = substitution
            {
                let ticket = match change {
                    TicketChange::Set(id) => Some(id.clone()),
                    TicketChange::Clear => None,
                };
                self.ticket_pending = Some((round, ticket));
            }
        }
    }

    /// The ticket decisions use now.
    fn effective_ticket(&self, confirmed: &Option<TicketId>) -> Option<TicketId> {
        match &self.ticket_pending {
            Some((round, ticket)) if *round == self.rounds_sent => ticket.clone(),
            _ => confirmed.clone(),
        }
    }
}

/// Catches up with the relay: applies the ticket changes PostgreSQL ran
/// and its verdict on finished rounds.
fn reconcile(state: &mut ProtocolState, shared: &Shared, ticket: &mut Option<TicketId>) {
    // `done` first: a round's ticket change is queued before its
    // ReadyForQuery, so every change of a round before `done` is taken.
    let done = shared.rounds_done.load(Ordering::Acquire);
    for change in shared.take_ticket_changes() {
        *ticket = match change {
            TicketChange::Set(id) => Some(id),
            TicketChange::Clear => None,
        };
    }
    if state
        .ticket_pending
        .as_ref()
        .is_some_and(|(round, _)| *round < done)
    {
        state.ticket_pending = None;
    }
    let errored = shared.take_errored_before(done);
    state.names.confirm(done, &errored);
}

/// The earliest-needed unconfirmed round this message depends on: one that
/// changed a statement or portal the message names.
fn depends_on(frame: &Frame, state: &ProtocolState) -> Option<u64> {
    // The common case, nothing unanswered: no need to read the names.
    if !state.names.has_pending() && state.ticket_pending.is_none() {
        return None;
    }
    let mut at = 0;
    let mut names: Vec<(Space, String)> = Vec::new();
    let read = |at: &mut usize| wire::cstr(&frame.body, at).ok();
    match frame.tag {
        b'P' => names.extend(read(&mut at).map(|n| (Space::Statement, n))),
        b'B' => {
            let portal = read(&mut at);
            let statement = read(&mut at);
            names.extend(portal.map(|n| (Space::Portal, n)));
            names.extend(statement.map(|n| (Space::Statement, n)));
        }
        b'E' => names.extend(read(&mut at).map(|n| (Space::Portal, n))),
        b'C' | b'D' => {
            let space = match frame.body.first() {
                Some(b'S') => Space::Statement,
                _ => Space::Portal,
            };
            at = 1;
            names.extend(read(&mut at).map(|n| (space, n)));
        }
        _ => {}
    }
    // Statements are decided under the session's ticket: a ticket
    // statement of an earlier round must be answered first.
    let ticket_round = match (frame.tag, &state.ticket_pending) {
        (b'Q' | b'P', Some((round, _))) if *round < state.rounds_sent => Some(*round),
        _ => None,
    };
    names
        .iter()
        .filter_map(|(space, name)| {
            state
                .names
                .unconfirmed_round(*space, name, state.rounds_sent)
        })
        .chain(ticket_round)
        .max()
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
    let round = state.rounds_sent;
    if state.round_started.is_none()
        && matches!(
            frame.tag,
            b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'F'
        )
    {
        state.round_started = Some(std::time::Instant::now());
    }
    if matches!(frame.tag, b'P' | b'B' | b'E' | b'D' | b'C' | b'H') {
        state.extended_open = true;
    }
    match frame.tag {
        b'Q' | b'F' if state.extended_open => {
            // PostgreSQL would run it, or discard it while skipping to Sync
            // after an error: esq could not tell which. No driver does this.
            Err("a Query or FunctionCall inside an unfinished extended-protocol batch (send Sync first)".into())
        }
        b'Q' => {
            let mut at = 0;
            let sql = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            state.sequence += 1;
            let forward = view.decide(&sql, state.sequence, false).await;
            if let Some(completion) = forward.completion.clone() {
                shared.audit.expect(round, Expect::Query(completion));
            }
            state.ticket_statement_sent(round, &forward.substitutions);
            if let Some(name) = deallocated(&sql) {
                state.names.deallocate(name.as_deref());
            }
            let step = apply(
                state,
                shared,
                forward,
                |sql, out| put_message(out, b'Q', |b| put_cstr(b, sql)),
                out,
            );
            state.end_round(shared);
            Ok(step)
        }
        b'P' => {
            let mut at = 0;
            let name = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let sql = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let types = frame.body.get(at..).unwrap_or_default().to_vec();
            let index = answering(state, round)?;
            state.sequence += 1;
            if !name.is_empty() && state.names.get(Space::Statement, &name).is_some() {
                // As PostgreSQL: a named statement is not replaced.
                let answer = error_bytes(
                    "42P05",
                    &format!("prepared statement \"{name}\" already exists"),
                    "",
                    "Close it first, or use another name",
                );
                let marker = stand_in(view, state, shared, round, answer);
                put_parse(out, &name, &marker, &types);
                return Ok(Step::Continue);
            }
            let special = ticket_statement::recognise(&sql)
                .filter(|statement| *statement != TicketStatement::Show);
            let prepared = match special {
                Some(statement) => {
                    // Answered when executed; upstream prepares empty text.
                    put_parse(out, &name, "", &types);
                    Some(Prepared {
                        ticket: None,
                        ticket_statement: Some(statement),
                        fingerprint: 0,
                        audit: None,
                    })
                }
                None => {
                    let forward = view.decide(&sql, state.sequence, true).await;
                    let forward_ticket = view.ticket.filter(|_| forward.under_ticket).cloned();
                    let refused = forward
                        .substitutions
                        .iter()
                        .any(|s| matches!(s, Substitution::Error { .. }));
                    for substitution in forward.substitutions {
                        shared.push(round, substitution);
                    }
                    put_parse(out, &name, &forward.sql, &types);
                    (!refused).then_some(Prepared {
                        ticket: forward_ticket,
                        ticket_statement: None,
                        fingerprint: crate::sentinel::fingerprint(&sql),
                        audit: forward.completion,
                    })
                }
            };
            state
                .names
                .set(round, index, Space::Statement, &name, prepared);
            Ok(Step::Continue)
        }
        b'B' => {
            let mut at = 0;
            let portal = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let statement = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let index = answering(state, round)?;
            let prepared = state.names.get(Space::Statement, &statement).cloned();
            let refusal = refusal(
                view,
                prepared.as_ref(),
                "26000",
                "prepared statement",
                &statement,
            )
            .await;
            match refusal {
                Some(answer) => {
                    // Bind to a statement that does not exist; its error
                    // answer is replaced by the refusal.
                    let marker = stand_in(view, state, shared, round, answer);
                    put_message(out, b'B', |b| {
                        put_cstr(b, &portal);
                        put_cstr(b, &marker);
                        b.put_slice(frame.body.get(at..).unwrap_or_default());
                    });
                    state.names.set(round, index, Space::Portal, &portal, None);
                }
                None => {
                    frame.encode_into(out);
                    state
                        .names
                        .set(round, index, Space::Portal, &portal, prepared);
                }
            }
            Ok(Step::Continue)
        }
        b'E' => {
            let mut at = 0;
            let portal = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            answering(state, round)?;
            // The ticket is checked again at every Execute: a portal must
            // not keep streaming after revocation.
            let prepared = state.names.get(Space::Portal, &portal).cloned();
            let refusal = refusal(view, prepared.as_ref(), "34000", "portal", &portal).await;
            // Every Execute has an entry, so the relay's answers and the
            // entries stay aligned; only an allowed statement's is recorded.
            let completion = match &refusal {
                None => prepared.as_ref().and_then(|p| p.audit.clone()),
                Some(_) => None,
            };
            shared.audit.expect(round, Expect::Execute(completion));
            if let Some(answer) = refusal {
                let marker = stand_in(view, state, shared, round, answer);
                put_message(out, b'E', |b| {
                    put_cstr(b, &marker);
                    b.put_slice(frame.body.get(at..).unwrap_or_default());
                });
                return Ok(Step::Continue);
            }
            if let Some((ticket, fingerprint)) = prepared
                .as_ref()
                .and_then(|p| p.ticket.as_ref().map(|t| (t.hash(), p.fingerprint)))
            {
                view.app
                    .sentinel
                    .used(&ticket, &view.principal.name, fingerprint);
            }
            let Some(statement) = prepared.and_then(|p| p.ticket_statement) else {
                frame.encode_into(out);
                return Ok(Step::Continue);
            };
            // A ticket statement: upstream runs empty text, whose
            // EmptyQueryResponse is replaced by the statement's answer. A
            // refused one executes a stand-in portal instead, so PostgreSQL
            // fails the round too (and skips the rest, as the client expects).
            state.sequence += 1;
            let forward = view
                .ticket_statement(statement, state.sequence, false)
                .await;
            let mut execute_as = None;
            state.ticket_statement_sent(round, &forward.substitutions);
            for substitution in forward.substitutions {
                match substitution {
                    Substitution::Error { answer, .. } => {
                        execute_as = Some(stand_in(view, state, shared, round, answer));
                    }
                    other => shared.push(round, other),
                }
            }
            match execute_as {
                Some(marker) => put_message(out, b'E', |b| {
                    put_cstr(b, &marker);
                    b.put_slice(frame.body.get(at..).unwrap_or_default());
                }),
                None => frame.encode_into(out),
            }
            Ok(Step::Continue)
        }
        b'C' => {
            let space = match frame.body.first().copied() {
                Some(b'S') => Space::Statement,
                Some(b'P') => Space::Portal,
                _ => return Err("Close of neither a statement nor a portal".into()),
            };
            let mut at = 1;
            let name = wire::cstr(&frame.body, &mut at).map_err(|e| e.to_string())?;
            let index = answering(state, round)?;
            state.names.set(round, index, space, &name, None);
            frame.encode_into(out);
            Ok(Step::Continue)
        }
        b'D' => {
            answering(state, round)?;
            frame.encode_into(out);
            Ok(Step::Continue)
        }
        b'H' => {
            frame.encode_into(out);
            Ok(Step::Continue)
        }
        b'S' => {
            frame.encode_into(out);
            state.end_round(shared);
            state.extended_open = false;
            Ok(Step::Continue)
        }
        b'X' => Ok(Step::Terminate),
        b'F' => {
            let answer = error_bytes(
                "0A000",
                "fast-path function calls are not supported by esq",
                "esq forwards only SQL statements it has analysed",
                "call the function in a SELECT statement",
            );
            let marker = stand_in(view, state, shared, round, answer);
            put_message(out, b'Q', |b| put_cstr(b, &marker));
            state.end_round(shared);
            Ok(Step::Continue)
        }
        // Copy messages outside a COPY are ignored, as PostgreSQL does.
        b'd' | b'c' | b'f' => Ok(Step::Continue),
        other => Err(format!("invalid frontend message type {:?}", other as char)),
    }
}

/// The statement a SQL `DEALLOCATE` drops (`Some(None)`: all of them).
fn deallocated(sql: &str) -> Option<Option<String>> {
    use sqlparser::ast::Statement;
    if !sql
        .trim_start()
        .get(..10)?
        .eq_ignore_ascii_case("deallocate")
    {
        return None;
    }
    let statements =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .ok()?;
    match statements.as_slice() {
        [Statement::Deallocate { name, .. }]
            if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
        {
            Some(None)
        }
        [Statement::Deallocate { name, .. }] if name.quote_style.is_none() => {
            Some(Some(name.value.to_lowercase()))
        }
        [Statement::Deallocate { name, .. }] => Some(Some(name.value.clone())),
        _ => None,
    }
}

/// Queues `answer` in place of PostgreSQL's error for a stand-in and
/// returns the stand-in (a name PostgreSQL does not know, or a bare word it
/// cannot parse) to forward instead of the refused text.
fn stand_in(
    view: &SessionView<'_>,
    state: &mut ProtocolState,
    shared: &Shared,
    round: u64,
    answer: Bytes,
) -> String {
    state.sequence += 1;
    let marker = marker(view.marker_prefix, state.sequence);
    shared.push(
        round,
        Substitution::Error {
            marker: marker.clone(),
            answer,
        },
    );
    marker
}

/// Numbers an answering message of the round, or ends the session when a
/// round grows past what esq will journal.
fn answering(state: &mut ProtocolState, round: u64) -> Result<u32, String> {
    state.names.answering(round).ok_or_else(|| {
        format!(
            "more than {} messages before a Sync",
            super::names::MAX_ROUND_MESSAGES
        )
    })
}

/// Why a statement or portal must not run: esq does not know it (never
/// prepared, or refused: `code`, "<what> … does not exist"), or the ticket
/// it was prepared under is no longer live ("ticket stale").
async fn refusal(
    view: &SessionView<'_>,
    prepared: Option<&Prepared>,
    code: &str,
    what: &str,
    name: &str,
) -> Option<Bytes> {
    let Some(prepared) = prepared else {
        return Some(error_bytes(
            code,
            &format!("{what} \"{name}\" does not exist"),
            "",
            "",
        ));
    };
    let ticket = prepared.ticket.as_ref()?;
    let check = SessionView {
        ticket: Some(ticket),
        ..*view
    };
    check.usable().await.err().map(|p| ticket_problem_error(&p))
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

#[cfg(test)]
mod tests {
    use super::deallocated;

    #[test]
    fn deallocate_names_what_it_drops() {
        assert_eq!(deallocated("DEALLOCATE ALL"), Some(None));
        assert_eq!(
            deallocated("deallocate prepare Foo"),
            Some(Some("foo".into()))
        );
        assert_eq!(deallocated("DEALLOCATE \"Foo\""), Some(Some("Foo".into())));
        assert_eq!(deallocated("SELECT 1"), None);
        assert_eq!(deallocated("DEALLOCATE"), None);
    }
}
