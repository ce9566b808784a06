//! The life of a statement on the PostgreSQL door, and the bookkeeping
//! that follows it.
//!
//! **Rounds.** The client's messages are cut into rounds: a simple `Query`
//! is one round, an extended-protocol batch (`Parse`, `Bind`, `Describe`,
//! `Execute`, `Close` … up to `Sync`) is one round. Each round ends upstream
//! in one `ReadyForQuery`. The session side counts rounds sent
//! ([`ProtocolState::rounds_sent`]); the relay counts rounds answered
//! (`Shared::rounds_done`). The two directions run concurrently, so
//! pipelined rounds are in flight at once.
//!
//! **Decisions.** A `Query` is decided when it arrives and only the guard's
//! rewrite is forwarded; a `Parse` is decided then, and the decision (with
//! the ticket it rested on) is kept with the statement name, so `Bind` and
//! `Execute` cannot get around it ([`super::names`]). A stale ticket stops
//! a prepared statement at its next `Bind` or `Execute`.
//!
//! **Stand-ins.** What esq answers itself — a refusal, `SET esq.ticket` —
//! must still arrive in protocol order, pipelining included. So esq
//! forwards a stand-in in its place: a bare word PostgreSQL refuses (whose
//! error quotes it), or empty text (answered with `EmptyQueryResponse`).
//! The relay finds the stand-in's answer and substitutes esq's own
//! ([`super::relay::Substitution`]). PostgreSQL thus decides, as it would
//! for the client's own statement, whether the rest of the batch runs.
//!
//! **Confirmations.** After an error PostgreSQL skips the batch up to
//! `Sync`. esq changes its names as it forwards and undoes, when the relay
//! reports where a round failed, the changes PostgreSQL did not make. A
//! message naming a statement or portal changed in a round not yet
//! answered waits for that answer ([`depends_on`], [`wait_for_round`]);
//! likewise a statement decided after an unanswered `SET esq.ticket`.
//!
//! **Audit.** An allowed statement's record is written when it completes,
//! with its rows; the relay holds each `ReadyForQuery` until the records of
//! its round are durable ([`super::completion`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::answers::TicketChange;
use super::message::Message;
use super::names::{Names, Space};
use super::relay::{Shared, Substitution};
use crate::tickets::TicketId;

/// Where the client is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Between rounds: a `Query` or an extended message starts one.
    #[default]
    Ready,
    /// Inside an extended-protocol batch, until its `Sync`.
    Batch,
}

/// What esq tracks of the session's protocol state.
#[derive(Default)]
pub struct ProtocolState {
    pub phase: Phase,
    /// `Sync` and `Query` messages sent upstream (each ends a round).
    pub rounds_sent: u64,
    /// Prepared statements and portals, confirmed against PostgreSQL.
    pub names: Names,
    /// A ticket statement forwarded but not yet answered: its round and the
    /// ticket it sets. Later messages of that round are decided under it
    /// (PostgreSQL runs them only if it ran the statement); messages of
    /// later rounds wait for the answer.
    pub ticket_pending: Option<(u64, Option<TicketId>)>,
    /// When the first message of the round being assembled arrived
    /// (end-to-end latency: from here to its `ReadyForQuery`).
    round_started: Option<Instant>,
}

impl ProtocolState {
    /// Notes a message of the round being assembled.
    pub fn arrived(&mut self, message: &Message) {
        if self.round_started.is_none() && message.starts_round() {
            self.round_started = Some(Instant::now());
        }
        if message.is_extended() {
            self.phase = Phase::Batch;
        }
    }

    /// A `Query` or `Sync` went upstream: the round is complete on the
    /// client's side and its clock is handed to the relay.
    pub fn end_round(&mut self, shared: &Shared) {
        self.rounds_sent += 1;
        self.phase = Phase::Ready;
        let started = self.round_started.take().unwrap_or_else(Instant::now);
        shared.round_sent(started);
    }

    /// Notes a forwarded ticket statement's effect (see `ticket_pending`).
    pub fn ticket_statement_sent(&mut self, round: u64, substitutions: &[Substitution]) {
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
    pub fn effective_ticket(&self, confirmed: &Option<TicketId>) -> Option<TicketId> {
        match &self.ticket_pending {
            Some((round, ticket)) if *round == self.rounds_sent => ticket.clone(),
            _ => confirmed.clone(),
        }
    }

    /// Every round answered: the session waits for its client (inside a
    /// transaction or not).
    pub fn waiting_for_client(&self, shared: &Shared) -> bool {
        shared.rounds_done.load(Ordering::Acquire) == self.rounds_sent
    }

    /// Nothing outstanding upstream and no transaction open.
    pub fn is_idle(&self, shared: &Shared) -> bool {
        self.waiting_for_client(shared) && shared.status.load(Ordering::Relaxed) == b'I'
    }
}

/// Catches up with the relay: applies the ticket changes PostgreSQL ran
/// and its verdict on finished rounds.
pub fn reconcile(state: &mut ProtocolState, shared: &Shared, ticket: &mut Option<TicketId>) {
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
/// changed a statement or portal the message names, or an unanswered
/// ticket statement a new decision would rest on.
pub fn depends_on(message: &Message, state: &ProtocolState) -> Option<u64> {
    // The common case, nothing unanswered: no need to read the names.
    if !state.names.has_pending() && state.ticket_pending.is_none() {
        return None;
    }
    let ticket_round = match (message, &state.ticket_pending) {
        (Message::Query { .. } | Message::Parse { .. }, Some((round, _)))
            if *round < state.rounds_sent =>
        {
            Some(*round)
        }
        _ => None,
    };
    message
        .names()
        .into_iter()
        .filter_map(|(space, name): (Space, &str)| {
            state
                .names
                .unconfirmed_round(space, name, state.rounds_sent)
        })
        .chain(ticket_round)
        .max()
}

/// Waits until `round` has ended (its ReadyForQuery relayed); `false` on
/// time-out.
pub async fn wait_for_round(shared: &Shared, round: u64, limit: Duration) -> bool {
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
