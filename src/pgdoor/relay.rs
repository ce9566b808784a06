//! Upstream → client: backend messages are relayed as bytes as they arrive,
//! batched per read and flushed once per read (so a `ReadyForQuery` or the
//! end of what the backend has sent goes out at once, and a large result
//! streams in read-sized chunks with flat memory). Errors and notices are
//! sanitized; the answers esq gives itself (denials, `SET esq.ticket`) are
//! slotted in where the backend answers the stand-in esq forwarded for them,
//! so they arrive in protocol order, pipelining included.
//!
//! Output that holds a `ReadyForQuery` waits until the audit records of the
//! statements it completes are on disk (see [`super::completion`]); if the
//! audit log fails, the answer is withheld and the session ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::answers::TicketChange;
use super::completion::{Pending, Tally};
use super::error::Fatal;
use super::private::Collector;
use crate::app::App;
use crate::audit::AuditSink;
use crate::stream::BoxedStream;
use crate::upstream::redact;

/// An answer esq substitutes for the backend's answer to a stand-in.
#[derive(Debug)]
pub enum Substitution {
    /// Replace the ErrorResponse whose message contains `marker` (the
    /// stand-in was a statement made of that marker).
    Error { marker: String, answer: Bytes },
    /// Replace the next EmptyQueryResponse (the stand-in was empty text),
    /// and apply a ticket change then: PostgreSQL ran the stand-in, so the
    /// statement counts (one skipped after an error in its pipeline does not).
    Empty {
        answer: Bytes,
        ticket: Option<TicketChange>,
    },
    /// Send before the next message of this round (e.g. a notice).
    Before { answer: Bytes },
}

/// What the two directions of a session share.
pub struct Shared {
    /// Substitutions with the round (count of `Sync`/`Query` sent before
    /// them) they belong to.
    substitutions: Mutex<VecDeque<(u64, Substitution)>>,
    /// `ReadyForQuery` messages relayed so far (rounds completed).
    pub rounds_done: AtomicU64,
    /// Transaction status of the last `ReadyForQuery` (`I`, `T`, `E`).
    pub status: AtomicU8,
    /// Rounds in which an error was relayed, with the number of messages
    /// of that round that completed before it: the next one failed, and
    /// PostgreSQL skipped the rest of the round.
    errored: Mutex<Vec<(u64, u32)>>,
    /// Completion answers (ParseComplete, BindComplete, CloseComplete,
    /// Execute's and Describe's last answer) in the current round, up to
    /// its first error.
    completions: std::sync::atomic::AtomicU32,
    /// Signalled at every ReadyForQuery, and when the relay ends.
    pub round_done: tokio::sync::Notify,
    /// Ticket changes whose statements PostgreSQL ran, in order.
    ticket_changes: Mutex<Vec<TicketChange>>,
    /// When each round sent and not yet answered started, oldest first.
    round_starts: Mutex<VecDeque<Instant>>,
    /// `esq_statement_seconds{door="pg"}`: a round's first message to its
    /// `ReadyForQuery`, observed when that is relayed.
    latency: Histogram,
    /// Audit records to write as statements complete.
    pub audit: Pending,
}

impl Shared {
    pub fn new(latency: Histogram) -> Shared {
        Shared {
            substitutions: Mutex::default(),
            rounds_done: AtomicU64::new(0),
            status: AtomicU8::new(b'I'),
            errored: Mutex::default(),
            completions: std::sync::atomic::AtomicU32::new(0),
            round_done: tokio::sync::Notify::new(),
            ticket_changes: Mutex::default(),
            round_starts: Mutex::default(),
            latency,
            audit: Pending::default(),
        }
    }

    /// A round went upstream; its latency is observed at its `ReadyForQuery`.
    pub fn round_sent(&self, started: Instant) {
        self.round_starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(started);
    }

    fn round_answered(&self) {
        let started = self
            .round_starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if let Some(started) = started {
            self.latency.observe(started.elapsed().as_secs_f64());
        }
    }

    /// Errored rounds among those completed before `done` (with the
    /// index of the message that failed), removed.
    pub fn take_errored_before(&self, done: u64) -> Vec<(u64, u32)> {
        let mut errored = self.errored.lock().unwrap_or_else(|p| p.into_inner());
        let (finished, pending): (Vec<_>, Vec<_>) = errored.iter().partition(|(r, _)| *r < done);
        *errored = pending;
        finished
    }

    pub fn take_ticket_changes(&self) -> Vec<TicketChange> {
        std::mem::take(
            &mut *self
                .ticket_changes
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    pub fn push(&self, round: u64, substitution: Substitution) {
        self.substitutions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((round, substitution));
    }
}

/// Messages from the client side to the relay.
pub enum Control {
    /// Write this (a FATAL error) to the client and stop.
    Fatal(Bytes),
    /// Stop now and hand the halves back.
    Stop,
}

/// Why the relay ended, and the stream halves to reunite.
pub struct RelayEnd {
    pub upstream: ReadHalf<BoxedStream>,
    pub upstream_buf: BytesMut,
    pub client: WriteHalf<BoxedStream>,
    /// `false` when the upstream connection failed or misbehaved.
    pub upstream_ok: bool,
}

const READ_CHUNK: usize = 64 * 1024;

/// What one pass over the buffered backend messages left to do.
enum Relayed {
    /// Done; `Some`: a run of rows split off to send as read.
    Rows(Option<BytesMut>),
    /// A private statement's rows are in: release them before its
    /// `CommandComplete` (still buffered) is relayed.
    Release(Collector),
}

pub async fn run(
    mut upstream: ReadHalf<BoxedStream>,
    mut buf: BytesMut,
    mut client: WriteHalf<BoxedStream>,
    shared: Arc<Shared>,
    mut control: mpsc::UnboundedReceiver<Control>,
    app: Arc<App>,
) -> RelayEnd {
    let audit = app.audit.clone();
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut upstream_ok = true;
    let mut tally = Tally::default();
    loop {
        let rows = match relay_buffered(&mut buf, &mut out, &shared, &mut tally, &*audit) {
            Ok(Relayed::Rows(rows)) => rows,
            Ok(Relayed::Release(collector)) => {
                let replacement = collector.release(&app).await;
                tally.private.released(replacement);
                continue;
            }
            Err(failure) => {
                tracing::warn!(%failure, "closing session: unexpected upstream message");
                out.extend_from_slice(&Fatal::UpstreamMisbehaved.to_bytes());
                let _ = client.write_all(&out).await;
                upstream_ok = false;
                break;
            }
        };
        if let Some(rows) = rows {
            // A read of nothing but rows (a result streaming): sent as read.
            if client.write_all(&rows).await.is_err() || client.flush().await.is_err() {
                // The client is gone; the session side notices on its own.
            }
        }
        if tally.ready {
            tally.ready = false;
            if let Err(reason) = audited(&tally, &shared, &*audit).await {
                tracing::error!(%reason, "closing session: its answers could not be audited");
                out.clear();
                out.extend_from_slice(&Fatal::AuditWithheld.to_bytes());
                let _ = client.write_all(&out).await;
                let _ = client.flush().await;
                upstream_ok = false;
                break;
            }
        }
        if !out.is_empty() {
            if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
                // The client is gone; the session side notices on its own.
                out.clear();
            }
            out.clear();
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            read = upstream.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                _ => {
                    upstream_ok = false;
                    out.extend_from_slice(&Fatal::UpstreamLost.to_bytes());
                    let _ = client.write_all(&out).await;
                    let _ = client.flush().await;
                    break;
                }
            },
            message = control.recv() => match message {
                Some(Control::Fatal(bytes)) => {
                    let _ = client.write_all(&bytes).await;
                    let _ = client.flush().await;
                    break;
                }
                Some(Control::Stop) | None => break,
            },
        }
    }
    shared.round_done.notify_waiters();
    RelayEnd {
        upstream,
        upstream_buf: buf,
        client,
        upstream_ok,
    }
}

/// Waits until the records of what the output completes are durable.
async fn audited(tally: &Tally, shared: &Shared, audit: &dyn AuditSink) -> Result<(), String> {
    match tally.wait_target(&shared.audit) {
        None => Err("an audit record could not be queued".into()),
        Some(0) => Ok(()),
        Some(seq) => audit.durable(seq).await.map_err(|e| e.to_string()),
    }
}

/// The last answer of each extended-protocol message that can fail:
/// ParseComplete, BindComplete, CloseComplete, CommandComplete,
/// EmptyQueryResponse, PortalSuspended (Execute), RowDescription, NoData
/// (Describe). Counted per round, they tell which message an error ended.
const COMPLETIONS: &[u8] = b"123CIsTn";

/// Moves every complete backend message from `buf` to `out`. Runs of
/// `DataRow`s (a result streaming) are counted and copied in one piece;
/// when `buf` held nothing else and `out` is empty, they are split off and
/// returned instead, to be sent without a copy.
fn relay_buffered(
    buf: &mut BytesMut,
    out: &mut BytesMut,
    shared: &Shared,
    tally: &mut Tally,
    audit: &dyn AuditSink,
) -> Result<Relayed, String> {
    let mut at = 0;
    // Start of a run of DataRows not yet copied to `out`.
    let mut rows_from = 0;
    let result = loop {
        let rest = &buf[at..];
        if rest.len() < 5 {
            break Ok(());
        }
        let tag = rest[0];
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let Ok(len) = usize::try_from(len) else {
            break Err("negative message length".to_string());
        };
        if len < 4 {
            break Err("message length below 4".into());
        }
        if rest.len() < len + 1 {
            break Ok(());
        }
        let round = shared.rounds_done.load(Ordering::Relaxed);
        if tag == b'D' {
            match tally
                .private
                .row(&shared.audit, round, &buf[at + 5..at + len + 1])
            {
                Ok(false) => tally.data_row(),
                Ok(true) => {
                    // Collected for the release: never relayed.
                    out.extend_from_slice(&buf[rows_from..at]);
                    rows_from = at + len + 1;
                }
                Err(failure) => break Err(failure),
            }
            at += len + 1;
            continue;
        }
        out.extend_from_slice(&buf[rows_from..at]);
        if tag == b'C' {
            if let Some(collector) = tally.private.release_due(&shared.audit, round) {
                buf.advance(at);
                return Ok(Relayed::Release(collector));
            }
        }
        let message = &buf[at..at + len + 1];
        if let Err(failure) = relay_one(tag, message, out, shared, tally, audit) {
            break Err(failure);
        }
        at += len + 1;
        rows_from = at;
    };
    if result.is_ok() && rows_from == 0 && at > 0 && out.is_empty() {
        return Ok(Relayed::Rows(Some(buf.split_to(at))));
    }
    out.extend_from_slice(&buf[rows_from..at]);
    buf.advance(at);
    result.map(|()| Relayed::Rows(None))
}

fn relay_one(
    tag: u8,
    message: &[u8],
    out: &mut BytesMut,
    shared: &Shared,
    tally: &mut Tally,
    audit: &dyn AuditSink,
) -> Result<(), String> {
    let round = shared.rounds_done.load(Ordering::Relaxed);
    if COMPLETIONS.contains(&tag) {
        shared.completions.fetch_add(1, Ordering::Relaxed);
    }
    if tag == b'C' && release_private(out, shared, tally, audit, round) {
        return Ok(());
    }
    count(tag, &message[5..], shared, tally, audit, round);
    substitute(tag, message, out, shared, round)
}

/// A private statement's release, sent in place of PostgreSQL's
/// `CommandComplete` (and its exact row count); `false` when the statement
/// completing is not one.
fn release_private(
    out: &mut BytesMut,
    shared: &Shared,
    tally: &mut Tally,
    audit: &dyn AuditSink,
    round: u64,
) -> bool {
    let Some(release) = tally.private.take_replacement() else {
        return false;
    };
    tally.released(release.rows, release.spend.as_ref().map(|s| s.detail()));
    match release.refused {
        Some(code) => tally.failed(&shared.audit, round, code.to_string(), audit),
        None => tally.executed(&shared.audit, round, audit),
    }
    tally.private.ended();
    out.extend_from_slice(&release.bytes);
    true
}

/// The audit's count of what a message completes or fails.
fn count(
    tag: u8,
    body: &[u8],
    shared: &Shared,
    tally: &mut Tally,
    audit: &dyn AuditSink,
    round: u64,
) {
    if matches!(tag, b'C' | b's' | b'I' | b'E' | b'Z') {
        tally.private.ended();
    }
    match tag {
        b'C' | b's' | b'I' => tally.executed(&shared.audit, round, audit),
        b'E' => {
            let code =
                redact::code_field(body).unwrap_or_else(|| crate::sqlstate::INTERNAL_ERROR.into());
            tally.failed(&shared.audit, round, code, audit);
        }
        b'Z' => tally.round_done(&shared.audit, round, audit),
        _ => {}
    }
}

/// Relays one message, or esq's own answer in its place (a stand-in's
/// refusal, a ticket statement's answer, a notice), errors and notices
/// redacted.
fn substitute(
    tag: u8,
    message: &[u8],
    out: &mut BytesMut,
    shared: &Shared,
    round: u64,
) -> Result<(), String> {
    let body = &message[5..];
    let mut substitutions = shared
        .substitutions
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // Substitutions of finished rounds were skipped by the backend (an
    // earlier error in their pipeline): they have nothing left to replace.
    while substitutions.front().is_some_and(|(r, _)| *r < round) {
        substitutions.pop_front();
    }
    let mut i = 0;
    while i < substitutions.len() {
        match &substitutions[i] {
            (r, Substitution::Before { answer }) if *r == round => {
                out.extend_from_slice(answer);
                substitutions.remove(i);
            }
            _ => i += 1,
        }
    }
    match tag {
        b'E' => {
            {
                let mut errored = shared.errored.lock().unwrap_or_else(|p| p.into_inner());
                if errored.last().map(|(r, _)| *r) != Some(round) {
                    errored.push((round, shared.completions.load(Ordering::Relaxed)));
                }
            }
            let text = redact::message_field(body).unwrap_or_default();
            let found = substitutions.iter().position(|(r, s)| {
                *r == round && matches!(s, Substitution::Error { marker, .. } if text.contains(marker.as_str()))
            });
            match found.and_then(|i| substitutions.remove(i)) {
                Some((_, Substitution::Error { answer, .. })) => out.extend_from_slice(&answer),
                _ => redact::sanitized(b'E', body, out),
            }
        }
        // DEBUG and LOG lines never reach a client (the guard refuses
        // client_min_messages below notice; this holds if one gets through).
        b'N' if redact::is_debug_or_log(body) => {}
        b'N' => redact::sanitized(b'N', body, out),
        b'I' => {
            let found = substitutions
                .iter()
                .position(|(r, s)| *r == round && matches!(s, Substitution::Empty { .. }));
            match found.and_then(|i| substitutions.remove(i)) {
                Some((_, Substitution::Empty { answer, ticket })) => {
                    out.extend_from_slice(&answer);
                    if let Some(change) = ticket {
                        shared
                            .ticket_changes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(change);
                    }
                }
                _ => out.extend_from_slice(message),
            }
        }
        b'Z' => {
            if let Some(&status) = body.first() {
                shared.status.store(status, Ordering::Relaxed);
            }
            shared.completions.store(0, Ordering::Relaxed);
            shared.round_answered();
            shared.rounds_done.fetch_add(1, Ordering::Release);
            shared.round_done.notify_waiters();
            out.extend_from_slice(message);
        }
        // COPY never starts through esq (the guard denies it); if the backend
        // wants one anyway, end the session rather than relay it.
        b'G' | b'H' | b'W' | b'd' | b'c' => {
            return Err("the database started a COPY, which esq never allows".into())
        }
        _ => out.extend_from_slice(message),
    }
    Ok(())
}
