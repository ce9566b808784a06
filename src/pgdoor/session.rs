//! One client session on the PostgreSQL door, from its handshake
//! ([`super::handshake`]) to its end. Both directions run in this one task
//! (joined futures, not two tasks): the client → upstream side here reads
//! typed messages and hands each to [`super::dispatch`]; the upstream →
//! client side is [`super::relay`]. The session ends when the client
//! leaves, on a protocol violation, when it idles past `pg.idle_timeout`,
//! or, once idle, when esq shuts down.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::answers::SessionView;
use super::cancel::{self, CancelKeys};
use super::dispatch::{self, Step, Turn};
use super::error::DoorError;
use super::handshake::{self, Ready};
use super::message::Message;
use super::relay::{self, Control, Shared};
use super::rounds::{self, ProtocolState};
use super::wire::WireError;
use crate::app::App;
use crate::metrics::{Door, DoorLabels};
use crate::per_user::PerUser;
use crate::upstream::{Reuse, UpstreamConn, UpstreamPool};

/// What every session shares.
pub struct DoorState {
    pub app: Arc<App>,
    pub upstream: Arc<UpstreamPool>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub cancel_keys: CancelKeys,
    /// Open sessions per user (`pg.max_sessions_per_user`).
    pub sessions: PerUser,
}

/// Beyond the statement timeout, how long a session waits for the answers
/// to an earlier round it depends on.
const CONFIRM_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a draining session checks whether it has become idle.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

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
    let opened = tokio::time::timeout(handshake_timeout, handshake::open(&door, tcp, peer)).await;
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
    let active = door
        .app
        .metrics
        .active_sessions
        .get_or_create(&DoorLabels { door: Door::pg })
        .clone();
    active.inc();
    let key = ready.cancel_key.0;
    serve(&door, ready, shutdown).await;
    door.cancel_keys.unregister(key);
    active.dec();
}

fn protocol_error(door: &DoorState) {
    door.app
        .metrics
        .protocol_errors
        .get_or_create(&DoorLabels { door: Door::pg })
        .inc();
}

/// Why the session loop ended.
enum End {
    /// Tell the relay to write this error, then stop.
    Fatal(DoorError),
    /// Stop without a word (the client left, or the relay ended).
    Quiet,
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
    let app = &door.app;
    let checks = app.ticket_check();
    let shared = Arc::new(Shared::new(
        app.metrics
            .statement_seconds
            .get_or_create(&DoorLabels { door: Door::pg })
            .clone(),
    ));
    let (control, control_rx) = mpsc::unbounded_channel();
    // A socket wake-up never crosses threads, yet neither direction waits
    // for the other, so a full socket on one side cannot stall the session.
    let (relay_ended, mut relay_ended_rx) = tokio::sync::oneshot::channel::<()>();
    let relay = async {
        let end = relay::run(
            upstream_read,
            read_buf,
            client_write,
            shared.clone(),
            control_rx,
            app.audit.clone(),
        )
        .await;
        let _ = relay_ended.send(());
        end
    };

    let marker_prefix = format!("esq_refused_{:08x}", rand_u32());
    let mut state = ProtocolState::default();
    let idle_timeout = app.config.pg.idle_timeout;
    let confirm_limit = app.config.upstream.statement_timeout + CONFIRM_SLACK;
    let session = async {
        // Dropped when the session side ends: the relay stops then.
        let control = control;
        let mut out = BytesMut::with_capacity(8192);
        let mut draining = *shutdown.borrow();
        // One idle timer for the session, moved on only when it fires (not
        // re-armed at every message: the timer wheel's lock is not free).
        let mut last_heard = tokio::time::Instant::now();
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        // Cancel requests counted when the client's last bytes arrived: one
        // sent while esq was still deciding is forwarded again below.
        let mut cancels_seen = cancel_requests.count();
        let end = 'session: loop {
            loop {
                let message = match frames.next_buffered() {
                    Ok(Some(frame)) => Message::decode(&frame),
                    Ok(None) => break,
                    Err(err) => Err(err),
                };
                let message = match message {
                    Ok(message) => message,
                    Err(err) => {
                        protocol_error(door);
                        break 'session End::Fatal(DoorError::Protocol(err.to_string()));
                    }
                };
                rounds::reconcile(&mut state, &shared, &mut ticket);
                if let Some(round) = rounds::depends_on(&message, &state) {
                    // It names a statement or portal an earlier round changed:
                    // wait for PostgreSQL's verdict on that round first.
                    let sent = out.is_empty()
                        || (upstream_write.write_all(&out).await.is_ok()
                            && upstream_write.flush().await.is_ok());
                    out.clear();
                    if !sent || !rounds::wait_for_round(&shared, round, confirm_limit).await {
                        break 'session End::Fatal(DoorError::LostTrack);
                    }
                    rounds::reconcile(&mut state, &shared, &mut ticket);
                }
                let effective = state.effective_ticket(&ticket);
                let view = SessionView {
                    app,
                    principal: &principal,
                    ticket: effective.as_ref(),
                    checks: &checks,
                    client: Some(peer),
                    marker_prefix: &marker_prefix,
                    pending: Some(&shared.audit),
                };
                let mut turn = Turn {
                    view: &view,
                    state: &mut state,
                    shared: &shared,
                    out: &mut out,
                };
                match dispatch::handle(&mut turn, message).await {
                    Ok(Step::Continue) => {}
                    Ok(Step::Terminate) => {
                        if !out.is_empty() {
                            let _ = upstream_write.write_all(&out).await;
                        }
                        break 'session End::Quiet;
                    }
                    Err(error) => {
                        protocol_error(door);
                        break 'session End::Fatal(error);
                    }
                }
            }
            if !out.is_empty() {
                if upstream_write.write_all(&out).await.is_err()
                    || upstream_write.flush().await.is_err()
                {
                    break 'session End::Quiet;
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
                    Err(WireError::Closed) => break 'session End::Quiet,
                    Err(err) => {
                        tracing::debug!(%err, "client read failed");
                        break 'session End::Quiet;
                    }
                },
                _ = &mut relay_ended_rx => break 'session End::Quiet,
                changed = shutdown.changed(), if !draining => {
                    // A closed channel means the door is gone: drain as well.
                    let _ = changed;
                    draining = true;
                }
                // While draining, end the session as soon as it is idle (its
                // answers all delivered, no transaction open).
                _ = tokio::time::sleep(DRAIN_CHECK), if draining => {
                    if state.is_idle(&shared) {
                        break 'session End::Fatal(DoorError::ShuttingDown);
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
                    // Only a session waiting for its client is idle; one
                    // waiting for a long answer is not.
                    if state.is_idle(&shared) {
                        break 'session End::Fatal(DoorError::IdleTimeout);
                    }
                }
            }
        };
        let _ = control.send(match end {
            End::Fatal(error) => Control::Fatal(error.to_bytes()),
            End::Quiet => Control::Stop,
        });
    };
    let (end, ()) = tokio::join!(relay, session);
    // Give the upstream connection back when it is idle and in sync.
    let reuse = if end.upstream_ok && state.is_idle(&shared) {
        Reuse::Reset
    } else {
        Reuse::Close
    };
    let stream = end.upstream.unsplit(upstream_write);
    lease.restore(UpstreamConn {
        stream,
        read_buf: end.upstream_buf,
        backend_key,
        parameters,
    });
    door.upstream.release(lease, reuse).await;
    tracing::info!(user = %principal.name, %peer, "session ended");
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    u32::from_be_bytes(bytes)
}
