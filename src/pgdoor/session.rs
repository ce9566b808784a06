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
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::answers::SessionView;
use super::cancel::{self, CancelKeys, CancelRequests};
use super::dispatch::{self, Step, Turn};
use super::error::{DoorError, Fatal};
use super::handshake::{self, Ready};
use super::message::Message;
use super::relay::{self, Control, Shared};
use super::rounds::{self, ProtocolState};
use super::wire::{FrameReader, WireError};
use crate::app::App;
use crate::auth::Principal;
use crate::metrics::{Door, DoorLabels};
use crate::per_user::PerUser;
use crate::stream::BoxedStream;
use crate::tickets::{TicketCheck, TicketId};
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
async fn serve(door: &DoorState, ready: Ready, shutdown: watch::Receiver<bool>) {
    let Ready {
        client,
        frames,
        principal,
        ticket,
        mut lease,
        cancel_requests,
        peer,
        standing,
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
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream_stream);
    let app = &door.app;
    let shared = Arc::new(Shared::new(
        app.metrics
            .statement_seconds
            .get_or_create(&DoorLabels { door: Door::pg })
            .clone(),
    ));
    let (control, control_rx) = mpsc::unbounded_channel();
    // A socket wake-up never crosses threads, yet neither direction waits
    // for the other, so a full socket on one side cannot stall the session.
    let (relay_ended, relay_ended_rx) = tokio::sync::oneshot::channel::<()>();
    let relay = async {
        let end = relay::run(
            upstream_read,
            read_buf,
            client_write,
            shared.clone(),
            control_rx,
            app.clone(),
        )
        .await;
        let _ = relay_ended.send(());
        end
    };
    let draining = *shutdown.borrow();
    let mut side = ClientSide {
        door,
        principal: &principal,
        peer,
        checks: app.ticket_check(),
        shared: &shared,
        frames,
        client_read,
        upstream_write,
        out: BytesMut::with_capacity(8192),
        state: ProtocolState::default(),
        ticket,
        standing,
        backend_key,
        cancel_requests,
        cancels_seen: 0,
        draining,
        shutdown,
        relay_ended: relay_ended_rx,
    };
    let session = async {
        let end = side.run().await;
        // Dropped when the session side ends: the relay stops then.
        let _ = control.send(match end {
            End::Fatal(error) => Control::Fatal(error.to_bytes()),
            End::Quiet => Control::Stop,
        });
        drop(control);
    };
    let (end, ()) = tokio::join!(relay, session);
    // Give the upstream connection back when it is idle and in sync.
    let reuse = if end.upstream_ok && side.state.is_idle(&shared) {
        Reuse::Reset
    } else {
        Reuse::Close
    };
    let stream = end.upstream.unsplit(side.upstream_write);
    lease.restore(UpstreamConn {
        stream,
        read_buf: end.upstream_buf,
        backend_key,
        parameters,
    });
    door.upstream.release(lease, reuse).await;
    tracing::info!(user = %principal.name, %peer, "session ended");
}

/// The client → upstream side of one session.
struct ClientSide<'a> {
    door: &'a DoorState,
    principal: &'a Principal,
    peer: SocketAddr,
    /// This connection's ticket checks (a short-lived positive cache).
    checks: TicketCheck,
    shared: &'a Arc<Shared>,
    frames: FrameReader,
    client_read: ReadHalf<BoxedStream>,
    upstream_write: WriteHalf<BoxedStream>,
    /// Bytes decided for upstream, written at the end of each read.
    out: BytesMut,
    state: ProtocolState,
    /// The session's ticket as PostgreSQL has confirmed it.
    ticket: Option<TicketId>,
    /// The ticket the user's standing request gave (see [`super::standing`]).
    standing: Option<super::standing::Standing>,
    backend_key: (i32, i32),
    cancel_requests: CancelRequests,
    /// Cancel requests counted when the client's last bytes arrived: one
    /// sent while esq was still deciding is forwarded again.
    cancels_seen: u64,
    draining: bool,
    shutdown: watch::Receiver<bool>,
    relay_ended: tokio::sync::oneshot::Receiver<()>,
}

impl ClientSide<'_> {
    async fn run(&mut self) -> End {
        let idle_timeout = self.door.app.config.pg.idle_timeout;
        // One idle timer for the session, moved on only when it fires (not
        // re-armed at every message: the timer wheel's lock is not free).
        let mut last_heard = tokio::time::Instant::now();
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        self.cancels_seen = self.cancel_requests.count();
        loop {
            if let Err(end) = self.handle_buffered().await {
                return end;
            }
            if let Err(end) = self.send_upstream().await {
                return end;
            }
            tokio::select! {
                filled = self.frames.fill(&mut self.client_read) => match filled {
                    Ok(()) => {
                        last_heard = tokio::time::Instant::now();
                        self.cancels_seen = self.cancel_requests.count();
                    }
                    Err(WireError::Closed) => return End::Quiet,
                    Err(err) => {
                        tracing::debug!(%err, "client read failed");
                        return End::Quiet;
                    }
                },
                _ = &mut self.relay_ended => return End::Quiet,
                changed = self.shutdown.changed(), if !self.draining => {
                    // A closed channel means the door is gone: drain as well.
                    let _ = changed;
                    self.draining = true;
                }
                // While draining, end the session as soon as it is idle (its
                // answers all delivered, no transaction open).
                _ = tokio::time::sleep(DRAIN_CHECK), if self.draining => {
                    if self.state.is_idle(self.shared) {
                        return End::Fatal(Fatal::ShuttingDown.into());
                    }
                }
                _ = &mut idle => {
                    let quiet_until = last_heard + idle_timeout;
                    if quiet_until > tokio::time::Instant::now() {
                        // The client spoke since the timer was set.
                        idle.as_mut().reset(quiet_until);
                        continue;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    // A session waiting for its client is idle, inside a
                    // transaction too (it holds a connection, a snapshot and
                    // locks); one waiting for a long answer is not.
                    if self.state.waiting_for_client(self.shared) {
                        return End::Fatal(Fatal::IdleTimeout.into());
                    }
                }
            }
        }
    }

    /// Handles every whole message read so far.
    async fn handle_buffered(&mut self) -> Result<(), End> {
        loop {
            let message = match self.frames.next_buffered() {
                Ok(Some(frame)) => Message::decode(&frame),
                Ok(None) => return Ok(()),
                Err(err) => Err(err),
            };
            let message = message.map_err(|err| {
                protocol_error(self.door);
                End::Fatal(Fatal::Protocol(err.to_string()).into())
            })?;
            self.catch_up(&message).await?;
            if let Some(standing) = self.standing.as_mut() {
                let session = super::standing::Session {
                    app: &self.door.app,
                    user: self.principal,
                    client: self.peer,
                    checks: &self.checks,
                    state: &self.state,
                    shared: self.shared,
                };
                standing
                    .renew_if_due(session, &message, &mut self.ticket)
                    .await;
            }
            let effective = self.state.effective_ticket(&self.ticket);
            let view = SessionView {
                app: &self.door.app,
                principal: self.principal,
                ticket: effective.as_ref(),
                checks: &self.checks,
                client: Some(self.peer),
                pending: Some(&self.shared.audit),
            };
            let mut turn = Turn {
                view: &view,
                state: &mut self.state,
                shared: self.shared,
                out: &mut self.out,
            };
            match dispatch::handle(&mut turn, message).await {
                Ok(Step::Continue) => {}
                Ok(Step::Terminate) => {
                    if !self.out.is_empty() {
                        let _ = self.upstream_write.write_all(&self.out).await;
                    }
                    return Err(End::Quiet);
                }
                Err(error) => {
                    protocol_error(self.door);
                    return Err(End::Fatal(error));
                }
            }
        }
    }

    /// Applies what the relay learnt; a message naming what an unanswered
    /// round changed waits for PostgreSQL's verdict on that round first.
    async fn catch_up(&mut self, message: &Message) -> Result<(), End> {
        rounds::reconcile(&mut self.state, self.shared, &mut self.ticket);
        let Some(round) = rounds::depends_on(message, &self.state) else {
            return Ok(());
        };
        let limit = self.door.app.config.upstream.statement_timeout + CONFIRM_SLACK;
        if self.send_upstream().await.is_err()
            || !rounds::wait_for_round(self.shared, round, limit).await
        {
            return Err(End::Fatal(Fatal::LostTrack.into()));
        }
        rounds::reconcile(&mut self.state, self.shared, &mut self.ticket);
        Ok(())
    }

    /// Writes what was decided upstream; forwards again a cancel that came
    /// while esq was deciding (PostgreSQL, idle then, dropped it).
    async fn send_upstream(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = self.upstream_write.write_all(&self.out).await.is_ok()
            && self.upstream_write.flush().await.is_ok();
        self.out.clear();
        if !written {
            return Err(End::Quiet);
        }
        let cancels = self.cancel_requests.count();
        if cancels != self.cancels_seen {
            self.cancels_seen = cancels;
            let sent = self.state.rounds_sent;
            let shared = self.shared.clone();
            tokio::spawn(cancel::forward_held(
                self.door.upstream.clone(),
                self.backend_key,
                move || shared.rounds_done.load(Ordering::Acquire) >= sent,
            ));
        }
        Ok(())
    }
}
