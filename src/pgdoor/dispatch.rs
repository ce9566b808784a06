//! One frontend message, handled: the state machine's transition. Each
//! typed [`Message`] goes to its handler ([`super::simple`],
//! [`super::extended`]) with the session's [`Turn`]; what the handler
//! writes to `out` goes upstream, what it queues in the relay's [`Shared`]
//! is slotted into the answer.

use bytes::BytesMut;

use super::answers::SessionView;
use super::error::{DoorError, Fatal};
use super::message::Message;
use super::relay::{Shared, Substitution};
use super::rounds::{Phase, ProtocolState};
use super::{extended, simple};

/// What a handler works with: the session's facts, its protocol state, the
/// relay's queue, and the bytes to send upstream.
pub struct Turn<'a, 'v> {
    pub view: &'a SessionView<'v>,
    pub state: &'a mut ProtocolState,
    pub shared: &'a Shared,
    pub out: &'a mut BytesMut,
}

pub enum Step {
    Continue,
    Terminate,
}

/// Handles one message; `Err` is a protocol violation that ends the session.
pub async fn handle(turn: &mut Turn<'_, '_>, message: Message) -> Result<Step, DoorError> {
    let phase = turn.state.phase;
    turn.state.arrived(&message);
    match (phase, message) {
        (Phase::Batch, Message::Query { .. } | Message::FunctionCall) => {
            // PostgreSQL would run it, or discard it while skipping to Sync
            // after an error: esq could not tell which. No driver does this.
            Err(Fatal::Protocol(
                "a Query or FunctionCall inside an unfinished extended-protocol batch (send Sync first)".into(),
            )
            .into())
        }
        (_, Message::Query { sql }) => simple::query(turn, &sql).await,
        (_, Message::FunctionCall) => simple::function_call(turn),
        (_, Message::Parse { name, sql, types }) => {
            extended::parse(turn, &name, &sql, &types).await
        }
        (
            _,
            Message::Bind {
                portal,
                statement,
                rest,
            },
        ) => extended::bind(turn, &portal, &statement, &rest).await,
        (_, Message::Execute { portal, rest }) => extended::execute(turn, &portal, &rest).await,
        (_, message @ (Message::Describe { .. } | Message::Close { .. })) => {
            extended::describe_or_close(turn, &message)
        }
        (_, Message::Flush) => {
            extended::pass(turn, &Message::Flush);
            Ok(Step::Continue)
        }
        (_, Message::Sync) => extended::sync(turn),
        (_, Message::Terminate) => Ok(Step::Terminate),
        // Copy messages outside a COPY are ignored, as PostgreSQL does.
        (_, Message::CopyOutOfPlace) => Ok(Step::Continue),
    }
}

impl Turn<'_, '_> {
    /// The round being assembled.
    pub fn round(&self) -> u64 {
        self.state.rounds_sent
    }

    /// Queues `error` in place of PostgreSQL's error for a stand-in and
    /// returns the stand-in (a name PostgreSQL does not know, or a bare word
    /// it cannot parse) to forward instead of the refused text.
    pub fn stand_in(&mut self, error: DoorError) -> String {
        let marker = super::answers::marker();
        self.shared.push(
            self.round(),
            Substitution::Error {
                marker: marker.clone(),
                answer: error.to_bytes(),
            },
        );
        marker
    }

    /// Queues substitutions for the round being assembled.
    pub fn substitute(&mut self, substitutions: Vec<Substitution>) {
        for substitution in substitutions {
            self.shared.push(self.round(), substitution);
        }
    }

    /// Numbers an answering message of the round, or ends the session when
    /// a round grows past what esq will journal.
    pub fn answering(&mut self) -> Result<u32, DoorError> {
        let round = self.round();
        self.state.names.answering(round).ok_or_else(|| {
            Fatal::Protocol(format!(
                "more than {} messages before a Sync",
                super::names::MAX_ROUND_MESSAGES
            ))
            .into()
        })
    }
}
